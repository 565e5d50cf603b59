//! The Borgmaster gRPC service (`borg.v1.Borgmaster`): what borgctl and Borglets call.

use crate::convert::{event_to_pb, job_to_pb, machine_to_pb, task_to_pb};
use crate::master::{Leadership, Master, Pending, ProposeError};
use crate::scheduler_loop::snapshot;
use crate::state::{ApplyOutcome, Command, CommandError, Machine, MachineState};
use borg_proto as pb;
use borg_proto::borglet_client::BorgletClient;
use borg_proto::borgmaster_client::BorgmasterClient;
use borg_spec::auth::{Identity, Role};
use borg_spec::convert::resources_from_pb;
use borg_spec::JobSpec;
use openraft::ChangeMembers;
use scheduler_core::{MachineId, Scheduler};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Most events returned by GetJob.
const JOB_EVENTS: usize = 100;

/// Metadata a follower puts on a write it forwards to the leader (its id); a replica that is not
/// the leader refuses such a request instead of forwarding it again.
const FORWARDED_BY: &str = "borg-forwarded-by";

/// Metadata a replica puts on a write it forwards: the original caller's identity URI
/// (`borg://role/name`). Honoured only on requests whose client certificate is a replica's.
const FORWARDED_FOR: &str = "borg-forwarded-for";

/// Placeholder for env values of jobs the caller does not own (they may hold secrets).
pub const REDACTED: &str = "<redacted>";

/// Who is calling, for authorization (issue 8; roles in `borg_spec::auth`).
pub enum Caller {
    /// Auth is off (`--insecure`): anyone may do anything.
    Anyone,
    /// An authenticated caller (for a forwarded write: the original caller).
    Is(Identity),
}

impl Caller {
    /// Ok for admins (and with auth off).
    ///
    /// Errors: PERMISSION_DENIED naming `rule` and the caller.
    pub fn admin(&self, rule: &str) -> Result<(), Status> {
        match self {
            Caller::Anyone => Ok(()),
            Caller::Is(id) if id.is_admin() => Ok(()),
            Caller::Is(id) => {
                Err(Status::permission_denied(format!("permission denied by rule \"{rule}\": the caller is {id}")))
            }
        }
    }

    /// Whether the caller may act on what belongs to user `owner`: the user themself or an
    /// admin (anyone with auth off).
    pub fn owns(&self, owner: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Is(id) => id.is_admin() || (id.role == Role::User && id.name == owner),
        }
    }

    /// Ok when the caller [`owns`](Self::owns) what belongs to `owner`.
    ///
    /// Errors: PERMISSION_DENIED naming `rule`, the owner and the caller.
    pub fn require_owner(&self, owner: &str, rule: &str) -> Result<(), Status> {
        match self {
            _ if self.owns(owner) => Ok(()),
            Caller::Is(id) => Err(Status::permission_denied(format!(
                "permission denied by rule \"{rule}\": it belongs to user {owner:?}, the caller is {id}"
            ))),
            Caller::Anyone => Ok(()),
        }
    }
}

/// Redacts the env values of `job` unless `caller` owns it.
fn redact(mut job: pb::Job, caller: &Caller) -> pb::Job {
    if let Some(spec) = job.spec.as_mut() {
        if !caller.owns(&spec.user) {
            for v in spec.env.values_mut() {
                *v = REDACTED.into();
            }
        }
    }
    job
}

/// How long a follower keeps trying to forward a write while the leader is unknown or
/// unreachable (an election takes well under a second).
const FORWARD_PATIENCE: Duration = Duration::from_secs(5);

/// How long a replica being added has to catch up with the leader's log before the add gives up
/// and removes it again.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a replica waits for another replica's status in ListReplicas.
const REPLICA_STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// The service; one per master.
///
/// Reads (jobs, tasks, machines, usage, quota, events, replicas) are served by any replica from
/// its own copy of the state (a follower's may lag the leader by the entries in flight). Writes
/// (apply, kill, register, quota, replica changes) are forwarded by a follower to the leader,
/// once, and the leader's answer is returned; while no leader is known they fail with
/// UNAVAILABLE, which clients retry.
pub struct BorgmasterService {
    master: Arc<Master>,
    /// One channel per leader address, reused by forwarded writes.
    leaders: std::sync::Mutex<HashMap<String, Channel>>,
}

impl BorgmasterService {
    /// A service over `master`.
    pub fn new(master: Arc<Master>) -> Self {
        BorgmasterService { master, leaders: Default::default() }
    }

    /// Who is calling `req`: with auth on, its client certificate's identity (for a write a
    /// replica forwarded, the original caller it names).
    ///
    /// Errors: UNAUTHENTICATED without a usable certificate; INVALID_ARGUMENT for a malformed
    /// forwarded identity.
    pub fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let Some(id) = borg_spec::auth::authenticate(req, self.master.config.auth, &[], "")? else {
            return Ok(Caller::Anyone);
        };
        if id.role == Role::Replica {
            if let Some(v) = req.metadata().get(FORWARDED_FOR) {
                let uri = v.to_str().map_err(|_| Status::invalid_argument(format!("{FORWARDED_FOR}: not ASCII")))?;
                return Identity::parse_uri(uri)
                    .map(Caller::Is)
                    .map_err(|e| Status::invalid_argument(format!("{FORWARDED_FOR}: {e}")));
            }
        }
        Ok(Caller::Is(id))
    }

    /// A client of the leader at `address` (one channel per address, reused).
    fn leader_client(&self, address: &str) -> Result<BorgmasterClient<Channel>, Status> {
        let mut map = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = map.get(address) {
            return Ok(BorgmasterClient::new(ch.clone()));
        }
        let ch = crate::raft::network::channel(address)
            .map_err(|e| Status::unavailable(format!("leader address {address:?}: {e}")))?;
        map.insert(address.to_string(), ch.clone());
        Ok(BorgmasterClient::new(ch))
    }

    /// Routes a write: [`Route::Local`] when this replica leads (serve it here), else forwards it
    /// to the leader, marked forwarded by this replica, and returns the leader's answer. While
    /// the leader is unknown or unreachable (an election is under way) it waits and tries again
    /// for up to [`FORWARD_PATIENCE`], serving it here if this replica is elected meanwhile; a
    /// write the leader answered is never resent (one cut off mid-call may be: writes are
    /// idempotent).
    ///
    /// Errors: UNAVAILABLE when no leader appears in time, or when the request was already
    /// forwarded once and this replica does not lead (leadership is moving; the caller retries).
    async fn route<T, R, F, Fut>(&self, req: Request<T>, call: F) -> Result<Route<T, R>, Status>
    where
        T: Clone,
        F: Fn(BorgmasterClient<Channel>, Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<R>, Status>>,
    {
        let deadline = Instant::now() + FORWARD_PATIENCE;
        let forwarded_for = match self.caller(&req)? {
            Caller::Is(id) => Some(id.uri()),
            Caller::Anyone => None,
        };
        let already_forwarded = req.metadata().get(FORWARDED_BY).is_some();
        loop {
            let address = match self.master.leadership() {
                Leadership::Me => return Ok(Route::Local(req)),
                _ if already_forwarded => {
                    return Err(Status::unavailable(
                        "forwarded to a replica that does not lead (leadership is moving); retry",
                    ))
                }
                Leadership::Other { address, .. } => address,
                Leadership::Unknown if Instant::now() >= deadline => {
                    return Err(Status::unavailable("no Borgmaster leader is elected; retry in a moment"))
                }
                Leadership::Unknown => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let mut fwd = Request::new(req.get_ref().clone());
            fwd.metadata_mut().insert(FORWARDED_BY, tonic::metadata::MetadataValue::from(self.master.id));
            if let Some(uri) = forwarded_for.as_deref().and_then(|u| u.parse().ok()) {
                fwd.metadata_mut().insert(FORWARDED_FOR, uri);
            }
            fwd.set_timeout(Duration::from_secs(30));
            match call(self.leader_client(&address)?, fwd).await {
                // connection refused, or reset before an answer (tonic: UNKNOWN "transport
                // error", or CANCELLED "operation was canceled"): the old leader is gone. Every forwarded write is idempotent (apply of
                // the same spec, kill, register, quota, membership), so sending it again is safe.
                Err(s)
                    if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled)
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(error = %s.message(), "forwarding to the leader failed; waiting for a leader");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other.map(Route::Forwarded),
            }
        }
    }

    /// The voter ids after a membership change, ascending.
    fn voters(&self) -> Vec<u64> {
        self.master.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
    }
}

/// Where a write is served.
enum Route<T, R> {
    /// Here: this replica leads.
    Local(Request<T>),
    /// By the leader, which answered this.
    Forwarded(Response<R>),
}

fn membership_status(e: impl std::fmt::Display) -> Status {
    Status::failed_precondition(format!("membership change refused: {e}"))
}

fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Rejected(CommandError::NoSuchJob(j)) => Status::not_found(format!("no job named {j:?}")),
        ProposeError::Rejected(e @ CommandError::VersionMismatch { .. }) => Status::failed_precondition(e.to_string()),
        ProposeError::Rejected(e @ CommandError::JobStillLive { .. }) => Status::failed_precondition(e.to_string()),
        ProposeError::Rejected(e @ CommandError::OverQuota { .. }) => Status::resource_exhausted(e.to_string()),
        ProposeError::Rejected(e) => Status::invalid_argument(e.to_string()),
        e @ ProposeError::NotLeader { .. } => Status::unavailable(format!("{e}; retry")),
        ProposeError::Storage(e) => Status::unavailable(format!("not stored, try again: {e}")),
        ProposeError::Stopped => Status::unavailable("the Borgmaster is stopping"),
    }
}

impl BorgmasterService {
    /// Dry run of an apply: the command is applied to a copy of the cell state (the state
    /// machine is pure), and a scheduling pass runs on the copy. Reports what would be created,
    /// restarted (rolling update) or removed, what would be placed now and what preempted, and
    /// the owner's quota after.
    ///
    /// Errors: the command would be rejected (version mismatch, over quota).
    fn plan(&self, spec: &JobSpec, expected_version: Option<u64>) -> Result<pb::ApplyJobResponse, Status> {
        // Clone copies the derived machine index too: the copy is ready to apply to.
        let mut copy = self.master.state().clone();
        let before = copy.jobs.get(&spec.name).map(|j| j.tasks.clone()).unwrap_or_default();
        let in_place = copy.update_is_in_place(spec);
        let entry = crate::state::Entry {
            time_ms: crate::master::now_ms(),
            command: Command::ApplyJob { spec: spec.clone(), expected_version },
        };
        let (outcome, _) = copy.apply(&entry).map_err(|e| propose_status(ProposeError::Rejected(e)))?;
        let (action, version) = match outcome {
            ApplyOutcome::Created(v) => ("created", v),
            ApplyOutcome::Updated(v) => ("updated", v),
            ApplyOutcome::Unchanged(v) => ("unchanged", v),
            _ => ("unchanged", 0),
        };
        let after = copy.jobs.get(&spec.name).map(|j| j.tasks.clone()).unwrap_or_default();
        let created: Vec<u32> =
            after.iter().filter(|t| before.get(t.index as usize).is_none()).map(|t| t.index).collect();
        let removed: Vec<u32> = before.iter().filter(|t| t.index as usize >= after.len()).map(|t| t.index).collect();
        let restarted: Vec<u32> = after
            .iter()
            .filter(|t| {
                before.get(t.index as usize).is_some_and(|b| b.incarnation != t.incarnation || t.job_version < version)
            })
            .map(|t| t.index)
            .collect();
        let mut snap = snapshot(&copy);
        let params = *self.master.scheduler.lock().unwrap_or_else(|e| e.into_inner()).params();
        let p =
            Scheduler::new(scheduler_core::Params { explain: true, ..params }).schedule(&mut snap.model, &snap.groups);
        let job_id = snap.jobs.iter().position(|j| *j == spec.name).map(|i| i as u32);
        let mine = |t: &scheduler_core::TaskRef| Some(t.job) == job_id;
        let pending_now = after.iter().filter(|t| t.state == crate::state::TaskState::Pending).count() as u32;
        let (placeable, why) = if spec.alloc_set.is_empty() {
            let placeable = p.bindings.iter().filter(|b| mine(&b.task)).count() as u32;
            (placeable, p.unplaced.iter().find(|u| u.tasks.iter().any(mine)).map(|u| Pending::Machines(u.why.clone())))
        } else {
            // tasks of alloc-set jobs go into allocs, not onto machines
            let (binds, whys) = crate::scheduler_loop::alloc_bindings(&copy);
            let placeable = binds.iter().filter(|b| b.job == spec.name).count() as u32;
            (placeable, whys.into_iter().find(|(j, _)| *j == spec.name).map(|(_, w)| Pending::Other(w)))
        };
        let why_pending_reasons =
            why.as_ref().map(|w| w.reasons().1.into_iter().map(|(r, n)| (r, n as u32)).collect()).unwrap_or_default();
        let why = why.map(|w| w.to_string()).unwrap_or_default();
        let evicted = p.preempted.iter().filter(|e| mine(&e.by)).map(|e| snap.name(e.victim)).collect();
        let band = spec.band();
        Ok(pb::ApplyJobResponse {
            job: spec.name.clone(),
            version,
            action: action.into(),
            placeable,
            unplaceable: pending_now.saturating_sub(placeable),
            why_pending: why,
            why_pending_reasons,
            created,
            restarted,
            removed,
            in_place,
            evicted,
            quota_used_after: Some(borg_spec::convert::resources_to_pb(copy.quota_used(&spec.user, band, None))),
            quota_limit: copy.quota_limit(&spec.user, band).map(borg_spec::convert::resources_to_pb),
        })
    }
}

fn band_from_name(s: &str) -> Result<scheduler_core::Band, Status> {
    match scheduler_core::Band::from_name(s) {
        Some(scheduler_core::Band::Free) => Err(Status::invalid_argument("band: the free band needs no quota")),
        Some(b) => Ok(b),
        None => Err(Status::invalid_argument(format!("band: {s:?} is not batch, production or monitoring"))),
    }
}

#[tonic::async_trait]
impl pb::borgmaster_server::Borgmaster for BorgmasterService {
    async fn apply_job(&self, req: Request<pb::ApplyJobRequest>) -> Result<Response<pb::ApplyJobResponse>, Status> {
        let caller = self.caller(&req)?;
        if let Some(spec) = req.get_ref().spec.as_ref() {
            caller.require_owner(&spec.user, "a job's spec.user must be the caller (admins may submit for anyone)")?;
            if let Some(job) = self.master.state().jobs.get(&spec.name) {
                caller.require_owner(&job.spec.user, "only a job's owner or an admin may update it")?;
            }
        }
        let req = if req.get_ref().dry_run {
            req
        } else {
            match self.route(req, |mut c, r| async move { c.apply_job(r).await }).await? {
                Route::Local(req) => req,
                Route::Forwarded(answer) => return Ok(answer),
            }
        };
        let req = req.into_inner();
        let spec_pb = req.spec.ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let spec = JobSpec::try_from(&spec_pb).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if req.dry_run {
            return Ok(Response::new(self.plan(&spec, req.expected_version)?));
        }
        let name = spec.name.clone();
        let (outcome, _) = self
            .master
            .propose(Command::ApplyJob { spec, expected_version: req.expected_version })
            .await
            .map_err(propose_status)?;
        let (action, version) = match outcome {
            ApplyOutcome::Created(v) => ("created", v),
            ApplyOutcome::Updated(v) => ("updated", v),
            ApplyOutcome::Unchanged(v) => ("unchanged", v),
            _ => ("unchanged", 0),
        };
        tracing::info!(job = %name, action, version, "apply");
        Ok(Response::new(pb::ApplyJobResponse { job: name, version, action: action.into(), ..Default::default() }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::GetJobResponse>, Status> {
        let caller = self.caller(&req)?;
        let name = req.into_inner().name;
        let s = self.master.state();
        let job = s.jobs.get(&name).ok_or_else(|| Status::not_found(format!("no job named {name:?}")))?;
        let soft = self.master.soft();
        let mut events: Vec<pb::Event> =
            s.events.iter().rev().filter(|e| e.job == name).take(JOB_EVENTS).map(event_to_pb).collect();
        events.reverse();
        Ok(Response::new(pb::GetJobResponse { job: Some(redact(job_to_pb(&s, job, &soft), &caller)), events }))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = self.caller(&req)?;
        let s = self.master.state();
        let soft = self.master.soft();
        Ok(Response::new(pb::ListJobsResponse {
            jobs: s.jobs.values().map(|j| redact(job_to_pb(&s, j, &soft), &caller)).collect(),
        }))
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.caller(&req)?;
        let name = req.into_inner().job;
        let s = self.master.state();
        let job = s.jobs.get(&name).ok_or_else(|| Status::not_found(format!("no job named {name:?}")))?;
        let soft = self.master.soft();
        Ok(Response::new(pb::ListTasksResponse { tasks: job.tasks.iter().map(|t| task_to_pb(t, &soft)).collect() }))
    }

    async fn kill_job(&self, req: Request<pb::KillJobRequest>) -> Result<Response<pb::KillJobResponse>, Status> {
        let caller = self.caller(&req)?;
        if let Some(job) = self.master.state().jobs.get(&req.get_ref().name) {
            caller.require_owner(&job.spec.user, "only a job's owner or an admin may kill it")?;
        }
        let req = match self.route(req, |mut c, r| async move { c.kill_job(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let name = req.into_inner().name;
        let (outcome, _) =
            self.master.propose(Command::KillJob { name: name.clone() }).await.map_err(propose_status)?;
        let (killed, already_finished) = match outcome {
            ApplyOutcome::Killed(n) => (n, false),
            ApplyOutcome::AlreadyFinished => (0, true),
            _ => (0, false),
        };
        tracing::info!(job = %name, killed, already_finished, "kill");
        Ok(Response::new(pb::KillJobResponse { killed, already_finished }))
    }

    async fn delete_job(&self, req: Request<pb::DeleteJobRequest>) -> Result<Response<pb::DeleteJobResponse>, Status> {
        let caller = self.caller(&req)?;
        if let Some(job) = self.master.state().jobs.get(&req.get_ref().name) {
            caller.require_owner(&job.spec.user, "only a job's owner or an admin may delete it")?;
        }
        let req = match self.route(req, |mut c, r| async move { c.delete_job(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let name = req.into_inner().name;
        self.master.propose(Command::DeleteJob { name: name.clone() }).await.map_err(propose_status)?;
        tracing::info!(job = %name, "deleted");
        Ok(Response::new(pb::DeleteJobResponse {}))
    }

    async fn list_machines(
        &self,
        req: Request<pb::ListMachinesRequest>,
    ) -> Result<Response<pb::ListMachinesResponse>, Status> {
        self.caller(&req)?;
        let s = self.master.state();
        let soft = self.master.soft();
        Ok(Response::new(pb::ListMachinesResponse {
            machines: s.machines.values().map(|m| machine_to_pb(m, &s, &soft)).collect(),
        }))
    }

    async fn register_machine(
        &self,
        req: Request<pb::RegisterMachineRequest>,
    ) -> Result<Response<pb::RegisterMachineResponse>, Status> {
        match self.caller(&req)? {
            Caller::Is(id) if !(id.is_admin() || (id.role == Role::Machine && id.name == req.get_ref().id)) => {
                return Err(Status::permission_denied(format!(
                    "permission denied by rule \"a Borglet registers and reports only for its own machine\": machine {:?}, the caller is {id}",
                    req.get_ref().id
                )))
            }
            _ => {}
        }
        let req = match self.route(req, |mut c, r| async move { c.register_machine(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let r = req.into_inner();
        if r.id.is_empty() || r.id.len() > 253 {
            return Err(Status::invalid_argument("id: must be 1-253 characters"));
        }
        if r.address.parse::<std::net::SocketAddr>().is_err() && !r.address.contains(':') {
            return Err(Status::invalid_argument(format!("address: {:?} is not host:port", r.address)));
        }
        let machine = Machine {
            id: MachineId(r.id.clone()),
            address: r.address.clone(),
            capacity: resources_from_pb(r.capacity.as_ref()),
            attributes: r.attributes.into_iter().collect(),
            state: MachineState::Up,
            registered_ms: 0,
        };
        tracing::info!(machine = %r.id, address = %r.address, capacity = %machine.capacity, "machine registered");
        self.master.propose(Command::RegisterMachine { machine }).await.map_err(propose_status)?;
        Ok(Response::new(pb::RegisterMachineResponse {
            cell: self.master.state().cell.clone(),
            poll_interval_ms: self.master.config.poll_interval.as_millis() as u64,
        }))
    }

    async fn get_cell_usage(
        &self,
        req: Request<pb::CellUsageRequest>,
    ) -> Result<Response<pb::CellUsageResponse>, Status> {
        self.caller(&req)?;
        let state = self.master.state();
        let u = crate::usage::cell_usage(&state, &self.master.soft());
        let r = |x| Some(borg_spec::convert::resources_to_pb(x));
        Ok(Response::new(pb::CellUsageResponse {
            cell: state.cell.clone(),
            machines_up: u.machines_up,
            machines_down: u.machines_down,
            capacity: r(u.capacity),
            allocated: r(u.allocated),
            used: r(u.used),
            free: r(u.free),
            stranded: r(u.stranded),
            bands: u
                .bands
                .iter()
                .zip(scheduler_core::Band::ALL)
                .map(|(b, band)| pb::BandUsage {
                    band: band.name().into(),
                    allocated: r(b.allocated),
                    used: r(b.used),
                    tasks_running: b.running,
                    tasks_pending: b.pending,
                    tasks_dead: b.dead,
                })
                .collect(),
        }))
    }

    async fn set_quota(&self, req: Request<pb::SetQuotaRequest>) -> Result<Response<pb::SetQuotaResponse>, Status> {
        self.caller(&req)?.admin("only admins set quotas")?;
        let req = match self.route(req, |mut c, r| async move { c.set_quota(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let r = req.into_inner();
        if !borg_spec::job::valid_user_name(&r.user) {
            return Err(Status::invalid_argument(format!("user: {:?} is not a user name", r.user)));
        }
        let band = band_from_name(&r.band)?;
        let given = borg_spec::convert::resources_from_pb(r.limit.as_ref());
        let limit = if r.dimensions.is_empty() {
            given
        } else {
            // unnamed dimensions keep the limit in force (the grant, or the cell default)
            let mut l = self.master.state().quota_limit(&r.user, band).unwrap_or(scheduler_core::Resources::UNLIMITED);
            for d in &r.dimensions {
                match d.as_str() {
                    "cpu" => l.cpu_millis = given.cpu_millis,
                    "ram" => l.ram_bytes = given.ram_bytes,
                    "disk" => l.disk_bytes = given.disk_bytes,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "dimensions: unknown resource {other:?} (cpu, ram, disk)"
                        )))
                    }
                }
            }
            l
        };
        self.master.propose(Command::SetQuota { user: r.user.clone(), band, limit }).await.map_err(propose_status)?;
        tracing::info!(user = %r.user, %band, %limit, "quota set");
        Ok(Response::new(pb::SetQuotaResponse { limit: Some(borg_spec::convert::resources_to_pb(limit)) }))
    }

    async fn get_quota(&self, req: Request<pb::GetQuotaRequest>) -> Result<Response<pb::GetQuotaResponse>, Status> {
        self.caller(&req)?;
        let user = req.into_inner().user;
        let state = self.master.state();
        let to = borg_spec::convert::resources_to_pb;
        let rows = state
            .quota_rows((!user.is_empty()).then_some(user.as_str()))
            .into_iter()
            .map(|q| pb::QuotaRow {
                user: q.user,
                band: q.band.name().into(),
                limit: q.limit.map(to),
                used: Some(to(q.used)),
                free: q.limit.map(|l| to(crate::state::quota_headroom(l, q.used))),
            })
            .collect();
        Ok(Response::new(pb::GetQuotaResponse { rows }))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        let state = self.master.state();
        let mut events: Vec<pb::Event> = state
            .events
            .iter()
            .rev()
            .filter(|e| r.job.is_empty() || e.job == r.job)
            .take(limit)
            .map(event_to_pb)
            .collect();
        if events.is_empty() && !r.job.is_empty() && !state.jobs.contains_key(&r.job) {
            return Err(Status::not_found(format!("no job named {:?}", r.job)));
        }
        events.reverse();
        Ok(Response::new(pb::ListEventsResponse { events }))
    }

    async fn task_logs(&self, req: Request<pb::TaskLogsRequest>) -> Result<Response<pb::TaskLogsResponse>, Status> {
        let caller = self.caller(&req)?;
        if let Some(job) = self.master.state().jobs.get(&req.get_ref().job) {
            caller.require_owner(&job.spec.user, "only a job's owner or an admin may read its tasks' output")?;
        }
        let r = req.into_inner();
        let (machine, address) = {
            let s = self.master.state();
            let t = s
                .task(&(r.job.clone(), r.index))
                .ok_or_else(|| Status::not_found(format!("no task {}/{}", r.job, r.index)))?;
            let m = t.machine.clone().ok_or_else(|| {
                Status::failed_precondition(format!("task {}/{} has not been placed", r.job, r.index))
            })?;
            let address = s
                .machines
                .get(&m)
                .map(|m| m.address.clone())
                .ok_or_else(|| Status::not_found(format!("machine {m} is not registered")))?;
            (m, address)
        };
        let ep = crate::tls::endpoint(&address)
            .map_err(|e| Status::internal(format!("machine {machine}: {e}")))?
            .timeout(Duration::from_secs(10));
        let ch = ep.connect().await.map_err(|e| Status::unavailable(format!("machine {machine} at {address}: {e}")))?;
        let mut resp = BorgletClient::new(ch)
            .read_logs(pb::ReadLogsRequest { job: r.job, index: r.index, stream: r.stream, tail_bytes: r.tail_bytes })
            .await?
            .into_inner();
        resp.machine = machine.0;
        Ok(Response::new(resp))
    }

    async fn list_replicas(
        &self,
        req: Request<pb::ListReplicasRequest>,
    ) -> Result<Response<pb::ListReplicasResponse>, Status> {
        self.caller(&req)?;
        let membership = self.master.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = membership.membership().voter_ids().collect();
        let mut asks = tokio::task::JoinSet::new();
        for (id, node) in membership.membership().nodes() {
            let (id, address, voter) = (*id, node.addr.clone(), voters.contains(id));
            if id == self.master.id {
                let mut me = crate::raft::network::local_status(&self.master.raft, id, &self.master.address);
                me.voter = voter;
                asks.spawn(async move { me });
                continue;
            }
            asks.spawn(async move {
                match crate::raft::peer_status(&address, REPLICA_STATUS_TIMEOUT).await {
                    Ok(mut s) => {
                        s.voter = voter;
                        s
                    }
                    Err(_) => {
                        pb::ReplicaStatus { id, address, role: "unreachable".into(), voter, ..Default::default() }
                    }
                }
            });
        }
        let mut replicas: Vec<pb::ReplicaStatus> = asks.join_all().await;
        replicas.sort_by_key(|r| r.id);
        Ok(Response::new(pb::ListReplicasResponse { replicas }))
    }

    async fn add_replica(
        &self,
        req: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::AddReplicaResponse>, Status> {
        self.caller(&req)?.admin("only admins change the master group's replicas")?;
        let req = match self.route(req, |mut c, r| async move { c.add_replica(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("id: replica ids start at 1"));
        }
        if !r.address.contains(':') {
            return Err(Status::invalid_argument(format!("address: {:?} is not host:port", r.address)));
        }
        let existing = self.master.raft.metrics().borrow().membership_config.membership().get_node(&r.id).cloned();
        if let Some(node) = existing.filter(|n| n.addr != r.address) {
            return Err(Status::already_exists(format!(
                "replica {} is a member at {}; remove it first to change its address",
                r.id, node.addr
            )));
        }
        tracing::info!(id = r.id, address = %r.address, "adding a replica: catching it up as a learner");
        crate::raft::membership::add_voter(&self.master.raft, r.id, &r.address, CATCH_UP_TIMEOUT).await.map_err(
            |e| match e {
                e @ crate::raft::membership::AddError::NotCaughtUp { .. } => Status::deadline_exceeded(e.to_string()),
                e => Status::failed_precondition(e.to_string()),
            },
        )?;
        tracing::info!(id = r.id, "replica is a voter");
        Ok(Response::new(pb::AddReplicaResponse { voters: self.voters() }))
    }

    async fn remove_replica(
        &self,
        req: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::RemoveReplicaResponse>, Status> {
        self.caller(&req)?.admin("only admins change the master group's replicas")?;
        let req = match self.route(req, |mut c, r| async move { c.remove_replica(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let id = req.into_inner().id;
        let membership = self.master.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<u64> = membership.membership().voter_ids().collect();
        if membership.membership().get_node(&id).is_none() {
            return Err(Status::not_found(format!("no replica {id} in the master group")));
        }
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(Status::failed_precondition(format!("replica {id} is the last voter")));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!(id, "removing a replica");
        self.master.raft.change_membership(change, false).await.map_err(membership_status)?;
        Ok(Response::new(pb::RemoveReplicaResponse { voters: self.voters() }))
    }
}
