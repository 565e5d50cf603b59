//! Commands of the machine family: register (and per_machine tasks for a new machine), down
//! (its tasks back to pending), up.

use super::apply::{new_task, requeue, Events};
use super::{ApplyOutcome, CommandError};
use super::{CellState, EventKind, Machine, MachineState, PendingReason, TaskId};
use scheduler_core::MachineId;

impl CellState {
    pub(super) fn register_machine(&mut self, m: &Machine, ev: &mut Events) -> ApplyOutcome {
        let was_down = self.machines.get(&m.id).is_some_and(|old| old.state == MachineState::Down);
        let is_new = !self.machines.contains_key(&m.id);
        let mut rec = m.clone();
        rec.state = MachineState::Up;
        // an admin's cordon or drain outlasts a Borglet restart
        rec.maintenance = self.machines.get(&m.id).map_or(Default::default(), |old| old.maintenance);
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
                // adds a pending task only: no poll generation moves (job_mut would mark every
                // machine of the job at each of a cell's registrations)
                if let Some(job) = self.jobs.get_mut(&name) {
                    let i = job.tasks.len() as u32;
                    let mut t = new_task(
                        &name,
                        i,
                        1,
                        job.version,
                        now,
                        PendingReason::Submitted,
                        &format!("per_machine: new machine {}", m.id),
                    );
                    t.pinned = Some(m.id.clone());
                    job.tasks.push(t);
                    ev.push(&name, Some(i), EventKind::Submitted, format!("for new machine {}", m.id), None);
                }
            }
        }
        ApplyOutcome::Done
    }

    pub(super) fn machine_down(
        &mut self,
        id: &MachineId,
        reason: &str,
        ev: &mut Events,
    ) -> Result<ApplyOutcome, CommandError> {
        let m = self.machines.get_mut(id).ok_or_else(|| CommandError::NoSuchMachine(id.0.clone()))?;
        m.state = MachineState::Down;
        ev.push("", None, EventKind::MachineDown, reason.to_string(), Some(id));
        let keys: Vec<TaskId> = self.unbind_all(id);
        for TaskId { job, index } in keys {
            let now = ev.now;
            if let Some(t) = self.task_mut(&job, index) {
                requeue(t, PendingReason::MachineDown, "machine down", now);
                ev.push_because(
                    &job,
                    Some(index),
                    EventKind::Pending,
                    format!("evicted: machine {id} down"),
                    Some(id),
                    Some(PendingReason::MachineDown),
                );
            }
        }
        Ok(ApplyOutcome::Done)
    }

    pub(super) fn machine_up(&mut self, id: &MachineId, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let m = self.machines.get_mut(id).ok_or_else(|| CommandError::NoSuchMachine(id.0.clone()))?;
        if m.state != MachineState::Up {
            m.state = MachineState::Up;
            ev.push("", None, EventKind::MachineUp, "answering polls again".into(), Some(id));
        }
        Ok(ApplyOutcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use scheduler_core::MachineId;

    #[test]
    fn machine_down_sends_tasks_back_to_pending_with_new_incarnation() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 1), expected_version: None }).unwrap();
        bind(&mut s, "web", 0, "m1");
        report(&mut s, "m1", "web", 0, TaskState::Running, None);
        let (_, ev) =
            run(&mut s, Command::MachineDown { id: MachineId("m1".into()), reason: "5 missed polls".into() }).unwrap();
        assert!(ev.iter().any(|e| e.kind == EventKind::Pending
            && e.machine == Some(MachineId("m1".into()))
            && e.cause == Some(PendingReason::MachineDown)));
        let t = s.task(&TaskId::new("web", 0)).unwrap();
        assert_eq!((t.state, t.machine.clone(), t.incarnation), (TaskState::Pending, None, 2));
        assert_eq!(t.pending_reason, Some(PendingReason::MachineDown));
        assert_eq!(s.machines[&MachineId("m1".into())].state, MachineState::Down);
        // bind onto a down machine is refused
        bind(&mut s, "web", 0, "m1");
        assert_eq!(s.task(&TaskId::new("web", 0)).unwrap().machine, None);
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
}
