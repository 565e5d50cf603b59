//! [`CellState::apply`]: one command in, events out. A command either applies whole or is
//! rejected with a [`CommandError`] and changes nothing.

use super::{
    Bind, CellState, Command, Entry, Event, EventKind, Evict, Job, Machine, MachineState, Task, TaskKey, TaskReport,
    TaskState, MAX_EVENTS,
};
use borg_spec::{JobKind, JobSpec};
use scheduler_core::{Band, MachineId, Resources};

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
    /// Admission control: the job needs more than the user's free quota at its band.
    #[error(
        "over quota: job {job:?} of {user} at band {band} needs {needed}, but {user}'s free quota at {band} is {free} \
         (limit {limit}); to admit it, an admin can raise the limit: `borgctl quota set {user} {band} {}`",
        raise_to(needed, free, limit)
    )]
    OverQuota {
        /// Job.
        job: String,
        /// User.
        user: String,
        /// Band.
        band: scheduler_core::Band,
        /// What the job would be charged.
        needed: Resources,
        /// Limit minus what the user's other jobs at the band are charged.
        free: Resources,
        /// The limit.
        limit: Resources,
    },
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
                let exact = borg_spec::quantity::parse_bytes(&borg_spec::quantity::Scalar::Str(short.clone()));
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
            Command::SetDefaultQuota { limit } => {
                self.default_quota = *limit;
                let text = limit.map_or("unlimited".to_string(), |l| l.to_string());
                ev.push("", None, EventKind::Quota, format!("default quota: {text}"), None);
                ApplyOutcome::Done
            }
        };
        self.advance_rollouts(&mut ev);
        for e in &ev.out {
            if self.events.len() >= MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(e.clone());
        }
        Ok((outcome, ev.out))
    }

    /// Machines a per_machine job runs on: every machine that is up, by id.
    /// Whether applying `spec` to its existing job would change it in place, restarting no task:
    /// the job is live and the new spec only lowers requests or moves the priority within its
    /// band. The rule apply uses, and dry runs report.
    pub fn update_is_in_place(&self, spec: &JobSpec) -> bool {
        self.jobs.get(&spec.name).is_some_and(|j| !j.killed && j.spec != *spec && only_lowered(&j.spec, spec))
    }

    fn per_machine_targets(&self) -> Vec<MachineId> {
        self.machines.values().filter(|m| m.state == MachineState::Up).map(|m| m.id.clone()).collect()
    }

    fn apply_job(
        &mut self,
        spec: &JobSpec,
        expected: Option<u64>,
        ev: &mut Events,
    ) -> Result<ApplyOutcome, CommandError> {
        let actual = self.jobs.get(&spec.name).map_or(0, |j| j.version);
        if let Some(expected) = expected {
            if expected != actual {
                return Err(CommandError::VersionMismatch { job: spec.name.clone(), expected, actual });
            }
        }
        if let Some(job) = self.jobs.get(&spec.name) {
            if job.spec == *spec && !job.killed {
                return Ok(ApplyOutcome::Unchanged(job.version));
            }
        }
        let targets = if spec.per_machine { self.per_machine_targets() } else { Vec::new() };
        let count = if spec.per_machine { targets.len() as u32 } else { spec.tasks };
        // Admission control (see quota.rs for the rule).
        let band = spec.band();
        if band != Band::Free && spec.alloc_set.is_empty() {
            if let Some(limit) = self.quota_limit(&spec.user, band) {
                let needed = spec.resources.saturating_mul(count as u64);
                let free = super::quota::headroom(limit, self.quota_used(&spec.user, band, Some(&spec.name)));
                if !needed.fits_in(&free) {
                    return Err(CommandError::OverQuota {
                        job: spec.name.clone(),
                        user: spec.user.clone(),
                        band,
                        needed,
                        free,
                        limit,
                    });
                }
            }
        }
        let now = ev.now;
        let pin = |t: &mut Task, i: usize| t.pinned = targets.get(i).cloned();
        let Some(job) = self.jobs.get(&spec.name) else {
            let tasks = (0..count)
                .map(|i| {
                    let mut t = new_task(&spec.name, i, 1, 1, now, "submitted");
                    pin(&mut t, i as usize);
                    t
                })
                .collect();
            let job = Job {
                spec: spec.clone(),
                version: 1,
                submitted_ms: now,
                killed: false,
                tasks,
                old_specs: Default::default(),
            };
            self.jobs.insert(spec.name.clone(), job);
            ev.push(&spec.name, None, EventKind::Submitted, format!("{count} tasks, {}", spec.priority), None);
            return Ok(ApplyOutcome::Created(1));
        };
        let version = job.version + 1;
        let old = job.spec.clone();
        let killed = job.killed;
        let in_place = self.update_is_in_place(spec);
        let old_tasks: Vec<Task> = job.tasks.clone();
        // Tasks beyond the new count go away.
        for t in old_tasks.iter().skip(count as usize) {
            self.unbind(t);
            if let (Some(m), false) = (&t.machine, t.state == TaskState::Dead) {
                ev.push(&spec.name, Some(t.index), EventKind::Stopping, "task count reduced".into(), Some(m));
            }
        }
        let Some(job) = self.jobs.get_mut(&spec.name) else { return Ok(ApplyOutcome::Unchanged(actual)) };
        job.tasks.truncate(count as usize);
        for i in job.tasks.len() as u32..count {
            let mut t = new_task(&spec.name, i, 1, version, now, &format!("created by version {version}"));
            pin(&mut t, i as usize);
            job.tasks.push(t);
        }
        if in_place {
            // Lower requests or a priority change within the band: no restart needed.
            for t in job.tasks.iter_mut().filter(|t| t.state != TaskState::Dead) {
                t.job_version = version;
            }
            job.old_specs.clear();
        } else if !killed {
            job.old_specs.insert(job.version, old);
        }
        job.spec = spec.clone();
        job.version = version;
        if job.rolling() {
            self.rolling.insert(spec.name.clone());
        }
        if killed {
            // A killed job comes back whole: every task starts again at once.
            job.killed = false;
            job.old_specs.clear();
            for t in job.tasks.iter_mut() {
                let fresh = new_task(
                    &spec.name,
                    t.index,
                    t.incarnation + 1,
                    version,
                    now,
                    &format!("updated to version {version}"),
                );
                *t = Task { pinned: t.pinned.clone(), ..fresh };
            }
        }
        let how = if in_place {
            "in place"
        } else if killed {
            "restarted"
        } else {
            "rolling"
        };
        ev.push(&spec.name, None, EventKind::Updated, format!("version {version}, {count} tasks, {how}"), None);
        Ok(ApplyOutcome::Updated(version))
    }

    /// Rolling updates (DESIGN: Borg-style job updates): replaces tasks still on an earlier
    /// version, in index order, while fewer than `max_unavailable` of the job's tasks are
    /// pending. Runs after every command, so each task that comes up lets the next one go.
    fn advance_rollouts(&mut self, ev: &mut Events) {
        let rolling: Vec<String> = self.rolling.iter().cloned().collect();
        for name in rolling {
            // Tasks of an earlier version that were never placed take the new spec at once:
            // replacing them takes nothing down.
            if let Some(job) = self.jobs.get_mut(&name) {
                let version = job.version;
                for t in job.tasks.iter_mut() {
                    if t.job_version < version && t.state == TaskState::Pending && t.machine.is_none() {
                        t.job_version = version;
                    }
                }
            }
            let Some(job) = self.jobs.get(&name) else {
                self.rolling.remove(&name);
                continue;
            };
            // a killed job replaces nothing (its tasks are dead); it only drops out below
            let max = if job.killed { 0 } else { job.spec.max_unavailable.max(1) as usize };
            let version = job.version;
            let down = job.tasks.iter().filter(|t| t.state == TaskState::Pending).count();
            let next: Vec<Task> = job
                .tasks
                .iter()
                .filter(|t| t.job_version < version && t.state != TaskState::Dead)
                .take(max.saturating_sub(down))
                .cloned()
                .collect();
            for t in next {
                self.unbind(&t);
                if let Some(m) = &t.machine {
                    ev.push(
                        &name,
                        Some(t.index),
                        EventKind::Stopping,
                        format!("replaced by version {version}"),
                        Some(m),
                    );
                }
                let now = ev.now;
                if let Some(task) = self.task_mut(&name, t.index) {
                    let fresh = new_task(
                        &name,
                        t.index,
                        t.incarnation + 1,
                        version,
                        now,
                        &format!("updated to version {version}"),
                    );
                    *task = Task { pinned: task.pinned.clone(), ..fresh };
                }
                ev.push(&name, Some(t.index), EventKind::Pending, format!("updated to version {version}"), None);
            }
            if let Some(job) = self.jobs.get_mut(&name) {
                let used: std::collections::BTreeSet<u64> =
                    job.tasks.iter().filter(|t| t.state != TaskState::Dead).map(|t| t.job_version).collect();
                job.old_specs.retain(|v, _| used.contains(v));
                if job.killed || !job.rolling() {
                    self.rolling.remove(&name);
                }
            }
        }
    }

    /// Removes job `name`, which must have no live task; its events stay in the cell's event log.
    fn delete_job(&mut self, name: &str, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let job = self.jobs.get(name).ok_or_else(|| CommandError::NoSuchJob(name.to_string()))?;
        let live = job.tasks.iter().filter(|t| t.state != TaskState::Dead).count() as u32;
        if live > 0 {
            return Err(CommandError::JobStillLive { job: name.to_string(), live });
        }
        let was = if job.killed { "killed" } else { "finished" };
        self.jobs.remove(name);
        ev.push(name, None, EventKind::Deleted, format!("{was} job removed"), None);
        Ok(ApplyOutcome::Done)
    }

    fn kill_job(&mut self, name: &str, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let job = self.jobs.get(name).ok_or_else(|| CommandError::NoSuchJob(name.to_string()))?;
        let live: Vec<Task> = job.tasks.iter().filter(|t| t.state != TaskState::Dead).cloned().collect();
        if live.is_empty() && !job.tasks.is_empty() {
            // done (or killed before): a kill changes nothing, and a done job stays done
            return Ok(ApplyOutcome::AlreadyFinished);
        }
        for t in &live {
            self.unbind(t);
            ev.push(name, Some(t.index), EventKind::Dead, "killed".into(), t.machine.as_ref());
        }
        let now = ev.now;
        if let Some(job) = self.jobs.get_mut(name) {
            job.killed = true;
            for t in job.tasks.iter_mut().filter(|t| t.state != TaskState::Dead) {
                t.state = TaskState::Dead;
                t.reason = "killed".into();
                t.pid = None;
                t.state_since_ms = now;
            }
        }
        ev.push(name, None, EventKind::Killed, format!("{} tasks stopped", live.len()), None);
        if self.jobs.get(name).is_some_and(|j| j.spec.kind == JobKind::AllocSet) {
            for t in &live {
                self.evict_alloc_contents(name, t.index, "alloc set killed", ev);
            }
        }
        Ok(ApplyOutcome::Killed(live.len() as u32))
    }

    fn register_machine(&mut self, m: &Machine, ev: &mut Events) -> ApplyOutcome {
        let was_down = self.machines.get(&m.id).is_some_and(|old| old.state == MachineState::Down);
        let is_new = !self.machines.contains_key(&m.id);
        let mut rec = m.clone();
        rec.state = MachineState::Up;
        rec.registered_ms = ev.now;
        let detail = format!("{} at {}", rec.capacity, rec.address);
        self.machines.insert(m.id.clone(), rec);
        ev.push("", None, EventKind::Registered, detail, Some(&m.id));
        if was_down {
            ev.push("", None, EventKind::MachineUp, "registered again".into(), Some(&m.id));
        }
        if is_new {
            // per_machine jobs grow a task on every new machine
            let now = ev.now;
            let jobs: Vec<String> =
                self.jobs.values().filter(|j| j.spec.per_machine && !j.killed).map(|j| j.spec.name.clone()).collect();
            for name in jobs {
                if let Some(job) = self.jobs.get_mut(&name) {
                    let i = job.tasks.len() as u32;
                    let mut t = new_task(&name, i, 1, job.version, now, &format!("per_machine: new machine {}", m.id));
                    t.pinned = Some(m.id.clone());
                    job.tasks.push(t);
                    ev.push(&name, Some(i), EventKind::Submitted, format!("for new machine {}", m.id), None);
                }
            }
        }
        ApplyOutcome::Done
    }

    fn machine_down(&mut self, id: &MachineId, reason: &str, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let m = self.machines.get_mut(id).ok_or_else(|| CommandError::NoSuchMachine(id.0.clone()))?;
        m.state = MachineState::Down;
        ev.push("", None, EventKind::MachineDown, reason.to_string(), Some(id));
        let keys: Vec<TaskKey> = self.by_machine.remove(id).into_iter().flatten().collect();
        for (job, index) in keys {
            let now = ev.now;
            if let Some(t) = self.task_mut(&job, index) {
                requeue(t, "machine down", now);
                ev.push(&job, Some(index), EventKind::Pending, format!("evicted: machine {id} down"), Some(id));
            }
        }
        Ok(ApplyOutcome::Done)
    }

    fn machine_up(&mut self, id: &MachineId, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let m = self.machines.get_mut(id).ok_or_else(|| CommandError::NoSuchMachine(id.0.clone()))?;
        if m.state != MachineState::Up {
            m.state = MachineState::Up;
            ev.push("", None, EventKind::MachineUp, "answering polls again".into(), Some(id));
        }
        Ok(ApplyOutcome::Done)
    }

    /// Preempted tasks go back to pending with a new incarnation; their Borglet stops the old
    /// one (SIGTERM, grace period, SIGKILL) when it no longer sees it in its desired set.
    fn evict(&mut self, evictions: &[Evict], ev: &mut Events) {
        for e in evictions {
            let now = ev.now;
            let Some(t) = self.task_mut(&e.job, e.index) else { continue };
            if t.incarnation != e.incarnation || t.machine.as_ref() != Some(&e.machine) || t.state == TaskState::Dead {
                continue; // stale: the victim moved or finished since the pass began
            }
            let old = t.clone();
            self.unbind(&old);
            let Some(t) = self.task_mut(&e.job, e.index) else { continue };
            requeue(t, "preempted", now);
            ev.push(
                &e.job,
                Some(e.index),
                EventKind::Preempted,
                format!("by {} on {}", e.by, e.machine),
                Some(&e.machine),
            );
            if self.jobs.get(&e.job).is_some_and(|j| j.spec.kind == JobKind::AllocSet) {
                self.evict_alloc_contents(&e.job, e.index, "its alloc was preempted", ev);
            }
        }
    }

    /// Sends every task running in alloc `alloc_set/index` back to pending.
    fn evict_alloc_contents(&mut self, alloc_set: &str, index: u32, why: &str, ev: &mut Events) {
        let inside: Vec<Task> = self
            .jobs
            .values()
            .filter(|j| j.spec.alloc_set == alloc_set)
            .flat_map(|j| j.tasks.iter())
            .filter(|t| t.alloc == Some(index) && t.state != TaskState::Dead)
            .cloned()
            .collect();
        for t in inside {
            self.unbind(&t);
            let now = ev.now;
            if let Some(task) = self.task_mut(&t.job, t.index) {
                requeue(task, why, now);
            }
            ev.push(&t.job, Some(t.index), EventKind::Pending, format!("evicted: {why}"), t.machine.as_ref());
        }
    }

    fn bind(&mut self, bindings: &[Bind], ev: &mut Events) -> ApplyOutcome {
        for b in bindings {
            let up = self.machines.get(&b.machine).is_some_and(|m| m.state == MachineState::Up);
            let now = ev.now;
            let Some(t) = self.task_mut(&b.job, b.index) else { continue };
            if !up || t.incarnation != b.incarnation || t.state != TaskState::Pending || t.machine.is_some() {
                continue; // stale decision: the task or machine changed since the pass began
            }
            t.machine = Some(b.machine.clone());
            t.reason = "scheduled".into();
            t.state_since_ms = now;
            t.scheduled_ms = now;
            t.exit_code = None;
            t.signal = None;
            t.alloc = b.alloc;
            self.by_machine.entry(b.machine.clone()).or_default().insert((b.job.clone(), b.index));
            let is_alloc = self.jobs.get(&b.job).is_some_and(|j| j.spec.kind == JobKind::AllocSet);
            if is_alloc {
                // an alloc runs nothing: it is up as soon as it holds its reservation
                if let Some(t) = self.task_mut(&b.job, b.index) {
                    t.state = TaskState::Running;
                    t.reason = "reserved".into();
                }
            }
            let detail = match b.alloc {
                Some(a) => format!("on {} in alloc {a}", b.machine),
                None => format!("on {}", b.machine),
            };
            ev.push(
                &b.job,
                Some(b.index),
                if is_alloc { EventKind::Reserved } else { EventKind::Scheduled },
                detail,
                Some(&b.machine),
            );
        }
        ApplyOutcome::Done
    }

    fn task_reports(&mut self, reports: &[(MachineId, TaskReport)], ev: &mut Events) -> ApplyOutcome {
        for (m, r) in reports {
            let now = ev.now;
            let Some(t) = self.task_mut(&r.job, r.index) else { continue };
            if t.machine.as_ref() != Some(m) || t.incarnation != r.incarnation || t.state == TaskState::Dead {
                continue; // stale: the task moved, was replaced or is already dead
            }
            match r.state {
                TaskState::Running | TaskState::Pending => {
                    let first = t.state != TaskState::Running;
                    t.state = TaskState::Running;
                    t.pid = r.pid;
                    t.restarts = r.restarts;
                    t.exit_code = r.exit_code;
                    t.signal = r.signal;
                    t.reason = if r.message.is_empty() { "running".into() } else { r.message.clone() };
                    if first {
                        t.state_since_ms = now;
                        // no pid: its process could not start (the Borglet says why and retries)
                        let detail = match r.pid {
                            Some(p) => format!("pid {p}"),
                            None if !r.message.is_empty() => format!("no process: {}", r.message),
                            None => "no process yet".to_string(),
                        };
                        ev.push(&r.job, Some(r.index), EventKind::Running, detail, Some(m));
                    }
                }
                TaskState::Dead => {
                    let t = t.clone();
                    self.unbind(&t);
                    let Some(t) = self.task_mut(&r.job, r.index) else { continue };
                    t.state = TaskState::Dead;
                    t.pid = None;
                    t.exit_code = r.exit_code;
                    t.signal = r.signal;
                    t.restarts = r.restarts;
                    t.reason = if r.message.is_empty() {
                        borg_spec::exit_text(r.exit_code, r.signal)
                    } else {
                        r.message.clone()
                    };
                    t.state_since_ms = now;
                    let detail = t.reason.clone();
                    ev.push(&r.job, Some(r.index), EventKind::Dead, detail, Some(m));
                }
            }
        }
        ApplyOutcome::Done
    }

    fn task_mut(&mut self, job: &str, index: u32) -> Option<&mut Task> {
        self.jobs.get_mut(job)?.tasks.get_mut(index as usize)
    }

    /// Removes a task from its machine's index (its resources are free again).
    fn unbind(&mut self, t: &Task) {
        if let Some(m) = &t.machine {
            if let Some(set) = self.by_machine.get_mut(m) {
                set.remove(&(t.job.clone(), t.index));
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
fn requeue(t: &mut Task, reason: &str, now: i64) {
    t.state = TaskState::Pending;
    t.machine = None;
    t.alloc = None;
    t.pid = None;
    t.incarnation += 1;
    t.restarts = 0;
    t.reason = reason.to_string();
    t.state_since_ms = now;
    t.queued_ms = now;
}

/// Whether `new` differs from `old` only by lower (or equal) requests and a priority in the same
/// band: such an update is applied in place, without restarting tasks.
fn only_lowered(old: &JobSpec, new: &JobSpec) -> bool {
    let same_rest = JobSpec { resources: old.resources, priority: old.priority, ..new.clone() } == *old;
    same_rest && new.resources.fits_in(&old.resources) && new.band() == old.band()
}

fn new_task(job: &str, index: u32, incarnation: u64, version: u64, now: i64, reason: &str) -> Task {
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
        state_since_ms: now,
        queued_ms: now,
        alloc: None,
        pinned: None,
        scheduled_ms: 0,
    }
}

struct Events {
    now: i64,
    out: Vec<Event>,
}

impl Events {
    fn push(&mut self, job: &str, index: Option<u32>, kind: EventKind, detail: String, machine: Option<&MachineId>) {
        self.out.push(Event {
            time_ms: self.now,
            job: job.to_string(),
            index,
            kind,
            detail,
            machine: machine.cloned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use borg_spec::{JobKind, Restart};
    use scheduler_core::{Priority, Resources};

    fn spec(name: &str, tasks: u32) -> JobSpec {
        JobSpec {
            name: name.into(),
            user: "alice".into(),
            priority: Priority(100),
            kind: JobKind::Service,
            tasks,
            command: vec!["sleep".into(), "100".into()],
            env: Default::default(),
            resources: Resources::new(100, 1 << 20, 0),
            restart: Restart::default_for(JobKind::Service),
            constraints: vec![],
            different_machine: false,
            grace_period_ms: 1000,
            alloc_set: String::new(),
            max_unavailable: 1,
            per_machine: false,
        }
    }

    fn machine(id: &str) -> Machine {
        Machine {
            id: MachineId(id.into()),
            address: "127.0.0.1:1".into(),
            capacity: Resources::new(4000, 8 << 30, 0),
            attributes: Default::default(),
            state: MachineState::Up,
            registered_ms: 0,
        }
    }

    fn run(s: &mut CellState, c: Command) -> Result<(ApplyOutcome, Vec<Event>), CommandError> {
        s.apply(&Entry { time_ms: 1000, command: c })
    }

    fn bind(s: &mut CellState, job: &str, index: u32, m: &str) {
        let incarnation = s.task(&(job.into(), index)).unwrap().incarnation;
        let b = Bind { job: job.into(), index, incarnation, machine: MachineId(m.into()), alloc: None };
        run(s, Command::Bind { bindings: vec![b], evictions: vec![] }).unwrap();
    }

    fn report(s: &mut CellState, m: &str, job: &str, index: u32, state: TaskState, exit: Option<i32>) {
        let incarnation = s.task(&(job.into(), index)).unwrap().incarnation;
        let r = TaskReport {
            job: job.into(),
            index,
            incarnation,
            state,
            pid: Some(42),
            exit_code: exit,
            signal: None,
            restarts: 0,
            message: String::new(),
        };
        run(s, Command::TaskReports { reports: vec![(MachineId(m.into()), r)] }).unwrap();
    }

    #[test]
    fn lifecycle_pending_running_dead() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        assert_eq!(
            run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: None }).unwrap().0,
            ApplyOutcome::Created(1)
        );
        bind(&mut s, "web", 0, "m1");
        assert_eq!(s.tasks_on(&MachineId("m1".into())).count(), 1);
        assert_eq!(s.allocated_on(&MachineId("m1".into())), Resources::new(100, 1 << 20, 0));
        report(&mut s, "m1", "web", 0, TaskState::Running, None);
        let t = s.task(&("web".into(), 0)).unwrap();
        assert_eq!((t.state, t.pid), (TaskState::Running, Some(42)));
        report(&mut s, "m1", "web", 0, TaskState::Dead, Some(3));
        let t = s.task(&("web".into(), 0)).unwrap();
        assert_eq!((t.state, t.exit_code, t.reason.as_str()), (TaskState::Dead, Some(3), "exited 3"));
        assert_eq!(s.tasks_on(&MachineId("m1".into())).count(), 0);
    }

    #[test]
    fn stale_reports_and_bindings_are_ignored() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::RegisterMachine { machine: machine("m2") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 1), expected_version: None }).unwrap();
        let stale = Bind { job: "web".into(), index: 0, incarnation: 99, machine: MachineId("m1".into()), alloc: None };
        run(&mut s, Command::Bind { bindings: vec![stale], evictions: vec![] }).unwrap();
        assert_eq!(s.task(&("web".into(), 0)).unwrap().machine, None);
        bind(&mut s, "web", 0, "m1");
        // a report from the wrong machine changes nothing
        report(&mut s, "m2", "web", 0, TaskState::Dead, Some(1));
        assert_eq!(s.task(&("web".into(), 0)).unwrap().state, TaskState::Pending);
    }

    #[test]
    fn machine_down_sends_tasks_back_to_pending_with_new_incarnation() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 1), expected_version: None }).unwrap();
        bind(&mut s, "web", 0, "m1");
        report(&mut s, "m1", "web", 0, TaskState::Running, None);
        let (_, ev) =
            run(&mut s, Command::MachineDown { id: MachineId("m1".into()), reason: "5 missed polls".into() }).unwrap();
        assert!(ev.iter().any(|e| e.kind == EventKind::Pending && e.machine == Some(MachineId("m1".into()))));
        let t = s.task(&("web".into(), 0)).unwrap();
        assert_eq!((t.state, t.machine.clone(), t.incarnation), (TaskState::Pending, None, 2));
        assert_eq!(s.machines[&MachineId("m1".into())].state, MachineState::Down);
        // bind onto a down machine is refused
        bind(&mut s, "web", 0, "m1");
        assert_eq!(s.task(&("web".into(), 0)).unwrap().machine, None);
    }

    #[test]
    fn update_kill_and_version_checks() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 3), expected_version: None }).unwrap();
        bind(&mut s, "web", 2, "m1");
        assert_eq!(
            run(&mut s, Command::ApplyJob { spec: spec("web", 3), expected_version: None }).unwrap().0,
            ApplyOutcome::Unchanged(1)
        );
        let err = run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: Some(7) }).unwrap_err();
        assert_eq!(err, CommandError::VersionMismatch { job: "web".into(), expected: 7, actual: 1 });
        let (o, ev) = run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: Some(1) }).unwrap();
        assert_eq!(o, ApplyOutcome::Updated(2));
        assert!(ev.iter().any(|e| e.kind == EventKind::Stopping && e.index == Some(2)));
        assert_eq!(s.jobs["web"].tasks.len(), 2);
        assert_eq!(s.task_count_on(&MachineId("m1".into())), 0);
        bind(&mut s, "web", 0, "m1");
        assert_eq!(run(&mut s, Command::KillJob { name: "web".into() }).unwrap().0, ApplyOutcome::Killed(2));
        assert_eq!(s.jobs["web"].state_name(), "killed");
        assert_eq!(s.task_count_on(&MachineId("m1".into())), 0);
        assert_eq!(
            run(&mut s, Command::KillJob { name: "nope".into() }).unwrap_err(),
            CommandError::NoSuchJob("nope".into())
        );
    }

    #[test]
    fn a_done_job_stays_done_when_killed_and_only_dead_jobs_are_deleted() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("b", 1), expected_version: None }).unwrap();
        bind(&mut s, "b", 0, "m1");
        let err = run(&mut s, Command::DeleteJob { name: "b".into() }).unwrap_err();
        assert_eq!(err, CommandError::JobStillLive { job: "b".into(), live: 1 });
        assert!(err.to_string().contains("borgctl kill b"), "{err}");
        report(&mut s, "m1", "b", 0, TaskState::Dead, Some(0));
        let (o, ev) = run(&mut s, Command::KillJob { name: "b".into() }).unwrap();
        assert_eq!(o, ApplyOutcome::AlreadyFinished);
        assert!(ev.is_empty() && !s.jobs["b"].killed, "a finished job is not turned into a killed one");
        let (_, ev) = run(&mut s, Command::DeleteJob { name: "b".into() }).unwrap();
        assert!(ev.iter().any(|e| e.kind == EventKind::Deleted && e.detail == "finished job removed"), "{ev:?}");
        assert!(!s.jobs.contains_key("b"));
        assert_eq!(
            run(&mut s, Command::DeleteJob { name: "b".into() }).unwrap_err(),
            CommandError::NoSuchJob("b".into())
        );
        // the name is free again
        run(&mut s, Command::ApplyJob { spec: spec("b", 1), expected_version: Some(0) }).unwrap();
    }

    #[test]
    fn evictions_send_victims_back_to_pending_as_preempted() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("batchy", 1), expected_version: None }).unwrap();
        bind(&mut s, "batchy", 0, "m1");
        let e = Evict {
            job: "batchy".into(),
            index: 0,
            incarnation: 1,
            machine: MachineId("m1".into()),
            by: "prod/0".into(),
        };
        let (_, ev) = run(&mut s, Command::Bind { bindings: vec![], evictions: vec![e.clone()] }).unwrap();
        let t = s.task(&("batchy".into(), 0)).unwrap();
        assert_eq!(
            (t.state, t.machine.clone(), t.incarnation, t.reason.as_str()),
            (TaskState::Pending, None, 2, "preempted")
        );
        assert_eq!(ev[0].kind, EventKind::Preempted);
        assert_eq!(ev[0].machine, Some(MachineId("m1".into())), "the victim's Borglet is woken");
        assert_eq!(s.task_count_on(&MachineId("m1".into())), 0);
        // the same decision again is stale (new incarnation)
        let (_, ev) = run(&mut s, Command::Bind { bindings: vec![], evictions: vec![e] }).unwrap();
        assert!(ev.is_empty());
    }

    fn running(s: &mut CellState, job: &str, m: &str) {
        let n = s.jobs[job].tasks.len() as u32;
        for i in 0..n {
            let t = s.task(&(job.into(), i)).unwrap().clone();
            if t.state == TaskState::Pending {
                if t.machine.is_none() {
                    bind(s, job, i, m);
                }
                report(s, m, job, i, TaskState::Running, None);
            }
        }
    }

    #[test]
    fn quota_admission_per_band_and_release_on_kill() {
        let mut s = CellState::new("dev");
        s.default_quota = Some(Resources::ZERO);
        let mut web = spec("web", 2); // batch, 2 x 100m
        assert!(matches!(
            run(&mut s, Command::ApplyJob { spec: web.clone(), expected_version: None }),
            Err(CommandError::OverQuota { needed, free, .. }) if needed == Resources::new(200, 2 << 20, 0) && free == Resources::ZERO
        ));
        let limit = Resources::new(300, 1 << 30, 1 << 30);
        run(&mut s, Command::SetQuota { user: "alice".into(), band: Band::Batch, limit }).unwrap();
        run(&mut s, Command::ApplyJob { spec: web.clone(), expected_version: None }).unwrap();
        assert_eq!(s.quota_used("alice", Band::Batch, None), Resources::new(200, 2 << 20, 0));
        // production quota is separate: a production job is refused, a free one needs none
        let mut prod = spec("prod", 1);
        prod.priority = scheduler_core::Priority(200);
        assert!(run(&mut s, Command::ApplyJob { spec: prod, expected_version: None }).is_err());
        let mut free = spec("free", 50);
        free.priority = scheduler_core::Priority(5);
        run(&mut s, Command::ApplyJob { spec: free, expected_version: None }).unwrap();
        // another 2-task batch job does not fit next to web; after killing web it does
        let other = spec("other", 2);
        assert!(run(&mut s, Command::ApplyJob { spec: other.clone(), expected_version: None }).is_err());
        run(&mut s, Command::KillJob { name: "web".into() }).unwrap();
        run(&mut s, Command::ApplyJob { spec: other, expected_version: None }).unwrap();
        // an update is charged without the job's own current use
        web.tasks = 3;
        run(&mut s, Command::KillJob { name: "other".into() }).unwrap();
        run(&mut s, Command::ApplyJob { spec: web, expected_version: None }).unwrap();
        assert_eq!(s.quota_used("alice", Band::Batch, None).cpu_millis, 300);
    }

    #[test]
    fn an_update_of_unplaced_tasks_applies_at_once_and_keeps_no_old_spec() {
        let mut s = CellState::new("dev");
        let mut v = spec("web", 3);
        run(&mut s, Command::ApplyJob { spec: v.clone(), expected_version: None }).unwrap();
        for round in 0..5 {
            v.command = vec!["sleep".into(), format!("{round}")];
            run(&mut s, Command::ApplyJob { spec: v.clone(), expected_version: None }).unwrap();
        }
        let job = &s.jobs["web"];
        assert_eq!(job.version, 6);
        assert!(job.tasks.iter().all(|t| t.job_version == 6 && t.incarnation == 1), "{:?}", job.tasks);
        assert!(job.old_specs.is_empty(), "old specs kept for tasks that never ran");
        assert!(!job.rolling());
        let mut again = s.clone();
        again.reindex();
        assert_eq!(again, s, "the rolling index matches a rebuilt one");
    }

    #[test]
    fn rolling_update_keeps_at_most_max_unavailable_down() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        let mut v1 = spec("web", 4);
        run(&mut s, Command::ApplyJob { spec: v1.clone(), expected_version: None }).unwrap();
        running(&mut s, "web", "m1");
        v1.command = vec!["sleep".into(), "200".into()];
        v1.max_unavailable = 2;
        run(&mut s, Command::ApplyJob { spec: v1.clone(), expected_version: None }).unwrap();
        let down = |s: &CellState| s.jobs["web"].tasks.iter().filter(|t| t.state == TaskState::Pending).count();
        let versions = |s: &CellState| s.jobs["web"].tasks.iter().map(|t| t.job_version).collect::<Vec<_>>();
        assert_eq!(down(&s), 2);
        assert_eq!(versions(&s), vec![2, 2, 1, 1], "index order, two at a time");
        assert_eq!(s.jobs["web"].spec_for(1).command, vec!["sleep", "100"], "old tasks keep the old spec");
        running(&mut s, "web", "m1");
        assert_eq!(versions(&s), vec![2, 2, 2, 2]);
        running(&mut s, "web", "m1");
        assert!(!s.jobs["web"].rolling() && s.jobs["web"].old_specs.is_empty());
        // lowering requests is applied in place: nothing restarts
        let before: Vec<u64> = s.jobs["web"].tasks.iter().map(|t| t.incarnation).collect();
        v1.resources = Resources::new(50, 1 << 20, 0);
        run(&mut s, Command::ApplyJob { spec: v1, expected_version: None }).unwrap();
        let after: Vec<u64> = s.jobs["web"].tasks.iter().map(|t| t.incarnation).collect();
        assert_eq!(before, after);
        assert_eq!(down(&s), 0);
        assert_eq!(s.jobs["web"].version, 3);
    }

    #[test]
    fn per_machine_jobs_follow_the_machines() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::RegisterMachine { machine: machine("m2") }).unwrap();
        let mut d = spec("agent", 1);
        d.per_machine = true;
        run(&mut s, Command::ApplyJob { spec: d, expected_version: None }).unwrap();
        let pins: Vec<_> = s.jobs["agent"].tasks.iter().map(|t| t.pinned.clone().unwrap().0).collect();
        assert_eq!(pins, vec!["m1", "m2"]);
        run(&mut s, Command::RegisterMachine { machine: machine("m3") }).unwrap();
        assert_eq!(s.jobs["agent"].tasks.len(), 3);
        assert_eq!(s.jobs["agent"].tasks[2].pinned, Some(MachineId("m3".into())));
        // re-registering a known machine adds nothing
        run(&mut s, Command::RegisterMachine { machine: machine("m3") }).unwrap();
        assert_eq!(s.jobs["agent"].tasks.len(), 3);
    }

    #[test]
    fn allocs_reserve_and_their_eviction_takes_their_tasks() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        let mut set = spec("pool", 1);
        set.kind = JobKind::AllocSet;
        set.command = vec![];
        set.resources = Resources::new(1000, 1 << 30, 0);
        run(&mut s, Command::ApplyJob { spec: set, expected_version: None }).unwrap();
        bind(&mut s, "pool", 0, "m1");
        assert_eq!(s.task(&("pool".into(), 0)).unwrap().state, TaskState::Running, "an alloc is up once reserved");
        let mut inner = spec("inner", 1);
        inner.alloc_set = "pool".into();
        run(&mut s, Command::ApplyJob { spec: inner, expected_version: None }).unwrap();
        let b = Bind { job: "inner".into(), index: 0, incarnation: 1, machine: MachineId("m1".into()), alloc: Some(0) };
        run(&mut s, Command::Bind { bindings: vec![b], evictions: vec![] }).unwrap();
        assert_eq!(
            s.allocated_on(&MachineId("m1".into())),
            Resources::new(1000, 1 << 30, 0),
            "the task uses the alloc's room"
        );
        let e =
            Evict { job: "pool".into(), index: 0, incarnation: 1, machine: MachineId("m1".into()), by: "p/0".into() };
        run(&mut s, Command::Bind { bindings: vec![], evictions: vec![e] }).unwrap();
        let t = s.task(&("inner".into(), 0)).unwrap();
        assert_eq!((t.state, t.alloc, t.machine.clone()), (TaskState::Pending, None, None));
    }

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
