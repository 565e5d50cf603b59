//! The scheduler loop: snapshot the cell, run scheduler-core, commit the decisions (evictions and
//! placements) as one `Bind` command: one durable write per pass, however many tasks it places.

use crate::master::Master;
use crate::state::{Bind, CellState, Command, Evict, MachineState, TaskState};
use scheduler_core::{CellModel, MachineId, Placement, Resident, TaskGroup, TaskRef};
use std::collections::HashMap;
use std::sync::Arc;

/// Attribute that names a machine's failure domain (rack); machines without it are each their
/// own domain.
pub const DOMAIN_ATTRIBUTE: &str = "rack";

/// One scheduling input built from the cell state.
pub struct Snapshot {
    /// Machines in id order, with every live task bound to them as residents.
    pub model: CellModel,
    /// One group per job with unplaced pending tasks, in job-name order.
    pub groups: Vec<TaskGroup>,
    /// Job names by [`TaskRef::job`] number.
    pub jobs: Vec<String>,
    /// Incarnation of every task in the snapshot that is pending or bound, by (job number, index).
    pub incarnations: HashMap<TaskRef, u64>,
}

impl Snapshot {
    /// `job/index` of a task reference.
    pub fn name(&self, t: TaskRef) -> String {
        format!("{}/{}", self.jobs[t.job as usize], t.index)
    }
}

/// Builds the scheduler's view of `state`.
pub fn snapshot(state: &CellState) -> Snapshot {
    let mut model = CellModel::new();
    let mut index_of: HashMap<&MachineId, usize> = HashMap::new();
    for m in state.machines.values() {
        let domain = m.attributes.get(DOMAIN_ATTRIBUTE).unwrap_or(&m.id.0);
        let i = model.push(m.id.clone(), m.capacity, m.attributes.clone(), domain, m.state == MachineState::Up);
        index_of.insert(&m.id, i);
    }
    let mut groups = Vec::new();
    let mut jobs = Vec::with_capacity(state.jobs.len());
    let mut incarnations = HashMap::new();
    for (job_id, job) in state.jobs.values().enumerate() {
        let job_id = job_id as u32;
        jobs.push(job.spec.name.clone());
        let mut pending = Vec::new();
        let mut occupied = Vec::new();
        for t in job.tasks.iter().filter(|t| t.state != TaskState::Dead) {
            let r = TaskRef { job: job_id, index: t.index };
            incarnations.insert(r, t.incarnation);
            match t.machine.as_ref().and_then(|m| index_of.get(m)) {
                Some(&m) => {
                    model.add(m, Resident { task: r, priority: job.spec.priority, request: job.spec.resources });
                    occupied.push(m);
                }
                None if t.state == TaskState::Pending => pending.push(t.index),
                None => {}
            }
        }
        if !pending.is_empty() {
            groups.push(TaskGroup {
                job_id,
                name: job.spec.name.clone(),
                priority: job.spec.priority,
                request: job.spec.resources,
                constraints: job.spec.constraints.clone(),
                different_machine: job.spec.different_machine,
                tasks: pending,
                occupied,
            });
        }
    }
    Snapshot { model, groups, jobs, incarnations }
}

/// The `Bind` command for a placement made on `snap`.
pub fn decisions(snap: &Snapshot, p: &Placement) -> Command {
    let inc = |t: &TaskRef| snap.incarnations.get(t).copied().unwrap_or(0);
    Command::Bind {
        bindings: p
            .bindings
            .iter()
            .map(|b| Bind {
                job: snap.jobs[b.task.job as usize].clone(),
                index: b.task.index,
                incarnation: inc(&b.task),
                machine: snap.model.ids[b.machine].clone(),
            })
            .collect(),
        evictions: p
            .preempted
            .iter()
            .map(|e| Evict {
                job: snap.jobs[e.victim.job as usize].clone(),
                index: e.victim.index,
                incarnation: inc(&e.victim),
                machine: snap.model.ids[e.machine].clone(),
                by: snap.name(e.by),
            })
            .collect(),
    }
}

/// Runs one scheduling pass: places what fits (preempting lower bands where needed), records why
/// the rest is pending, and commits the decisions. Returns how many tasks were bound.
pub async fn pass(master: &Master) -> usize {
    let started = std::time::Instant::now();
    let n = pass_inner(master).await;
    metrics::histogram!(crate::metrics::PASS_SECONDS).record(started.elapsed().as_secs_f64());
    n
}

async fn pass_inner(master: &Master) -> usize {
    let mut snap = snapshot(&master.state());
    if snap.groups.is_empty() {
        master.soft().why_pending.clear();
        return 0;
    }
    let placement = {
        let mut s = master.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        // the model is rebuilt each pass, so cached scores would refer to other versions
        s.clear_cache();
        s.schedule(&mut snap.model, &snap.groups)
    };
    {
        let mut soft = master.soft();
        soft.why_pending.clear();
        for u in &placement.unplaced {
            for t in &u.tasks {
                soft.why_pending.entry(snap.jobs[t.job as usize].clone()).or_insert_with(|| u.why.clone());
            }
            tracing::debug!(tasks = u.tasks.len(), why = %u.why, "tasks left pending");
        }
    }
    let (n, evicted) = (placement.bindings.len(), placement.preempted.len());
    if n + evicted > 0 {
        if let Err(e) = master.propose(decisions(&snap, &placement)).await {
            tracing::error!(error = %e, "could not commit scheduling decisions; retrying next pass");
            return 0;
        }
        tracing::info!(tasks = n, preempted = evicted, "scheduled");
    }
    n
}

/// Runs scheduling passes forever: when woken (new jobs, freed resources, machine changes) and
/// at least every `schedule_interval`.
pub async fn run(master: Arc<Master>) {
    loop {
        pass(&master).await;
        let _ = tokio::time::timeout(master.config.schedule_interval, master.schedule_wakeup.notified()).await;
    }
}
