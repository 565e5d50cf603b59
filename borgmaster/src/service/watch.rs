//! The event and task streams (`borgctl events --watch`, `borgctl tasks JOB --watch`): each
//! watcher wakes on the replica's applied index (not a timer) and sends what the entries
//! applied since brought. Events carry the index of the entry that caused them, the same on
//! every replica, so a client that reconnects elsewhere after a failover resumes exactly.
//!
//! A watcher whose stream stays full for [`WATCH_STALL`] is ended with RESOURCE_EXHAUSTED (its
//! client resumes from the last index it saw), so a slow reader costs a bounded buffer.

use super::naming::WATCH_STALL;
use crate::convert::{event_to_pb, task_to_pb};
use crate::master::Master;
use borg_proto as pb;
use std::sync::Arc;
use tokio::sync::mpsc::Sender;
use tonic::Status;

/// Sends `msg`, waiting at most [`WATCH_STALL`] for room; false when the watcher is gone or
/// was cut off (it is told why).
async fn send<T>(tx: &Sender<Result<T, Status>>, msg: T) -> bool {
    match tokio::time::timeout(WATCH_STALL, tx.reserve()).await {
        Ok(Ok(permit)) => {
            permit.send(Ok(msg));
            true
        }
        Ok(Err(_)) => false,
        Err(_) => {
            let _ = tx.try_send(Err(Status::resource_exhausted(format!(
                "watch ended: its stream was full for {} s; reconnect with since_index",
                WATCH_STALL.as_secs()
            ))));
            false
        }
    }
}

/// Streams the events of `job` (every event when empty) caused by entries after `since`
/// (from now when 0), in order, until the receiver goes away or the job is deleted.
pub async fn events(master: Arc<Master>, job: String, since: u64, tx: Sender<Result<pb::WatchEventsResponse, Status>>) {
    let mut applied = master.applied_watch();
    let mut last = if since == 0 { master.state().applied_index } else { since };
    let mut first = since > 0;
    loop {
        let read = {
            let s = master.state();
            if !job.is_empty() && !s.jobs.contains_key(&job) {
                None
            } else {
                // newest first until the ones already sent
                let mut new: Vec<pb::Event> = s
                    .events
                    .iter()
                    .rev()
                    .take_while(|e| e.log_index > last)
                    .filter(|e| job.is_empty() || e.job == job)
                    .map(event_to_pb)
                    .collect();
                new.reverse();
                // the oldest kept event is newer than what the watcher had: some were dropped
                let gap = first
                    && s.events.len() >= crate::state::MAX_EVENTS
                    && s.events.front().is_some_and(|e| e.log_index > last + 1);
                Some((new, gap, s.applied_index))
            }
        };
        let Some((events, gap, index)) = read else {
            let _ = tx.send(Err(Status::not_found(format!("job {job:?} was deleted")))).await;
            return;
        };
        first = false;
        if (!events.is_empty() || gap)
            && !send(&tx, pb::WatchEventsResponse { events, applied_index: index, gap }).await
        {
            return;
        }
        last = last.max(index);
        tokio::select! {
            next = applied.after(last) => if next.is_none() { return },
            () = tx.closed() => return,
        }
    }
}

/// Streams job `job`'s tasks: all of them, then those whose record changed (usage alone does
/// not count), until the receiver goes away or the job is deleted.
pub async fn tasks(master: Arc<Master>, job: String, tx: Sender<Result<pb::WatchTasksResponse, Status>>) {
    let mut applied = master.applied_watch();
    let mut sent: Vec<pb::Task> = Vec::new();
    let mut first = true;
    let mut last = 0;
    loop {
        let read = {
            let s = master.state();
            s.jobs.get(&job).map(|j| {
                let soft = master.soft();
                (j.tasks.iter().map(|t| task_to_pb(t, &s, &soft)).collect::<Vec<_>>(), s.applied_index)
            })
        };
        let Some((now, index)) = read else {
            let _ = tx.send(Err(Status::not_found(format!("job {job:?} was deleted")))).await;
            return;
        };
        let without_usage = |t: &pb::Task| pb::Task { used: None, ..t.clone() };
        let changed: Vec<pb::Task> = now
            .iter()
            .enumerate()
            .filter(|(i, t)| first || sent.get(*i).is_none_or(|old| without_usage(old) != without_usage(t)))
            .map(|(_, t)| t.clone())
            .collect();
        if (first || !changed.is_empty())
            && !send(&tx, pb::WatchTasksResponse { tasks: changed, applied_index: index }).await
        {
            return;
        }
        first = false;
        sent = now;
        last = last.max(index);
        tokio::select! {
            next = applied.after(last) => if next.is_none() { return },
            () = tx.closed() => return,
        }
    }
}
