//! Soft state: what the running leader observed (Borglet polls) and computed (why-pending). Never
//! replicated or persisted; a new leader starts it empty and the Borglets' reports rebuild it
//! (Borg §3.1: the Borgmaster's state beyond the Paxos store is soft).

use borg_jobspec::RunId;
use scheduler_core::{MachineId, Resources};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Usage of the task runs of one machine from its last polls: run -> (usage, CPU seconds since
/// start), in the order its Borglet lists them (by job, then index): a poll that brings usage
/// alone (`PollResponse.task_usage`, columns in that order) updates the values in place.
pub type TaskUsage = indexmap::IndexMap<RunId, (Resources, f64)>;

/// Why a job's unplaced tasks are pending: the scheduler's per-machine reasons (kept as data
/// until rendered), or a reason of the master's own that is not about machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Per-machine reasons from scheduler-core.
    Machines(scheduler_core::WhyPending),
    /// Another reason (an alloc set that does not exist or has no room).
    Other(String),
}

impl Pending {
    /// (machines in the cell, reason -> machines failing with it); (0, empty) for `Other`.
    pub fn reasons(&self) -> (usize, BTreeMap<String, usize>) {
        match self {
            Pending::Machines(w) => (w.machines, w.reasons.clone()),
            Pending::Other(_) => (0, Default::default()),
        }
    }
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pending::Machines(w) => w.fmt(f),
            Pending::Other(s) => f.write_str(s),
        }
    }
}

/// Soft state: known only to the running leader, rebuilt from Borglet polls after a restart.
/// The link shards write what polls observe; the scheduler loop writes why-pending.
#[derive(Debug, Default)]
pub struct SoftState {
    /// Why each job's unplaced tasks are pending, from the last scheduling pass. (foldhash, as
    /// below: every pass looks up each job with pending tasks here.)
    pub why_pending: foldhash::HashMap<String, Pending>,
    /// When each job's why-pending was computed (they are refreshed after a while).
    pub why_pending_at: foldhash::HashMap<String, Instant>,
    /// Last successful poll of each machine, ms since the Unix epoch.
    pub last_seen_ms: HashMap<MachineId, i64>,
    /// Usage each Borglet reported in its last poll.
    pub machine_usage: HashMap<MachineId, Resources>,
    /// Per-run usage from each machine's polls: replaced whole by every poll that lists the
    /// machine's tasks, so that gone tasks drop out, and updated in place by one that brings
    /// usage columns for the same runs.
    pub task_usage: HashMap<MachineId, TaskUsage>,
    /// When this replica started its leader duties (None on followers).
    pub led_since: Option<Instant>,
    /// Whether every registered machine has answered a poll since `led_since` (the first full
    /// poll round of this leadership; logged and exported once).
    pub first_round_done: bool,
}

impl SoftState {
    /// Usage of task `t`'s current run on its machine, if its Borglet reported it. Looked up
    /// by the run's parts, without building a [`RunId`] (the page, `/metrics` and job listings
    /// sum it over every task of the cell).
    pub fn usage_of_task(&self, t: &crate::state::Task) -> Option<Resources> {
        let key = (t.job.as_str(), t.index, t.incarnation);
        self.task_usage.get(t.machine.as_ref()?)?.get(&key as &dyn borg_jobspec::RunKey).map(|(u, _)| *u)
    }

    /// How long ago, in ms before `now_ms` (ms since the Unix epoch), the leader last heard a
    /// poll answer from the up machine of `state` it heard from least recently; a machine not
    /// answered yet in this leadership counts from the election. None on a follower
    /// (`led_since` unset) and in a cell with no up machine. The figure behind
    /// `borg_link_oldest_poll_age_seconds` (a full poll round fits in the poll interval while it
    /// stays under it).
    pub fn oldest_poll_age_ms(&self, state: &crate::state::CellState, now_ms: i64) -> Option<i64> {
        let led_ms = now_ms - self.led_since?.elapsed().as_millis() as i64;
        state
            .machines
            .values()
            .filter(|m| m.state == crate::state::MachineState::Up)
            .map(|m| (now_ms - self.last_seen_ms.get(&m.id).copied().unwrap_or(led_ms)).max(0))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::{self, bind, machine, spec};
    use crate::state::{CellState, Command, TaskId};

    /// A task's usage is found by its parts exactly as by its run id, and only for its current
    /// incarnation on its own machine.
    #[test]
    fn a_tasks_usage_is_its_current_runs_on_its_machine() {
        let mut s = CellState::new("dev");
        fixtures::run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        fixtures::run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: None }).unwrap();
        bind(&mut s, "web", 0, "m1");
        let t0 = s.task(&TaskId::new("web", 0)).unwrap().clone();
        let t1 = s.task(&TaskId::new("web", 1)).unwrap().clone();
        let mut soft = SoftState::default();
        let mut runs = TaskUsage::new();
        runs.insert(t0.run_id(), (Resources::new(7, 8, 0), 0.0));
        runs.insert(RunId::new("web", 0, t0.incarnation + 1), (Resources::new(1, 1, 0), 0.0));
        soft.task_usage.insert(MachineId("m1".into()), runs);
        let m1 = MachineId("m1".into());
        assert_eq!(soft.usage_of_task(&t0), Some(Resources::new(7, 8, 0)));
        assert_eq!(soft.usage_of_task(&t0), soft.task_usage[&m1].get(&t0.run_id()).map(|(u, _)| *u));
        assert_eq!(soft.usage_of_task(&t1), None, "not placed");
        let mut elsewhere = t0.clone();
        elsewhere.machine = Some(MachineId("m2".into()));
        assert_eq!(soft.usage_of_task(&elsewhere), None);
    }

    #[test]
    fn the_oldest_poll_age_is_the_least_recently_answered_up_machine() {
        let mut s = CellState::new("dev");
        for m in ["m1", "m2", "m3"] {
            fixtures::run(&mut s, Command::RegisterMachine { machine: machine(m) }).unwrap();
        }
        let mut soft = SoftState::default();
        let now = 1_000_000;
        assert_eq!(soft.oldest_poll_age_ms(&s, now), None, "a follower has no polls");
        soft.led_since = Some(std::time::Instant::now() - std::time::Duration::from_secs(10));
        let age = soft.oldest_poll_age_ms(&s, now).unwrap();
        assert!((10_000..11_000).contains(&age), "none answered yet: since the election, {age}");
        soft.last_seen_ms.insert(MachineId("m1".into()), now - 300);
        soft.last_seen_ms.insert(MachineId("m2".into()), now - 700);
        soft.last_seen_ms.insert(MachineId("m3".into()), now - 5_000);
        assert_eq!(soft.oldest_poll_age_ms(&s, now), Some(5_000));
        // a machine that is down does not count (its polls fail by definition)
        s.machines.get_mut(&MachineId("m3".into())).unwrap().state = crate::state::MachineState::Down;
        assert_eq!(soft.oldest_poll_age_ms(&s, now), Some(700));
    }
}
