//! Link shards: the master polls every Borglet (Borg §3.3), so the master sets the pace and a
//! recovering cell cannot storm it.
//!
//! Each poll carries the machine's desired task set, sent whole only when it changed (tracked by
//! a digest the Borglet echoes back), and the task-status digest of what the committed state
//! records of the machine's tasks; the Borglet returns every task's observed state and usage,
//! or, when its own digest agrees, nothing per task. Every [`STATUSES_EVERY`]-th poll asks for
//! per-task usage: as three numbers a task in listing order (usage columns) while the master's
//! usage record lists the runs it has committed, else as the whole list. Changes are
//! batched across machines into one `TaskReports` command. A machine is marked down, and its
//! tasks go back to pending, on evidence about the machine alone: see [`crate::liveness`] (no
//! successful poll for `missed_polls x poll_interval` of wall time after the leader's first
//! round and its own stalls).
//!
//! In this version a shard is one tokio task per machine; the supervisor starts one for each
//! registered machine.

use crate::liveness::{LeaderView, Liveness, PollLatency};
use crate::master::{now_ms, Master};
use crate::state::{CellState, Command, MachineState, RunId, TaskId, TaskReport, TaskState};
use borg_jobspec::convert::{check_to_pb, kind_to_pb, resources_from_pb, resources_to_pb, restart_to_pb};
use borg_proto as pb;
use borg_proto::borglet_client::BorgletClient;
use scheduler_core::MachineId;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// Starts a poller for every registered machine, now and whenever one registers; and the task
/// that batches Borglet reports into commands. Runs until dropped (the leader loses its
/// leadership); dropping it stops every poller it started.
pub async fn run(master: Arc<Master>) {
    let (tx, rx) = mpsc::unbounded_channel();
    // shown (as 0) from the start of a leadership, not only after a first overrun
    metrics::counter!(crate::metrics::POLL_OVERRUNS).increment(0);
    let mut tasks = tokio::task::JoinSet::new();
    let shared = Arc::new(Shared::default());
    tasks.spawn(apply_reports(master.clone(), rx, shared.clone()));
    tasks.spawn(watch_stalls(shared.clone(), master.config.poll_interval));
    let mut started: HashSet<MachineId> = HashSet::new();
    loop {
        let changed = master.machines_changed.notified();
        let ids: Vec<MachineId> = master.state().machines.keys().cloned().collect();
        for id in ids {
            if started.insert(id.clone()) {
                tasks.spawn(poll_machine(master.clone(), id, tx.clone(), shared.clone()));
            }
        }
        changed.await;
    }
}

/// What the pollers of one leadership share: connections and what the leader knows about itself
/// ([`LeaderView`]).
#[derive(Default)]
struct Shared {
    channels: Channels,
    latency: PollLatency,
    /// The latency of early polls alone (a changed set sent between ticks): they carry the
    /// changes, so they are slower than most polls, and most so when many change at once (see
    /// [`Shared::early_margin`]).
    early_latency: PollLatency,
    /// Machines polled at least once (successfully or not) in this leadership.
    attempted: AtomicUsize,
    /// Machines whose last poll failed.
    failing: AtomicUsize,
    /// When every machine had been attempted once.
    first_round_done: OnceLock<Instant>,
    /// When the leader's last stall ended (see [`watch_stalls`]).
    last_stall_end: Mutex<Option<Instant>>,
    /// Report batches whose commit failed in this leadership: a poller sends a report in flight
    /// again once this moved since it sent it ([`InFlight::fresh`]).
    report_failures: AtomicU64,
}

impl Shared {
    /// How long before a machine's next tick an early poll no longer goes out on its own but
    /// waits for the tick ([`Schedule::imminent`]): two of the cell's recent poll latencies, or
    /// the latency early polls rarely exceed ([`PollLatency::margin`] of `early_latency`) if
    /// that is longer. With two cell-wide latencies alone, every poll that still overran under
    /// churn at 1,000,000 tasks was an early one that started 12-87 ms before its tick and took
    /// 14-106 ms, while the cell-wide mean was 6-100 ms and lagged behind the early polls' own.
    fn early_margin(&self) -> Duration {
        (self.latency.get() * 2).max(self.early_latency.margin())
    }

    fn view(&self, machines: usize) -> LeaderView {
        LeaderView {
            first_round_done: self.first_round_done.get().copied(),
            last_stall_end: *self.last_stall_end.lock().unwrap_or_else(|e| e.into_inner()),
            failing: self.failing.load(Ordering::Relaxed),
            machines,
        }
    }
}

/// The leader's own health: wakes every 100 ms and records the end of any wake-up that came more
/// than a poll interval late (the runtime, or the whole replica, could not run: a leader that
/// cannot run cannot poll, and its pollers' failures are no evidence about the machines).
async fn watch_stalls(shared: Arc<Shared>, interval: Duration) {
    let step = Duration::from_millis(100);
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(step).await;
        let now = Instant::now();
        let late = now.saturating_duration_since(last).saturating_sub(step);
        if late > interval {
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "this leader stalled; every machine's grace starts again"
            );
            *shared.last_stall_end.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        }
        last = now;
    }
}

/// One gRPC channel per Borglet address, shared by every machine behind it (a hollow Borglet
/// serves thousands of machines on one address): HTTP/2 multiplexes their polls over one
/// connection instead of one connection per machine.
#[derive(Default)]
struct Channels(std::sync::Mutex<std::collections::HashMap<String, Channel>>);

impl Channels {
    /// The channel to `address`, connecting within `connect_timeout`. It sets no per-request
    /// timeout: each poll is bounded by its own, adaptive one ([`PollLatency::timeout`]).
    fn get(&self, address: &str, connect_timeout: Duration) -> borg_rpc::Result<Channel> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = map.get(address) {
            return Ok(ch.clone());
        }
        // the channel's tasks (its request buffer, then its HTTP/2 connection) are spawned on
        // the runtime entered here
        let _links = links_runtime().map(tokio::runtime::Runtime::enter);
        let ch = crate::tls::endpoint(address)?
            .connect_timeout(connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .connect_lazy();
        map.insert(address.to_string(), ch.clone());
        Ok(ch)
    }
}

/// The runtime the connections to the Borglets run on: one thread of their own, so that a
/// connection's framing is never queued behind the master's own tasks (10,000 pollers, passes,
/// applies). On the master's runtime the leader read its Borglets' answers late: at 10,000
/// machines polls took 67 ms on average with both the leader and the Borglets mostly idle, and
/// 300 ms while tasks churned, with hundreds of kilobytes of answers waiting unread in the
/// leader's socket (`scripts/bench-million`). None (the connections then share the master's
/// runtime, with a warning) if the thread cannot be started.
fn links_runtime() -> Option<&'static tokio::runtime::Runtime> {
    static LINKS: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    LINKS
        .get_or_init(|| {
            let built = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("borglet-links")
                .enable_all()
                .build();
            built
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "no thread of their own for the Borglet connections; they share the master's runtime")
                })
                .ok()
        })
        .as_ref()
}

/// Drains every report batch waiting and commits them as `TaskReports` commands of at most
/// [`crate::master::COMMAND_CHUNK`] reports, in order; counts a failed commit in
/// `shared.report_failures` (its pollers then send what is still uncommitted again).
async fn apply_reports(
    master: Arc<Master>,
    mut rx: mpsc::UnboundedReceiver<Vec<(MachineId, TaskReport)>>,
    shared: Arc<Shared>,
) {
    while let Some(mut batch) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        metrics::counter!(crate::metrics::REPORTS_PROPOSED).increment(batch.len() as u64);
        let commands = crate::master::chunks_of(batch, crate::master::COMMAND_CHUNK)
            .into_iter()
            .map(|reports| Command::TaskReports { reports })
            .collect();
        if let Some(e) = master.propose_all(commands).await.into_iter().find_map(Result::err) {
            shared.report_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "could not record task reports; the next poll reports them again");
        }
    }
}

/// What a poller remembers of its last walk over its machine's tasks: the digests it computed
/// and the machine's poll generation then ([`crate::state::CellState::poll_generation`]). While
/// the generation stays, so do the digests, and a poll costs no walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Walked {
    generation: u64,
    digests: PollDigests,
}

/// The digests a poll of a machine carries, from the committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PollDigests {
    /// Of the desired set (`PollRequest.version`, [`pb::desired_digest`]): the task identities
    /// alone, never 0.
    pub version: u64,
    /// Of the recorded statuses of the same tasks (`PollRequest.status_version`).
    pub status: u64,
    /// Of the same tasks' runs in order ([`runs_digest`]): whether the machine's usage record
    /// lists the runs the committed state holds, in the same order.
    pub runs: u64,
}

/// A desired set as its Borglet holds it: its digest and its tasks' identities (task,
/// incarnation, job version), sorted by task: what a delta is computed against.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeldSet {
    version: u64,
    tasks: Vec<(TaskId, u64, u64)>,
}

/// What one machine's poller knows between polls.
#[derive(Debug, Default)]
struct PollMemory {
    /// The digest of the set the Borglet said it holds at its last answer; `None` before the
    /// first answer and after a failed poll (the next poll only asks).
    acked: Option<u64>,
    /// The set the Borglet holds, when the master knows it (it confirmed a set this poller sent):
    /// a change is then sent as a delta against it.
    held: Option<HeldSet>,
    /// The set sent in the poll under way, held once the Borglet answers its digest.
    sending: Option<HeldSet>,
    /// The Borglet refused a delta (it predates them, or its set was not the base after all):
    /// this poller sends it whole sets only.
    no_deltas: bool,
    /// The digests of the last walk over the machine's tasks, with its poll generation then.
    walked: Option<Walked>,
    /// The [`runs_digest`] of the listing the machine's usage record (`SoftState::task_usage`,
    /// which only this poller writes) came from: while the committed state's runs have the same,
    /// a poll may ask for usage alone, as columns in that order.
    usage_runs: Option<u64>,
    /// The Borglet answered a poll that asked for usage columns without them (it predates them):
    /// this poller asks it for the task list instead.
    no_usage_columns: bool,
}

impl PollMemory {
    /// Takes in the Borglet's answer to the poll built last: it holds `applied`.
    fn answered(&mut self, applied: u64, base_version: u64) {
        self.acked = Some(applied);
        match self.sending.take() {
            Some(sent) if sent.version == applied => self.held = Some(sent),
            Some(_) => {
                if base_version != 0 {
                    tracing::debug!("a Borglet refused a delta; sending it whole sets");
                    self.no_deltas = true;
                }
                self.held = None;
            }
            None if self.held.as_ref().is_some_and(|h| h.version != applied) => self.held = None,
            None => {}
        }
    }

    /// The poll failed, or the machine moved to a new address: what the Borglet holds is unknown
    /// until it answers again (`held` stays: it is only used when the Borglet's answer names its
    /// version). The Borglet may also have restarted as another version (an upgrade), so what an
    /// older one could not take, deltas and usage columns, is offered again: a Borglet that
    /// still cannot costs one refused delta and one listing.
    fn failed(&mut self) {
        self.acked = None;
        self.sending = None;
        self.no_deltas = false;
        self.no_usage_columns = false;
    }
}

/// The tasks machine `id`'s Borglet should run, sorted by (job, index), each with its spec at
/// its job version: the machine's live tasks but allocs (an alloc is a reservation; nothing
/// runs for it).
fn desired<'a>(s: &'a CellState, id: &MachineId) -> Vec<(&'a crate::state::Task, &'a borg_jobspec::JobSpec)> {
    s.tasks_on_with_jobs(id)
        .filter(|(_, job)| job.spec.kind != borg_jobspec::JobKind::AllocSet)
        .map(|(t, job)| (t, job.spec_for(t.job_version)))
        .collect()
}

/// The [`PollDigests`] of `live` (a machine's [`desired`] set).
fn digests_of(live: &[(&crate::state::Task, &borg_jobspec::JobSpec)]) -> PollDigests {
    PollDigests {
        version: pb::desired_digest(live.iter().map(|(t, _)| (t.job.as_str(), t.index, t.incarnation, t.job_version))),
        status: committed_status_digest(live.iter().map(|(t, _)| *t)),
        runs: runs_digest(live.iter().map(|(t, _)| (t.job.as_str(), t.index, t.incarnation))),
    }
}

/// A digest of a sequence of runs, given as (job, index, incarnation), in its order: the same
/// runs in the same order give the same digest. A Borglet's usage columns follow the order it
/// lists its tasks in; the master compares the digest of the listing its usage record came
/// from with that of the runs it has committed (whose statuses the Borglet confirms when it
/// answers with columns) before it asks for columns.
fn runs_digest<'a>(runs: impl IntoIterator<Item = (&'a str, u32, u64)>) -> u64 {
    let mut h = DefaultHasher::new();
    for r in runs {
        r.hash(&mut h);
    }
    h.finish()
}

/// The [`PollDigests`] of machine `id` in `s`, walking its tasks.
#[cfg(test)]
pub(crate) fn poll_digests(s: &CellState, id: &MachineId) -> PollDigests {
    digests_of(&desired(s, id))
}

/// The assignment of task `t` at `spec` (its spec at its job version).
fn assignment(t: &crate::state::Task, spec: &borg_jobspec::JobSpec) -> pb::TaskAssignment {
    pb::TaskAssignment {
        job: t.job.clone(),
        index: t.index,
        incarnation: t.incarnation,
        user: spec.user.clone(),
        kind: kind_to_pb(spec.kind) as i32,
        command: spec.command.clone(),
        env: spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        resources: Some(resources_to_pb(spec.resources)),
        restart: Some(restart_to_pb(spec.restart)),
        grace_period_ms: spec.grace_period_ms,
        job_version: t.job_version,
        ports: t.ports.iter().map(|(k, v)| (k.clone(), u32::from(*v))).collect(),
        liveness: spec.health.liveness.as_deref().map(check_to_pb),
        readiness: spec.health.readiness.as_deref().map(check_to_pb),
        priority: spec.priority.0,
    }
}

/// The delta from `held` to `live` (both sorted by task): the tasks of `held` not in `live`,
/// and the positions in `live` of the tasks new or changed (incarnation or job version).
fn delta(
    held: &[(TaskId, u64, u64)],
    live: &[(&crate::state::Task, &borg_jobspec::JobSpec)],
) -> (Vec<pb::TaskRef>, Vec<usize>) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let mut h = held.iter().peekable();
    for (i, (t, _)) in live.iter().enumerate() {
        let key = (t.job.as_str(), t.index);
        while let Some((gone, _, _)) = h.next_if(|(k, _, _)| (k.job.as_str(), k.index) < key) {
            removed.push(pb::TaskRef { job: gone.job.clone(), index: gone.index });
        }
        match h.next_if(|(k, _, _)| (k.job.as_str(), k.index) == key) {
            Some((_, inc, ver)) if (*inc, *ver) == (t.incarnation, t.job_version) => {}
            _ => added.push(i),
        }
    }
    removed.extend(h.map(|(gone, _, _)| pb::TaskRef { job: gone.job.clone(), index: gone.index }));
    (removed, added)
}

/// The poll for machine `id` from the state `s`. The desired set's digest (never 0, which
/// means "nothing applied yet") is computed from the task identities alone; the set is sent
/// only when the Borglet's acknowledged digest (`memory.acked`) differs, so a steady machine
/// costs a hash per poll: as a delta against the set the Borglet holds when the master knows it
/// (`memory.held`), else whole. With `acked` unknown (this poller's first poll, or the last one
/// failed) the poll only asks for the Borglet's digest: a newly elected leader's first round
/// over a steady cell then sends no task sets at all (it used to send every machine's whole set).
///
/// With `statuses` false the poll also carries the task-status digest of what the committed
/// state records of the machine's tasks (`status_version`), so a Borglet that observes the same
/// leaves its task list out. With `statuses` true it asks for every task's usage: with the same
/// digest and `want_task_usage` when the machine's usage record lists the runs the committed
/// state holds, in order (`memory.usage_runs`; a Borglet that observes what is committed then
/// answers usage columns for those runs), else with digest 0 (every task's status and usage).
///
/// While the machine's poll generation has not moved since the last walk (`memory.walked`) and
/// no set is to be sent, the digests come from that walk and the machine's tasks are not walked.
fn build_poll(s: &CellState, id: &MachineId, statuses: bool, memory: &mut PollMemory) -> Option<pb::PollRequest> {
    s.machines.get(id)?;
    let generation = s.poll_generation(id);
    let columns = (!memory.no_usage_columns).then_some(memory.usage_runs).flatten();
    // (status_version, want_task_usage)
    let ask = |d: PollDigests| match (statuses, columns) {
        (false, _) => (d.status, false),
        (true, Some(runs)) if runs == d.runs => (d.status, true),
        (true, _) => (0, false),
    };
    let acked = memory.acked;
    memory.sending = None;
    // (generation 0: never marked since this state was built, so unchanged since; a state
    // replaced by a snapshot marks every registered machine)
    if let Some(w) = memory.walked.filter(|w| w.generation == generation) {
        if acked.is_none_or(|a| a == w.digests.version) {
            metrics::counter!(crate::metrics::POLL_WALKS, "walk" => "skipped").increment(1);
            let (status_version, want_task_usage) = ask(w.digests);
            return Some(pb::PollRequest {
                machine_id: id.0.clone(),
                cell: s.cell.clone(),
                version: w.digests.version,
                status_version,
                want_task_usage,
                ..Default::default()
            });
        }
    }
    metrics::counter!(crate::metrics::POLL_WALKS, "walk" => "walked").increment(1);
    let live = desired(s, id);
    let digests = digests_of(&live);
    memory.walked = Some(Walked { generation, digests });
    let version = digests.version;
    let (status_version, want_task_usage) = ask(digests);
    let mut req = pb::PollRequest {
        machine_id: id.0.clone(),
        cell: s.cell.clone(),
        version,
        status_version,
        want_task_usage,
        ..Default::default()
    };
    let Some(acked) = acked.filter(|a| *a != version) else { return Some(req) };
    // the set is sent: whole, or as a delta against the one the Borglet holds
    req.status_version = 0;
    req.want_task_usage = false;
    match memory.held.as_ref().filter(|h| h.version == acked && !memory.no_deltas) {
        Some(held) => {
            let (removed, added) = delta(&held.tasks, &live);
            metrics::counter!(crate::metrics::POLL_SETS, "sent" => "delta").increment(1);
            req.base_version = held.version;
            req.removed = removed;
            req.tasks = added.into_iter().map(|i| assignment(live[i].0, live[i].1)).collect();
        }
        None => {
            metrics::counter!(crate::metrics::POLL_SETS, "sent" => "whole").increment(1);
            req.full = true;
            req.tasks = live.iter().map(|(t, spec)| assignment(t, spec)).collect();
        }
    }
    memory.sending =
        Some(HeldSet { version, tasks: live.iter().map(|(t, _)| (t.id(), t.incarnation, t.job_version)).collect() });
    Some(req)
}

/// The task-status digest ([`pb::status_digest`]) of what the committed state records of
/// `tasks` (a machine's live tasks): what its Borglet reports when nothing changed since. A task
/// not yet reported running counts as PENDING, which no Borglet reports, so it never matches.
fn committed_status_digest<'a>(tasks: impl Iterator<Item = &'a crate::state::Task>) -> u64 {
    pb::status_digest(tasks.map(|t| pb::StatusKey {
        job: &t.job,
        index: t.index,
        incarnation: t.incarnation,
        state: match t.state {
            TaskState::Running => pb::TaskState::Running,
            TaskState::Pending => pb::TaskState::Pending,
            TaskState::Dead => pb::TaskState::Dead,
        } as i32,
        pid: t.pid,
        restarts: t.restarts,
        ready: t.ready,
        exit_code: t.exit_code,
        signal: t.signal,
        reclaimed: false,
    }))
}

/// Every how many polls a poller asks for every task's usage even when the digests agree (as
/// columns, or the whole list: see [`build_poll`]): how fresh the master's per-task usage is
/// (the reclamation estimator, job listings, the page), in poll intervals. Machine-wide usage
/// comes with every poll.
const STATUSES_EVERY: u64 = 5;

/// Reports a poller sent that the committed state does not show yet. While the commit of a
/// report is under way the Borglet reports the same change at every poll; sending it again each
/// time would queue copies faster than a busy leader commits them (at 100,000 starting tasks the
/// copies took gigabytes and delayed every poll). A report identical to one in flight is sent
/// again only when a report commit failed since it was sent (`Shared::report_failures` moved),
/// or after [`REPORT_RESEND`] as a last resort.
///
/// (It used to be sent again after 5 s: when a busy leader took longer than that to commit, every
/// uncommitted report was proposed again every 5 s, and the copies lengthened the backlog that
/// delayed them: at 1,000,000 starting tasks, minutes of commits.)
///
/// Kept by job name, then task index, so that a poll's changes are looked up without a name
/// copied; each poll's changes mark what they still hold (`seen`), and the rest is forgotten.
#[derive(Default)]
struct InFlight {
    jobs: std::collections::HashMap<String, std::collections::HashMap<u32, Sent>>,
    /// Counts the calls of [`InFlight::fresh`] that had changes.
    epoch: u64,
}

/// A report in flight: what was sent, when, `Shared::report_failures` then, and the last
/// [`InFlight::epoch`] whose changes held it.
struct Sent {
    report: TaskReport,
    at: Instant,
    failures: u64,
    seen: u64,
}

/// How long a report may stay uncommitted, with no commit failing, before its poller sends it
/// again anyway.
const REPORT_RESEND: Duration = Duration::from_secs(60);

impl InFlight {
    /// The reports of `changes` (what still differs from the committed state) not already in
    /// flight, which it then holds; forgets the ones no longer among `changes` (committed, or
    /// superseded). `failures` is `Shared::report_failures` now.
    fn fresh(
        &mut self,
        changes: Vec<(MachineId, TaskReport)>,
        now: Instant,
        failures: u64,
    ) -> Vec<(MachineId, TaskReport)> {
        if changes.is_empty() {
            self.jobs.clear();
            return Vec::new();
        }
        self.epoch += 1;
        let epoch = self.epoch;
        let mut out = Vec::new();
        for (machine, r) in changes {
            if !self.jobs.contains_key(r.job.as_str()) {
                self.jobs.insert(r.job.clone(), Default::default());
            }
            let Some(runs) = self.jobs.get_mut(r.job.as_str()) else { continue };
            match runs.get_mut(&r.index) {
                Some(sent)
                    if sent.seen != epoch
                        && sent.report == r
                        && sent.failures == failures
                        && now.duration_since(sent.at) < REPORT_RESEND =>
                {
                    sent.seen = epoch;
                }
                _ => {
                    runs.insert(r.index, Sent { report: r.clone(), at: now, failures, seen: epoch });
                    out.push((machine, r));
                }
            }
        }
        self.jobs.retain(|_, runs| {
            runs.retain(|_, sent| sent.seen == epoch);
            !runs.is_empty()
        });
        out
    }
}

/// Reports in `resp` that change the master's record of a task on machine `id`.
fn changes(master: &Master, id: &MachineId, resp: &pb::PollResponse) -> Vec<(MachineId, TaskReport)> {
    let s = master.state();
    let mut out = Vec::new();
    // a Borglet lists its tasks by job: look each job up once per run of its tasks
    let mut last = None;
    for r in &resp.tasks {
        let Some(t) = s.job_cached(&mut last, &r.job).and_then(|j| j.tasks.get(r.index as usize)) else { continue };
        if t.machine.as_ref() != Some(id) || t.incarnation != r.incarnation || t.state == TaskState::Dead {
            continue;
        }
        let state = match pb::TaskState::try_from(r.state) {
            Ok(pb::TaskState::Running) => TaskState::Running,
            Ok(pb::TaskState::Dead) => TaskState::Dead,
            _ => continue,
        };
        if state == TaskState::Dead
            || t.state != TaskState::Running
            || t.pid != r.pid
            || t.restarts != r.restarts
            || t.ready != r.ready
        {
            out.push((
                id.clone(),
                TaskReport {
                    job: r.job.clone(),
                    index: r.index,
                    incarnation: r.incarnation,
                    state,
                    pid: r.pid,
                    exit_code: r.exit_code,
                    signal: r.signal,
                    restarts: r.restarts,
                    message: r.message.clone(),
                    ready: r.ready,
                    reclaimed: r.reclaimed,
                },
            ));
        }
    }
    out
}

/// Takes in usage `columns` for machine `id` (a Borglet's answer to a poll that asked for usage
/// alone): entry i is the usage of the i-th run of the machine's record in `usage`, which the
/// poller checked lists the runs the Borglet confirmed ([`PollMemory::usage_runs`]). Returns
/// false, changing nothing, when the record is missing or the columns' lengths are not its
/// number of runs.
fn record_usage_columns(
    usage: &mut std::collections::HashMap<MachineId, crate::soft::TaskUsage>,
    id: &MachineId,
    columns: &pb::TaskUsageColumns,
) -> bool {
    let Some(runs) = usage.get_mut(id) else { return false };
    let n = runs.len();
    if columns.cpu_millis.len() != n || columns.ram_bytes.len() != n || columns.cpu_seconds.len() != n {
        return false;
    }
    for (i, (_, (used, cpu_seconds))) in runs.iter_mut().enumerate() {
        *used = scheduler_core::Resources::new(columns.cpu_millis[i], columns.ram_bytes[i], 0);
        *cpu_seconds = columns.cpu_seconds[i];
    }
    true
}

/// Polls one machine forever: every poll interval, and at once when its desired set changes.
async fn poll_machine(
    master: Arc<Master>,
    id: MachineId,
    reports: mpsc::UnboundedSender<Vec<(MachineId, TaskReport)>>,
    shared: Arc<Shared>,
) {
    let wake = master.machine_wakeup(&id);
    let interval = master.config.poll_interval;
    // Fixed-rate polls, each machine at its own phase (from its id) so that a cell's polls spread
    // evenly over the interval instead of bunching; a slow poll does not stretch the round.
    let phase = {
        let mut h = DefaultHasher::new();
        id.hash(&mut h);
        Duration::from_nanos(h.finish() % interval.as_nanos().max(1) as u64)
    };
    let first = tokio::time::Instant::now() + phase;
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut schedule = Schedule::new(first.into_std(), interval);
    let base_timeout = (interval * 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
    let grace = interval * master.config.missed_polls_down;
    let mut client: Option<(String, BorgletClient<Channel>)> = None;
    let mut liveness = Liveness::new(Instant::now());
    let mut attempted = false;
    let mut in_flight = InFlight::default();
    let mut memory = PollMemory::default();
    // whether the poll about to be sent is an early one (a wake-up between ticks)
    let mut early = false;
    // counts polls, so that every STATUSES_EVERY-th asks for every task's status and usage; the
    // machines' phases spread those polls over the interval too
    let mut polls = phase.as_nanos() as u64;
    // whether this machine counts in `shared.failing`; given back when the poller stops (the
    // machine was removed), so the mass-failure count never leaks
    struct Failing<'a>(&'a Shared, bool);
    impl Drop for Failing<'_> {
        fn drop(&mut self) {
            if self.1 {
                self.0.failing.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
    let mut failing = Failing(&shared, false);
    loop {
        // one lookup of the machine per poll: whether it is down now (only this poller marks it
        // down, so that cannot change before the answer), and its address, copied only when the
        // client must be made again
        let (down, moved) = {
            let s = master.state();
            let Some(m) = s.machines.get(&id) else {
                tracing::warn!(machine = %id, "machine no longer registered; poller stops");
                return;
            };
            let moved = client.as_ref().is_none_or(|(a, _)| *a != m.address).then(|| m.address.clone());
            (m.state == MachineState::Down, moved)
        };
        if let Some(address) = moved {
            match shared.channels.get(&address, base_timeout) {
                Ok(ch) => {
                    client = Some((address.clone(), BorgletClient::new(ch)));
                    memory.failed();
                }
                Err(e) => tracing::warn!(machine = %id, %address, error = %e, "bad Borglet address"),
            }
        }
        polls = polls.wrapping_add(1);
        // (a new leader's first round asks only for the digests: the cheapest round it can make)
        let statuses = attempted && polls.is_multiple_of(STATUSES_EVERY);
        let probe = memory.acked.is_none();
        let Some(req) = build_poll(&master.state(), &id, statuses, &mut memory) else { return };
        // An early poll whose building took until the tick was imminent (the state's lock held
        // by an apply, a busy runtime) waits for the tick and goes out as its poll, built a few
        // moments before: at 1,000,000 tasks every poll that still overran was an early one
        // that passed the check at its wake-up and started 35-290 ms before the tick.
        let mut sent_early = std::mem::take(&mut early);
        if sent_early && schedule.imminent(Instant::now(), shared.early_margin()) {
            schedule.ticked(ticks.tick().await.into_std());
            sent_early = false;
        }
        let (version, base_version, want_task_usage) = (req.version, req.base_version, req.want_task_usage);
        let started = Instant::now();
        let timeout = shared.latency.timeout(base_timeout);
        let result = match client.as_mut() {
            Some((_, c)) => tokio::time::timeout(timeout, c.poll(req)).await.map_err(|_| "timed out".to_string()),
            None => Err("no usable address".to_string()),
        };
        let took = started.elapsed();
        metrics::histogram!(crate::metrics::POLL_SECONDS).record(took.as_secs_f64());
        if schedule.overran(Instant::now()) {
            metrics::counter!(crate::metrics::POLL_OVERRUNS).increment(1);
            // what an overrun was, for finding what is left of them (RUST_LOG=borgmaster::link_shard=debug)
            tracing::debug!(
                machine = %id,
                early = sent_early,
                started_before_due_ms = schedule.next_due.saturating_duration_since(started).as_secs_f64() * 1e3,
                took_ms = took.as_secs_f64() * 1e3,
                latency_ms = shared.latency.get().as_secs_f64() * 1e3,
                early_margin_ms = shared.early_margin().as_secs_f64() * 1e3,
                "poll overran its machine's next tick"
            );
        }
        let result = result.and_then(|r| r.map_err(|s| s.message().to_string()));
        if !attempted {
            attempted = true;
            let n = shared.attempted.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= master.state().machines.len() && shared.first_round_done.set(Instant::now()).is_ok() {
                tracing::info!(machines = n, "first poll round attempted: every machine's down-grace starts now");
            }
        }
        if result.is_ok() == failing.1 {
            failing.1 = !failing.1;
            if failing.1 {
                shared.failing.fetch_add(1, Ordering::Relaxed);
            } else {
                shared.failing.fetch_sub(1, Ordering::Relaxed);
            }
        }
        match result {
            Ok(resp) => {
                let resp = resp.into_inner();
                liveness.ok(Instant::now());
                shared.latency.record(took);
                if sent_early {
                    shared.early_latency.record(took);
                }
                memory.answered(resp.applied_version, base_version);
                let registered = master.state().machines.len();
                {
                    let mut soft = master.soft();
                    soft.last_seen_ms.insert(id.clone(), now_ms());
                    if !soft.first_round_done && soft.last_seen_ms.len() >= registered {
                        soft.first_round_done = true;
                        let secs = soft.led_since.map_or(0.0, |t| t.elapsed().as_secs_f64());
                        metrics::gauge!(crate::metrics::FIRST_POLL_ROUND).set(secs);
                        tracing::info!(
                            machines = registered,
                            seconds = secs,
                            "every machine polled since this replica was elected"
                        );
                        // the scheduler loop waits for this before its first pass
                        master.schedule_wakeup.notify_one();
                    }
                    soft.machine_usage.insert(id.clone(), resources_from_pb(resp.usage.as_ref()));
                }
                let answer = match (resp.tasks_unchanged, &resp.task_usage) {
                    (false, _) => "listed",
                    (true, Some(_)) => "usage",
                    (true, None) => "unchanged",
                };
                metrics::counter!(crate::metrics::POLL_ANSWERS, "tasks" => answer).increment(1);
                if resp.tasks_unchanged && want_task_usage {
                    match resp.task_usage.as_ref() {
                        Some(columns) => {
                            if !record_usage_columns(&mut master.soft().task_usage, &id, columns) {
                                // not the runs of the record after all: the next such poll lists
                                memory.usage_runs = None;
                            }
                        }
                        None => {
                            tracing::debug!(machine = %id, "the Borglet answers no usage columns; asking it for its task list instead");
                            memory.no_usage_columns = true;
                        }
                    }
                }
                if !resp.tasks_unchanged {
                    // (an unchanged answer holds no changes: the committed state records what it
                    // observes)
                    let failures = shared.report_failures.load(Ordering::Relaxed);
                    let ch = in_flight.fresh(changes(&master, &id, &resp), Instant::now(), failures);
                    // the answer's job names move into the usage map, which is recorded before
                    // the reports are sent (no copy of each name); its runs' digest says whether
                    // later polls may ask for usage alone
                    memory.usage_runs =
                        Some(runs_digest(resp.tasks.iter().map(|t| (t.job.as_str(), t.index, t.incarnation))));
                    let per_task = resp
                        .tasks
                        .into_iter()
                        .map(|t| {
                            (
                                RunId::new(t.job, t.index, t.incarnation),
                                (resources_from_pb(t.usage.as_ref()), t.cpu_seconds),
                            )
                        })
                        .collect();
                    // the map it replaces is freed after the soft state's lock is released
                    let replaced = master.soft().task_usage.insert(id.clone(), per_task);
                    drop(replaced);
                    if !ch.is_empty() {
                        let _ = reports.send(ch);
                    }
                }
                if down {
                    if let Err(e) = master.propose(Command::MachineUp { id: id.clone() }).await {
                        tracing::warn!(machine = %id, error = %e, "could not mark machine up");
                    }
                }
                if probe && resp.applied_version != version {
                    // its set differs from ours: send it now, not a poll interval later
                    continue;
                }
            }
            Err(e) => {
                liveness.failed();
                memory.failed();
                tracing::debug!(machine = %id, misses = liveness.misses, error = %e, "poll failed");
                let (up, machines) = {
                    let s = master.state();
                    (s.machines.get(&id).is_some_and(|m| m.state == MachineState::Up), s.machines.len())
                };
                let verdict =
                    liveness.down(Instant::now(), master.config.missed_polls_down, grace, shared.view(machines));
                match verdict {
                    Ok(silent) if up => {
                        let reason = format!(
                            "no successful poll for {:.1} s, {} missed polls (last: {e})",
                            silent.as_secs_f64(),
                            liveness.misses
                        );
                        tracing::warn!(machine = %id, %reason, "marking machine down");
                        if let Err(e) = master.propose(Command::MachineDown { id: id.clone(), reason }).await {
                            tracing::error!(machine = %id, error = %e, "could not mark machine down");
                        }
                    }
                    Err(crate::liveness::Why::MassFailure) if up => {
                        tracing::warn!(machine = %id, "more than half the cell fails its polls: suspecting this leader, marking nothing down");
                    }
                    _ => {}
                }
            }
        }
        tokio::select! {
            // a tick due takes precedence over a wake-up (which then polls at once after it),
            // so the schedule always knows the next tick
            biased;
            due = ticks.tick() => schedule.ticked(due.into_std()),
            _ = wake.notified() => {
                // a change that comes as the machine's next poll is due goes out with that poll:
                // polled at once, it would run past the tick (or start after it, the timer or the
                // runtime late), and the tick's poll would follow it back to back
                if schedule.imminent(Instant::now(), shared.early_margin()) {
                    schedule.ticked(ticks.tick().await.into_std());
                } else {
                    early = true;
                }
            }
        }
    }
}

/// A poller's fixed-rate schedule, as far as overruns go: when the machine's next poll is due.
/// A poll that ends after that (answered, failed or timed out) overran: the machine's next poll
/// starts late, and the leader's rounds fall behind the poll interval
/// ([`crate::metrics::POLL_OVERRUNS`]). A poll sent early, between ticks (its desired set
/// changed), overruns only when it runs past the tick still to come; none is sent early when
/// that tick is imminent ([`Schedule::imminent`]): at 1,000,000 tasks under churn every poll
/// that overran was such an early poll, about half of them started after the tick was due (the
/// timer or the runtime late) and the rest just before it; the slowest took half a second.
/// The check is made again once the early poll is built (building may wait for the state's
/// lock): the overruns left after the first check were all early polls built until the tick was
/// imminent. What "imminent" means follows the early polls' own latency ([`Shared::early_margin`]).
struct Schedule {
    /// When the next poll is due (the next tick).
    next_due: Instant,
    interval: Duration,
}

impl Schedule {
    /// The first tick is due at `first`. A poller's very first poll is sent at once, off the
    /// schedule (the machine's phase puts its first tick anywhere in the next interval): it
    /// overruns only when it runs an interval past that tick, so that a new leader's first
    /// round counts no overruns for polls merely slower than a machine's phase.
    fn new(first: Instant, interval: Duration) -> Self {
        Schedule { next_due: first + interval, interval }
    }

    /// The tick due at `due` fired: the next one is due an interval later.
    fn ticked(&mut self, due: Instant) {
        self.next_due = due + self.interval;
    }

    /// Whether a poll that ended at `end` ran past the next poll's due time.
    fn overran(&self, end: Instant) -> bool {
        end > self.next_due
    }

    /// Whether the next poll is due within `margin` of `now` (or already due): a poll started
    /// now would likely run past it, so an early poll waits for it instead (the change waits at
    /// most `margin`). The pollers pass [`Shared::early_margin`].
    fn imminent(&self, now: Instant, margin: Duration) -> bool {
        now + margin >= self.next_due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(index: u32, state: TaskState, pid: Option<u32>) -> (MachineId, TaskReport) {
        (
            MachineId("m".into()),
            TaskReport {
                job: "j".into(),
                index,
                incarnation: 1,
                state,
                pid,
                exit_code: None,
                signal: None,
                restarts: 0,
                message: String::new(),
                ready: false,
                reclaimed: false,
            },
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

        /// The promise the pollers skip their walks on: after any command, a machine whose poll
        /// generation did not move polls with the same digests.
        #[test]
        fn a_machine_whose_poll_generation_did_not_move_polls_with_the_same_digests(
            ops in proptest::collection::vec(proptest::prelude::any::<(u8, u8, u8, u8)>(), 1..80)
        ) {
            let mut s = CellState::new("p");
            let mut walked = std::collections::HashMap::new();
            for (i, (op, a, b, c)) in ops.into_iter().enumerate() {
                let command = crate::state::props::command(&s, op, a, b, c);
                let _ = s.apply(&crate::state::Entry { time_ms: i as i64, command: command.clone() });
                for m in s.machines.keys() {
                    let now = (s.poll_generation(m), poll_digests(&s, m));
                    if let Some((generation, digests)) = walked.insert(m.clone(), now) {
                        if generation == now.0 {
                            proptest::prop_assert_eq!(digests, now.1, "{} changed by {:?} without its poll generation moving", m, command);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn restarting_some_tasks_moves_the_poll_generation_of_the_machines_holding_the_others() {
        use crate::state::fixtures::{bind, machine, run, running, spec};
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::RegisterMachine { machine: machine("m2") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: None }).unwrap();
        bind(&mut s, "web", 0, "m1");
        bind(&mut s, "web", 1, "m2");
        running(&mut s, "web", "m1");
        let m2 = MachineId("m2".into());
        let (generation, digests) = (s.poll_generation(&m2), poll_digests(&s, &m2));
        run(&mut s, Command::RestartTasks { name: "web".into(), indices: vec![0] }).unwrap();
        // task 1 was not asked for: it carries on as the new version, which m2's polls carry
        assert_eq!(s.jobs["web"].tasks[1].job_version, 2);
        assert_ne!(poll_digests(&s, &m2), digests);
        assert_ne!(s.poll_generation(&m2), generation, "m2's polls would keep the old digests");
    }

    #[test]
    fn a_delta_names_the_tasks_gone_and_carries_only_the_new_or_changed() {
        use crate::state::fixtures::{bind, machine, run, running, spec};
        let mut s = CellState::new("c");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 3), expected_version: None }).unwrap();
        running(&mut s, "web", "m1");
        let m1 = MachineId("m1".into());
        let held: Vec<_> = desired(&s, &m1).iter().map(|(t, _)| (t.id(), t.incarnation, t.job_version)).collect();
        let names = |d: &(Vec<pb::TaskRef>, Vec<usize>), s: &CellState| {
            let live = desired(s, &m1);
            let removed: Vec<String> = d.0.iter().map(|r| format!("{}/{}", r.job, r.index)).collect();
            let added: Vec<String> = d.1.iter().map(|i| live[*i].0.id().to_string()).collect();
            (removed, added)
        };
        assert_eq!(names(&delta(&held, &desired(&s, &m1)), &s), (vec![], vec![]), "the same set: nothing");
        // web/0 restarts: its old run leaves the machine; the others carry on at the job's new
        // version (which their assignments carry)
        run(&mut s, Command::RestartTasks { name: "web".into(), indices: vec![0] }).unwrap();
        let (web1, web2) = ("web/1".to_string(), "web/2".to_string());
        assert_eq!(
            names(&delta(&held, &desired(&s, &m1)), &s),
            (vec!["web/0".into()], vec![web1.clone(), web2.clone()])
        );
        // its new run comes back, and a task of another job (sorted before) comes
        bind(&mut s, "web", 0, "m1");
        run(&mut s, Command::ApplyJob { spec: spec("api", 1), expected_version: None }).unwrap();
        bind(&mut s, "api", 0, "m1");
        let held: Vec<_> = desired(&s, &m1).iter().map(|(t, _)| (t.id(), t.incarnation, t.job_version)).collect();
        assert_eq!(held.len(), 4);
        // the task sorted first leaves (a stop: nothing else changes)
        run(&mut s, Command::KillJob { name: "api".into() }).unwrap();
        assert_eq!(names(&delta(&held, &desired(&s, &m1)), &s), (vec!["api/0".into()], vec![]));
        let held: Vec<_> = desired(&s, &m1).iter().map(|(t, _)| (t.id(), t.incarnation, t.job_version)).collect();
        run(&mut s, Command::ApplyJob { spec: spec("zed", 1), expected_version: None }).unwrap();
        bind(&mut s, "zed", 0, "m1");
        assert_eq!(names(&delta(&held, &desired(&s, &m1)), &s), (vec![], vec!["zed/0".into()]));
        // and the task sorted last leaves
        let held: Vec<_> = desired(&s, &m1).iter().map(|(t, _)| (t.id(), t.incarnation, t.job_version)).collect();
        run(&mut s, Command::KillJob { name: "zed".into() }).unwrap();
        assert_eq!(names(&delta(&held, &desired(&s, &m1)), &s), (vec!["zed/0".into()], vec![]));
    }

    /// Every few polls ask for usage: as columns while the machine's usage record lists the runs
    /// the committed state holds, in order; else (no record yet, runs changed since it, a
    /// Borglet that answers no columns) as the whole list. And columns are taken in only for
    /// a record of as many runs.
    #[test]
    fn a_poll_asks_for_usage_columns_only_for_the_runs_its_usage_record_lists() {
        use crate::state::fixtures::{machine, run, running, spec};
        let mut s = CellState::new("c");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 3), expected_version: None }).unwrap();
        running(&mut s, "web", "m1");
        let m1 = MachineId("m1".into());
        let committed = poll_digests(&s, &m1);
        let mut memory = PollMemory::default();
        let ask = |s: &CellState, statuses: bool, memory: &mut PollMemory| {
            let r = build_poll(s, &m1, statuses, memory).unwrap();
            (r.status_version, r.want_task_usage)
        };
        assert_eq!(ask(&s, false, &mut memory), (committed.status, false), "a plain poll: the digest alone");
        assert_eq!(ask(&s, true, &mut memory), (0, false), "no usage record yet: the whole list");
        // the record came from a listing of the committed runs, in the Borglet's order
        let listing: Vec<(String, u32, u64)> =
            desired(&s, &m1).iter().map(|(t, _)| (t.job.clone(), t.index, t.incarnation)).collect();
        memory.usage_runs = Some(runs_digest(listing.iter().map(|(j, i, n)| (j.as_str(), *i, *n))));
        assert_eq!(ask(&s, true, &mut memory), (committed.status, true), "the record's runs: columns");
        assert_eq!(ask(&s, false, &mut memory), (committed.status, false), "and only every few polls");
        // a Borglet that answered no columns is asked for its list
        let mut old = PollMemory { usage_runs: memory.usage_runs, no_usage_columns: true, ..Default::default() };
        assert_eq!(ask(&s, true, &mut old), (0, false), "a Borglet without columns: the whole list");
        assert_ne!(
            runs_digest(listing.iter().rev().map(|(j, i, n)| (j.as_str(), *i, *n))),
            memory.usage_runs.unwrap(),
            "another order is another digest"
        );
        // a task restarts: its new run is not in the record
        run(&mut s, Command::RestartTasks { name: "web".into(), indices: vec![1] }).unwrap();
        assert_eq!(ask(&s, true, &mut memory), (0, false), "runs changed since the record: the whole list");

        // taking columns in: in the record's order, only when the lengths agree
        let runs = |n: u32| -> crate::soft::TaskUsage {
            (0..n).map(|i| (RunId::new("web", i, 1), (scheduler_core::Resources::new(1, 1, 0), 0.0))).collect()
        };
        let mut usage = std::collections::HashMap::from([(m1.clone(), runs(2))]);
        let columns = |n: usize| pb::TaskUsageColumns {
            cpu_millis: (0..n as u64).map(|i| 100 + i).collect(),
            ram_bytes: (0..n as u64).map(|i| 1000 + i).collect(),
            cpu_seconds: (0..n).map(|i| i as f64).collect(),
        };
        assert!(!record_usage_columns(&mut usage, &m1, &columns(3)), "3 columns for 2 runs");
        assert!(!record_usage_columns(&mut usage, &MachineId("m2".into()), &columns(2)), "no record");
        assert_eq!(usage[&m1], runs(2), "nothing changed");
        assert!(record_usage_columns(&mut usage, &m1, &columns(2)));
        let got: Vec<_> = usage[&m1].iter().map(|(r, (u, c))| (r.task.index, u.cpu_millis, u.ram_bytes, *c)).collect();
        assert_eq!(got, [(0, 100, 1000, 0.0), (1, 101, 1001, 1.0)]);
    }

    #[test]
    fn a_borglet_that_refuses_a_delta_gets_whole_sets() {
        let set = |version| HeldSet { version, tasks: vec![] };
        let mut m = PollMemory { sending: Some(set(1)), ..Default::default() };
        m.answered(1, 0);
        assert_eq!(m.held, Some(set(1)), "a whole set it took: held");
        m.sending = Some(set(2));
        m.answered(2, 1);
        assert_eq!((m.held.clone(), m.no_deltas), (Some(set(2)), false), "a delta it took: held");
        m.sending = Some(set(3));
        m.answered(2, 2);
        assert_eq!((m.held.clone(), m.no_deltas), (None, true), "a delta it refused: whole sets from now on");
        // a Borglet that answers another set than the one held (it restarted with an older one)
        let mut m = PollMemory { held: Some(set(5)), ..Default::default() };
        m.answered(4, 0);
        assert_eq!(m.held, None);
        m.failed();
        assert_eq!(m.acked, None);
        // a Borglet that refused deltas and answered no columns, then failed a poll (restarted,
        // perhaps upgraded): offered both again
        let mut m = PollMemory { no_deltas: true, no_usage_columns: true, ..Default::default() };
        m.failed();
        assert_eq!((m.no_deltas, m.no_usage_columns), (false, false));
    }

    #[test]
    fn a_poll_overruns_only_when_it_ends_after_the_next_poll_was_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(t0, ms(1000));
        // the first poll, sent at once, overruns only an interval past the first tick
        assert!(!s.overran(t0 + ms(999)));
        assert!(s.overran(t0 + ms(1001)));
        // the first tick, due at t0, fires and its poll runs
        s.ticked(t0);
        assert!(!s.overran(t0 + ms(999)), "ended before the next tick: in time");
        assert!(s.overran(t0 + ms(1001)), "ended after the next tick: overran");
        // the next tick came late (the runtime was busy): the one after is due an interval
        // after the late one's due time, not after it fired
        s.ticked(t0 + ms(1000));
        assert!(!s.overran(t0 + ms(1900)));
        assert!(s.overran(t0 + ms(2100)));
        // an early poll (its desired set changed) between ticks overruns only past the tick to come
        assert!(!s.overran(t0 + ms(1500)));
        // so one is sent early only while the tick to come is more than two poll latencies away
        assert!(!s.imminent(t0 + ms(1500), ms(40)));
        assert!(!s.imminent(t0 + ms(1959), ms(40)));
        assert!(s.imminent(t0 + ms(1961), ms(40)), "due within the margin: waits for the tick");
        assert!(s.imminent(t0 + ms(2005), ms(40)), "due already (the tick late): waits for it");
    }

    #[test]
    fn a_report_in_flight_is_sent_again_only_when_it_changes_a_commit_failed_or_it_is_very_old() {
        let mut f = InFlight::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let running = report(0, TaskState::Running, Some(7));
        assert_eq!(f.fresh(vec![running.clone()], t0, 0).len(), 1, "new: sent");
        assert!(f.fresh(vec![running.clone()], t0 + s(1), 0).is_empty(), "in flight: not again");
        // a slow commit is no reason to send it again (the copies would only lengthen the queue)
        assert!(f.fresh(vec![running.clone()], t0 + s(30), 0).is_empty(), "slow commit: not again");
        let dead = report(0, TaskState::Dead, None);
        assert_eq!(f.fresh(vec![dead.clone()], t0 + s(31), 0), vec![dead.clone()], "changed: sent");
        assert!(f.fresh(vec![dead.clone()], t0 + s(32), 0).is_empty());
        assert_eq!(f.fresh(vec![dead.clone()], t0 + s(33), 1).len(), 1, "a commit failed since: again");
        assert!(f.fresh(vec![dead.clone()], t0 + s(34), 1).is_empty(), "and then in flight again");
        assert_eq!(f.fresh(vec![dead.clone()], t0 + s(33) + REPORT_RESEND, 1).len(), 1, "uncommitted too long: again");
        // committed (no longer a change), then the same change again: sent
        assert!(f.fresh(vec![], t0 + s(100), 1).is_empty());
        assert_eq!(f.fresh(vec![dead], t0 + s(100), 1).len(), 1);
        // other tasks are independent
        let other = report(1, TaskState::Running, Some(8));
        assert_eq!(f.fresh(vec![other.clone(), report(0, TaskState::Dead, None)], t0 + s(101), 1), vec![other.clone()]);
        // what is no longer among the changes is forgotten
        let held = |f: &InFlight| f.jobs.values().map(|runs| runs.len()).sum::<usize>();
        assert_eq!(held(&f), 2);
        assert!(f.fresh(vec![other.clone()], t0 + s(102), 1).is_empty());
        assert_eq!(held(&f), 1);
        assert!(f.fresh(vec![], t0 + s(103), 1).is_empty());
        assert_eq!(held(&f), 0);
    }
}
