//! Cell state records -> API messages.

use crate::soft::SoftState;
use crate::state::{CellState, Event, Job, Machine, MachineState, Task, TaskState};
use borg_jobspec::convert::resources_to_pb;
use borg_proto as pb;

/// Task state -> API enum.
pub fn task_state_to_pb(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Pending => pb::TaskState::Pending,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Dead => pb::TaskState::Dead,
    }
}

/// A task record as the API shows it, with its usage from the soft state.
pub fn task_to_pb(t: &Task, state: &CellState, soft: &SoftState) -> pb::Task {
    let used = soft.usage_of_task(t).unwrap_or_default();
    let host = t.machine.as_ref().and_then(|m| state.machines.get(m)).map(|m| borg_rpc::auth::host_of(&m.address));
    pb::Task {
        ports: t.ports.iter().map(|(k, v)| (k.clone(), u32::from(*v))).collect(),
        host: host.unwrap_or_default().to_string(),
        ready: t.ready,
        ready_since_ms: if t.ready { t.ready_since_ms } else { 0 },
        reservation: (state.charge_of(t) != scheduler_core::Resources::ZERO)
            .then(|| resources_to_pb(state.reservation_of(t))),
        used: Some(resources_to_pb(used)),
        alloc: t.alloc,
        scheduled_ms: t.scheduled_ms,
        queued_ms: t.queued_ms,
        job: t.job.clone(),
        index: t.index,
        state: task_state_to_pb(t.state) as i32,
        machine: t.machine.as_ref().map(|m| m.0.clone()),
        exit_code: t.exit_code,
        restarts: t.restarts,
        pid: t.pid,
        reason: t.reason.clone(),
        incarnation: t.incarnation,
        state_since_ms: t.state_since_ms,
        signal: t.signal,
        job_version: t.job_version,
    }
}

/// A job with its task counts, allocation ([`CellState::charge_of`]: tasks inside allocs are
/// not charged again) and usage and, if some tasks are unplaced, why.
pub fn job_to_pb(state: &CellState, j: &Job, soft: &SoftState) -> pb::Job {
    let count = |s: TaskState| j.tasks.iter().filter(|t| t.state == s).count() as u32;
    let unplaced = j.tasks.iter().any(|t| t.state == TaskState::Pending && t.machine.is_none());
    let mut allocated = scheduler_core::Resources::ZERO;
    let mut used = scheduler_core::Resources::ZERO;
    let mut reserved = scheduler_core::Resources::ZERO;
    for t in j.tasks.iter().filter(|t| t.state != TaskState::Dead) {
        allocated = allocated.saturating_add(state.charge_of(t));
        reserved = reserved.saturating_add(state.reservation_of(t));
        used = used.saturating_add(soft.usage_of_task(t).unwrap_or_default());
    }
    let why = soft.why_pending.get(&j.spec.name).filter(|_| unplaced);
    let (machines, reasons) = why.map(|w| w.reasons()).unwrap_or_default();
    pb::Job {
        allocated: Some(resources_to_pb(allocated)),
        used: Some(resources_to_pb(used)),
        reserved: Some(resources_to_pb(reserved)),
        spec: Some(j.spec.as_ref().into()),
        version: j.version,
        submitted_ms: j.submitted_ms,
        pending: count(TaskState::Pending),
        running: count(TaskState::Running),
        dead: count(TaskState::Dead),
        succeeded: j.tasks.iter().filter(|t| t.state == TaskState::Dead && t.exit_code == Some(0)).count() as u32,
        state: j.state_name().to_string(),
        why_pending: match state.after_state(j) {
            crate::state::After::Waiting(a) if j.held() => format!("waiting for job {a} (after)"),
            _ => why.map(ToString::to_string).unwrap_or_default(),
        },
        why_pending_reasons: reasons.into_iter().map(|(r, n)| (r, n as u32)).collect(),
        why_pending_machines: machines as u32,
        paused: j.paused.clone().unwrap_or_default(),
        updated: j.tasks.iter().filter(|t| t.state != TaskState::Dead && t.job_version == j.version).count() as u32,
        ready: j.tasks.iter().filter(|t| t.state != TaskState::Dead && t.job_version == j.version && t.ready).count()
            as u32,
    }
}

/// A machine with its allocation (from the state) and usage (from the soft state).
pub fn machine_to_pb(m: &Machine, state: &CellState, soft: &SoftState) -> pb::Machine {
    pb::Machine {
        id: m.id.0.clone(),
        address: m.address.clone(),
        capacity: Some(resources_to_pb(m.capacity)),
        allocated: Some(resources_to_pb(state.allocated_on(&m.id))),
        attributes: m.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        state: match m.state {
            MachineState::Up => pb::MachineState::Up,
            MachineState::Down => pb::MachineState::Down,
        } as i32,
        last_seen_ms: soft.last_seen_ms.get(&m.id).copied().unwrap_or(0),
        tasks: state.task_count_on(&m.id) as u32,
        used: Some(resources_to_pb(soft.machine_usage.get(&m.id).copied().unwrap_or_default())),
        port_range_first: m.port_range.map_or(0, |r| u32::from(r.0)),
        port_range_last: m.port_range.map_or(0, |r| u32::from(r.1)),
        lifecycle: state.machine_state_name(&m.id).to_string(),
    }
}

/// An event as the API shows it.
pub fn event_to_pb(e: &Event) -> pb::Event {
    pb::Event {
        time_ms: e.time_ms,
        job: e.job.clone(),
        index: e.index,
        kind: e.kind.as_str().to_string(),
        detail: e.detail.clone(),
        machine: e.machine.as_ref().map(|m| m.0.clone()),
        log_index: e.log_index,
    }
}
