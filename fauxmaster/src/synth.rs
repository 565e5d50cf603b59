//! Synthetic cells and workloads in the shape of Nomad's C1M (many jobs of many tasks on a large
//! cell), heterogeneous on purpose.
//!
//! Machines (racks of 40, 2 TiB disk each, 10% `arch=arm64`, the rest `x86_64`):
//!
//! | share | CPU | RAM |
//! |---|---|---|
//! | 40% | 16 cores | 64 GiB |
//! | 30% | 32 cores | 128 GiB |
//! | 20% | 48 cores | 192 GiB |
//! | 10% | 64 cores | 512 GiB |
//!
//! Jobs: each picks a task shape, CPU one of 100m, 150m, 200m, 250m, 400m and RAM one of 128 MiB,
//! 256 MiB, 512 MiB, 1 GiB, 2 GiB (with 1 GiB local disk); a band: 20% production, 50% batch, 30%
//! free (priority uniform within the band); 5% of jobs require `arch == x86_64`; 1% want
//! `different_machine`. At 10,000 machines and 1,000 x 1,000 tasks this asks for about 62% of the
//! cell's CPU and 52% of its RAM. Deterministic for a seed.

use crate::workload::{Machine, Task, Workload};
use rand::{RngExt, SeedableRng};
use scheduler_core::{Attributes, Priority, Resources};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Builds `machines` machines and `jobs` jobs of `tasks_per_job` tasks.
pub fn generate(machines: usize, jobs: usize, tasks_per_job: u32, seed: u64) -> Workload {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut w = Workload { units: "synthetic: millicores and bytes".into(), ..Default::default() };
    for i in 0..machines {
        let roll: f64 = rng.random();
        let (cores, ram) = match roll {
            r if r < 0.4 => (16, 64 * GIB),
            r if r < 0.7 => (32, 128 * GIB),
            r if r < 0.9 => (48, 192 * GIB),
            _ => (64, 512 * GIB),
        };
        let arch = if rng.random::<f64>() < 0.1 { "arm64" } else { "x86_64" };
        let rack = format!("rack{}", i / 40);
        let attributes: Attributes =
            [("arch".to_string(), arch.to_string()), ("rack".to_string(), rack.clone())].into();
        w.machines.push(Machine {
            id: format!("m{i:05}"),
            capacity: Resources::new(cores * 1000, ram, 2048 * GIB),
            attributes,
            domain: rack,
        });
    }
    let cpus = [100, 150, 200, 250, 400];
    let rams = [128 * MIB, 256 * MIB, 512 * MIB, GIB, 2 * GIB];
    for j in 0..jobs {
        w.jobs.push(format!("job{j:04}"));
        let request = Resources::new(cpus[rng.random_range(0..cpus.len())], rams[rng.random_range(0..rams.len())], GIB);
        let band: f64 = rng.random();
        let priority = Priority(match band {
            b if b < 0.2 => 200 + rng.random_range(0..100),
            b if b < 0.7 => 100 + rng.random_range(0..100),
            _ => rng.random_range(0..100),
        });
        let x86_only = rng.random::<f64>() < 0.05;
        let different_machine = rng.random::<f64>() < 0.01;
        w.constraints.push(if x86_only {
            vec![scheduler_core::Constraint {
                attribute: "arch".into(),
                op: scheduler_core::ConstraintOp::Eq,
                values: vec!["x86_64".into()],
            }]
        } else {
            vec![]
        });
        for index in 0..tasks_per_job {
            w.tasks.push(Task {
                job: j as u32,
                index,
                priority,
                request,
                different_machine,
                machine: None,
                user: 0,
                usage: None,
            });
        }
    }
    w
}

/// Machine platforms a heterogeneous cell draws from: (cores, GiB of RAM). CPU to RAM ratios
/// from 1:3.75 to 1:16, so that task shapes fit some platforms much better than others.
const PLATFORMS: [(u64, u64); 13] = [
    (16, 120),
    (16, 128),
    (24, 192),
    (32, 128),
    (32, 256),
    (48, 192),
    (48, 384),
    (64, 256),
    (64, 512),
    (96, 384),
    (96, 768),
    (128, 512),
    (128, 768),
];

/// A heterogeneous cell and a production workload for validating scoring on other cell shapes
/// than the Google trace's (`fauxmaster compact --hetero SEED`).
///
/// The cell: `machines` machines of 3 to 6 platforms drawn from [`PLATFORMS`] (16-128 cores,
/// 120-768 GiB), in random shares; no disk, no racks (every machine is its own failure domain),
/// no attributes. The workload: `tasks` production tasks (priority 200-299 per job) in jobs of
/// 1 to 300 tasks; each job has one shape: CPU 0.25 to 16 cores, RAM 1 to 16 GiB per core (both
/// log-uniform), then every request is scaled so that the workload asks for `load` of the
/// cell's CPU or of its RAM, whichever it asks more of (at most the largest platform). CPU and
/// RAM only (disk 0). Deterministic for a seed; different seeds give different platform mixes
/// and shapes.
pub fn heterogeneous(machines: usize, tasks: usize, load: f64, seed: u64) -> Workload {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut w = Workload {
        units: format!("synthetic heterogeneous cell, seed {seed}: millicores and bytes"),
        ..Default::default()
    };
    let kinds = rng.random_range(3..=6usize);
    let mut platforms: Vec<(u64, u64, f64)> = Vec::new();
    while platforms.len() < kinds {
        let (c, r) = PLATFORMS[rng.random_range(0..PLATFORMS.len())];
        if !platforms.iter().any(|p| (p.0, p.1) == (c, r)) {
            platforms.push((c, r, rng.random_range(0.2..1.0)));
        }
    }
    let total: f64 = platforms.iter().map(|p| p.2).sum();
    let (mut cell_cpu, mut cell_ram) = (0f64, 0f64);
    for i in 0..machines {
        let mut roll = rng.random::<f64>() * total;
        let mut pick = platforms[platforms.len() - 1];
        for p in &platforms {
            if roll < p.2 {
                pick = *p;
                break;
            }
            roll -= p.2;
        }
        let capacity = Resources::new(pick.0 * 1000, pick.1 * GIB, 0);
        cell_cpu += capacity.cpu_millis as f64;
        cell_ram += capacity.ram_bytes as f64;
        let id = format!("h{i:05}");
        w.machines.push(Machine { id: id.clone(), capacity, attributes: Attributes::new(), domain: id });
    }
    let largest = platforms.iter().fold((0u64, 0u64), |a, p| (a.0.max(p.0 * 1000), a.1.max(p.1 * GIB)));
    let log_uniform =
        |rng: &mut rand::rngs::SmallRng, lo: f64, hi: f64| (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp();
    // (cpu millicores, ram bytes, tasks) per job, before scaling
    let mut shapes: Vec<(f64, f64, usize)> = Vec::new();
    let mut left = tasks;
    while left > 0 {
        let size = match rng.random::<f64>() {
            r if r < 0.3 => 1,
            r if r < 0.7 => rng.random_range(2..=10),
            r if r < 0.95 => rng.random_range(11..=100),
            _ => rng.random_range(101..=300),
        }
        .min(left);
        let cores = log_uniform(&mut rng, 0.25, 16.0);
        let gib_per_core = log_uniform(&mut rng, 1.0, 16.0);
        shapes.push((cores * 1000.0, cores * gib_per_core * GIB as f64, size));
        left -= size;
    }
    let (want_cpu, want_ram) =
        shapes.iter().fold((0f64, 0f64), |a, s| (a.0 + s.0 * s.2 as f64, a.1 + s.1 * s.2 as f64));
    let scale = load / (want_cpu / cell_cpu).max(want_ram / cell_ram);
    for (j, (cpu, ram, size)) in shapes.into_iter().enumerate() {
        w.jobs.push(format!("hjob{j:04}"));
        w.constraints.push(vec![]);
        let cpu = ((cpu * scale / 10.0).round() as u64 * 10).clamp(10, largest.0);
        let ram = ((ram * scale / MIB as f64).round() as u64 * MIB).clamp(MIB, largest.1);
        let priority = Priority(200 + rng.random_range(0..100));
        for index in 0..size as u32 {
            w.tasks.push(Task {
                job: j as u32,
                index,
                priority,
                request: Resources::new(cpu, ram, 0),
                different_machine: false,
                machine: None,
                user: 0,
                usage: None,
            });
        }
    }
    w
}
