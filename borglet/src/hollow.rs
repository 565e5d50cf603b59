//! Hollow Borglets (Kubernetes' kubemark hollow nodes, Borg's Fauxmaster machines): thousands of
//! fake machines in one process, answering the master's polls like real Borglets, for testing
//! the master at cell scale.
//!
//! Every hollow machine is served on the same gRPC address (the poll names its machine). Tasks
//! given to a machine are reported `running` once `start_delay` has passed, with a synthetic pid
//! and usage of `usage_fraction` of their request; no process is ever started, nothing is
//! written to disk. A hollow machine keeps only its desired set: about 100 bytes per task.

use borg_jobspec::convert::{resources_from_pb, resources_to_pb};
use borg_jobspec::RunId;
use borg_proto as pb;
use scheduler_core::{Attributes, Resources};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// One fake machine's description.
#[derive(Debug, Clone, PartialEq)]
pub struct HollowSpec {
    /// Machine id.
    pub id: String,
    /// Capacity it registers with.
    pub capacity: Resources,
    /// Attributes it registers with.
    pub attributes: Attributes,
}

/// A task a hollow machine "runs".
#[derive(Debug, Clone)]
struct HollowTask {
    job: Arc<str>,
    index: u32,
    incarnation: u64,
    job_version: u64,
    request: Resources,
    given: Instant,
    pid: u32,
}

#[derive(Debug, Default)]
struct HollowMachine {
    version: u64,
    tasks: Vec<HollowTask>,
    last_poll: Option<Instant>,
}

/// All hollow machines of this process.
pub struct HollowCell {
    /// Machine descriptions, in registration order.
    pub specs: Vec<HollowSpec>,
    machines: HashMap<String, Mutex<HollowMachine>>,
    next_pid: AtomicU32,
    start_delay: Duration,
    usage_fraction: f64,
}

impl HollowCell {
    /// Hollow machines for `specs`; tasks run after `start_delay`, using `usage_fraction` of
    /// their request.
    pub fn new(specs: Vec<HollowSpec>, start_delay: Duration, usage_fraction: f64) -> Self {
        let machines = specs.iter().map(|s| (s.id.clone(), Mutex::new(HollowMachine::default()))).collect();
        HollowCell { specs, machines, next_pid: AtomicU32::new(100_000), start_delay, usage_fraction }
    }

    /// Ids of machines not polled for `stale` (or never), for re-registration.
    pub fn stale(&self, stale: Duration) -> Vec<&HollowSpec> {
        self.specs
            .iter()
            .filter(|s| {
                self.machines.get(&s.id).is_some_and(|m| {
                    m.lock().unwrap_or_else(|e| e.into_inner()).last_poll.is_none_or(|t| t.elapsed() > stale)
                })
            })
            .collect()
    }

    /// Answers one poll for one of this cell's machines: takes the desired set when `full`,
    /// reports every task as running (after the start delay) with synthetic usage.
    ///
    /// Errors: NOT_FOUND when the poll names a machine this cell does not hold.
    pub fn poll(&self, req: &pb::PollRequest) -> Result<pb::PollResponse, Status> {
        let m = self
            .machines
            .get(&req.machine_id)
            .ok_or_else(|| Status::not_found(format!("no hollow machine {:?} here", req.machine_id)))?;
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        m.last_poll = Some(now);
        // an assignment as a hollow task: a run it holds keeps its start and pid
        let take = |a: &pb::TaskAssignment, old: &HashMap<RunId, (Instant, u32)>| {
            let (given, pid) = old
                .get(&RunId::new(&a.job, a.index, a.incarnation))
                .copied()
                .unwrap_or_else(|| (now, self.next_pid.fetch_add(1, Ordering::Relaxed)));
            HollowTask {
                job: Arc::from(a.job.as_str()),
                index: a.index,
                incarnation: a.incarnation,
                job_version: a.job_version,
                request: resources_from_pb(a.resources.as_ref()),
                given,
                pid,
            }
        };
        let runs = |tasks: &mut dyn Iterator<Item = &HollowTask>| -> HashMap<RunId, (Instant, u32)> {
            tasks.map(|t| (RunId::new(&*t.job, t.index, t.incarnation), (t.given, t.pid))).collect()
        };
        if req.full {
            let old = runs(&mut m.tasks.iter());
            m.tasks = req.tasks.iter().map(|a| take(a, &old)).collect();
            m.version = req.version;
        } else if req.base_version != 0 && req.base_version == m.version {
            // a delta (as a real Borglet takes it: applied only when the result is the master's set)
            let gone: std::collections::HashSet<(&str, u32)> = req
                .removed
                .iter()
                .map(|r| (r.job.as_str(), r.index))
                .chain(req.tasks.iter().map(|a| (a.job.as_str(), a.index)))
                .collect();
            let old = runs(&mut m.tasks.iter().filter(|t| gone.contains(&(&*t.job, t.index))));
            let mut tasks: Vec<HollowTask> =
                m.tasks.iter().filter(|t| !gone.contains(&(&*t.job, t.index))).cloned().collect();
            tasks.extend(req.tasks.iter().map(|a| take(a, &old)));
            tasks.sort_by(|a, b| (&*a.job, a.index).cmp(&(&*b.job, b.index)));
            let digest = pb::desired_digest(tasks.iter().map(|t| (&*t.job, t.index, t.incarnation, t.job_version)));
            if digest == req.version {
                m.tasks = tasks;
                m.version = req.version;
            }
        }
        let started = |t: &&HollowTask| now.duration_since(t.given) >= self.start_delay;
        let used = |t: &HollowTask| {
            let f = |x: u64| (x as f64 * self.usage_fraction) as u64;
            Resources::new(f(t.request.cpu_millis), f(t.request.ram_bytes), 0)
        };
        let total = m.tasks.iter().filter(started).fold(Resources::ZERO, |a, t| a.saturating_add(used(t)));
        // a steady machine's answer carries no statuses: the digest of what it would report
        // costs a hash per task, no allocation
        let tasks_unchanged = req.status_version != 0
            && req.status_version
                == pb::status_digest(m.tasks.iter().filter(started).map(|t| pb::StatusKey {
                    job: &t.job,
                    index: t.index,
                    incarnation: t.incarnation,
                    state: pb::TaskState::Running as i32,
                    pid: Some(t.pid),
                    restarts: 0,
                    ready: true,
                    exit_code: None,
                    signal: None,
                    reclaimed: false,
                }));
        let cpu_seconds = |t: &HollowTask, used: Resources| {
            now.duration_since(t.given).as_secs_f64() * used.cpu_millis as f64 / 1000.0
        };
        // asked for usage when nothing else changed: three numbers a task, in listing order
        let task_usage = (tasks_unchanged && req.want_task_usage).then(|| {
            let mut columns = pb::TaskUsageColumns::default();
            for t in m.tasks.iter().filter(started) {
                let used = used(t);
                columns.cpu_millis.push(used.cpu_millis);
                columns.ram_bytes.push(used.ram_bytes);
                columns.cpu_seconds.push(cpu_seconds(t, used));
            }
            columns
        });
        let tasks = if tasks_unchanged {
            Vec::new()
        } else {
            m.tasks
                .iter()
                .filter(started)
                .map(|t| {
                    let used = used(t);
                    pb::TaskStatus {
                        job: t.job.to_string(),
                        index: t.index,
                        incarnation: t.incarnation,
                        state: pb::TaskState::Running as i32,
                        exit_code: None,
                        signal: None,
                        restarts: 0,
                        pid: Some(t.pid),
                        message: "running (hollow)".into(),
                        usage: Some(resources_to_pb(used)),
                        cpu_seconds: cpu_seconds(t, used),
                        ready: true,
                        reclaimed: false,
                    }
                })
                .collect()
        };
        Ok(pb::PollResponse {
            machine_id: req.machine_id.clone(),
            applied_version: m.version,
            tasks,
            usage: Some(resources_to_pb(total)),
            tasks_unchanged,
            task_usage,
        })
    }
}

/// The gRPC service of a hollow cell; the flag: callers must be replicas of the cell (auth on).
pub struct HollowService(pub Arc<HollowCell>, pub bool);

#[tonic::async_trait]
impl pb::borglet_server::Borglet for HollowService {
    async fn poll(&self, req: Request<pb::PollRequest>) -> Result<Response<pb::PollResponse>, Status> {
        borg_rpc::auth::authenticate(&req, self.1, &[borg_rpc::auth::Role::Replica], crate::service::ONLY_REPLICAS)?;
        self.0.poll(&req.into_inner()).map(Response::new)
    }

    async fn read_logs(&self, req: Request<pb::ReadLogsRequest>) -> Result<Response<pb::TaskLogsResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(pb::TaskLogsResponse {
            machine: String::new(),
            data: format!("task {}/{} runs on a hollow machine: it has no logs\n", r.job, r.index).into_bytes(),
        }))
    }

    type FollowLogsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::TaskLogsResponse, Status>>;

    async fn follow_logs(&self, _: Request<pb::ReadLogsRequest>) -> Result<Response<Self::FollowLogsStream>, Status> {
        Err(Status::unimplemented("a hollow machine's tasks write no logs"))
    }

    type ExecStream = tokio_stream::wrappers::ReceiverStream<Result<pb::ExecResponse, Status>>;

    async fn exec(&self, _: Request<tonic::Streaming<pb::ExecRequest>>) -> Result<Response<Self::ExecStream>, Status> {
        Err(Status::unimplemented("a hollow machine's tasks have no processes to exec in"))
    }
}

/// Reads machines from fauxmaster's neutral CSV (`id,cpu_millis,ram_bytes,disk_bytes,attrs`,
/// attrs `k=v;k=v`, optional header line starting with `id`).
///
/// Errors: the file cannot be read, or a line is malformed (its number and field named).
pub fn read_machines_csv(path: &std::path::Path) -> Result<Vec<HollowSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || (n == 0 && f[0] == "id") {
            continue;
        }
        let num = |i: usize, name: &str| -> Result<u64, String> {
            f.get(i).unwrap_or(&"0").parse().map_err(|_| format!("{}:{}: {name}: not a number", path.display(), n + 1))
        };
        let mut attributes = Attributes::new();
        for kv in f.get(4).unwrap_or(&"").split(';').filter(|s| !s.is_empty()) {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| format!("{}:{}: attrs: {kv:?} is not k=v", path.display(), n + 1))?;
            attributes.insert(k.into(), v.into());
        }
        out.push(HollowSpec {
            id: f[0].to_string(),
            capacity: Resources::new(num(1, "cpu_millis")?, num(2, "ram_bytes")?, num(3, "disk_bytes")?),
            attributes,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(job: &str, index: u32) -> pb::TaskAssignment {
        pb::TaskAssignment {
            job: job.into(),
            index,
            incarnation: 1,
            resources: Some(resources_to_pb(Resources::new(100, 1000, 0))),
            ..Default::default()
        }
    }

    #[test]
    fn hollow_machines_report_desired_tasks_running_with_stable_pids() {
        let spec =
            HollowSpec { id: "h1".into(), capacity: Resources::new(4000, 1 << 30, 0), attributes: Attributes::new() };
        let cell = HollowCell::new(vec![spec], Duration::ZERO, 0.5);
        let req = pb::PollRequest {
            machine_id: "h1".into(),
            version: 7,
            full: true,
            tasks: vec![assignment("a", 0), assignment("a", 1)],
            ..Default::default()
        };
        let r = cell.poll(&req).unwrap();
        assert_eq!(r.applied_version, 7);
        assert_eq!(r.tasks.len(), 2);
        assert_eq!(r.usage.unwrap().cpu_millis, 100);
        let pids: Vec<_> = r.tasks.iter().map(|t| t.pid).collect();
        let again = cell
            .poll(&pb::PollRequest { machine_id: "h1".into(), version: 7, full: false, ..Default::default() })
            .unwrap();
        assert_eq!(again.tasks.iter().map(|t| t.pid).collect::<Vec<_>>(), pids);
        assert!(cell.poll(&pb::PollRequest { machine_id: "nope".into(), ..Default::default() }).is_err());
        assert!(cell.stale(Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn a_delta_changes_only_what_it_names_and_only_against_the_set_held() {
        let spec =
            HollowSpec { id: "h1".into(), capacity: Resources::new(4000, 1 << 30, 0), attributes: Attributes::new() };
        let cell = HollowCell::new(vec![spec], Duration::ZERO, 0.5);
        let digest = |ids: &[(&str, u32)]| pb::desired_digest(ids.iter().map(|(j, i)| (*j, *i, 1, 0)));
        let base = digest(&[("a", 0), ("a", 1)]);
        let full = pb::PollRequest {
            machine_id: "h1".into(),
            version: base,
            full: true,
            tasks: vec![assignment("a", 0), assignment("a", 1)],
            ..Default::default()
        };
        let pid_of_a1 = cell.poll(&full).unwrap().tasks[1].pid;
        let version = digest(&[("a", 1), ("b", 0)]);
        let delta = |base_version: u64, version: u64| pb::PollRequest {
            machine_id: "h1".into(),
            version,
            base_version,
            removed: vec![pb::TaskRef { job: "a".into(), index: 0 }],
            tasks: vec![assignment("b", 0)],
            ..Default::default()
        };
        assert_eq!(cell.poll(&delta(base + 1, version)).unwrap().applied_version, base, "another base: ignored");
        assert_eq!(cell.poll(&delta(base, version + 1)).unwrap().applied_version, base, "another result: ignored");
        let r = cell.poll(&delta(base, version)).unwrap();
        assert_eq!(r.applied_version, version);
        let held: Vec<_> = r.tasks.iter().map(|t| (t.job.as_str(), t.index, t.pid)).collect();
        assert_eq!(held[0], ("a", 1, pid_of_a1), "a task it held runs on");
        assert_eq!(held.iter().map(|(j, i, _)| (*j, *i)).collect::<Vec<_>>(), [("a", 1), ("b", 0)]);
    }

    #[test]
    fn a_steady_machine_leaves_its_task_list_out_when_the_master_has_its_statuses() {
        let spec =
            HollowSpec { id: "h1".into(), capacity: Resources::new(4000, 1 << 30, 0), attributes: Attributes::new() };
        let cell = HollowCell::new(vec![spec], Duration::ZERO, 0.5);
        let poll = |status_version: u64, full: bool| {
            let tasks = if full { vec![assignment("a", 0), assignment("a", 1)] } else { vec![] };
            let req = pb::PollRequest {
                machine_id: "h1".into(),
                version: 7,
                full,
                tasks,
                status_version,
                ..Default::default()
            };
            cell.poll(&req).unwrap()
        };
        let all = poll(0, true);
        assert!(!all.tasks_unchanged && all.tasks.len() == 2, "0: every task");
        let digest = pb::status_digest(all.tasks.iter().map(pb::StatusKey::of));
        let steady = poll(digest, false);
        assert!(steady.tasks_unchanged && steady.tasks.is_empty(), "{steady:?}");
        assert_eq!(steady.usage, all.usage, "the machine's usage is still reported");
        // the master records something else (say, another pid): every task again
        let mut other = all.tasks.clone();
        other[0].pid = Some(1);
        let differs = poll(pb::status_digest(other.iter().map(pb::StatusKey::of)), false);
        assert!(!differs.tasks_unchanged && differs.tasks.len() == 2);
        assert_eq!(poll(0, false).tasks.len(), 2, "0 always asks for every task");
        // asked for usage: the same answer, with each listed task's usage in listing order
        let req = |status_version| pb::PollRequest {
            machine_id: "h1".into(),
            version: 7,
            status_version,
            want_task_usage: true,
            ..Default::default()
        };
        let columns = cell.poll(&req(digest)).unwrap();
        assert!(columns.tasks_unchanged && columns.tasks.is_empty());
        let c = columns.task_usage.expect("usage columns");
        let listed = |f: fn(&pb::Resources) -> u64| -> Vec<u64> {
            all.tasks.iter().map(|t| f(t.usage.as_ref().unwrap())).collect()
        };
        assert_eq!(c.cpu_millis, listed(|u| u.cpu_millis));
        assert_eq!(c.ram_bytes, listed(|u| u.ram_bytes));
        assert_eq!(c.cpu_seconds.len(), 2);
        assert!(cell.poll(&req(0)).unwrap().task_usage.is_none(), "a listing carries its usage in its statuses");
        assert!(steady.task_usage.is_none(), "not asked: no columns");
    }

    #[test]
    fn machines_csv() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.csv");
        std::fs::write(&p, "id,cpu_millis,ram_bytes,disk_bytes,attrs\nm1,4000,1024,0,rack=r1\nm2,x,1,0,\n").unwrap();
        let e = read_machines_csv(&p).unwrap_err();
        assert!(e.ends_with("m.csv:3: cpu_millis: not a number"), "{e}");
        std::fs::write(&p, "m1,4000,1024,0,rack=r1\n").unwrap();
        assert_eq!(read_machines_csv(&p).unwrap()[0].attributes["rack"], "r1");
    }
}
