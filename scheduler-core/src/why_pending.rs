//! "Why is my task pending?" as data: per-reason machine counts (Kubernetes style).

use crate::cell::CellModel;
use crate::equivalence::{classes, EquivalenceClass};
use crate::feasibility::{check, Infeasible};
use crate::task_group::TaskGroup;
use foldhash::HashSet;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Why the tasks of a group could not all be placed: how many machines failed for each reason
/// when the first unplaced task was tried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyPending {
    /// Machines in the cell.
    pub machines: usize,
    /// Reason text (see [`Infeasible`]'s Display) -> number of machines; sorted by text.
    pub reasons: BTreeMap<String, usize>,
}

impl WhyPending {
    /// Counts one machine that failed with `why`.
    pub fn add(&mut self, why: &Infeasible) {
        *self.reasons.entry(why.to_string()).or_default() += 1;
    }
}

impl fmt::Display for WhyPending {
    /// `0/3 machines fit: 2 insufficient cpu, 1 machine down` (largest count first).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.machines == 0 {
            return f.write_str("no machines in the cell");
        }
        let mut rs: Vec<_> = self.reasons.iter().collect();
        rs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = rs.iter().map(|(r, n)| format!("{n} {r}")).collect();
        write!(f, "0/{} machines fit: {}", self.machines, parts.join(", "))
    }
}

/// Why a class's task fits nowhere: one reason per machine, counted (parallel over machines).
pub(crate) fn why_pending(cell: &CellModel, class: &EquivalenceClass, taken: &HashSet<usize>) -> WhyPending {
    let counts = (0..cell.len())
        .into_par_iter()
        .filter_map(|m| check(cell, m, class, taken.contains(&m)).err())
        .fold(HashMap::<Infeasible, usize>::new, |mut acc, e| {
            *acc.entry(e).or_default() += 1;
            acc
        })
        .reduce(HashMap::new, |mut a, b| {
            for (k, v) in b {
                *a.entry(k).or_default() += v;
            }
            a
        });
    let mut why = WhyPending { machines: cell.len(), ..Default::default() };
    for (e, count) in counts {
        *why.reasons.entry(e.to_string()).or_default() += count;
    }
    why
}

/// Why no machine of `cell` can take one more task of `group` (a full scan, parallel over
/// machines): for callers that schedule with `explain: false` and want reasons for a few jobs.
pub fn explain(cell: &CellModel, group: &TaskGroup) -> WhyPending {
    let class = classes(std::slice::from_ref(group)).remove(0);
    let taken: HashSet<usize> = group.occupied.iter().copied().collect();
    why_pending(cell, &class, &taken)
}
