//! The cell state machine: jobs, tasks and machines, changed only by [`Command`]s.
//!
//! Pure: [`CellState::apply`] takes a command and the time it was accepted and returns the
//! [`Event`]s it caused; no I/O, no clock, no randomness, so replaying the same log always rebuilds
//! the same state (the property Raft replication relies on). The master persists each command
//! before applying it (see `store`), and rebuilds the state on restart from the last checkpoint
//! plus the log after it.

mod apply;
mod cron;
mod deps;
#[cfg(test)]
pub(crate) mod fixtures;
mod jobs;
mod machines;
mod maintenance;
mod placement;
#[cfg(test)]
pub(crate) mod props;
mod quota;
mod types;

pub use apply::{ApplyOutcome, CommandError, OverQuota};
pub use deps::After;
pub use quota::{headroom as quota_headroom, QuotaRow};
pub use types::*;

use scheduler_core::{MachineId, Resources};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Most events kept in the state (oldest dropped first).
pub const MAX_EVENTS: usize = 10_000;

pub use borg_jobspec::{RunId, TaskId};

/// The whole replicated cell state.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CellState {
    /// Cell name.
    pub cell: String,
    /// Jobs by name (killed and finished jobs stay until replaced).
    pub jobs: BTreeMap<String, Job>,
    /// Machines by id.
    pub machines: BTreeMap<MachineId, Machine>,
    /// Recent events, oldest first, at most [`MAX_EVENTS`].
    pub events: VecDeque<Event>,
    /// Index of the last log entry applied (0 = none).
    pub applied_index: u64,
    /// Quota grants: user -> band name -> limit.
    #[serde(default)]
    pub quotas: BTreeMap<String, BTreeMap<String, Resources>>,
    /// Quota of users without a grant at a band; `None` = unlimited. A new cell state is
    /// unlimited; the master sets its configured default (zero unless told otherwise) at start.
    #[serde(default)]
    pub default_quota: Option<Resources>,
    /// Fair-share weights: user -> band name -> weight (absent: 1). A user's dominant share is
    /// divided by it when the scheduler orders users (`borgctl quota set USER BAND weight=N`).
    #[serde(default)]
    pub weights: BTreeMap<String, BTreeMap<String, u32>>,
    /// Cron jobs (specs with a `schedule`) by name: templates whose ticks create runs.
    #[serde(default)]
    pub crons: BTreeMap<String, CronJob>,
    /// Draining machines whose drain has been announced done (an [`EventKind::Drained`] event:
    /// they held no tasks at some step), whatever emptied them: the drain itself, tasks that
    /// finished, a job killed. Cleared when the machine's maintenance changes or it is
    /// removed. States written before it was kept read it empty, so a draining machine with no
    /// tasks in one is announced once more, at the first command after the upgrade.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    drained: BTreeSet<MachineId>,
    /// Derived: tasks bound to each machine that are not dead. Rebuilt by [`CellState::reindex`].
    #[serde(skip)]
    by_machine: BTreeMap<MachineId, BTreeSet<TaskId>>,
    /// Derived: names of jobs in a rolling update (some live task on an earlier version), so
    /// that advancing rollouts after each command costs nothing for the other jobs. Rebuilt by
    /// [`CellState::reindex`].
    #[serde(skip)]
    rolling: BTreeSet<String>,
    /// Derived: names of jobs held back by `after` ([`Job::held`]). Rebuilt by
    /// [`CellState::reindex`].
    #[serde(skip)]
    held: BTreeSet<String>,
    /// Derived: machines being drained ([`Maintenance::Draining`]) not yet announced drained
    /// (not in `drained`), so that advancing drains
    /// after each command looks at them alone, not at every machine of the cell (at 10,000
    /// machines that scan was most of what a command cost besides its own change: the
    /// `apply_tick_100k_tasks` bench). Rebuilt by [`CellState::reindex`].
    #[serde(skip)]
    draining: BTreeSet<MachineId>,
    /// Derived: each machine's poll generation ([`CellState::poll_generation`]).
    #[serde(skip)]
    poll_generations: PollGenerations,
}

/// Per machine, a number that changes whenever something a poll of the machine carries may
/// have changed: which tasks are bound to it, or any of their identities (incarnation, job
/// version) or recorded statuses. A link shard's poller keeps the digests it computed with the
/// generation they were computed at and walks the machine's tasks again only when it moved
/// (at 1,000,000 tasks on 10,000 machines the walk was a third of the leader's polling).
///
/// Marked by every path that changes a task bound to a machine: [`CellState::task_mut`] and
/// [`CellState::job_mut`] (before the change), binding and unbinding, a machine going down or
/// away, and [`CellState::reindex`] (every machine). Generations come from one counter for the
/// whole process, so a generation is never seen twice, not even across a state replaced by a
/// snapshot. Derived and local: replicas number differently, so it takes no part in comparing
/// states (two states with the same content are equal whatever their generations).
#[derive(Debug, Clone, Default)]
struct PollGenerations(std::collections::HashMap<MachineId, u64>);

impl PartialEq for PollGenerations {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl PollGenerations {
    /// Gives machine `m` a generation never given before.
    fn mark(&mut self, m: &MachineId) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let g = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.0.get_mut(m) {
            Some(v) => *v = g,
            None => {
                self.0.insert(m.clone(), g);
            }
        }
    }
}

/// Jobs looked up by name through a sweep over many runs (a run per task, a job per hundred or
/// more of them): each name is looked up in the state's B-tree once, then by hash.
pub struct JobsByName<'a> {
    state: &'a CellState,
    /// foldhash: looked up once per task or run in the sweeps that use it (SipHash was a fifth
    /// of a `/metrics` scrape's instructions).
    seen: foldhash::HashMap<&'a str, Option<&'a Job>>,
}

impl<'a> JobsByName<'a> {
    /// A lookup of `state`'s jobs.
    pub fn new(state: &'a CellState) -> Self {
        JobsByName { state, seen: foldhash::HashMap::default() }
    }

    /// Job `name`, if the state has it.
    pub fn get(&mut self, name: &'a str) -> Option<&'a Job> {
        let state = self.state;
        *self.seen.entry(name).or_insert_with(|| state.jobs.get(name))
    }
}

impl CellState {
    /// An empty cell named `cell`.
    pub fn new(cell: &str) -> Self {
        CellState { cell: cell.to_string(), ..Default::default() }
    }

    /// Rebuilds derived indexes after deserialization.
    pub fn reindex(&mut self) {
        self.rolling = self.jobs.values().filter(|j| !j.killed && j.rolling()).map(|j| j.spec.name.clone()).collect();
        self.held = self.jobs.values().filter(|j| j.held()).map(|j| j.spec.name.clone()).collect();
        self.draining = self
            .machines
            .values()
            .filter(|m| matches!(m.maintenance, Maintenance::Draining { .. }) && !self.drained.contains(&m.id))
            .map(|m| m.id.clone())
            .collect();
        // Each machine's tasks are gathered first and its set built from them at once (sorted
        // input builds a B-tree in one pass), with one copy of the machine's id per machine, not
        // per task: a replica installing a 1,000,000-task snapshot waits on this.
        let mut bound: HashMap<&MachineId, Vec<TaskId>> = HashMap::new();
        for job in self.jobs.values() {
            for t in &job.tasks {
                if let (Some(m), false) = (&t.machine, t.state == TaskState::Dead) {
                    bound.entry(m).or_default().push(t.id());
                }
            }
        }
        self.by_machine = bound.into_iter().map(|(m, tasks)| (m.clone(), tasks.into_iter().collect())).collect();
        for m in self.machines.keys().chain(self.by_machine.keys()) {
            self.poll_generations.mark(m);
        }
    }

    /// Whether some rule waits on time (see [`Command::Tick`]): a job in a rolling update that
    /// can still advance (a paused or killed job's cannot until the next apply), or a drain
    /// with a deadline.
    pub fn rollouts_in_progress(&self) -> bool {
        self.rolling.iter().any(|j| self.jobs.get(j).is_some_and(|j| j.paused.is_none() && !j.killed))
            || self.draining.iter().filter_map(|id| self.machines.get(id)).any(|m| {
                matches!(m.maintenance, Maintenance::Draining { deadline_ms: Some(_) }) && self.task_count_on(&m.id) > 0
            })
    }

    /// A task by id.
    pub fn task(&self, id: &TaskId) -> Option<&Task> {
        self.jobs.get(&id.job)?.tasks.get(id.index as usize)
    }

    /// Tasks bound to machine `m` that are not dead, sorted by (job, index): what its Borglet
    /// should run.
    pub fn tasks_on(&self, m: &MachineId) -> impl Iterator<Item = &Task> {
        self.tasks_on_with_jobs(m).map(|(t, _)| t)
    }

    /// [`CellState::tasks_on`] with each task's job. A machine's tasks come sorted by job, so
    /// each job is looked up by name once per run of its tasks, not once per task (a poll of
    /// every machine every second walks them all).
    pub fn tasks_on_with_jobs(&self, m: &MachineId) -> impl Iterator<Item = (&Task, &Job)> {
        let mut last = None;
        self.by_machine.get(m).into_iter().flatten().filter_map(move |k| {
            let job = self.job_cached(&mut last, &k.job)?;
            Some((job.tasks.get(k.index as usize)?, job))
        })
    }

    /// Job `name`: `last` (the job asked for before) when it is that job, otherwise looked up by
    /// name and remembered in `last`. A walk over tasks sorted by job (a machine's, a Borglet's
    /// report) looks each job up once per run of its tasks.
    pub fn job_cached<'a>(&'a self, last: &mut Option<(&'a String, &'a Job)>, name: &str) -> Option<&'a Job> {
        match *last {
            Some((n, j)) if n == name => Some(j),
            _ => {
                *last = self.jobs.get_key_value(name);
                last.map(|(_, j)| j)
            }
        }
    }

    /// Sum of the requests of the tasks bound to `m` that are not dead (allocs count; tasks
    /// inside allocs do not: the alloc already reserved their room).
    pub fn allocated_on(&self, m: &MachineId) -> Resources {
        self.tasks_on(m).fold(Resources::ZERO, |acc, t| acc.saturating_add(self.charge_of(t)))
    }

    /// What task `t` takes from its machine's capacity: its request at its job version, or
    /// nothing when it runs inside an alloc (the alloc is charged instead) or is not bound or
    /// dead. The one rule behind every "allocated" figure (machines, cell usage, metrics, page).
    pub fn charge_of(&self, t: &Task) -> Resources {
        self.jobs.get(&t.job).map_or(Resources::ZERO, |j| charge_in(j, t))
    }

    /// What task `t` reserves on its machine (Borg §5.5): its committed reservation, capped
    /// at [`CellState::charge_of`]; its charge when it has none (zero when it charges nothing).
    pub fn reservation_of(&self, t: &Task) -> Resources {
        reservation_within(t, self.charge_of(t))
    }

    /// `user`'s fair-share weight at `band` (1 unless set).
    pub fn share_weight(&self, user: &str, band: scheduler_core::Band) -> u32 {
        self.weights.get(user).and_then(|b| b.get(band.name())).copied().unwrap_or(1).max(1)
    }

    /// Machine `m`'s poll generation: while it stays the same, so do the tasks bound to `m`,
    /// their identities and their recorded statuses (see [`PollGenerations`]). 0 for a machine
    /// never marked (it has held no task since this state was built).
    pub fn poll_generation(&self, m: &MachineId) -> u64 {
        self.poll_generations.0.get(m).copied().unwrap_or(0)
    }

    /// Number of tasks bound to `m` that are not dead.
    pub fn task_count_on(&self, m: &MachineId) -> usize {
        self.by_machine.get(m).map_or(0, |s| s.len())
    }
}

/// [`CellState::charge_of`] for a task of `job` (one of `job.tasks`), without looking the job
/// up by name: for sweeps over every task of the cell (`usage::cell_usage`).
pub fn charge_in(job: &Job, t: &Task) -> Resources {
    if t.alloc.is_some() || t.machine.is_none() || t.state == TaskState::Dead {
        return Resources::ZERO;
    }
    job.spec_for(t.job_version).resources
}

/// [`CellState::reservation_of`] for a task whose charge is `charge`: its committed
/// reservation capped at its charge, else the charge.
pub fn reservation_within(t: &Task, charge: Resources) -> Resources {
    t.reservation.map_or(charge, |r| r.min_each(&charge))
}
