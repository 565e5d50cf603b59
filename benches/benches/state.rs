//! The Borgmaster's cell state machine at cell scale (divan): applying a scheduling pass's
//! `Bind` command, encoding and decoding a checkpoint (JSON, and the master group's binary
//! encoding), the scheduler's input and the cell's accounting. Run: `cargo bench -p borg-benches --bench state`.
//!
//! The cell: 10,000 machines, 1,000 jobs x 100 tasks (100,000 tasks).

use borg_jobspec::{JobKind, JobSpec};
use borgmaster::state::{Bind, CellState, Command, Entry, Machine, MachineState};
use scheduler_core::{MachineId, Priority, Resources};

fn main() {
    divan::main();
}

const MACHINES: usize = 10_000;
const JOBS: usize = 1_000;
const TASKS: u32 = 100;

fn job(i: usize) -> JobSpec {
    JobSpec::new(
        format!("job{i}"),
        "bench",
        Priority(100 + (i % 100) as i32),
        JobKind::Service,
        TASKS,
        vec!["/bin/true".into()],
        Resources::new(100, 256 << 20, 0),
    )
}

/// The cell with every job applied and the first `bound_jobs` jobs' tasks bound.
fn cell(bound_jobs: usize) -> CellState {
    let mut s = CellState::new("bench");
    let mut t = 0;
    let mut run = |s: &mut CellState, command: Command| {
        t += 1;
        let _ = s.apply(&Entry { time_ms: t, command });
    };
    for m in 0..MACHINES {
        let machine = Machine {
            id: MachineId(format!("m{m:05}")),
            address: "127.0.0.1:1".into(),
            capacity: Resources::new(32_000, 128 << 30, 0),
            attributes: Default::default(),
            state: MachineState::Up,
            maintenance: Default::default(),
            registered_ms: 0,
            port_range: None,
        };
        run(&mut s, Command::RegisterMachine { machine });
    }
    for j in 0..JOBS {
        run(&mut s, Command::ApplyJob { spec: job(j), expected_version: None });
    }
    for j in 0..bound_jobs {
        run(&mut s, Command::Bind { bindings: binds(j), evictions: vec![] });
    }
    s
}

fn binds(j: usize) -> Vec<Bind> {
    (0..TASKS)
        .map(|i| Bind {
            job: format!("job{j}"),
            index: i,
            incarnation: 1,
            machine: MachineId(format!("m{:05}", (j * TASKS as usize + i as usize) % MACHINES)),
            alloc: None,
        })
        .collect()
}

/// The leader's soft state after a poll round of [`cell`]'s machines: every bound task's usage
/// (50 millicores, 100 MiB) as reported by its Borglet.
fn reported() -> borgmaster::soft::SoftState {
    let mut soft = borgmaster::soft::SoftState::default();
    for j in 0..JOBS {
        for b in binds(j) {
            let run = borg_jobspec::RunId::new(b.job.as_str(), b.index, b.incarnation);
            soft.task_usage.entry(b.machine).or_default().insert(run, (Resources::new(50, 100 << 20, 0), 0.0));
        }
    }
    soft
}

/// One scheduling pass's decisions for 1,000 tasks (10 jobs) in a cell of 100,000 tasks.
#[divan::bench(sample_count = 20)]
fn apply_bind_1000_tasks(bencher: divan::Bencher) {
    let base = cell(JOBS - 10);
    let bindings: Vec<Bind> = (JOBS - 10..JOBS).flat_map(binds).collect();
    bencher.with_inputs(|| base.clone()).bench_local_values(|mut s| {
        let e = Entry { time_ms: 1, command: Command::Bind { bindings: bindings.clone(), evictions: vec![] } };
        s.apply(&e).map(|(_, ev)| ev.len()).unwrap_or(0)
    });
}

/// What every command costs besides its own change, in a cell of 10,000 machines and 100,000
/// tasks: a `Tick` (which changes nothing) applied, with the rules checked after each command
/// (drains, dependencies, rolling updates). Every replica pays it per command it applies.
#[divan::bench(sample_count = 20)]
fn apply_tick_100k_tasks(bencher: divan::Bencher) {
    let mut s = cell(JOBS);
    let mut t = 0;
    bencher.bench_local(|| {
        t += 1;
        s.apply(&Entry { time_ms: t, command: Command::Tick }).map(|(_, ev)| ev.len()).unwrap_or(0)
    });
}

/// Encoding the whole state as a checkpoint (JSON) at 100,000 tasks.
#[divan::bench(sample_count = 5)]
fn checkpoint_json_100k_tasks(bencher: divan::Bencher) {
    let s = cell(JOBS);
    bencher.bench_local(|| serde_json::to_vec(&s).map(|v| v.len()).unwrap_or(0));
}

/// Encoding the whole state as a checkpoint in the master group's encoding
/// (`borgmaster::raft::codec`, MessagePack) at 100,000 tasks.
#[divan::bench(sample_count = 5)]
fn checkpoint_100k_tasks(bencher: divan::Bencher) {
    let s = cell(JOBS);
    bencher.bench_local(|| borgmaster::raft::codec::encode(&s).map(|v| v.len()).unwrap_or(0));
}

/// That checkpoint compressed as a snapshot is (`borgmaster::raft::codec::compress`, zstd).
#[divan::bench(sample_count = 5)]
fn checkpoint_compressed_100k_tasks(bencher: divan::Bencher) {
    let s = cell(JOBS);
    bencher.bench_local(|| {
        borgmaster::raft::codec::encode(&s)
            .and_then(|v| borgmaster::raft::codec::compress(&v))
            .map(|v| v.len())
            .unwrap_or(0)
    });
}

/// Decoding that checkpoint (what installing a snapshot on a replica costs, before the indexes
/// are rebuilt): as a snapshot is stored (compressed), as MessagePack, and its JSON for
/// comparison.
#[divan::bench(sample_count = 5, args = ["compressed", "binary", "json"])]
fn checkpoint_decode_100k_tasks(bencher: divan::Bencher, encoding: &str) {
    let s = cell(JOBS);
    let bytes = match encoding {
        "json" => serde_json::to_vec(&s).unwrap_or_default(),
        "compressed" => {
            borgmaster::raft::codec::encode(&s).and_then(|v| borgmaster::raft::codec::compress(&v)).unwrap_or_default()
        }
        _ => borgmaster::raft::codec::encode(&s).unwrap_or_default(),
    };
    bencher.bench_local(|| borgmaster::raft::codec::decode::<CellState>(&bytes).map(|s| s.jobs.len()).unwrap_or(0));
}

/// Rebuilding the derived indexes of a decoded checkpoint (`CellState::reindex`: each machine's
/// tasks), the rest of what a replica installing a snapshot waits on.
#[divan::bench(sample_count = 5)]
fn reindex_100k_tasks(bencher: divan::Bencher) {
    let s = cell(JOBS);
    bencher.with_inputs(|| s.clone()).bench_local_values(|mut s| {
        s.reindex();
        s.jobs.len()
    });
}

/// The scheduler's input (`borgmaster::snapshot::snapshot`) at 100,000 tasks with 1,000 of them
/// pending (10 jobs), fair-share ordering included.
#[divan::bench(sample_count = 10)]
fn snapshot_100k_tasks(bencher: divan::Bencher) {
    let s = cell(JOBS - 10);
    bencher.bench_local(|| borgmaster::snapshot::snapshot(&s, true).groups.len());
}

/// The scheduler's input for a cell of 1,000 jobs of one pending task each and no machines:
/// `replbench throughput`'s cell, whose every apply wakes the scheduler. What it costs is the
/// per-job part of a pass (names, owners, fair-share order), not placement.
#[divan::bench(sample_count = 20)]
fn snapshot_1000_pending_jobs(bencher: divan::Bencher) {
    let mut s = CellState::new("bench");
    for j in 0..JOBS {
        let mut spec = job(j);
        spec.tasks = 1;
        let _ = s.apply(&Entry { time_ms: j as i64, command: Command::ApplyJob { spec, expected_version: None } });
    }
    bencher.bench_local(|| borgmaster::snapshot::snapshot(&s, true).groups.len());
}

/// One apply of a new revision of a job, in a cell of 1,000 jobs of one pending task each whose
/// histories are full: what every replica does per command under `replbench throughput`.
#[divan::bench(sample_count = 20, sample_size = 100)]
fn apply_job_update_1000_pending_jobs(bencher: divan::Bencher) {
    let mut s = CellState::new("bench");
    let mut t = 0;
    let spec = |j: usize, rev: i64| {
        let mut spec = job(j);
        spec.tasks = 1;
        spec.command = vec!["/bin/sleep".into(), "86400".into(), format!("--rev={rev}")];
        spec
    };
    for rev in 0..12 {
        for j in 0..JOBS {
            t += 1;
            let _ = s.apply(&Entry {
                time_ms: t,
                command: Command::ApplyJob { spec: spec(j, rev), expected_version: None },
            });
        }
    }
    bencher.bench_local(|| {
        t += 1;
        let entry = Entry {
            time_ms: t,
            command: Command::ApplyJob { spec: spec(t as usize % JOBS, t), expected_version: None },
        };
        s.apply(&entry).is_ok()
    });
}

/// The cell's accounting (`borgmaster::usage::cell_usage`: what every `/metrics` scrape, status
/// page and `GetCellUsage` computes) at 100,000 bound tasks on 10,000 machines.
#[divan::bench(sample_count = 10)]
fn cell_usage_100k_tasks(bencher: divan::Bencher) {
    let s = cell(JOBS);
    let soft = borgmaster::soft::SoftState::default();
    bencher.bench_local(|| borgmaster::usage::cell_usage(&s, &soft).machines_up);
}

/// The same with every bound task's usage reported by its Borglet (the leader's soft state after
/// a poll round): the reported usage is added per run, each looked up in the state
/// (`borgmaster::usage::add_used`).
#[divan::bench(sample_count = 10)]
fn cell_usage_100k_tasks_reported(bencher: divan::Bencher) {
    let s = cell(JOBS);
    let soft = reported();
    bencher.bench_local(|| borgmaster::usage::cell_usage(&s, &soft).used.cpu_millis);
}

/// One round of the leader's reservation estimator (`Estimator::observe_part`, every run's
/// usage as reported by its Borglet, then `due_part` for every machine): 100,000 runs on 10,000
/// machines. With reclamation on, the leader does this every `--reservation-interval` (5 s by
/// default), 64 machines per lock hold (`leader::commit_reservations`); at 1,000,000 tasks,
/// over ten times this many runs (issue 21 item 3).
#[divan::bench(sample_count = 10)]
fn estimator_round_100k_runs(bencher: divan::Bencher) {
    let s = cell(JOBS);
    let soft = reported();
    let cfg = borgmaster::reservation::ReclaimConfig::default();
    let mut est = borgmaster::reservation::Estimator::default();
    let mut now_ms = 1_000_000;
    bencher.bench_local(|| {
        now_ms += 1_000;
        est.begin_round();
        est.observe_part(soft.task_usage.iter(), now_ms, cfg.window);
        est.end_round();
        let mut out = Vec::new();
        est.due_part(&est.machines(), &s, &cfg, now_ms, &mut out);
        out.len()
    });
}

/// What every poll walks (`CellState::tasks_on_with_jobs`: the machine's tasks, each job
/// looked up by name), for every machine once: one poll round's walks at 100,000 tasks (10 per
/// machine, of 10 jobs). At 1,000,000 tasks a machine holds 100 tasks of about 100 jobs and the
/// leader walks 10,000 machines a second (issue 21 item 3).
#[divan::bench(sample_count = 10)]
fn poll_round_walks_100k_tasks(bencher: divan::Bencher) {
    let s = cell(JOBS);
    let ids: Vec<MachineId> = s.machines.keys().cloned().collect();
    bencher.bench_local(|| {
        ids.iter().map(|m| s.tasks_on_with_jobs(m).map(|(t, _)| t.incarnation).sum::<u64>()).sum::<u64>()
    });
}
