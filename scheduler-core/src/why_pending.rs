//! "Why is my task pending?" as data: per-reason machine counts (Kubernetes style).

use crate::feasibility::Infeasible;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
