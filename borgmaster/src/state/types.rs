//! Records of the cell state and the commands that change it.

use borg_jobspec::{JobSpec, RunId, TaskId};
use scheduler_core::{Attributes, Band, MachineId, Resources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Task state (Borg Figure 2): `pending -> running -> dead`, `running -> pending` on eviction or
/// machine loss, `pending|running -> dead` on kill or finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for a machine, or bound to one whose Borglet has not yet started it.
    Pending,
    /// Its Borglet reports a process (or a restart in progress).
    Running,
    /// Finished, failed for good, or killed.
    Dead,
}

impl TaskState {
    /// `pending`, `running` or `dead`.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Dead => "dead",
        }
    }
}

/// One task, `job/index`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Job name.
    pub job: String,
    /// Task index, 0..tasks.
    pub index: u32,
    /// State.
    pub state: TaskState,
    /// Bound machine; `None` while pending and unplaced. Kept after death for display.
    pub machine: Option<MachineId>,
    /// Bumped on every (re)placement and restart-with-new-spec; Borglet reports for another
    /// incarnation are stale and ignored.
    pub incarnation: u64,
    /// Job spec version this incarnation runs.
    pub job_version: u64,
    /// Exit code of the last run, once it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended the last run.
    pub signal: Option<i32>,
    /// Restarts done by the Borglet in this incarnation.
    pub restarts: u32,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Why the task is in its state, for people: `submitted`, `scheduled`, `preempted`,
    /// `machine down`, the Borglet's exit message, ... Code decides on [`Task::pending_reason`]
    /// and [`Task::state`], never on this text.
    pub reason: String,
    /// Why the task last became pending (kept while it is placed and runs; read for pending
    /// tasks). `None` only in state recorded before it existed, which counts as submitted.
    #[serde(default)]
    pub pending_reason: Option<PendingReason>,
    /// When the task entered its state, ms since the Unix epoch.
    pub state_since_ms: i64,
    /// When it last became pending (submitted, updated, evicted), ms since the Unix epoch: the
    /// start of its placement latency.
    #[serde(default)]
    pub queued_ms: i64,
    /// For a task of a job in an alloc set: the index of the alloc it runs in.
    #[serde(default)]
    pub alloc: Option<u32>,
    /// For a per_machine job's task: the machine it belongs to.
    #[serde(default)]
    pub pinned: Option<MachineId>,
    /// When it was last bound to a machine, ms since the Unix epoch (0 = never).
    #[serde(default)]
    pub scheduled_ms: i64,
    /// Its port numbers by name, from its machine's port range, assigned when it was bound (so
    /// every replica knows who listens where); empty while unplaced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
    /// Running and passing its readiness check, as its Borglet last reported (without a check:
    /// running). False while pending or dead.
    #[serde(default)]
    pub ready: bool,
    /// Since when it has been ready, ms since the Unix epoch (0 while not ready).
    #[serde(default)]
    pub ready_since_ms: i64,
    /// Its reservation (Borg §5.5): what the leader estimates this incarnation needs, from its
    /// Borglet's usage samples ([`Command::SetReservations`]; `crate::reservation` has the
    /// formula). `None`: its whole request (a new incarnation, or reclamation off). Batch and
    /// free tasks are placed against capacity minus reservations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<Resources>,
}

impl Task {
    /// Its id, `job/index`.
    pub fn id(&self) -> TaskId {
        TaskId::new(&self.job, self.index)
    }

    /// Its current run, `job/index#incarnation`.
    pub fn run_id(&self) -> RunId {
        RunId::new(&self.job, self.index, self.incarnation)
    }
}

/// A job: its spec, version and tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Current spec (shared with [`Job::history`] and [`Job::old_specs`]: an apply copies a
    /// spec once, not once per place that keeps it).
    pub spec: Arc<JobSpec>,
    /// Starts at 1; bumped by every apply that changes the spec.
    pub version: u64,
    /// First submission, ms since the Unix epoch.
    pub submitted_ms: i64,
    /// Set by a kill; cleared by a later apply.
    pub killed: bool,
    /// Tasks by index; `tasks.len() == spec.tasks` (per_machine jobs: one per machine).
    pub tasks: Vec<Task>,
    /// Specs of earlier versions still run by some task during a rolling update, by version.
    #[serde(default)]
    pub old_specs: std::collections::BTreeMap<u64, Arc<JobSpec>>,
    /// Why its rolling update is paused (a replacement not ready within the progress
    /// deadline); cleared by the next apply. `None`: not paused.
    #[serde(default)]
    pub paused: Option<String>,
    /// Its last [`MAX_REVISIONS`] specs, oldest first (`borgctl rollout history`, `undo`).
    #[serde(default)]
    pub history: Vec<Revision>,
    /// Its `after` jobs have been settled: all succeeded (its tasks may be placed), or one
    /// failed (so did it). Always true in effect for a job without `after`.
    #[serde(default)]
    pub after_settled: bool,
    /// The cron job that created it (a run), if any.
    #[serde(default)]
    pub cron: Option<String>,
}

/// A cron job: a batch spec with a `schedule`; each tick creates a run from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CronJob {
    /// The template (with its schedule, concurrency and history).
    pub spec: JobSpec,
    /// Bumped by every apply that changes it.
    pub version: u64,
    /// Ticks are skipped while set (`borgctl cron suspend`).
    pub suspended: bool,
    /// When it was created (ticks count from then), ms since the epoch.
    pub created_ms: i64,
    /// The last tick acted on (0: none yet).
    pub last_tick_ms: i64,
}

impl Job {
    /// Records `spec` as revision `version`, applied at `applied_ms`, keeping the last
    /// [`MAX_REVISIONS`].
    pub fn record_revision(&mut self, version: u64, applied_ms: i64, spec: Arc<JobSpec>) {
        self.history.push(Revision { version, applied_ms, spec });
        if self.history.len() > MAX_REVISIONS {
            self.history.remove(0);
        }
    }

    /// Whether its tasks are held back until the jobs it waits for (`after`) have succeeded.
    pub fn held(&self) -> bool {
        !self.spec.after.is_empty() && !self.after_settled && !self.killed
    }
}

/// Most revisions a job keeps.
pub const MAX_REVISIONS: usize = 10;

/// One version of a job's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// The version.
    pub version: u64,
    /// When it was applied, ms since the Unix epoch.
    pub applied_ms: i64,
    /// The spec.
    pub spec: Arc<JobSpec>,
}

impl Job {
    /// The spec a task of version `v` runs: the current one, or an earlier one mid-rollout.
    pub fn spec_for(&self, v: u64) -> &JobSpec {
        if v == self.version {
            &self.spec
        } else {
            self.old_specs.get(&v).unwrap_or(&self.spec)
        }
    }

    /// Whether live tasks still run an earlier version (a rolling update is under way).
    pub fn rolling(&self) -> bool {
        self.tasks.iter().any(|t| t.job_version < self.version && t.state != TaskState::Dead)
    }

    /// `killed`, `done` (every task dead), `pending` (none running) or `running`.
    pub fn state_name(&self) -> &'static str {
        if self.killed {
            "killed"
        } else if self.tasks.iter().all(|t| t.state == TaskState::Dead) {
            "done"
        } else if self.tasks.iter().all(|t| t.state == TaskState::Pending) {
            "pending"
        } else {
            "running"
        }
    }
}

/// Machine health as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineState {
    /// Answering polls.
    Up,
    /// Missed too many polls; its tasks were moved elsewhere.
    Down,
}

/// An admin's hold on a machine (`borgctl machines cordon|drain|uncordon`), independent of
/// whether it answers polls ([`MachineState`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Maintenance {
    /// None: the scheduler may place tasks on it.
    #[default]
    None,
    /// Cordoned: no new tasks; what runs there keeps running.
    Cordoned,
    /// Draining: cordoned, and its tasks are moved off under each job's disruption budget;
    /// whatever is left at `deadline_ms` (ms since the epoch) is evicted regardless.
    Draining {
        /// When to stop respecting budgets; `None`: never.
        deadline_ms: Option<i64>,
    },
}

/// One machine of the cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Id.
    pub id: MachineId,
    /// Borglet address, host:port.
    pub address: String,
    /// Capacity: millicores, bytes, bytes.
    pub capacity: Resources,
    /// Attributes (arch, os, hostname, and the Borglet's `--attr k=v`).
    pub attributes: Attributes,
    /// Up or down.
    pub state: MachineState,
    /// Last registration, ms since the Unix epoch.
    pub registered_ms: i64,
    /// The port range its tasks get ports from, inclusive (`borglet --port-range`); `None`: no
    /// ports. `capacity.ports` is its size.
    #[serde(default)]
    pub port_range: Option<(u16, u16)>,
    /// An admin's hold on it (cordon, drain); kept across registrations.
    #[serde(default)]
    pub maintenance: Maintenance,
}

impl Machine {
    /// Whether the scheduler may place new tasks on it: up, neither cordoned nor draining.
    pub fn schedulable(&self) -> bool {
        self.state == MachineState::Up && self.maintenance == Maintenance::None
    }
}

/// A state transition or notable happening. Events are part of the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, ms since the Unix epoch.
    pub time_ms: i64,
    /// Job, or empty for machine events.
    pub job: String,
    /// Task index, for task events.
    pub index: Option<u32>,
    /// What happened.
    pub kind: EventKind,
    /// Human detail.
    pub detail: String,
    /// Machine involved; every change of a machine's desired task set names the machine here.
    pub machine: Option<MachineId>,
    /// For an event that sent a task back to pending: why (metrics count evictions by it).
    /// Not on the wire; absent in events recorded before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<PendingReason>,
    /// Index of the log entry that caused it (the state's applied index then; 0 in states
    /// written before it was kept).
    #[serde(default)]
    pub log_index: u64,
}

/// Why a task last became pending (waiting to be placed), as the state machine decided it:
/// metrics and decisions match this; [`Task::reason`] holds the text shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingReason {
    /// A new job's task, a task added by raising `tasks`, or a per_machine job's task for a new
    /// machine.
    Submitted,
    /// Replaced by a spec update (a rolling update, or a killed job applied again).
    Updated,
    /// Evicted by a higher-priority task (Borg §2.5, preemption).
    Preempted,
    /// Its machine was marked down (Borg §3.3: rescheduled elsewhere).
    MachineDown,
    /// The alloc it ran in was preempted, or its alloc set killed.
    AllocEvicted,
    /// Its machine is being drained (`borgctl machines drain`).
    Drain,
    /// Stopped by its Borglet to give memory back to production tasks: it ran in resources
    /// reclaimed from them, and they started using them (Borg §5.5).
    Reclaimed,
}

impl PendingReason {
    /// Every reason, in the order metrics list them.
    pub const ALL: [PendingReason; 7] = [
        PendingReason::Submitted,
        PendingReason::Updated,
        PendingReason::Preempted,
        PendingReason::MachineDown,
        PendingReason::AllocEvicted,
        PendingReason::Drain,
        PendingReason::Reclaimed,
    ];

    /// The reason's name (`submitted`, `updated`, `preempted`, `machine_down`, `alloc_evicted`,
    /// `drain`, `reclaimed`),
    /// the `reason` label of `borg_tasks_pending` and `borg_evictions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            PendingReason::Submitted => "submitted",
            PendingReason::Updated => "updated",
            PendingReason::Preempted => "preempted",
            PendingReason::MachineDown => "machine_down",
            PendingReason::AllocEvicted => "alloc_evicted",
            PendingReason::Drain => "drain",
            PendingReason::Reclaimed => "reclaimed",
        }
    }
}

/// What an [`Event`] records. On the wire, in snapshots and in the CLI it is the kebab-case
/// name ([`EventKind::as_str`]); code decides on the variant, never on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A job was created (job event), or a task was created for a new machine (per-machine job).
    Submitted,
    /// A job's spec changed (a new version).
    Updated,
    /// A job was killed (job event; each live task also gets `Dead`).
    Killed,
    /// A finished or killed job was removed from the cell.
    Deleted,
    /// A task was bound to a machine.
    Scheduled,
    /// An alloc was bound to a machine (reserved).
    Reserved,
    /// A task's process runs (first report of this incarnation).
    Running,
    /// A task ended for good (exit, kill, OOM, ...).
    Dead,
    /// A task went back to pending (machine loss, alloc eviction, rolling update).
    Pending,
    /// A task is being stopped (no longer desired: count reduced, replaced by a new version).
    Stopping,
    /// A task was preempted by a higher band.
    Preempted,
    /// A machine registered.
    Registered,
    /// A machine is up again.
    MachineUp,
    /// A machine was marked down.
    MachineDown,
    /// A quota (or the cell's default quota) was set.
    Quota,
    /// A job's rolling update paused (a replacement was not ready within its progress
    /// deadline).
    Paused,
    /// Its Borglet restarted a task in place (its process exited, or failed its liveness
    /// check: the detail starts with `unhealthy`).
    Restarted,
    /// An admin cordoned a machine (no new tasks).
    Cordoned,
    /// An admin lifted a machine's cordon or drain.
    Uncordoned,
    /// An admin started draining a machine; also each step of a drain (a task moved off, the
    /// deadline passed).
    Draining,
    /// A draining machine holds no more tasks.
    Drained,
    /// An admin removed a machine from the cell.
    Removed,
    /// Someone ran a command inside a task (`borgctl exec`): who and what.
    Exec,
    /// The jobs a job waited for (`after`) all succeeded: its tasks may be placed.
    Released,
    /// A cron job was applied, ticked (a run started, skipped or replaced), suspended or
    /// resumed.
    Cron,
    /// A kind this version does not know (read from the state of another version); never
    /// emitted.
    #[serde(other)]
    Other,
}

impl EventKind {
    /// Every kind emitted, in declaration order.
    pub const ALL: [EventKind; 25] = [
        EventKind::Submitted,
        EventKind::Updated,
        EventKind::Killed,
        EventKind::Deleted,
        EventKind::Scheduled,
        EventKind::Reserved,
        EventKind::Running,
        EventKind::Dead,
        EventKind::Pending,
        EventKind::Stopping,
        EventKind::Preempted,
        EventKind::Registered,
        EventKind::MachineUp,
        EventKind::MachineDown,
        EventKind::Quota,
        EventKind::Restarted,
        EventKind::Paused,
        EventKind::Cordoned,
        EventKind::Uncordoned,
        EventKind::Draining,
        EventKind::Drained,
        EventKind::Removed,
        EventKind::Exec,
        EventKind::Released,
        EventKind::Cron,
    ];

    /// The name on the wire and in the CLI (`machine-down`, `preempted`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Submitted => "submitted",
            EventKind::Updated => "updated",
            EventKind::Killed => "killed",
            EventKind::Deleted => "deleted",
            EventKind::Scheduled => "scheduled",
            EventKind::Reserved => "reserved",
            EventKind::Running => "running",
            EventKind::Dead => "dead",
            EventKind::Pending => "pending",
            EventKind::Stopping => "stopping",
            EventKind::Preempted => "preempted",
            EventKind::Registered => "registered",
            EventKind::MachineUp => "machine-up",
            EventKind::MachineDown => "machine-down",
            EventKind::Quota => "quota",
            EventKind::Restarted => "restarted",
            EventKind::Paused => "paused",
            EventKind::Cordoned => "cordoned",
            EventKind::Uncordoned => "uncordoned",
            EventKind::Draining => "draining",
            EventKind::Drained => "drained",
            EventKind::Removed => "removed",
            EventKind::Exec => "exec",
            EventKind::Released => "released",
            EventKind::Cron => "cron",
            EventKind::Other => "other",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task placement decided by the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// Job name.
    pub job: String,
    /// Task index.
    pub index: u32,
    /// Incarnation the decision was made for; stale decisions are dropped.
    pub incarnation: u64,
    /// Machine.
    pub machine: MachineId,
    /// For a task of a job in an alloc set: the alloc it goes into.
    #[serde(default)]
    pub alloc: Option<u32>,
}

/// An eviction decided by the scheduler to make room for a higher-band task (Borg §2.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evict {
    /// Victim job.
    pub job: String,
    /// Victim task index.
    pub index: u32,
    /// Victim incarnation the decision was made for; stale decisions are dropped.
    pub incarnation: u64,
    /// Machine it runs on.
    pub machine: MachineId,
    /// The task placed in its room, `job/index`, for the event.
    pub by: String,
}

/// What a Borglet observed of one task, as far as it changes the master's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// Job name.
    pub job: String,
    /// Task index.
    pub index: u32,
    /// Incarnation the Borglet runs.
    pub incarnation: u64,
    /// `Running` or `Dead` (a Borglet never reports `Pending`).
    pub state: TaskState,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// Terminating signal once exited by a signal.
    pub signal: Option<i32>,
    /// Restarts done by the Borglet.
    pub restarts: u32,
    /// Borglet's detail message.
    pub message: String,
    /// Running and passing its readiness check (without one: running).
    #[serde(default)]
    pub ready: bool,
    /// With `Dead`: the Borglet stopped it to give memory back to production tasks (it ran in
    /// reclaimed resources); the task goes back to pending, reason `reclaimed`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reclaimed: bool,
}

/// One task's reservation, as the leader estimated it (see [`Command::SetReservations`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Job name.
    pub job: String,
    /// Task index.
    pub index: u32,
    /// The incarnation the estimate is for (a stale one is ignored).
    pub incarnation: u64,
    /// The reservation: millicores, bytes, bytes (capped at the request when applied).
    pub resources: Resources,
}

/// A change to the cell state. Every command is persisted before it is applied.
// A command is built once, proposed and applied: the size of ApplyJob's spec costs nothing
// worth a Box (and the boxing churn through every caller and test).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create a job or replace its spec.
    ApplyJob {
        /// Validated spec.
        spec: JobSpec,
        /// When set, the current version must equal it (0 = the job must not exist).
        expected_version: Option<u64>,
    },
    /// Kill every task of a job.
    KillJob {
        /// Job name.
        name: String,
    },
    /// Remove a job whose tasks are all dead (killed or finished) from the cell state.
    DeleteJob {
        /// Job name.
        name: String,
    },
    /// Add a machine or update its address, capacity and attributes; marks it up.
    RegisterMachine {
        /// The machine as the Borglet describes itself (state is ignored: it becomes up).
        machine: Machine,
    },
    /// A machine missed too many polls: mark it down and send its tasks back to pending.
    MachineDown {
        /// Machine id.
        id: MachineId,
        /// Why, for the events.
        reason: String,
    },
    /// A down machine answered a poll again.
    MachineUp {
        /// Machine id.
        id: MachineId,
    },
    /// Scheduler decisions of one pass, or of one part of a pass (see the scheduler loop's
    /// `split_decisions`): evictions first, then placements.
    Bind {
        /// Placements, in decision order.
        bindings: Vec<Bind>,
        /// Preemptions that make room for some of the placements.
        #[serde(default)]
        evictions: Vec<Evict>,
    },
    /// Task state changes observed by Borglets (batched across machines).
    TaskReports {
        /// (machine, report) pairs.
        reports: Vec<(MachineId, TaskReport)>,
    },
    /// Sets `user`'s quota at `band` (a resource vector; zero removes the grant).
    SetQuota {
        /// User.
        user: String,
        /// Band (quota is per band; the free band needs none).
        band: Band,
        /// Limit: millicores, bytes, bytes.
        limit: Resources,
    },
    /// Sets `user`'s fair-share weight at `band` (1 removes it): its dominant share is divided
    /// by the weight when the scheduler orders users within a priority.
    SetShareWeight {
        /// User.
        user: String,
        /// Band.
        band: Band,
        /// At least 1.
        weight: u32,
    },
    /// Sets the quota of users who have none at a band; `None` = unlimited (the whole cell).
    SetDefaultQuota {
        /// The default limit.
        limit: Option<Resources>,
    },
    /// Admin holds on machines (`borgctl machines cordon|uncordon|drain`): sets each machine's
    /// [`Maintenance`]; a drain then proceeds after every command (see
    /// `CellState::advance_drains`).
    SetMaintenance {
        /// Machines; all must exist, or nothing changes.
        ids: Vec<MachineId>,
        /// The hold to set (`None` lifts a cordon or drain).
        maintenance: Maintenance,
        /// Who asked, for the events.
        #[serde(default)]
        by: String,
    },
    /// Forgets machines (`borgctl machines remove`): refused while one still holds live tasks,
    /// unless `force` (they go back to pending, as for a machine that went down). A removed
    /// machine that registers again is a new machine.
    RemoveMachines {
        /// Machines; all must exist and be empty (or `force`), or nothing changes.
        ids: Vec<MachineId>,
        /// Remove even a machine with live tasks.
        force: bool,
        /// Who asked, for the events.
        #[serde(default)]
        by: String,
    },
    /// Restarts a job's live tasks (`borgctl restart`), all or those of `indices`, through the
    /// rolling-update path: a new version with the same spec, so each task is replaced only
    /// while the job's `max_unavailable` allows (the disruption budget holds).
    RestartTasks {
        /// Job.
        name: String,
        /// Task indices; empty: every live task.
        indices: Vec<u32>,
    },
    /// A cron job's tick at `tick_ms` (proposed by the leader when one is due): starts a run,
    /// or skips it (`concurrency: forbid` with a run still live), or replaces the live runs.
    CronTick {
        /// The cron job.
        name: String,
        /// The tick (ms since the epoch); a tick not after the last one does nothing.
        tick_ms: i64,
    },
    /// Suspends or resumes a cron job's ticks.
    SetCronSuspended {
        /// The cron job.
        name: String,
        /// Suspended or not.
        suspended: bool,
    },
    /// Records that someone ran a command inside a task (`borgctl exec`): an `exec` event.
    RecordExec {
        /// Job.
        job: String,
        /// Task index.
        index: u32,
        /// Where it ran.
        machine: MachineId,
        /// Who ran it (empty with auth off).
        by: String,
        /// What (argv).
        command: Vec<String>,
    },
    /// Reservations the leader estimated from usage (Borg §5.5), committed every few seconds
    /// for the tasks whose estimate moved, so that every replica schedules batch work against
    /// the same figures and a new leader starts from them. A stale one (another incarnation, or
    /// a task no longer bound) is ignored; each is capped at its task's request.
    SetReservations {
        /// The estimates, any order.
        reservations: Vec<Reservation>,
    },
    /// Nothing but the passing of time: the leader proposes one every second while a rolling
    /// update waits on time (`min_ready`, `progress_deadline`), so that rules that depend on the
    /// entry's time advance.
    Tick,
}

impl Command {
    /// How many task or machine records the command carries (1 for the rest): what its log
    /// entry's size grows with. The committer bounds the weight of a group (one Raft entry) and
    /// the scheduler splits its placements, so that a follower receives, syncs and acknowledges
    /// every AppendEntries call within openraft's limit of one heartbeat interval.
    pub fn weight(&self) -> usize {
        let n = match self {
            Command::Bind { bindings, evictions } => bindings.len() + evictions.len(),
            Command::TaskReports { reports } => reports.len(),
            Command::SetReservations { reservations } => reservations.len(),
            Command::SetMaintenance { ids, .. } | Command::RemoveMachines { ids, .. } => ids.len(),
            Command::RestartTasks { indices, .. } => indices.len(),
            _ => 1,
        };
        n.max(1)
    }
}

/// A log entry: a command and the time the leader accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Acceptance time, ms since the Unix epoch; the state machine's only clock.
    pub time_ms: i64,
    /// The command.
    pub command: Command,
}

#[cfg(test)]
mod event_kind_tests {
    use super::EventKind;

    #[test]
    fn event_kinds_serialize_as_their_wire_names() {
        for k in EventKind::ALL {
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{}\"", k.as_str()));
            let back: EventKind = serde_json::from_str(&format!("\"{k}\"")).unwrap();
            assert_eq!(back, k);
        }
        // a kind from another version's state still loads
        assert_eq!(serde_json::from_str::<EventKind>("\"rebooted\"").unwrap(), EventKind::Other);
    }
}
