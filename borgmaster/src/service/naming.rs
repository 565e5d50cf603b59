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
    Ok(pb::ResolveResponse { endpoints, applied_index: state.applied_index, ..Default::default() })
}

/// Messages a watcher's stream may hold unread. A watcher further behind than that skips to
/// the newest version (sent as the whole set), so a slow watcher costs at most this many
/// messages of memory.
pub const WATCH_BUFFER: usize = 8;

/// How long a watcher's stream may stay full before it is ended with RESOURCE_EXHAUSTED.
pub const WATCH_STALL: Duration = Duration::from_secs(30);

/// Deltas a feed keeps: a watcher up to this many versions behind is sent their merge, one
/// further behind the whole set.
pub const FEED_DELTAS: usize = 32;

/// One version of a name's endpoints in a feed: the whole set, and the deltas of the last
/// versions (up to [`FEED_DELTAS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FeedSet {
    /// Version number within the feed (1 for the first).
    pub seq: u64,
    /// The whole set.
    pub full: pb::ResolveResponse,
    /// Deltas of versions `seq - recent.len() + 1 ..= seq`, oldest first (`delta: true`).
    pub recent: Vec<Arc<pb::ResolveResponse>>,
}

impl FeedSet {
    /// What a watcher that has version `had` needs: the merged deltas since, or `None` when
    /// they are no longer kept (send the whole set).
    fn since(&self, had: u64) -> Option<pb::ResolveResponse> {
        let behind = usize::try_from(self.seq.checked_sub(had)?).ok()?;
        if behind == 0 || behind > self.recent.len() {
            return None;
        }
        let deltas = &self.recent[self.recent.len() - behind..];
        if let [one] = deltas {
            return Some(one.as_ref().clone());
        }
        let mut upserts: std::collections::BTreeMap<u32, pb::Endpoint> = Default::default();
        let mut removed = std::collections::BTreeSet::new();
        for d in deltas {
            for i in &d.removed {
                upserts.remove(i);
                removed.insert(*i);
            }
            for e in &d.endpoints {
                removed.remove(&e.index);
                upserts.insert(e.index, e.clone());
            }
        }
        Some(pb::ResolveResponse {
            endpoints: upserts.into_values().collect(),
            applied_index: self.full.applied_index,
            delta: true,
            removed: removed.into_iter().collect(),
        })
    }
}

/// What a feed holds: the newest set, or the status that ended it.
pub type FeedValue = Arc<Result<FeedSet, Status>>;

/// The newest endpoints of one name, computed once per applied entry that changes them and
/// shared by every watcher of the name.
pub type Feed = tokio::sync::watch::Receiver<FeedValue>;

/// The delta from `old` to `new`: endpoints added or changed, and the indices removed.
fn delta(old: &[pb::Endpoint], new: &pb::ResolveResponse) -> pb::ResolveResponse {
    let before: HashMap<u32, &pb::Endpoint> = old.iter().map(|e| (e.index, e)).collect();
    let now: std::collections::HashSet<u32> = new.endpoints.iter().map(|e| e.index).collect();
    pb::ResolveResponse {
        endpoints: new.endpoints.iter().filter(|e| before.get(&e.index) != Some(e)).cloned().collect(),
        applied_index: new.applied_index,
        delta: true,
        removed: old.iter().map(|e| e.index).filter(|i| !now.contains(i)).collect(),
    }
}

/// The endpoint feeds of the names being watched on one replica: one feed task per name,
/// however many watchers it has, woken by the applied index (not by a timer); each change is
/// computed once, and every watcher that keeps up is sent only the delta. A feed ends when
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
        let set = FeedSet { seq: 1, full: first, recent: Vec::new() };
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(Ok(set)));
        feeds.insert(name.to_string(), rx.clone());
        tokio::spawn(self.clone().run_feed(master.clone(), name.to_string(), tx));
        Ok(rx)
    }

    async fn run_feed(self: Arc<Self>, master: Arc<Master>, name: String, tx: tokio::sync::watch::Sender<FeedValue>) {
        let mut applied = master.applied_watch();
        let mut seen = tx.borrow().as_ref().as_ref().map_or(0, |r| r.full.applied_index);
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
                let next = match (cur.as_ref(), r) {
                    (Ok(old), Ok(new)) if old.full.endpoints == new.endpoints => return false,
                    (Ok(old), Ok(new)) => {
                        let skip = (old.recent.len() + 1).saturating_sub(FEED_DELTAS);
                        let mut recent: Vec<_> = old.recent[skip..].to_vec();
                        recent.push(Arc::new(delta(&old.full.endpoints, &new)));
                        Ok(FeedSet { seq: old.seq + 1, full: new, recent })
                    }
                    (_, Err(status)) => Err(status),
                    (Err(_), Ok(_)) => return false,
                };
                *cur = Arc::new(next);
                true
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

/// Sends `feed`'s changes to one watcher's stream `tx`: the whole set at once (unless
/// `since_index` is given and the set has not changed since), then the delta to each newer
/// version (merged, when the watcher woke after several), or the whole set again when it fell
/// more than [`FEED_DELTAS`] versions behind. Ends when the receiver is gone, when the name stops resolving (its status is sent),
/// or when `tx` has been full for `stall` (RESOURCE_EXHAUSTED, in the slot kept for it).
pub async fn forward(
    mut feed: Feed,
    name: String,
    since_index: u64,
    tx: tokio::sync::mpsc::Sender<Result<pb::ResolveResponse, Status>>,
    stall: Duration,
) {
    // the version of the last set this watcher was sent (or skipped as already known)
    let mut sent: Option<u64> = None;
    loop {
        // one slot always stays free for the status that ends a stalled stream
        if tx.capacity() <= 1 {
            match tokio::time::timeout(stall, tx.reserve_many(2)).await {
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
        }
        let cur = feed.borrow_and_update().clone();
        let msg = match cur.as_ref() {
            Err(s) => {
                let _ = tx.try_send(Err(Status::new(s.code(), s.message())));
                return;
            }
            Ok(set) if sent.is_none() && since_index > 0 && set.full.applied_index <= since_index => None,
            Ok(set) if sent == Some(set.seq) => None,
            Ok(set) => Some(sent.and_then(|had| set.since(had)).unwrap_or_else(|| set.full.clone())),
        };
        if let Ok(set) = cur.as_ref() {
            sent = Some(set.seq);
        }
        if let Some(m) = msg {
            if tx.try_send(Ok(m)).is_err() {
                return;
            }
        }
        if feed.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(index: u64, n: u32) -> pb::ResolveResponse {
        let endpoints = (0..n).map(|i| pb::Endpoint { index: i, ..Default::default() }).collect();
        pb::ResolveResponse { endpoints, applied_index: index, ..Default::default() }
    }

    /// Feed versions 1, 2, ...: version k has k endpoints, at applied index 10 k.
    fn version(seq: u64) -> FeedValue {
        let recent = (seq.saturating_sub(FEED_DELTAS as u64 - 1).max(2)..=seq)
            .map(|k| Arc::new(delta(&full(10 * (k - 1), k as u32 - 1).endpoints, &full(10 * k, k as u32))))
            .collect();
        Arc::new(Ok(FeedSet { seq, full: full(10 * seq, seq as u32), recent }))
    }

    #[test]
    fn a_watcher_a_few_versions_behind_gets_the_merged_deltas() {
        let Ok(set) = version(5).as_ref().clone() else { unreachable!() };
        let m = set.since(2).unwrap();
        assert!(m.delta);
        assert_eq!(m.endpoints.iter().map(|e| e.index).collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(set.since(5), None, "nothing to send");
        let Ok(far) = version(100).as_ref().clone() else { unreachable!() };
        assert_eq!(far.since(1), None, "too far behind: the whole set");
    }

    #[test]
    fn a_delta_holds_what_was_added_changed_and_removed() {
        let old = full(1, 3);
        let mut new = full(2, 2);
        new.endpoints[1].ready = true;
        new.endpoints.push(pb::Endpoint { index: 7, ..Default::default() });
        let d = delta(&old.endpoints, &new);
        assert!(d.delta);
        assert_eq!(d.endpoints.iter().map(|e| e.index).collect::<Vec<_>>(), [1, 7]);
        assert_eq!(d.removed, [2]);
    }

    #[tokio::test]
    async fn a_watcher_gets_the_whole_set_then_deltas_and_the_status_that_ends_it() {
        let (ftx, feed) = tokio::sync::watch::channel(version(1));
        let (tx, mut rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let task = tokio::spawn(forward(feed, "web".into(), 0, tx, WATCH_STALL));
        let first = rx.recv().await.unwrap().unwrap();
        assert!(!first.delta && first.endpoints.len() == 1);
        ftx.send(version(2)).unwrap();
        let d = rx.recv().await.unwrap().unwrap();
        assert!(d.delta && d.endpoints.len() == 1 && d.endpoints[0].index == 1, "{d:?}");
        ftx.send(Arc::new(Err(Status::not_found("no job named \"web\"")))).unwrap();
        assert_eq!(rx.recv().await.unwrap().unwrap_err().code(), tonic::Code::NotFound);
        task.await.unwrap();
        assert!(rx.recv().await.is_none(), "the stream ends after the status");
    }

    #[tokio::test]
    async fn a_resume_at_the_current_index_skips_the_set_it_has() {
        let (ftx, feed) = tokio::sync::watch::channel(version(1));
        let (tx, mut rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward(feed, "web".into(), 10, tx, WATCH_STALL));
        ftx.send(version(2)).unwrap();
        // the first message is the version at 20 (a delta or, had the feed moved before the
        // watcher looked, the whole set): never the set at 10 again
        let m = rx.recv().await.unwrap().unwrap();
        assert_eq!(m.applied_index, 20, "the set at 10 was not sent again");
    }

    #[tokio::test]
    async fn a_watcher_that_never_reads_is_cut_off_holding_a_bounded_buffer() {
        let (ftx, feed) = tokio::sync::watch::channel(version(1));
        let (tx, mut rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        let task = tokio::spawn(forward(feed, "web".into(), 0, tx, Duration::from_millis(200)));
        for seq in 2..1000 {
            if ftx.send(version(seq)).is_err() {
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
    async fn a_watcher_that_skipped_versions_still_rebuilds_the_newest_set() {
        let (ftx, feed) = tokio::sync::watch::channel(version(1));
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(forward(feed, "web".into(), 0, tx, WATCH_STALL));
        for seq in 2..50 {
            ftx.send(version(seq)).unwrap();
            tokio::task::yield_now().await;
        }
        // applying every message in order rebuilds the newest set
        let mut set: std::collections::BTreeMap<u32, pb::Endpoint> = Default::default();
        while set.len() < 49 {
            let m = rx.recv().await.unwrap().unwrap();
            if !m.delta {
                set.clear();
            }
            for i in &m.removed {
                set.remove(i);
            }
            set.extend(m.endpoints.into_iter().map(|e| (e.index, e)));
        }
        assert_eq!(set.len(), 49);
    }
}
