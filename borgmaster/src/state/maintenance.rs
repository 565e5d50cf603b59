//! Commands of the machine lifecycle an admin drives: cordon, uncordon, drain (with each job's
//! disruption budget), remove.
//!
//! A drain moves a machine's tasks off by eviction, like Borg's maintenance (Borg §2.5: tasks
//! are evicted and rescheduled; a job's disruption budget limits how many maintenance takes
//! down at once) and Kubernetes' `kubectl drain` with PodDisruptionBudgets:
//! - tasks of the batch and free bands (and the allocs of those bands, with what runs in
//!   them) are evicted at once, reason `drain`, and rescheduled elsewhere;
//! - production and monitoring tasks go one budget at a time: a job's task on a draining
//!   machine is evicted only while fewer than its `max_unavailable` tasks are unavailable
//!   (not running and ready), counting every cause at once (other draining machines, a
//!   rolling update, a crash); so the next one goes when the last one's replacement runs
//!   elsewhere and is ready. A task that is unavailable anyway goes at once.
//! - once the drain's deadline has passed, whatever is left is evicted regardless, with an
//!   event that says so.
//!
//! The drain advances after every command (a task report that a replacement is ready lets the
//! next task go); the leader proposes `Tick`s while a deadline waits on time.

use super::apply::{requeue, Events};
use super::{ApplyOutcome, CellState, CommandError, EventKind, Maintenance, PendingReason, Task, TaskId, TaskState};
use borg_jobspec::JobKind;
use scheduler_core::{Band, MachineId};

impl CellState {
    /// `machines -o json` state: `down`, `drained`, `draining`, `cordoned` or `up`.
    pub fn machine_state_name(&self, id: &MachineId) -> &'static str {
        let Some(m) = self.machines.get(id) else { return "removed" };
        match (m.state, m.maintenance) {
            (super::MachineState::Down, _) => "down",
            (_, Maintenance::Draining { .. }) if self.task_count_on(id) == 0 => "drained",
            (_, Maintenance::Draining { .. }) => "draining",
            (_, Maintenance::Cordoned) => "cordoned",
            (_, Maintenance::None) => "up",
        }
    }

    /// Machines by [`CellState::machine_state_name`], every state listed (zero counts too), in
    /// the order up, cordoned, draining, drained, down: the figures of `/metrics`.
    pub fn machines_by_state(&self) -> [(&'static str, usize); 5] {
        let mut out = [("up", 0), ("cordoned", 0), ("draining", 0), ("drained", 0), ("down", 0)];
        for id in self.machines.keys() {
            let name = self.machine_state_name(id);
            if let Some(row) = out.iter_mut().find(|(s, _)| *s == name) {
                row.1 += 1;
            }
        }
        out
    }

    pub(super) fn set_maintenance(
        &mut self,
        ids: &[MachineId],
        to: Maintenance,
        by: &str,
        ev: &mut Events,
    ) -> Result<ApplyOutcome, CommandError> {
        if let Some(id) = ids.iter().find(|id| !self.machines.contains_key(*id)) {
            return Err(CommandError::NoSuchMachine(id.0.clone()));
        }
        let who = if by.is_empty() { String::new() } else { format!(" by {by}") };
        for id in ids {
            let tasks = self.task_count_on(id);
            let Some(m) = self.machines.get_mut(id) else { continue };
            if m.maintenance == to {
                continue;
            }
            m.maintenance = to;
            self.drained.remove(id);
            if matches!(to, Maintenance::Draining { .. }) && tasks > 0 {
                self.draining.insert(id.clone());
            } else {
                self.draining.remove(id);
            }
            let (kind, detail) = match to {
                Maintenance::None => (EventKind::Uncordoned, format!("schedulable again{who}")),
                Maintenance::Cordoned => (EventKind::Cordoned, format!("no new tasks{who}")),
                Maintenance::Draining { deadline_ms } => (
                    EventKind::Draining,
                    match deadline_ms {
                        Some(d) => format!(
                            "{tasks} tasks to move off{who}, within disruption budgets until the deadline in {} s",
                            (d - ev.now).max(0) / 1000
                        ),
                        None => format!("{tasks} tasks to move off{who}, within disruption budgets"),
                    },
                ),
            };
            ev.push("", None, kind, detail, Some(id));
            if matches!(to, Maintenance::Draining { .. }) && tasks == 0 {
                // nothing to move: drained at once (`drain --wait` returns as soon as the state
                // reads drained)
                self.drained.insert(id.clone());
                ev.push("", None, EventKind::Drained, "no tasks left".into(), Some(id));
            }
        }
        Ok(ApplyOutcome::Done)
    }

    pub(super) fn remove_machines(
        &mut self,
        ids: &[MachineId],
        force: bool,
        by: &str,
        ev: &mut Events,
    ) -> Result<ApplyOutcome, CommandError> {
        for id in ids {
            if !self.machines.contains_key(id) {
                return Err(CommandError::NoSuchMachine(id.0.clone()));
            }
            let live = self.task_count_on(id);
            if live > 0 && !force {
                return Err(CommandError::MachineHasTasks { machine: id.0.clone(), live });
            }
        }
        let who = if by.is_empty() { String::new() } else { format!(" by {by}") };
        for id in ids {
            let on: Vec<Task> = self.tasks_on(id).cloned().collect();
            for t in &on {
                self.move_off(t, id, PendingReason::Drain, "machine removed", ev);
            }
            self.machines.remove(id);
            self.draining.remove(id);
            self.drained.remove(id);
            // per_machine tasks pinned to it can never run again
            let now = ev.now;
            let pinned: Vec<(String, u32)> = self
                .jobs
                .values()
                .flat_map(|j| j.tasks.iter())
                .filter(|t| t.pinned.as_ref() == Some(id) && t.state != TaskState::Dead)
                .map(|t| (t.job.clone(), t.index))
                .collect();
            for (job, index) in pinned {
                if let Some(t) = self.task(&TaskId::new(&job, index)).cloned() {
                    self.unbind(&t);
                }
                if let Some(t) = self.task_mut(&job, index) {
                    t.state = TaskState::Dead;
                    t.reason = format!("machine {id} removed");
                    t.state_since_ms = now;
                }
                ev.push(&job, Some(index), EventKind::Dead, format!("machine {id} removed"), Some(id));
            }
            let detail = if on.is_empty() {
                format!("removed{who}")
            } else {
                format!("removed{who} with --force: {} tasks sent back to pending", on.len())
            };
            ev.push("", None, EventKind::Removed, detail, Some(id));
        }
        Ok(ApplyOutcome::Done)
    }

    /// Evicts `t` from machine `m` back to pending (`why`, `text`), with what runs in it when it
    /// is an alloc.
    fn move_off(&mut self, t: &Task, m: &MachineId, why: PendingReason, text: &str, ev: &mut Events) {
        self.unbind(t);
        let now = ev.now;
        if let Some(task) = self.task_mut(&t.job, t.index) {
            requeue(task, why, text, now);
        }
        ev.push_because(
            &t.job,
            Some(t.index),
            EventKind::Pending,
            format!("evicted: {text} ({m})"),
            Some(m),
            Some(why),
        );
        if self.jobs.get(&t.job).is_some_and(|j| j.spec.kind == JobKind::AllocSet) {
            self.evict_alloc_contents(&t.job, t.index, text, ev);
        }
    }

    /// One step of every drain (see the module doc); runs after every command. A draining
    /// machine found empty, by this step or by anything before it (its tasks finished, their
    /// job was killed), is announced drained once.
    pub(super) fn advance_drains(&mut self, ev: &mut Events) {
        let draining: Vec<(MachineId, Option<i64>)> = self
            .draining
            .iter()
            .filter_map(|id| self.machines.get(id))
            .filter_map(|m| match m.maintenance {
                Maintenance::Draining { deadline_ms } => Some((m.id.clone(), deadline_ms)),
                _ => None,
            })
            .collect();
        if draining.is_empty() {
            return;
        }
        let now = ev.now;
        // Whether task `t` counts as available for disruption budgets: running and ready.
        let available = |t: &Task| t.state == TaskState::Running && t.ready;
        for (id, deadline) in &draining {
            if self.task_count_on(id) == 0 {
                continue;
            }
            // tasks in allocs move with their alloc
            let on: Vec<Task> = self.tasks_on(id).filter(|t| t.alloc.is_none()).cloned().collect();
            let past = deadline.is_some_and(|d| now >= d);
            if past {
                let detail = format!("deadline passed: evicting the {} tasks left regardless of budgets", on.len());
                ev.push("", None, EventKind::Draining, detail, Some(id));
            }
            for t in on {
                let budgeted = self
                    .jobs
                    .get(&t.job)
                    .is_some_and(|j| j.spec.priority.band().is_some_and(|b| b >= Band::Production));
                if past || !budgeted || !available(&t) || self.unavailable(&t.job) < self.budget(&t.job) {
                    self.move_off(&t, id, PendingReason::Drain, "drain", ev);
                }
            }
        }
        for (id, _) in draining {
            if self.task_count_on(&id) == 0 {
                self.draining.remove(&id);
                ev.push("", None, EventKind::Drained, "no tasks left".into(), Some(&id));
                self.drained.insert(id);
            }
        }
    }

    /// Live tasks of job `name` that are not available for disruption budgets: not running and
    /// ready (pending, starting, failing readiness).
    fn unavailable(&self, name: &str) -> usize {
        self.jobs.get(name).map_or(0, |j| {
            j.tasks.iter().filter(|t| t.state != TaskState::Dead && !(t.state == TaskState::Running && t.ready)).count()
        })
    }

    /// The job's disruption budget: its `max_unavailable` (at least 1).
    fn budget(&self, name: &str) -> usize {
        self.jobs.get(name).map_or(1, |j| j.spec.max_unavailable.max(1) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use scheduler_core::{MachineId, Priority};

    fn m(id: &str) -> MachineId {
        MachineId(id.into())
    }

    fn drain(s: &mut CellState, ids: &[&str], deadline_ms: Option<i64>) {
        let ids = ids.iter().map(|i| m(i)).collect();
        run(s, Command::SetMaintenance { ids, maintenance: Maintenance::Draining { deadline_ms }, by: "root".into() })
            .unwrap();
    }

    /// m1 holds web/0, web/1 (production, 3 tasks, max_unavailable 1) and batch/0, batch/1;
    /// m2 holds web/2.
    fn cell() -> CellState {
        let mut s = CellState::new("dev");
        for id in ["m1", "m2", "m3"] {
            run(&mut s, Command::RegisterMachine { machine: machine(id) }).unwrap();
        }
        let mut web = spec("web", 3);
        web.priority = Priority(200);
        run(&mut s, Command::ApplyJob { spec: web, expected_version: None }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("batch", 2), expected_version: None }).unwrap();
        for (job, i, on) in
            [("web", 0, "m1"), ("web", 1, "m1"), ("web", 2, "m2"), ("batch", 0, "m1"), ("batch", 1, "m1")]
        {
            bind(&mut s, job, i, on);
            report(&mut s, on, job, i, TaskState::Running, None);
        }
        s
    }

    fn on(s: &CellState, id: &str) -> Vec<String> {
        s.tasks_on(&m(id)).map(|t| format!("{}/{}", t.job, t.index)).collect()
    }

    #[test]
    fn a_drain_evicts_batch_at_once_and_production_one_budget_at_a_time() {
        let mut s = cell();
        drain(&mut s, &["m1"], None);
        // batch gone with reason drain; one web task gone (budget 1), the other waits
        assert_eq!(on(&s, "m1"), ["web/1"]);
        let b = s.task(&TaskId::new("batch", 0)).unwrap();
        assert_eq!((b.state, b.pending_reason), (TaskState::Pending, Some(PendingReason::Drain)));
        assert_eq!(s.machine_state_name(&m("m1")), "draining");
        // the scheduler may not put it back on m1
        bind(&mut s, "web", 0, "m1");
        assert_eq!(s.task(&TaskId::new("web", 0)).unwrap().machine, None);
        // bound elsewhere but not yet running: still unavailable, web/1 stays
        bind(&mut s, "web", 0, "m3");
        assert_eq!(on(&s, "m1"), ["web/1"]);
        // running but not ready: still unavailable
        report_running_at(&mut s, "m3", "web", 0, false, 1000);
        assert_eq!(on(&s, "m1"), ["web/1"]);
        // ready: the next one goes, and the machine is drained
        report_running_at(&mut s, "m3", "web", 0, true, 1000);
        assert!(on(&s, "m1").is_empty());
        let drained = s.events.iter().any(|e| e.kind == EventKind::Drained && e.machine == Some(m("m1")));
        assert!(drained, "{:?}", s.events);
        assert_eq!(s.machine_state_name(&m("m1")), "drained");
    }

    #[test]
    fn a_machine_drained_with_no_tasks_is_announced_drained_at_once() {
        let mut s = cell();
        drain(&mut s, &["m3"], None);
        let of_m3: Vec<EventKind> =
            s.events.iter().filter(|e| e.machine == Some(m("m3")) && e.job.is_empty()).map(|e| e.kind).collect();
        assert_eq!(of_m3[of_m3.len() - 2..], [EventKind::Draining, EventKind::Drained], "{of_m3:?}");
        assert_eq!(s.machine_state_name(&m("m3")), "drained");
    }

    #[test]
    fn a_draining_machine_emptied_by_a_kill_is_announced_drained_once_even_after_a_snapshot() {
        let mut s = cell();
        drain(&mut s, &["m1"], None);
        // web/1 waits on web's budget (web/0 is not yet running elsewhere)
        assert_eq!(on(&s, "m1"), ["web/1"]);
        run(&mut s, Command::KillJob { name: "web".into() }).unwrap();
        report(&mut s, "m1", "web", 1, TaskState::Dead, Some(0));
        assert!(on(&s, "m1").is_empty());
        assert_eq!(s.machine_state_name(&m("m1")), "drained");
        let drained_m1 = |s: &CellState| {
            s.events.iter().filter(|e| e.kind == EventKind::Drained && e.machine == Some(m("m1"))).count()
        };
        assert_eq!(drained_m1(&s), 1, "{:?}", s.events);
        // later commands, and a replica that restored a snapshot, do not announce it again
        run(&mut s, Command::RegisterMachine { machine: machine("m4") }).unwrap();
        let mut back: CellState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        back.reindex();
        assert_eq!(back, s);
        run(&mut back, Command::RegisterMachine { machine: machine("m5") }).unwrap();
        assert_eq!(drained_m1(&back), 1, "{:?}", back.events);
        // a new drain after an uncordon is announced anew
        let uncordon =
            Command::SetMaintenance { ids: vec![m("m1")], maintenance: Maintenance::None, by: String::new() };
        run(&mut back, uncordon).unwrap();
        drain(&mut back, &["m1"], None);
        assert_eq!(drained_m1(&back), 2, "{:?}", back.events);
    }

    #[test]
    fn two_machines_drained_at_once_keep_one_budget_per_job() {
        let mut s = cell();
        drain(&mut s, &["m1", "m2"], None);
        let web_down = s.jobs["web"].tasks.iter().filter(|t| t.state != TaskState::Running).count();
        assert_eq!(web_down, 1, "one web task at a time across both machines");
    }

    #[test]
    fn a_task_unavailable_anyway_goes_at_once_and_the_deadline_evicts_the_rest() {
        let mut s = cell();
        // web/2 on m2 crashed to pending elsewhere: web already has one unavailable
        run(&mut s, Command::MachineDown { id: m("m2"), reason: "test".into() }).unwrap();
        drain(&mut s, &["m1"], Some(5000));
        assert_eq!(on(&s, "m1"), ["web/0", "web/1"], "budget used up by web/2");
        let (_, ev) = s.apply(&Entry { time_ms: 5000, command: Command::Tick }).unwrap();
        assert!(on(&s, "m1").is_empty());
        assert!(ev.iter().any(|e| e.kind == EventKind::Draining && e.detail.starts_with("deadline passed")), "{ev:?}");
    }

    #[test]
    fn cordon_blocks_new_tasks_and_uncordon_lifts_it_and_both_outlast_registration() {
        let mut s = cell();
        let set = |s: &mut CellState, to| {
            run(s, Command::SetMaintenance { ids: vec![m("m3")], maintenance: to, by: String::new() }).unwrap()
        };
        set(&mut s, Maintenance::Cordoned);
        assert_eq!(s.machine_state_name(&m("m3")), "cordoned");
        run(&mut s, Command::RegisterMachine { machine: machine("m3") }).unwrap();
        assert_eq!(s.machine_state_name(&m("m3")), "cordoned", "a Borglet restart keeps the cordon");
        run(&mut s, Command::ApplyJob { spec: spec("new", 1), expected_version: None }).unwrap();
        bind(&mut s, "new", 0, "m3");
        assert_eq!(s.task(&TaskId::new("new", 0)).unwrap().machine, None);
        set(&mut s, Maintenance::None);
        bind(&mut s, "new", 0, "m3");
        assert_eq!(s.task(&TaskId::new("new", 0)).unwrap().machine, Some(m("m3")));
    }

    #[test]
    fn remove_refuses_a_machine_with_tasks_unless_forced_and_the_machine_comes_back_new() {
        let mut s = cell();
        let remove = |s: &mut CellState, id: &str, force| {
            run(s, Command::RemoveMachines { ids: vec![m(id)], force, by: "root".into() })
        };
        let e = remove(&mut s, "m1", false).unwrap_err();
        assert!(e.to_string().contains("still holds 4 live tasks: drain it first"), "{e}");
        assert!(s.machines.contains_key(&m("m1")));
        remove(&mut s, "m3", false).unwrap();
        assert!(!s.machines.contains_key(&m("m3")));
        assert_eq!(s.machine_state_name(&m("m3")), "removed");
        remove(&mut s, "m2", true).unwrap();
        let t = s.task(&TaskId::new("web", 2)).unwrap();
        assert_eq!((t.state, t.machine.clone()), (TaskState::Pending, None));
        assert!(matches!(remove(&mut s, "m2", false), Err(CommandError::NoSuchMachine(_))));
        run(&mut s, Command::RegisterMachine { machine: machine("m3") }).unwrap();
        assert_eq!(s.machine_state_name(&m("m3")), "up");
    }

    #[test]
    fn an_alloc_moves_with_the_tasks_inside_it() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        let mut set = spec("pool", 1);
        set.kind = borg_jobspec::JobKind::AllocSet;
        set.command = vec![];
        run(&mut s, Command::ApplyJob { spec: set, expected_version: None }).unwrap();
        bind(&mut s, "pool", 0, "m1");
        let mut inner = spec("inner", 1);
        inner.alloc_set = "pool".into();
        run(&mut s, Command::ApplyJob { spec: inner, expected_version: None }).unwrap();
        let b = Bind { job: "inner".into(), index: 0, incarnation: 1, machine: m("m1"), alloc: Some(0) };
        run(&mut s, Command::Bind { bindings: vec![b], evictions: vec![] }).unwrap();
        drain(&mut s, &["m1"], None);
        for job in ["pool", "inner"] {
            let t = s.task(&TaskId::new(job, 0)).unwrap();
            assert_eq!((t.state, t.machine.clone()), (TaskState::Pending, None), "{job}");
        }
        assert_eq!(s.machine_state_name(&m("m1")), "drained");
    }
}
