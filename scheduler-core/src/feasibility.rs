//! Feasibility checking: could this machine take one more task of this class? (Kubernetes: Filter.)

use crate::cell::{places_against_requests, CellModel, MachineIndex};
use crate::equivalence::EquivalenceClass;
use crate::resources::Resource;
use std::fmt;

/// Why a machine cannot take a task. One per machine: the first check that fails, in the order
/// machine state, constraints, different_machine, resources (cpu, ram, disk).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Infeasible {
    /// The machine is down.
    MachineDown,
    /// Constraint number `.0` (spec order) does not hold; `.1` is its text.
    Constraint(usize, String),
    /// The job already has a task there and asked for `different_machine`.
    DifferentMachine,
    /// Not enough of this resource, even counting what preempting lower bands would free.
    Insufficient(Resource),
    /// A batch or free task: not enough of this resource even counting the resources reclaimed
    /// from the machine's tasks (capacity minus reservations, Borg §5.5), and preemption.
    InsufficientReclaimed(Resource),
}

impl fmt::Display for Infeasible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Infeasible::MachineDown => f.write_str("machine down"),
            Infeasible::Constraint(_, text) => write!(f, "constraint {text} not met"),
            Infeasible::DifferentMachine => f.write_str("job already there (different_machine)"),
            Infeasible::Insufficient(r) => write!(f, "insufficient {}", r.name()),
            Infeasible::InsufficientReclaimed(r) => {
                write!(f, "insufficient {} even counting reclaimed resources", r.name())
            }
        }
    }
}

/// Checks whether machine `m` can take one more task of `class`; `taken` tells whether the
/// class's job already has a task on `m` (only consulted for `different_machine`).
///
/// Resources count what preempting lower-band tasks would free (Borg §3.2: feasibility at the
/// task's priority), against requests for production and monitoring, against reservations for
/// batch and free (Borg §5.5, [`CellModel::available_to`]). Errors: the first failing check, as an [`Infeasible`].
pub fn check(cell: &CellModel, m: MachineIndex, class: &EquivalenceClass, taken: bool) -> Result<(), Infeasible> {
    if !cell.up[m] {
        return Err(Infeasible::MachineDown);
    }
    if !class.constraints.is_empty() {
        if let Some((n, c)) = class.constraints.iter().enumerate().find(|(_, c)| !c.holds(&cell.attributes[m])) {
            return Err(Infeasible::Constraint(n, c.to_string()));
        }
    }
    if class.different_machine && taken {
        return Err(Infeasible::DifferentMachine);
    }
    match class.request.first_shortfall(&cell.available_to(m, class.priority)) {
        Some(r) if cell.reclaims(m) && !places_against_requests(class.priority) => {
            Err(Infeasible::InsufficientReclaimed(r))
        }
        Some(r) => Err(Infeasible::Insufficient(r)),
        None => Ok(()),
    }
}
