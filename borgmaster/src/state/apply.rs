//! [`CellState::apply`]: one command in, events out. A command either applies whole or is
//! rejected with a [`CommandError`] and changes nothing.

use super::{
    Bind, CellState, Command, Entry, Event, Evict, Job, Machine, MachineState, Task, TaskKey, TaskReport, TaskState,
    MAX_EVENTS,
};
use borg_spec::JobSpec;
use scheduler_core::MachineId;

/// Why a command was rejected. Rejection changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The named job does not exist.
    #[error("no job named {0:?}")]
    NoSuchJob(String),
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
            Command::RegisterMachine { machine } => self.register_machine(machine, &mut ev),
            Command::MachineDown { id, reason } => self.machine_down(id, reason, &mut ev)?,
            Command::MachineUp { id } => self.machine_up(id, &mut ev)?,
            Command::Bind { bindings, evictions } => {
                self.evict(evictions, &mut ev);
                self.bind(bindings, &mut ev)
            }
            Command::TaskReports { reports } => self.task_reports(reports, &mut ev),
        };
        for e in &ev.out {
            if self.events.len() >= MAX_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(e.clone());
        }
        Ok((outcome, ev.out))
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
        let now = ev.now;
        let Some(job) = self.jobs.get(&spec.name) else {
            let tasks = (0..spec.tasks).map(|i| new_task(&spec.name, i, 1, 1, now, "submitted")).collect();
            let job = Job { spec: spec.clone(), version: 1, submitted_ms: now, killed: false, tasks };
            self.jobs.insert(spec.name.clone(), job);
            ev.push(&spec.name, None, "submitted", format!("{} tasks, {}", spec.tasks, spec.priority), None);
            return Ok(ApplyOutcome::Created(1));
        };
        if job.spec == *spec && !job.killed {
            return Ok(ApplyOutcome::Unchanged(job.version));
        }
        // Replace: every task restarts with the new spec as a new incarnation (rolling updates
        // come later); tasks beyond the new count go away.
        let version = job.version + 1;
        let old: Vec<Task> = job.tasks.clone();
        for t in &old {
            self.unbind(t);
        }
        let mut tasks = Vec::with_capacity(spec.tasks as usize);
        for i in 0..spec.tasks {
            let incarnation = old.get(i as usize).map_or(1, |t| t.incarnation + 1);
            if let Some(t) = old.get(i as usize) {
                if t.state != TaskState::Dead {
                    if let Some(m) = &t.machine {
                        ev.push(&spec.name, Some(i), "stopping", format!("replaced by version {version}"), Some(m));
                    }
                }
            }
            tasks.push(new_task(&spec.name, i, incarnation, version, now, &format!("updated to version {version}")));
        }
        for t in old.iter().skip(spec.tasks as usize) {
            if let (Some(m), false) = (&t.machine, t.state == TaskState::Dead) {
                ev.push(&spec.name, Some(t.index), "stopping", "task count reduced".into(), Some(m));
            }
        }
        if let Some(job) = self.jobs.get_mut(&spec.name) {
            job.spec = spec.clone();
            job.version = version;
            job.killed = false;
            job.tasks = tasks;
        }
        ev.push(&spec.name, None, "updated", format!("version {version}, {} tasks", spec.tasks), None);
        Ok(ApplyOutcome::Updated(version))
    }

    fn kill_job(&mut self, name: &str, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let job = self.jobs.get(name).ok_or_else(|| CommandError::NoSuchJob(name.to_string()))?;
        let live: Vec<Task> = job.tasks.iter().filter(|t| t.state != TaskState::Dead).cloned().collect();
        for t in &live {
            self.unbind(t);
            ev.push(name, Some(t.index), "dead", "killed".into(), t.machine.as_ref());
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
        ev.push(name, None, "killed", format!("{} tasks stopped", live.len()), None);
        Ok(ApplyOutcome::Killed(live.len() as u32))
    }

    fn register_machine(&mut self, m: &Machine, ev: &mut Events) -> ApplyOutcome {
        let was_down = self.machines.get(&m.id).is_some_and(|old| old.state == MachineState::Down);
        let mut rec = m.clone();
        rec.state = MachineState::Up;
        rec.registered_ms = ev.now;
        let detail = format!("{} at {}", rec.capacity, rec.address);
        self.machines.insert(m.id.clone(), rec);
        ev.push("", None, "registered", detail, Some(&m.id));
        if was_down {
            ev.push("", None, "machine-up", "registered again".into(), Some(&m.id));
        }
        ApplyOutcome::Done
    }

    fn machine_down(&mut self, id: &MachineId, reason: &str, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let m = self.machines.get_mut(id).ok_or_else(|| CommandError::NoSuchMachine(id.0.clone()))?;
        m.state = MachineState::Down;
        ev.push("", None, "machine-down", reason.to_string(), Some(id));
        let keys: Vec<TaskKey> = self.by_machine.remove(id).into_iter().flatten().collect();
        for (job, index) in keys {
            if let Some(t) = self.task_mut(&job, index) {
                t.state = TaskState::Pending;
                t.machine = None;
                t.pid = None;
                t.incarnation += 1;
                t.restarts = 0;
                t.reason = "machine down".into();
                t.state_since_ms = ev.now;
                t.queued_ms = ev.now;
                ev.push(&job, Some(index), "pending", format!("evicted: machine {id} down"), Some(id));
            }
        }
        Ok(ApplyOutcome::Done)
    }

    fn machine_up(&mut self, id: &MachineId, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let m = self.machines.get_mut(id).ok_or_else(|| CommandError::NoSuchMachine(id.0.clone()))?;
        if m.state != MachineState::Up {
            m.state = MachineState::Up;
            ev.push("", None, "machine-up", "answering polls again".into(), Some(id));
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
            t.state = TaskState::Pending;
            t.machine = None;
            t.pid = None;
            t.incarnation += 1;
            t.restarts = 0;
            t.reason = "preempted".into();
            t.state_since_ms = now;
            t.queued_ms = now;
            ev.push(&e.job, Some(e.index), "preempted", format!("by {} on {}", e.by, e.machine), Some(&e.machine));
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
            t.exit_code = None;
            t.signal = None;
            self.by_machine.entry(b.machine.clone()).or_default().insert((b.job.clone(), b.index));
            ev.push(&b.job, Some(b.index), "scheduled", format!("on {}", b.machine), Some(&b.machine));
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
                        let detail = format!("pid {}", r.pid.map_or("-".into(), |p| p.to_string()));
                        ev.push(&r.job, Some(r.index), "running", detail, Some(m));
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
                    t.reason = if r.message.is_empty() { exit_text(r.exit_code, r.signal) } else { r.message.clone() };
                    t.state_since_ms = now;
                    let detail = t.reason.clone();
                    ev.push(&r.job, Some(r.index), "dead", detail, Some(m));
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

/// `exited 0`, `killed by signal 9`, or `exited` when neither is known.
pub(crate) fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(s)) => format!("killed by signal {s}"),
        (Some(c), None) => format!("exited {c}"),
        (None, None) => "exited".into(),
    }
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
    }
}

struct Events {
    now: i64,
    out: Vec<Event>,
}

impl Events {
    fn push(&mut self, job: &str, index: Option<u32>, kind: &str, detail: String, machine: Option<&MachineId>) {
        self.out.push(Event {
            time_ms: self.now,
            job: job.to_string(),
            index,
            kind: kind.to_string(),
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
        let b = Bind { job: job.into(), index, incarnation, machine: MachineId(m.into()) };
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
        let stale = Bind { job: "web".into(), index: 0, incarnation: 99, machine: MachineId("m1".into()) };
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
        assert!(ev.iter().any(|e| e.kind == "pending" && e.machine == Some(MachineId("m1".into()))));
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
        assert!(ev.iter().any(|e| e.kind == "stopping" && e.index == Some(2)));
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
        assert_eq!(ev[0].kind, "preempted");
        assert_eq!(ev[0].machine, Some(MachineId("m1".into())), "the victim's Borglet is woken");
        assert_eq!(s.task_count_on(&MachineId("m1".into())), 0);
        // the same decision again is stale (new incarnation)
        let (_, ev) = run(&mut s, Command::Bind { bindings: vec![], evictions: vec![e] }).unwrap();
        assert!(ev.is_empty());
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
