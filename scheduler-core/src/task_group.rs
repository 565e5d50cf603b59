//! What the scheduler is asked to place: the pending tasks of one job, grouped.

use crate::cell::MachineIndex;
use crate::constraint::Constraint;
use crate::priority::Priority;
use crate::resources::Resources;

/// The pending tasks of one job. All tasks of a job share one request and one set of
/// constraints.
#[derive(Debug, Clone)]
pub struct TaskGroup {
    /// The caller's number for the job; [`crate::TaskRef::job`] in the results.
    pub job_id: u32,
    /// Job name, for messages.
    pub name: String,
    /// Job priority; higher priorities are placed first.
    pub priority: Priority,
    /// Per-task request.
    pub request: Resources,
    /// Hard constraints; all must hold.
    pub constraints: Vec<Constraint>,
    /// At most one task of the job per machine.
    pub different_machine: bool,
    /// Task indices to place, ascending.
    pub tasks: Vec<u32>,
    /// Machines that already hold a task of this job, any order (for `different_machine`).
    pub occupied: Vec<MachineIndex>,
}
