//! fauxmaster (Borg's name for its simulator, Borg §3.4): the real scheduler-core over a cell
//! and a workload, for benchmarks and capacity planning.
//!
//! Inputs: Google's ClusterData2011-2 trace ([`trace`]) or the neutral CSV format
//! ([`neutral`]), or a synthetic C1M-shaped cell ([`synth`]). Runs ([`sim`]): repack the time-0
//! workload from scratch, replay the trace's events in passes, and cell compaction (Borg §5.1);
//! each optionally with resource reclamation (`--reclaim`, Borg §5.5; usage from [`usage`]).

pub mod neutral;
pub mod report;
pub mod sim;
pub mod synth;
pub mod trace;
pub mod usage;
pub mod workload;
