//! The Borglet's Prometheus metrics: every name, help text and unit is declared here. Per-task
//! series carry `job` and `index` labels and vanish 30 s after the task leaves the machine.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use scheduler_core::Resources;
use std::time::Duration;

/// Time to handle one poll from the master.
pub const POLL_SECONDS: &str = "borg_borglet_poll_duration_seconds";
/// OOM kills of tasks, by job (counted by the runtime when it reaps one).
pub const OOM_KILLS: &str = "borg_borglet_oom_kills_total";
/// Batch and free tasks stopped to give memory back to production, by job.
pub const RECLAIMED: &str = "borg_borglet_reclaimed_total";

/// Installs the global recorder; returns the handle that renders `/metrics`.
///
/// Errors: a recorder is already installed.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
        )?
        .idle_timeout(
            metrics_util::MetricKindMask::GAUGE | metrics_util::MetricKindMask::COUNTER,
            Some(Duration::from_secs(30)),
        )
        .install_recorder()?;
    describe_counter!(
        "borg_borglet_task_cpu_seconds_total",
        Unit::Seconds,
        "CPU time used by the task's processes (whole seconds)."
    );
    describe_gauge!(
        "borg_borglet_task_cpu_usage_cores",
        Unit::Count,
        "CPU the task used since the previous sample, in cores."
    );
    describe_gauge!(
        "borg_borglet_task_memory_bytes",
        Unit::Bytes,
        "Memory in use by the task (its cgroup, or its process without one)."
    );
    describe_counter!(
        "borg_borglet_task_restarts_total",
        Unit::Count,
        "Restarts of the task by this Borglet in its current incarnation."
    );
    describe_counter!(
        RECLAIMED,
        Unit::Count,
        "Batch and free tasks this Borglet stopped because the machine's tasks neared its RAM capacity (memory-pressure eviction, reason reclaimed), by job."
    );
    describe_counter!(
        OOM_KILLS,
        Unit::Count,
        "Task exits on this machine caused by the kernel's OOM killer (their cgroups' memory events), by job."
    );
    describe_gauge!(
        "borg_borglet_tasks",
        Unit::Count,
        "Task runs on this machine by phase (running, backoff, stopping, exited)."
    );
    describe_gauge!("borg_borglet_capacity_cpu_cores", Unit::Count, "CPU this machine offers to the cell.");
    describe_gauge!("borg_borglet_capacity_ram_bytes", Unit::Bytes, "RAM this machine offers to the cell.");
    describe_gauge!(
        "borg_borglet_master_connected",
        Unit::Count,
        "1 if the Borgmaster polled within the last 10 s, else 0 (tasks keep running either way)."
    );
    describe_gauge!(
        "borg_borglet_last_poll_age_seconds",
        Unit::Seconds,
        "Seconds since the Borgmaster last polled (-1 if never)."
    );
    describe_histogram!(POLL_SECONDS, Unit::Seconds, "Time to handle one poll: converge, sample usage, answer.");
    Ok(handle)
}

/// One task run's series at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSample {
    /// Job name (the `job` label).
    pub job: String,
    /// Task index (the `index` label).
    pub index: u32,
    /// CPU seconds since the run started.
    pub cpu_seconds: f64,
    /// CPU millicores averaged since the previous sample.
    pub cpu_millis: u64,
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Restarts in its current incarnation.
    pub restarts: u32,
    /// Its phase's name (`running`, `backoff`, `stopping`, `exited`).
    pub phase: &'static str,
}

/// Phases `borg_borglet_tasks` always exports (0 when none), in order.
pub const PHASES: [&str; 4] = ["running", "backoff", "stopping", "exited"];

/// Sets every scrape-time series: the machine's `capacity`, seconds since the last poll
/// (`None`: never polled) and one sample per task run.
pub fn refresh(capacity: Resources, last_poll_age: Option<f64>, tasks: &[TaskSample]) {
    gauge!("borg_borglet_capacity_cpu_cores").set(capacity.cpu_millis as f64 / 1000.0);
    gauge!("borg_borglet_capacity_ram_bytes").set(capacity.ram_bytes as f64);
    gauge!("borg_borglet_last_poll_age_seconds").set(last_poll_age.unwrap_or(-1.0));
    gauge!("borg_borglet_master_connected").set(if last_poll_age.is_some_and(|a| a < 10.0) { 1.0 } else { 0.0 });
    for t in tasks {
        let labels = [("job", t.job.clone()), ("index", t.index.to_string())];
        counter!("borg_borglet_task_cpu_seconds_total", &labels).absolute(t.cpu_seconds as u64);
        gauge!("borg_borglet_task_cpu_usage_cores", &labels).set(t.cpu_millis as f64 / 1000.0);
        gauge!("borg_borglet_task_memory_bytes", &labels).set(t.memory_bytes as f64);
        counter!("borg_borglet_task_restarts_total", &labels).absolute(t.restarts as u64);
    }
    for phase in PHASES {
        let n = tasks.iter().filter(|t| t.phase == phase).count();
        gauge!("borg_borglet_tasks", "phase" => phase).set(n as f64);
    }
}
