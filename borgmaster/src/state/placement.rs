//! Commands of the placement family: the scheduler's bindings and evictions (one `Bind` per
//! pass), and the Borglets' task reports.

use super::apply::{requeue, Events};
use super::ApplyOutcome;
use super::{Bind, CellState, EventKind, Evict, PendingReason, Reservation, Task, TaskId, TaskReport, TaskState};
use borg_jobspec::JobKind;
use scheduler_core::MachineId;

impl CellState {
    /// Preempted tasks go back to pending with a new incarnation; their Borglet stops the old
    /// one (SIGTERM, grace period, SIGKILL) when it no longer sees it in its desired set.
    pub(super) fn evict(&mut self, evictions: &[Evict], ev: &mut Events) {
        for e in evictions {
            let now = ev.now;
            let Some(t) = self.task_mut(&e.job, e.index) else { continue };
            if t.incarnation != e.incarnation || t.machine.as_ref() != Some(&e.machine) || t.state == TaskState::Dead {
                continue; // stale: the victim moved or finished since the pass began
            }
            let old = t.clone();
            self.unbind(&old);
            let Some(t) = self.task_mut(&e.job, e.index) else { continue };
            requeue(t, PendingReason::Preempted, "preempted", now);
            ev.push_because(
                &e.job,
                Some(e.index),
                EventKind::Preempted,
                format!("by {} on {}", e.by, e.machine),
                Some(&e.machine),
                Some(PendingReason::Preempted),
            );
            if self.jobs.get(&e.job).is_some_and(|j| j.spec.kind == JobKind::AllocSet) {
                self.evict_alloc_contents(&e.job, e.index, "its alloc was preempted", ev);
            }
        }
    }

    /// Sends every task running in alloc `alloc_set/index` back to pending.
    pub(super) fn evict_alloc_contents(&mut self, alloc_set: &str, index: u32, why: &str, ev: &mut Events) {
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
                requeue(task, PendingReason::AllocEvicted, why, now);
            }
            ev.push_because(
                &t.job,
                Some(t.index),
                EventKind::Pending,
                format!("evicted: {why}"),
                t.machine.as_ref(),
                Some(PendingReason::AllocEvicted),
            );
        }
    }

    /// The `n` lowest port numbers of machine `m`'s range that no live task there holds; `None`
    /// when fewer are free (no range: only `n == 0` fits).
    fn free_ports(&self, m: &MachineId, n: usize) -> Option<Vec<u16>> {
        if n == 0 {
            return Some(Vec::new());
        }
        let (first, last) = self.machines.get(m)?.port_range?;
        let taken: std::collections::BTreeSet<u16> = self.tasks_on(m).flat_map(|t| t.ports.values().copied()).collect();
        let free: Vec<u16> = (first..=last).filter(|p| !taken.contains(p)).take(n).collect();
        (free.len() == n).then_some(free)
    }

    pub(super) fn bind(&mut self, bindings: &[Bind], ev: &mut Events) -> ApplyOutcome {
        for b in bindings {
            let up = self.machines.get(&b.machine).is_some_and(|m| m.schedulable());
            let now = ev.now;
            let names = match self.task(&TaskId::new(&b.job, b.index)) {
                Some(t)
                    if up && t.incarnation == b.incarnation && t.state == TaskState::Pending && t.machine.is_none() =>
                {
                    self.jobs.get(&b.job).map(|j| j.spec_for(t.job_version).ports.clone()).unwrap_or_default()
                }
                _ => continue, // stale decision: the task or machine changed since the pass began
            };
            let Some(numbers) = self.free_ports(&b.machine, names.len()) else {
                continue; // the scheduler's count was stale: the next pass places it elsewhere
            };
            let Some(t) = self.task_mut(&b.job, b.index) else { continue };
            t.ports = names.into_iter().zip(numbers).collect();
            t.machine = Some(b.machine.clone());
            t.reason = "scheduled".into();
            t.state_since_ms = now;
            t.scheduled_ms = now;
            t.exit_code = None;
            t.signal = None;
            t.alloc = b.alloc;
            self.bind_to(&b.machine, TaskId::new(&b.job, b.index));
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

    /// Records the leader's reservation estimates; stale ones (another incarnation, a task not
    /// bound or dead) are skipped, each is capped at its task's request, and one equal to the
    /// request is stored as `None`.
    pub(super) fn set_reservations(&mut self, reservations: &[Reservation]) -> ApplyOutcome {
        for r in reservations {
            let Some(t) = self.task(&TaskId::new(&r.job, r.index)) else { continue };
            if t.incarnation != r.incarnation || t.machine.is_none() || t.state == TaskState::Dead {
                continue;
            }
            let version = t.job_version;
            let Some(request) = self.jobs.get(&r.job).map(|j| j.spec_for(version).resources) else { continue };
            // a reservation is the master's own (Borg §5.5): no poll carries it, so no poll
            // generation moves (task_mut would mark every machine at every estimate)
            let Some(t) = self.jobs.get_mut(&r.job).and_then(|j| j.tasks.get_mut(r.index as usize)) else { continue };
            let reservation = r.resources.min_each(&request);
            t.reservation = (reservation != request).then_some(reservation);
        }
        ApplyOutcome::Done
    }

    pub(super) fn task_reports(&mut self, reports: &[(MachineId, TaskReport)], ev: &mut Events) -> ApplyOutcome {
        for (m, r) in reports {
            let now = ev.now;
            let Some(t) = self.task_mut(&r.job, r.index) else { continue };
            if t.machine.as_ref() != Some(m) || t.incarnation != r.incarnation || t.state == TaskState::Dead {
                continue; // stale: the task moved, was replaced or is already dead
            }
            match r.state {
                TaskState::Running | TaskState::Pending => {
                    let first = t.state != TaskState::Running;
                    let restarted = !first && r.restarts > t.restarts;
                    t.state = TaskState::Running;
                    t.pid = r.pid;
                    t.restarts = r.restarts;
                    if r.ready && !t.ready {
                        t.ready_since_ms = now;
                    }
                    t.ready = r.ready;
                    if !r.ready {
                        t.ready_since_ms = 0;
                    }
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
                    } else if restarted {
                        let detail = format!("restart {}: {}", r.restarts, t.reason);
                        ev.push(&r.job, Some(r.index), EventKind::Restarted, detail, Some(m));
                    }
                }
                TaskState::Dead if r.reclaimed => {
                    // stopped by its Borglet to give memory back to production: rescheduled
                    let old = t.clone();
                    self.unbind(&old);
                    let Some(t) = self.task_mut(&r.job, r.index) else { continue };
                    let why = if r.message.is_empty() {
                        "reclaimed".to_string()
                    } else {
                        format!("reclaimed: {}", r.message)
                    };
                    requeue(t, PendingReason::Reclaimed, &why, now);
                    ev.push_because(
                        &r.job,
                        Some(r.index),
                        EventKind::Pending,
                        why,
                        Some(m),
                        Some(PendingReason::Reclaimed),
                    );
                }
                TaskState::Dead => {
                    let t = t.clone();
                    self.unbind(&t);
                    let Some(t) = self.task_mut(&r.job, r.index) else { continue };
                    t.state = TaskState::Dead;
                    t.pid = None;
                    t.ready = false;
                    t.ready_since_ms = 0;
                    t.exit_code = r.exit_code;
                    t.signal = r.signal;
                    t.restarts = r.restarts;
                    t.reason = if r.message.is_empty() {
                        borg_jobspec::exit_text(r.exit_code, r.signal)
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use borg_jobspec::JobKind;
    use scheduler_core::{MachineId, Resources};

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
        let t = s.task(&TaskId::new("web", 0)).unwrap();
        assert_eq!((t.state, t.pid), (TaskState::Running, Some(42)));
        report(&mut s, "m1", "web", 0, TaskState::Dead, Some(3));
        let t = s.task(&TaskId::new("web", 0)).unwrap();
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
        assert_eq!(s.task(&TaskId::new("web", 0)).unwrap().machine, None);
        bind(&mut s, "web", 0, "m1");
        // a report from the wrong machine changes nothing
        report(&mut s, "m2", "web", 0, TaskState::Dead, Some(1));
        assert_eq!(s.task(&TaskId::new("web", 0)).unwrap().state, TaskState::Pending);
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
        let t = s.task(&TaskId::new("batchy", 0)).unwrap();
        assert_eq!(
            (t.state, t.machine.clone(), t.incarnation, t.reason.as_str()),
            (TaskState::Pending, None, 2, "preempted")
        );
        assert_eq!((ev[0].kind, ev[0].cause), (EventKind::Preempted, Some(PendingReason::Preempted)));
        assert_eq!(ev[0].machine, Some(MachineId("m1".into())), "the victim's Borglet is woken");
        assert_eq!(s.task_count_on(&MachineId("m1".into())), 0);
        // the same decision again is stale (new incarnation)
        let (_, ev) = run(&mut s, Command::Bind { bindings: vec![], evictions: vec![e] }).unwrap();
        assert!(ev.is_empty());
    }

    #[test]
    fn reservations_stick_to_their_incarnation_and_never_exceed_the_request() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: None }).unwrap();
        bind(&mut s, "web", 0, "m1");
        let est = |index, incarnation, cpu| Reservation {
            job: "web".into(),
            index,
            incarnation,
            resources: Resources::new(cpu, 1 << 19, 0),
        };
        // task 1 is pending: not reserved; a stale incarnation is ignored
        let rs = vec![est(0, 1, 20), est(1, 1, 20), est(0, 7, 5)];
        run(&mut s, Command::SetReservations { reservations: rs }).unwrap();
        assert_eq!(s.task(&TaskId::new("web", 0)).unwrap().reservation, Some(Resources::new(20, 1 << 19, 0)));
        assert_eq!(s.task(&TaskId::new("web", 1)).unwrap().reservation, None);
        // capped at the request: back to None
        run(&mut s, Command::SetReservations { reservations: vec![est(0, 1, 5000)] }).unwrap();
        assert_eq!(s.task(&TaskId::new("web", 0)).unwrap().reservation, Some(Resources::new(100, 1 << 19, 0)));
        // the Borglet stops it to give memory back: pending again, reason reclaimed, a new
        // incarnation without a reservation
        let report = TaskReport {
            job: "web".into(),
            index: 0,
            incarnation: 1,
            state: TaskState::Dead,
            pid: None,
            exit_code: None,
            signal: Some(9),
            restarts: 0,
            message: "machine memory at 95%".into(),
            ready: false,
            reclaimed: true,
        };
        let (_, ev) = run(&mut s, Command::TaskReports { reports: vec![(MachineId("m1".into()), report)] }).unwrap();
        let t = s.task(&TaskId::new("web", 0)).unwrap();
        assert_eq!(
            (t.state, t.incarnation, t.reservation, t.pending_reason),
            (TaskState::Pending, 2, None, Some(PendingReason::Reclaimed))
        );
        assert!(t.reason.starts_with("reclaimed"), "{}", t.reason);
        assert_eq!((ev[0].kind, ev[0].cause), (EventKind::Pending, Some(PendingReason::Reclaimed)));
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
        assert_eq!(s.task(&TaskId::new("pool", 0)).unwrap().state, TaskState::Running, "an alloc is up once reserved");
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
        let t = s.task(&TaskId::new("inner", 0)).unwrap();
        assert_eq!((t.state, t.alloc, t.machine.clone()), (TaskState::Pending, None, None));
    }

    #[test]
    fn bound_tasks_get_the_lowest_free_ports_of_their_machine_and_never_share_one() {
        let mut s = CellState::new("dev");
        let mut m = machine("m1");
        m.port_range = Some((20000, 20002));
        m.capacity.ports = 3;
        run(&mut s, Command::RegisterMachine { machine: m }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("a", 1).with_ports(&["http", "admin"]), expected_version: None })
            .unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("b", 1).with_ports(&["x", "y"]), expected_version: None }).unwrap();
        bind(&mut s, "a", 0, "m1");
        let a = s.task(&TaskId::new("a", 0)).unwrap().clone();
        assert_eq!(a.ports, [("admin".to_string(), 20001), ("http".to_string(), 20000)].into());
        // one port left: b's binding (a stale count) is refused, b stays pending
        bind(&mut s, "b", 0, "m1");
        assert_eq!(s.task(&TaskId::new("b", 0)).unwrap().machine, None);
        // a dies: its ports are free again for b
        report(&mut s, "m1", "a", 0, TaskState::Running, None);
        report(&mut s, "m1", "a", 0, TaskState::Dead, Some(0));
        bind(&mut s, "b", 0, "m1");
        let b = s.task(&TaskId::new("b", 0)).unwrap();
        assert_eq!(b.machine, Some(MachineId("m1".into())));
        assert_eq!(b.ports.values().copied().collect::<Vec<_>>(), [20000, 20001]);
        // a job without ports binds with none, even with the range used up
        run(&mut s, Command::ApplyJob { spec: spec("c", 1), expected_version: None }).unwrap();
        bind(&mut s, "c", 0, "m1");
        assert!(s.task(&TaskId::new("c", 0)).unwrap().ports.is_empty());
        assert!(s.task(&TaskId::new("c", 0)).unwrap().machine.is_some());
    }
}
