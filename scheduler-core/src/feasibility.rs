//! Feasibility checking: could this machine take one more task of this group? (Kubernetes: Filter.)

use crate::cell::{CellModel, MachineIndex};
use crate::resources::Resource;
use crate::task_group::TaskGroup;
use std::fmt;

/// Why a machine cannot take a task. One per machine: the first check that fails, in the order
/// machine state, constraints, different_machine, resources (cpu, ram, disk).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Infeasible {
    /// The machine is down.
    MachineDown,
    /// Constraint number `.0` of the group (spec order) does not hold; `.1` is its text.
    Constraint(usize, String),
    /// The job already has a task there and asked for `different_machine`.
    DifferentMachine,
    /// Not enough free of this resource.
    Insufficient(Resource),
}

impl fmt::Display for Infeasible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Infeasible::MachineDown => f.write_str("machine down"),
            Infeasible::Constraint(_, text) => write!(f, "constraint {text} not met"),
            Infeasible::DifferentMachine => f.write_str("job already there (different_machine)"),
            Infeasible::Insufficient(r) => write!(f, "insufficient {}", r.name()),
        }
    }
}

/// Checks whether machine `i` can take one more task of `group`, given `taken[i]` (true where the
/// group's job already has a task, for `different_machine`).
///
/// Errors: the first failing check, as an [`Infeasible`].
pub fn check(cell: &CellModel, i: MachineIndex, group: &TaskGroup, taken: &[bool]) -> Result<(), Infeasible> {
    if !cell.up[i] {
        return Err(Infeasible::MachineDown);
    }
    if let Some((n, c)) = group.constraints.iter().enumerate().find(|(_, c)| !c.holds(&cell.attributes[i])) {
        return Err(Infeasible::Constraint(n, c.to_string()));
    }
    if group.different_machine && taken[i] {
        return Err(Infeasible::DifferentMachine);
    }
    match group.request.first_shortfall(&cell.free(i)) {
        Some(r) => Err(Infeasible::Insufficient(r)),
        None => Ok(()),
    }
}
