//! Naming (Borg's BNS, §2.6): every task is `/bns/<cell>/<user>/<job>/<index>`, and its
//! endpoints are `host:port` per named port. Resolution reads the replica's own state; watches
//! share one feed per name ([`WatchHub`]), recomputed when an applied entry changes it.

use crate::master::Master;
use crate::state::{CellState, Task, TaskState};
use borg_proto as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// Updates a watcher's stream may hold unread. A watcher further behind than that skips to
/// the newest set (every update is the whole set, so nothing is lost by skipping), so a slow
/// watcher costs at most this many sets of memory.
pub const WATCH_BUFFER: usize = 8;

/// How long a watcher's stream may stay full before it is ended with RESOURCE_EXHAUSTED.
pub const WATCH_STALL: Duration = Duration::from_secs(30);

/// The newest endpoints of one name (or the status that ended it), computed once per applied
/// entry that changes them and shared by every watcher of the name.
type Feed = tokio::sync::watch::Receiver<Arc<Result<pb::ResolveResponse, Status>>>;

/// The endpoint feeds of the names being watched on one replica: one feed task per name,
/// however many watchers it has, woken by the applied index (not by a timer). A feed ends when
/// its last watcher goes, or when its name stops resolving.
#[derive(Default)]
pub struct WatchHub {
    feeds: Mutex<HashMap<String, Feed>>,
}

impl WatchHub {
    /// The feed of `name`, started if nobody watches it yet.
    ///
    /// Errors: `name` does not resolve now (as [`resolve`]).
    pub fn subscribe(self: &Arc<Self>, master: &Arc<Master>, name: &str) -> Result<Feed, Status> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(feed) = feeds.get(name) {
            if feed.borrow().is_ok() {
                return Ok(feed.clone());
            }
        }
        let first = resolve(&master.state(), name)?;
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(Ok(first)));
        feeds.insert(name.to_string(), rx.clone());
        tokio::spawn(self.clone().run_feed(master.clone(), name.to_string(), tx));
        Ok(rx)
    }

    async fn run_feed(
        self: Arc<Self>,
        master: Arc<Master>,
        name: String,
        tx: tokio::sync::watch::Sender<Arc<Result<pb::ResolveResponse, Status>>>,
    ) {
        let mut applied = master.applied_watch();
        let mut seen = tx.borrow().as_ref().as_ref().map_or(0, |r| r.applied_index);
        loop {
            let next = tokio::select! {
                next = applied.after(seen) => next,
                () = tx.closed() => None,
            };
            let Some(index) = next else { break };
            seen = index;
            let r = resolve(&master.state(), &name);
            let ended = r.is_err();
            tx.send_if_modified(|cur| {
                let changed = match (cur.as_ref(), &r) {
                    (Ok(a), Ok(b)) => a.endpoints != b.endpoints,
                    _ => true,
                };
                if changed {
                    *cur = Arc::new(r);
                }
                changed
            });
            if ended {
                break;
            }
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        // a new watcher may have found this feed ended and started another under the name
        if feeds.get(&name).is_some_and(|f| f.same_channel(&tx.subscribe())) {
            feeds.remove(&name);
        }
    }
}

/// Sends `feed`'s sets to one watcher's stream `tx`: the current one at once (unless
/// `since_index` is given and the set has not changed since), then each newer one. Ends when
/// the receiver is gone, when the name stops resolving (its status is sent), or when `tx` has
/// been full for `stall` (RESOURCE_EXHAUSTED, in the slot kept for it).
pub async fn forward(
    mut feed: Feed,
    name: String,
    since_index: u64,
    tx: tokio::sync::mpsc::Sender<Result<pb::ResolveResponse, Status>>,
    stall: Duration,
) {
    let mut first = true;
    loop {
        let cur = feed.borrow_and_update().clone();
        let skip = first && since_index > 0 && cur.as_ref().as_ref().is_ok_and(|r| r.applied_index <= since_index);
        first = false;
        if !skip {
            // one slot always stays free for the status that ends a stalled stream
            if tx.capacity() <= 1 {
                // two free slots: one for the set, one still kept
                let freed = tokio::time::timeout(stall, tx.reserve_many(2)).await;
                match freed {
                    Ok(Ok(permits)) => drop(permits),
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let _ = tx.try_send(Err(Status::resource_exhausted(format!(
                            "watch of {name:?} ended: its stream was full for {} s; reconnect with since_index",
                            stall.as_secs()
                        ))));
                        return;
                    }
                }
                // the wait may have skipped sets: send the newest
                let newest = feed.borrow_and_update().clone();
                if send(&tx, &newest).is_err() {
                    return;
                }
            } else if send(&tx, &cur).is_err() {
                return;
            }
            if feed.borrow().is_err() {
                return;
            }
        }
        if feed.changed().await.is_err() {
            return;
        }
    }
}

fn send(
    tx: &tokio::sync::mpsc::Sender<Result<pb::ResolveResponse, Status>>,
    r: &Arc<Result<pb::ResolveResponse, Status>>,
) -> Result<(), ()> {
    let msg = match r.as_ref() {
        Ok(r) => Ok(r.clone()),
        Err(s) => Err(Status::new(s.code(), s.message())),
    };
    tx.try_send(msg).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(index: u64, n: u32) -> Arc<Result<pb::ResolveResponse, Status>> {
        let endpoints = (0..n).map(|i| pb::Endpoint { index: i, ..Default::default() }).collect();
        Arc::new(Ok(pb::ResolveResponse { endpoints, applied_index: index }))
    }

    #[tokio::test]
    async fn a_watcher_gets_the_current_set_then_each_change_and_the_status_that_ends_it() {
        let (ftx, feed) = tokio::sync::watch::channel(set(5, 1));
        let (tx, mut rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let task = tokio::spawn(forward(feed, "web".into(), 0, tx, WATCH_STALL));
        assert_eq!(rx.recv().await.unwrap().unwrap().applied_index, 5);
        ftx.send(set(7, 2)).unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().endpoints.len(), 2);
        ftx.send(Arc::new(Err(Status::not_found("no job named \"web\"")))).unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap_err().code(), tonic::Code::NotFound);
        task.await.unwrap();
        assert!(rx.recv().await.is_none(), "the stream ends after the status");
    }

    #[tokio::test]
    async fn a_resume_at_the_current_index_skips_the_set_it_has() {
        let (ftx, feed) = tokio::sync::watch::channel(set(5, 1));
        let (tx, mut rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward(feed, "web".into(), 5, tx, WATCH_STALL));
        ftx.send(set(9, 3)).unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap().applied_index, 9, "the set at 5 was not sent again");
    }

    #[tokio::test]
    async fn a_watcher_that_never_reads_is_cut_off_holding_a_bounded_buffer() {
        let (ftx, feed) = tokio::sync::watch::channel(set(1, 1));
        let (tx, mut rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let task = tokio::spawn(forward(feed, "web".into(), 0, tx, Duration::from_millis(200)));
        for i in 2..1000 {
            if ftx.send(set(i, 1)).is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
        task.await.unwrap();
        let mut got = Vec::new();
        while let Ok(m) = rx.try_recv() {
            got.push(m);
        }
        assert_eq!(got.len(), WATCH_BUFFER, "never more than the buffer");
        let last = got.pop().unwrap().unwrap_err();
        assert_eq!(last.code(), tonic::Code::ResourceExhausted);
        assert!(last.message().contains("reconnect with since_index"), "{}", last.message());
        assert!(got.iter().all(|m| m.is_ok()));
    }

    #[tokio::test]
    async fn a_slow_watcher_skips_to_the_newest_set() {
        let (ftx, feed) = tokio::sync::watch::channel(set(1, 1));
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(forward(feed, "web".into(), 0, tx, WATCH_STALL));
        for i in 2..50 {
            ftx.send(set(i, 1)).unwrap();
            tokio::task::yield_now().await;
        }
        let mut last = 0;
        while last < 49 {
            last = rx.recv().await.unwrap().unwrap().applied_index;
        }
        assert_eq!(last, 49, "the newest set arrives after the skipped ones");
    }
}
