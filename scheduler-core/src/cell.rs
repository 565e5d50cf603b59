//! The cell as the scheduler sees it: machines in arrays (struct of arrays), indexed by position.

use crate::constraint::Attributes;
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A machine's name in the cell (the Borglet's `--machine-id`, by default its hostname).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MachineId(pub String);

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Index of a machine inside one [`CellModel`] (0..len). Only meaningful for that model.
pub type MachineIndex = usize;

/// The machines of a cell, one entry per machine in each array, all arrays the same length.
///
/// Struct of arrays so that feasibility checking walks dense vectors. Built fresh (or updated in
/// place) by the caller before each scheduling pass; the scheduler only reads it, except that
/// [`crate::schedule`] adds the requests of the tasks it places to `allocated`.
#[derive(Debug, Clone, Default)]
pub struct CellModel {
    /// Machine ids.
    pub ids: Vec<MachineId>,
    /// Capacity of each machine.
    pub capacity: Vec<Resources>,
    /// Sum of the requests of the tasks bound to each machine.
    pub allocated: Vec<Resources>,
    /// Attributes of each machine.
    pub attributes: Vec<Attributes>,
    /// Whether each machine is up (a down machine takes no new task).
    pub up: Vec<bool>,
}

impl CellModel {
    /// An empty cell.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a machine and returns its index.
    pub fn push(
        &mut self,
        id: MachineId,
        capacity: Resources,
        allocated: Resources,
        attributes: Attributes,
        up: bool,
    ) -> MachineIndex {
        self.ids.push(id);
        self.capacity.push(capacity);
        self.allocated.push(allocated);
        self.attributes.push(attributes);
        self.up.push(up);
        self.ids.len() - 1
    }

    /// Number of machines.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the cell has no machine.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Capacity minus allocation of machine `i`.
    pub fn free(&self, i: MachineIndex) -> Resources {
        self.capacity[i].saturating_sub(self.allocated[i])
    }

    /// Index of the machine with this id (linear search; for tests and small cells).
    pub fn index_of(&self, id: &MachineId) -> Option<MachineIndex> {
        self.ids.iter().position(|m| m == id)
    }
}
