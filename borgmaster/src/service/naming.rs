//! Naming (Borg's BNS, §2.6): every task is `/bns/<cell>/<user>/<job>/<index>`, and its
//! endpoints are `host:port` per named port. Resolution reads the replica's own state.

use crate::state::{CellState, Task, TaskState};
use borg_proto as pb;
use tonic::Status;

/// The BNS name of task `t` of a job owned by `user` in `cell`.
pub fn bns_name(cell: &str, user: &str, t: &Task) -> String {
    format!("/bns/{cell}/{user}/{}/{}", t.job, t.index)
}

/// What `name` denotes: a job and, for a task, its index.
///
/// Errors: INVALID_ARGUMENT for a malformed name; NOT_FOUND for another cell, a job that does
/// not exist, a user who does not own it, or an index out of range.
fn parse<'a>(state: &'a CellState, name: &str) -> Result<(&'a crate::state::Job, Option<u32>), Status> {
    let (cell, user, rest) = match name.strip_prefix("/bns/") {
        Some(bns) => {
            let mut parts = bns.splitn(3, '/');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(c), Some(u), Some(r)) if !c.is_empty() && !u.is_empty() && !r.is_empty() => (Some(c), Some(u), r),
                _ => {
                    return Err(Status::invalid_argument(format!("{name:?} is not /bns/<cell>/<user>/<job>[/<index>]")))
                }
            }
        }
        None => (None, None, name),
    };
    if let Some(c) = cell.filter(|c| *c != state.cell) {
        return Err(Status::not_found(format!("{name:?} is in cell {c:?}; this is cell {:?}", state.cell)));
    }
    let (job, index) = match rest.split_once('/') {
        Some((j, i)) => {
            let i: u32 =
                i.parse().map_err(|_| Status::invalid_argument(format!("{name:?}: {i:?} is not a task index")))?;
            (j, Some(i))
        }
        None => (rest, None),
    };
    let j = state.jobs.get(job).ok_or_else(|| Status::not_found(format!("no job named {job:?}")))?;
    if let Some(u) = user.filter(|u| *u != j.spec.user) {
        return Err(Status::not_found(format!("job {job:?} belongs to {:?}, not {u:?}", j.spec.user)));
    }
    if let Some(i) = index.filter(|i| *i as usize >= j.tasks.len()) {
        return Err(Status::not_found(format!("job {job:?} has no task {i} (it has {})", j.tasks.len())));
    }
    Ok((j, index))
}

/// The endpoints of what `name` denotes: its tasks that are placed (bound and not dead), by
/// index; with the state's applied index.
///
/// Errors: as [`parse`].
pub fn resolve(state: &CellState, name: &str) -> Result<pb::ResolveResponse, Status> {
    let (job, index) = parse(state, name)?;
    let endpoints = job
        .tasks
        .iter()
        .filter(|t| index.is_none_or(|i| t.index == i))
        .filter(|t| t.state != TaskState::Dead)
        .filter_map(|t| {
            let m = state.machines.get(t.machine.as_ref()?)?;
            Some(pb::Endpoint {
                bns: bns_name(&state.cell, &job.spec.user, t),
                job: t.job.clone(),
                index: t.index,
                host: borg_rpc::auth::host_of(&m.address).to_string(),
                machine: m.id.0.clone(),
                ports: t.ports.iter().map(|(k, v)| (k.clone(), u32::from(*v))).collect(),
                ready: t.ready,
            })
        })
        .collect();
    Ok(pb::ResolveResponse { endpoints, applied_index: state.applied_index })
}

/// Messages a watcher may fall behind by before it is ended.
pub const WATCH_BUFFER: usize = 64;

/// How often a watch compares the endpoints with the last ones it sent.
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Follows the endpoints of `name` in `master`'s state and sends the whole set whenever it
/// changes (the first at once, unless `since_index` is given and nothing changed since); ends
/// when the receiver is gone, the name stops resolving (its status is sent), or the receiver
/// is [`WATCH_BUFFER`] messages behind (RESOURCE_EXHAUSTED).
pub async fn watch(
    master: std::sync::Arc<crate::master::Master>,
    name: String,
    since_index: u64,
    tx: tokio::sync::mpsc::Sender<Result<pb::ResolveResponse, Status>>,
) {
    let mut last: Option<Vec<pb::Endpoint>> = None;
    let mut every = tokio::time::interval(WATCH_INTERVAL);
    loop {
        every.tick().await;
        let r = resolve(&master.state(), &name);
        let r = match r {
            Ok(r) => r,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let unchanged_since = last.is_none() && since_index > 0 && r.applied_index == since_index;
        if last.as_ref() == Some(&r.endpoints) || unchanged_since {
            last = Some(r.endpoints);
            continue;
        }
        last = Some(r.endpoints.clone());
        match tx.try_send(Ok(r)) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                let _ = tx
                    .send(Err(Status::resource_exhausted(format!(
                        "watch of {name:?} ended: {WATCH_BUFFER} updates unread; reconnect with since_index"
                    ))))
                    .await;
                return;
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
