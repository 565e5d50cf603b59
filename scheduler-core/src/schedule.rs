//! The placement pipeline (Borg §3.2, §3.4): equivalence classes, relaxed randomization,
//! feasibility checking, hybrid scoring with score caching, preemption, bind.
//!
//! For each class, highest priority first, the scheduler examines machines in a seeded random
//! order until it has `candidates` feasible ones ("relaxed randomization": Borg stops looking once
//! it has enough, instead of scoring every machine), keeps them in a heap by score, and places
//! the class's tasks one by one on the best. A placement changes only that machine, so only its
//! entry is re-scored; entries whose machine changed since they were scored (a version number
//! tells) are re-checked lazily when they reach the top; a spreading class's heap is kept by
//! failure domain, so that a placement re-keys its own domain's candidates at once instead
//! (`CandHeap`: same choices, fewer heap operations). When the heap runs low it examines more
//! machines, at most the whole cell once per class per pass. A class's candidate set and its
//! place in the random order survive between passes ("score caching"): the next pass re-scores
//! only candidates whose machine changed.
//!
//! Two refinements make the sample pack nearly as well as scoring every machine:
//! - **The fit walk** ([`Params::fit_walk`]): before the random order, a class's candidates come
//!   from the cell's fit index (machines bucketed by mean free fraction, kept by [`CellModel`]),
//!   walked upwards from the fullest machines that could fit the request, so the tightest
//!   feasible machines are among the candidates (best-fit search without scoring the cell). It
//!   examines at most 4 x (candidates + class tasks) machines per class and pass, then leaves
//!   the rest to the random order (which also finds machines feasible only by preemption).
//! - **Candidates per task** ([`Params::per_task`]): a production or monitoring class wants at
//!   least that many candidates per task, so a class whose tasks spread over machines chooses
//!   among several machines per task instead of 32 for all.
//!
//! A class that found no machine at all spares the larger classes of its band in the same pass
//! the walk over the cell (`Nowhere`).
//!
//! A pass that leaves production work pending for room its own choices took runs again with
//! plain best fit, keeping whichever placed more ([`Params::second_pass`]).
//!
//! Spreading (the crowding term) keeps its hands off empty machines while a large task of the
//! pass (more than half of the cell's largest machine in some resource) still waits for one
//! (`EmptyReserve`): best fit keeps machines empty by nature, spreading does not.
//!
//! Cost per pass: O(examined machines + tasks x log(candidates)), independent of cell size once
//! enough feasible machines are found. Deterministic for a given seed and input.

use crate::candidates::{Cand, CandHeap, ClassCache, Crowd, CACHE_KEEP, CACHE_TTL};
use crate::cell::{fit_bucket_of, CellModel, MachineIndex, Resident, TaskRef, FIT_BUCKETS};
use crate::equivalence::{classes, ClassKey, EquivalenceClass};
use crate::feasibility::feasible;
use crate::preemption::plan_victims;
use crate::resources::Resources;
use crate::scoring::{score, Weights, MAX_CROWDING};
use crate::task_group::TaskGroup;
use crate::why_pending::{why_pending, WhyPending};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::hash_map::DefaultHasher;
// foldhash: these maps are hashed per class, per candidate and per task of a pass
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::hash::{Hash, Hasher};

/// Scheduler settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Seed of the random machine order; the same seed and input give the same placement.
    pub seed: u64,
    /// Feasible machines to find before choosing (relaxed randomization); 0 = every machine
    /// (exhaustive: the best-scoring feasible machine in the cell).
    pub candidates: usize,
    /// Production and monitoring classes find at least this many feasible machines per task
    /// (at most the cell): they are placed against requests and keep what they get (production
    /// never preempts production), so their packing lasts, and a class whose tasks spread over
    /// machines needs more machines to choose from than `candidates`. 0 = `candidates` for
    /// every class. Measured on the Google 2011 trace (`fauxmaster compact`, production
    /// workload, 32 candidates, ratio of the lower bound to the smallest cell): 0.901 with 0 and
    /// no fit walk, 0.916 with 0 and the walk, 0.963 with 4 and no walk, 0.972 with 4 and the
    /// walk (0.977 exhaustive).
    pub per_task: usize,
    /// Find candidates first by walking the cell's machines from the fullest that could fit
    /// (the fit index of [`CellModel`], best-fit order on a cell of one machine shape) before
    /// the random order; see the module docs.
    pub fit_walk: bool,
    /// Scoring weights.
    pub weights: Weights,
    /// Whether higher bands may preempt lower ones to make room.
    pub preemption: bool,
    /// Whether to compute a [`WhyPending`] for unplaced classes (a scan of the whole cell per
    /// such class); when false, [`Unplaced::why`] is empty.
    pub explain: bool,
    /// A second, best-fit pass when the first leaves production or monitoring work pending that
    /// its own placements took the room of (see [`Scheduler::schedule`]); no effect with
    /// [`Weights::best_fit`].
    pub second_pass: bool,
}

impl Default for Params {
    /// Seed 1, 32 candidates, 4 per production task, the fit walk, hybrid weights, preemption
    /// on, explanations on, the second pass on.
    fn default() -> Self {
        Params {
            seed: 1,
            candidates: 32,
            per_task: 4,
            fit_walk: true,
            weights: Weights::default(),
            preemption: true,
            explain: true,
            second_pass: true,
        }
    }
}

/// One placement decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The task.
    pub task: TaskRef,
    /// Index into the [`CellModel`] the pass ran on.
    pub machine: MachineIndex,
}

/// One eviction decided to make room for a higher-band task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preemption {
    /// The evicted task (it goes back to pending).
    pub victim: TaskRef,
    /// Where it ran.
    pub machine: MachineIndex,
    /// The task placed in its room.
    pub by: TaskRef,
}

/// Tasks of one equivalence class left pending, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// The tasks, in class order.
    pub tasks: Vec<TaskRef>,
    /// Per-reason machine counts for the first of them.
    pub why: WhyPending,
}

/// Counters of one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Equivalence classes.
    pub classes: usize,
    /// Machines examined (feasibility checks while sampling).
    pub examined: u64,
    /// Scores computed.
    pub scored: u64,
    /// Whether the pass ran twice ([`Params::second_pass`]): these counters add both.
    pub second_pass: bool,
    /// Whether the best-fit second pass's placement was kept (it placed more tasks).
    pub second_pass_kept: bool,
}

/// Result of one scheduling pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Decisions in the order they were made (classes by descending priority, then arrival;
    /// tasks in class order).
    pub bindings: Vec<Binding>,
    /// Evictions, in the order they were decided. Victims are not re-placed in the same pass.
    pub preempted: Vec<Preemption>,
    /// Classes with tasks left pending, in class order.
    pub unplaced: Vec<Unplaced>,
    /// Counters.
    pub stats: PassStats,
}

/// A scheduler: parameters plus the state kept between passes (the random machine order and the
/// per-class score caches). Create one per cell and call [`Scheduler::schedule`] for each pass.
#[derive(Debug)]
pub struct Scheduler {
    params: Params,
    order: Vec<u32>,
    cache: HashMap<ClassKey, ClassCache>,
    pass: u64,
    stamp: Vec<u64>,
    stamp_gen: u64,
    reserve: EmptyReserve,
    /// The classes of the last pass that fit nowhere (see [`Nowhere`]).
    nowhere: Vec<Nowhere>,
    /// The scheduler of the best-fit second pass ([`Params::second_pass`]), with caches of its own.
    best_fit: Option<Box<Scheduler>>,
    /// Priority and request of each production or monitoring class the last pass left pending.
    unplaced_production: Vec<(crate::priority::Priority, Resources)>,
    /// Tasks of the class being placed, by failure domain index, for the crowding term (read
    /// for every candidate: an index, not a hash). All zero between class runs: each run resets
    /// the domains it counted ([`ClassRun::counted`]), so a cell of many domains (every machine
    /// its own) costs nothing per class.
    domain_count: Vec<u32>,
    /// The memory of the last class run's candidate heap, for the next.
    spare_heap: CandHeap,
    /// Whether a spreading class's candidates are kept by failure domain ([`CandHeap`]); off
    /// only in the test that shows both ways choose the same machines.
    domain_heaps: bool,
}

/// Empty machines kept for the pass's large tasks (see [`EmptyReserve::large`]): spreading a
/// class over machines (the crowding term) must not take the empty machines that a large task
/// of the same pass can run on only when empty. Best fit keeps machines empty by nature; the
/// hybrid's crowding term pulls a class onto emptier machines, and on a small cell one class of
/// many tasks can touch every machine before a task of most of a machine is placed (a synthetic
/// cell of 100 machines needed 81 instead of 53 after compaction for one such task). While a
/// large task of the pass waits, an empty machine that could hold one scores as the most
/// crowded machine for the other classes: spreading goes to machines already in use, packing
/// still uses the empty ones when nothing else fits. (Keeping them back only while no more
/// were left than large tasks waited did worse: 100 machines / 300 tasks 3,736 against best
/// fit's 3,694, Alibaba OpenB cpu300 1,523 against 1,484; see `scoring.rs`.)
#[derive(Debug, Clone, Copy, Default)]
struct EmptyReserve {
    /// Large tasks of this pass not placed yet (nor given up on).
    need: usize,
    /// The least a machine must have of each resource to hold any of them (component-wise
    /// minimum of their requests).
    fits: Resources,
}

impl EmptyReserve {
    /// A task too large to share the cell's largest machine with another of its size: more
    /// than half its CPU, RAM or disk.
    fn large(request: &Resources, largest: &Resources) -> bool {
        request.cpu_millis.saturating_mul(2) > largest.cpu_millis
            || request.ram_bytes.saturating_mul(2) > largest.ram_bytes
            || request.disk_bytes.saturating_mul(2) > largest.disk_bytes
    }

    /// Whether machine `m` is kept back from spreading: a large task waits, and `m` is up, holds
    /// no task and is big enough for one.
    fn keeps(&self, cell: &CellModel, m: usize) -> bool {
        self.need > 0 && cell.up[m] && cell.residents(m).is_empty() && self.fits.fits_in(&cell.capacity[m])
    }
}

fn class_offset(key: &ClassKey, seed: u64, n: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    seed.hash(&mut h);
    if n == 0 {
        0
    } else {
        (h.finish() % n as u64) as usize
    }
}

/// A class of this pass that examined the whole cell and found at most [`NOWHERE_KEEP`]
/// feasible machines (often none): no constraints, no machine taken by its job. A later class
/// of the same band whose request is at least as large in every resource can fit only on those
/// machines or on machines freed since (its feasible machines are a subset: the same room counts
/// at the same band, and constraints only remove machines), so it examines those, starts as if
/// it had examined the cell itself, and walks only the freed log from `at`. The next pass still
/// uses the entries of the last while walking the machines freed since costs less than walking
/// the cell (like a class's own cache, this relies on every change that gives a machine room
/// being in the freed log). The class's candidates are the feasible machines its own walk would
/// have found (it would have walked the whole cell too, as it wants at least as many candidates
/// as the entry holds), except when machines freed since add more than it wants: then it may
/// choose among different ones than its random order would have met.
///
/// In `fauxmaster replay` of the Google trace, passes with a backlog had 100-200 new classes
/// that each examined all 12,477 machines to find none or a few (1.5 million feasibility checks
/// in one pass). Remembering only the classes that found none
/// cut the machines examined over the replay from 63.0 to 38.8 million (35.7 with the last
/// pass's entries); remembering up to 32 machines found brought pass p99 from 7.0-9.1 ms to
/// 4.5-5.7 ms on the same box, compaction figures unchanged.
#[derive(Debug)]
struct Nowhere {
    band: usize,
    request: Resources,
    /// The freed log's length when the class had examined everything.
    at: usize,
    /// The machines it found feasible then.
    machines: Vec<u32>,
}

/// Most feasible machines a [`Nowhere`] entry keeps.
const NOWHERE_KEEP: usize = 32;

/// A class of single-task jobs is spread (the crowding term) only when it holds at least this
/// share of the cell's failure domains in tasks (`spreads`).
pub const SPREAD_CLASS_SHARE: f64 = 0.25;

/// Whether the crowding term applies to `class` in a cell of `domains` failure domains.
/// Spreading serves two ends. Availability: a job's tasks over failure domains, so one failure
/// takes few of them; that needs a job with two or more tasks in the class. Packing: a class of
/// many identical tasks spread over machines mixes task shapes on each machine and strands less
/// (the Google 2011 trace's gain, see `scoring.rs`); that needs a class large against the cell.
/// A class of single-task jobs small against the cell gains from neither, and spreading it only
/// keeps identical tasks from filling a machine together: on 19 of Alibaba's OpenB pod lists
/// (every pod a job of its own) the hybrid needed 21,253 machines with it, 21,129 without it,
/// against best fit's 21,249 (the figures in `scoring.rs`).
fn spreads(class: &EquivalenceClass, domains: usize) -> bool {
    if class.tasks.len() as f64 >= SPREAD_CLASS_SHARE * domains as f64 {
        return true;
    }
    let mut jobs = HashSet::with_capacity(class.tasks.len());
    class.tasks.iter().any(|t| !jobs.insert(t.job))
}

/// Per-class, per-pass placement state.
struct ClassRun<'a> {
    class: &'a EquivalenceClass,
    k: usize,
    heap: CandHeap,
    cursor: usize,
    examined: usize,
    exhausted_at: Option<usize>,
    taken: HashSet<usize>,
    /// The failure domains whose [`Scheduler::domain_count`] this run raised (when the class
    /// spreads), to reset after it.
    counted: Vec<u32>,
    fair_share: f64,
    spread: bool,
    /// Whether the class's tasks are large ([`EmptyReserve::large`]): the reserve is for them.
    large: bool,
    /// The fit walk's place: (bucket, position in it).
    walk: (usize, usize),
    /// The bucket the fit walk starts from.
    walk_start: usize,
    /// Whether this run already looked for a machine that fits without preemption.
    free_fit_searched: bool,
    /// Machines the fit walk may still examine in this run.
    walk_left: usize,
}

/// The fit walk may examine this many machines per candidate wanted and per task of the class
/// before it leaves the rest to the random order.
const WALK_FACTOR: usize = 4;

impl Scheduler {
    /// A scheduler with `params`.
    pub fn new(params: Params) -> Self {
        Scheduler {
            params,
            order: Vec::new(),
            cache: HashMap::new(),
            pass: 0,
            stamp: Vec::new(),
            stamp_gen: 0,
            reserve: EmptyReserve::default(),
            nowhere: Vec::new(),
            best_fit: None,
            unplaced_production: Vec::new(),
            domain_count: Vec::new(),
            spare_heap: CandHeap::default(),
            domain_heaps: true,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Forgets every cached candidate (after the caller rebuilt the cell with other machine
    /// indices).
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.nowhere.clear();
        self.order.clear();
        if let Some(best_fit) = self.best_fit.as_mut() {
            best_fit.clear_cache();
        }
    }

    /// Candidates for `class` in a cell of `n` machines, given `k` for every class: a
    /// production or monitoring class wants at least [`Params::per_task`] per task.
    fn class_candidates(&self, class: &EquivalenceClass, k: usize, n: usize) -> usize {
        if self.params.per_task == 0 || !crate::cell::places_against_requests(class.priority) {
            return k;
        }
        k.max(self.params.per_task.saturating_mul(class.tasks.len())).min(n.max(1))
    }

    /// The random machine order for a cell of `n` machines. A cell that grew keeps its order and
    /// its caches: the new machines (in the cell's freed log since they were added, so classes
    /// that had examined the whole cell look at them) go at the end, in their own random order.
    /// Any other change of size starts over.
    fn ensure_order(&mut self, n: usize) {
        let had = self.order.len();
        if had == n {
            return;
        }
        let mut rng = rand::rngs::SmallRng::seed_from_u64(self.params.seed ^ (had as u64).rotate_left(32));
        if had == 0 || n < had {
            self.order = (0..n as u32).collect();
            self.order.shuffle(&mut rng);
            self.cache.clear();
            self.nowhere.clear();
        } else {
            let mut added: Vec<u32> = (had as u32..n as u32).collect();
            added.shuffle(&mut rng);
            self.order.extend(added);
        }
        self.stamp.resize(n, 0);
    }

    /// The crowding term of placing one more of the run's class on `m` (0..=2), with what it
    /// depends on: the class's tasks in `m`'s domain, and whether `m` is an empty machine kept
    /// for large tasks (which counts as the most crowded).
    fn crowding(&self, run: &ClassRun, cell: &CellModel, m: usize) -> (Crowd, f64) {
        if !run.spread {
            return (Crowd::default(), 0.0);
        }
        let count = self.domain_count.get(cell.domain[m] as usize).copied().unwrap_or(0);
        let kept = !run.large && self.reserve.keeps(cell, m);
        let crowd = if kept { MAX_CROWDING } else { (count as f64 / run.fair_share).min(MAX_CROWDING) };
        (Crowd { count, kept }, crowd)
    }

    fn candidate(&self, run: &ClassRun, cell: &CellModel, m: usize, base: Option<f64>) -> Cand {
        let c = run.class;
        let base = base.unwrap_or_else(|| score(cell, m, c.priority, &c.request, 0.0, &self.params.weights));
        let (count, crowd) = self.crowding(run, cell, m);
        let term = self.params.weights.spread * crowd;
        Cand {
            score: base + term,
            base,
            m: m as u32,
            version: cell.version(m),
            crowd: count,
            term,
            domain: cell.domain[m],
        }
    }

    fn feasible(&self, run: &ClassRun, cell: &CellModel, m: usize) -> bool {
        feasible(cell, m, run.class, run.class.different_machine && run.taken.contains(&m))
            && (self.params.preemption || run.class.request.fits_in(&cell.free_for(m, run.class.priority)))
    }

    /// Examines machines until the heap holds `k` candidates: in the class's random order until
    /// the whole cell was examined, after that only machines freed since.
    fn refill(&mut self, run: &mut ClassRun, cell: &CellModel, stats: &mut PassStats) {
        let n = cell.len();
        while run.heap.len() < run.k && run.walk_left > 0 {
            let Some(m) = Self::next_in_walk(run, cell) else {
                run.walk_left = 0;
                break;
            };
            run.walk_left -= 1;
            self.examine(run, cell, m, stats);
        }
        while run.heap.len() < run.k {
            let m = match run.exhausted_at {
                Some(pos) if pos < cell.freed_len() => {
                    run.exhausted_at = Some(pos + 1);
                    cell.freed_since(pos)[0] as usize
                }
                Some(_) => return,
                None if run.examined >= n => {
                    run.exhausted_at = Some(cell.freed_len());
                    return;
                }
                None => {
                    let m = self.order[run.cursor % n] as usize;
                    run.cursor = (run.cursor + 1) % n;
                    run.examined += 1;
                    m
                }
            };
            self.examine(run, cell, m, stats);
        }
    }

    /// Examines machine `m` for the run's class: once per run (feasible or not, it is marked, so
    /// the fit walk, the random order and the freed log skip it after), and a feasible one is
    /// scored into the heap. True when it went into the heap.
    fn examine(&mut self, run: &mut ClassRun, cell: &CellModel, m: usize, stats: &mut PassStats) -> bool {
        stats.examined += 1;
        if m >= cell.len() || self.stamp[m] == self.stamp_gen {
            return false;
        }
        self.stamp[m] = self.stamp_gen;
        if !self.feasible(run, cell, m) {
            return false;
        }
        stats.scored += 1;
        let cand = self.candidate(run, cell, m, None);
        run.heap.push(cand);
        true
    }

    /// Walks the whole fit index from the run's start, without a budget, adding every machine
    /// not yet examined in this run that takes the class without preemption: afterwards the
    /// heap holds every such machine (none can be below the start); true if it found one.
    /// Machines that would need preemption are left alone (not scored, not marked examined).
    /// Starts over (a placement may have moved a machine to a place the walk had passed).
    fn walk_all(&mut self, run: &mut ClassRun, cell: &CellModel, stats: &mut PassStats) -> bool {
        let mut found = false;
        run.walk = (run.walk_start, 0);
        while let Some(m) = Self::next_in_walk(run, cell) {
            if m < cell.len() && run.class.request.fits_in(&cell.free_for(m, run.class.priority)) {
                found |= self.examine(run, cell, m, stats);
            } else {
                stats.examined += 1;
            }
        }
        run.walk_left = 0;
        found
    }

    /// The fit walk's next machine: the fit index's buckets from the run's start upwards (see
    /// the module docs); None at the end of the last bucket. A machine that moves into a bucket
    /// the walk has passed, or is moved within the bucket it is in, may be skipped: the random
    /// order still covers it.
    fn next_in_walk(run: &mut ClassRun, cell: &CellModel) -> Option<usize> {
        let (mut bucket, mut pos) = run.walk;
        while bucket < FIT_BUCKETS {
            if let Some(&m) = cell.fit_bucket(bucket).get(pos) {
                run.walk = (bucket, pos + 1);
                return Some(m as usize);
            }
            bucket += 1;
            pos = 0;
        }
        run.walk = (bucket, 0);
        None
    }

    /// Runs one scheduling pass: places as many tasks of `groups` as fit on `cell`, preempting
    /// lower bands where allowed, and updates `cell` with every binding and eviction.
    ///
    /// Never fails: tasks that fit nowhere come back in [`Placement::unplaced`] with a
    /// [`WhyPending`].
    ///
    /// With [`Params::second_pass`] (the default), a pass that placed tasks without preempting
    /// anyone but left a production or monitoring class pending that a machine it placed on
    /// could have held before (its own choices took the room) is undone and run again with plain
    /// best fit, without preemption, from the same cell; the placement that placed more tasks is
    /// kept (the first on a tie), and the cell is left as it describes ([`PassStats::second_pass`],
    /// [`PassStats::second_pass_kept`]). The hybrid's spreading and balancing win on most cells
    /// but can leave a large task without room on a full one, where best fit does not; this
    /// keeps the better of the two where it matters (Borg §3.2 leaves the trade to the scorer;
    /// the "second improving pass" of issue 21). Passes that place nothing, preempt, or leave
    /// only batch and free work pending (a cell's standing backlog) run once: in `fauxmaster
    /// replay` of the Google trace no pass ran twice.
    pub fn schedule(&mut self, cell: &mut CellModel, groups: &[TaskGroup]) -> Placement {
        let out = self.pass_once(cell, groups);
        let second = self.params.second_pass
            && self.params.weights != Weights::best_fit()
            && !out.unplaced.is_empty()
            && !out.bindings.is_empty()
            && out.preempted.is_empty()
            && self.displaced(cell, &out);
        if !second {
            return out;
        }
        // the same pass again from the same cell, with plain best fit
        let first: Vec<(MachineIndex, Resident)> =
            out.bindings.iter().filter_map(|b| cell.remove(b.machine, b.task).map(|r| (b.machine, r))).collect();
        // without preemption, like the pass it may replace: an alternative that evicted would
        // have to put its victims back when it is not kept (the cell kept only losing them)
        let params = Params { weights: Weights::best_fit(), second_pass: false, preemption: false, ..self.params };
        let best_fit = self.best_fit.get_or_insert_with(|| Box::new(Scheduler::new(params)));
        let alt = best_fit.pass_once(cell, groups);
        debug_assert!(alt.preempted.is_empty(), "the best-fit second pass preempted");
        let better = alt.bindings.len() > out.bindings.len();
        let (mut kept, other) = if better {
            (alt, out)
        } else {
            for b in &alt.bindings {
                cell.remove(b.machine, b.task);
            }
            for (m, r) in first {
                cell.add(m, r);
            }
            (out, alt)
        };
        kept.stats.second_pass = true;
        kept.stats.second_pass_kept = better;
        kept.stats.examined += other.stats.examined;
        kept.stats.scored += other.stats.scored;
        kept
    }

    /// Whether the pass that gave `out` left pending a production or monitoring class that one
    /// of the machines it placed tasks on could have held before the pass (resources only):
    /// then the pass's own placements took its room, and another order of choices may fit both.
    /// A class that fits on no machine the pass touched fit nowhere before it either (untouched
    /// machines only kept their room, and the class found none).
    fn displaced(&self, cell: &CellModel, out: &Placement) -> bool {
        if self.unplaced_production.is_empty() {
            return false;
        }
        let mut added: HashMap<MachineIndex, Resources> = HashMap::new();
        for b in &out.bindings {
            if let Some(r) = cell.residents(b.machine).iter().find(|r| r.task == b.task) {
                let e = added.entry(b.machine).or_default();
                *e = e.saturating_add(r.request);
            }
        }
        self.unplaced_production.iter().any(|(p, req)| {
            added.iter().any(|(&m, add)| cell.up[m] && req.fits_in(&cell.free_for(m, *p).saturating_add(*add)))
        })
    }

    /// One pass with this scheduler's weights (see [`Scheduler::schedule`]).
    fn pass_once(&mut self, cell: &mut CellModel, groups: &[TaskGroup]) -> Placement {
        self.pass += 1;
        self.unplaced_production.clear();
        let n = cell.len();
        self.ensure_order(n);
        let classes = classes(groups);
        let mut out =
            Placement { stats: PassStats { classes: classes.len(), ..Default::default() }, ..Default::default() };
        let domains = cell.domain_names.len().max(1);
        if self.domain_count.len() < cell.domain_names.len() {
            self.domain_count.resize(cell.domain_names.len(), 0);
        }
        let k = if self.params.candidates == 0 { n.max(1) } else { self.params.candidates };
        let most = cell.largest();
        let pass = self.pass;
        // the last pass's, while walking the machines freed since costs less than the cell
        let carried: Vec<Nowhere> = std::mem::take(&mut self.nowhere)
            .into_iter()
            .filter(|w| w.at <= cell.freed_len() && cell.freed_len() - w.at <= n)
            .collect();
        let mut nowhere: Vec<Nowhere> = Vec::new();
        self.reserve = EmptyReserve::default();
        if self.params.weights.spread > 0.0 {
            let large = classes.iter().filter(|c| EmptyReserve::large(&c.request, &most));
            for c in large {
                self.reserve.fits =
                    if self.reserve.need == 0 { c.request } else { self.reserve.fits.min_each(&c.request) };
                self.reserve.need += c.tasks.len();
            }
        }
        let seed = self.params.seed;
        for class in &classes {
            let entry = self
                .cache
                .remove(&class.key)
                .unwrap_or_else(|| ClassCache { cursor: class_offset(&class.key, seed, n), ..Default::default() });
            self.stamp_gen += 1;
            let k = self.class_candidates(class, k, n);
            let band = CellModel::band_of(class.priority);
            // a class at least as large as one that found no machine in this pass can only
            // find one among the machines freed since
            let known = nowhere
                .iter()
                .chain(&carried)
                .find(|w| w.band == band && w.machines.len() <= k && w.request.fits_in(&class.request));
            let exhausted_at = match known {
                Some(w) => Some(entry.exhausted_at.map_or(w.at, |at| at.max(w.at))),
                None => entry.exhausted_at,
            };
            // no machine with a smaller mean free fraction than the request's share of the cell's
            // largest capacities can fit it (one bucket lower for rounding)
            let walk_start = fit_bucket_of(class.request.mean_fraction(&most)).saturating_sub(1);
            let spread = self.params.weights.spread > 0.0 && spreads(class, domains);
            let mut run = ClassRun {
                class,
                k,
                heap: {
                    let heap = CandHeap::new(std::mem::take(&mut self.spare_heap), n, k + 1);
                    // by domain where a placement makes several other candidates stale
                    if self.domain_heaps && spread && n >= 2 * domains {
                        heap.by_domain(domains)
                    } else {
                        heap
                    }
                },
                cursor: entry.cursor,
                examined: 0,
                exhausted_at,
                taken: class.occupied.iter().copied().collect(),
                counted: Vec::new(),
                fair_share: (class.tasks.len() as f64 / domains as f64).ceil().max(1.0),
                spread,
                large: EmptyReserve::large(&class.request, &most),
                walk: (walk_start, 0),
                walk_start,
                free_fit_searched: false,
                // exhaustive search scores every machine anyway, and once a class has examined
                // the whole cell only machines freed since can have become feasible
                walk_left: if !self.params.fit_walk || self.params.candidates == 0 || exhausted_at.is_some() {
                    0
                } else {
                    (WALK_FACTOR * (k + class.tasks.len())).min(n)
                },
            };
            for &m in known.map_or(&[][..], |w| &w.machines[..]) {
                self.examine(&mut run, cell, m as usize, &mut out.stats);
            }
            for &(m, version, base) in &entry.candidates {
                let m = m as usize;
                // (a machine the entry above already examined is in the heap or infeasible)
                if m >= n || self.stamp[m] == self.stamp_gen || !self.feasible(&run, cell, m) {
                    continue;
                }
                let known = (version == cell.version(m)).then_some(base);
                if known.is_none() {
                    out.stats.scored += 1;
                }
                self.stamp[m] = self.stamp_gen;
                let cand = self.candidate(&run, cell, m, known);
                run.heap.push(cand);
            }
            let mut left = None;
            for (i, &task) in class.tasks.iter().enumerate() {
                if !self.place_one(&mut run, cell, task, &mut out) {
                    left = Some(i);
                    break;
                }
            }
            for d in run.counted.drain(..) {
                self.domain_count[d as usize] = 0;
            }
            if let Some(at) = run.exhausted_at.filter(|_| run.heap.len() <= NOWHERE_KEEP) {
                // every machine it can use is in its heap: remembered for the larger classes
                if class.constraints.is_empty() && run.taken.is_empty() {
                    let machines = run.heap.machines().collect();
                    nowhere.push(Nowhere { band, request: class.request, at, machines });
                }
            }
            if let Some(i) = left {
                if run.large {
                    // not placed in this pass: nothing to keep machines for
                    self.reserve.need = self.reserve.need.saturating_sub(class.tasks.len() - i);
                }
                let why =
                    if self.params.explain { why_pending(cell, class, &run.taken) } else { WhyPending::default() };
                out.unplaced.push(Unplaced { tasks: class.tasks[i..].to_vec(), why });
                if crate::cell::places_against_requests(class.priority) {
                    self.unplaced_production.push((class.priority, class.request));
                }
            }
            let (mut kept, mut exhausted_at) = (run.heap.drain(), run.exhausted_at);
            self.spare_heap = std::mem::take(&mut run.heap).into_spare();
            if kept.len() > CACHE_KEEP {
                // the best ones; the rest were feasible, so the cell is no longer known examined
                kept.select_nth_unstable_by(CACHE_KEEP, |a, b| b.cmp(a));
                kept.truncate(CACHE_KEEP);
                exhausted_at = None;
            }
            let candidates = kept.iter().map(|c| (c.m, c.version, c.base)).collect();
            self.cache.insert(
                class.key.clone(),
                ClassCache { cursor: run.cursor, candidates, exhausted_at, last_pass: pass },
            );
            // this class has read the freed log; the only machines freed while it ran are the
            // ones its own evictions freed, which it re-examined itself
            cell.freed_read();
        }
        self.cache.retain(|_, c| pass - c.last_pass <= CACHE_TTL);
        self.nowhere = nowhere;
        out
    }

    /// Places one task of the run's class; false when no machine can take it.
    fn place_one(&mut self, run: &mut ClassRun, cell: &mut CellModel, task: TaskRef, out: &mut Placement) -> bool {
        loop {
            if run.heap.len() < run.k {
                self.refill(run, cell, &mut out.stats);
            }
            let Some(top) = run.heap.pop() else { return false };
            let m = top.m as usize;
            let stale = top.version != cell.version(m) || self.crowding(run, cell, m).0 != top.crowd;
            if stale {
                if !self.feasible(run, cell, m) {
                    self.stamp[m] = 0;
                    continue;
                }
                out.stats.scored += 1;
                let base = (top.version == cell.version(m)).then_some(top.base);
                let fresh = self.candidate(run, cell, m, base);
                if run.heap.top_beats(&fresh) {
                    run.heap.push(fresh); // something else is now better
                    continue;
                }
            }
            let class = run.class;
            // Preempt only when no machine can take the task without it: before evicting
            // anyone, look at every machine that might (once per class per pass).
            if !run.free_fit_searched
                && run.exhausted_at.is_none()
                && crate::scoring::preemption_level(cell, m, class.priority, &class.request) > 0
            {
                run.heap.push(top);
                run.free_fit_searched = true;
                // production and monitoring fit without preemption only in what is free
                // outright, so only on a machine at or above the walk's start: walk them all,
                // scoring only those; if one is found it beats preempting
                let found =
                    crate::cell::places_against_requests(class.priority) && self.walk_all(run, cell, &mut out.stats);
                if !found {
                    // choose the victims from the whole cell (Borg §3.2: minimise the number and
                    // priority of preempted tasks); batch and free also count reclaimed
                    // resources, which the fit index does not see
                    run.k = cell.len().max(1);
                    self.refill(run, cell, &mut out.stats);
                    // every machine is now in the heap or was found infeasible
                    run.exhausted_at.get_or_insert(cell.freed_len());
                }
                continue;
            }
            let Some(victims) = plan_victims(cell, m, class.priority, &class.request) else {
                self.stamp[m] = 0;
                continue;
            };
            for v in victims {
                cell.remove(m, v.task);
                out.preempted.push(crate::schedule::Preemption { victim: v.task, machine: m, by: task });
            }
            if run.large {
                self.reserve.need = self.reserve.need.saturating_sub(1);
            }
            cell.add(m, Resident::new(task, class.priority, class.request));
            out.bindings.push(Binding { task, machine: m });
            if run.spread {
                let d = cell.domain[m];
                if let Some(count) = self.domain_count.get_mut(d as usize) {
                    *count += 1;
                    run.counted.push(d);
                    let (crowd, c) = self.crowding(run, cell, m);
                    run.heap.domain_moved(d, crowd, self.params.weights.spread * c);
                }
            }
            if class.different_machine {
                run.taken.insert(m);
                self.stamp[m] = 0;
            } else if self.feasible(run, cell, m) {
                out.stats.scored += 1;
                let cand = self.candidate(run, cell, m, None);
                run.heap.push(cand);
            } else {
                self.stamp[m] = 0;
            }
            return true;
        }
    }
}

/// One pass with a fresh [`Scheduler`] and default [`Params`]: for callers that keep no state
/// between passes.
pub fn schedule(cell: &mut CellModel, groups: &[TaskGroup]) -> Placement {
    Scheduler::new(Params::default()).schedule(cell, groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::MachineId;
    use crate::constraint::{Attributes, Constraint, ConstraintOp};
    use crate::priority::Priority;
    use crate::resources::Resources;
    use proptest::prelude::*;

    fn cell(machines: &[(u64, u64, &str)]) -> CellModel {
        let mut c = CellModel::new();
        for (n, (cpu, ram, arch)) in machines.iter().enumerate() {
            let attrs: Attributes = [("arch".to_string(), arch.to_string())].into();
            c.push(
                MachineId(format!("m{n}")),
                Resources::new(*cpu, *ram, 1 << 40),
                attrs,
                &format!("r{}", n / 2),
                true,
            );
        }
        c
    }

    fn group(job_id: u32, prio: i32, cpu: u64, ram: u64, n: u32) -> TaskGroup {
        TaskGroup {
            job_id,
            name: format!("j{job_id}"),
            priority: Priority(prio),
            request: Resources::new(cpu, ram, 0),
            constraints: vec![],
            different_machine: false,
            tasks: (0..n).collect(),
            occupied: vec![],
        }
    }

    fn exhaustive() -> Scheduler {
        Scheduler::new(Params { candidates: 0, ..Default::default() })
    }

    fn t(job: u32, index: u32) -> TaskRef {
        TaskRef { job, index }
    }

    /// With one candidate the random order alone picks whatever it meets first; the fit walk
    /// finds the one machine with just enough room among a thousand empty ones.
    #[test]
    fn the_fit_walk_finds_the_tightest_machine_relaxed_randomization_misses() {
        let machines: Vec<(u64, u64, &str)> = (0..1000).map(|_| (4000, 4 << 30, "x86_64")).collect();
        let (tight, filler, task) = (617, group(9, 100, 3000, 3 << 30, 1), group(1, 100, 1000, 1 << 30, 1));
        let mut placed = Vec::new();
        for walk in [true, false] {
            let mut c = cell(&machines);
            c.add(tight, Resident::new(t(9, 0), filler.priority, filler.request));
            let params = Params { candidates: 1, per_task: 0, fit_walk: walk, ..Default::default() };
            let p = Scheduler::new(params).schedule(&mut c, std::slice::from_ref(&task));
            placed.push(p.bindings[0].machine);
        }
        assert_eq!(placed[0], tight, "the walk starts at the fullest machine that could fit");
        assert_ne!(placed[1], tight, "one random candidate of a thousand is not the tight one");
    }

    /// A machine added between passes: a class that had found no room anywhere looks at the new
    /// machine only, instead of examining the whole cell again.
    #[test]
    fn a_grown_cell_keeps_the_caches_and_offers_the_new_machine() {
        let machines: Vec<(u64, u64, &str)> = (0..100).map(|_| (1000, 1 << 30, "x86_64")).collect();
        let mut c = cell(&machines);
        let mut s = Scheduler::new(Params::default());
        let big = group(1, 200, 4000, 2 << 30, 1);
        let first = s.schedule(&mut c, std::slice::from_ref(&big));
        assert_eq!(first.unplaced.len(), 1);
        assert!(first.stats.examined >= 100, "the whole cell: {:?}", first.stats);
        let m = c.push(MachineId("new".into()), Resources::new(8000, 8 << 30, 1 << 40), Attributes::new(), "r", true);
        let second = s.schedule(&mut c, std::slice::from_ref(&big));
        assert_eq!(second.bindings, vec![Binding { task: t(1, 0), machine: m }]);
        assert!(second.stats.examined <= 2, "only the new machine: {:?}", second.stats);
    }

    /// A production class wants `per_task` candidates per task; a batch class of the same size
    /// only `candidates`.
    #[test]
    fn production_classes_examine_more_machines_per_task() {
        let machines: Vec<(u64, u64, &str)> = (0..400).map(|_| (64_000, 256 << 30, "x86_64")).collect();
        let scored = |prio: i32| {
            let mut c = cell(&machines);
            let params = Params { candidates: 8, per_task: 4, fit_walk: false, ..Default::default() };
            let p = Scheduler::new(params).schedule(&mut c, &[group(1, prio, 100, 1 << 20, 50)]);
            assert_eq!(p.bindings.len(), 50);
            p.stats.scored
        };
        let (production, batch) = (scored(200), scored(100));
        assert!(production >= 200, "4 per task of 50: {production} scored");
        assert!(batch < 200, "8 candidates, then one re-score per placement: {batch} scored");
    }

    /// A class keeps at most CACHE_KEEP candidates between passes; when it had examined the
    /// whole cell and drops some, the next pass must still find the dropped machines.
    #[test]
    fn a_truncated_score_cache_still_finds_every_machine_next_pass() {
        let machines: Vec<(u64, u64, &str)> = (0..600).map(|_| (1000, 1 << 30, "x86_64")).collect();
        let mut c = cell(&machines);
        let mut s = Scheduler::new(Params { candidates: 32, per_task: 4, ..Default::default() });
        // 200 production tasks that fill a machine each: 800 candidates wanted, the whole cell
        // examined, 400 feasible left, of which CACHE_KEEP are kept
        let first = s.schedule(&mut c, &[group(1, 200, 1000, 1 << 30, 200)]);
        assert_eq!(first.bindings.len(), 200);
        let mut more = group(1, 200, 1000, 1 << 30, 550);
        more.tasks = (200..550).collect();
        let second = s.schedule(&mut c, &[more]);
        assert_eq!(second.bindings.len(), 350, "400 machines are still empty: {:?}", second.unplaced);
    }

    #[test]
    fn best_fit_prefers_the_tightest_machine() {
        let mut c = cell(&[(4000, 8 << 30, "x86_64"), (1000, 2 << 30, "x86_64"), (2000, 4 << 30, "x86_64")]);
        let p = exhaustive().schedule(&mut c, &[group(1, 100, 1000, 1 << 30, 1)]);
        assert_eq!(p.bindings, vec![Binding { task: t(1, 0), machine: 1 }]);
        assert_eq!(c.allocated(1), Resources::new(1000, 1 << 30, 0));
    }

    #[test]
    fn unplaced_tasks_say_why_per_machine() {
        let mut c = cell(&[(1000, 1 << 30, "x86_64"), (1000, 1 << 30, "arm64")]);
        c.push(MachineId("down".into()), Resources::new(8000, 8 << 30, 0), Attributes::new(), "r9", false);
        let mut g = group(1, 100, 600, 1 << 20, 3);
        g.constraints.push(Constraint {
            attribute: "arch".into(),
            op: ConstraintOp::Eq,
            values: vec!["x86_64".into()],
        });
        let p = schedule(&mut c, &[g]);
        assert_eq!(p.bindings.len(), 1);
        assert_eq!(p.unplaced.len(), 1);
        assert_eq!(p.unplaced[0].tasks, vec![t(1, 1), t(1, 2)]);
        assert_eq!(
            p.unplaced[0].why.to_string(),
            "0/3 machines fit: 1 constraint arch == x86_64 not met, 1 insufficient cpu, 1 machine down"
        );
    }

    #[test]
    fn different_machine_spreads_and_counts_occupied() {
        let mut c = cell(&[(8000, 8 << 30, "x"), (8000, 8 << 30, "x"), (8000, 8 << 30, "x")]);
        let mut g = group(1, 100, 100, 1 << 20, 3);
        g.different_machine = true;
        g.occupied = vec![0];
        let p = schedule(&mut c, &[g]);
        let mut ms: Vec<_> = p.bindings.iter().map(|b| b.machine).collect();
        ms.sort();
        assert_eq!(ms, vec![1, 2]);
        assert_eq!(p.unplaced[0].tasks, vec![t(1, 2)]);
    }

    #[test]
    fn higher_priority_groups_go_first_and_preempt_lower_bands_only() {
        let mut c = cell(&[(1000, 8 << 30, "x")]);
        let p = schedule(&mut c, &[group(1, 0, 1000, 1, 1), group(2, 200, 1000, 1, 1)]);
        assert_eq!(p.bindings[0].task, t(2, 0));
        assert_eq!(p.unplaced[0].tasks, vec![t(1, 0)]);
        // a batch task holds the machine; production preempts it
        let mut c = cell(&[(1000, 8 << 30, "x")]);
        let mut s = Scheduler::new(Params::default());
        s.schedule(&mut c, &[group(1, 100, 1000, 1, 1)]);
        let p = s.schedule(&mut c, &[group(2, 250, 600, 1, 1)]);
        assert_eq!(p.preempted, vec![Preemption { victim: t(1, 0), machine: 0, by: t(2, 0) }]);
        assert_eq!(c.residents(0).len(), 1);
        // production never preempts production
        let p = s.schedule(&mut c, &[group(3, 299, 600, 1, 1)]);
        assert!(p.preempted.is_empty() && p.bindings.is_empty());
        assert_eq!(p.unplaced[0].why.to_string(), "0/1 machines fit: 1 insufficient cpu");
        // and nothing preempts when preemption is off
        let mut c = cell(&[(1000, 8 << 30, "x")]);
        let mut s = Scheduler::new(Params { preemption: false, ..Default::default() });
        s.schedule(&mut c, &[group(1, 100, 1000, 1, 1)]);
        let p = s.schedule(&mut c, &[group(2, 250, 600, 1, 1)]);
        assert!(p.preempted.is_empty() && p.bindings.is_empty());
    }

    #[test]
    fn preempts_when_every_machine_needs_it_even_with_few_candidates() {
        // regression: looking further for a preemption-free machine must end when the heap
        // already holds the whole cell
        let mut c = cell(&[(1000, 8 << 30, "x"), (1000, 8 << 30, "x")]);
        let mut s = Scheduler::new(Params { candidates: 1, ..Default::default() });
        s.schedule(&mut c, &[group(1, 10, 1000, 1, 2)]);
        let p = s.schedule(&mut c, &[group(2, 150, 500, 1, 1)]);
        assert_eq!(p.bindings.len(), 1);
        assert_eq!(p.preempted.len(), 1);
    }

    /// Before a production task preempts, it looks for a machine with room outright in the fit
    /// index's upper buckets, scoring only those, and takes one if there is any.
    #[test]
    fn a_machine_with_room_beats_preemption_without_scoring_the_full_cell() {
        let machines: Vec<(u64, u64, &str)> = (0..500).map(|_| (1000, 1 << 30, "x86_64")).collect();
        let mut c = cell(&machines);
        let batch = group(1, 100, 1000, 1 << 30, 499);
        let mut s = Scheduler::new(Params { candidates: 4, ..Default::default() });
        assert_eq!(s.schedule(&mut c, &[batch]).bindings.len(), 499);
        let empty = (0..500).find(|&m| c.residents(m).is_empty()).unwrap();
        let p = s.schedule(&mut c, &[group(2, 250, 600, 1 << 20, 1)]);
        assert!(p.preempted.is_empty(), "{:?}", p.preempted);
        assert_eq!(p.bindings, vec![Binding { task: t(2, 0), machine: empty }]);
        assert!(p.stats.scored < 50, "only machines with room outright are scored: {:?}", p.stats);
        // with no room anywhere it preempts a batch task
        let p = s.schedule(&mut c, &[group(3, 250, 600, 1 << 20, 1)]);
        assert_eq!(p.preempted.len(), 1);
        assert_eq!(p.bindings.len(), 1);
    }

    #[test]
    fn without_preemption_the_free_machine_wins() {
        let mut c = cell(&[(1000, 8 << 30, "x"), (1000, 8 << 30, "x")]);
        let mut s = exhaustive();
        s.schedule(&mut c, &[group(1, 100, 900, 1, 1)]);
        let p = s.schedule(&mut c, &[group(2, 250, 600, 1, 1)]);
        assert!(p.preempted.is_empty());
        assert_eq!(p.bindings.len(), 1);
    }

    /// 100 machines of 4 cores / 4 GiB, each holding a production task of 3.5 cores / 3.5 GiB
    /// that reserves `reserved` (reclaimed resources, Borg §5.5).
    fn full_cell(reserved: Resources) -> CellModel {
        let mut c = cell(&vec![(4000, 4 << 30, "x"); 100]);
        for m in 0..100 {
            let filler = Resident::new(t(99, m as u32), Priority(200), Resources::new(3500, 3584 << 20, 0));
            c.add(m, filler.reserving(reserved));
        }
        c
    }

    /// A class at least as large as one that found no machine in the same pass and band does
    /// not walk the cell again (`Nowhere`): the same two unplaceable classes examine half as
    /// many machines as when the larger one comes first, and neither is placed.
    #[test]
    fn a_class_larger_than_one_that_fit_nowhere_does_not_walk_the_cell_again() {
        let reserved = Resources::new(3500, 3584 << 20, 0);
        let small = |prio| group(1, prio, 1000, 1 << 30, 1);
        let big = |prio| group(2, prio, 2000, 2 << 30, 1);
        // small first (higher priority): big is known to fit nowhere
        let p = exhaustive().schedule(&mut full_cell(reserved), &[small(260), big(250)]);
        assert!(p.bindings.is_empty() && p.unplaced.len() == 2, "{p:?}");
        let remembered = p.stats.examined;
        // big first: small is not larger, so it walks the cell itself
        let p = exhaustive().schedule(&mut full_cell(reserved), &[small(250), big(260)]);
        assert!(p.bindings.is_empty() && p.unplaced.len() == 2, "{p:?}");
        assert_eq!(remembered * 2, p.stats.examined, "one walk of the cell instead of two");
    }

    /// A class that found one machine in the whole cell hands it to a larger class of its band,
    /// which takes it without walking the cell.
    #[test]
    fn a_larger_class_gets_the_few_machines_a_smaller_one_found() {
        let reserved = Resources::new(3500, 3584 << 20, 0);
        let mut c = full_cell(reserved);
        c.remove(5, t(99, 5));
        let (a, b) = (group(1, 260, 1500, 1536 << 20, 1), group(2, 255, 2000, 2 << 30, 1));
        let p = exhaustive().schedule(&mut c, &[a, b]);
        assert_eq!(p.bindings.iter().map(|b| (b.task.job, b.machine)).collect::<Vec<_>>(), vec![(1, 5), (2, 5)]);
        let mut alone = full_cell(reserved);
        alone.remove(5, t(99, 5));
        let first = exhaustive().schedule(&mut alone, &[group(1, 260, 1500, 1536 << 20, 1)]);
        assert!(p.stats.examined <= first.stats.examined + 1, "{:?} vs {:?}", p.stats, first.stats);
    }

    /// The next pass still knows what fit nowhere: a new, larger class of the band examines only
    /// the machines freed since; once one is freed, it is found.
    #[test]
    fn fitting_nowhere_carries_over_to_the_next_pass_until_a_machine_is_freed() {
        let reserved = Resources::new(3500, 3584 << 20, 0);
        let mut c = full_cell(reserved);
        let mut s = exhaustive();
        let first = s.schedule(&mut c, &[group(1, 260, 1000, 1 << 30, 1)]);
        assert!(first.bindings.is_empty() && first.stats.examined > 0);
        let second = s.schedule(&mut c, &[group(2, 260, 2000, 2 << 30, 1)]);
        assert!(second.bindings.is_empty());
        assert_eq!(second.stats.examined, 0, "nothing was freed: nothing to examine");
        c.remove(7, t(99, 7));
        let third = s.schedule(&mut c, &[group(3, 260, 3000, 3 << 30, 1)]);
        assert_eq!(third.bindings.iter().map(|b| b.machine).collect::<Vec<_>>(), vec![7]);
        assert!(third.stats.examined <= 2, "only the freed machine: {:?}", third.stats);
    }

    /// What a production class fits nowhere says nothing of a batch class, which is placed
    /// against reservations: a larger batch task still finds the reclaimed room.
    #[test]
    fn fitting_nowhere_is_remembered_only_within_a_band() {
        let reserved = Resources::new(1000, 1 << 30, 0);
        let production = group(1, 260, 1000, 1 << 30, 1);
        let batch = group(2, 150, 2000, 2 << 30, 1);
        let p = exhaustive().schedule(&mut full_cell(reserved), &[production, batch]);
        assert_eq!(p.bindings.iter().map(|b| b.task.job).collect::<Vec<_>>(), vec![2], "{p:?}");
        assert_eq!(p.unplaced.len(), 1);
    }

    /// Machines m0 and m1 of 8 cores / 32 GiB, m2 of 32 cores / 128 GiB, each its own domain.
    fn two_small_one_big() -> CellModel {
        let mut c = CellModel::new();
        for (n, (cpu, ram)) in [(8000u64, 32u64 << 30), (8000, 32 << 30), (32_000, 128 << 30)].into_iter().enumerate() {
            let capacity = Resources::new(cpu, ram, 1 << 40);
            c.push(MachineId(format!("m{n}")), capacity, Attributes::new(), &format!("d{n}"), true);
        }
        c
    }

    /// Spreading a class over machines must not take the empty machine a large task of the
    /// same pass needs (`EmptyReserve`): two small machines and one big one, each its own
    /// domain; three small tasks first (higher priority), then one task of most of the big one.
    /// Crowding alone sends the third small task to the empty big machine, and the large task
    /// then fits nowhere.
    #[test]
    fn spreading_keeps_the_empty_machine_a_large_task_of_the_pass_needs() {
        let mut c = two_small_one_big();
        let small = group(1, 260, 4000, 8 << 30, 3);
        let large = group(2, 250, 30_000, 100 << 30, 1);
        let p = exhaustive().schedule(&mut c, &[small, large]);
        assert!(p.unplaced.is_empty(), "{:?}", p.unplaced);
        let on_big: Vec<u32> = p.bindings.iter().filter(|b| b.machine == 2).map(|b| b.task.job).collect();
        assert_eq!(on_big, vec![2], "{:?}", p.bindings);
        // the small tasks are still spread as far as the small machines allow
        let per_small = [0, 1].map(|m| p.bindings.iter().filter(|b| b.machine == m).count());
        assert_eq!(per_small.iter().sum::<usize>(), 3);
        assert!(per_small.iter().all(|&k| k >= 1), "{per_small:?}");
    }

    /// Without a large task in the pass nothing is kept back: the same small tasks spread onto
    /// the big machine too.
    #[test]
    fn without_a_large_task_spreading_uses_every_machine() {
        let mut c = two_small_one_big();
        let p = exhaustive().schedule(&mut c, &[group(1, 260, 4000, 8 << 30, 3)]);
        assert!(p.bindings.iter().any(|b| b.machine == 2), "{:?}", p.bindings);
    }

    #[test]
    fn tasks_of_a_class_spread_over_failure_domains() {
        // 4 equal machines in 2 racks (r0: m0 m1, r1: m2 m3); 2 small tasks
        let mut c = cell(&[(8000, 8 << 30, "x"), (8000, 8 << 30, "x"), (8000, 8 << 30, "x"), (8000, 8 << 30, "x")]);
        let p = exhaustive().schedule(&mut c, &[group(1, 100, 100, 1 << 20, 2)]);
        let racks: HashSet<u32> = p.bindings.iter().map(|b| c.domain[b.machine]).collect();
        assert_eq!(racks.len(), 2, "{:?}", p.bindings);
        // with plain best fit both go to the same (fullest) machine
        let mut c2 = cell(&[(8000, 8 << 30, "x"), (8000, 8 << 30, "x"), (8000, 8 << 30, "x"), (8000, 8 << 30, "x")]);
        let mut bf = Scheduler::new(Params { candidates: 0, weights: Weights::best_fit(), ..Default::default() });
        let p = bf.schedule(&mut c2, &[group(1, 100, 100, 1 << 20, 2)]);
        assert_eq!(p.bindings[0].machine, p.bindings[1].machine);
    }

    /// [`spreads`]: two single-task jobs of one class, on a cell of 40 machines in 20 racks (2
    /// tasks, fewer than a quarter of the racks), fill one machine together as under best fit;
    /// one job of two tasks of the same shape is still spread over racks, and so is a class of
    /// single-task jobs as large as a quarter of the racks. (Tasks of a tenth of a machine in
    /// both CPU and RAM: no stranding term between the machines.)
    #[test]
    fn only_classes_with_a_job_of_several_tasks_or_large_against_the_cell_spread() {
        let machines = [(8000, 8 << 30, "x"); 40];
        let single = |jobs: u32| (0..jobs).map(|j| group(10 + j, 100, 800, (8 << 30) / 10, 1)).collect::<Vec<_>>();
        let racks =
            |c: &CellModel, p: &Placement| p.bindings.iter().map(|b| c.domain[b.machine]).collect::<HashSet<u32>>();

        let mut c = cell(&machines);
        let p = exhaustive().schedule(&mut c, &single(2));
        assert_eq!(p.bindings.len(), 2);
        assert_eq!(p.bindings[0].machine, p.bindings[1].machine, "{:?}", p.bindings);

        let mut c = cell(&machines);
        let p = exhaustive().schedule(&mut c, &[group(1, 100, 800, (8 << 30) / 10, 2)]);
        assert_eq!(racks(&c, &p).len(), 2, "{:?}", p.bindings);

        let mut c = cell(&machines);
        let quarter = (20.0 * SPREAD_CLASS_SHARE).ceil() as u32;
        let p = exhaustive().schedule(&mut c, &single(quarter));
        assert_eq!(racks(&c, &p).len(), quarter as usize, "{:?}", p.bindings);
    }

    /// The second pass: on m0 (4 cores, 16 GiB) and m1 (8 cores, 8 GiB), a task of 4 cores and
    /// 4 GiB placed first goes to m1 under the balancing term (it leaves m1 even, m0 all RAM),
    /// and then a task of 8 cores fits nowhere; best fit puts the first on m0 and both fit.
    fn displaced_cell() -> (CellModel, Vec<TaskGroup>) {
        let c = cell(&[(4000, 16 << 30, "x"), (8000, 8 << 30, "x")]);
        (c, vec![group(1, 260, 4000, 4 << 30, 1), group(2, 250, 8000, 4 << 30, 1)])
    }

    fn balancing(second_pass: bool) -> Scheduler {
        let weights = Weights { spread: 0.0, ..Weights::default() };
        Scheduler::new(Params { candidates: 0, weights, second_pass, ..Default::default() })
    }

    #[test]
    fn a_pass_that_left_production_work_without_the_room_it_took_runs_again_with_best_fit() {
        let (mut c, groups) = displaced_cell();
        let p = balancing(false).schedule(&mut c, &groups);
        assert_eq!(p.bindings, vec![Binding { task: t(1, 0), machine: 1 }]);
        assert_eq!(p.unplaced.len(), 1);
        assert!(!p.stats.second_pass);

        let (mut c, groups) = displaced_cell();
        let p = balancing(true).schedule(&mut c, &groups);
        assert!(p.unplaced.is_empty(), "{:?}", p.unplaced);
        assert!(p.stats.second_pass && p.stats.second_pass_kept);
        assert_eq!(p.bindings, vec![Binding { task: t(1, 0), machine: 0 }, Binding { task: t(2, 0), machine: 1 }]);
        // the cell holds what the kept placement says, and nothing of the first
        let on = |m: usize| c.residents(m).iter().map(|r| r.task).collect::<Vec<_>>();
        assert_eq!((on(0), on(1)), (vec![t(1, 0)], vec![t(2, 0)]));
        assert_eq!(c.free_for(0, Priority(200)), Resources::new(0, 12 << 30, 1 << 40));
        assert_eq!(c.free_for(1, Priority(200)), Resources::new(0, 4 << 30, 1 << 40));
    }

    /// The Borgmaster rebuilds the cell model each pass and clears the caches: the second pass's
    /// caches go too (here the machines' shapes swap places between the two models; cached
    /// scores of the first would send the first task to the wrong machine again).
    #[test]
    fn clearing_the_caches_clears_the_second_passs_too() {
        let mut s = balancing(true);
        let (mut c, groups) = displaced_cell();
        assert!(s.schedule(&mut c, &groups).stats.second_pass_kept);
        s.clear_cache();
        let mut swapped = cell(&[(8000, 8 << 30, "x"), (4000, 16 << 30, "x")]);
        let p = s.schedule(&mut swapped, &groups);
        assert!(p.unplaced.is_empty(), "{:?}", p.bindings);
        assert_eq!(p.bindings, vec![Binding { task: t(1, 0), machine: 1 }, Binding { task: t(2, 0), machine: 0 }]);
    }

    /// When best fit does no better the first placement stands and the cell is as the first
    /// pass left it; batch work left pending (a standing backlog) never runs a second pass.
    #[test]
    fn a_second_pass_that_places_no_more_leaves_the_first_placement() {
        let (mut c, groups) = displaced_cell();
        let (mut c2, _) = displaced_cell();
        let first = balancing(true).schedule(&mut c, &groups[..1]);
        let alone = balancing(false).schedule(&mut c2, &groups[..1]);
        assert_eq!(first, alone, "nothing pending: one pass");

        let (mut c, mut groups) = displaced_cell();
        groups[1] = group(2, 250, 9000, 4 << 30, 1); // fits on no machine at all
        let (mut c2, _) = displaced_cell();
        let p = balancing(true).schedule(&mut c, &groups);
        let once = balancing(false).schedule(&mut c2, &groups);
        assert!(!p.stats.second_pass, "pending, but no machine it placed on could have held it");
        assert_eq!(p.bindings, once.bindings);

        // a third task that needs m0's RAM: the hybrid places the first and the third, best fit
        // the first and the second; a tie, so the first placement and its cell stand
        let (mut c, mut groups) = displaced_cell();
        groups.push(group(3, 240, 4000, 13 << 30, 1));
        let p = balancing(true).schedule(&mut c, &groups);
        assert!(p.stats.second_pass && !p.stats.second_pass_kept, "{:?}", p.stats);
        assert_eq!(p.bindings, vec![Binding { task: t(1, 0), machine: 1 }, Binding { task: t(3, 0), machine: 0 }]);
        let on = |m: usize| c.residents(m).iter().map(|r| r.task).collect::<Vec<_>>();
        assert_eq!((on(0), on(1)), (vec![t(3, 0)], vec![t(1, 0)]));
        assert_eq!(c.free_for(0, Priority(200)), Resources::new(0, 3 << 30, 1 << 40));
        assert_eq!(c.free_for(1, Priority(200)), Resources::new(4000, 4 << 30, 1 << 40));

        // batch work pending: one pass
        let (mut c, _) = displaced_cell();
        let groups = vec![group(1, 160, 4000, 4 << 30, 1), group(2, 150, 8000, 4 << 30, 1)];
        let p = balancing(true).schedule(&mut c, &groups);
        assert!(!p.stats.second_pass);
        assert_eq!(p.unplaced.len(), 1);
    }

    #[test]
    fn same_seed_same_placement_and_the_cache_carries_over() {
        let machines: Vec<(u64, u64, &str)> =
            (0..200).map(|i| (1000 + (i % 7) * 500, (2 + i % 5) << 30, "x")).collect();
        let groups: Vec<TaskGroup> =
            (0..20).map(|j| group(j, 100 + j as i32, 300 + 50 * j as u64, 256 << 20, 30)).collect();
        let run = |seed, fit_walk| {
            let mut c = cell(&machines);
            let mut s = Scheduler::new(Params { seed, fit_walk, ..Default::default() });
            let p1 = s.schedule(&mut c, &groups[..10]);
            let p2 = s.schedule(&mut c, &groups[10..]);
            (p1.bindings, p2.bindings, p2.stats)
        };
        assert_eq!(run(7, true), run(7, true));
        assert_eq!(run(7, false), run(7, false));
        // the seed orders the machines the fit walk leaves to the random order
        assert_ne!(run(7, false).0, run(8, false).0);
    }

    proptest! {
        /// A spreading class's candidates kept by failure domain (`CandHeap::by_domain`) choose
        /// the same machines as one heap re-scoring stale candidates lazily: same bindings,
        /// evictions and pending tasks, pass after pass, racks of several machines, priorities
        /// that preempt, exhaustive and sampled candidates, several spreading weights.
        #[test]
        fn candidates_by_domain_choose_as_one_heap(
            machines in proptest::collection::vec((1u64..8000, 1u64..(16 << 30)), 4..60),
            rack in 2usize..9,
            passes in proptest::collection::vec(
                proptest::collection::vec((0i32..400, 1u64..3000, 1u64..(6 << 30), 1u32..40, any::<bool>()), 1..6),
                1..4),
            candidates in prop_oneof![Just(0usize), Just(4), Just(32)],
            spread in prop_oneof![Just(None), Just(Some(1.0)), Just(Some(0.1))],
            seed in any::<u64>(),
        ) {
            let mut c = CellModel::new();
            for (n, (cpu, ram)) in machines.iter().enumerate() {
                c.push(MachineId(format!("m{n}")), Resources::new(*cpu, *ram, 1 << 40), Attributes::new(), &format!("r{}", n / rack), true);
            }
            let mut weights = Weights::default();
            if let Some(w) = spread {
                weights.spread = w;
            }
            let params = Params { seed, candidates, weights, ..Default::default() };
            let (mut by_domain, mut one_heap) = (Scheduler::new(params), Scheduler::new(params));
            one_heap.domain_heaps = false;
            let mut c2 = c.clone();
            let mut job = 0;
            for groups in passes {
                let gs: Vec<TaskGroup> = groups.iter().map(|(p, cpu, ram, count, dm)| {
                    job += 1;
                    let mut g = group(job, *p, *cpu, *ram, *count);
                    g.different_machine = *dm;
                    g
                }).collect();
                let (a, b) = (by_domain.schedule(&mut c, &gs), one_heap.schedule(&mut c2, &gs));
                let binds = |p: &Placement| p.bindings.iter().map(|b| (b.task, b.machine)).collect::<Vec<_>>();
                let evicts = |p: &Placement| p.preempted.iter().map(|e| (e.victim, e.machine, e.by)).collect::<Vec<_>>();
                let pending = |p: &Placement| p.unplaced.iter().map(|u| u.tasks.clone()).collect::<Vec<_>>();
                prop_assert_eq!(binds(&a), binds(&b));
                prop_assert_eq!(evicts(&a), evicts(&b));
                prop_assert_eq!(pending(&a), pending(&b));
            }
        }
    }

    proptest! {
        /// Capacity holds on every machine, constraints and different_machine hold, no task is
        /// lost, and every eviction is of a strictly lower band.
        #[test]
        fn invariants_hold(
            machines in proptest::collection::vec((1u64..8000, 1u64..(16 << 30), prop_oneof!["x86_64", "arm64"]), 1..16),
            passes in proptest::collection::vec(
                proptest::collection::vec((0i32..400, 1u64..4000, 1u64..(8 << 30), 1u32..8, any::<bool>(), any::<bool>()), 1..6),
                1..4),
            candidates in prop_oneof![Just(0usize), Just(1), Just(4)],
            seed in any::<u64>(),
        ) {
            let ms: Vec<(u64, u64, &str)> = machines.iter().map(|(c, r, a)| (*c, *r, a.as_str())).collect();
            let mut c = cell(&ms);
            let mut s = Scheduler::new(Params { seed, candidates, ..Default::default() });
            let mut all: HashMap<u32, TaskGroup> = HashMap::new();
            let mut placed: HashMap<TaskRef, usize> = HashMap::new();
            let mut job = 0;
            for groups in passes {
                let gs: Vec<TaskGroup> = groups.iter().map(|(p, cpu, ram, count, dm, arm)| {
                    job += 1;
                    let mut g = group(job, *p, *cpu, *ram, *count);
                    g.different_machine = *dm;
                    if *arm {
                        g.constraints.push(Constraint { attribute: "arch".into(), op: ConstraintOp::Eq, values: vec!["arm64".into()] });
                    }
                    g
                }).collect();
                for g in &gs {
                    all.insert(g.job_id, g.clone());
                }
                let p = s.schedule(&mut c, &gs);
                for e in &p.preempted {
                    let (v, by) = (&all[&e.victim.job], &all[&e.by.job]);
                    prop_assert!(CellModel::band_of(v.priority) < CellModel::band_of(by.priority));
                    prop_assert_eq!(placed.remove(&e.victim), Some(e.machine));
                }
                for b in &p.bindings {
                    let g = &all[&b.task.job];
                    prop_assert!(g.constraints.iter().all(|k| k.holds(&c.attributes[b.machine])));
                    prop_assert!(placed.insert(b.task, b.machine).is_none());
                }
                let unplaced: usize = p.unplaced.iter().map(|u| u.tasks.len()).sum();
                prop_assert_eq!(p.bindings.len() + unplaced, gs.iter().map(|g| g.tasks.len()).sum::<usize>());
            }
            for m in 0..c.len() {
                let used = c.residents(m).iter().fold(Resources::ZERO, |a, r| a.saturating_add(r.request));
                prop_assert!(used.fits_in(&c.capacity[m]), "machine {} over capacity", m);
                prop_assert_eq!(used, c.allocated(m));
                prop_assert_eq!(c.residents(m).len(), placed.values().filter(|&&x| x == m).count());
            }
            for g in all.values().filter(|g| g.different_machine) {
                let ms: Vec<usize> = placed.iter().filter(|(t, _)| t.job == g.job_id).map(|(_, &m)| m).collect();
                let uniq: HashSet<usize> = ms.iter().copied().collect();
                prop_assert_eq!(ms.len(), uniq.len());
            }
        }
    }
}
