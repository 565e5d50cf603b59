//! The Borglet: the agent on every machine of a cell. It registers the machine with the
//! Borgmaster, answers the master's polls with the state of every task, and runs each task as
//! a real process in its own process group, sandbox directory and cgroup.
//!
//! [`runtime`] owns the task lifecycle; [`process`] and [`cgroup`] the OS details;
//! [`machine`] what the machine offers; [`lock`] one Borglet per machine; [`service`] the gRPC service the master polls; [`register`] registration with the master.

pub mod cgroup;
pub mod hollow;
pub mod lock;
pub mod machine;
pub mod metrics;
pub mod probe;
pub mod process;
pub mod register;
pub mod runtime;
pub mod service;
