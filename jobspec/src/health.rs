//! Health checks (Borg §2.6; Kubernetes probes): what the Borglet runs against each task.
//! Liveness failing `failures` times in a row gets the task stopped and restarted per its
//! restart policy (reason `unhealthy`); readiness says whether it should get traffic.

use serde::{Deserialize, Serialize};

/// Default interval between two checks, milliseconds (10 s).
pub const DEFAULT_PERIOD_MS: u64 = 10_000;
/// Default time a check may take, milliseconds (1 s).
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
/// Default consecutive failures that make a task unhealthy (or not ready).
pub const DEFAULT_FAILURES: u32 = 3;
/// Shortest period accepted, milliseconds.
pub const MIN_PERIOD_MS: u64 = 100;

/// A task's health checks (boxed: most jobs have none, and a spec travels in every command).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Failing: the task is stopped and restarted per its restart policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Box<Check>>,
    /// Failing: the task is not ready (it keeps running). Without one a running task is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Box<Check>>,
}

impl Health {
    /// True when neither check is set.
    pub fn is_empty(&self) -> bool {
        self.liveness.is_none() && self.readiness.is_none()
    }
}

/// One check: what to probe and how often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What is probed.
    pub probe: Probe,
    /// Interval between checks, milliseconds.
    pub period_ms: u64,
    /// Time one check may take before it counts as failed, milliseconds.
    pub timeout_ms: u64,
    /// Consecutive failures that fail the check.
    pub failures: u32,
    /// Wait after the process starts before the first check, milliseconds.
    pub initial_delay_ms: u64,
}

impl Check {
    /// A check of `probe` with the defaults (10 s period, 1 s timeout, 3 failures, no delay).
    pub fn new(probe: Probe) -> Check {
        Check {
            probe,
            period_ms: DEFAULT_PERIOD_MS,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            failures: DEFAULT_FAILURES,
            initial_delay_ms: 0,
        }
    }
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// `GET path` on the task's named port on its machine; a status of 200-399 is healthy.
    Http {
        /// One of the spec's named ports.
        port: String,
        /// Absolute path, e.g. `/healthz`.
        path: String,
    },
    /// A TCP connection to the task's named port is accepted.
    Tcp {
        /// One of the spec's named ports.
        port: String,
    },
    /// A command run in the task's sandbox, as its user, with its environment; exit 0 is healthy.
    Exec {
        /// argv; `command[0]` is the program.
        command: Vec<String>,
    },
}

impl Probe {
    /// The named port it probes, for http and tcp.
    pub fn port(&self) -> Option<&str> {
        match self {
            Probe::Http { port, .. } | Probe::Tcp { port } => Some(port),
            Probe::Exec { .. } => None,
        }
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Http { port, path } => write!(f, "http GET :{port}{path}"),
            Probe::Tcp { port } => write!(f, "tcp :{port}"),
            Probe::Exec { command } => write!(f, "exec {}", command.join(" ")),
        }
    }
}
