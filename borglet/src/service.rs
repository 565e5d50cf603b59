//! The Borglet gRPC service (`borg.v1.Borglet`): the master's poll and log reads.

use crate::runtime::{Phase, Runtime, TaskSpec};
use borg_jobspec::convert::{check_from_pb, kind_from_pb, resources_from_pb, resources_to_pb, restart_from_pb};
use borg_jobspec::{Health, JobKind, Restart, TaskId};
use borg_proto as pb;
use scheduler_core::Resources;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tonic::{Request, Response, Status};

/// Default tail for log reads, bytes.
pub const DEFAULT_TAIL: u64 = 64 * 1024;
/// Largest tail for log reads, bytes.
pub const MAX_TAIL: u64 = 4 * 1024 * 1024;

/// Shared Borglet state: the runtime and when the master last polled.
pub struct Borglet {
    /// This machine's id.
    pub machine_id: String,
    /// The task runtime.
    pub runtime: Mutex<Runtime>,
    /// Time of the last poll from the master.
    pub last_poll: Mutex<Option<Instant>>,
    /// Whether callers must present a replica certificate of the cell (off with --insecure).
    pub auth: bool,
}

/// The rule Borglets apply to every call with auth on.
pub const ONLY_REPLICAS: &str = "a Borglet answers only the cell's Borgmaster replicas";

impl Borglet {
    /// Locks the runtime.
    pub fn runtime(&self) -> std::sync::MutexGuard<'_, Runtime> {
        self.runtime.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the scrape-time metrics from this Borglet's state (a machine of `capacity`).
    pub fn refresh_metrics(&self, capacity: scheduler_core::Resources) {
        let age = self.last_poll.lock().unwrap_or_else(|e| e.into_inner()).map(|t| t.elapsed().as_secs_f64());
        let mut rt = self.runtime();
        let usage = rt.sample_usage(Instant::now());
        let samples: Vec<crate::metrics::TaskSample> = rt
            .runs()
            .zip(usage)
            .map(|(r, u)| crate::metrics::TaskSample {
                job: r.spec.job.clone(),
                index: r.spec.index,
                cpu_seconds: u.cpu_seconds,
                cpu_millis: u.cpu_millis,
                memory_bytes: u.memory_bytes,
                restarts: r.restarts,
                phase: r.phase.as_str(),
            })
            .collect();
        crate::metrics::refresh(capacity, age, &samples);
    }
}

/// The gRPC service over a shared [`Borglet`].
pub struct BorgletService(pub Arc<Borglet>);

fn spec_from_pb(a: &pb::TaskAssignment) -> TaskSpec {
    let kind = kind_from_pb(a.kind).unwrap_or(JobKind::Batch);
    TaskSpec {
        job: a.job.clone(),
        index: a.index,
        incarnation: a.incarnation,
        user: a.user.clone(),
        kind,
        command: a.command.clone(),
        env: a.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        resources: resources_from_pb(a.resources.as_ref()),
        restart: a.restart.as_ref().and_then(restart_from_pb).unwrap_or_else(|| Restart::default_for(kind)),
        grace_period_ms: a.grace_period_ms,
        job_version: a.job_version,
        ports: a.ports.iter().filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?))).collect(),
        health: Health {
            liveness: a.liveness.as_ref().and_then(check_from_pb).map(Box::new),
            readiness: a.readiness.as_ref().and_then(check_from_pb).map(Box::new),
        },
        priority: a.priority,
    }
}

/// Records the poll's handling time when dropped.
struct PollTimer(Instant);

impl Drop for PollTimer {
    fn drop(&mut self) {
        metrics::histogram!(crate::metrics::POLL_SECONDS).record(self.0.elapsed().as_secs_f64());
    }
}

#[tonic::async_trait]
impl pb::borglet_server::Borglet for BorgletService {
    async fn poll(&self, req: Request<pb::PollRequest>) -> Result<Response<pb::PollResponse>, Status> {
        borg_rpc::auth::authenticate(&req, self.0.auth, &[borg_rpc::auth::Role::Replica], ONLY_REPLICAS)?;
        let req = req.into_inner();
        if req.machine_id != self.0.machine_id {
            return Err(Status::invalid_argument(format!(
                "poll for machine {:?} reached machine {:?}",
                req.machine_id, self.0.machine_id
            )));
        }
        *self.0.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let now = Instant::now();
        let _timer = PollTimer(now);
        let mut rt = self.0.runtime();
        if req.full {
            rt.set_desired(req.version, &req.cell, req.tasks.iter().map(spec_from_pb).collect());
        } else if req.base_version != 0 {
            let removed: Vec<TaskId> = req.removed.iter().map(|r| TaskId::new(&r.job, r.index)).collect();
            rt.apply_delta(
                req.base_version,
                req.version,
                &req.cell,
                &removed,
                req.tasks.iter().map(spec_from_pb).collect(),
            );
        } else if req.version == rt.applied_version {
            // the master confirms the desired set this Borglet reloaded
            rt.desired_confirmed();
        }
        rt.tick(now);
        let usage = rt.sample_usage(now);
        let mut total = Resources::ZERO;
        let tasks = rt
            .runs()
            .zip(usage)
            .map(|(r, u)| {
                let used = Resources::new(u.cpu_millis, u.memory_bytes, 0);
                total = total.saturating_add(used);
                pb::TaskStatus {
                    job: r.spec.job.clone(),
                    index: r.spec.index,
                    incarnation: r.spec.incarnation,
                    state: if r.phase == Phase::Exited { pb::TaskState::Dead } else { pb::TaskState::Running } as i32,
                    exit_code: r.exit_code,
                    signal: r.signal,
                    restarts: r.restarts,
                    pid: r.pid,
                    message: r.message.clone(),
                    usage: Some(resources_to_pb(used)),
                    cpu_seconds: u.cpu_seconds,
                    ready: r.ready(),
                    reclaimed: r.phase == Phase::Exited && r.reclaimed.is_some(),
                }
            })
            .collect::<Vec<_>>();
        let tasks_unchanged =
            req.status_version != 0 && req.status_version == pb::status_digest(tasks.iter().map(pb::StatusKey::of));
        let task_usage = (tasks_unchanged && req.want_task_usage).then(|| pb::usage_columns(&tasks));
        Ok(Response::new(pb::PollResponse {
            machine_id: self.0.machine_id.clone(),
            applied_version: rt.applied_version,
            tasks: if tasks_unchanged { Vec::new() } else { tasks },
            usage: Some(resources_to_pb(total)),
            tasks_unchanged,
            task_usage,
        }))
    }

    async fn read_logs(&self, req: Request<pb::ReadLogsRequest>) -> Result<Response<pb::TaskLogsResponse>, Status> {
        borg_rpc::auth::authenticate(&req, self.0.auth, &[borg_rpc::auth::Role::Replica], ONLY_REPLICAS)?;
        let r = req.into_inner();
        let sandbox = self.0.runtime().sandbox_of(&r.job, r.index).ok_or_else(|| {
            Status::not_found(format!("task {}/{} has no sandbox on {}", r.job, r.index, self.0.machine_id))
        })?;
        let file = match pb::LogStream::try_from(r.stream) {
            Ok(pb::LogStream::Stderr) => "stderr",
            _ => "stdout",
        };
        let tail = match r.tail_bytes {
            0 => DEFAULT_TAIL,
            n => n.min(MAX_TAIL),
        };
        let path = sandbox.join(file);
        let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(tail)))?;
            let mut buf = Vec::new();
            f.take(tail).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(format!("reading {file}: {e}")))?;
        Ok(Response::new(pb::TaskLogsResponse { machine: self.0.machine_id.clone(), data }))
    }

    type FollowLogsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::TaskLogsResponse, Status>>;

    async fn follow_logs(&self, req: Request<pb::ReadLogsRequest>) -> Result<Response<Self::FollowLogsStream>, Status> {
        borg_rpc::auth::authenticate(&req, self.0.auth, &[borg_rpc::auth::Role::Replica], ONLY_REPLICAS)?;
        let r = req.into_inner();
        let (run, path) = self.log_file(&r)?;
        let tail = match r.tail_bytes {
            0 => DEFAULT_TAIL,
            n => n.min(MAX_TAIL),
        };
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(follow_file(self.0.clone(), run, path, len.saturating_sub(tail), tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    type ExecStream = tokio_stream::wrappers::ReceiverStream<Result<pb::ExecResponse, Status>>;

    async fn exec(
        &self,
        req: Request<tonic::Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        borg_rpc::auth::authenticate(&req, self.0.auth, &[borg_rpc::auth::Role::Replica], ONLY_REPLICAS)?;
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("exec: the first message names the task and command"))?;
        if first.command.is_empty() {
            return Err(Status::invalid_argument("exec: no command"));
        }
        let cx = self.0.runtime().exec_context(&first.job, first.index).ok_or_else(|| {
            Status::failed_precondition(format!(
                "task {}/{} has no running process on {}",
                first.job, first.index, self.0.machine_id
            ))
        })?;
        tracing::info!(job = %first.job, index = first.index, command = ?first.command, "exec");
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let _ = tx.send(Ok(pb::ExecResponse { machine: self.0.machine_id.clone(), ..Default::default() })).await;
        tokio::spawn(exec(cx, first.command, first.stdin, first.stdin_eof, input, tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// How often a followed log is read for new bytes.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(200);
/// Largest chunk of output in one streamed message, bytes.
const CHUNK: usize = 64 * 1024;

/// Reads `path` from `offset` (at most [`CHUNK`] bytes); empty when nothing new.
fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.take(CHUNK as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Follows one log file of run `run` into `tx` from `offset`, until the run has ended and
/// everything written is sent (or the receiver is gone).
async fn follow_file(
    b: Arc<Borglet>,
    run: Option<borg_jobspec::RunId>,
    path: std::path::PathBuf,
    mut offset: u64,
    tx: tokio::sync::mpsc::Sender<Result<pb::TaskLogsResponse, Status>>,
) {
    loop {
        // whether it could still write is decided before reading, so nothing written before
        // it ended is missed
        let live = run.as_ref().is_some_and(|r| b.runtime().is_live(r));
        loop {
            let p = path.clone();
            let data = match tokio::task::spawn_blocking(move || read_from(&p, offset)).await {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    let _ = tx.send(Err(Status::internal(format!("reading {}: {e}", path.display())))).await;
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                    return;
                }
            };
            if data.is_empty() {
                break;
            }
            offset += data.len() as u64;
            let msg = pb::TaskLogsResponse { machine: b.machine_id.clone(), data };
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        if !live {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
            () = tx.closed() => return,
        }
    }
}

impl BorgletService {
    fn log_file(&self, r: &pb::ReadLogsRequest) -> Result<(Option<borg_jobspec::RunId>, std::path::PathBuf), Status> {
        let file = match pb::LogStream::try_from(r.stream) {
            Ok(pb::LogStream::Stderr) => "stderr",
            _ => "stdout",
        };
        let rt = self.0.runtime();
        let (run, sandbox) = match rt.newest_run(&r.job, r.index) {
            Some((run, sandbox)) => (Some(run), sandbox),
            None => (
                None,
                rt.sandbox_of(&r.job, r.index).ok_or_else(|| {
                    Status::not_found(format!("task {}/{} has no sandbox on {}", r.job, r.index, self.0.machine_id))
                })?,
            ),
        };
        Ok((run, sandbox.join(file)))
    }
}

/// Copies `from` (a child's stdout or stderr) into `tx` as `wrap(bytes)` messages until EOF.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    tx: tokio::sync::mpsc::Sender<Result<pb::ExecResponse, Status>>,
    wrap: fn(Vec<u8>) -> pb::ExecResponse,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Ok(wrap(buf[..n].to_vec()))).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs `argv` in `cx` with `input` as its stdin, streaming its output and then its exit
/// status into `tx`.
async fn exec(
    cx: crate::runtime::ExecContext,
    argv: Vec<String>,
    first_stdin: Vec<u8>,
    eof: bool,
    mut input: tonic::Streaming<pb::ExecRequest>,
    tx: tokio::sync::mpsc::Sender<Result<pb::ExecResponse, Status>>,
) {
    use tokio::io::AsyncWriteExt;
    let mut child = match crate::process::spawn_piped(&argv, &cx.sandbox, &cx.env, cx.cgroup.as_ref(), cx.user) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
            return;
        }
    };
    let pid = child.id();
    let std_pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = std_pipes else {
        let _ = tx.send(Err(Status::internal("exec: no pipes"))).await;
        return;
    };
    let pipes = (
        tokio::process::ChildStdin::from_std(stdin),
        tokio::process::ChildStdout::from_std(stdout),
        tokio::process::ChildStderr::from_std(stderr),
    );
    let (Ok(mut stdin), Ok(stdout), Ok(stderr)) = pipes else {
        let _ = tx.send(Err(Status::internal("exec: pipes not usable"))).await;
        return;
    };
    let out = tokio::spawn(pump(stdout, tx.clone(), |d| pb::ExecResponse { stdout: d, ..Default::default() }));
    let err = tokio::spawn(pump(stderr, tx.clone(), |d| pb::ExecResponse { stderr: d, ..Default::default() }));
    // stdin: what came with the first message, then the rest of the stream
    let feed = tokio::spawn(async move {
        if !first_stdin.is_empty() && stdin.write_all(&first_stdin).await.is_err() {
            return;
        }
        if eof {
            return;
        }
        while let Ok(Some(m)) = input.message().await {
            if !m.stdin.is_empty() && stdin.write_all(&m.stdin).await.is_err() {
                return;
            }
            if m.stdin_eof {
                return;
            }
        }
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if tx.is_closed() => {
                // the caller went away: the command goes too
                crate::process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                break None;
            }
            Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Err(_) => break None,
        }
    };
    feed.abort();
    let _ = out.await;
    let _ = err.await;
    if let Some(status) = status {
        let (exit_code, signal) = crate::process::exit_parts(status);
        let _ = tx.send(Ok(pb::ExecResponse { exit_code, signal, ..Default::default() })).await;
    }
}

/// Fuzz targets for the poll handler (proptest): arbitrary bytes decoded as a `PollRequest`,
/// and arbitrary task assignments, through the hollow cell's whole poll handler and the real
/// Borglet's conversion and desired-set update (everything but starting processes). Run long:
/// `PROPTEST_CASES=100000 cargo test --release -p borglet fuzz`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::cgroup::CgroupSupport;
    use crate::hollow::{HollowCell, HollowSpec};
    use crate::runtime::Runtime;
    use proptest::prelude::*;

    fn hollow() -> HollowCell {
        let spec = HollowSpec {
            id: "m1".into(),
            capacity: Resources::new(4000, 1 << 33, 1 << 36),
            attributes: Default::default(),
        };
        HollowCell::new(vec![spec], std::time::Duration::ZERO, 0.5)
    }

    fn assignment() -> impl Strategy<Value = pb::TaskAssignment> {
        (
            ".{0,40}",
            any::<u32>(),
            any::<u64>(),
            any::<i32>(),
            proptest::collection::vec(".{0,20}", 0..4),
            proptest::collection::btree_map(".{0,10}", ".{0,10}", 0..3),
            (any::<u64>(), any::<u64>(), any::<u64>()),
            any::<u64>(),
        )
            .prop_map(|(job, index, incarnation, kind, command, env, (c, r, d), grace)| pb::TaskAssignment {
                job,
                index,
                incarnation,
                kind,
                command,
                env: env.into_iter().collect(),
                resources: Some(pb::Resources { cpu_millis: c, ram_bytes: r, disk_bytes: d, ports: 0 }),
                grace_period_ms: grace,
                ..Default::default()
            })
    }

    proptest! {
        // 2,000 cases per property in the test suite; PROPTEST_CASES sets more for a fuzzing run.
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
            ..ProptestConfig::default()
        })]

        #[test]
        fn fuzz_poll_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            use prost::Message;
            if let Ok(req) = pb::PollRequest::decode(bytes.as_slice()) {
                let cell = hollow();
                let _ = cell.poll(&req);
                let _: Vec<_> = req.tasks.iter().map(spec_from_pb).collect();
            }
        }

        #[test]
        fn fuzz_poll_assignments_are_taken_or_refused(
            tasks in proptest::collection::vec(assignment(), 0..6),
            version in any::<u64>(),
            to_m1 in any::<bool>(),
        ) {
            let req = pb::PollRequest {
                machine_id: if to_m1 { "m1".into() } else { "m2".into() },
                cell: "c".into(),
                version,
                full: true,
                tasks: tasks.clone(),
                status_version: version,
                ..Default::default()
            };
            let cell = hollow();
            match cell.poll(&req) {
                Ok(resp) => prop_assert!(to_m1 && resp.machine_id == "m1"),
                Err(s) => prop_assert!(!to_m1 || s.code() == tonic::Code::NotFound, "{s:?}"),
            }
            let dir = tempfile::tempdir().unwrap();
            let mut rt = Runtime::new("m1", dir.path(), CgroupSupport::None("fuzz".into())).unwrap();
            rt.set_desired(version, "c", tasks.iter().map(spec_from_pb).collect());
        }
    }
}
