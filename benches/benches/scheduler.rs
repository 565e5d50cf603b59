//! Hot paths of scheduler-core at 10,000 machines (divan). Run: `cargo bench -p borg-benches`.
//!
//! - `synth`: a full pass over the synthetic C1M shape (fauxmaster::synth), 100k and 1M tasks.
//! - `synth_fair_share`: the same pass with the 1,000 jobs spread over 100 users, their groups
//!   first ordered by fair share (`scheduler_core::order_by_fair_share`, as the master's
//!   snapshot does), half the users holding a share already: what fair share adds to a pass.
//! - `probe`: the plain best-fit probe on the same input (the floor the full scheduler is
//!   measured against: target within 4x).
//! - `repack_google_2011`: the trace's time-0 workload (132,982 tasks) onto its 12,477-machine
//!   cell, when the trace is present at ../shared/traces/google-2011.
//! - `feasibility_and_score_10k`: one feasibility check and one hybrid score on every machine.

use fauxmaster::workload::{cell_model, groups, Task};
use scheduler_core::{Params, Scheduler};
use std::path::Path;

fn main() {
    divan::main();
}

fn synth_input(jobs: usize) -> (fauxmaster::workload::Workload, Vec<scheduler_core::TaskGroup>) {
    let w = fauxmaster::synth::generate(10_000, jobs, 1000, 42);
    let tasks: Vec<&Task> = w.tasks.iter().collect();
    let gs = groups(&tasks, &w.jobs, &w.constraints);
    (w, gs)
}

#[divan::bench(args = [100, 1000], sample_count = 5)]
fn synth(bencher: divan::Bencher, jobs: usize) {
    let (w, gs) = synth_input(jobs);
    bencher.with_inputs(|| cell_model(&w.machines)).bench_local_values(|mut cell| {
        let p = Scheduler::new(Params::default()).schedule(&mut cell, &gs);
        assert_eq!(p.bindings.len(), jobs * 1000);
        p.bindings.len()
    });
}

#[divan::bench(args = [1000], sample_count = 5)]
fn synth_fair_share(bencher: divan::Bencher, jobs: usize) {
    let (w, gs) = synth_input(jobs);
    let user = |g: &scheduler_core::TaskGroup| g.job_id % 100;
    let share = |g: &scheduler_core::TaskGroup| if user(g) % 2 == 0 { 0.0 } else { f64::from(user(g)) / 1000.0 };
    bencher.with_inputs(|| (cell_model(&w.machines), gs.clone())).bench_local_values(|(mut cell, mut gs)| {
        scheduler_core::order_by_fair_share(&mut gs, user, share);
        let p = Scheduler::new(Params::default()).schedule(&mut cell, &gs);
        assert_eq!(p.bindings.len(), jobs * 1000);
        p.bindings.len()
    });
}

#[divan::bench(args = [100, 1000], sample_count = 5)]
fn probe(bencher: divan::Bencher, jobs: usize) {
    let (w, gs) = synth_input(jobs);
    bencher
        .with_inputs(|| cell_model(&w.machines))
        .bench_local_values(|mut cell| borg_benches::probe_best_fit(&mut cell, &gs));
}

#[divan::bench(sample_count = 5)]
fn repack_google_2011(bencher: divan::Bencher) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/google-2011");
    let Ok((w, _)) = fauxmaster::trace::load(&dir, &fauxmaster::trace::Units::default()) else {
        eprintln!("skipped: no trace at {}", dir.display());
        return;
    };
    let tasks: Vec<&Task> = w.tasks.iter().collect();
    let gs = groups(&tasks, &w.jobs, &w.constraints);
    bencher
        .with_inputs(|| cell_model(&w.machines))
        .bench_local_values(|mut cell| Scheduler::new(Params::default()).schedule(&mut cell, &gs).bindings.len());
}

#[divan::bench]
fn feasibility_and_score_10k(bencher: divan::Bencher) {
    let (w, gs) = synth_input(1);
    let cell = cell_model(&w.machines);
    let class = scheduler_core::equivalence::classes(&gs[..1]).remove(0);
    let weights = scheduler_core::Weights::default();
    bencher.bench_local(|| {
        let mut best = f64::MAX;
        for m in 0..cell.len() {
            if scheduler_core::feasibility::check(&cell, m, &class, false).is_ok() {
                best =
                    best.min(scheduler_core::scoring::score(&cell, m, class.priority, &class.request, 0.0, &weights));
            }
        }
        best
    });
}
