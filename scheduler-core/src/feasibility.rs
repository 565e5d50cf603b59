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
    match first_failure(cell, m, class, taken) {
        None => Ok(()),
        Some(Failure::Down) => Err(Infeasible::MachineDown),
        Some(Failure::Constraint(n)) => Err(Infeasible::Constraint(n, class.constraints[n].to_string())),
        Some(Failure::DifferentMachine) => Err(Infeasible::DifferentMachine),
        Some(Failure::Short(r)) if cell.reclaims(m) && !places_against_requests(class.priority) => {
            Err(Infeasible::InsufficientReclaimed(r))
        }
        Some(Failure::Short(r)) => Err(Infeasible::Insufficient(r)),
    }
}

/// Whether [`check`] would pass, without building its error: the scheduler's hot path.
pub(crate) fn feasible(cell: &CellModel, m: MachineIndex, class: &EquivalenceClass, taken: bool) -> bool {
    first_failure(cell, m, class, taken).is_none()
}

/// The first failing check of [`check`], cheaply.
enum Failure {
    Down,
    Constraint(usize),
    DifferentMachine,
    Short(Resource),
}

fn first_failure(cell: &CellModel, m: MachineIndex, class: &EquivalenceClass, taken: bool) -> Option<Failure> {
    if !cell.up[m] {
        return Some(Failure::Down);
    }
    if !class.constraints.is_empty() {
        if let Some(n) = class.constraints.iter().position(|c| !c.holds(&cell.attributes[m])) {
            return Some(Failure::Constraint(n));
        }
    }
    if class.different_machine && taken {
        return Some(Failure::DifferentMachine);
    }
    class.request.first_shortfall(&cell.available_to(m, class.priority)).map(Failure::Short)
}
