//! [`CellState::apply`]: one command in, events out. A command either applies whole or is
//! rejected with a [`CommandError`] and changes nothing.

use super::{CellState, Command, Entry, Event, EventKind, Job, PendingReason, Task, TaskId, TaskState, MAX_EVENTS};
use scheduler_core::{MachineId, Resources};

/// Why a command was rejected. Rejection changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The named job does not exist.
    #[error("no job named {0:?}")]
    NoSuchJob(String),
    /// DeleteJob of a job that still has live tasks.
    #[error("job {job:?} still has {live} live tasks: kill it first (`borgctl kill {job}`), then delete it")]
    JobStillLive {
        /// Job name.
        job: String,
        /// Tasks not dead.
        live: u32,
    },
    /// `expected_version` did not match.
    #[error("job {job:?} is at version {actual}, not the expected {expected}")]
    VersionMismatch {
        /// Job name.
        job: String,
        /// Version the caller expected (0 = absent).
        expected: u64,
        /// Current version (0 = absent).
        actual: u64,
    },
    /// The named machine is not registered.
    #[error("no machine named {0:?}")]
    NoSuchMachine(String),
    /// ApplyJob whose `after` names a job that does not exist.
    #[error("after: job {after:?} does not exist: apply it first (a job waits only for jobs the cell knows)")]
    UnknownDependency {
        /// The job applied.
        job: String,
        /// The job it waits for.
        after: String,
    },
    /// ApplyJob whose `after` closes a cycle.
    #[error("after: {} is a cycle: no job of it could ever start", cycle.join(" -> "))]
    DependencyCycle {
        /// The jobs around the cycle, starting and ending with the job applied.
        cycle: Vec<String>,
    },
    /// A job and a cron job may not share a name.
    #[error("{name:?} is already the name of a {what}: choose another name, or delete it first")]
    NameTaken {
        /// The name.
        name: String,
        /// `job` or `cron job`.
        what: &'static str,
    },
    /// RestartTasks of a killed job.
    #[error("job {0:?} is killed: apply it again to start it")]
    JobKilled(String),
    /// A task index the job does not have.
    #[error("job {job:?} has no task {index} (it has {count})")]
    NoSuchTask {
        /// Job.
        job: String,
        /// The index asked for.
        index: u32,
        /// How many tasks it has.
        count: usize,
    },
    /// RemoveMachines of a machine that still holds live tasks, without `force`.
    #[error(
        "machine {machine:?} still holds {live} live tasks: drain it first (`borgctl machines drain {machine}`), \
         or remove it with --force to send them back to pending"
    )]
    MachineHasTasks {
        /// Machine id.
        machine: String,
        /// Live tasks bound to it.
        live: usize,
    },
    /// Admission control: the job needs more than the user's free quota at its band.
    #[error(transparent)]
    OverQuota(Box<OverQuota>),
}

/// A job refused by admission control (boxed in [`CommandError`], which stays small).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "over quota: job {job:?} of {user} at band {band} needs {needed}, but {user}'s free quota at {band} is {free} \
     (limit {limit}); to admit it, an admin can raise the limit: `borgctl quota set {user} {band} {}`",
    raise_to(needed, free, limit)
)]
pub struct OverQuota {
    /// Job.
    pub job: String,
    /// User.
    pub user: String,
    /// Band.
    pub band: scheduler_core::Band,
    /// What the job would be charged.
    pub needed: Resources,
    /// Limit minus what the user's other jobs at the band are charged (ports: unlimited, they
    /// are not under quota).
    pub free: Resources,
    /// The limit.
    pub limit: Resources,
}

/// The `key=value` list of the dimensions in which `needed` exceeds `free`, each at the limit
/// that would admit it (`limit - free + needed`): the fix an over-quota refusal suggests.
fn raise_to(needed: &Resources, free: &Resources, limit: &Resources) -> String {
    let dims = [
        ("cpu", needed.cpu_millis, free.cpu_millis, limit.cpu_millis, true),
        ("ram", needed.ram_bytes, free.ram_bytes, limit.ram_bytes, false),
        ("disk", needed.disk_bytes, free.disk_bytes, limit.disk_bytes, false),
    ];
    dims.iter()
        .filter(|(_, n, f, _, _)| n > f)
        .map(|(k, n, f, l, cpu)| {
            let v = l.saturating_sub(*f).saturating_add(*n);
            if *cpu {
                format!("{k}={v}m")
            } else {
                // the short form only where it is exact (format_bytes rounds to one decimal)
                let short = scheduler_core::format_bytes(v);
                let exact = borg_jobspec::quantity::parse_bytes(&borg_jobspec::quantity::Scalar::Str(short.clone()));
                format!("{k}={}", if exact == Ok(v) { short } else { v.to_string() })
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What an applied command did, besides its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// ApplyJob created a job at version 1.
    Created(u64),
    /// ApplyJob changed a job's spec; the new version.
    Updated(u64),
    /// ApplyJob with the spec the job already had; its version.
    Unchanged(u64),
    /// KillJob: how many tasks were not dead before.
    Killed(u32),
    /// KillJob of a job whose tasks had all finished (or that was killed before): nothing
    /// changed.
    AlreadyFinished,
    /// RestartTasks: the job's new version and how many live tasks it restarts.
    Restarting {
        /// New version.
        version: u64,
        /// Live tasks to be replaced (some may already be, in the same entry).
        tasks: u32,
    },
    /// Any other command.
    Done,
}

impl CellState {
    /// Applies one log entry. Deterministic: the entry's `time_ms` is the only clock.
    ///
    /// Returns the outcome and the events caused, oldest first (also appended to
    /// [`CellState::events`]). Errors: [`CommandError`] when the command refers to a job or machine
    /// that does not exist or fails its version check; the state is then unchanged.
    pub fn apply(&mut self, entry: &Entry) -> Result<(ApplyOutcome, Vec<Event>), CommandError> {
        let mut ev = Events { now: entry.time_ms, out: Vec::new() };
        let outcome = match &entry.command {
            Command::ApplyJob { spec, expected_version } => self.apply_job(spec, *expected_version, &mut ev)?,
            Command::KillJob { name } => self.kill_job(name, &mut ev)?,
            Command::DeleteJob { name } => self.delete_job(name, &mut ev)?,
            Command::RegisterMachine { machine } => self.register_machine(machine, &mut ev),
            Command::MachineDown { id, reason } => self.machine_down(id, reason, &mut ev)?,
            Command::MachineUp { id } => self.machine_up(id, &mut ev)?,
            Command::Bind { bindings, evictions } => {
                self.evict(evictions, &mut ev);
                self.bind(bindings, &mut ev)
            }
            Command::TaskReports { reports } => self.task_reports(reports, &mut ev),
            Command::SetQuota { user, band, limit } => {
                let grants = self.quotas.entry(user.clone()).or_default();
                if *limit == Resources::ZERO {
                    grants.remove(band.name());
                } else {
                    grants.insert(band.name().to_string(), *limit);
                }
                if grants.is_empty() {
                    self.quotas.remove(user);
                }
                ev.push("", None, EventKind::Quota, format!("{user} at {band}: {limit}"), None);
                ApplyOutcome::Done
            }
            Command::SetMaintenance { ids, maintenance, by } => self.set_maintenance(ids, *maintenance, by, &mut ev)?,
            Command::RemoveMachines { ids, force, by } => self.remove_machines(ids, *force, by, &mut ev)?,
            Command::RestartTasks { name, indices } => self.restart_tasks(name, indices, &mut ev)?,
            Command::CronTick { name, tick_ms } => self.cron_tick(name, *tick_ms, &mut ev),
            Command::SetCronSuspended { name, suspended } => self.set_cron_suspended(name, *suspended, &mut ev)?,
            Command::RecordExec { job, index, machine, by, command } => {
                let who = if by.is_empty() { "someone (auth off)" } else { by.as_str() };
                ev.push(job, Some(*index), EventKind::Exec, format!("{who} ran {command:?}"), Some(machine));
                ApplyOutcome::Done
            }
            Command::SetShareWeight { user, band, weight } => {
                let w = self.weights.entry(user.clone()).or_default();
                if *weight <= 1 {
                    w.remove(band.name());
                } else {
                    w.insert(band.name().to_string(), *weight);
                }
                if w.is_empty() {
                    self.weights.remove(user);
                }
                ev.push(
                    "",
                    None,
                    EventKind::Quota,
                    format!("{user} at {band}: fair-share weight {}", weight.max(&1)),
                    None,
                );
                ApplyOutcome::Done
            }
            Command::Tick => ApplyOutcome::Done,
            Command::SetReservations { reservations } => self.set_reservations(reservations),
            Command::SetDefaultQuota { limit } => {
                self.default_quota = *limit;
                let text = limit.map_or("unlimited".to_string(), |l| l.to_string());
                ev.push("", None, EventKind::Quota, format!("default quota: {text}"), None);
                ApplyOutcome::Done
            }
        };
        self.advance_drains(&mut ev);
        self.advance_dependencies(&mut ev);
        self.advance_rollouts(&mut ev);
        for e in ev.out.iter_mut() {
            e.log_index = self.applied_index;
        }
        for e in &ev.out {
            if self.events.len() >= MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(e.clone());
        }
        Ok((outcome, ev.out))
    }

    /// Task `index` of `job`, to change: its machine's poll generation moves (see
    /// [`super::PollGenerations`]). A change that moves the task to another machine binds it
    /// there with [`CellState::bind_to`], which marks that one.
    pub(super) fn task_mut(&mut self, job: &str, index: u32) -> Option<&mut Task> {
        let t = self.jobs.get_mut(job)?.tasks.get_mut(index as usize)?;
        if let Some(m) = &t.machine {
            self.poll_generations.mark(m);
        }
        Some(t)
    }

    /// Job `name`, to change: the poll generation of every machine holding one of its tasks
    /// moves. (Paths that change only its unbound tasks, or nothing a poll carries, use
    /// `self.jobs.get_mut` and say so.)
    pub(super) fn job_mut(&mut self, name: &str) -> Option<&mut Job> {
        self.mark_job(name);
        self.jobs.get_mut(name)
    }

    /// Moves the poll generation of every machine holding a task of job `name` (see
    /// [`CellState::job_mut`]).
    pub(super) fn mark_job(&mut self, name: &str) {
        for t in self.jobs.get(name).into_iter().flat_map(|j| &j.tasks) {
            if let Some(m) = &t.machine {
                self.poll_generations.mark(m);
            }
        }
    }

    /// Adds task `id` to machine `m`'s index (its resources are taken).
    pub(super) fn bind_to(&mut self, m: &MachineId, id: TaskId) {
        self.poll_generations.mark(m);
        self.by_machine.entry(m.clone()).or_default().insert(id);
    }

    /// Removes every task from machine `m`'s index (the machine went down or away); returns them.
    pub(super) fn unbind_all(&mut self, m: &MachineId) -> Vec<TaskId> {
        self.poll_generations.mark(m);
        self.by_machine.remove(m).into_iter().flatten().collect()
    }

    /// Removes a task from its machine's index (its resources are free again).
    pub(super) fn unbind(&mut self, t: &Task) {
        if let Some(m) = &t.machine {
            self.poll_generations.mark(m);
            if let Some(set) = self.by_machine.get_mut(m) {
                set.remove(&t.id());
                if set.is_empty() {
                    self.by_machine.remove(m);
                }
            }
        }
    }
}

/// Sends task `t` back to pending at `now` with `reason`, as a new incarnation (the old one is
/// stopped by its Borglet when it leaves the desired set): no machine, no alloc, no pid, no
/// restarts. The one requeue of machine loss, preemption and alloc eviction (the caller unbinds
/// it from its machine first).
pub(super) fn requeue(t: &mut Task, why: PendingReason, reason: &str, now: i64) {
    t.state = TaskState::Pending;
    t.machine = None;
    t.alloc = None;
    t.pid = None;
    t.ports.clear();
    t.ready = false;
    t.ready_since_ms = 0;
    t.incarnation += 1;
    t.restarts = 0;
    t.reservation = None;
    t.reason = reason.to_string();
    t.pending_reason = Some(why);
    t.state_since_ms = now;
    t.queued_ms = now;
}

/// A pending task `job/index` of spec `version`, queued at `now` because of `why` (`reason` is
/// its text).
pub(super) fn new_task(
    job: &str,
    index: u32,
    incarnation: u64,
    version: u64,
    now: i64,
    why: PendingReason,
    reason: &str,
) -> Task {
    Task {
        job: job.to_string(),
        index,
        state: TaskState::Pending,
        machine: None,
        incarnation,
        job_version: version,
        exit_code: None,
        signal: None,
        restarts: 0,
        pid: None,
        reason: reason.to_string(),
        pending_reason: Some(why),
        state_since_ms: now,
        queued_ms: now,
        alloc: None,
        pinned: None,
        scheduled_ms: 0,
        ports: Default::default(),
        ready: false,
        ready_since_ms: 0,
        reservation: None,
    }
}

/// The events a command causes, stamped with its entry's time.
pub(super) struct Events {
    /// The entry's time, ms since the Unix epoch.
    pub(super) now: i64,
    pub(super) out: Vec<Event>,
}

impl Events {
    /// Records an event.
    pub(super) fn push(
        &mut self,
        job: &str,
        index: Option<u32>,
        kind: EventKind,
        detail: String,
        machine: Option<&MachineId>,
    ) {
        self.push_because(job, index, kind, detail, machine, None)
    }

    /// Records an event that sent a task back to pending because of `cause`.
    pub(super) fn push_because(
        &mut self,
        job: &str,
        index: Option<u32>,
        kind: EventKind,
        detail: String,
        machine: Option<&MachineId>,
        cause: Option<PendingReason>,
    ) {
        self.out.push(Event {
            time_ms: self.now,
            job: job.to_string(),
            index,
            kind,
            detail,
            machine: machine.cloned(),
            cause,
            log_index: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;

    #[test]
    fn state_round_trips_through_json_and_reindex() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: None }).unwrap();
        bind(&mut s, "web", 1, "m1");
        let mut back: CellState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        back.reindex();
        assert_eq!(back, s);
    }
}
