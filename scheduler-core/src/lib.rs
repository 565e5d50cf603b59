//! scheduler-core: placement for a Borg cell.
//!
//! Pure functions over plain data: no I/O, no clock, no async. The caller builds a
//! [`CellModel`] (machines in arrays, with what each priority band may use and the tasks already
//! there) and a list of [`TaskGroup`]s (the pending tasks of each job), and a [`Scheduler`]
//! returns [`Binding`]s, [`Preemption`]s and, for tasks that fit nowhere, a [`WhyPending`]. The
//! Borgmaster and fauxmaster run the same code.
//!
//! The pipeline, in Kubernetes' words: equivalence classes ([`equivalence`]), relaxed
//! randomization ([`mod@schedule`], the pass) with score caching (the candidate heap and per-class
//! cache, a private `candidates` module), feasibility checking ([`feasibility`], "Filter"),
//! hybrid scoring ([`scoring`], "Score"), preemption planning ([`preemption`], "PostFilter"),
//! then bind; reasons for what fits nowhere in [`why_pending`]. See Borg §3.2 and §3.4.
//!
//! ```
//! use scheduler_core::*;
//! let mut cell = CellModel::new();
//! cell.push(MachineId("m1".into()), Resources::new(4000, 8 << 30, 100 << 30), Attributes::new(), "rack1", true);
//! let job = TaskGroup {
//!     job_id: 0, name: "hello".into(), priority: Priority(100), request: Resources::new(250, 64 << 20, 0),
//!     constraints: vec![], different_machine: false, tasks: vec![0, 1, 2], occupied: vec![],
//! };
//! let mut scheduler = Scheduler::new(Params::default());
//! let placement = scheduler.schedule(&mut cell, &[job]);
//! assert_eq!(placement.bindings.len(), 3);
//! assert_eq!(cell.allocated(0).cpu_millis, 750);
//! ```
#![deny(missing_docs)]

mod candidates;
pub mod cell;
pub mod constraint;
pub mod equivalence;
pub mod fair;
pub mod feasibility;
pub mod preemption;
pub mod priority;
pub mod reclaim;
pub mod resources;
pub mod schedule;
pub mod scoring;
pub mod task_group;
pub mod why_pending;

pub use cell::{places_against_requests, CellModel, MachineId, MachineIndex, Resident, TaskRef};
pub use constraint::{Attributes, Constraint, ConstraintOp};
pub use equivalence::{ClassKey, EquivalenceClass};
pub use fair::{dominant_share, order_by_fair_share};
pub use feasibility::Infeasible;
pub use priority::{Band, Priority};
pub use resources::{format_bytes, format_cores, format_share, Resource, Resources};
pub use schedule::{schedule, Binding, Params, PassStats, Placement, Preemption, Scheduler, Unplaced};
pub use scoring::Weights;
pub use task_group::TaskGroup;
pub use why_pending::{explain, WhyPending};
