//! Property tests of the cell state machine over random command sequences: it never panics, it
//! is deterministic (the property Raft replication needs), its derived index always matches a
//! rebuild, a JSON round trip (checkpoint and reload) loses nothing, and no machine ever holds a
//! dead task.

use super::*;
use borg_jobspec::{JobKind, JobSpec};
use proptest::prelude::*;
use scheduler_core::{Band, MachineId, Priority, Resources};

fn spec(
    name: &str,
    prio: i32,
    tasks: u32,
    kind: u8,
    max_unavailable: u32,
    per_machine: bool,
    alloc_set: bool,
) -> JobSpec {
    let kind = match kind % 3 {
        0 => JobKind::Batch,
        1 => JobKind::Service,
        _ => JobKind::AllocSet,
    };
    let command = if kind == JobKind::AllocSet { vec![] } else { vec!["true".into()] };
    let resources = Resources::new(100 + prio as u64, 1 << 20, 0);
    let mut spec = JobSpec::new(name, format!("u{}", prio % 3), Priority(prio), kind, tasks, command, resources);
    spec.alloc_set = if alloc_set && kind != JobKind::AllocSet { "j0".into() } else { String::new() };
    spec.max_unavailable = max_unavailable.max(1);
    spec.per_machine = per_machine && kind != JobKind::AllocSet && !alloc_set;
    spec
}

/// A command from small random choices, resolved against the current state so that most of
/// them refer to jobs, tasks and machines that exist (also for other modules' property tests).
pub(crate) fn command(s: &CellState, op: u8, a: u8, b: u8, c: u8) -> Command {
    let machine = |i: u8| MachineId(format!("m{}", i % 4));
    // a registered machine when there is one, so that most bindings take
    let known =
        |i: u8| s.machines.keys().nth(i as usize % s.machines.len().max(1)).cloned().unwrap_or_else(|| machine(i));
    let jobs: Vec<&Job> = s.jobs.values().collect();
    let task = |i: u8| -> Option<&Task> {
        let j = jobs.get(i as usize % jobs.len().max(1))?;
        j.tasks.get(b as usize % j.tasks.len().max(1))
    };
    match op % 12 {
        0 => Command::RegisterMachine {
            machine: Machine {
                id: machine(a),
                address: "h:1".into(),
                capacity: Resources::new(2000, 1 << 30, 0),
                attributes: Default::default(),
                state: MachineState::Up,
                maintenance: Default::default(),
                registered_ms: 0,
                port_range: None,
            },
        },
        1 => Command::ApplyJob {
            spec: spec(
                &format!("j{}", a % 5),
                [5, 150, 250, 350][b as usize % 4],
                1 + c as u32 % 4,
                b,
                c as u32 % 3,
                c.is_multiple_of(7),
                c.is_multiple_of(5),
            ),
            expected_version: None,
        },
        2 => Command::KillJob { name: format!("j{}", a % 5) },
        3 => match task(a) {
            Some(t) => Command::Bind {
                bindings: vec![Bind {
                    job: t.job.clone(),
                    index: t.index,
                    incarnation: t.incarnation,
                    machine: known(c),
                    alloc: c.is_multiple_of(3).then_some(0),
                }],
                evictions: vec![],
            },
            None => Command::MachineUp { id: machine(c) },
        },
        4 | 5 => match task(a).filter(|t| t.machine.is_some()) {
            Some(t) => Command::TaskReports {
                reports: vec![(
                    t.machine.clone().unwrap_or_else(|| machine(c)),
                    TaskReport {
                        job: t.job.clone(),
                        index: t.index,
                        incarnation: t.incarnation,
                        state: if op % 12 == 4 { TaskState::Running } else { TaskState::Dead },
                        pid: Some(7),
                        exit_code: Some(c as i32 % 2),
                        signal: None,
                        restarts: 0,
                        message: String::new(),
                        ready: false,
                        reclaimed: false,
                    },
                )],
            },
            None => Command::MachineUp { id: machine(c) },
        },
        6 => Command::MachineDown { id: machine(a), reason: "test".into() },
        7 => match task(a).filter(|t| t.machine.is_some()) {
            Some(t) => Command::Bind {
                bindings: vec![],
                evictions: vec![Evict {
                    job: t.job.clone(),
                    index: t.index,
                    incarnation: t.incarnation,
                    machine: t.machine.clone().unwrap_or_else(|| machine(c)),
                    by: "x/0".into(),
                }],
            },
            None => Command::MachineUp { id: machine(c) },
        },
        8 => Command::SetMaintenance {
            ids: vec![known(a)],
            maintenance: match b % 3 {
                0 => Maintenance::None,
                1 => Maintenance::Cordoned,
                _ => Maintenance::Draining { deadline_ms: c.is_multiple_of(2).then_some(1000 + c as i64 * 100) },
            },
            by: String::new(),
        },
        9 => Command::RemoveMachines { ids: vec![known(a)], force: b.is_multiple_of(2), by: String::new() },
        10 => Command::RestartTasks {
            name: format!("j{}", a % 5),
            indices: if b.is_multiple_of(2) { vec![] } else { vec![c as u32 % 4] },
        },
        _ => Command::SetQuota {
            user: format!("u{}", a % 3),
            band: [Band::Batch, Band::Production, Band::Monitoring][b as usize % 3],
            limit: Resources::new(c as u64 * 100, 1 << 30, 0),
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_the_state_consistent(ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()), 1..80)) {
        let mut s = CellState::new("p");
        let mut entries = Vec::new();
        for (i, (op, a, b, c)) in ops.into_iter().enumerate() {
            let e = Entry { time_ms: i as i64, command: command(&s, op, a, b, c) };
            let _ = s.apply(&e);
            s.applied_index = i as u64 + 1;
            entries.push(e);
            // no machine holds a dead task; the index matches a rebuild
            let mut rebuilt = s.clone();
            rebuilt.reindex();
            prop_assert_eq!(&rebuilt, &s);
            for m in s.machines.keys() {
                prop_assert!(s.tasks_on(m).all(|t| t.state != TaskState::Dead && t.machine.as_ref() == Some(m)));
                // each task comes with its own job (the lookup is cached across a run of a job's tasks)
                let by_lookup: Vec<_> = s
                    .by_machine
                    .get(m)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| Some((s.task(k)?, s.jobs.get(&k.job)?)))
                    .map(|(t, j)| (t.job.clone(), t.index, j.spec.name.clone()))
                    .collect();
                let cached: Vec<_> =
                    s.tasks_on_with_jobs(m).map(|(t, j)| (t.job.clone(), t.index, j.spec.name.clone())).collect();
                prop_assert_eq!(cached, by_lookup);
            }
            for j in s.jobs.values() {
                if !j.killed && !j.spec.per_machine {
                    prop_assert_eq!(j.tasks.len() as u32, j.spec.tasks);
                }
                for t in j.tasks.iter().filter(|t| t.state == TaskState::Running) {
                    prop_assert!(t.machine.is_some());
                }
            }
        }
        // deterministic: the same log gives the same state
        let mut again = CellState::new("p");
        for (i, e) in entries.iter().enumerate() {
            let _ = again.apply(e);
            again.applied_index = i as u64 + 1;
        }
        prop_assert_eq!(&again, &s);
        // a checkpoint round trip loses nothing
        let mut back: CellState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        back.reindex();
        prop_assert_eq!(back, s);
    }
}
