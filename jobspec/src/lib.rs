//! Job specs: the YAML format users write, the rules every spec must satisfy, and conversion to
//! and from the gRPC API's `JobSpec`.
//!
//! ```
//! let text = "name: hello\nuser: alice\npriority: batch\nkind: batch\ntasks: 3\n\
//!             command: [/bin/echo, hi]\nresources: {cpu: 250m, ram: 64Mi}\n";
//! let spec = borg_jobspec::parse_job_spec("hello.yaml", text).unwrap();
//! assert_eq!(spec.resources.cpu_millis, 250);
//!
//! let bad = text.replace("tasks: 3", "tasks: 0");
//! let err = borg_jobspec::parse_job_spec("hello.yaml", &bad).unwrap_err();
//! assert_eq!(err.to_string(), "hello.yaml:5:8: tasks: 0 must be between 1 and 100000");
//! ```
#![deny(missing_docs)]

pub mod convert;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod job;
pub mod quantity;
pub mod task_id;
pub mod yaml;

pub use convert::ConvertError;

/// The reason a task killed by the kernel's OOM killer dies with (the start of its message, from
/// the Borglet, which reads its cgroup's memory events): `oom: exceeded its memory limit of
/// 16Mi ...`. Shared by the Borglet that writes it and the master's metrics that count it.
pub const OOM_REASON: &str = "oom";

/// How a task's process ended, as the Borglet reports it and the master records it when the
/// Borglet sent no message: `exited 0`, `killed by signal 9`, or `exited` when neither is known.
pub fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(s)) => format!("killed by signal {s}"),
        (Some(c), None) => format!("exited {c}"),
        (None, None) => "exited".into(),
    }
}
pub use health::{Check, Health, Probe};
pub use job::{Concurrency, JobKind, JobSpec, Problem, Restart, RestartPolicy};
pub use task_id::{RunId, RunKey, TaskId};
pub mod schedule;
pub use yaml::{field_position, parse_job_spec, LocatedProblem, SpecErrors};
