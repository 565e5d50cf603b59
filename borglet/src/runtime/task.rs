//! What one task run is: its spec from the master, its phase, its usage, and the restart rules
//! (policy and exponential backoff).

use crate::cgroup::TaskCgroup;
use borg_jobspec::{Health, JobKind, Restart, RestartPolicy, RunId, TaskId};
use scheduler_core::Resources;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// First restart delay; doubles per restart up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One task the master wants here: everything needed to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Job name.
    pub job: String,
    /// Task index.
    pub index: u32,
    /// Incarnation: a new one replaces the old run of the same task.
    pub incarnation: u64,
    /// Owner.
    pub user: String,
    /// Batch or service.
    pub kind: JobKind,
    /// argv.
    pub command: Vec<String>,
    /// Spec env (the Borglet adds PATH, HOME and the BORG_* variables).
    pub env: BTreeMap<String, String>,
    /// Limits: millicores, bytes, bytes.
    pub resources: Resources,
    /// Restart policy.
    pub restart: Restart,
    /// SIGTERM-to-SIGKILL grace, milliseconds.
    pub grace_period_ms: u64,
    /// Job version.
    pub job_version: u64,
    /// Its port numbers by name (from the master); it finds them in BORG_PORT_<NAME>.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// Its health checks.
    #[serde(default)]
    pub health: Health,
    /// Its priority (0-399); its cgroup's CPU weight follows the band
    /// ([`crate::cgroup::cpu_weight`]). 0 (free) in state written before it was kept.
    #[serde(default)]
    pub priority: i32,
}

impl TaskSpec {
    /// The task, `job/index`.
    pub fn task_id(&self) -> TaskId {
        TaskId::new(&self.job, self.index)
    }

    /// This run, `job/index#incarnation`.
    pub fn run_id(&self) -> RunId {
        RunId::new(&self.job, self.index, self.incarnation)
    }

    /// `job.index.incarnation`: the sandbox directory and cgroup name of this run.
    pub fn run_name(&self) -> String {
        format!("{}.{}.{}", self.job, self.index, self.incarnation)
    }
}

/// Where a run is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// A process is running.
    Running,
    /// It exited and will be restarted when the backoff ends.
    Backoff,
    /// No longer desired: SIGTERM sent, SIGKILL at the deadline.
    Stopping,
    /// It exited for good (reported dead until the master drops it).
    Exited,
}

impl Phase {
    /// The phase's name, the `phase` label of `borg_borglet_tasks`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Backoff => "backoff",
            Phase::Stopping => "stopping",
            Phase::Exited => "exited",
        }
    }
}

/// One run of one task incarnation.
#[derive(Debug)]
pub struct TaskRun {
    /// What to run.
    pub spec: TaskSpec,
    /// Lifecycle phase.
    pub phase: Phase,
    pub(super) child: Option<Child>,
    /// Leader pid (= process group id) while a process exists.
    pub pid: Option<u32>,
    pub(super) start_ticks: u64,
    /// Restarts so far.
    pub restarts: u32,
    /// Exit code of the last exit.
    pub exit_code: Option<i32>,
    /// Signal of the last exit.
    pub signal: Option<i32>,
    /// Human detail for the master.
    pub message: String,
    /// Backoff end or stop deadline.
    pub(super) deadline: Option<Instant>,
    pub(super) sigkilled: bool,
    pub(super) cgroup: Option<TaskCgroup>,
    /// Sandbox directory.
    pub sandbox: PathBuf,
    pub(super) last_cpu: Option<(Instant, f64)>,
    /// CPU use over the last sample interval, millicores.
    pub cpu_rate_millis: u64,
    /// OOM kills of its cgroup already accounted for (a new one at an exit means the kernel
    /// killed it for its memory limit).
    pub(super) oom_seen: u64,
    /// How its last process ended (`exited 1`, `unhealthy: ...`), shown while it runs again.
    pub(super) last_exit: Option<String>,
    /// Health check bookkeeping of its current process.
    pub(super) health: super::health::HealthState,
    /// Set when the Borglet stopped it to give memory back to production tasks (why): its
    /// exit ends the run (no restart), reported as reclaimed.
    pub reclaimed: Option<String>,
}

impl TaskRun {
    /// A run of `spec` in `sandbox` whose process has not started yet.
    pub(super) fn new(spec: TaskSpec, sandbox: PathBuf) -> TaskRun {
        TaskRun {
            spec,
            phase: Phase::Running,
            child: None,
            pid: None,
            start_ticks: 0,
            restarts: 0,
            exit_code: None,
            signal: None,
            message: String::new(),
            deadline: None,
            sigkilled: false,
            cgroup: None,
            sandbox,
            last_cpu: None,
            cpu_rate_millis: 0,
            oom_seen: 0,
            last_exit: None,
            health: Default::default(),
            reclaimed: None,
        }
    }
}

/// Usage of one run at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunUsage {
    /// CPU seconds since start.
    pub cpu_seconds: f64,
    /// CPU millicores averaged since the previous sample.
    pub cpu_millis: u64,
    /// Memory bytes.
    pub memory_bytes: u64,
}

pub(super) fn should_restart(r: &Restart, success: bool, restarts: u32) -> bool {
    let policy = match r.policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => !success,
        RestartPolicy::Always => true,
    };
    policy && r.max_restarts.is_none_or(|m| restarts < m)
}

pub(super) fn backoff(restarts: u32) -> Duration {
    BASE_BACKOFF.saturating_mul(1u32 << restarts.min(16)).min(MAX_BACKOFF)
}

/// Why a task the kernel's OOM killer killed died: starts with [`borg_jobspec::OOM_REASON`].
pub fn oom_text(limit_bytes: u64) -> String {
    format!(
        "{}: exceeded its memory limit of {} (killed by the kernel, signal 9)",
        borg_jobspec::OOM_REASON,
        scheduler_core::format_bytes(limit_bytes)
    )
}
