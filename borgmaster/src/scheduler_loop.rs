//! The scheduler loop: snapshot the cell, run scheduler-core, commit the decisions as one `Bind`
//! command (one durable write per pass, however many tasks it places).

use crate::master::Master;
use crate::state::{Bind, CellState, MachineState, TaskState};
use scheduler_core::{schedule, CellModel, MachineId, TaskGroup};
use std::collections::HashMap;
use std::sync::Arc;

/// One scheduling input: the cell model, the groups to place, and each pending task's
/// incarnation (so that decisions made on this snapshot can be recognised as stale later).
pub struct Snapshot {
    /// Machines in id order.
    pub model: CellModel,
    /// One group per job with unplaced pending tasks, in job-name order.
    pub groups: Vec<TaskGroup>,
    /// (job, index) -> incarnation of each task in `groups`.
    pub incarnations: HashMap<(String, u32), u64>,
}

/// Builds the scheduler's view of `state`.
pub fn snapshot(state: &CellState) -> Snapshot {
    let mut model = CellModel::new();
    let mut index_of: HashMap<&MachineId, usize> = HashMap::new();
    for m in state.machines.values() {
        let i = model.push(
            m.id.clone(),
            m.capacity,
            state.allocated_on(&m.id),
            m.attributes.clone(),
            m.state == MachineState::Up,
        );
        index_of.insert(&m.id, i);
    }
    let mut groups = Vec::new();
    let mut incarnations = HashMap::new();
    for job in state.jobs.values() {
        let pending: Vec<u32> = job
            .tasks
            .iter()
            .filter(|t| t.state == TaskState::Pending && t.machine.is_none())
            .map(|t| t.index)
            .collect();
        if pending.is_empty() {
            continue;
        }
        for &i in &pending {
            incarnations.insert((job.spec.name.clone(), i), job.tasks[i as usize].incarnation);
        }
        let occupied = job
            .tasks
            .iter()
            .filter(|t| t.state != TaskState::Dead)
            .filter_map(|t| t.machine.as_ref().and_then(|m| index_of.get(m).copied()))
            .collect();
        groups.push(TaskGroup {
            job: job.spec.name.clone(),
            priority: job.spec.priority,
            request: job.spec.resources,
            constraints: job.spec.constraints.clone(),
            different_machine: job.spec.different_machine,
            tasks: pending,
            occupied,
        });
    }
    Snapshot { model, groups, incarnations }
}

/// Runs one scheduling pass: places what fits, records why the rest is pending, and commits the
/// placements. Returns how many tasks were bound.
pub async fn pass(master: &Master) -> usize {
    let Snapshot { mut model, groups, incarnations } = snapshot(&master.state());
    if groups.is_empty() {
        master.soft().why_pending.clear();
        return 0;
    }
    let placement = schedule(&mut model, &groups);
    {
        let mut soft = master.soft();
        soft.why_pending = placement.unplaced.iter().map(|u| (u.job.clone(), u.why.clone())).collect();
    }
    for u in &placement.unplaced {
        tracing::debug!(job = %u.job, tasks = u.tasks.len(), why = %u.why, "tasks left pending");
    }
    let bindings: Vec<Bind> = placement
        .bindings
        .iter()
        .map(|b| Bind {
            job: b.job.clone(),
            index: b.index,
            incarnation: incarnations.get(&(b.job.clone(), b.index)).copied().unwrap_or(0),
            machine: model.ids[b.machine].clone(),
        })
        .collect();
    let n = bindings.len();
    if n > 0 {
        if let Err(e) = master.propose(crate::state::Command::Bind { bindings }).await {
            tracing::error!(error = %e, "could not commit scheduling decisions; retrying next pass");
            return 0;
        }
        tracing::info!(tasks = n, "scheduled");
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
