//! The Borgmaster gRPC service (`borg.v1.Borgmaster`): what borgctl and Borglets call.
//!
//! - this file: the RPC surface, one method per RPC;
//! - [`caller`]: who is calling and what they may do;
//! - [`forward`]: a follower's writes forwarded to the leader;
//! - [`plan`]: dry runs of an apply;
//! - [`naming`]: BNS names and their endpoints (Resolve).
//! - [`watch`]: the event and task streams (WatchEvents, WatchTasks).

mod caller;
mod forward;
mod naming;
mod plan;
mod watch;

pub use caller::{Caller, REDACTED};

use crate::convert::{event_to_pb, job_to_pb, machine_to_pb, task_to_pb};
use crate::master::{now_ms, Master, ProposeError};
use crate::raft::group::RemoveError;
use crate::raft::membership::AddError;
use crate::state::{ApplyOutcome, Command, CommandError, Machine, MachineState, Maintenance, TaskId};
use borg_jobspec::convert::resources_from_pb;
use borg_jobspec::JobSpec;
use borg_proto as pb;
use borg_proto::borglet_client::BorgletClient;
use borg_rpc::auth::Role;
use caller::redact;
use forward::Route;
use scheduler_core::MachineId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Most events returned by GetJob.
const JOB_EVENTS: usize = 100;

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
    /// The endpoint feeds of watched names.
    watches: Arc<naming::WatchHub>,
}

impl BorgmasterService {
    /// Ok when `caller` owns the job or cron job named `name` (or there is none: the lookup
    /// after says so).
    ///
    /// Errors: PERMISSION_DENIED naming `rule`.
    fn require_owner_of(&self, caller: &Caller, name: &str, rule: &str) -> Result<(), Status> {
        let state = self.master.state();
        match state.jobs.get(name).map(|j| &j.spec.user).or_else(|| state.crons.get(name).map(|c| &c.spec.user)) {
            Some(user) => caller.require_owner(user, rule),
            None => Ok(()),
        }
    }

    /// The machine of task `job/index` and a client of its Borglet.
    ///
    /// Errors: NOT_FOUND (no such task, or its machine is gone), FAILED_PRECONDITION (not
    /// placed), UNAVAILABLE (the Borglet does not answer).
    async fn task_borglet(&self, job: &str, index: u32) -> Result<(MachineId, BorgletClient<Channel>), Status> {
        let (machine, address) = {
            let s = self.master.state();
            let t =
                s.task(&TaskId::new(job, index)).ok_or_else(|| Status::not_found(format!("no task {job}/{index}")))?;
            let m = t
                .machine
                .clone()
                .ok_or_else(|| Status::failed_precondition(format!("task {job}/{index} has not been placed")))?;
            let address = s
                .machines
                .get(&m)
                .map(|m| m.address.clone())
                .ok_or_else(|| Status::not_found(format!("machine {m} is not registered")))?;
            (m, address)
        };
        let ep = crate::tls::endpoint(&address)
            .map_err(|e| Status::internal(format!("machine {machine}: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        let ch = ep.connect().await.map_err(|e| Status::unavailable(format!("machine {machine} at {address}: {e}")))?;
        Ok((machine, BorgletClient::new(ch)))
    }

    /// A service over `master`.
    pub fn new(master: Arc<Master>) -> Self {
        BorgmasterService { master, leaders: Default::default(), watches: Default::default() }
    }
}

pub(super) fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Rejected(CommandError::NoSuchJob(j)) => Status::not_found(format!("no job named {j:?}")),
        ProposeError::Rejected(e @ CommandError::VersionMismatch { .. }) => Status::failed_precondition(e.to_string()),
        ProposeError::Rejected(e @ CommandError::JobStillLive { .. }) => Status::failed_precondition(e.to_string()),
        ProposeError::Rejected(e @ CommandError::OverQuota(_)) => Status::resource_exhausted(e.to_string()),
        ProposeError::Rejected(e @ CommandError::NoSuchMachine(_)) => Status::not_found(e.to_string()),
        ProposeError::Rejected(e @ CommandError::NoSuchTask { .. }) => Status::not_found(e.to_string()),
        ProposeError::Rejected(e @ CommandError::JobKilled(_)) => Status::failed_precondition(e.to_string()),
        ProposeError::Rejected(e @ CommandError::NameTaken { .. }) => Status::already_exists(e.to_string()),
        ProposeError::Rejected(e @ CommandError::UnknownDependency { .. }) => Status::invalid_argument(e.to_string()),
        ProposeError::Rejected(e @ CommandError::DependencyCycle { .. }) => Status::invalid_argument(e.to_string()),
        ProposeError::Rejected(e @ CommandError::MachineHasTasks { .. }) => Status::failed_precondition(e.to_string()),
        e @ ProposeError::NotLeader { .. } => forward::not_applied(Status::unavailable(format!("{e}; retry"))),
        ProposeError::Storage(e) => Status::unavailable(format!(
            "the write's outcome is unknown (it may still be applied): {e}; read before retrying"
        )),
        ProposeError::Stopped => Status::unavailable("the Borgmaster is stopping"),
    }
}

fn band_from_name(s: &str) -> Result<scheduler_core::Band, Status> {
    match scheduler_core::Band::from_name(s) {
        Some(scheduler_core::Band::Free) => Err(Status::invalid_argument("band: the free band needs no quota")),
        Some(b) => Ok(b),
        None => Err(Status::invalid_argument(format!("band: {s:?} is not batch, production or monitoring"))),
    }
}

/// Most task records summed per hold of the state's locks when listing jobs: each job is
/// listed as one moment saw it, the list as a whole is not one moment's (a job applied or
/// deleted meanwhile may be in it or not).
const LIST_SLICE_TASKS: usize = 50_000;

#[tonic::async_trait]
impl pb::borgmaster_server::Borgmaster for BorgmasterService {
    async fn apply_job(&self, req: Request<pb::ApplyJobRequest>) -> Result<Response<pb::ApplyJobResponse>, Status> {
        let caller = self.caller(&req)?;
        if let Some(spec) = req.get_ref().spec.as_ref() {
            caller.require_owner(&spec.user, "a job's spec.user must be the caller (admins may submit for anyone)")?;
            self.require_owner_of(&caller, &spec.name, "only a job's owner or an admin may update it")?;
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
        // a linearizable read is served by the leader after a quorum confirms it leads (a
        // follower forwards it; one forwarded to us is one)
        let linearizable = req.metadata().get(forward::FORWARDED_BY).is_some()
            || req
                .metadata()
                .get(borg_rpc::client::CONSISTENCY_HEADER)
                .is_some_and(|v| v.as_bytes() == borg_rpc::client::LINEARIZABLE.as_bytes());
        let req = if linearizable {
            let req = match self.route(req, |mut c, r| async move { c.get_job(r).await }).await? {
                Route::Local(req) => req,
                Route::Forwarded(answer) => return Ok(answer),
            };
            self.master.confirm_leadership().await.map_err(|e| {
                Status::unavailable(format!("linearizable read: this replica cannot confirm it leads: {e}; retry"))
            })?;
            req
        } else {
            req
        };
        let name = req.into_inner().name;
        let s = self.master.state();
        let job = s.jobs.get(&name).ok_or_else(|| Status::not_found(format!("no job named {name:?}")))?;
        let soft = self.master.soft();
        let mut events: Vec<pb::Event> =
            s.events.iter().rev().filter(|e| e.job == name).take(JOB_EVENTS).map(event_to_pb).collect();
        events.reverse();
        let owner = caller.owns(&job.spec.user);
        let history = job
            .history
            .iter()
            .map(|r| {
                let mut spec = pb::JobSpec::from(r.spec.as_ref());
                if !owner {
                    for v in spec.env.values_mut() {
                        *v = REDACTED.into();
                    }
                }
                pb::JobRevision { version: r.version, applied_ms: r.applied_ms, spec: Some(spec) }
            })
            .collect();
        let job = Some(redact(job_to_pb(&s, job, &soft), &caller));
        Ok(Response::new(pb::GetJobResponse { job, events, history }))
    }

    async fn list_jobs(&self, req: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let caller = self.caller(&req)?;
        // a slice of jobs per hold of the locks: an answer sums every task's record, and at
        // 1,000,000 tasks one hold of both locks for all of them stalled the pollers (they need
        // the soft state) and Raft's applies (the write lock) for most of a second
        let names: Vec<String> = self.master.state().jobs.keys().cloned().collect();
        let mut jobs = Vec::with_capacity(names.len());
        let mut names = names.as_slice();
        while !names.is_empty() {
            {
                let s = self.master.state();
                let soft = self.master.soft();
                let mut tasks = 0;
                while let Some((name, rest)) = names.split_first() {
                    if tasks >= LIST_SLICE_TASKS {
                        break;
                    }
                    names = rest;
                    if let Some(j) = s.jobs.get(name) {
                        tasks += j.tasks.len().max(1);
                        jobs.push(redact(job_to_pb(&s, j, &soft), &caller));
                    }
                }
            }
            tokio::task::yield_now().await;
        }
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.caller(&req)?;
        let name = req.into_inner().job;
        let s = self.master.state();
        let job = s.jobs.get(&name).ok_or_else(|| Status::not_found(format!("no job named {name:?}")))?;
        let soft = self.master.soft();
        Ok(Response::new(pb::ListTasksResponse { tasks: job.tasks.iter().map(|t| task_to_pb(t, &s, &soft)).collect() }))
    }

    async fn list_crons(&self, req: Request<pb::ListCronsRequest>) -> Result<Response<pb::ListCronsResponse>, Status> {
        self.caller(&req)?;
        let state = self.master.state();
        let crons = state
            .crons
            .iter()
            .map(|(name, c)| {
                let runs = state.cron_runs(name);
                let next = c
                    .spec
                    .schedule
                    .as_deref()
                    .and_then(|s| borg_jobspec::schedule::Schedule::parse(s).ok())
                    .and_then(|s| s.next_after(c.last_tick_ms.max(c.created_ms).max(now_ms())));
                pb::CronEntry {
                    name: name.clone(),
                    user: c.spec.user.clone(),
                    schedule: c.spec.schedule.clone().unwrap_or_default(),
                    concurrency: c.spec.concurrency.name().into(),
                    history: c.spec.history,
                    suspended: c.suspended,
                    last_tick_ms: c.last_tick_ms,
                    next_tick_ms: if c.suspended { 0 } else { next.unwrap_or(0) },
                    live: runs
                        .iter()
                        .filter(|j| j.tasks.iter().any(|t| t.state != crate::state::TaskState::Dead))
                        .count() as u32,
                    runs: runs.iter().map(|j| j.spec.name.clone()).collect(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListCronsResponse { crons }))
    }

    async fn set_cron_suspended(
        &self,
        req: Request<pb::SetCronSuspendedRequest>,
    ) -> Result<Response<pb::SetCronSuspendedResponse>, Status> {
        let caller = self.caller(&req)?;
        self.require_owner_of(&caller, &req.get_ref().name, "only a job's owner or an admin may suspend or resume it")?;
        let req = match self.route(req, |mut c, r| async move { c.set_cron_suspended(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let r = req.into_inner();
        if !self.master.state().crons.contains_key(&r.name) {
            return Err(Status::not_found(format!("no cron job named {:?}", r.name)));
        }
        let command = Command::SetCronSuspended { name: r.name, suspended: r.suspended };
        self.master.propose(command).await.map_err(propose_status)?;
        Ok(Response::new(pb::SetCronSuspendedResponse {}))
    }

    async fn list_queue(&self, req: Request<pb::ListQueueRequest>) -> Result<Response<pb::ListQueueResponse>, Status> {
        self.caller(&req)?;
        let band = req.into_inner().band;
        let only = match band.as_str() {
            "" => None,
            b => Some(scheduler_core::Band::from_name(b).ok_or_else(|| {
                Status::invalid_argument(format!("band: {b:?} is not free, batch, production or monitoring"))
            })?),
        };
        let state = self.master.state();
        let snap = crate::snapshot::snapshot(&state, self.master.config.reclaim.enabled);
        let names: Vec<&crate::state::Job> = state.jobs.values().collect();
        let entry = |job_id: usize, pending: usize, waiting_for: String| {
            let j = names[job_id];
            pb::QueueEntry {
                job: j.spec.name.clone(),
                user: j.spec.user.clone(),
                priority: j.spec.priority.0,
                band: j.spec.priority.band().map_or("", |b| b.name()).to_string(),
                pending: pending as u32,
                share: snap.shares[job_id],
                waiting_for,
            }
        };
        let mut pending: HashMap<u32, usize> = HashMap::new();
        for g in &snap.groups {
            *pending.entry(g.job_id).or_default() += g.tasks.len();
        }
        let mut entries = Vec::new();
        for g in &snap.groups {
            if let Some(n) = pending.remove(&g.job_id) {
                entries.push(entry(g.job_id as usize, n, String::new()));
            }
        }
        for (i, j) in names.iter().enumerate().filter(|(_, j)| j.held()) {
            let pending = j.tasks.iter().filter(|t| t.state == crate::state::TaskState::Pending).count();
            let waiting = match state.after_state(j) {
                crate::state::After::Waiting(a) => a,
                _ => String::new(),
            };
            entries.push(entry(i, pending, waiting));
        }
        entries.retain(|e| only.is_none_or(|b| e.band == b.name()));
        Ok(Response::new(pb::ListQueueResponse { entries }))
    }

    async fn restart_job(
        &self,
        req: Request<pb::RestartJobRequest>,
    ) -> Result<Response<pb::RestartJobResponse>, Status> {
        let caller = self.caller(&req)?;
        self.require_owner_of(&caller, &req.get_ref().name, "only a job's owner or an admin may restart it")?;
        let req = match self.route(req, |mut c, r| async move { c.restart_job(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let r = req.into_inner();
        let (outcome, _) = self
            .master
            .propose(Command::RestartTasks { name: r.name.clone(), indices: r.indices.clone() })
            .await
            .map_err(propose_status)?;
        let (version, restarting) = match outcome {
            ApplyOutcome::Restarting { version, tasks } => (version, tasks),
            _ => (0, 0),
        };
        Ok(Response::new(pb::RestartJobResponse { version, restarting }))
    }

    async fn kill_job(&self, req: Request<pb::KillJobRequest>) -> Result<Response<pb::KillJobResponse>, Status> {
        let caller = self.caller(&req)?;
        self.require_owner_of(&caller, &req.get_ref().name, "only a job's owner or an admin may kill it")?;
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
        self.require_owner_of(&caller, &req.get_ref().name, "only a job's owner or an admin may delete it")?;
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
        let port_range = match (r.port_range_first, r.port_range_last) {
            (0, 0) => None,
            (first, last) if 0 < first && first <= last && last <= u16::MAX as u32 => Some((first as u16, last as u16)),
            (first, last) => {
                return Err(Status::invalid_argument(format!(
                    "port_range: {first}-{last} is not a range of ports (1-65535, first <= last)"
                )))
            }
        };
        let mut machine = Machine {
            id: MachineId(r.id.clone()),
            address: r.address.clone(),
            capacity: resources_from_pb(r.capacity.as_ref()),
            attributes: r.attributes.into_iter().collect(),
            state: MachineState::Up,
            maintenance: Default::default(),
            registered_ms: 0,
            port_range: None,
        };
        machine.port_range = port_range;
        // the machine's port count is its range's size, whatever the Borglet sent
        machine.capacity.ports = port_range.map_or(0, |(a, b)| u64::from(b - a) + 1);
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
        let u = self.master.cell_usage().await;
        let state = self.master.state();
        let r = |x| Some(borg_jobspec::convert::resources_to_pb(x));
        Ok(Response::new(pb::CellUsageResponse {
            cell: state.cell.clone(),
            machines_up: u.machines_up,
            machines_down: u.machines_down,
            capacity: r(u.capacity),
            allocated: r(u.allocated),
            used: r(u.used),
            free: r(u.free),
            stranded: r(u.stranded),
            reserved: r(u.reserved),
            reclaimed: r(u.reclaimed),
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
                    reserved: r(b.reserved),
                    reclaimed: r(b.reclaimed),
                })
                .collect(),
        }))
    }

    async fn set_maintenance(
        &self,
        req: Request<pb::SetMaintenanceRequest>,
    ) -> Result<Response<pb::SetMaintenanceResponse>, Status> {
        let by = self.caller(&req)?;
        by.admin("only admins cordon, drain or uncordon machines")?;
        let req = match self.route(req, |mut c, r| async move { c.set_maintenance(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let r = req.into_inner();
        let maintenance = match r.action.as_str() {
            "cordon" => Maintenance::Cordoned,
            "uncordon" => Maintenance::None,
            "drain" => Maintenance::Draining {
                deadline_ms: (r.deadline_seconds > 0)
                    .then(|| now_ms().saturating_add(r.deadline_seconds.saturating_mul(1000) as i64)),
            },
            other => {
                return Err(Status::invalid_argument(format!(
                    "action: {other:?} is not one of cordon, uncordon, drain"
                )))
            }
        };
        if r.machines.is_empty() {
            return Err(Status::invalid_argument("machines: name at least one machine"));
        }
        let ids: Vec<MachineId> = r.machines.iter().map(|m| MachineId(m.clone())).collect();
        let command = Command::SetMaintenance { ids: ids.clone(), maintenance, by: by.name() };
        self.master.propose(command).await.map_err(propose_status)?;
        tracing::info!(machines = ?r.machines, action = %r.action, by = %by.name(), "machine maintenance");
        let (state, soft) = (self.master.state(), self.master.soft());
        let machines =
            ids.iter().filter_map(|id| state.machines.get(id)).map(|m| machine_to_pb(m, &state, &soft)).collect();
        Ok(Response::new(pb::SetMaintenanceResponse { machines }))
    }

    async fn remove_machines(
        &self,
        req: Request<pb::RemoveMachinesRequest>,
    ) -> Result<Response<pb::RemoveMachinesResponse>, Status> {
        let by = self.caller(&req)?;
        by.admin("only admins remove machines")?;
        let req = match self.route(req, |mut c, r| async move { c.remove_machines(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let r = req.into_inner();
        if r.machines.is_empty() {
            return Err(Status::invalid_argument("machines: name at least one machine"));
        }
        let ids = r.machines.iter().map(|m| MachineId(m.clone())).collect();
        self.master
            .propose(Command::RemoveMachines { ids, force: r.force, by: by.name() })
            .await
            .map_err(propose_status)?;
        tracing::info!(machines = ?r.machines, force = r.force, by = %by.name(), "machines removed");
        Ok(Response::new(pb::RemoveMachinesResponse {}))
    }

    async fn set_quota(&self, req: Request<pb::SetQuotaRequest>) -> Result<Response<pb::SetQuotaResponse>, Status> {
        self.caller(&req)?.admin("only admins set quotas")?;
        let req = match self.route(req, |mut c, r| async move { c.set_quota(r).await }).await? {
            Route::Local(req) => req,
            Route::Forwarded(answer) => return Ok(answer),
        };
        let r = req.into_inner();
        if !borg_jobspec::job::valid_user_name(&r.user) {
            return Err(Status::invalid_argument(format!("user: {:?} is not a user name", r.user)));
        }
        let band = band_from_name(&r.band)?;
        if let Some(weight) = r.weight {
            if weight == 0 {
                return Err(Status::invalid_argument("weight: must be at least 1"));
            }
            let command = Command::SetShareWeight { user: r.user.clone(), band, weight };
            self.master.propose(command).await.map_err(propose_status)?;
            tracing::info!(user = %r.user, %band, weight, "fair-share weight set");
            if r.limit.is_none() {
                let limit =
                    self.master.state().quota_limit(&r.user, band).unwrap_or(scheduler_core::Resources::UNLIMITED);
                return Ok(Response::new(pb::SetQuotaResponse {
                    limit: Some(borg_jobspec::convert::resources_to_pb(limit)),
                }));
            }
        }
        let given = borg_jobspec::convert::resources_from_pb(r.limit.as_ref());
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
        Ok(Response::new(pb::SetQuotaResponse { limit: Some(borg_jobspec::convert::resources_to_pb(limit)) }))
    }

    async fn get_quota(&self, req: Request<pb::GetQuotaRequest>) -> Result<Response<pb::GetQuotaResponse>, Status> {
        self.caller(&req)?;
        let user = req.into_inner().user;
        let state = self.master.state();
        let to = borg_jobspec::convert::resources_to_pb;
        let rows = state
            .quota_rows((!user.is_empty()).then_some(user.as_str()))
            .into_iter()
            .map(|q| pb::QuotaRow {
                user: q.user,
                band: q.band.name().into(),
                limit: q.limit.map(to),
                used: Some(to(q.used)),
                free: q.limit.map(|l| to(crate::state::quota_headroom(l, q.used))),
                weight: q.weight,
            })
            .collect();
        Ok(Response::new(pb::GetQuotaResponse { rows }))
    }

    type WatchEndpointsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::ResolveResponse, Status>>;

    async fn watch_endpoints(
        &self,
        req: Request<pb::WatchEndpointsRequest>,
    ) -> Result<Response<Self::WatchEndpointsStream>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        let feed = self.watches.subscribe(&self.master, &r.name)?; // a bad name fails the call itself
        let (tx, rx) = tokio::sync::mpsc::channel(naming::WATCH_BUFFER);
        tokio::spawn(naming::forward(feed, r.name, r.since_index, tx, naming::WATCH_STALL));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn resolve(&self, req: Request<pb::ResolveRequest>) -> Result<Response<pb::ResolveResponse>, Status> {
        self.caller(&req)?;
        let name = req.into_inner().name;
        Ok(Response::new(naming::resolve(&self.master.state(), &name)?))
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
        Ok(Response::new(pb::ListEventsResponse { events, applied_index: state.applied_index }))
    }

    type WatchEventsStream = tokio_stream::wrappers::ReceiverStream<Result<pb::WatchEventsResponse, Status>>;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        if !r.job.is_empty() && !self.master.state().jobs.contains_key(&r.job) {
            return Err(Status::not_found(format!("no job named {:?}", r.job)));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(naming::WATCH_BUFFER);
        tokio::spawn(watch::events(self.master.clone(), r.job, r.since_index, tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    type WatchTasksStream = tokio_stream::wrappers::ReceiverStream<Result<pb::WatchTasksResponse, Status>>;

    async fn watch_tasks(
        &self,
        req: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<Self::WatchTasksStream>, Status> {
        self.caller(&req)?;
        let job = req.into_inner().job;
        if !self.master.state().jobs.contains_key(&job) {
            return Err(Status::not_found(format!("no job named {job:?}")));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(naming::WATCH_BUFFER);
        tokio::spawn(watch::tasks(self.master.clone(), job, tx));
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn task_logs(&self, req: Request<pb::TaskLogsRequest>) -> Result<Response<pb::TaskLogsResponse>, Status> {
        let caller = self.caller(&req)?;
        self.require_owner_of(
            &caller,
            &req.get_ref().job,
            "only a job's owner or an admin may read its tasks' output",
        )?;
        let r = req.into_inner();
        let (machine, mut c) = self.task_borglet(&r.job, r.index).await?;
        let mut resp = c
            .read_logs(pb::ReadLogsRequest { job: r.job, index: r.index, stream: r.stream, tail_bytes: r.tail_bytes })
            .await?
            .into_inner();
        resp.machine = machine.0;
        Ok(Response::new(resp))
    }

    type FollowTaskLogsStream = tonic::Streaming<pb::TaskLogsResponse>;

    async fn follow_task_logs(
        &self,
        req: Request<pb::TaskLogsRequest>,
    ) -> Result<Response<Self::FollowTaskLogsStream>, Status> {
        let caller = self.caller(&req)?;
        self.require_owner_of(
            &caller,
            &req.get_ref().job,
            "only a job's owner or an admin may read its tasks' output",
        )?;
        let r = req.into_inner();
        let (_, mut c) = self.task_borglet(&r.job, r.index).await?;
        let req = pb::ReadLogsRequest { job: r.job, index: r.index, stream: r.stream, tail_bytes: r.tail_bytes };
        Ok(Response::new(c.follow_logs(req).await?.into_inner()))
    }

    type ExecTaskStream = tonic::Streaming<pb::ExecResponse>;

    async fn exec_task(
        &self,
        req: Request<tonic::Streaming<pb::ExecRequest>>,
    ) -> Result<Response<Self::ExecTaskStream>, Status> {
        let caller = self.caller(&req)?;
        // the event is a write: a follower relays the whole stream to the leader
        if let Some((mut leader, md)) = self.stream_route(&req)? {
            let mut fwd = Request::new(tokio_stream::StreamExt::map_while(req.into_inner(), |m| m.ok()));
            *fwd.metadata_mut() = md;
            return Ok(Response::new(leader.exec_task(fwd).await?.into_inner()));
        }
        let mut input = req.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("exec: the first message names the task and command"))?;
        self.require_owner_of(&caller, &first.job, "only a job's owner or an admin may exec in its tasks")?;
        if first.command.is_empty() {
            return Err(Status::invalid_argument("exec: no command"));
        }
        let (machine, mut c) = self.task_borglet(&first.job, first.index).await?;
        // recorded before it runs: who ran what, where
        let record = Command::RecordExec {
            job: first.job.clone(),
            index: first.index,
            machine: machine.clone(),
            by: caller.name(),
            command: first.command.clone(),
        };
        self.master.propose(record).await.map_err(propose_status)?;
        let rest = tokio_stream::StreamExt::map_while(input, |m| m.ok());
        let relay = tokio_stream::StreamExt::chain(tokio_stream::once(first), rest);
        Ok(Response::new(c.exec(relay).await?.into_inner()))
    }

    async fn list_replicas(
        &self,
        req: Request<pb::ListReplicasRequest>,
    ) -> Result<Response<pb::ListReplicasResponse>, Status> {
        self.caller(&req)?;
        let mut asks = tokio::task::JoinSet::new();
        for m in self.master.members() {
            let (id, address, voter) = (m.id, m.address, m.voter);
            if id == self.master.id {
                let mut me = self.master.replica_status();
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
        let existing = self.master.members().into_iter().find(|m| m.id == r.id);
        if let Some(m) = existing.filter(|m| m.address != r.address) {
            return Err(Status::already_exists(format!(
                "replica {} is a member at {}; remove it first to change its address",
                r.id, m.address
            )));
        }
        tracing::info!(id = r.id, address = %r.address, "adding a replica: catching it up as a learner");
        // in a task of its own: a caller that gives up (its deadline, a dropped connection) must
        // not cancel the add halfway and leave a learner behind; the add finishes, or removes
        // the learner again, on its own deadlines
        let master = self.master.clone();
        let add = tokio::spawn(async move { master.add_replica(r.id, &r.address, CATCH_UP_TIMEOUT).await });
        let voters = add
            .await
            .map_err(|e| Status::internal(format!("adding the replica failed: {e}; see `borgctl replicas`")))?
            .map_err(|e| match e {
                e @ AddError::NotCaughtUp { .. } => Status::deadline_exceeded(e.to_string()),
                e => Status::failed_precondition(e.to_string()),
            })?;
        tracing::info!(id = r.id, "replica is a voter");
        Ok(Response::new(pb::AddReplicaResponse { voters }))
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
        tracing::info!(id, "removing a replica");
        let voters = self.master.remove_replica(id).await.map_err(|e| match e {
            e @ RemoveError::NotMember(_) => Status::not_found(e.to_string()),
            e => Status::failed_precondition(e.to_string()),
        })?;
        Ok(Response::new(pb::RemoveReplicaResponse { voters }))
    }

    async fn take_snapshot(
        &self,
        req: Request<pb::TakeSnapshotRequest>,
    ) -> Result<Response<pb::TakeSnapshotResponse>, Status> {
        self.caller(&req)?.admin("only admins make replicas take snapshots")?;
        let index = self
            .master
            .take_snapshot(std::time::Duration::from_secs(60))
            .await
            .map_err(|e| Status::unavailable(format!("snapshot of replica {}: {e}", self.master.id)))?;
        tracing::info!(index, "snapshot taken on request");
        Ok(Response::new(pb::TakeSnapshotResponse { replica: self.master.id, index }))
    }
}
