//! Baselines the benchmarks compare against.

use scheduler_core::{CellModel, Resident, TaskGroup, TaskRef};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The plain best-fit probe (DESIGN.md §8, the floor for scheduler-core): one best-fit score per
/// machine per group, a heap per group, no constraints, bands, spreading or preemption. Places
/// what fits and returns how many tasks it placed.
pub fn probe_best_fit(cell: &mut CellModel, groups: &[TaskGroup]) -> usize {
    let mut placed = 0;
    let score = |cell: &CellModel, m: usize, g: &TaskGroup| -> Option<u64> {
        let free = cell.free(m);
        if !g.request.fits_in(&free) {
            return None;
        }
        let left = free.saturating_sub(g.request);
        let cap = cell.capacity[m];
        let f = |a: u64, c: u64| (a * 1_000_000).checked_div(c).unwrap_or(0);
        Some(f(left.cpu_millis, cap.cpu_millis) + f(left.ram_bytes >> 10, cap.ram_bytes >> 10))
    };
    for g in groups {
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
            (0..cell.len()).filter_map(|m| score(cell, m, g).map(|s| Reverse((s, m)))).collect();
        for &index in &g.tasks {
            let Some(Reverse((_, m))) = heap.pop() else { break };
            cell.add(m, Resident::new(TaskRef { job: g.job_id, index }, g.priority, g.request));
            placed += 1;
            if let Some(s) = score(cell, m, g) {
                heap.push(Reverse((s, m)));
            }
        }
    }
    placed
}
