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
