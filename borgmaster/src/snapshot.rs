//! The scheduler's input built from the cell state, and its decisions turned back into a
//! command: pure functions over plain data, shared by the scheduler loop and dry runs.

use crate::state::{Bind, CellState, Command, Evict, MachineState, TaskState};
use scheduler_core::{CellModel, MachineId, Placement, Resident, TaskGroup, TaskRef};
use std::collections::HashMap;

/// Attribute that names a machine's failure domain (rack); machines without it are each their
/// own domain.
pub const DOMAIN_ATTRIBUTE: &str = "rack";

/// Attribute the snapshot gives every machine: its id (per_machine tasks are pinned with it).
pub const MACHINE_ATTRIBUTE: &str = "borg.machine";

/// One scheduling input built from the cell state.
pub struct Snapshot {
    /// Machines in id order, with every live task bound to them as residents.
    pub model: CellModel,
    /// One group per job with unplaced pending tasks: by descending priority, then ascending
    /// dominant share of its user at its band (fair share), then job name.
    pub groups: Vec<TaskGroup>,
    /// Job names by [`TaskRef::job`] number.
    pub jobs: Vec<String>,
    /// Incarnation of every task, by job number then task index (0 for a dead task): one vector
    /// per job, not a map entry per task (the snapshot is built every pass, the lookups are
    /// only for the pass's decisions). See [`Snapshot::incarnation`].
    pub incarnations: Vec<Vec<u64>>,
    /// Spec version of each job, by [`TaskRef::job`] number.
    pub versions: Vec<u64>,
    /// Machines up.
    pub machines_up: usize,
    /// Live tasks bound to a machine (capacity may have been freed when this drops).
    pub bound: usize,
    /// Their reservations summed (resources were reclaimed when this drops).
    pub reserved: scheduler_core::Resources,
    /// Gang jobs with pending tasks offered in this pass: job number -> how many.
    pub gangs: HashMap<u32, usize>,
    /// Each job's user's dominant share at its band divided by the user's weight there, by job
    /// number (the fair-share order).
    pub shares: Vec<f64>,
}

impl Snapshot {
    /// The incarnation of task `t` when the snapshot was taken (0: unknown or dead).
    pub fn incarnation(&self, t: TaskRef) -> u64 {
        self.incarnations.get(t.job as usize).and_then(|v| v.get(t.index as usize)).copied().unwrap_or(0)
    }

    /// `job/index` of a task reference.
    pub fn name(&self, t: TaskRef) -> String {
        format!("{}/{}", self.jobs[t.job as usize], t.index)
    }
}

/// Builds the scheduler's view of `state`.
///
/// Groups are in the order scheduler-core takes them within a priority: fair share across
/// users by Dominant Resource Fairness ([`scheduler_core::order_by_fair_share`]: the user with
/// the smallest weighted dominant share at the band first; between equal shares the smaller
/// backlog), then job-name order. Shares are taken at the start of the pass.
///
/// With `reclaim`, each resident carries its task's committed reservation (Borg §5.5; a task
/// without one reserves its request), so batch and free tasks are placed against capacity
/// minus reservations; without, every task reserves its whole request.
pub fn snapshot(state: &CellState, reclaim: bool) -> Snapshot {
    let mut b = Builder::new(state, reclaim);
    for job in state.jobs.values() {
        b.add_job(job);
    }
    b.finish(state)
}

/// [`snapshot`] in parts: the machines first ([`Builder::new`]), then jobs in any number of
/// calls to [`Builder::add_job`] (in name order, each job whole), then [`Builder::finish`]. The
/// scheduler loop adds a slice of jobs per hold of the state's read lock, so that building the
/// input of a cell of 1,000,000 tasks never holds it for long: Raft's applies wait for the write
/// lock and, behind them, every poller (at one lock hold per pass the leader stalled for over a
/// second, and its followers stood for election: `scripts/bench-million`).
///
/// Between parts the state may change; a job seen in one part is seen whole and as it was then.
/// That is safe because the scheduler loop is the only writer that binds tasks: what changes
/// meanwhile frees capacity (a task ended, a machine went down) or adds work (a new job, a
/// task back to pending), which this pass misses or sees late and the next one places; the
/// `Bind` command rejects a stale decision (a task no longer pending, a machine no longer
/// schedulable).
pub struct Builder {
    reclaim: bool,
    model: CellModel,
    index_of: HashMap<MachineId, usize>,
    machines_up: usize,
    capacity: scheduler_core::Resources,
    groups: Vec<TaskGroup>,
    gangs: HashMap<u32, usize>,
    /// what each user's bound tasks are charged at each band (for fair share), by user number
    used_by: foldhash::HashMap<(u32, scheduler_core::Band), scheduler_core::Resources>,
    /// each job's (user number, band), by job number
    owner: Vec<(u32, Option<scheduler_core::Band>)>,
    /// users by user number, and their numbers: a job's user is cloned once per pass, not once
    /// per job (a pass sees every job)
    users: Vec<String>,
    user_numbers: foldhash::HashMap<String, u32>,
    jobs: Vec<String>,
    versions: Vec<u64>,
    incarnations: Vec<Vec<u64>>,
    bound: usize,
    reserved: scheduler_core::Resources,
}

impl Builder {
    /// A snapshot of `state`'s machines (with no tasks yet); `reclaim` as in [`snapshot`].
    pub fn new(state: &CellState, reclaim: bool) -> Builder {
        let mut model = CellModel::new();
        let mut index_of = HashMap::with_capacity(state.machines.len());
        for m in state.machines.values() {
            let domain = m.attributes.get(DOMAIN_ATTRIBUTE).unwrap_or(&m.id.0);
            let mut attrs = m.attributes.clone();
            attrs.insert(MACHINE_ATTRIBUTE.into(), m.id.0.clone());
            let i = model.push(m.id.clone(), m.capacity, attrs, domain, m.schedulable());
            index_of.insert(m.id.clone(), i);
        }
        let up = || state.machines.values().filter(|m| m.state == MachineState::Up);
        Builder {
            reclaim,
            model,
            index_of,
            machines_up: up().count(),
            capacity: up().fold(scheduler_core::Resources::ZERO, |a, m| a.saturating_add(m.capacity)),
            groups: Vec::new(),
            gangs: HashMap::new(),
            used_by: foldhash::HashMap::default(),
            owner: Vec::with_capacity(state.jobs.len()),
            users: Vec::new(),
            user_numbers: foldhash::HashMap::default(),
            jobs: Vec::with_capacity(state.jobs.len()),
            versions: Vec::with_capacity(state.jobs.len()),
            incarnations: Vec::new(),
            bound: 0,
            reserved: scheduler_core::Resources::ZERO,
        }
    }

    /// Adds `job`: its bound tasks as residents of their machines, its pending ones as groups.
    pub fn add_job(&mut self, job: &crate::state::Job) {
        let job_id = self.jobs.len() as u32;
        self.jobs.push(job.spec.name.clone());
        self.versions.push(job.version);
        let user = match self.user_numbers.get(job.spec.user.as_str()) {
            Some(&u) => u,
            None => {
                let u = self.users.len() as u32;
                self.users.push(job.spec.user.clone());
                self.user_numbers.insert(job.spec.user.clone(), u);
                u
            }
        };
        self.owner.push((user, job.spec.priority.band()));
        let mut pending = Vec::new();
        let mut pinned = Vec::new();
        let mut occupied = Vec::new();
        self.incarnations
            .push(job.tasks.iter().map(|t| if t.state == TaskState::Dead { 0 } else { t.incarnation }).collect());
        // what the job's bound tasks use, summed here and added to its user's once
        let mut used: Option<scheduler_core::Resources> = None;
        for t in job.tasks.iter().filter(|t| t.state != TaskState::Dead) {
            let r = TaskRef { job: job_id, index: t.index };
            match t.machine.as_ref().and_then(|m| self.index_of.get(m)) {
                Some(&m) => {
                    if t.alloc.is_none() {
                        let spec = job.spec_for(t.job_version);
                        let mut resident = Resident::new(r, spec.priority, spec.resources);
                        if let (true, Some(reservation)) = (self.reclaim, t.reservation) {
                            resident = resident.reserving(reservation);
                        }
                        self.reserved = self.reserved.saturating_add(resident.reservation);
                        self.model.add(m, resident);
                        used = Some(used.unwrap_or(scheduler_core::Resources::ZERO).saturating_add(spec.resources));
                    }
                    occupied.push(m);
                    self.bound += 1;
                }
                None if t.state == TaskState::Pending && job.spec.alloc_set.is_empty() => match &t.pinned {
                    Some(p) => pinned.push((t.index, p.clone())),
                    None => pending.push(t.index),
                },
                None => {}
            }
        }
        if let (Some(used), Some(band)) = (used, job.spec.priority.band()) {
            let u = self.used_by.entry((user, band)).or_insert(scheduler_core::Resources::ZERO);
            *u = u.saturating_add(used);
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
        if job.spec.gang && !pending.is_empty() {
            self.gangs.insert(job_id, pending.len());
        }
        // a job waiting for others (`after`) is not offered yet
        if !pending.is_empty() && !job.held() {
            self.groups.push(group(pending, None));
        }
        for (index, machine) in pinned {
            let pin = scheduler_core::Constraint {
                attribute: MACHINE_ATTRIBUTE.into(),
                op: scheduler_core::ConstraintOp::Eq,
                values: vec![machine.0],
            };
            self.groups.push(group(vec![index], Some(pin)));
        }
    }

    /// The snapshot, its groups in fair-share order (users' weights from `state`).
    pub fn finish(self, state: &CellState) -> Snapshot {
        let Builder { model, mut groups, gangs, used_by, owner, users, jobs, versions, incarnations, .. } = self;
        // one share per (user, band), not per job: a user's jobs are many, their users few
        let share_of_owner: foldhash::HashMap<(u32, scheduler_core::Band), f64> = used_by
            .iter()
            .map(|(&(user, band), &used)| {
                let share = scheduler_core::dominant_share(used, self.capacity);
                ((user, band), share / f64::from(state.share_weight(&users[user as usize], band)))
            })
            .collect();
        let share_of_job: Vec<f64> = owner
            .iter()
            .map(|&(user, band)| band.and_then(|b| share_of_owner.get(&(user, b))).copied().unwrap_or(0.0))
            .collect();
        scheduler_core::order_by_fair_share(
            &mut groups,
            |g| owner[g.job_id as usize],
            |g| share_of_job[g.job_id as usize],
        );
        Snapshot {
            model,
            groups,
            jobs,
            incarnations,
            versions,
            machines_up: self.machines_up,
            bound: self.bound,
            reserved: self.reserved,
            gangs,
            shares: share_of_job,
        }
    }
}

/// Gang scheduling: drops from `p` the bindings of every gang job of `snap` that did not get all
/// of its pending tasks placed, with the evictions made for them (nothing is committed for it:
/// no partial placement holds resources, no victim is evicted for a gang that will not run).
/// Returns, for each gang dropped, (job number, tasks that fit, tasks needed).
pub fn hold_partial_gangs(snap: &Snapshot, p: &mut Placement) -> Vec<(u32, usize, usize)> {
    if snap.gangs.is_empty() {
        return Vec::new();
    }
    let mut placed: HashMap<u32, usize> = HashMap::new();
    for b in &p.bindings {
        if snap.gangs.contains_key(&b.task.job) {
            *placed.entry(b.task.job).or_default() += 1;
        }
    }
    // only the gangs offered in this pass (one waiting out a backoff was not examined)
    let offered: std::collections::HashSet<u32> = snap.groups.iter().map(|g| g.job_id).collect();
    let mut held: Vec<(u32, usize, usize)> = snap
        .gangs
        .iter()
        .filter(|(job, _)| offered.contains(job))
        .filter(|(job, needed)| placed.get(job).copied().unwrap_or(0) < **needed)
        .map(|(&job, &needed)| (job, placed.get(&job).copied().unwrap_or(0), needed))
        .collect();
    held.sort_unstable();
    if held.is_empty() {
        return held;
    }
    let dropped: std::collections::HashSet<u32> = held.iter().map(|h| h.0).collect();
    p.bindings.retain(|b| !dropped.contains(&b.task.job));
    p.preempted.retain(|e| !dropped.contains(&e.by.job));
    held
}

/// The `Bind` command for a placement made on `snap`.
pub fn decisions(snap: &Snapshot, p: &Placement) -> Command {
    Command::Bind {
        bindings: p
            .bindings
            .iter()
            .map(|b| Bind {
                job: snap.jobs[b.task.job as usize].clone(),
                index: b.task.index,
                incarnation: snap.incarnation(b.task),
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
                incarnation: snap.incarnation(e.victim),
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
        let Some(allocs) = state.jobs.get(set).filter(|a| a.spec.kind == borg_jobspec::JobKind::AllocSet && !a.killed)
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
