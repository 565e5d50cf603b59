//! The validated job spec, and the rules every spec must satisfy whichever way it arrives
//! (YAML file or API call).

use crate::health::{Health, Probe};
use scheduler_core::{Band, Constraint, ConstraintOp, Priority, Resources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most tasks one job may have.
pub const MAX_TASKS: u32 = 100_000;
/// Most arguments in a command.
pub const MAX_COMMAND_ARGS: usize = 1024;
/// Most bytes in one command argument or env value.
pub const MAX_ARG_BYTES: usize = 64 * 1024;
/// Most env entries.
pub const MAX_ENV: usize = 1024;
/// Most constraints.
pub const MAX_CONSTRAINTS: usize = 64;
/// Longest grace period, milliseconds (1 hour).
pub const MAX_GRACE_MS: u64 = 3_600_000;
/// Default grace period between SIGTERM and SIGKILL, milliseconds.
pub const DEFAULT_GRACE_MS: u64 = 10_000;

/// What a job's tasks do when they exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    /// Runs to completion: a task that exits 0 is done.
    Batch,
    /// Kept running: restarted per its restart policy.
    Service,
    /// No processes: `tasks` allocs, each reserving `resources` on a machine for the tasks of
    /// jobs that name this alloc set (Borg §2.4).
    AllocSet,
}

impl JobKind {
    /// `batch` or `service`.
    pub fn name(self) -> &'static str {
        match self {
            JobKind::Batch => "batch",
            JobKind::Service => "service",
            JobKind::AllocSet => "alloc_set",
        }
    }
}

/// When the Borglet restarts a task's process after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Never: the first exit is final.
    Never,
    /// Only after a non-zero exit or a signal.
    OnFailure,
    /// After any exit.
    Always,
}

impl RestartPolicy {
    /// `never`, `on-failure` or `always`.
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }

    /// The policy spelled `s` in a spec.
    pub fn from_name(s: &str) -> Option<Self> {
        [RestartPolicy::Never, RestartPolicy::OnFailure, RestartPolicy::Always].into_iter().find(|p| p.name() == s)
    }
}

/// Restart policy and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Most restarts before the task is left dead; `None` = unlimited.
    pub max_restarts: Option<u32>,
}

impl Restart {
    /// Default for a kind: batch restarts on failure up to 3 times; service always, unlimited.
    pub fn default_for(kind: JobKind) -> Restart {
        match kind {
            JobKind::Batch => Restart { policy: RestartPolicy::OnFailure, max_restarts: Some(3) },
            JobKind::Service | JobKind::AllocSet => Restart { policy: RestartPolicy::Always, max_restarts: None },
        }
    }
}

/// A validated job spec: N identical tasks (task index 0..N-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// `[a-z0-9-]{1,63}`, unique in the cell.
    pub name: String,
    /// Owner: `[a-z_][a-z0-9_.-]{0,31}`.
    pub user: String,
    /// Priority; its band is in [`Priority::band`].
    pub priority: Priority,
    /// Batch or service.
    pub kind: JobKind,
    /// Task count, 1..=[`MAX_TASKS`].
    pub tasks: u32,
    /// argv; `command[0]` is the program (a path, or a name looked up in PATH).
    pub command: Vec<String>,
    /// Extra environment, sorted by key.
    pub env: BTreeMap<String, String>,
    /// Per-task request: millicores, bytes, bytes. Also the task's cgroup limits.
    pub resources: Resources,
    /// Restart policy.
    pub restart: Restart,
    /// Hard constraints, all of which must hold on the machine.
    pub constraints: Vec<Constraint>,
    /// At most one task of this job per machine.
    pub different_machine: bool,
    /// SIGTERM-to-SIGKILL grace period, milliseconds.
    pub grace_period_ms: u64,
    /// Name of the alloc set whose allocs this job's tasks run in (empty: none).
    #[serde(default)]
    pub alloc_set: String,
    /// Rolling updates replace at most this many tasks at a time (>= 1).
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: u32,
    /// One task on every machine (like a Kubernetes DaemonSet); `tasks` is then ignored.
    #[serde(default)]
    pub per_machine: bool,
    /// Named ports each task gets from its machine's port range (`[a-z][a-z0-9-]{0,14}`, at most
    /// [`MAX_PORTS`], unique), in spec order; `resources.ports` is their count. The task finds
    /// its numbers in `BORG_PORT_<NAME>` ([`port_env`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Health checks the Borglet runs against each task.
    #[serde(default, skip_serializing_if = "Health::is_empty")]
    pub health: Health,
    /// Rolling updates replace the next task only once the new one has been ready this long,
    /// milliseconds (`update.min_ready`; 0: as soon as it is ready).
    #[serde(default)]
    pub min_ready_ms: u64,
    /// A replacement task not ready this long after it was replaced pauses the rollout,
    /// milliseconds (`update.progress_deadline`, default [`DEFAULT_PROGRESS_DEADLINE_MS`]).
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_ms: u64,
    /// Jobs that must have finished with every task succeeded before this job's tasks are
    /// placed (at most [`MAX_AFTER`], by name); if one fails, so does this job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Batch jobs: removed from the cell this long after they finished (every task dead),
    /// milliseconds (`ttl_after_finished`, default [`DEFAULT_TTL_AFTER_FINISHED_MS`]); the
    /// Borglets remove their sandboxes after `--sandbox-retention`.
    #[serde(default = "default_ttl_after_finished")]
    pub ttl_after_finished_ms: u64,
    /// Gang scheduling: every pending task is placed in the same scheduling pass, or none is
    /// (no partial placement holds resources; preemption evicts for the whole gang or nobody).
    #[serde(default)]
    pub gang: bool,
    /// Cron (`schedule: "*/5 * * * *"`, UTC; 6 fields: seconds first): the spec is a template,
    /// and each tick creates a run named `<name>-<unix seconds>`. `None`: an ordinary job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Cron: what a tick does while an earlier run is still live.
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Cron: finished runs kept (older ones are deleted).
    #[serde(default = "default_history")]
    pub history: u32,
}

/// A cron job's policy for a tick while an earlier run is still live (Kubernetes CronJob's
/// `concurrencyPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concurrency {
    /// Start another run.
    #[default]
    Allow,
    /// Skip the tick.
    Forbid,
    /// Kill the live runs, then start one.
    Replace,
}

impl Concurrency {
    /// `allow`, `forbid` or `replace`.
    pub fn name(self) -> &'static str {
        match self {
            Concurrency::Allow => "allow",
            Concurrency::Forbid => "forbid",
            Concurrency::Replace => "replace",
        }
    }

    /// The policy named `s`.
    pub fn from_name(s: &str) -> Option<Concurrency> {
        match s {
            "allow" | "" => Some(Concurrency::Allow),
            "forbid" => Some(Concurrency::Forbid),
            "replace" => Some(Concurrency::Replace),
            _ => None,
        }
    }
}

/// Default cron `history`: 3 finished runs.
pub const DEFAULT_HISTORY: u32 = 3;

fn default_history() -> u32 {
    DEFAULT_HISTORY
}

/// Longest name of a cron job: its runs append `-` and 10 digits of unix seconds.
pub const MAX_CRON_NAME: usize = 52;

/// Default `ttl_after_finished`: 24 hours.
pub const DEFAULT_TTL_AFTER_FINISHED_MS: u64 = 24 * 3600 * 1000;

fn default_ttl_after_finished() -> u64 {
    DEFAULT_TTL_AFTER_FINISHED_MS
}

/// Most jobs one job may wait for (`after`).
pub const MAX_AFTER: usize = 32;

/// Default `update.progress_deadline`: 10 minutes.
pub const DEFAULT_PROGRESS_DEADLINE_MS: u64 = 600_000;

fn default_progress_deadline() -> u64 {
    DEFAULT_PROGRESS_DEADLINE_MS
}

/// Most named ports per task.
pub const MAX_PORTS: usize = 16;

/// The environment variable a task finds port `name` in: `BORG_PORT_` and the name upper-cased
/// with `-` as `_` (`metrics-admin` -> `BORG_PORT_METRICS_ADMIN`).
pub fn port_env(name: &str) -> String {
    format!("BORG_PORT_{}", name.to_ascii_uppercase().replace('-', "_"))
}

fn valid_port_name(s: &str) -> bool {
    let mut c = s.chars();
    s.len() <= 15
        && c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || x == '-')
}

fn default_max_unavailable() -> u32 {
    1
}

/// One thing wrong with a spec: the field (a dotted path such as `resources.cpu` or
/// `constraints[1].op`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field path.
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Whether `s` is a valid job name: `[a-z0-9-]{1,63}`.
pub fn valid_job_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `s` is a valid user name: `[a-z_][a-z0-9_.-]{0,31}`.
pub fn valid_user_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c == b'_')
        && s.len() <= 32
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'))
}

fn valid_env_key(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl JobSpec {
    /// A job with what a YAML spec gets for every field it leaves out: no environment,
    /// constraints or alloc set, the kind's default restart policy, the default grace period ([`DEFAULT_GRACE_MS`]), rolling
    /// updates one task at a time. For programs that build specs (tests, benchmarks, load
    /// drivers); people write YAML ([`crate::parse_job_spec`]).
    pub fn new(
        name: impl Into<String>,
        user: impl Into<String>,
        priority: Priority,
        kind: JobKind,
        tasks: u32,
        command: Vec<String>,
        resources: Resources,
    ) -> JobSpec {
        JobSpec {
            name: name.into(),
            user: user.into(),
            priority,
            kind,
            tasks,
            command,
            env: BTreeMap::new(),
            resources,
            restart: Restart::default_for(kind),
            constraints: vec![],
            different_machine: false,
            grace_period_ms: DEFAULT_GRACE_MS,
            alloc_set: String::new(),
            max_unavailable: 1,
            per_machine: false,
            ports: vec![],
            health: Health::default(),
            min_ready_ms: 0,
            progress_deadline_ms: DEFAULT_PROGRESS_DEADLINE_MS,
            after: vec![],
            ttl_after_finished_ms: DEFAULT_TTL_AFTER_FINISHED_MS,
            gang: false,
            schedule: None,
            concurrency: Concurrency::Allow,
            history: DEFAULT_HISTORY,
        }
    }

    /// This spec with named `ports` (and `resources.ports` their count).
    pub fn with_ports(mut self, ports: &[&str]) -> JobSpec {
        self.ports = ports.iter().map(|p| p.to_string()).collect();
        self.resources.ports = self.ports.len() as u64;
        self
    }

    /// The job's priority band (valid specs always have one).
    pub fn band(&self) -> Band {
        self.priority.band().unwrap_or(Band::Free)
    }

    /// Every rule a spec must satisfy, checked all at once.
    ///
    /// Returns the problems found, in field order; empty when the spec is valid.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if !valid_job_name(&self.name) {
            p.push(Problem::new("name", format!("{:?} must match [a-z0-9-]{{1,63}}", self.name)));
        }
        if !valid_user_name(&self.user) {
            p.push(Problem::new("user", format!("{:?} must match [a-z_][a-z0-9_.-]{{0,31}}", self.user)));
        }
        if self.priority.band().is_none() {
            p.push(Problem::new(
                "priority",
                format!(
                    "{} is outside 0-399 (free 0-99, batch 100-199, production 200-299, monitoring 300-399)",
                    self.priority.0
                ),
            ));
        }
        if self.tasks == 0 || self.tasks > MAX_TASKS {
            p.push(Problem::new("tasks", format!("{} must be between 1 and {MAX_TASKS}", self.tasks)));
        }
        if self.kind == JobKind::AllocSet {
            if !self.command.is_empty() {
                p.push(Problem::new("command", "an alloc_set runs no command: leave it out"));
            }
            if !self.alloc_set.is_empty() || self.per_machine {
                p.push(Problem::new("kind", "an alloc_set cannot itself be in an alloc set or per_machine"));
            }
        } else if self.command.is_empty() || self.command[0].is_empty() {
            p.push(Problem::new(
                "command",
                "must name a program: a non-empty list such as [\"/bin/sh\", \"-c\", \"...\"]",
            ));
        }
        if !self.alloc_set.is_empty() && !valid_job_name(&self.alloc_set) {
            p.push(Problem::new(
                "alloc_set",
                format!("{:?} must name an alloc set: [a-z0-9-]{{1,63}}", self.alloc_set),
            ));
        }
        if !self.alloc_set.is_empty() && self.per_machine {
            p.push(Problem::new("per_machine", "a per_machine job cannot run in an alloc set"));
        }
        if self.ports.len() > MAX_PORTS {
            p.push(Problem::new("ports", format!("{} ports; at most {MAX_PORTS}", self.ports.len())));
        }
        for (i, name) in self.ports.iter().enumerate() {
            if !valid_port_name(name) {
                p.push(Problem::new(format!("ports[{i}]"), format!("{name:?} must match [a-z][a-z0-9-]{{0,14}}")));
            } else if self.ports[..i].contains(name) {
                p.push(Problem::new(format!("ports[{i}]"), format!("{name:?} is named twice")));
            }
        }
        if self.resources.ports != self.ports.len() as u64 {
            p.push(Problem::new("resources.ports", "must be the number of named ports"));
        }
        for (field, check) in [("health.liveness", &self.health.liveness), ("health.readiness", &self.health.readiness)]
        {
            let Some(c) = check else { continue };
            if let Some(port) = c.probe.port() {
                if !self.ports.iter().any(|p| p == port) {
                    p.push(Problem::new(
                        format!("{field}.port"),
                        format!("{port:?} is not one of the spec's ports ({})", self.ports.join(", ")),
                    ));
                }
            }
            match &c.probe {
                Probe::Http { path, .. } if !path.starts_with('/') => {
                    p.push(Problem::new(format!("{field}.path"), format!("{path:?} must start with /")))
                }
                Probe::Exec { command } if command.first().is_none_or(|c| c.is_empty()) => {
                    p.push(Problem::new(format!("{field}.command"), "must name a program"))
                }
                _ => {}
            }
            if c.period_ms < crate::health::MIN_PERIOD_MS {
                p.push(Problem::new(format!("{field}.period"), "must be at least 100ms"));
            }
            if c.timeout_ms == 0 || c.timeout_ms > c.period_ms {
                p.push(Problem::new(format!("{field}.timeout"), "must be more than 0 and at most the period"));
            }
            if c.failures == 0 {
                p.push(Problem::new(format!("{field}.failures"), "must be at least 1"));
            }
        }
        if self.kind == JobKind::AllocSet && !self.ports.is_empty() {
            p.push(Problem::new("ports", "an alloc_set reserves no ports: name them in the jobs that run in it"));
        }
        if self.progress_deadline_ms == 0 {
            p.push(Problem::new("update.progress_deadline", "must be more than 0"));
        }
        if self.after.len() > MAX_AFTER {
            p.push(Problem::new("after", format!("{} jobs; at most {MAX_AFTER}", self.after.len())));
        }
        for (i, a) in self.after.iter().enumerate() {
            if !valid_job_name(a) {
                p.push(Problem::new(format!("after[{i}]"), format!("{a:?} is not a job name ([a-z0-9-]{{1,63}})")));
            } else if *a == self.name {
                p.push(Problem::new(format!("after[{i}]"), "a job cannot wait for itself"));
            } else if self.after[..i].contains(a) {
                p.push(Problem::new(format!("after[{i}]"), format!("{a:?} is named twice")));
            }
        }
        if let Some(s) = &self.schedule {
            if let Err(e) = crate::schedule::Schedule::parse(s) {
                p.push(Problem::new(
                    "schedule",
                    format!("{s:?} is not a cron schedule (5 fields, or 6 with seconds): {e}"),
                ));
            }
            if self.kind != JobKind::Batch {
                p.push(Problem::new("schedule", "only batch jobs run on a schedule"));
            }
            if self.name.len() > MAX_CRON_NAME {
                p.push(Problem::new(
                    "name",
                    format!("a cron job's name has at most {MAX_CRON_NAME} characters (its runs add 11)"),
                ));
            }
        }
        if self.history > 100 {
            p.push(Problem::new("history", "at most 100 finished runs are kept"));
        }
        if self.gang && (self.per_machine || self.kind == JobKind::AllocSet) {
            p.push(Problem::new("gang", "a per_machine job or an alloc set cannot be a gang"));
        }
        if self.kind != JobKind::Batch && !self.after.is_empty() {
            p.push(Problem::new("after", "only batch jobs wait for others (a service or alloc set never finishes)"));
        }
        if self.max_unavailable == 0 {
            p.push(Problem::new("max_unavailable", "must be at least 1"));
        }
        if self.command.len() > MAX_COMMAND_ARGS {
            p.push(Problem::new("command", format!("{} arguments; at most {MAX_COMMAND_ARGS}", self.command.len())));
        }
        for (i, a) in self.command.iter().enumerate() {
            if a.len() > MAX_ARG_BYTES || a.contains('\0') {
                p.push(Problem::new(
                    format!("command[{i}]"),
                    format!("must be under {MAX_ARG_BYTES} bytes with no NUL byte"),
                ));
            }
        }
        if self.env.len() > MAX_ENV {
            p.push(Problem::new("env", format!("{} entries; at most {MAX_ENV}", self.env.len())));
        }
        for (k, v) in &self.env {
            if !valid_env_key(k) || k.starts_with("BORG_") {
                p.push(Problem::new(
                    format!("env.{k}"),
                    "keys must match [A-Za-z_][A-Za-z0-9_]* and not start with BORG_ (reserved)",
                ));
            }
            if v.len() > MAX_ARG_BYTES || v.contains('\0') {
                p.push(Problem::new(
                    format!("env.{k}"),
                    format!("value must be under {MAX_ARG_BYTES} bytes with no NUL byte"),
                ));
            }
        }
        if self.resources.cpu_millis == 0 {
            p.push(Problem::new("resources.cpu", "must be more than 0"));
        }
        if self.resources.ram_bytes == 0 {
            p.push(Problem::new("resources.ram", "must be more than 0"));
        }
        if self.constraints.len() > MAX_CONSTRAINTS {
            p.push(Problem::new(
                "constraints",
                format!("{} constraints; at most {MAX_CONSTRAINTS}", self.constraints.len()),
            ));
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if c.attribute.is_empty() {
                p.push(Problem::new(format!("constraints[{i}].attribute"), "must not be empty"));
            }
            let single = matches!(c.op, ConstraintOp::Eq | ConstraintOp::Ne);
            if single && c.values.len() != 1 {
                p.push(Problem::new(
                    format!("constraints[{i}].value"),
                    format!("`{}` takes exactly one value", c.op.symbol()),
                ));
            }
            if !single && c.values.is_empty() {
                p.push(Problem::new(
                    format!("constraints[{i}].value"),
                    format!("`{}` takes a list of one or more values", c.op.symbol()),
                ));
            }
        }
        if self.grace_period_ms > MAX_GRACE_MS {
            p.push(Problem::new("grace_period", format!("{} ms is more than the maximum of 1h", self.grace_period_ms)));
        }
        p
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> JobSpec {
        let command = vec!["/bin/true".into()];
        JobSpec::new("hello", "alice", Priority(100), JobKind::Batch, 3, command, Resources::new(250, 64 << 20, 0))
    }

    #[test]
    fn a_sample_spec_is_valid_and_each_rule_bites() {
        assert_eq!(sample().problems(), vec![]);
        let mut s = sample();
        s.name = "Hello_World".into();
        s.user = "9lives".into();
        s.priority = Priority(400);
        s.tasks = 0;
        s.command = vec![];
        s.env.insert("BORG_JOB".into(), "x".into());
        s.resources.cpu_millis = 0;
        s.constraints.push(Constraint { attribute: "arch".into(), op: ConstraintOp::Eq, values: vec![] });
        let fields: Vec<String> = s.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["name", "user", "priority", "tasks", "command", "env.BORG_JOB", "resources.cpu", "constraints[0].value"]
        );
    }

    #[test]
    fn names() {
        assert!(valid_job_name("web-frontend-2"));
        assert!(!valid_job_name(&"a".repeat(64)));
        assert!(!valid_job_name(""));
        assert!(valid_user_name("alice"));
        assert!(valid_user_name("_svc.batch-1"));
        assert!(!valid_user_name("Alice"));
    }
}
