//! Scoring: among feasible machines, which is best? (Kubernetes: Score.)

use crate::cell::{CellModel, MachineIndex};
use crate::resources::{Resource, Resources};

/// Best-fit score of placing `request` on machine `i`: the sum over CPU, RAM and disk of the
/// fraction of the machine's capacity that would be left free afterwards (0.0 = exactly full,
/// 3.0 = empty machine). Lower is better: the tightest fit wins, which keeps large holes open for
/// large tasks. A dimension with zero capacity counts as full.
///
/// The caller must have checked feasibility; an infeasible request scores as if it fit exactly.
pub fn best_fit(cell: &CellModel, i: MachineIndex, request: &Resources) -> f64 {
    let left = cell.free(i).saturating_sub(*request);
    let cap = cell.capacity[i];
    Resource::ALL.into_iter().map(|r| if cap.get(r) == 0 { 0.0 } else { left.get(r) as f64 / cap.get(r) as f64 }).sum()
}
