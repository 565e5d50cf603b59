//! Test fixtures shared by the state machine's unit tests (each command family's tests sit
//! beside its code).

use super::*;
use borg_jobspec::{JobKind, JobSpec};
use scheduler_core::{MachineId, Priority, Resources};

/// A service of alice's at priority 100: `tasks` tasks of 100 millicores and 1 MiB running
/// `sleep 100`.
pub fn spec(name: &str, tasks: u32) -> JobSpec {
    JobSpec::new(
        name,
        "alice",
        Priority(100),
        JobKind::Service,
        tasks,
        vec!["sleep".into(), "100".into()],
        Resources::new(100, 1 << 20, 0),
    )
}

pub fn machine(id: &str) -> Machine {
    Machine {
        id: MachineId(id.into()),
        address: "127.0.0.1:1".into(),
        capacity: Resources::new(4000, 8 << 30, 0),
        attributes: Default::default(),
        state: MachineState::Up,
        maintenance: Default::default(),
        registered_ms: 0,
        port_range: None,
    }
}

pub fn run(s: &mut CellState, c: Command) -> Result<(ApplyOutcome, Vec<Event>), CommandError> {
    s.apply(&Entry { time_ms: 1000, command: c })
}

pub fn bind(s: &mut CellState, job: &str, index: u32, m: &str) {
    let incarnation = s.task(&TaskId::new(job, index)).unwrap().incarnation;
    let b = Bind { job: job.into(), index, incarnation, machine: MachineId(m.into()), alloc: None };
    run(s, Command::Bind { bindings: vec![b], evictions: vec![] }).unwrap();
}

pub fn report(s: &mut CellState, m: &str, job: &str, index: u32, state: TaskState, exit: Option<i32>) {
    let incarnation = s.task(&TaskId::new(job, index)).unwrap().incarnation;
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
        ready: state == TaskState::Running,
        reclaimed: false,
    };
    run(s, Command::TaskReports { reports: vec![(MachineId(m.into()), r)] }).unwrap();
}

pub fn running(s: &mut CellState, job: &str, m: &str) {
    let n = s.jobs[job].tasks.len() as u32;
    for i in 0..n {
        let t = s.task(&TaskId::new(job, i)).unwrap().clone();
        if t.state == TaskState::Pending {
            if t.machine.is_none() {
                bind(s, job, i, m);
            }
            report(s, m, job, i, TaskState::Running, None);
        }
    }
}

/// Reports the current incarnation of `job/index` running on machine `m` at `time_ms`, ready or
/// not.
pub fn report_running_at(s: &mut CellState, m: &str, job: &str, index: u32, ready: bool, time_ms: i64) {
    let incarnation = s.task(&TaskId::new(job, index)).unwrap().incarnation;
    let r = TaskReport {
        job: job.into(),
        index,
        incarnation,
        state: TaskState::Running,
        pid: Some(7),
        exit_code: None,
        signal: None,
        restarts: 0,
        message: String::new(),
        ready,
        reclaimed: false,
    };
    let command = Command::TaskReports { reports: vec![(MachineId(m.into()), r)] };
    s.apply(&Entry { time_ms, command }).unwrap();
}
