//! The simulations: repack, replay and compaction, each returning a JSON report and the final
//! placement.

use crate::workload::{cell_model, groups, EventKind, Task, Workload};
use rayon::prelude::*;
use scheduler_core::{Band, CellModel, Params, Placement, Resident, Resource, Scheduler, TaskRef};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

/// A final placement: (job name, task index, machine id), sorted.
pub type Placements = Vec<(String, u32, String)>;

/// A finished run: the report (see the README's fauxmaster section for its fields) and the
/// final placement.
pub struct Outcome {
    /// JSON report.
    pub report: Value,
    /// Final placement.
    pub placements: Placements,
    /// Utilization samples over time (replay only).
    pub samples: Vec<crate::report::Sample>,
}

fn band_name(b: usize) -> &'static str {
    Band::ALL[b.min(3)].name()
}

/// Utilization of `cell` (machines that are up): per resource, the share of capacity
/// allocated by each band and in total.
pub fn utilization(cell: &CellModel) -> Value {
    let mut cap = [0f64; 3];
    let mut by_band = [[0f64; 3]; 4];
    for m in (0..cell.len()).filter(|&m| cell.up[m]) {
        for (i, r) in Resource::ALL.into_iter().enumerate() {
            cap[i] += cell.capacity[m].get(r) as f64;
        }
        for (b, a) in cell.allocated_by_band(m).iter().enumerate() {
            for (i, r) in Resource::ALL.into_iter().enumerate() {
                by_band[b][i] += a.get(r) as f64;
            }
        }
    }
    let mut out = serde_json::Map::new();
    for (i, r) in Resource::ALL.into_iter().enumerate() {
        let mut m = serde_json::Map::new();
        let mut total = 0.0;
        for (b, row) in by_band.iter().enumerate() {
            let u = if cap[i] > 0.0 { row[i] / cap[i] } else { 0.0 };
            total += u;
            m.insert(band_name(b).into(), json!(round4(u)));
        }
        m.insert("total".into(), json!(round4(total)));
        out.insert(r.name().into(), Value::Object(m));
    }
    Value::Object(out)
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn params_json(p: &Params) -> Value {
    json!({
        "seed": p.seed, "candidates": p.candidates, "per_task": p.per_task, "fit_walk": p.fit_walk, "preemption": p.preemption,
        "weights": {"pack": p.weights.pack, "strand": p.weights.strand, "preempt": p.weights.preempt, "spread": p.weights.spread},
    })
}

fn by_band(counts: &[usize; 4]) -> Value {
    json!({"free": counts[0], "batch": counts[1], "production": counts[2], "monitoring": counts[3]})
}

fn placements_of(cell: &CellModel, jobs: &[String]) -> Placements {
    let mut out: Placements = (0..cell.len())
        .flat_map(|m| cell.residents(m).iter().map(move |r| (m, r.task)))
        .map(|(m, t)| (jobs.get(t.job as usize).cloned().unwrap_or_default(), t.index, cell.ids[m].0.clone()))
        .collect();
    out.sort();
    out
}

/// Schedules every time-0 task of `w` onto its time-0 cell, empty, in one pass; with
/// `reclaim`, then in more passes after each task reserves its estimate ([`repack_cell`]), and
/// the report's `reclaim` compares with a repack without.
pub fn repack(w: &Workload, params: Params, reclaim: bool) -> Outcome {
    let (cell, placement, seconds, passes) = repack_cell(w, &w.machines.iter().collect::<Vec<_>>(), params, reclaim);
    let band_of: HashMap<TaskRef, usize> =
        w.tasks.iter().map(|t| (TaskRef { job: t.job, index: t.index }, CellModel::band_of(t.priority))).collect();
    let mut tasks = [0usize; 4];
    for t in &w.tasks {
        tasks[CellModel::band_of(t.priority)] += 1;
    }
    let mut placed = [0usize; 4];
    for b in &placement.bindings {
        placed[band_of[&b.task]] += 1;
    }
    let unplaced: Vec<usize> = (0..4).map(|b| tasks[b] - placed[b]).collect();
    let n = placement.bindings.len();
    let report = json!({
        "command": "repack",
        "machines": w.machines.len(),
        "tasks": w.tasks.len(),
        "placed": n,
        "unschedulable": w.tasks.len() - n,
        "preempted": placement.preempted.len(),
        "seconds": seconds,
        "tasks_per_second": if seconds > 0.0 { n as f64 / seconds } else { 0.0 },
        "passes": passes,
        "pass_p50_ms": seconds * 1000.0 / passes as f64,
        "pass_p99_ms": seconds * 1000.0 / passes as f64,
        "tasks_by_band": by_band(&tasks),
        "placed_by_band": by_band(&placed),
        "unschedulable_by_band": by_band(&[unplaced[0], unplaced[1], unplaced[2], unplaced[3]]),
        "equivalence_classes": placement.stats.classes,
        "machines_examined": placement.stats.examined,
        "scores_computed": placement.stats.scored,
        "utilization": utilization(&cell),
        "units": w.units,
        "scheduler": params_json(&params),
    });
    let mut report = report;
    if reclaim {
        let (base, _, _, _) = repack_cell(w, &w.machines.iter().collect::<Vec<_>>(), params, false);
        report["reclaim"] = reclaim_report(w, &cell, &placed, &base);
    }
    Outcome { report, placements: placements_of(&cell, &w.jobs), samples: Vec::new() }
}

/// Most passes a reclaiming repack makes.
const RECLAIM_PASSES: usize = 8;

/// Every task on `cell` reserves its estimate ([`crate::usage::reservation`]) instead of its
/// request: the cell as it stands once every task has run past its warmup. `tasks` by ref.
fn settle_reservations(cell: &mut CellModel, tasks: &HashMap<TaskRef, &Task>) {
    for m in 0..cell.len() {
        let rs: Vec<TaskRef> = cell.residents(m).iter().map(|r| r.task).collect();
        for r in rs {
            let Some(t) = tasks.get(&r) else { continue };
            cell.set_reservation(m, r, crate::usage::reservation(t, 0));
        }
    }
}

/// One repack of `w.tasks` onto `machines`; returns the cell, the placement (with `reclaim`:
/// every task placed, the last pass's unplaced and every pass's preemptions), the seconds the
/// scheduling took (building the cell and groups included) and the passes made.
///
/// With `reclaim` (Borg §5.5), after each pass every placed task reserves its estimate
/// ([`settle_reservations`]), and the tasks left pending get another pass, until one places
/// nothing (at most [`RECLAIM_PASSES`]): newly placed tasks reserve their request within the
/// pass that places them, as in the master, where a task is reserved at its request until its
/// warmup is over.
fn repack_cell(
    w: &Workload,
    machines: &[&crate::workload::Machine],
    params: Params,
    reclaim: bool,
) -> (CellModel, Placement, f64, usize) {
    let start = Instant::now();
    let owned: Vec<crate::workload::Machine> = machines.iter().map(|m| (*m).clone()).collect();
    let mut cell = cell_model(&owned);
    let tasks: Vec<&Task> = w.tasks.iter().collect();
    let gs = groups(&tasks, &w.jobs, &w.constraints);
    let mut s = Scheduler::new(params);
    let mut p = s.schedule(&mut cell, &gs);
    let mut passes = 1;
    if reclaim {
        let by_ref: HashMap<TaskRef, &Task> =
            tasks.iter().map(|t| (TaskRef { job: t.job, index: t.index }, *t)).collect();
        loop {
            settle_reservations(&mut cell, &by_ref);
            let resident: std::collections::HashSet<TaskRef> =
                (0..cell.len()).flat_map(|m| cell.residents(m).iter().map(|r| r.task)).collect();
            let left: Vec<&Task> =
                tasks.iter().copied().filter(|t| !resident.contains(&TaskRef { job: t.job, index: t.index })).collect();
            if left.is_empty() {
                p.unplaced.clear();
                break;
            }
            if passes >= RECLAIM_PASSES {
                break;
            }
            let mut gs = groups(&left, &w.jobs, &w.constraints);
            for g in gs.iter_mut().filter(|g| g.different_machine) {
                g.occupied =
                    (0..cell.len()).filter(|&m| cell.residents(m).iter().any(|r| r.task.job == g.job_id)).collect();
            }
            s.clear_cache();
            let q = s.schedule(&mut cell, &gs);
            passes += 1;
            p.preempted.extend(q.preempted);
            p.unplaced = q.unplaced;
            if q.bindings.is_empty() {
                break;
            }
        }
        p.bindings = (0..cell.len())
            .flat_map(|m| cell.residents(m).iter().map(move |r| scheduler_core::Binding { task: r.task, machine: m }))
            .collect();
    }
    (cell, p, start.elapsed().as_secs_f64(), passes)
}

/// Per resource (CPU, RAM), summed over machines: how much of the non-production requests on
/// `cell` lies beyond its capacity (what runs in resources reclaimed from others: on each
/// machine, the smaller of its requests' excess over capacity and its non-production
/// requests), and the non-production requests.
fn in_reclaimed(cell: &CellModel) -> ([u128; 2], [u128; 2]) {
    let (mut beyond, mut nonprod) = ([0u128; 2], [0u128; 2]);
    for m in 0..cell.len() {
        let by_band = cell.allocated_by_band(m);
        let np = by_band[0].saturating_add(by_band[1]);
        let all = by_band.iter().fold(scheduler_core::Resources::ZERO, |a, b| a.saturating_add(*b));
        let over = all.saturating_sub(cell.capacity[m]);
        for (i, r) in [Resource::Cpu, Resource::Ram].into_iter().enumerate() {
            beyond[i] += u128::from(over.get(r).min(np.get(r)));
            nonprod[i] += u128::from(np.get(r));
        }
    }
    (beyond, nonprod)
}

/// The `reclaim` part of a repack report: placed by production / non-production with and
/// without reclamation, the share of non-production requests running in reclaimed resources,
/// and reservations against requests.
fn reclaim_report(w: &Workload, cell: &CellModel, placed: &[usize; 4], base: &CellModel) -> Value {
    let count = |c: &CellModel| {
        let mut n = [0usize; 4];
        for m in 0..c.len() {
            for r in c.residents(m) {
                n[CellModel::band_of(r.priority)] += 1;
            }
        }
        n
    };
    let b = count(base);
    let (beyond, nonprod) = in_reclaimed(cell);
    let share = |i: usize| if nonprod[i] > 0 { round4(beyond[i] as f64 / nonprod[i] as f64) } else { 0.0 };
    let (mut req, mut res) = ([0u128; 2], [0u128; 2]);
    for m in 0..cell.len() {
        for r in cell.residents(m) {
            for (i, x) in [Resource::Cpu, Resource::Ram].into_iter().enumerate() {
                req[i] += u128::from(r.request.get(x));
                res[i] += u128::from(r.reservation.get(x));
            }
        }
    }
    let ratio = |i: usize| if req[i] > 0 { round4(res[i] as f64 / req[i] as f64) } else { 0.0 };
    let given = w.tasks.iter().filter(|t| t.usage.is_some()).count();
    json!({
        "usage": if given == 0 { "modeled" } else if given == w.tasks.len() { "given" } else { "given, else modeled" },
        "production_placed": placed[2] + placed[3],
        "production_placed_without_reclaim": b[2] + b[3],
        "non_production_placed": placed[0] + placed[1],
        "non_production_placed_without_reclaim": b[0] + b[1],
        "more_non_production_placed": (placed[0] + placed[1]) as i64 - (b[0] + b[1]) as i64,
        "non_production_in_reclaimed_share": {"cpu": share(0), "ram": share(1)},
        "reserved_over_requested": {"cpu": ratio(0), "ram": ratio(1)},
    })
}

/// What makes pending tasks one scheduler group: job, priority, request, different_machine.
type GroupKey = (u32, scheduler_core::Priority, scheduler_core::Resources, bool);

/// Pending tasks kept grouped as the scheduler wants them, so a pass does not regroup them.
#[derive(Default)]
struct Pending {
    /// Group key -> (first-seen sequence, task indices).
    groups: HashMap<GroupKey, (u64, std::collections::BTreeSet<u32>)>,
    of: HashMap<TaskRef, GroupKey>,
    seq: u64,
}

impl Pending {
    fn insert(&mut self, t: &Task) {
        let r = TaskRef { job: t.job, index: t.index };
        self.remove(r);
        let key = (t.job, t.priority, t.request, t.different_machine);
        self.seq += 1;
        let seq = self.seq;
        self.groups.entry(key).or_insert_with(|| (seq, Default::default())).1.insert(t.index);
        self.of.insert(r, key);
    }

    fn remove(&mut self, r: TaskRef) -> bool {
        let Some(key) = self.of.remove(&r) else { return false };
        if let Some((_, set)) = self.groups.get_mut(&key) {
            set.remove(&r.index);
            if set.is_empty() {
                self.groups.remove(&key);
            }
        }
        true
    }

    fn len(&self) -> usize {
        self.of.len()
    }

    fn task_groups(&self, w: &Workload) -> Vec<scheduler_core::TaskGroup> {
        let mut keys: Vec<_> = self.groups.iter().map(|(k, (seq, _))| (*seq, *k)).collect();
        keys.sort_unstable_by_key(|(seq, _)| *seq);
        keys.into_iter()
            .map(|(_, k @ (job, priority, request, different_machine))| scheduler_core::TaskGroup {
                job_id: job,
                name: w.jobs.get(job as usize).cloned().unwrap_or_default(),
                priority,
                request,
                constraints: w.constraints.get(job as usize).cloned().unwrap_or_default(),
                different_machine,
                tasks: self.groups[&k].1.iter().copied().collect(),
                occupied: vec![],
            })
            .collect()
    }
}

/// How a replay runs.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// Seconds of trace time between scheduling passes.
    pub interval_s: f64,
    /// Stop at this trace time, seconds (`None`: the workload's last task event).
    pub until_s: Option<f64>,
    /// Seconds of trace time between utilization samples.
    pub sample_every_s: f64,
    /// Order each pass's groups of one priority by their users' dominant shares, as the master
    /// does ([`scheduler_core::order_by_fair_share`], every weight 1); off: arrival order.
    pub fair_share: bool,
    /// Reclamation (Borg §5.5), as the master does it: a task reserves its request until it
    /// has run [`RECLAIM_WARMUP_S`] of trace time (time-0 tasks have), then its estimate
    /// ([`crate::usage::reservation`]); batch and free tasks are placed against reservations.
    pub reclaim: bool,
}

/// The master's default `--reservation-warmup`, in trace seconds.
pub const RECLAIM_WARMUP_S: f64 = 300.0;

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions { interval_s: 1.0, until_s: None, sample_every_s: 60.0, fair_share: true, reclaim: false }
    }
}

/// What each user's tasks are charged at each band, kept as tasks bind and leave (fair share).
#[derive(Default)]
struct UsedByUser(HashMap<(u32, usize), scheduler_core::Resources>);

impl UsedByUser {
    fn add(&mut self, t: &Task) {
        let u = self.0.entry((t.user, CellModel::band_of(t.priority))).or_insert(scheduler_core::Resources::ZERO);
        *u = u.saturating_add(t.request);
    }

    fn remove(&mut self, t: &Task) {
        if let Some(u) = self.0.get_mut(&(t.user, CellModel::band_of(t.priority))) {
            *u = u.saturating_sub(t.request);
        }
    }
}

/// Submit -> placed waits, seconds of trace time, of the tasks submitted during the replay (a
/// resubmission starts a new wait; a task that re-enters the queue after preemption or a
/// machine removal does not), by user.
#[derive(Default)]
struct Waits {
    /// Task -> (user, submit time) while it waits.
    waiting: HashMap<TaskRef, (u32, f64)>,
    /// User -> waits of its placed tasks.
    by_user: HashMap<u32, Vec<f64>>,
}

impl Waits {
    fn placed(&mut self, r: TaskRef, at_s: f64) {
        if let Some((user, since)) = self.waiting.remove(&r) {
            self.by_user.entry(user).or_default().push((at_s - since).max(0.0));
        }
    }

    /// The report: `tasks` (placed after waiting), `p50_s`, `p99_s`, `max_s` across users;
    /// `never_placed` (still waiting at the end); `users` (with a placed task); per-user p50
    /// and p99 spread (`user_p50_s_median`, `user_p99_s_median`, `user_p99_s_max`); and
    /// `by_user`: the users with the most placed tasks (at most 20), most first, each with
    /// `user`, `tasks`, `p50_s`, `p99_s`.
    fn report(&self, users: &[String]) -> Value {
        let mut all: Vec<f64> = self.by_user.values().flatten().copied().collect();
        all.sort_by(f64::total_cmp);
        let mut per: Vec<(u32, Vec<f64>)> = self
            .by_user
            .iter()
            .map(|(u, v)| {
                let mut v = v.clone();
                v.sort_by(f64::total_cmp);
                (*u, v)
            })
            .collect();
        per.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
        let mut p50s: Vec<f64> = per.iter().map(|(_, v)| percentile(v, 0.5)).collect();
        let mut p99s: Vec<f64> = per.iter().map(|(_, v)| percentile(v, 0.99)).collect();
        p50s.sort_by(f64::total_cmp);
        p99s.sort_by(f64::total_cmp);
        let name = |u: u32| users.get(u as usize).cloned().unwrap_or_default();
        let by_user: Vec<Value> = per
            .iter()
            .take(20)
            .map(|(u, v)| json!({"user": name(*u), "tasks": v.len(), "p50_s": percentile(v, 0.5), "p99_s": percentile(v, 0.99)}))
            .collect();
        json!({
            "tasks": all.len(),
            "p50_s": percentile(&all, 0.5),
            "p99_s": percentile(&all, 0.99),
            "max_s": all.last().copied().unwrap_or(0.0),
            "never_placed": self.waiting.len(),
            "users": per.len(),
            "user_p50_s_median": percentile(&p50s, 0.5),
            "user_p99_s_median": percentile(&p99s, 0.5),
            "user_p99_s_max": p99s.last().copied().unwrap_or(0.0),
            "by_user": by_user,
        })
    }
}

/// A replay in progress: the cell, the tasks where they are, and what passes measured.
struct ReplayState<'w> {
    w: &'w Workload,
    fair_share: bool,
    scheduler: Scheduler,
    cell: CellModel,
    pending: Pending,
    /// Task -> machine index, for placed tasks.
    placed: HashMap<TaskRef, usize>,
    /// Every task seen, as last submitted.
    known: HashMap<TaskRef, Task>,
    used: UsedByUser,
    waits: Waits,
    /// Wall time of each pass, milliseconds.
    pass_ms: Vec<f64>,
    victims_by_band: [usize; 4],
    /// With reclamation: tasks placed during the replay and when, oldest first, until they have
    /// run their warmup and reserve their estimate.
    warming: Option<std::collections::VecDeque<(f64, TaskRef)>>,
}

impl ReplayState<'_> {
    /// One scheduling pass at trace time `now_s` (pending groups in fair-share order when on):
    /// binds, preempts, records waits; returns (tasks bound, tasks preempted).
    fn pass(&mut self, now_s: f64) -> (usize, usize) {
        let start = Instant::now();
        if let Some(warming) = &mut self.warming {
            while warming.front().is_some_and(|(at, _)| *at + RECLAIM_WARMUP_S <= now_s) {
                let Some((_, r)) = warming.pop_front() else { break };
                let (Some(&m), Some(t)) = (self.placed.get(&r), self.known.get(&r)) else { continue };
                self.cell.set_reservation(m, r, crate::usage::reservation(t, 0));
            }
        }
        let mut gs = self.pending.task_groups(self.w);
        if self.fair_share {
            let cell = &self.cell;
            let capacity = (0..cell.len())
                .filter(|&m| cell.up[m])
                .fold(scheduler_core::Resources::ZERO, |a, m| a.saturating_add(cell.capacity[m]));
            let (known, used) = (&self.known, &self.used);
            let owner = |g: &scheduler_core::TaskGroup| {
                let first = g.tasks.first().map(|&index| TaskRef { job: g.job_id, index });
                let user = first.and_then(|r| known.get(&r)).map_or(0, |t| t.user);
                (user, CellModel::band_of(g.priority))
            };
            let share = |g: &scheduler_core::TaskGroup| {
                used.0.get(&owner(g)).map_or(0.0, |u| scheduler_core::dominant_share(*u, capacity))
            };
            scheduler_core::order_by_fair_share(&mut gs, owner, share);
        }
        let p = self.scheduler.schedule(&mut self.cell, &gs);
        for b in &p.bindings {
            self.pending.remove(b.task);
            self.placed.insert(b.task, b.machine);
            if let Some(t) = self.known.get(&b.task) {
                self.used.add(t);
            }
            self.waits.placed(b.task, now_s);
            if let Some(warming) = &mut self.warming {
                warming.push_back((now_s, b.task));
            }
        }
        for e in &p.preempted {
            self.placed.remove(&e.victim);
            if let Some(t) = self.known.get(&e.victim) {
                self.victims_by_band[CellModel::band_of(t.priority)] += 1;
                self.used.remove(t);
                self.pending.insert(t);
            }
        }
        self.pass_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        (p.bindings.len(), p.preempted.len())
    }
}

/// Replays `w` up to `opts.until_s`: the time-0 tasks where the source placed them (or
/// pending, if it did not), then every event in time order, with a scheduling pass every
/// `opts.interval_s` seconds of trace time in which events happened, while tasks are pending.
/// Pass latency is the wall time of each pass, building its input included. The report's
/// `wait` holds submit -> placed waits in trace seconds, across users and per user (a task is
/// placed at the time of the pass that binds it).
///
/// Every `opts.sample_every_s` seconds of trace time (and at the end) the cell is sampled into
/// [`Outcome::samples`] for the utilization report.
pub fn replay(w: &Workload, params: Params, opts: ReplayOptions, mut progress: impl FnMut(usize, usize)) -> Outcome {
    let ReplayOptions { interval_s, until_s, sample_every_s, fair_share, reclaim } = opts;
    let params = Params { explain: false, ..params };
    let until = until_s.unwrap_or(w.horizon_s);
    let mut cell = cell_model(&w.machines);
    let mut index: HashMap<String, usize> = w.machines.iter().enumerate().map(|(i, m)| (m.id.clone(), i)).collect();
    let mut known: HashMap<TaskRef, Task> = HashMap::new();
    let mut placed: HashMap<TaskRef, usize> = HashMap::new();
    let mut pending = Pending::default();
    let mut used = UsedByUser::default();
    let mut waits = Waits::default();
    for t in &w.tasks {
        let r = TaskRef { job: t.job, index: t.index };
        match t.machine.as_ref().and_then(|m| index.get(m)) {
            Some(&m) => {
                let resident = Resident::new(r, t.priority, t.request);
                // running since before the trace: past its warmup
                cell.add(m, if reclaim { resident.reserving(crate::usage::reservation(t, 0)) } else { resident });
                placed.insert(r, m);
                used.add(t);
            }
            None => {
                pending.insert(t);
                waits.waiting.insert(r, (t.user, 0.0));
            }
        }
        known.insert(r, t.clone());
    }
    let mut st = ReplayState {
        w,
        fair_share,
        scheduler: Scheduler::new(params),
        cell,
        pending,
        placed,
        known,
        used,
        waits,
        pass_ms: Vec::new(),
        victims_by_band: [0; 4],
        warming: reclaim.then(Default::default),
    };
    let (mut bound, mut preempted, mut submitted, mut ended, mut evicted_by_machine) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let wall = Instant::now();
    let events: Vec<&crate::workload::Event> = w.events.iter().filter(|e| e.time_s <= until).collect();
    let mut next_pass = events.first().map_or(0.0, |e| e.time_s);
    let mut samples = Vec::new();
    let mut next_sample = next_pass;
    let total = events.len();
    for (i, e) in events.iter().enumerate() {
        if e.time_s >= next_sample {
            samples.push(crate::report::sample(&st.cell, e.time_s, st.pending.len()));
            next_sample = e.time_s + sample_every_s;
        }
        if e.time_s >= next_pass {
            if st.pending.len() > 0 {
                let (b, p) = st.pass(e.time_s);
                bound += b;
                preempted += p;
            }
            // the next pass is due one interval on, on the interval grid
            next_pass += ((e.time_s - next_pass) / interval_s).floor() * interval_s + interval_s;
        }
        match &e.kind {
            EventKind::Submit(t) => {
                let r = TaskRef { job: t.job, index: t.index };
                if let Some(m) = st.placed.remove(&r) {
                    st.cell.remove(m, r); // resubmitted while we still ran it: start over
                    if let Some(old) = st.known.get(&r) {
                        st.used.remove(old);
                    }
                }
                st.known.insert(r, t.clone());
                st.pending.insert(t);
                st.waits.waiting.insert(r, (t.user, e.time_s));
                submitted += 1;
            }
            EventKind::End { job, index } => {
                let r = TaskRef { job: *job, index: *index };
                if let Some(m) = st.placed.remove(&r) {
                    st.cell.remove(m, r);
                    if let Some(t) = st.known.get(&r) {
                        st.used.remove(t);
                    }
                }
                st.pending.remove(r);
                st.waits.waiting.remove(&r);
                ended += 1;
            }
            EventKind::MachineAdd(m) => match index.get(&m.id) {
                Some(&i) => {
                    st.cell.set_capacity(i, m.capacity);
                    st.cell.set_up(i, true);
                }
                None => {
                    let i = st.cell.push(
                        scheduler_core::MachineId(m.id.clone()),
                        m.capacity,
                        m.attributes.clone(),
                        &m.domain,
                        true,
                    );
                    index.insert(m.id.clone(), i);
                }
            },
            EventKind::MachineRemove(id) => {
                if let Some(&i) = index.get(id) {
                    for r in st.cell.set_up(i, false) {
                        st.placed.remove(&r.task);
                        if let Some(t) = st.known.get(&r.task) {
                            st.used.remove(t);
                            st.pending.insert(t);
                        }
                        evicted_by_machine += 1;
                    }
                }
            }
            EventKind::MachineUpdate(id, cap) => {
                if let Some(&i) = index.get(id) {
                    st.cell.set_capacity(i, *cap);
                }
            }
        }
        if i % 4096 == 0 {
            progress(i, total);
        }
    }
    let end_s = events.last().map_or(0.0, |e| e.time_s);
    if st.pending.len() > 0 {
        let (b, p) = st.pass(end_s);
        bound += b;
        preempted += p;
    }
    progress(total, total);
    samples.push(crate::report::sample(&st.cell, end_s, st.pending.len()));
    let seconds = wall.elapsed().as_secs_f64();
    let mut sorted = st.pass_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let mut pending_by_band = [0usize; 4];
    for r in st.pending.of.keys() {
        if let Some(t) = st.known.get(r) {
            pending_by_band[CellModel::band_of(t.priority)] += 1;
        }
    }
    let report = json!({
        "command": "replay",
        "machines": st.cell.len(),
        "machines_up_at_end": st.cell.up.iter().filter(|&&u| u).count(),
        "tasks": st.known.len(),
        "events": total,
        "until_s": until,
        "submitted": submitted,
        "ended": ended,
        "placed": bound,
        "running_at_end": st.placed.len(),
        "unschedulable": st.pending.len(),
        "unschedulable_by_band": by_band(&pending_by_band),
        "preempted": preempted,
        "preempted_by_band": by_band(&st.victims_by_band),
        "evicted_by_machine_removal": evicted_by_machine,
        "seconds": seconds,
        "tasks_per_second": if seconds > 0.0 { bound as f64 / seconds } else { 0.0 },
        "passes": st.pass_ms.len(),
        "pass_interval_s": interval_s,
        "pass_p50_ms": percentile(&sorted, 0.5),
        "pass_p90_ms": percentile(&sorted, 0.9),
        "pass_p99_ms": percentile(&sorted, 0.99),
        "pass_max_ms": sorted.last().copied().unwrap_or(0.0),
        "fair_share": fair_share,
        "reclaim": reclaim,
        "wait": st.waits.report(&w.users),
        "utilization": utilization(&st.cell),
        "units": w.units,
        "scheduler": params_json(&params),
    });
    Outcome { report, placements: placements_of(&st.cell, &w.jobs), samples }
}

/// Machines to keep, in the order compaction keeps them: a seeded random permutation; keeping
/// the first `n` removes the rest.
fn removal_order(n: usize, seed: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(seed ^ 0x5eed_c0de));
    v
}

/// Result of compacting under one scoring for one seed.
#[derive(Debug, Clone, Copy)]
struct CompactRun {
    min_machines: usize,
    lower_bound: usize,
}

/// The smallest prefix of `order` that holds every task of `w` (binary search over the number
/// of machines kept, Borg §5.1), and the resource lower bound for the same order (with
/// `reclaim`, of production's requests and everyone's reservations).
fn compact_one(w: &Workload, order: &[usize], params: Params, reclaim: bool) -> CompactRun {
    // summed requests; with reclamation, the larger of production's requests and everyone's
    // reservations (production is placed against requests, batch and free against reservations)
    let (mut need, mut prod, mut reserved) = ([0u128; 3], [0u128; 3], [0u128; 3]);
    for t in &w.tasks {
        let reservation = crate::usage::reservation(t, 0);
        for (i, r) in Resource::ALL.into_iter().enumerate() {
            need[i] += t.request.get(r) as u128;
            reserved[i] += reservation.get(r) as u128;
            if scheduler_core::places_against_requests(t.priority) {
                prod[i] += t.request.get(r) as u128;
            }
        }
    }
    if reclaim {
        need = [0, 1, 2].map(|i| prod[i].max(reserved[i]));
    }
    let mut have = [0u128; 3];
    let mut lower_bound = order.len();
    for (k, &m) in order.iter().enumerate() {
        for (i, r) in Resource::ALL.into_iter().enumerate() {
            have[i] += w.machines[m].capacity.get(r) as u128;
        }
        if (0..3).all(|i| have[i] >= need[i]) {
            lower_bound = k + 1;
            break;
        }
    }
    let fits = |n: usize| {
        let ms: Vec<&crate::workload::Machine> = order[..n].iter().map(|&i| &w.machines[i]).collect();
        let (_, p, _, _) = repack_cell(w, &ms, params, reclaim);
        p.unplaced.is_empty()
    };
    if !fits(order.len()) {
        return CompactRun { min_machines: order.len(), lower_bound };
    }
    // invariant: fits(hi); !fits(lo)
    let (mut lo, mut hi) = (lower_bound.saturating_sub(1), order.len());
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    CompactRun { min_machines: hi, lower_bound }
}

/// Which tasks compaction must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactWorkload {
    /// What a repack of the full cell places without reclamation (the trace's cell is
    /// overcommitted on requests, so not every time-0 task fits even there). Tight by
    /// construction: the full cell is nearly full; with `--reclaim`, how many fewer machines
    /// hold the same tasks.
    Fitting,
    /// Production and monitoring tasks only (Borg §5.2 compares prod-only cells).
    Production,
    /// Every time-0 task (with `--reclaim`: how few machines hold the whole workload when
    /// batch and free tasks run in reclaimed resources).
    All,
}

/// Cell compaction (Borg §5.1): for each seed, machines are removed in that seed's random order
/// until the `which` workload no longer fits (binary search on the number kept), once with
/// `params`' weights and once with plain best fit; the lower bound is the fewest machines of the
/// same order whose summed capacity covers the summed requests in every dimension. Seeds run in
/// parallel.
pub fn compact(
    w: &Workload,
    params: Params,
    seeds: u32,
    which: CompactWorkload,
    reclaim: bool,
    mut progress: impl FnMut(usize, usize) + Send,
) -> Outcome {
    let wall = Instant::now();
    let params = Params { explain: false, ..params };
    let full = repack(w, params, reclaim);
    let tasks = match which {
        CompactWorkload::Fitting => {
            // what fits without reclamation, so that --reclaim compares the same tasks
            let plain = reclaim.then(|| repack(w, params, false));
            let fitting: std::collections::HashSet<(String, u32)> =
                plain.as_ref().unwrap_or(&full).placements.iter().map(|(j, i, _)| (j.clone(), *i)).collect();
            w.tasks.iter().filter(|t| fitting.contains(&(w.jobs[t.job as usize].clone(), t.index))).cloned().collect()
        }
        CompactWorkload::Production => {
            w.tasks.iter().filter(|t| CellModel::band_of(t.priority) >= 2).cloned().collect()
        }
        CompactWorkload::All => w.tasks.clone(),
    };
    let workload = Workload { tasks, ..w.clone() };
    let best_fit = Params { weights: scheduler_core::Weights::best_fit(), ..params };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let progress = std::sync::Mutex::new(&mut progress);
    let runs: Vec<(u64, CompactRun, CompactRun)> = (0..seeds as u64)
        .into_par_iter()
        .map(|seed| {
            let order = removal_order(workload.machines.len(), seed);
            let hybrid = compact_one(&workload, &order, params, reclaim);
            let bf = compact_one(&workload, &order, best_fit, reclaim);
            let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if let Ok(mut p) = progress.lock() {
                (*p)(d, seeds as usize);
            }
            (seed, hybrid, bf)
        })
        .collect();
    let stats = |f: &dyn Fn(&(u64, CompactRun, CompactRun)) -> usize| {
        let mut v: Vec<f64> = runs.iter().map(f).map(|x| x as f64).collect();
        v.sort_by(f64::total_cmp);
        (percentile(&v, 0.5), percentile(&v, 0.9))
    };
    let (h50, h90) = stats(&|r| r.1.min_machines);
    let (b50, b90) = stats(&|r| r.2.min_machines);
    let (lb50, _) = stats(&|r| r.1.lower_bound);
    let per_seed: Vec<Value> = runs
        .iter()
        .map(|(s, h, b)| json!({"seed": s, "hybrid_min_machines": h.min_machines, "best_fit_min_machines": b.min_machines, "lower_bound_machines": h.lower_bound}))
        .collect();
    let report = json!({
        "command": "compact",
        "workload": format!("{which:?}").to_lowercase(),
        "reclaim": reclaim,
        "machines": w.machines.len(),
        "tasks": workload.tasks.len(),
        "tasks_in_trace_time0": w.tasks.len(),
        "placed": workload.tasks.len(),
        "unschedulable": w.tasks.len() - workload.tasks.len(),
        "preempted": 0,
        "seeds": seeds,
        "min_machines_median": h50,
        "min_machines_p90": h90,
        "lower_bound_machines": lb50,
        "ratio_lower_bound_to_min": if h50 > 0.0 { lb50 / h50 } else { 0.0 },
        "best_fit_min_machines_median": b50,
        "best_fit_min_machines_p90": b90,
        "best_fit_ratio": if b50 > 0.0 { lb50 / b50 } else { 0.0 },
        "per_seed": per_seed,
        "seconds": wall.elapsed().as_secs_f64(),
        "tasks_per_second": 0.0,
        "pass_p50_ms": 0.0,
        "pass_p99_ms": 0.0,
        "utilization": full.report["utilization"].clone(),
        "units": w.units,
        "scheduler": params_json(&params),
    });
    Outcome { report, placements: full.placements, samples: Vec::new() }
}
