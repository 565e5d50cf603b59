//! The scheduler loop: snapshot the cell, run scheduler-core, commit the decisions (evictions and
//! placements) as one `Bind` command: one durable write per pass, however many tasks it places.

use crate::master::{Master, Pending};
use crate::state::{Bind, CellState, Command, Evict, MachineState, TaskState};
use scheduler_core::{CellModel, MachineId, Placement, Resident, TaskGroup, TaskRef};
use std::collections::HashMap;
use std::sync::Arc;

/// Attribute that names a machine's failure domain (rack); machines without it are each their
/// own domain.
pub const DOMAIN_ATTRIBUTE: &str = "rack";

/// Most jobs whose why-pending is computed (a scan of the cell each) in one pass.
pub const EXPLAIN_PER_PASS: usize = 32;

/// A job's why-pending is recomputed when older than this (the cell changes under it).
pub const WHY_PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Attribute the snapshot gives every machine: its id (per_machine tasks are pinned with it).
pub const MACHINE_ATTRIBUTE: &str = "borg.machine";

/// First wait before a job whose pending tasks did not fit is examined again; it doubles after
/// each pass that still cannot place them, up to [`UNPLACED_BACKOFF_MAX`]. A job that cannot fit
/// costs feasibility checks against every machine, so without this a cell with many unplaceable
/// tasks (Google's trace: half its time-0 workload) spends all its CPU re-proving it.
pub const UNPLACED_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(250);

/// Longest wait before an unplaceable job is examined again. Waits are forgotten at once when
/// capacity may have been freed (a machine came up or registered, a task left a machine) or the
/// job's spec changed.
pub const UNPLACED_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(4);

/// Most poll intervals a new leader waits for every machine's first answer before its first
/// scheduling pass (see [`run`]).
pub const FIRST_ROUND_WAIT: u32 = 2;

/// Backoff of one job whose pending tasks did not fit (see [`UNPLACED_BACKOFF_MIN`]).
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The job's spec version the backoff is for.
    pub version: u64,
    /// Not examined before this.
    pub until: std::time::Instant,
    /// The current wait.
    pub delay: std::time::Duration,
}

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
    /// Spec version of each job, by [`TaskRef::job`] number.
    pub versions: Vec<u64>,
    /// Machines up.
    pub machines_up: usize,
    /// Live tasks bound to a machine (capacity may have been freed when this drops).
    pub bound: usize,
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
    let machines_up = state.machines.values().filter(|m| m.state == MachineState::Up).count();
    let mut bound = 0;
    let mut index_of: HashMap<&MachineId, usize> = HashMap::new();
    for m in state.machines.values() {
        let domain = m.attributes.get(DOMAIN_ATTRIBUTE).unwrap_or(&m.id.0);
        let mut attrs = m.attributes.clone();
        attrs.insert(MACHINE_ATTRIBUTE.into(), m.id.0.clone());
        let i = model.push(m.id.clone(), m.capacity, attrs, domain, m.state == MachineState::Up);
        index_of.insert(&m.id, i);
    }
    let mut groups = Vec::new();
    let mut jobs = Vec::with_capacity(state.jobs.len());
    let mut versions = Vec::with_capacity(state.jobs.len());
    let mut incarnations = HashMap::new();
    for (job_id, job) in state.jobs.values().enumerate() {
        let job_id = job_id as u32;
        jobs.push(job.spec.name.clone());
        versions.push(job.version);
        let mut pending = Vec::new();
        let mut pinned = Vec::new();
        let mut occupied = Vec::new();
        for t in job.tasks.iter().filter(|t| t.state != TaskState::Dead) {
            let r = TaskRef { job: job_id, index: t.index };
            incarnations.insert(r, t.incarnation);
            match t.machine.as_ref().and_then(|m| index_of.get(m)) {
                Some(&m) => {
                    if t.alloc.is_none() {
                        let spec = job.spec_for(t.job_version);
                        model.add(m, Resident { task: r, priority: spec.priority, request: spec.resources });
                    }
                    occupied.push(m);
                    bound += 1;
                }
                None if t.state == TaskState::Pending && job.spec.alloc_set.is_empty() => match &t.pinned {
                    Some(p) => pinned.push((t.index, p.clone())),
                    None => pending.push(t.index),
                },
                None => {}
            }
        }
        let group = |tasks: Vec<u32>, extra: Option<scheduler_core::Constraint>| {
            let mut constraints = job.spec.constraints.clone();
            constraints.extend(extra);
            TaskGroup {
                job_id,
                name: job.spec.name.clone(),
                priority: job.spec.priority,
                request: job.spec.resources,
                constraints,
                different_machine: job.spec.different_machine,
                tasks,
                occupied: occupied.clone(),
            }
        };
        if !pending.is_empty() {
            groups.push(group(pending, None));
        }
        for (index, machine) in pinned {
            let pin = scheduler_core::Constraint {
                attribute: MACHINE_ATTRIBUTE.into(),
                op: scheduler_core::ConstraintOp::Eq,
                values: vec![machine.0],
            };
            groups.push(group(vec![index], Some(pin)));
        }
    }
    Snapshot { model, groups, jobs, incarnations, versions, machines_up, bound }
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
                alloc: None,
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

/// Places pending tasks of jobs that run in alloc sets into those sets' allocs (first alloc, by
/// index, whose remaining reservation fits the task; Borg §2.4). Returns the bindings and, per
/// job with tasks left over, why.
pub fn alloc_bindings(state: &CellState) -> (Vec<Bind>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut why = Vec::new();
    for job in state.jobs.values().filter(|j| !j.spec.alloc_set.is_empty() && !j.killed) {
        let pending: Vec<&crate::state::Task> =
            job.tasks.iter().filter(|t| t.state == TaskState::Pending && t.machine.is_none()).collect();
        if pending.is_empty() {
            continue;
        }
        let set = &job.spec.alloc_set;
        let Some(allocs) = state.jobs.get(set).filter(|a| a.spec.kind == borg_spec::JobKind::AllocSet && !a.killed)
        else {
            why.push((job.spec.name.clone(), format!("alloc set {set:?} does not exist")));
            continue;
        };
        // room left in each live alloc
        let mut room: Vec<(u32, MachineId, scheduler_core::Resources)> = allocs
            .tasks
            .iter()
            .filter(|a| a.state == TaskState::Running)
            .filter_map(|a| a.machine.clone().map(|m| (a.index, m, allocs.spec.resources)))
            .collect();
        for j in state.jobs.values().filter(|j| j.spec.alloc_set == *set) {
            for t in j.tasks.iter().filter(|t| t.state != TaskState::Dead) {
                if let Some(r) = t.alloc.and_then(|a| room.iter_mut().find(|r| r.0 == a)) {
                    r.2 = r.2.saturating_sub(j.spec_for(t.job_version).resources);
                }
            }
        }
        let mut left = 0;
        for t in pending {
            match room.iter_mut().find(|r| job.spec.resources.fits_in(&r.2)) {
                Some(r) => {
                    r.2 = r.2.saturating_sub(job.spec.resources);
                    out.push(Bind {
                        job: job.spec.name.clone(),
                        index: t.index,
                        incarnation: t.incarnation,
                        machine: r.1.clone(),
                        alloc: Some(r.0),
                    });
                }
                None => left += 1,
            }
        }
        if left > 0 {
            why.push((
                job.spec.name.clone(),
                format!("0/{} allocs of {set} have room for {left} more task(s)", room.len()),
            ));
        }
    }
    (out, why)
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
    let (mut snap, (alloc_binds, alloc_why)) = {
        let state = master.state();
        (snapshot(&state), alloc_bindings(&state))
    };
    let now = std::time::Instant::now();
    // jobs waiting out a backoff keep their last why-pending
    let mut why: HashMap<String, Pending> = alloc_why.into_iter().map(|(j, w)| (j, Pending::Other(w))).collect();
    {
        let mut soft = master.soft();
        let capacity = (snap.machines_up, snap.bound);
        if capacity.0 > soft.last_capacity.0 || capacity.1 < soft.last_capacity.1 {
            soft.unplaced_backoff.clear();
        }
        soft.last_capacity = capacity;
        let soft = &mut *soft;
        let (backoff, old_why) = (&soft.unplaced_backoff, &soft.why_pending);
        snap.groups.retain(|g| {
            let waiting =
                backoff.get(&g.name).is_some_and(|b| b.version == snap.versions[g.job_id as usize] && now < b.until);
            if let (true, Some(w)) = (waiting, old_why.get(&g.name)) {
                why.insert(g.name.clone(), w.clone());
            }
            !waiting
        });
    }
    if snap.groups.is_empty() && alloc_binds.is_empty() {
        master.soft().why_pending = why;
        return 0;
    }
    // a pass is CPU-bound (and rayon-parallel): let this runtime thread's other tasks (polls,
    // RPCs, Raft) move to another thread while it runs
    let placement = tokio::task::block_in_place(|| {
        let mut s = master.scheduler.lock().unwrap_or_else(|e| e.into_inner());
        // the model is rebuilt each pass, so cached scores would refer to other versions
        s.clear_cache();
        s.schedule(&mut snap.model, &snap.groups)
    });
    {
        // Reasons cost a scan of the cell per job: keep the ones known for less than
        // WHY_PENDING_TTL, (re)explain at most EXPLAIN_PER_PASS jobs per pass, on the model as
        // the pass left it.
        let mut soft = master.soft();
        let mut explained = 0;
        let unplaced_jobs: std::collections::BTreeSet<u32> =
            placement.unplaced.iter().flat_map(|u| u.tasks.iter().map(|t| t.job)).collect();
        // back off every job examined that still has tasks that do not fit; forget the rest
        for g in &snap.groups {
            if !unplaced_jobs.contains(&g.job_id) {
                soft.unplaced_backoff.remove(&g.name);
            }
        }
        for &job in &unplaced_jobs {
            let name = &snap.jobs[job as usize];
            let version = snap.versions[job as usize];
            let delay = match soft.unplaced_backoff.get(name) {
                Some(b) if b.version == version => (b.delay * 2).min(UNPLACED_BACKOFF_MAX),
                _ => UNPLACED_BACKOFF_MIN,
            };
            soft.unplaced_backoff.insert(name.clone(), Backoff { version, until: now + delay, delay });
        }
        let mut at = std::mem::take(&mut soft.why_pending_at);
        for job in unplaced_jobs {
            let name = &snap.jobs[job as usize];
            let fresh = at.get(name).is_some_and(|t| t.elapsed() < WHY_PENDING_TTL);
            match soft.why_pending.get(name) {
                Some(w) if fresh || explained >= EXPLAIN_PER_PASS => {
                    why.insert(name.clone(), w.clone());
                }
                _ if explained < EXPLAIN_PER_PASS => {
                    if let Some(g) = snap.groups.iter().find(|g| g.job_id == job) {
                        why.insert(name.clone(), Pending::Machines(scheduler_core::explain(&snap.model, g)));
                        at.insert(name.clone(), std::time::Instant::now());
                        explained += 1;
                    }
                }
                _ => {}
            }
        }
        at.retain(|j, _| why.contains_key(j));
        soft.why_pending = why;
        soft.why_pending_at = at;
    }
    let mut command = decisions(&snap, &placement);
    if let Command::Bind { bindings, .. } = &mut command {
        bindings.extend(alloc_binds);
    }
    let (n, evicted) = match &command {
        Command::Bind { bindings, evictions } => (bindings.len(), evictions.len()),
        _ => (0, 0),
    };
    if n + evicted > 0 {
        if let Err(e) = master.propose(command).await {
            tracing::error!(error = %e, "could not commit scheduling decisions; retrying next pass");
            return 0;
        }
        tracing::info!(tasks = n, preempted = evicted, "scheduled");
    }
    n
}

/// Runs scheduling passes forever: whenever something may have become placeable (new jobs,
/// freed resources, machine changes, evictions), and at least every `schedule_interval` as a
/// safety net. A pass with nothing new to place costs a snapshot of the cell, so idle cells
/// should not pass often.
///
/// A newly elected leader first hears from its Borglets: its first pass waits until every
/// registered machine has answered a poll, or for [`FIRST_ROUND_WAIT`] poll intervals at most
/// (a dead machine never answers). Its first pass examines every pending job (backoffs are soft
/// state and start empty), which in a cell with many unplaceable tasks (the 2011 trace's) takes
/// both cores for seconds: it should not compete with the round that tells the new leader which
/// machines are alive.
pub async fn run(master: Arc<Master>) {
    let deadline = tokio::time::Instant::now() + master.config.poll_interval * FIRST_ROUND_WAIT;
    let has_machines = !master.state().machines.is_empty();
    while has_machines && !master.soft().first_round_done {
        if tokio::time::timeout_at(deadline, master.schedule_wakeup.notified()).await.is_err() {
            tracing::info!("not every machine answered the first poll round; scheduling anyway");
            break;
        }
    }
    loop {
        pass(&master).await;
        let _ = tokio::time::timeout(master.config.schedule_interval, master.schedule_wakeup.notified()).await;
    }
}
