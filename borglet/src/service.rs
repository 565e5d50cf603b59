//! The Borglet gRPC service (`borg.v1.Borglet`): the master's poll and log reads.

use crate::runtime::{Phase, Runtime, TaskSpec};
use borg_jobspec::convert::{check_from_pb, kind_from_pb, resources_from_pb, resources_to_pb, restart_from_pb};
use borg_jobspec::{Health, JobKind, Restart};
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
                }
            })
            .collect();
        Ok(Response::new(pb::PollResponse {
            machine_id: self.0.machine_id.clone(),
            applied_version: rt.applied_version,
            tasks,
            usage: Some(resources_to_pb(total)),
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
