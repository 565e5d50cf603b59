//! The scheduler loop: snapshot the cell, run scheduler-core, commit the decisions (evictions and
//! placements) as `Bind` commands of at most `master::COMMAND_CHUNK` records each, proposed in
//! order ([`split_decisions`]): a few durable writes per pass, however many tasks it places.

use crate::master::{chunks_of, Master};
use crate::snapshot::{alloc_bindings, decisions, hold_partial_gangs, Builder, Snapshot};
use crate::soft::Pending;
use crate::state::Command;
use scheduler_core::{Params, Scheduler};
use std::collections::HashSet;
use std::sync::Arc;

/// Most jobs whose why-pending is computed (a scan of the cell each) in one pass.
pub const EXPLAIN_PER_PASS: usize = 32;

/// A job's why-pending is recomputed when older than this (the cell changes under it).
pub const WHY_PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(10);

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

/// Longest pause between two passes that [`run`] imposes to keep scheduling at most about half
/// of one core's time (see [`SchedulerLoop::computed`]).
pub const PASS_SPACING_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Shortest pause between two passes. A pass costs a snapshot of the whole cell however little
/// changed, and every apply wakes the scheduler: under a stream of applies (replbench, 64
/// clients) passes of about a millisecond ran back to back, a fifth of the leader's CPU. 5 ms
/// gathers the changes of that time into one pass and adds at most 5 ms to apply -> placed.
pub const PASS_SPACING_MIN: std::time::Duration = std::time::Duration::from_millis(5);

/// The most that passes binding nothing raise the shortest pause between two passes to: each
/// such pass doubles that pause from [`PASS_SPACING_MIN`] up to this, and a pass that binds a task brings
/// it back to [`PASS_SPACING_MIN`] ([`spacing_after`]). A pass that binds nothing is the whole
/// cell's snapshot for no placement; under a stream of applies that cannot be placed (replbench's
/// cell has no machines) passes every 5 ms took a sixth of the three replicas' CPU. The cost: in
/// a cell where nothing was placeable for a while, the first job that fits waits up to this long
/// longer for its pass.
pub const PASS_SPACING_IDLE_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// The shortest pause before the next pass, after a pass that bound `bound` tasks with the
/// shortest pause `last` before it: [`PASS_SPACING_MIN`] after a pass that bound any, else
/// twice `last`, at most [`PASS_SPACING_IDLE_MAX`].
pub fn spacing_after(last: std::time::Duration, bound: usize) -> std::time::Duration {
    if bound > 0 {
        PASS_SPACING_MIN
    } else {
        (last * 2).clamp(PASS_SPACING_MIN, PASS_SPACING_IDLE_MAX)
    }
}

/// What the scheduler loop remembers between passes; it lives and dies with the loop (a new
/// leader starts with none).
#[derive(Debug, Default)]
pub struct PassMemory {
    /// Jobs whose pending tasks did not fit, and when the scheduler examines them again.
    /// (foldhash, as the pass's other maps of job names: each pass looks up every job with
    /// pending tasks, and SipHash was a tenth of the pass under a stream of applies.)
    pub unplaced_backoff: foldhash::HashMap<String, Backoff>,
    /// (machines up, live tasks bound) at the last pass: backoffs are forgotten when capacity
    /// may have been freed.
    pub last_capacity: (usize, usize),
    /// The residents' reservations summed at the last pass: backoffs are forgotten when they
    /// fell (resources reclaimed, Borg §5.5).
    pub last_reserved: scheduler_core::Resources,
}

/// The scheduler loop's own state: the scheduler with its caches, and its pass memory.
pub struct SchedulerLoop {
    master: Arc<Master>,
    scheduler: Scheduler,
    memory: PassMemory,
    computed: std::time::Duration,
}

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

impl SchedulerLoop {
    /// A loop for `master` with a fresh scheduler (scheduler-core's default parameters) and no
    /// pass memory.
    pub fn new(master: Arc<Master>) -> SchedulerLoop {
        SchedulerLoop {
            master,
            scheduler: Scheduler::new(Params { explain: false, ..Params::default() }),
            memory: PassMemory::default(),
            computed: std::time::Duration::ZERO,
        }
    }

    /// How long the last pass computed (snapshot, placement, reasons, decisions: the CPU part,
    /// without waiting for its commit). [`run`] waits at least this long (at least
    /// [`PASS_SPACING_MIN`], at most [`PASS_SPACING_MAX`]) before the next pass, so that while
    /// changes arrive without pause (every apply, every task report wakes the scheduler)
    /// scheduling takes at most about half of one core, and the rest goes to the RPCs, Raft and
    /// polls; the changes that arrive meanwhile are placed together by the next pass.
    pub fn computed(&self) -> std::time::Duration {
        self.computed
    }

    /// Runs one scheduling pass: places what fits (preempting lower bands where needed), records
    /// why the rest is pending, and commits the decisions. Returns how many tasks were bound.
    pub async fn pass(&mut self) -> usize {
        let started = std::time::Instant::now();
        let n = self.pass_inner().await;
        metrics::histogram!(crate::metrics::PASS_SECONDS).record(started.elapsed().as_secs_f64());
        n
    }

    async fn pass_inner(&mut self) -> usize {
        let started = std::time::Instant::now();
        self.computed = std::time::Duration::ZERO;
        let master = &*self.master;
        let memory = &mut self.memory;
        let scheduler = &mut self.scheduler;
        let (mut snap, (alloc_binds, alloc_why)) = sliced_snapshot(master).await;
        let now = std::time::Instant::now();
        let mut why: foldhash::HashMap<String, Pending> =
            alloc_why.into_iter().map(|(j, w)| (j, Pending::Other(w))).collect();
        // jobs waiting out a backoff are not examined, and keep their last why-pending
        let mut waiting = foldhash::HashSet::default();
        {
            let capacity = (snap.machines_up, snap.bound);
            let reclaimed = snap.reserved.cpu_millis < memory.last_reserved.cpu_millis
                || snap.reserved.ram_bytes < memory.last_reserved.ram_bytes;
            memory.last_reserved = snap.reserved;
            if capacity.0 > memory.last_capacity.0 || capacity.1 < memory.last_capacity.1 || reclaimed {
                memory.unplaced_backoff.clear();
            }
            memory.last_capacity = capacity;
            let backoff = &memory.unplaced_backoff;
            for g in std::mem::take(&mut snap.groups) {
                let waits = backoff
                    .get(&g.name)
                    .is_some_and(|b| b.version == snap.versions[g.job_id as usize] && now < b.until);
                if waits {
                    waiting.insert(g.name);
                } else {
                    snap.groups.push(g);
                }
            }
        }
        if snap.groups.is_empty() && alloc_binds.is_empty() {
            keep_waiting_reasons(&mut master.soft().why_pending, why, &waiting);
            self.computed = started.elapsed();
            return 0;
        }
        // a pass is CPU-bound (and rayon-parallel): let this runtime thread's other tasks (polls,
        // RPCs, Raft) move to another thread while it runs
        let mut placement = tokio::task::block_in_place(|| {
            // the model is rebuilt each pass, so cached scores would refer to other versions
            scheduler.clear_cache();
            scheduler.schedule(&mut snap.model, &snap.groups)
        });
        if placement.stats.second_pass {
            let kept = if placement.stats.second_pass_kept { "true" } else { "false" };
            metrics::counter!(crate::metrics::SECOND_PASSES, "kept" => kept).increment(1);
        }
        // gangs that did not fit whole commit nothing this pass
        let held_gangs = hold_partial_gangs(&snap, &mut placement);
        {
            // Reasons cost a scan of the cell per job: keep the ones known for less than
            // WHY_PENDING_TTL, (re)explain at most EXPLAIN_PER_PASS jobs per pass, on the model as
            // the pass left it.
            let mut soft = master.soft();
            let mut explained = 0;
            let mut unplaced_jobs: std::collections::BTreeSet<u32> =
                placement.unplaced.iter().flat_map(|u| u.tasks.iter().map(|t| t.job)).collect();
            unplaced_jobs.extend(held_gangs.iter().map(|h| h.0));
            // back off every job examined that still has tasks that do not fit; forget the rest
            for g in &snap.groups {
                if !unplaced_jobs.contains(&g.job_id) {
                    memory.unplaced_backoff.remove(&g.name);
                }
            }
            for &job in &unplaced_jobs {
                let name = &snap.jobs[job as usize];
                let version = snap.versions[job as usize];
                let delay = match memory.unplaced_backoff.get(name) {
                    Some(b) if b.version == version => (b.delay * 2).min(UNPLACED_BACKOFF_MAX),
                    _ => UNPLACED_BACKOFF_MIN,
                };
                memory.unplaced_backoff.insert(name.clone(), Backoff { version, until: now + delay, delay });
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
            for &(job, fit, needed) in &held_gangs {
                let text = format!("gang: {fit} of {needed} tasks fit now; all {needed} are needed in one pass");
                why.insert(snap.jobs[job as usize].clone(), Pending::Other(text));
            }
            at.retain(|j, _| why.contains_key(j) || waiting.contains(j));
            keep_waiting_reasons(&mut soft.why_pending, why, &waiting);
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
        self.computed = started.elapsed();
        if n + evicted > 0 {
            let gangs: HashSet<&str> = snap.gangs.keys().map(|&j| snap.jobs[j as usize].as_str()).collect();
            let chunks = split_decisions(command, crate::master::COMMAND_CHUNK, &gangs);
            if let Some(e) = master.propose_all(chunks).await.into_iter().find_map(Result::err) {
                tracing::error!(error = %e, "could not commit scheduling decisions; retrying next pass");
                return 0;
            }
            tracing::info!(tasks = n, preempted = evicted, "scheduled");
            // what this pass bound counts as bound: tasks that later end free capacity (and
            // clear the backoffs) even when as many ended as were bound in between
            self.memory.last_capacity.1 = self.memory.last_capacity.1.saturating_add(n);
        }
        n
    }
}

/// Most tasks added to a pass's snapshot per hold of the state's read lock (see
/// [`Builder`]): at 1,000,000 tasks, about 100 holds of a few milliseconds each, with the lock
/// released (and this task yielding) in between. A committed entry waiting for the write lock
/// stops every new reader, the pollers included, until the hold ends, and a poller waiting on a
/// lock holds its runtime thread. With holds of 50,000 tasks here and of 256 machines in the
/// reservation estimator and in [`crate::master::Master::cell_usage`], 10% of the polls took
/// over 0.5 s at 1,000,000 tasks churning 10% a minute (the oldest answer 1.3 s at the median,
/// 2.1-2.2 s at worst); with 10,000 tasks and 64 machines, 0.5-2.8% (1.0 s, 1.4-1.7 s).
pub const SNAPSHOT_SLICE_TASKS: usize = 10_000;

/// The pass's input ([`crate::snapshot::snapshot`]) built a slice of jobs at a time, releasing
/// the state's read lock between slices, and the alloc-set bindings.
async fn sliced_snapshot(master: &Master) -> (Snapshot, (Vec<crate::state::Bind>, Vec<(String, String)>)) {
    let mut b = Builder::new(&master.state(), master.config.reclaim.enabled);
    let mut after: Option<String> = None;
    loop {
        {
            let state = master.state();
            after = add_slice(&mut b, &state, after.as_deref(), SNAPSHOT_SLICE_TASKS);
            if after.is_none() {
                return (b.finish(&state), alloc_bindings(&state));
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Adds to `b` the jobs of `state` after the job named `after` (from the first without it), in
/// name order, until they hold at least `max_tasks` tasks (each job whole). Returns the name of
/// the last job added when jobs remain after it, `None` when every job was added.
fn add_slice(
    b: &mut Builder,
    state: &crate::state::CellState,
    after: Option<&str>,
    max_tasks: usize,
) -> Option<String> {
    use std::ops::Bound::{Excluded, Unbounded};
    let mut jobs = match after {
        None => state.jobs.range::<str, _>(..),
        Some(a) => state.jobs.range::<str, _>((Excluded(a), Unbounded)),
    };
    let mut tasks = 0;
    for (name, job) in jobs.by_ref() {
        b.add_job(job);
        tasks += job.tasks.len().max(1);
        if tasks >= max_tasks {
            return jobs.next().is_some().then(|| name.clone());
        }
    }
    None
}

/// Splits a pass's `Bind` decisions into commands of at most `chunk` records, in the order they
/// must apply: the evictions first, then the placements in decision order, except that the
/// placements of each gang job in `gangs` stay in one command (a gang commits whole or not at
/// all). Anything else comes back as it is.
pub fn split_decisions(command: Command, chunk: usize, gangs: &HashSet<&str>) -> Vec<Command> {
    let Command::Bind { bindings, evictions } = command else { return vec![command] };
    let chunk = chunk.max(1);
    if bindings.len() + evictions.len() <= chunk {
        return vec![Command::Bind { bindings, evictions }];
    }
    let mut out: Vec<Command> = chunks_of(evictions, chunk)
        .into_iter()
        .map(|evictions| Command::Bind { bindings: Vec::new(), evictions })
        .collect();
    let (mut gang, rest): (Vec<_>, Vec<_>) = bindings.into_iter().partition(|b| gangs.contains(b.job.as_str()));
    gang.sort_by(|a, b| a.job.cmp(&b.job));
    for job in gang.chunk_by(|a, b| a.job == b.job) {
        out.push(Command::Bind { bindings: job.to_vec(), evictions: Vec::new() });
    }
    out.extend(chunks_of(rest, chunk).into_iter().map(|bindings| Command::Bind { bindings, evictions: Vec::new() }));
    out
}

/// Replaces the why-pending reasons in `soft` by this pass's `why`, except for the jobs
/// `waiting` out a backoff that have none in `why`, which keep theirs. In place: the reasons
/// kept are neither copied nor moved (a reason can list many machines), and the map is not
/// rebuilt every pass.
fn keep_waiting_reasons(
    soft: &mut foldhash::HashMap<String, Pending>,
    why: foldhash::HashMap<String, Pending>,
    waiting: &foldhash::HashSet<String>,
) {
    soft.retain(|job, _| waiting.contains(job));
    soft.extend(why);
}

/// Runs scheduling passes forever: whenever something may have become placeable (new jobs,
/// freed resources, machine changes, evictions), and at least every `schedule_interval` as a
/// safety net. A pass with nothing new to place costs a snapshot of the cell, so idle cells
/// should not pass often, and passes that bind nothing space out ([`spacing_after`]).
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
    let mut this = SchedulerLoop::new(master.clone());
    let mut spacing = PASS_SPACING_MIN;
    loop {
        spacing = spacing_after(spacing, this.pass().await);
        let spaced = tokio::time::Instant::now() + this.computed().clamp(spacing, PASS_SPACING_MAX);
        let _ = tokio::time::timeout(master.config.schedule_interval, master.schedule_wakeup.notified()).await;
        tokio::time::sleep_until(spaced).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Bind, Evict};
    use scheduler_core::MachineId;

    fn bind(job: &str, index: u32) -> Bind {
        Bind { job: job.into(), index, incarnation: 0, machine: MachineId("m".into()), alloc: None }
    }

    fn evict(index: u32) -> Evict {
        Evict { job: "low".into(), index, incarnation: 0, machine: MachineId("m".into()), by: "a/0".into() }
    }

    fn parts(c: &Command) -> (Vec<(String, u32)>, Vec<u32>) {
        match c {
            Command::Bind { bindings, evictions } => (
                bindings.iter().map(|b| (b.job.clone(), b.index)).collect(),
                evictions.iter().map(|e| e.index).collect(),
            ),
            _ => panic!("not a Bind: {c:?}"),
        }
    }

    /// Passes that bind nothing space out, doubling to the idle maximum; one that binds a task
    /// brings the next pass back to the minimum pause.
    #[test]
    fn fruitless_passes_space_out_and_a_placement_resets_the_pause() {
        let mut s = PASS_SPACING_MIN;
        let mut seen = vec![s];
        for _ in 0..10 {
            s = spacing_after(s, 0);
            seen.push(s);
        }
        assert!(seen.windows(2).all(|w| w[1] >= w[0]), "never shorter while nothing binds: {seen:?}");
        assert_eq!(seen[1], PASS_SPACING_MIN * 2);
        assert_eq!(s, PASS_SPACING_IDLE_MAX, "capped");
        assert_eq!(spacing_after(s, 1), PASS_SPACING_MIN);
        assert!(PASS_SPACING_IDLE_MAX < PASS_SPACING_MAX, "the cap is below the spacing of a costly pass");
    }

    /// A pass's reasons replace the last pass's; a job waiting out a backoff keeps its old
    /// reason unless the pass gave it a new one; a job neither waiting nor explained loses its.
    #[test]
    fn a_pass_keeps_only_the_reasons_of_jobs_waiting_out_a_backoff() {
        let reason = |s: &str| Pending::Other(s.into());
        let mut soft: foldhash::HashMap<String, Pending> = [("waits", "old w"), ("placed", "old p"), ("both", "old b")]
            .map(|(j, r)| (j.into(), reason(r)))
            .into_iter()
            .collect();
        let why: foldhash::HashMap<String, Pending> =
            [("both", "new b"), ("new", "new n")].map(|(j, r)| (j.into(), reason(r))).into_iter().collect();
        let waiting: foldhash::HashSet<String> =
            ["waits", "both", "never explained"].map(String::from).into_iter().collect();
        keep_waiting_reasons(&mut soft, why, &waiting);
        let mut got: Vec<(String, String)> = soft.iter().map(|(j, r)| (j.clone(), r.to_string())).collect();
        got.sort();
        let want = [("both", "new b"), ("new", "new n"), ("waits", "old w")];
        assert_eq!(got, want.map(|(j, r)| (j.to_string(), r.to_string())));
    }

    /// A snapshot built a slice at a time is the snapshot of the state at once when nothing
    /// changes between slices; when jobs come and go between them, each job is seen whole or
    /// not at all, and the ones already added are not seen twice.
    #[test]
    fn a_snapshot_in_slices_is_the_snapshot_at_once() {
        use crate::state::fixtures::{bind, machine, run, spec};
        use crate::state::CellState;
        let mut s = CellState::default();
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        for (name, n) in [("a", 3), ("b", 1), ("c", 4), ("d", 2), ("e", 5)] {
            run(&mut s, Command::ApplyJob { spec: spec(name, n), expected_version: None }).unwrap();
        }
        bind(&mut s, "c", 1, "m1");
        let groups = |snap: &Snapshot| -> Vec<(String, Vec<u32>)> {
            snap.groups.iter().map(|g| (g.name.clone(), g.tasks.clone())).collect()
        };
        let whole = crate::snapshot::snapshot(&s, false);
        for max in [1, 2, 4, 100] {
            let mut b = Builder::new(&s, false);
            let (mut after, mut slices) = (None, 0);
            loop {
                slices += 1;
                after = add_slice(&mut b, &s, after.as_deref(), max);
                if after.is_none() {
                    break;
                }
            }
            let sliced = b.finish(&s);
            assert_eq!(sliced.jobs, whole.jobs, "slices of {max} tasks");
            assert_eq!(groups(&sliced), groups(&whole));
            assert_eq!((sliced.bound, sliced.model.ids.len()), (whole.bound, whole.model.ids.len()));
            assert!(max >= 5 || slices > 1, "{max}: {slices} slices");
        }
        // between slices: "b" (already added) is killed, "aa" and "z" are applied
        let mut b = Builder::new(&s, false);
        let after = add_slice(&mut b, &s, None, 4);
        assert_eq!(after.as_deref(), Some("b"), "a (3 tasks) and b (1)");
        run(&mut s, Command::KillJob { name: "b".into() }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("aa", 1), expected_version: None }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("z", 1), expected_version: None }).unwrap();
        assert_eq!(add_slice(&mut b, &s, after.as_deref(), 100), None);
        let snap = b.finish(&s);
        assert_eq!(snap.jobs, ["a", "b", "c", "d", "e", "z"], "aa sorts before the resume point: next pass");
        let names: Vec<String> = groups(&snap).into_iter().map(|g| g.0).collect();
        assert!(names.contains(&"b".to_string()) && names.contains(&"z".to_string()), "{names:?}");
        let c = snap.groups.iter().find(|g| g.name == "c").unwrap();
        assert_eq!(c.tasks, [0, 2, 3], "c/1 is bound: a resident, not pending");
    }

    /// A pass's decisions come back as commands of at most the chunk, evictions first, every
    /// placement exactly once and in decision order, a gang's placements in one command.
    #[test]
    fn decisions_split_into_bounded_commands_in_order() {
        let mut bindings: Vec<Bind> = (0..25).map(|i| bind("a", i)).collect();
        bindings.insert(3, bind("g", 0));
        bindings.insert(20, bind("g", 1));
        bindings.push(bind("g", 2));
        let evictions: Vec<Evict> = (0..7).map(evict).collect();
        let gangs: HashSet<&str> = ["g"].into_iter().collect();
        let out = split_decisions(Command::Bind { bindings, evictions }, 5, &gangs);
        let parts: Vec<_> = out.iter().map(parts).collect();
        // evictions first, in chunks
        assert_eq!(parts[0].1, vec![0, 1, 2, 3, 4]);
        assert_eq!(parts[1].1, vec![5, 6]);
        assert!(parts[2..].iter().all(|p| p.1.is_empty()));
        // the gang whole, although bigger than nothing else in its chunk
        assert_eq!(parts[2].0, vec![("g".into(), 0), ("g".into(), 1), ("g".into(), 2)]);
        let rest: Vec<u32> = parts[3..].iter().flat_map(|p| p.0.iter().map(|b| b.1)).collect();
        assert_eq!(rest, (0..25).collect::<Vec<_>>());
        assert!(out.iter().all(|c| c.weight() <= 5));
        // small decisions and other commands are left alone
        let small = split_decisions(Command::Bind { bindings: vec![bind("a", 0)], evictions: vec![] }, 5, &gangs);
        assert_eq!(small.len(), 1);
        let other = split_decisions(Command::KillJob { name: "a".into() }, 5, &gangs);
        assert!(matches!(other.as_slice(), [Command::KillJob { .. }]));
    }
}
