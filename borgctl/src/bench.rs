//! `borgctl bench`: a load driver. Applies many jobs concurrently through the real gRPC API and
//! measures, per task, apply acknowledged -> bound -> running (Kubernetes' scheduler_perf in
//! spirit: `SchedulingBasic` is `--jobs 1000 --tasks-per-job 1 --cpu 100m --ram 500Mi`).
//!
//! Times: the apply acknowledgement on this client's clock; bound and running from the
//! master's task records (its clock): run the driver on the master's host.

use borg_jobspec::{JobKind, JobSpec};
use borg_proto as pb;
use borg_proto::borgmaster_client::BorgmasterClient;
use scheduler_core::Priority;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

/// What to apply.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Job name prefix (`<prefix>-<i>`).
    pub prefix: String,
    /// Jobs.
    pub jobs: usize,
    /// Tasks per job.
    pub tasks_per_job: u32,
    /// Per-task request.
    pub resources: scheduler_core::Resources,
    /// Priority.
    pub priority: i32,
    /// Applies in flight at once.
    pub concurrency: usize,
    /// Give up waiting for running after this long.
    pub timeout: Duration,
    /// Stop waiting once no more tasks started for this long (`None`: wait for all of them).
    pub settle: Option<Duration>,
    /// The synthetic jobs' rolling-update budget (`max_unavailable`, >= 1): how many of a job's
    /// tasks a re-apply with a new request replaces at once.
    pub max_unavailable: u32,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({"p50_ms": pct(&v, 0.5), "p90_ms": pct(&v, 0.9), "p99_ms": pct(&v, 0.99), "max_ms": v.last().copied().unwrap_or(0.0)})
}

fn job(
    name: String,
    priority: i32,
    tasks: u32,
    resources: scheduler_core::Resources,
    different_machine: bool,
    max_unavailable: u32,
) -> pb::JobSpec {
    let command = vec!["/bin/sleep".into(), "86400".into()];
    let mut spec = JobSpec::new(name, "bench", Priority(priority), JobKind::Service, tasks, command, resources);
    spec.grace_period_ms = 1000;
    spec.different_machine = different_machine;
    spec.max_unavailable = max_unavailable.max(1);
    (&spec).into()
}

/// The synthetic jobs of `b`: `<prefix>-<i>`, identical.
pub fn synthetic_jobs(b: &BenchSpec) -> Vec<pb::JobSpec> {
    (0..b.jobs)
        .map(|i| job(format!("{}-{i}", b.prefix), b.priority, b.tasks_per_job, b.resources, false, b.max_unavailable))
        .collect()
}

/// Jobs from a tasks CSV in fauxmaster's neutral format
/// (`job,index,priority,cpu_millis,ram_bytes,disk_bytes,different_machine,...`): one job
/// `<prefix>-<job>` per distinct job, with as many tasks as it has rows and the largest request
/// of its rows (at least 1 millicore and 1 byte of RAM: specs may not ask for none).
///
/// Errors: the file cannot be read or a row is malformed (line named).
pub fn jobs_from_csv(path: &std::path::Path, prefix: &str) -> anyhow::Result<Vec<pb::JobSpec>> {
    let text = std::fs::read_to_string(path)?;
    let mut jobs: std::collections::BTreeMap<String, (i32, u32, scheduler_core::Resources, bool)> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || (n == 0 && f[0] == "job") {
            continue;
        }
        let num = |i: usize| -> anyhow::Result<u64> {
            f.get(i)
                .unwrap_or(&"0")
                .parse()
                .map_err(|_| anyhow::anyhow!("{}:{}: column {} is not a number", path.display(), n + 1, i + 1))
        };
        let r = scheduler_core::Resources::new(num(3)?, num(4)?, num(5)?);
        let e = jobs.entry(f[0].to_string()).or_insert((num(2)? as i32, 0, scheduler_core::Resources::ZERO, false));
        e.1 += 1;
        e.2 = scheduler_core::Resources::new(
            e.2.cpu_millis.max(r.cpu_millis),
            e.2.ram_bytes.max(r.ram_bytes),
            e.2.disk_bytes.max(r.disk_bytes),
        );
        e.3 |= matches!(f.get(6), Some(&"true") | Some(&"1"));
    }
    // specs require some CPU and RAM; trace rows of zero get the smallest unit
    let floor = |r: scheduler_core::Resources| {
        scheduler_core::Resources::new(r.cpu_millis.max(1), r.ram_bytes.max(1), r.disk_bytes)
    };
    Ok(jobs.into_iter().map(|(name, (p, n, r, dm))| job(format!("{prefix}-{name}"), p, n, floor(r), dm, 1)).collect())
}

/// Applies `specs` (at most `b.concurrency` at once), waits until every task runs, and returns
/// the report (JSON): `jobs`, `tasks`, `running` (less than `tasks` when the rest does not fit
/// and nothing started for 3 s), `apply_seconds`, `seconds` (first apply to last task
/// running), `tasks_per_second`, latencies `apply_to_bound` and `apply_to_running` (`p50_ms`,
/// `p90_ms`, `p99_ms`, `max_ms`).
///
/// Errors: an apply is refused, or the tasks are not all running within the timeout.
pub async fn run(client: BorgmasterClient<Channel>, b: &BenchSpec, specs: Vec<pb::JobSpec>) -> anyhow::Result<Value> {
    let limit = Arc::new(tokio::sync::Semaphore::new(b.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    let start_ms = now_ms();
    let total: u64 = specs.iter().map(|s| s.tasks as u64).sum();
    let n_jobs = specs.len();
    for spec in specs {
        let (mut c, limit, timeout) = (client.clone(), limit.clone(), b.timeout);
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let name = spec.name.clone();
            // UNAVAILABLE (no leader right now: an election) or no answer within the call's
            // timeout (a leader busy with a large cell): applying the same spec again is
            // idempotent, so retry, like any client of a replicated master, for up to 30 s from
            // the first UNAVAILABLE and within the bench's own timeout after slow answers
            let mut unavailable_since: Option<Instant> = None;
            let slow_until = Instant::now() + timeout;
            loop {
                let req = pb::ApplyJobRequest { spec: Some(spec.clone()), dry_run: false, expected_version: None };
                match c.apply_job(req).await {
                    Err(e)
                        if e.code() == tonic::Code::Unavailable
                            && unavailable_since.get_or_insert_with(Instant::now).elapsed() < ELECTION_RETRY =>
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) if timed_out(&e) && Instant::now() < slow_until => {}
                    r => return (name, r.map(|_| now_ms()).map_err(|e| e.message().to_string())),
                }
            }
        });
    }
    let mut acked = Vec::with_capacity(n_jobs);
    while let Some(r) = set.join_next().await {
        let (name, r) = r?;
        acked.push((name.clone(), r.map_err(|e| anyhow::anyhow!("apply {name}: {e}"))?));
    }
    let apply_seconds = start.elapsed().as_secs_f64();
    // wait until every task runs, or until no more start for `settle` (the rest does not fit)
    let mut c = client.clone();
    let (mut last, mut since) = (0u64, Instant::now());
    let mut running_now;
    loop {
        let asked = Instant::now();
        let jobs = match c.list_jobs(pb::ListJobsRequest {}).await {
            Ok(r) => r.into_inner().jobs,
            // an election, or a master too busy to answer in time: ask again
            Err(e) if (e.code() == tonic::Code::Unavailable || timed_out(&e)) && start.elapsed() < b.timeout => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // every task's record is summed to answer: in a cell of 1,000,000 tasks an answer takes
        // the master a good part of a second, so ask at most a fifth of the time
        let pause = (asked.elapsed() * 4).max(Duration::from_millis(20));
        let running: u64 = jobs
            .iter()
            .filter(|j| j.spec.as_ref().is_some_and(|s| s.name.starts_with(&format!("{}-", b.prefix))))
            .map(|j| j.running as u64)
            .sum();
        running_now = running;
        if running >= total {
            break;
        }
        if running != last {
            (last, since) = (running, Instant::now());
        } else if b.settle.is_some_and(|s| since.elapsed() > s) && running > 0 {
            break;
        }
        if start.elapsed() > b.timeout {
            anyhow::bail!("only {running} of {total} tasks running after {:?}", b.timeout);
        }
        tokio::time::sleep(pause).await;
    }
    let (mut to_bound, mut to_running) = (Vec::new(), Vec::new());
    let mut last_running = start_ms;
    for (name, ack) in &acked {
        for t in c.list_tasks(pb::ListTasksRequest { job: name.clone() }).await?.into_inner().tasks {
            if t.state != pb::TaskState::Running as i32 {
                continue;
            }
            to_bound.push((t.scheduled_ms - ack).max(0) as f64);
            to_running.push((t.state_since_ms - ack).max(0) as f64);
            last_running = last_running.max(t.state_since_ms);
        }
    }
    let seconds = (last_running - start_ms).max(1) as f64 / 1000.0;
    Ok(json!({
        "jobs": n_jobs,
        "tasks": total,
        "running": running_now,
        "concurrency": b.concurrency,
        "apply_seconds": apply_seconds,
        "seconds": seconds,
        "tasks_per_second": running_now as f64 / seconds,
        "apply_to_bound": summary(to_bound),
        "apply_to_running": summary(to_running),
    }))
}

/// How long an apply is retried after the master first answered UNAVAILABLE (no leader).
const ELECTION_RETRY: Duration = Duration::from_secs(30);

/// Whether a call failed for want of an answer in time (the channel's timeout, or the
/// server's deadline), not because it was refused.
fn timed_out(e: &tonic::Status) -> bool {
    matches!(e.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled)
        || e.message().contains("Timeout expired")
}

/// Watch fan-out (issue 16's benchmark): opens `watchers` WatchEndpoints streams on job
/// `spec.name` (already running `spec.tasks` tasks), spread over `channels` (HTTP/2
/// connections), then `changes` times adds one task to the job and measures, per watcher, the
/// time until its stream shows the new task ready. Returns JSON: `watchers`, `changes`,
/// `ready_to_seen` (from the task's `ready_since_ms` on the master's clock: readiness committed
/// -> this watcher saw it) and `apply_to_seen` (apply acknowledged -> seen), each
/// `p50_ms`/`p90_ms`/`p99_ms`/`max_ms` over watchers x changes.
///
/// Errors: a watch or apply is refused, or a watcher sees no change within `timeout`.
pub async fn watch_fanout(
    channels: Vec<Channel>,
    mut spec: pb::JobSpec,
    watchers: usize,
    changes: u32,
    timeout: Duration,
) -> anyhow::Result<Value> {
    anyhow::ensure!(!channels.is_empty(), "no connection to watch over");
    let name = spec.name.clone();
    // each watcher reports (watcher, 1 + the highest task index it sees ready, when)
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, u32, i64)>();
    let mut streams = tokio::task::JoinSet::new();
    for w in 0..watchers {
        let mut c = BorgmasterClient::new(channels[w % channels.len()].clone());
        let req = pb::WatchEndpointsRequest { name: name.clone(), since_index: 0 };
        let mut stream = c.watch_endpoints(req).await?.into_inner();
        let tx = seen_tx.clone();
        streams.spawn(async move {
            while let Ok(Some(r)) = stream.message().await {
                let top = r.endpoints.iter().filter(|e| e.ready).map(|e| e.index + 1).max().unwrap_or(0);
                if tx.send((w, top, now_ms())).is_err() {
                    return;
                }
            }
        });
    }
    drop(seen_tx);
    let mut best = vec![0u32; watchers];
    wait_seen(&mut seen_rx, &mut best, spec.tasks, timeout).await?;
    let mut c = BorgmasterClient::new(channels[0].clone());
    let (mut ready_to_seen, mut apply_to_seen) = (Vec::new(), Vec::new());
    for _ in 0..changes {
        spec.tasks += 1;
        let req = pb::ApplyJobRequest { spec: Some(spec.clone()), dry_run: false, expected_version: None };
        c.apply_job(req).await?;
        let acked = now_ms();
        let at = wait_seen(&mut seen_rx, &mut best, spec.tasks, timeout).await?;
        let tasks = c.list_tasks(pb::ListTasksRequest { job: name.clone() }).await?.into_inner().tasks;
        let ready_ms = tasks.iter().find(|t| t.index == spec.tasks - 1).map_or(acked, |t| t.ready_since_ms);
        for ms in at {
            ready_to_seen.push((ms - ready_ms).max(0) as f64);
            apply_to_seen.push((ms - acked).max(0) as f64);
        }
    }
    streams.abort_all();
    Ok(json!({
        "watchers": watchers,
        "changes": changes,
        "ready_to_seen": summary(ready_to_seen),
        "apply_to_seen": summary(apply_to_seen),
    }))
}

/// Reads watcher reports until every watcher has seen `want` tasks ready; returns, per
/// watcher, when it first did (ms since the epoch; 0 for one that already had).
async fn wait_seen(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(usize, u32, i64)>,
    best: &mut [u32],
    want: u32,
    timeout: Duration,
) -> anyhow::Result<Vec<i64>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut at = vec![0i64; best.len()];
    while best.iter().any(|&b| b < want) {
        let (w, top, ms) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("a watcher did not see task {} ready within {timeout:?}", want - 1))?
            .ok_or_else(|| anyhow::anyhow!("a watch stream ended"))?;
        if top >= want && best[w] < want {
            at[w] = ms;
        }
        best[w] = best[w].max(top);
    }
    Ok(at)
}
