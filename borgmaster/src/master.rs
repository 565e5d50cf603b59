//! The master's core: the cell state behind a lock, the Raft group behind a single proposer,
//! and the wake-ups that connect them to the scheduler loop and the link shards.
//!
//! A change goes: [`Master::propose`] -> the committer groups waiting commands into one Raft
//! entry ([`Group`]) -> openraft replicates it to a quorum (each replica's log write is synced)
//! -> every replica applies it to its in-memory [`CellState`] -> on the leader, the proposer gets
//! its result and the parts its events concern are woken. Readers take a read lock on the state
//! and never wait for disk or network.
//!
//! `Master` only constructs and answers; it starts nothing. The binary starts the committer
//! ([`Committer::run`]) and the leader's duties ([`crate::leader::run`]): only the leader polls
//! Borglets and schedules; on every other replica the state is a read-only copy that follows
//! the log. The Raft group is behind methods here; only `raft/` names openraft types.

use crate::raft::group::{self as raft_group, AppliedWatch, LeaderWatch, Member, RaftStatus, RemoveError, WriteError};
use crate::raft::membership::AddError;
use crate::raft::{BorgRaft, Group, NodeId};
use crate::soft::SoftState;
use crate::state::{ApplyOutcome, CellState, Command, CommandError, Entry, Event, EventKind};
use scheduler_core::{MachineId, Resources};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::Notify;

pub use crate::raft::group::Leadership;

/// Master settings (from the command line).
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Cell name.
    pub cell: String,
    /// Interval between polls of each Borglet.
    pub poll_interval: Duration,
    /// Consecutive failed polls after which a machine is marked down.
    pub missed_polls_down: u32,
    /// Interval of the scheduler loop when nothing wakes it earlier.
    pub schedule_interval: Duration,
    /// Quota of users without a grant at a band (`None` = unlimited), written into the cell
    /// state by this replica whenever it becomes the leader and the state differs. Give every
    /// replica the same value.
    pub default_quota: Option<Resources>,
    /// Whether callers must authenticate with a certificate from the cell's CA and are
    /// authorized per call (off with `--insecure`: anyone may do anything).
    pub auth: bool,
    /// Resource reclamation (Borg §5.5): reservations from usage; batch and free tasks placed
    /// against them ([`crate::reservation`]).
    pub reclaim: crate::reservation::ReclaimConfig,
}

/// Why a proposed command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The state machine rejected it (no such job, version mismatch, ...); nothing changed.
    #[error(transparent)]
    Rejected(#[from] CommandError),
    /// This replica is not the leader (any more). The command may still be committed if it
    /// reached the log before leadership moved; a client should read before retrying a
    /// non-idempotent command. `leader` is the leader's address when known.
    #[error("this replica is not the leader{}", leader.as_ref().map(|l| format!(" (the leader is at {l})")).unwrap_or_default())]
    NotLeader {
        /// host:port of the current leader, when known.
        leader: Option<String>,
    },
    /// Replication or storage failed, or this replica lost its leadership after proposing: the
    /// command may or may not be committed (read before retrying). The text says which.
    #[error("replication: {0}")]
    Storage(String),
    /// The master is shutting down.
    #[error("the Borgmaster is stopping")]
    Stopped,
}

/// What kind of command a result belongs to (to route its events after the command itself moved
/// into the log).
#[derive(Clone, Copy)]
enum Kind {
    Bind,
    TaskReports,
    RegisterMachine,
    Other,
}

impl Kind {
    fn of(c: &Command) -> Kind {
        match c {
            Command::Bind { .. } => Kind::Bind,
            Command::TaskReports { .. } => Kind::TaskReports,
            Command::RegisterMachine { .. } => Kind::RegisterMachine,
            _ => Kind::Other,
        }
    }
}

impl From<WriteError> for ProposeError {
    fn from(e: WriteError) -> ProposeError {
        match e {
            WriteError::NotLeader { leader } => ProposeError::NotLeader { leader },
            WriteError::Stopped => ProposeError::Stopped,
            WriteError::Storage(s) => ProposeError::Storage(s),
        }
    }
}

/// Most groups being replicated at once: while they are in flight, new proposals queue up and go
/// out together in the next group.
const MAX_IN_FLIGHT: usize = 4;

/// The single proposer: takes every waiting proposal and submits them as one Raft entry, with at
/// most `MAX_IN_FLIGHT` entries in flight. Made by [`Master::new`]; run it once
/// ([`Committer::run`]) or proposals wait forever.
///
/// Group commit: while another group is in flight, a group that is not full (neither
/// `MAX_GROUP` commands nor [`MAX_GROUP_WEIGHT`]) waits for it to finish, taking in what is
/// proposed meanwhile, and goes out as soon as it fills or nothing else is in flight. So many
/// small commands (applies from many clients, report batches) share one synced write on every
/// replica instead of being spread over as many groups as may be in flight, while full groups
/// (a pass's placements) still go out back to back. `replbench throughput` at 64 clients, three
/// runs alternating with up to 4 small groups in flight as before: 12,079-12,566 applies/s and
/// 101-107 us of CPU per apply, against 10,556-10,624 and 119-126 us.
pub struct Committer {
    rx: tokio::sync::mpsc::UnboundedReceiver<Proposal>,
}

/// A group being gathered by the committer.
struct Gathering {
    group: Vec<Proposal>,
    weight: usize,
    /// The proposal that did not fit: it starts the next group.
    next: Option<Proposal>,
}

impl Gathering {
    fn new(first: Proposal) -> Self {
        Gathering { weight: first.command.weight(), group: vec![first], next: None }
    }

    /// Adds `p`, or keeps it for the next group if it would make this one too heavy. Returns
    /// whether the group is full.
    fn add(&mut self, p: Proposal) -> bool {
        if self.weight + p.command.weight() > MAX_GROUP_WEIGHT {
            self.next = Some(p);
        } else {
            self.weight += p.command.weight();
            self.group.push(p);
        }
        self.full()
    }

    fn full(&self) -> bool {
        self.next.is_some() || self.group.len() >= MAX_GROUP
    }
}

impl Committer {
    /// Commits proposals until the master is dropped.
    pub async fn run(mut self, master: std::sync::Weak<Master>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        // told each time a group finishes (its slot given back first)
        let finished = Arc::new(tokio::sync::Notify::new());
        let mut next: Option<Proposal> = None;
        loop {
            let first = match next.take() {
                Some(p) => p,
                None => match self.rx.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            let Ok(permit) = slots.clone().acquire_owned().await else { return };
            let mut g = Gathering::new(first);
            while !g.full() {
                match self.rx.try_recv() {
                    Ok(p) => {
                        g.add(p);
                    }
                    Err(_) => break,
                }
            }
            // others in flight (this group holds one slot): a group not full waits for them
            while !g.full() && slots.available_permits() < MAX_IN_FLIGHT - 1 {
                tokio::select! {
                    _ = finished.notified() => {}
                    p = self.rx.recv() => match p {
                        Some(p) => {
                            g.add(p);
                        }
                        None => break,
                    },
                }
            }
            let Gathering { group, next: left, .. } = g;
            next = left;
            let Some(master) = master.upgrade() else { return };
            // handed to openraft here, in order (commands proposed one after the other, e.g.
            // a pass's evictions and placements, apply in that order); only the wait for the
            // quorum runs on its own
            let submitted = master.submit_group(group).await;
            let finished = finished.clone();
            tokio::spawn(async move {
                master.finish_group(submitted).await;
                drop(permit);
                finished.notify_one();
            });
        }
    }
}

/// Where the committer sends a command's result.
type Reply = tokio::sync::oneshot::Sender<Result<(ApplyOutcome, Vec<Event>), ProposeError>>;

/// A command waiting for the committer, and where to send its result.
struct Proposal {
    command: Command,
    reply: Reply,
}

/// The outcome of a group handed to openraft: one result per command.
type SubmittedOutcome =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<crate::raft::CommandResult>, WriteError>> + Send>>;

/// A group handed to openraft, and who waits for each command's result.
struct Submitted {
    kinds: Vec<Kind>,
    replies: Vec<Reply>,
    outcome: SubmittedOutcome,
}

/// Most commands committed in one group (one synced write).
const MAX_GROUP: usize = 4096;

/// Most [`Command::weight`] in one group (a command heavier than this goes alone): with
/// openraft's 4 entries per AppendEntries (`raft::config`), at most about 8,000 task records
/// per call.
pub const MAX_GROUP_WEIGHT: usize = 2_000;

/// Most records (placements, evictions, task reports) one command carries: a scheduling pass
/// that places 100,000 tasks, or a poll round in which as many started, commits a sequence of
/// commands, so that no Raft entry, nor any AppendEntries call, grows with the size of the cell.
pub const COMMAND_CHUNK: usize = 1_000;

/// Machines whose reported usage [`Master::cell_usage`] sums per hold of the locks (about 6,400
/// runs in a cell of 1,000,000 tasks on 10,000 machines: a millisecond or two; see
/// [`crate::scheduler_loop::SNAPSHOT_SLICE_TASKS`]).
pub const USED_CHUNK_MACHINES: usize = 64;

/// `v` cut into pieces of at most `n` (at least 1), in order. Each piece holds only its own
/// elements (capacity at most `n`): memory stays linear in `v`'s length. (Cutting with
/// `split_off` left every head piece the capacity of all that followed it: a pass that bound
/// 1,000,000 tasks in commands of 1,000 held about 500 times its decisions, 6.7 GB on the
/// leader in `CHURN=100 scripts/bench-million`, until they committed.)
pub fn chunks_of<T>(v: Vec<T>, n: usize) -> Vec<Vec<T>> {
    let n = n.max(1);
    let mut out = Vec::with_capacity(v.len().div_ceil(n));
    let mut rest = v.into_iter();
    loop {
        let piece: Vec<T> = rest.by_ref().take(n).collect();
        if piece.is_empty() {
            return out;
        }
        out.push(piece);
    }
}

/// The Borgmaster's shared core. Cheap to share behind an `Arc`.
pub struct Master {
    /// Settings.
    pub config: MasterConfig,
    /// This replica's id in the master group (`--id`).
    pub id: NodeId,
    /// This replica's advertised gRPC address (host:port).
    pub address: String,
    raft: BorgRaft,
    state: Arc<RwLock<CellState>>,
    proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
    soft: Mutex<SoftState>,
    /// Wakes the scheduler loop: something may now be placeable.
    pub schedule_wakeup: Notify,
    /// Wakes the link-shard supervisor: a machine was registered.
    pub machines_changed: Notify,
    machine_wakeups: Mutex<HashMap<MachineId, Arc<Notify>>>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Master {
    /// The master of replica `id` at `address`, over `raft` whose state machine shares `state`,
    /// and the committer its proposals wait for. Starts nothing: run the committer, and
    /// [`crate::leader::run`] for the leader's duties.
    pub fn new(
        config: MasterConfig,
        id: NodeId,
        address: String,
        raft: BorgRaft,
        state: Arc<RwLock<CellState>>,
    ) -> (Arc<Master>, Committer) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let master = Arc::new(Master {
            config,
            id,
            address,
            raft,
            state,
            proposals: tx,
            soft: Mutex::new(SoftState::default()),
            schedule_wakeup: Notify::new(),
            machines_changed: Notify::new(),
            machine_wakeups: Mutex::new(HashMap::new()),
        });
        (master, Committer { rx })
    }

    /// Who leads the master group, as this replica knows it.
    pub fn leadership(&self) -> Leadership {
        raft_group::leadership(&self.raft, self.id)
    }

    /// This replica's Raft status (for `/metrics`).
    pub fn raft_status(&self) -> RaftStatus {
        raft_group::status(&self.raft, self.id)
    }

    /// This replica's status as `ListReplicas` reports it.
    pub fn replica_status(&self) -> borg_proto::ReplicaStatus {
        crate::raft::network::local_status(&self.raft, self.id, &self.address)
    }

    /// The voters' ids, ascending.
    pub fn voters(&self) -> Vec<NodeId> {
        raft_group::voters(&self.raft)
    }

    /// Every member of the master group (voters and learners), by id.
    pub fn members(&self) -> Vec<Member> {
        raft_group::members(&self.raft)
    }

    /// Adds replica `id` at `address` as a voter once it has caught up (see
    /// [`crate::raft::membership::add_voter`]); returns the voters after.
    ///
    /// Errors: [`AddError`].
    pub async fn add_replica(&self, id: NodeId, address: &str, catch_up: Duration) -> Result<Vec<NodeId>, AddError> {
        crate::raft::membership::add_voter(&self.raft, id, address, catch_up).await?;
        Ok(self.voters())
    }

    /// Removes replica `id` from the master group; returns the voters after.
    ///
    /// Errors: [`RemoveError`].
    pub async fn remove_replica(&self, id: NodeId) -> Result<Vec<NodeId>, RemoveError> {
        raft_group::remove_replica(&self.raft, id).await
    }

    /// Writes a snapshot of this replica's state now; returns the last log index it covers once
    /// it is stored.
    ///
    /// Errors: Raft stopped, or no new snapshot was stored within `timeout`.
    pub async fn take_snapshot(&self, timeout: Duration) -> Result<u64, String> {
        let before = self.raft.metrics().borrow().snapshot;
        let applied = self.raft.metrics().borrow().last_applied;
        if before.is_some() && before == applied {
            return Ok(before.map_or(0, |l| l.index));
        }
        crate::raft::group::snapshot_until(&self.raft, |m| m.snapshot.is_some() && m.snapshot != before, timeout).await
    }

    /// A watch of this replica's leadership (the leader's duties follow it).
    pub fn leader_watch(&self) -> LeaderWatch {
        LeaderWatch::new(&self.raft)
    }

    /// A watch of this replica's applied index (watch streams wake on it).
    pub fn applied_watch(&self) -> AppliedWatch {
        AppliedWatch::new(&self.raft)
    }

    /// Confirms with a quorum that this replica leads and its state holds every committed entry.
    ///
    /// Errors: it does not lead, or no quorum answered.
    pub async fn confirm_leadership(&self) -> Result<(), String> {
        raft_group::confirm_leadership(&self.raft).await
    }

    /// Read access to the cell state. Do not hold it across an `.await`.
    pub fn state(&self) -> RwLockReadGuard<'_, CellState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the soft state. Do not hold it across an `.await`.
    pub fn soft(&self) -> std::sync::MutexGuard<'_, SoftState> {
        self.soft.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cell's accounting ([`crate::usage::cell_usage`]) without stalling the leader: the
    /// allocation in one hold of the state's read lock (one sweep, ~30 ms at 1,000,000 tasks),
    /// then the reported usage [`USED_CHUNK_MACHINES`] machines per hold of both locks, yielding
    /// in between (about 0.27 ms per 1,000 reported runs; `cargo bench -p borg-benches --bench
    /// state cell_usage`). At 1,000,000 tasks one hold of both for the whole sweep (a million soft-state
    /// lookups, ~0.3 s) blocked every poller on the soft state's lock at every `/metrics`
    /// scrape: polls fell seconds behind (`scripts/bench-million`'s poll scenario).
    pub async fn cell_usage(&self) -> crate::usage::CellUsage {
        let mut u = crate::usage::allocation(&self.state());
        let machines: Vec<MachineId> = self.soft().task_usage.keys().cloned().collect();
        for part in machines.chunks(USED_CHUNK_MACHINES) {
            {
                let state = self.state();
                let soft = self.soft();
                crate::usage::add_used(&mut u, &state, &soft, part);
            }
            tokio::task::yield_now().await;
        }
        u
    }

    /// The notifier that wakes machine `m`'s poller.
    pub fn machine_wakeup(&self, m: &MachineId) -> Arc<Notify> {
        let mut w = self.machine_wakeups.lock().unwrap_or_else(|e| e.into_inner());
        w.entry(m.clone()).or_default().clone()
    }

    /// Commits `command` through the Raft group and applies it, and wakes the parts its events
    /// concern.
    ///
    /// Commands from every caller are committed in groups: the committer takes all that are
    /// waiting and proposes them as one Raft entry (group commit: one synced write per replica
    /// however many commands). Returns the outcome and events once a quorum has the entry and
    /// this replica applied it. Errors: [`ProposeError::NotLeader`] on a replica that does not
    /// lead; [`ProposeError::Storage`] when replication failed; [`ProposeError::Rejected`] when
    /// the state machine refused the command (it stays in the log as a no-op).
    pub async fn propose(&self, command: Command) -> Result<(ApplyOutcome, Vec<Event>), ProposeError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.proposals.send(Proposal { command, reply }).map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Proposes `commands` in this order (they are committed in it, possibly in several groups)
    /// and waits for all; one result per command, as [`Master::propose`]'s.
    pub async fn propose_all(&self, commands: Vec<Command>) -> Vec<Result<(ApplyOutcome, Vec<Event>), ProposeError>> {
        let mut replies = Vec::with_capacity(commands.len());
        for command in commands {
            let (reply, rx) = tokio::sync::oneshot::channel();
            match self.proposals.send(Proposal { command, reply }) {
                Ok(()) => replies.push(Some(rx)),
                Err(_) => replies.push(None),
            }
        }
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(match rx {
                Some(rx) => rx.await.map_err(|_| ProposeError::Stopped).and_then(|r| r),
                None => Err(ProposeError::Stopped),
            });
        }
        out
    }

    /// Hands one group to openraft (see [`raft_group::submit`]).
    async fn submit_group(&self, group: Vec<Proposal>) -> Submitted {
        let time_ms = now_ms();
        let mut kinds = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let mut entries = Vec::with_capacity(group.len());
        for p in group {
            kinds.push(Kind::of(&p.command));
            entries.push(Entry { time_ms, command: p.command });
            replies.push(p.reply);
        }
        let outcome = match raft_group::submit(&self.raft, Group::new(entries)).await {
            Ok(outcome) => Box::pin(outcome) as SubmittedOutcome,
            Err(e) => Box::pin(std::future::ready(Err(e))),
        };
        Submitted { kinds, replies, outcome }
    }

    /// Waits for a submitted group's outcome and answers each proposer.
    async fn finish_group(&self, group: Submitted) {
        let Submitted { kinds, replies, outcome } = group;
        let n = kinds.len();
        let results = match outcome.await {
            Ok(results) => {
                metrics::histogram!(crate::metrics::COMMIT_GROUP).record(n as f64);
                results
            }
            Err(e) => {
                tracing::warn!(error = ?e, commands = n, "proposal not committed");
                for reply in replies {
                    let _ = reply.send(Err(ProposeError::from(e.clone())));
                }
                return;
            }
        };
        for ((kind, result), reply) in kinds.into_iter().zip(results).zip(replies) {
            if let Ok((_, events)) = &result {
                crate::metrics::on_events(&self.state(), events);
                self.dispatch(kind, events);
            }
            let _ = reply.send(result.map_err(ProposeError::Rejected));
        }
    }

    fn dispatch(&self, kind: Kind, events: &[Event]) {
        let mut machines: Vec<&MachineId> = events.iter().filter_map(|e| e.machine.as_ref()).collect();
        machines.dedup();
        for m in machines {
            self.machine_wakeup(m).notify_one();
        }
        let placeable_changed = match kind {
            Kind::Bind => events.iter().any(|e| e.kind == EventKind::Preempted),
            Kind::TaskReports => events.iter().any(|e| matches!(e.kind, EventKind::Dead | EventKind::Pending)),
            Kind::RegisterMachine | Kind::Other => !events.is_empty(),
        };
        if placeable_changed {
            self.schedule_wakeup.notify_one();
        }
        if matches!(kind, Kind::RegisterMachine) {
            self.machines_changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{chunks_of, Gathering, Proposal, MAX_GROUP, MAX_GROUP_WEIGHT};
    use crate::state::Command;
    use scheduler_core::MachineId;

    /// A proposal of weight `w` (a removal of `w` machines).
    fn proposal(w: usize) -> Proposal {
        let ids = (0..w).map(|i| MachineId(format!("m{i}"))).collect();
        let (reply, _) = tokio::sync::oneshot::channel();
        Proposal { command: Command::RemoveMachines { ids, force: false, by: String::new() }, reply }
    }

    /// A group fills at MAX_GROUP_WEIGHT (the proposal that would pass it starts the next group);
    /// a proposal heavier than MAX_GROUP_WEIGHT goes alone.
    #[test]
    fn a_group_fills_by_weight_or_by_count() {
        let mut g = Gathering::new(proposal(MAX_GROUP_WEIGHT - 10));
        assert!(!g.full());
        assert!(!g.add(proposal(10)), "exactly the weight: still room for nothing heavier");
        assert!(g.add(proposal(1)), "one more record: full");
        assert_eq!(g.group.len(), 2);
        assert_eq!(g.next.as_ref().map(|p| p.command.weight()), Some(1));

        let heavy = Gathering::new(proposal(MAX_GROUP_WEIGHT * 3));
        assert_eq!(heavy.group.len(), 1, "a heavy command is taken alone");
        let mut heavy = heavy;
        assert!(heavy.add(proposal(1)));
        assert_eq!(heavy.group.len(), 1);

        // commands of weight 1 (the least): the weight fills the group before MAX_GROUP does
        let mut light = Gathering::new(proposal(1));
        let mut added = 1;
        while !light.add(proposal(1)) {
            added += 1;
        }
        assert_eq!(light.group.len(), MAX_GROUP_WEIGHT);
        assert!(light.group.len() < MAX_GROUP && light.next.is_some(), "{added}");
    }

    /// Pieces keep the order, and each holds only its own elements: the memory of a cut vector
    /// is linear in its length, not quadratic.
    #[test]
    fn chunks_hold_only_their_own_elements() {
        let v: Vec<u32> = (0..10_050).collect();
        let pieces = chunks_of(v, 100);
        assert_eq!(pieces.len(), 101);
        assert!(pieces.iter().all(|p| p.capacity() <= 100), "{:?}", pieces.iter().map(Vec::capacity).max());
        assert_eq!(pieces.last().map(Vec::len), Some(50));
        assert_eq!(pieces.into_iter().flatten().collect::<Vec<_>>(), (0..10_050).collect::<Vec<_>>());
        assert!(chunks_of(Vec::<u32>::new(), 10).is_empty());
        assert_eq!(chunks_of(vec![1, 2, 3], 0), vec![vec![1], vec![2], vec![3]]);
    }
}
