//! The Borgmaster gRPC service (`borg.v1.Borgmaster`): what borgctl and Borglets call.

use crate::convert::{event_to_pb, job_to_pb, machine_to_pb, task_to_pb};
use crate::master::{Master, ProposeError};
use crate::scheduler_loop::snapshot;
use crate::state::{ApplyOutcome, Command, CommandError, Machine, MachineState};
use borg_proto as pb;
use borg_proto::borglet_client::BorgletClient;
use borg_spec::convert::resources_from_pb;
use borg_spec::JobSpec;
use scheduler_core::{MachineId, Scheduler, TaskGroup};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Most events returned by GetJob.
const JOB_EVENTS: usize = 100;

/// The service; one per master.
pub struct BorgmasterService {
    master: Arc<Master>,
}

impl BorgmasterService {
    /// A service over `master`.
    pub fn new(master: Arc<Master>) -> Self {
        BorgmasterService { master }
    }
}

fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Rejected(CommandError::NoSuchJob(j)) => Status::not_found(format!("no job named {j:?}")),
        ProposeError::Rejected(e @ CommandError::VersionMismatch { .. }) => Status::failed_precondition(e.to_string()),
        ProposeError::Rejected(e) => Status::invalid_argument(e.to_string()),
        ProposeError::Storage(e) => Status::unavailable(format!("not stored, try again: {e}")),
    }
}

impl BorgmasterService {
    /// Dry run of an apply: how many of the spec's tasks would be placed on the cell as it is now
    /// (the job's current tasks, if any, are counted as removed; preemption counts, as it would
    /// in the real pass).
    fn plan(&self, spec: &JobSpec) -> (u32, u32, String) {
        let mut snap = snapshot(&self.master.state());
        let existing = snap.jobs.iter().position(|j| *j == spec.name).map(|i| i as u32);
        let job_id = existing.unwrap_or(snap.jobs.len() as u32);
        if let Some(id) = existing {
            for m in 0..snap.model.len() {
                let mine: Vec<_> =
                    snap.model.residents(m).iter().filter(|r| r.task.job == id).map(|r| r.task).collect();
                for t in mine {
                    snap.model.remove(m, t);
                }
            }
        }
        let group = TaskGroup {
            job_id,
            name: spec.name.clone(),
            priority: spec.priority,
            request: spec.resources,
            constraints: spec.constraints.clone(),
            different_machine: spec.different_machine,
            tasks: (0..spec.tasks).collect(),
            occupied: vec![],
        };
        let mut groups: Vec<TaskGroup> = snap.groups.into_iter().filter(|g| g.name != spec.name).collect();
        groups.push(group);
        let params = *self.master.scheduler.lock().unwrap_or_else(|e| e.into_inner()).params();
        let p = Scheduler::new(params).schedule(&mut snap.model, &groups);
        let placed = p.bindings.iter().filter(|b| b.task.job == job_id).count() as u32;
        let why = p
            .unplaced
            .iter()
            .find(|u| u.tasks.iter().any(|t| t.job == job_id))
            .map(|u| u.why.to_string())
            .unwrap_or_default();
        (placed, spec.tasks - placed, why)
    }
}

#[tonic::async_trait]
impl pb::borgmaster_server::Borgmaster for BorgmasterService {
    async fn apply_job(&self, req: Request<pb::ApplyJobRequest>) -> Result<Response<pb::ApplyJobResponse>, Status> {
        let req = req.into_inner();
        let spec_pb = req.spec.ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        let spec = JobSpec::try_from(&spec_pb).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let current = self.master.state().jobs.get(&spec.name).map(|j| (j.version, j.spec == spec && !j.killed));
        if req.dry_run {
            let (version, same) = current.unwrap_or((0, false));
            if let Some(expected) = req.expected_version {
                if expected != version {
                    return Err(propose_status(ProposeError::Rejected(CommandError::VersionMismatch {
                        job: spec.name.clone(),
                        expected,
                        actual: version,
                    })));
                }
            }
            let action = match (version, same) {
                (0, _) => "created",
                (_, true) => "unchanged",
                _ => "updated",
            };
            let (placeable, unplaceable, why_pending) = self.plan(&spec);
            return Ok(Response::new(pb::ApplyJobResponse {
                job: spec.name,
                version,
                action: action.into(),
                placeable,
                unplaceable,
                why_pending,
            }));
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
        let name = req.into_inner().name;
        let s = self.master.state();
        let job = s.jobs.get(&name).ok_or_else(|| Status::not_found(format!("no job named {name:?}")))?;
        let soft = self.master.soft();
        let mut events: Vec<pb::Event> =
            s.events.iter().rev().filter(|e| e.job == name).take(JOB_EVENTS).map(event_to_pb).collect();
        events.reverse();
        Ok(Response::new(pb::GetJobResponse { job: Some(job_to_pb(job, &soft)), events }))
    }

    async fn list_jobs(&self, _: Request<pb::ListJobsRequest>) -> Result<Response<pb::ListJobsResponse>, Status> {
        let s = self.master.state();
        let soft = self.master.soft();
        Ok(Response::new(pb::ListJobsResponse { jobs: s.jobs.values().map(|j| job_to_pb(j, &soft)).collect() }))
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Result<Response<pb::ListTasksResponse>, Status> {
        let name = req.into_inner().job;
        let s = self.master.state();
        let job = s.jobs.get(&name).ok_or_else(|| Status::not_found(format!("no job named {name:?}")))?;
        let soft = self.master.soft();
        Ok(Response::new(pb::ListTasksResponse { tasks: job.tasks.iter().map(|t| task_to_pb(t, &soft)).collect() }))
    }

    async fn kill_job(&self, req: Request<pb::KillJobRequest>) -> Result<Response<pb::KillJobResponse>, Status> {
        let name = req.into_inner().name;
        let (outcome, _) =
            self.master.propose(Command::KillJob { name: name.clone() }).await.map_err(propose_status)?;
        let killed = match outcome {
            ApplyOutcome::Killed(n) => n,
            _ => 0,
        };
        tracing::info!(job = %name, killed, "kill");
        Ok(Response::new(pb::KillJobResponse { killed }))
    }

    async fn list_machines(
        &self,
        _: Request<pb::ListMachinesRequest>,
    ) -> Result<Response<pb::ListMachinesResponse>, Status> {
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
        _: Request<pb::CellUsageRequest>,
    ) -> Result<Response<pb::CellUsageResponse>, Status> {
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

    async fn task_logs(&self, req: Request<pb::TaskLogsRequest>) -> Result<Response<pb::TaskLogsResponse>, Status> {
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
        let ep = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::internal(format!("bad address {address}: {e}")))?
            .timeout(Duration::from_secs(10));
        let ch = ep.connect().await.map_err(|e| Status::unavailable(format!("machine {machine} at {address}: {e}")))?;
        let mut resp = BorgletClient::new(ch)
            .read_logs(pb::ReadLogsRequest { job: r.job, index: r.index, stream: r.stream, tail_bytes: r.tail_bytes })
            .await?
            .into_inner();
        resp.machine = machine.0;
        Ok(Response::new(resp))
    }
}
