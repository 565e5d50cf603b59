//! Preemption planning: which tasks to evict from a machine so a higher-band task fits.

use crate::cell::{CellModel, MachineIndex, Resident};
use crate::priority::Priority;
use crate::resources::Resources;

/// Chooses the victims on machine `m` that make room for `request` at priority `p`: only tasks
/// of a strictly lower band (so production never preempts production, and no band preempts an
/// equal or higher one), cheapest first (lowest band, then lowest priority, then largest
/// request, so fewer are needed), then puts back every victim that turns out not to be needed.
///
/// Room is counted as the placer sees it ([`CellModel::free_for`]): against requests for a
/// production or monitoring task, against reservations for a batch or free one (so a victim
/// frees its request, or its reservation).
///
/// Returns the victims, or `None` when even evicting every lower-band task would not make room.
/// An empty list means the task fits without preemption.
pub fn plan_victims(cell: &CellModel, m: MachineIndex, p: Priority, request: &Resources) -> Option<Vec<Resident>> {
    let mut free = cell.free_for(m, p);
    if request.fits_in(&free) {
        return Some(Vec::new());
    }
    let own = CellModel::band_of(p);
    let mut candidates: Vec<Resident> =
        cell.residents(m).iter().filter(|r| CellModel::band_of(r.priority) < own).copied().collect();
    let size = |r: &Resources| r.cpu_millis as f64 + r.ram_bytes as f64 / (1 << 20) as f64;
    candidates.sort_by(|a, b| {
        CellModel::band_of(a.priority)
            .cmp(&CellModel::band_of(b.priority))
            .then(a.priority.cmp(&b.priority))
            .then(size(&b.request).total_cmp(&size(&a.request)))
            .then(a.task.cmp(&b.task))
    });
    let mut victims = Vec::new();
    for c in candidates {
        if request.fits_in(&free) {
            break;
        }
        free = free.saturating_add(c.held_for(p));
        victims.push(c);
    }
    if !request.fits_in(&free) {
        return None;
    }
    // Put back, dearest first, every victim whose eviction is not needed after all.
    let mut i = victims.len();
    while i > 0 {
        i -= 1;
        let without = free.saturating_sub(victims[i].held_for(p));
        if request.fits_in(&without) {
            free = without;
            victims.remove(i);
        }
    }
    Some(victims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{MachineId, TaskRef};
    use crate::constraint::Attributes;

    fn r(job: u32, p: i32, cpu: u64) -> Resident {
        Resident::new(TaskRef { job, index: 0 }, Priority(p), Resources::new(cpu, 0, 0))
    }

    #[test]
    fn lowest_band_first_fewest_victims_never_equal_band() {
        let mut c = CellModel::new();
        let m = c.push(MachineId("m".into()), Resources::new(1000, 1 << 30, 0), Attributes::new(), "r", true);
        c.add(m, r(1, 250, 400)); // production
        c.add(m, r(2, 150, 300)); // batch
        c.add(m, r(3, 10, 100)); // free
        c.add(m, r(4, 20, 200)); // free
                                 // needs 300: the free tasks (300 together) go before any batch task
        let v = plan_victims(&c, m, Priority(200), &Resources::new(300, 0, 0)).unwrap();
        let mut jobs: Vec<u32> = v.iter().map(|x| x.task.job).collect();
        jobs.sort();
        assert_eq!(jobs, vec![3, 4]);
        // needs 200: one free task of 200 suffices; the 100 one is put back
        let v = plan_victims(&c, m, Priority(200), &Resources::new(200, 0, 0)).unwrap();
        assert_eq!(v.iter().map(|x| x.task.job).collect::<Vec<_>>(), vec![4]);
        // production cannot evict production: batch and free hold 600, the most it can free
        assert!(plan_victims(&c, m, Priority(299), &Resources::new(600, 0, 0)).is_some());
        assert!(plan_victims(&c, m, Priority(299), &Resources::new(601, 0, 0)).is_none());
        // batch may only evict free tasks
        assert!(plan_victims(&c, m, Priority(100), &Resources::new(301, 0, 0)).is_none());
    }
}
