//! The Borgmaster: owns the cell state (jobs, tasks, machines), replicates every accepted command
//! to a quorum of replicas (openraft, each replica's log in RocksDB) before answering, schedules
//! pending tasks with scheduler-core, and polls every Borglet through its link shards.
//!
//! Layers, each importing only from its own layer or below (checked by `tests/tests/layers.rs`;
//! docs/ARCHITECTURE.md has the map):
//!
//! 1. pure: [`state`] (the cell state machine), [`liveness`] (when a machine is down),
//!    [`snapshot`] (the scheduler's input from the state), [`soft`] (what polls observed),
//!    [`usage`] (cell accounting), [`convert`] (state to API messages), [`tls`];
//! 2. [`raft`]: replicates and persists the log and snapshots (the only module that names
//!    openraft); [`metrics`]: every metric's name and the scrape-time refresh;
//! 3. [`master`]: the cell state, `propose`, leadership and the Raft group behind methods;
//! 4. the leader's duties: [`scheduler_loop`], [`link_shard`], started by [`leader`];
//! 5. the surfaces: [`service`] (gRPC), [`status`] and [`http`] (status page, `/metrics`),
//!    [`dns`] (the cell's names over DNS).

pub mod convert;
pub mod dns;
pub mod http;
pub mod leader;
pub mod link_shard;
pub mod liveness;
pub mod master;
pub mod metrics;
pub mod raft;
pub mod reservation;
pub mod scheduler_loop;
pub mod service;
pub mod snapshot;
pub mod soft;
pub mod state;
pub mod status;
pub mod tls;
pub mod usage;
