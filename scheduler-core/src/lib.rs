//! scheduler-core: placement for a Borg cell.
//!
//! Pure functions over plain data: no I/O, no clock, no async. The Borgmaster builds a
//! [`CellModel`] (machines in arrays) and a list of [`TaskGroup`]s (the pending tasks of each job)
//! and calls [`schedule`], which returns [`Binding`]s and, for tasks that fit nowhere, a
//! [`WhyPending`] per job. The same code runs in fauxmaster.
//!
//! The pipeline follows Kubernetes' vocabulary: feasibility checking ([`feasibility`], "Filter"),
//! scoring ([`scoring`], "Score"), then bind.
//!
//! ```
//! use scheduler_core::*;
//! let mut cell = CellModel::new();
//! cell.push(MachineId("m1".into()), Resources::new(4000, 8 << 30, 100 << 30), Resources::ZERO, Attributes::new(), true);
//! let job = TaskGroup {
//!     job: "hello".into(), priority: Priority(100), request: Resources::new(250, 64 << 20, 0),
//!     constraints: vec![], different_machine: false, tasks: vec![0, 1, 2], occupied: vec![],
//! };
//! let placement = schedule(&mut cell, &[job]);
//! assert_eq!(placement.bindings.len(), 3);
//! assert_eq!(cell.allocated[0].cpu_millis, 750);
//! ```
#![deny(missing_docs)]

pub mod cell;
pub mod constraint;
pub mod feasibility;
pub mod priority;
pub mod resources;
pub mod schedule;
pub mod scoring;
pub mod task_group;
pub mod why_pending;

pub use cell::{CellModel, MachineId, MachineIndex};
pub use constraint::{Attributes, Constraint, ConstraintOp};
pub use feasibility::Infeasible;
pub use priority::{Band, Priority};
pub use resources::{format_bytes, Resource, Resources};
pub use schedule::{schedule, Binding, Placement, Unplaced};
pub use task_group::TaskGroup;
pub use why_pending::WhyPending;
