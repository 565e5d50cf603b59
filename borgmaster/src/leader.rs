//! The leader's duties: while this replica leads, the link shards poll every Borglet
//! ([`crate::link_shard`]) and the scheduler loop places pending tasks
//! ([`crate::scheduler_loop`]). The binary starts [`run`] once; it follows leadership until the
//! Raft group shuts down.

use crate::master::Master;
use crate::soft::SoftState;
use crate::state::Command;
use scheduler_core::MachineId;
use std::sync::Arc;
use std::time::Duration;

/// While some job is in a rolling update, proposes a [`Command::Tick`] every second, so that
/// its time-based rules (`min_ready`, `progress_deadline`) advance without other commands.
async fn tick_rollouts(master: Arc<Master>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        if master.state().rollouts_in_progress() {
            if let Err(e) = master.propose(Command::Tick).await {
                tracing::debug!(error = %e, "tick not committed");
            }
        }
    }
}

/// Every 2 s, deletes the batch jobs whose `ttl_after_finished` has passed
/// ([`crate::state::CellState::expired_jobs`]); the Borglets collect their sandboxes.
async fn collect_finished(master: Arc<Master>) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        every.tick().await;
        let expired = master.state().expired_jobs(crate::master::now_ms());
        for name in expired {
            match master.propose(Command::DeleteJob { name: name.clone() }).await {
                Ok(_) => tracing::info!(job = %name, "finished job removed: its ttl_after_finished passed"),
                Err(e) => tracing::debug!(job = %name, error = %e, "expired job not removed"),
            }
        }
    }
}

/// Every 500 ms, proposes a `CronTick` for each cron job with a tick due: the latest tick after
/// the last one it acted on, so ticks missed while no master led run once.
async fn tick_crons(master: Arc<Master>) {
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        let now = crate::master::now_ms();
        let due: Vec<(String, i64)> = master
            .state()
            .crons
            .iter()
            .filter(|(_, c)| !c.suspended)
            .filter_map(|(name, c)| {
                let schedule = borg_jobspec::schedule::Schedule::parse(c.spec.schedule.as_deref()?).ok()?;
                let tick = schedule.latest_due(c.last_tick_ms.max(c.created_ms), now)?;
                Some((name.clone(), tick))
            })
            .collect();
        for (name, tick_ms) in due {
            if let Err(e) = master.propose(Command::CronTick { name: name.clone(), tick_ms }).await {
                tracing::debug!(cron = %name, error = %e, "cron tick not committed");
            }
        }
    }
}

/// Machines whose usage [`commit_reservations`] observes or estimates under one hold of a lock
/// (about 100 tasks each in a cell of 1,000,000 on 10,000 machines: 6,400 runs, a few
/// milliseconds). Every poller takes the same locks: see [`crate::scheduler_loop::SNAPSHOT_SLICE_TASKS`]
/// for what shorter holds did to the polls.
const RESERVATION_CHUNK_MACHINES: usize = 64;

/// While this replica leads and reclamation is on: every `interval`, observes the last polls'
/// usage and commits the reservations that moved ([`crate::reservation`]); wakes the scheduler
/// when one fell.
async fn commit_reservations(master: Arc<Master>) {
    let cfg = master.config.reclaim;
    if !cfg.enabled {
        return;
    }
    let mut estimator = crate::reservation::Estimator::default();
    let mut every = tokio::time::interval(cfg.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = crate::master::now_ms();
        // a share of the machines at a time, yielding in between: at 1,000,000 tasks one pass
        // over all of them under the soft-state lock and then the state's read lock stalled the
        // leader for 1-3 s every interval (its pollers wait on the one, Raft's applies on the
        // other: scripts/bench-million)
        estimator.begin_round();
        let machines: Vec<MachineId> = master.soft().task_usage.keys().cloned().collect();
        for part in machines.chunks(RESERVATION_CHUNK_MACHINES) {
            {
                let soft = master.soft();
                estimator.observe_part(part.iter().filter_map(|m| soft.task_usage.get_key_value(m)), now, cfg.window);
            }
            tokio::task::yield_now().await;
        }
        estimator.end_round();
        let (mut due, mut fell) = (Vec::new(), false);
        for part in estimator.machines().chunks(RESERVATION_CHUNK_MACHINES) {
            fell |= estimator.due_part(part, &master.state(), &cfg, now, &mut due);
            tokio::task::yield_now().await;
        }
        let due = crate::reservation::finish_due(due);
        if due.is_empty() {
            continue;
        }
        let n = due.len();
        match master.propose(crate::state::Command::SetReservations { reservations: due }).await {
            Ok(_) => {
                tracing::debug!(tasks = n, "reservations committed");
                if fell {
                    // room was reclaimed: pending batch work may fit now
                    master.schedule_wakeup.notify_one();
                }
            }
            Err(e) => tracing::debug!(error = %e, "reservations not committed"),
        }
    }
}

/// Runs the leader's duties while this replica leads. On election it first confirms with a
/// quorum that its state holds every committed entry, records the configured default quota if
/// the state differs, then starts the duties with empty soft state (the Borglets' reports rebuild
/// it; no task is restarted); when leadership is lost it stops them.
pub async fn run(master: Arc<Master>) {
    let mut watch = master.leader_watch();
    loop {
        let Some(term) = watch.until_leading().await else { return };
        if let Err(e) = master.confirm_leadership().await {
            tracing::info!(error = %e, "elected but could not confirm leadership; waiting");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if master.state().default_quota != master.config.default_quota {
            let limit = master.config.default_quota;
            if let Err(e) = master.propose(Command::SetDefaultQuota { limit }).await {
                tracing::warn!(error = %e, "could not record the configured default quota");
            }
        }
        tracing::info!(id = master.id, term, "leading the cell: polling Borglets and scheduling");
        metrics::counter!(crate::metrics::LEADER_ELECTED).increment(1);
        *master.soft() = SoftState { led_since: Some(std::time::Instant::now()), ..SoftState::default() };
        let mut duties = tokio::task::JoinSet::new();
        duties.spawn(crate::scheduler_loop::run(master.clone()));
        duties.spawn(crate::link_shard::run(master.clone()));
        duties.spawn(tick_rollouts(master.clone()));
        duties.spawn(collect_finished(master.clone()));
        duties.spawn(tick_crons(master.clone()));
        duties.spawn(commit_reservations(master.clone()));
        watch.while_leading().await;
        tracing::warn!(id = master.id, "no longer the leader: stopped polling and scheduling");
        duties.shutdown().await;
    }
}
