//! The Borgmaster: owns the cell state (jobs, tasks, machines), replicates every accepted command
//! to a quorum of replicas (openraft, each replica's log in RocksDB) before answering, schedules
//! pending tasks with scheduler-core, and polls every Borglet through its link shards.
//!
//! Layout: [`state`] is the pure cell state machine; [`raft`] replicates and persists its log and
//! snapshots; [`master`] ties state and Raft together; [`scheduler_loop`] and [`link_shard`] are
//! the leader's background work ([`liveness`] decides when a machine is down); [`service`] is the gRPC API.

pub mod convert;
pub mod http;
pub mod link_shard;
pub mod liveness;
pub mod master;
pub mod metrics;
pub mod raft;
pub mod scheduler_loop;
pub mod service;
pub mod state;
pub mod status;
pub mod tls;
pub mod usage;
