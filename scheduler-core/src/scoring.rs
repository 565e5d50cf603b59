//! Scoring: among feasible machines, which is best? (Kubernetes: Score.) Lower is better.
//!
//! Borg's hybrid scoring (Borg §3.2) combines four terms, each in 0..=1 except preemption:
//!
//! ```text
//! score = pack * waste + strand * imbalance + preempt * level + spread * crowding
//! ```
//! - `waste`: mean over CPU, RAM and disk of the fraction of the machine left free after the
//!   placement. Low = a fuller machine: best fit, which keeps whole machines empty for large tasks
//!   and for compaction.
//! - `imbalance`: the larger free fraction of CPU and RAM minus the smaller, after the placement.
//!   A machine whose RAM is full while half its CPU is free strands that CPU: nobody can use it.
//!   Low = fewer stranded resources. Disk is left out: most tasks request little or none, so its
//!   free fraction says nothing about stranding.
//! - `level`: 0 when the task fits in free resources; otherwise 1 + the highest band that must be
//!   preempted (1 free, 2 batch, 3 production). With a large weight this makes any placement
//!   without preemption beat any with it, and cheaper victims beat dearer ones: "minimise the
//!   number and priority of preempted tasks".
//! - `crowding`: how many of the class's tasks this pass already sit in the machine's failure
//!   domain (rack), relative to a fair share (class tasks / domains), capped at 2. Low = the job
//!   spread over racks, so one rack failure takes few of its tasks. In a cell without racks every
//!   machine is its own domain, and the term spreads a class over machines instead, which mixes
//!   task shapes on each machine and strands less: on the Google 2011 trace's production
//!   workload, exhaustive compaction needed 2.6% fewer machines with it than without (ratio to
//!   the lower bound 0.976 against 0.953). That gain comes from a few classes of thousands of
//!   identical tasks (tasks of many jobs share a class; the largest there: 4,760 tasks of 4 cores
//!   and 22 GiB): spreading only classes of more than 1,000 tasks gave 0.974 (32 candidates),
//!   spreading only classes of 300 or fewer 0.960, as without the term. On
//!   synthetic heterogeneous cells (`fauxmaster compact --hetero`) the term alone cost machines
//!   on small cells: spreading one class of many tasks over every machine took the empty
//!   machines a task of most of a machine needed later in the same pass (one cell of 100
//!   machines needed 81 after compaction instead of best fit's 53; without that one task, 53
//!   against 52). So the scheduler keeps empty machines back from spreading while a large task
//!   of the pass waits (`EmptyReserve` in `schedule.rs`: an empty machine that could hold one
//!   scores as the most crowded for the other classes). With that, `fauxmaster compact
//!   --hetero S --hetero-cells N --seeds 3` (smallest cells summed over 3 removal orders, hybrid
//!   against plain best fit; before it, hybrid): 100 machines / 300 tasks, cells 1-20: 3,632
//!   against 3,694 (before: 3,901); cells 21-40: 3,767 / 3,830 (4,052); 300 / 900: 10,242 /
//!   10,648 (10,707); 1,500 / 4,600 (cells 1-4): 9,715 / 10,462 (9,955); 200 / 2,000: 3,298 /
//!   3,669; 50 / 150: 1,815 / 1,839 (1,839); at `--hetero-load 0.3`: 2,095 / 2,134; at 0.7:
//!   5,219 / 5,218 (5,525) and, 300 / 900 cells 41-50, 7,704 / 7,597 (8,140): the one shape
//!   where the hybrid still needs more (1.4%; there, the tasks that lose their room are just
//!   under the "large" line: 157 GiB on a cell whose largest machine has 512 GiB). The Google
//!   trace: 0.9722 (0.9716 before). Keeping empty machines back only while no more were left
//!   than large tasks waited did worse (100 / 300: 3,736; 300 / 900 at 0.7: 7,903). On a second real cell, Alibaba's 2023 GPU cluster trace
//!   (`fauxmaster compact --openb csv/openb_pod_list_NAME.csv --seeds 3`: 1,523 nodes, CPU and
//!   memory only; 18 distinct pod lists of 8,152 pods each, the GPU-spec variants left out
//!   since GPUs are), the hybrid needed 22,507 machines in all against best fit's 19,726 before
//!   the reserve (worse on 16 lists, by up to 81%: 1,523 against 840) and 19,730 after (better
//!   on 8, worse on 9 by at most 1.1%, equal on 1); there the crowding term cost about 1%
//!   (`--spread 0` beat both on every list tried). Every OpenB pod is a job of its own, and its
//!   classes are small against the cell: spreading them serves neither end of the term (no job
//!   has two tasks to keep apart, no class is large enough to mix shapes), so the scheduler now
//!   spreads a class only when one of its jobs has two or more tasks in it or it holds at least
//!   a quarter as many tasks as the cell has failure domains (`spreads` in `schedule.rs`). The
//!   19 CPU, default, gpushare and multigpu lists (`--seeds 3`): hybrid 21,129 machines against
//!   best fit's 21,249 (21,253 before), better on 17 lists, worse on 1 (gpushare100: 769 against
//!   765), equal on 1 (multigpu50, where no machine can go). The hetero shapes and the Google
//!   trace barely move (their jobs have many tasks): Google 0.972 (`fauxmaster compact --trace`,
//!   11 seeds: median 9,388 machines, best fit 9,567, lower bound 9,129).
//!
//!   Wider hetero sweep (`--seeds 3`, summed smallest cells, hybrid / best fit): 100 / 300 at 0.5,
//!   cells 1-100: 18,243 / 18,457; 300 / 900, cells 1-50: 26,200 / 27,410, at 0.3 (cells 1-30)
//!   8,871 / 9,367, at 0.7: 38,624 / 38,779; 1,500 / 4,600 cells 1-8: 20,046 / 23,293; 200 /
//!   2,000 cells 1-30: 9,639 / 10,547; 50 / 150 cells 1-100: 9,145 / 9,160; 1,000 / 10,000 at
//!   0.7 cells 1-4: 9,222 / 10,264; 500 / 1,500 at 0.8: cells 1-20 28,237 / 28,043, cells
//!   100-129 43,525 / 43,604. Where the hybrid still needed more: 100 / 300 at 0.9 (three tasks
//!   of about 30% of a machine each per machine), cells 1-50 14,918 / 14,892 and cells 100-199
//!   29,882 / 29,799 (0.2-0.3%), and 300 / 900 at 0.7 cells 41-50, 7,704 / 7,597; the imbalance
//!   term costs it there (`--strand 0`: 29,803). Scaling that term down for tasks large against
//!   the machine cost far more elsewhere (1,500 / 4,600: 22,341 instead of 20,046; Google
//!   0.966), so it stays.
//!
//!   What closed the gap is the scheduler's second pass (`Params::second_pass` in
//!   `schedule.rs`): a pass that leaves production work pending for room its own choices took
//!   runs again with plain best fit, and the placement that placed more is kept. The same
//!   sweep with it (hybrid / best fit): 100 / 300 at 0.5, cells 1-100: 17,910 / 18,457; 300 /
//!   900 cells 1-50: 25,908 / 27,410, at 0.3 (cells 1-30) 8,846 / 9,367, at 0.7: 37,842 /
//!   38,779, cells 41-50: 7,510 / 7,597; 1,500 / 4,600 cells 1-8: 20,042 / 23,293; 200 / 2,000:
//!   9,639 / 10,547; 50 / 150: 8,977 / 9,160; 100 / 300 at 0.3: 5,090 / 5,295, at 0.9: 14,869
//!   / 14,892 (cells 100-199: 29,787 / 29,799); 1,000 / 10,000 at 0.7: 9,222 / 10,264; 500 /
//!   1,500 at 0.8: 27,893 / 28,043 (cells 100-129: 43,218 / 43,604); OpenB: 21,125 / 21,249,
//!   fewer on 17 lists, more on none. The hybrid now needs no more machines than best fit on any
//!   shape tried, summed over its cells (a single cell can still need one or two more: the
//!   compaction's binary search over cell sizes lands differently). The Google trace does not
//!   move (its passes leave no production work displaced), nor does `fauxmaster replay` (no
//!   pass runs twice there).
//!
//! [`Weights::default`] is the hybrid; [`Weights::best_fit`] keeps only `waste` (and preemption),
//! for comparison.

use crate::cell::{CellModel, MachineIndex, BANDS};
use crate::priority::Priority;
use crate::resources::{Resource, Resources};

/// Weights of the scoring terms (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Weight of `waste` (best fit).
    pub pack: f64,
    /// Weight of `imbalance` (stranded resources).
    pub strand: f64,
    /// Weight of the preemption level.
    pub preempt: f64,
    /// Weight of `crowding` (failure-domain spreading).
    pub spread: f64,
}

impl Default for Weights {
    /// The hybrid: pack 1.0, strand 0.5, preempt 100.0, spread 0.25. Packing dominates; the
    /// imbalance term breaks near-ties towards machines whose dimensions fill evenly; spreading
    /// only decides between machines of similar fit; preemption is a last resort.
    fn default() -> Self {
        Weights { pack: 1.0, strand: 0.5, preempt: 100.0, spread: 0.25 }
    }
}

impl Weights {
    /// Plain best fit: waste only (preemption still a last resort).
    pub fn best_fit() -> Self {
        Weights { pack: 1.0, strand: 0.0, preempt: 100.0, spread: 0.0 }
    }
}

/// Preemption level of placing `request` at priority `p` on `m`: 0 if it fits in free resources,
/// else 1 + the highest band whose tasks must go (assuming lower bands go first).
pub fn preemption_level(cell: &CellModel, m: MachineIndex, p: Priority, request: &Resources) -> u32 {
    let own = CellModel::band_of(p);
    for b in 0..=own.min(BANDS - 1) {
        // what is left after preempting every band below b
        let avail = cell.available_at(m, p, b);
        if request.fits_in(&avail) {
            return b as u32;
        }
    }
    own as u32
}

/// The largest `crowding`: twice the class's fair share of a domain, or an empty machine kept
/// for the pass's large tasks.
pub const MAX_CROWDING: f64 = 2.0;

/// Score of placing `request` at priority `p` on machine `m`, given `crowding` in
/// 0..=[`MAX_CROWDING`].
pub fn score(cell: &CellModel, m: MachineIndex, p: Priority, request: &Resources, crowding: f64, w: &Weights) -> f64 {
    let level = preemption_level(cell, m, p, request);
    let cap = cell.capacity[m];
    let left = cell.free_for(m, p).saturating_sub(*request);
    let frac = |r: Resource| {
        let c = cap.get(r);
        if c == 0 {
            0.0
        } else {
            left.get(r) as f64 / c as f64
        }
    };
    let (cpu, ram, disk) = (frac(Resource::Cpu), frac(Resource::Ram), frac(Resource::Disk));
    let waste = (cpu + ram + disk) / 3.0;
    let imbalance = (cpu - ram).abs();
    w.pack * waste + w.strand * imbalance + w.preempt * level as f64 + w.spread * crowding
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{MachineId, Resident, TaskRef};
    use crate::constraint::Attributes;

    fn cell() -> CellModel {
        let mut c = CellModel::new();
        c.push(MachineId("big".into()), Resources::new(4000, 4 << 30, 100), Attributes::new(), "r1", true);
        c.push(MachineId("small".into()), Resources::new(1000, 1 << 30, 100), Attributes::new(), "r1", true);
        c
    }

    #[test]
    fn tighter_fit_scores_lower_and_preemption_dominates() {
        let mut c = cell();
        let w = Weights::default();
        let req = Resources::new(1000, 1 << 30, 0);
        assert!(score(&c, 1, Priority(100), &req, 0.0, &w) < score(&c, 0, Priority(100), &req, 0.0, &w));
        // fill the small machine with a free-band task: placing there now needs preemption
        c.add(1, Resident::new(TaskRef { job: 1, index: 0 }, Priority(0), Resources::new(1000, 0, 0)));
        assert_eq!(preemption_level(&c, 1, Priority(100), &req), 1);
        assert_eq!(preemption_level(&c, 0, Priority(100), &req), 0);
        assert!(score(&c, 0, Priority(100), &req, 1.0, &w) < score(&c, 1, Priority(100), &req, 0.0, &w));
    }

    #[test]
    fn imbalance_and_crowding_break_ties() {
        let c = cell();
        let w = Weights::default();
        // same waste on the same machine: crowding decides
        let req = Resources::new(500, 512 << 20, 0);
        assert!(score(&c, 0, Priority(0), &req, 0.0, &w) < score(&c, 0, Priority(0), &req, 0.5, &w));
        // a CPU-only request leaves RAM stranded: worse than a balanced one of equal total
        let cpu_only = Resources::new(1000, 0, 50);
        let balanced = Resources::new(500, 512 << 20, 50);
        assert!(score(&c, 1, Priority(0), &balanced, 0.0, &w) < score(&c, 1, Priority(0), &cpu_only, 0.0, &w));
        let bf = Weights::best_fit();
        assert_eq!(score(&c, 1, Priority(0), &balanced, 0.0, &bf), score(&c, 1, Priority(0), &cpu_only, 0.0, &bf));
    }
}
