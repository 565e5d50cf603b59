//! Task usage for `--reclaim` (Borg §5.5) when the workload gives none.
//!
//! The Google 2011 trace's `task_usage` table is not in `shared/traces/` (its first part is a
//! large object that the copy we have did not include), and no public per-task copy was found
//! to use. So usage is **modeled**, and a workload that has real usage brings it in the neutral
//! CSV's `cpu_used_millis,ram_used_bytes` columns (which always win over the model).
//!
//! **The model.** Each job gets a usage ratio per resource, the same for all its tasks (tasks
//! of a job run the same binary on similar shards), drawn uniformly from `[0.25, 1.75] x mean`
//! by a hash of the job number and the seed; each task then varies by +/-10% around it; a ratio
//! is capped at 1 (a task never uses more than its limit). The means, by band:
//!
//! | band | CPU | RAM |
//! |---|---|---|
//! | production, monitoring | 0.30 | 0.55 |
//! | batch | 0.50 | 0.60 |
//! | free | 0.50 | 0.60 |
//!
//! They are chosen so that, on the trace's time-0 workload, modeled usage comes to about a third
//! of the CPU requests and a little over half of the memory requests: the aggregate shape
//! reported for this trace (Reiss, Tumanov, Ganger, Katz, Kozuch, "Heterogeneity and dynamicity
//! of clouds at scale: Google trace analysis", SoCC 2012: CPU usage far below CPU requests,
//! memory usage nearer its requests), with production further below its requests than batch
//! (Borg §5.5: production jobs ask for what their worst hour needs). It is a model for capacity
//! planning, not a measurement: the report says `"usage": "modeled"` whenever it was used.

use crate::workload::Task;
use scheduler_core::{Band, Resources};

/// Mean usage ratios (CPU, RAM) of a band.
pub fn mean_ratios(band: Option<Band>) -> (f64, f64) {
    match band {
        Some(Band::Production | Band::Monitoring) => (0.30, 0.55),
        Some(Band::Batch) | Some(Band::Free) | None => (0.50, 0.60),
    }
}

/// splitmix64: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A uniform number in [0, 1) from a hash.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The modeled peak usage of `t` (see the module docs), for model seed `seed`.
pub fn modeled(t: &Task, seed: u64) -> Resources {
    let (cpu_mean, ram_mean) = mean_ratios(t.priority.band());
    let job = mix(seed ^ u64::from(t.job).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let task = mix(job ^ u64::from(t.index));
    let ratio = |mean: f64, salt: u64| {
        let per_job = mean * (0.25 + 1.5 * unit(mix(job ^ salt)));
        (per_job * (0.9 + 0.2 * unit(mix(task ^ salt)))).min(1.0)
    };
    let scale = |v: u64, r: f64| (v as f64 * r) as u64;
    Resources::new(scale(t.request.cpu_millis, ratio(cpu_mean, 1)), scale(t.request.ram_bytes, ratio(ram_mean, 2)), 0)
}

/// The peak usage `--reclaim` reserves for: the task's own when the workload gives it, else
/// the model's.
pub fn peak(t: &Task, seed: u64) -> Resources {
    t.usage.unwrap_or_else(|| modeled(t, seed))
}

/// The reservation of `t` once warmed up ([`scheduler_core::reclaim::estimate`] of its peak).
pub fn reservation(t: &Task, seed: u64) -> Resources {
    scheduler_core::reclaim::estimate(t.request, peak(t, seed), scheduler_core::reclaim::DEFAULT_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler_core::Priority;

    fn task(job: u32, index: u32, prio: i32) -> Task {
        Task {
            job,
            index,
            priority: Priority(prio),
            request: Resources::new(1000, 1 << 30, 0),
            different_machine: false,
            machine: None,
            user: 0,
            usage: None,
        }
    }

    #[test]
    fn the_model_is_deterministic_below_the_request_and_near_its_means() {
        let t = task(3, 1, 200);
        assert_eq!(modeled(&t, 7), modeled(&t, 7));
        let (mut cpu, mut ram, n) = (0.0, 0.0, 20_000);
        for j in 0..n {
            let u = modeled(&task(j, 0, 250), 1);
            assert!(u.cpu_millis <= 1000 && u.ram_bytes <= 1 << 30);
            cpu += u.cpu_millis as f64 / 1000.0;
            ram += u.ram_bytes as f64 / (1u64 << 30) as f64;
        }
        let (cpu, ram) = (cpu / f64::from(n), ram / f64::from(n));
        assert!((cpu - 0.30).abs() < 0.02 && (ram - 0.55).abs() < 0.03, "{cpu} {ram}");
        // a task's own usage wins
        let mut own = task(1, 0, 100);
        own.usage = Some(Resources::new(10, 1 << 20, 0));
        assert_eq!(peak(&own, 1), Resources::new(10, 1 << 20, 0));
        assert_eq!(reservation(&own, 1).cpu_millis, 61);
    }
}
