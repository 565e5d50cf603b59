//! The master's core: the cell state behind a lock, the Raft group behind a single proposer,
//! and the wake-ups that connect them to the scheduler loop and the link shards.
//!
//! A change goes: [`Master::propose`] -> the committer groups waiting commands into one Raft
//! entry ([`Group`]) -> openraft replicates it to a quorum (each replica's log write is synced)
//! -> every replica applies it to its in-memory [`CellState`] -> on the leader, the proposer gets
//! its result and the parts its events concern are woken. Readers take a read lock on the state
//! and never wait for disk or network.
//!
//! Only the leader polls Borglets and schedules ([`leader_duties`]); on every other replica the
//! state is a read-only copy that follows the log.

use crate::raft::{Applied, BorgRaft, Group, NodeId};
use crate::state::{ApplyOutcome, CellState, Command, CommandError, Entry, Event, EventKind};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use scheduler_core::{MachineId, Params, Resources, Scheduler};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;
use tokio::sync::Notify;

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
    /// Replication or storage failed; the text is openraft's error.
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

/// Most groups being replicated at once: while they are in flight, new proposals queue up and go
/// out together in the next group.
const MAX_IN_FLIGHT: usize = 4;

/// The single proposer: takes every waiting proposal and submits them as one Raft entry, with at
/// most [`MAX_IN_FLIGHT`] entries in flight. Ends when the master is dropped.
async fn committer(master: std::sync::Weak<Master>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Proposal>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let Some(master) = master.upgrade() else { return };
        tokio::spawn(async move {
            master.commit_group(group).await;
            drop(permit);
        });
    }
}

/// Usage of the tasks of one machine from its last poll: (job, index, incarnation) -> (usage,
/// CPU seconds since start).
pub type TaskUsage = HashMap<(String, u32, u64), (Resources, f64)>;

/// Why a job's unplaced tasks are pending: the scheduler's per-machine reasons (kept as data
/// until rendered), or a reason of the master's own that is not about machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Per-machine reasons from scheduler-core.
    Machines(scheduler_core::WhyPending),
    /// Another reason (an alloc set that does not exist or has no room).
    Other(String),
}

impl Pending {
    /// (machines in the cell, reason -> machines failing with it); (0, empty) for `Other`.
    pub fn reasons(&self) -> (usize, std::collections::BTreeMap<String, usize>) {
        match self {
            Pending::Machines(w) => (w.machines, w.reasons.clone()),
            Pending::Other(_) => (0, Default::default()),
        }
    }
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pending::Machines(w) => w.fmt(f),
            Pending::Other(s) => f.write_str(s),
        }
    }
}

/// Soft state: known only to the running leader, rebuilt from Borglet polls after a restart.
#[derive(Debug, Default)]
pub struct SoftState {
    /// Why each job's unplaced tasks are pending, from the last scheduling pass.
    pub why_pending: HashMap<String, Pending>,
    /// When each job's why-pending was computed (they are refreshed after a while).
    pub why_pending_at: HashMap<String, std::time::Instant>,
    /// Last successful poll of each machine, ms since the Unix epoch.
    pub last_seen_ms: HashMap<MachineId, i64>,
    /// Usage each Borglet reported in its last poll.
    pub machine_usage: HashMap<MachineId, Resources>,
    /// Per-task usage from each machine's last poll: ((job, index, incarnation), usage, CPU
    /// seconds), replaced whole on every poll so that gone tasks drop out.
    pub task_usage: HashMap<MachineId, TaskUsage>,
    /// Jobs whose pending tasks did not fit, and when the scheduler examines them again.
    pub unplaced_backoff: HashMap<String, crate::scheduler_loop::Backoff>,
    /// (machines up, live tasks bound) at the last pass: backoffs are forgotten when capacity
    /// may have been freed.
    pub last_capacity: (usize, usize),
    /// When this replica started its leader duties (None on followers).
    pub led_since: Option<std::time::Instant>,
    /// Whether every registered machine has answered a poll since `led_since` (the first full
    /// poll round of this leadership; logged and exported once).
    pub first_round_done: bool,
}

impl SoftState {
    /// Usage of task `job/index` in `incarnation`, if its Borglet reported it.
    pub fn usage_of(&self, machine: &MachineId, job: &str, index: u32, incarnation: u64) -> Option<Resources> {
        self.task_usage.get(machine)?.get(&(job.to_string(), index, incarnation)).map(|(u, _)| *u)
    }
}

/// Where the committer sends a command's result.
type Reply = tokio::sync::oneshot::Sender<Result<(ApplyOutcome, Vec<Event>), ProposeError>>;

/// A command waiting for the committer, and where to send its result.
struct Proposal {
    command: Command,
    reply: Reply,
}

/// Most commands committed in one group (one synced write).
const MAX_GROUP: usize = 4096;

/// The Borgmaster's shared core. Cheap to share behind an `Arc`.
pub struct Master {
    /// Settings.
    pub config: MasterConfig,
    /// This replica's id in the master group (`--id`).
    pub id: NodeId,
    /// This replica's advertised gRPC address (host:port).
    pub address: String,
    /// The Raft group handle.
    pub raft: BorgRaft,
    state: Arc<RwLock<CellState>>,
    proposals: tokio::sync::mpsc::UnboundedSender<Proposal>,
    /// Soft state (see [`SoftState`]).
    pub soft: Mutex<SoftState>,
    /// The scheduler and its caches (only the scheduler loop and dry runs use it).
    pub scheduler: Mutex<Scheduler>,
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
    /// The master of replica `id` at `address`, over `raft` whose state machine shares `state`.
    /// Starts the committer and the leader duties (they wait until this replica leads).
    pub fn new(
        config: MasterConfig,
        id: NodeId,
        address: String,
        raft: BorgRaft,
        state: Arc<RwLock<CellState>>,
    ) -> Arc<Master> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let master = Arc::new(Master {
            config,
            id,
            address,
            raft,
            state,
            proposals: tx,
            soft: Mutex::new(SoftState::default()),
            scheduler: Mutex::new(Scheduler::new(Params { explain: false, ..Params::default() })),
            schedule_wakeup: Notify::new(),
            machines_changed: Notify::new(),
            machine_wakeups: Mutex::new(HashMap::new()),
        });
        tokio::spawn(committer(Arc::downgrade(&master), rx));
        tokio::spawn(leader_duties(master.clone()));
        master
    }

    /// Who leads the master group, as this replica knows it.
    pub fn leadership(&self) -> Leadership {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        match m.current_leader {
            Some(l) if l == self.id && m.state == ServerState::Leader => Leadership::Me,
            Some(l) => match m.membership_config.membership().get_node(&l) {
                Some(node) => Leadership::Other { id: l, address: node.addr.clone() },
                None => Leadership::Unknown,
            },
            None => Leadership::Unknown,
        }
    }

    /// Read access to the cell state. Do not hold it across an `.await`.
    pub fn state(&self) -> RwLockReadGuard<'_, CellState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the soft state.
    pub fn soft(&self) -> std::sync::MutexGuard<'_, SoftState> {
        self.soft.lock().unwrap_or_else(|e| e.into_inner())
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

    /// Proposes one group and answers each proposer.
    async fn commit_group(&self, group: Vec<Proposal>) {
        let time_ms = now_ms();
        let mut kinds = Vec::with_capacity(group.len());
        let mut replies = Vec::with_capacity(group.len());
        let mut entries = Vec::with_capacity(group.len());
        for p in group {
            kinds.push(Kind::of(&p.command));
            entries.push(Entry { time_ms, command: p.command });
            replies.push(p.reply);
        }
        let n = entries.len();
        let results = match self.raft.client_write(Group { entries }).await {
            Ok(resp) => {
                metrics::histogram!(crate::metrics::COMMIT_GROUP).record(n as f64);
                let Applied(results) = resp.data;
                results
            }
            Err(e) => {
                let err = || match &e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                        ProposeError::NotLeader { leader: f.leader_node.as_ref().map(|n| n.addr.clone()) }
                    }
                    RaftError::Fatal(_) => ProposeError::Stopped,
                    other => ProposeError::Storage(other.to_string()),
                };
                tracing::warn!(error = %e, commands = n, "proposal not committed");
                for reply in replies {
                    let _ = reply.send(Err(err()));
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

/// Who leads the master group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This replica.
    Me,
    /// Another replica: its id and gRPC address.
    Other {
        /// Its `--id`.
        id: NodeId,
        /// Its host:port.
        address: String,
    },
    /// No leader known (an election is under way, or this replica is cut off).
    Unknown,
}

fn leads(m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> bool {
    m.state == ServerState::Leader && m.current_leader == Some(m.id)
}

/// Runs the leader's duties while this replica leads: the link shards (polling every Borglet)
/// and the scheduler loop. On election it first waits until its state holds every committed
/// entry, then starts them with empty soft state (the Borglets' reports rebuild it; no task is
/// restarted); when leadership is lost it stops them. Runs until the Raft group shuts down.
pub async fn leader_duties(master: Arc<Master>) {
    let mut metrics = master.raft.metrics();
    loop {
        while !leads(&metrics.borrow_and_update()) {
            if metrics.changed().await.is_err() {
                return;
            }
        }
        if let Err(e) = master.raft.ensure_linearizable().await {
            tracing::info!(error = %e, "elected but could not confirm leadership; waiting");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if master.state().default_quota != master.config.default_quota {
            let limit = master.config.default_quota;
            if let Err(e) = master.propose(Command::SetDefaultQuota { limit }).await {
                tracing::warn!(error = %e, "could not record the configured default quota");
            }
        }
        let term = metrics.borrow().current_term;
        tracing::info!(id = master.id, term, "leading the cell: polling Borglets and scheduling");
        metrics::counter!(crate::metrics::LEADER_ELECTED).increment(1);
        *master.soft() = SoftState { led_since: Some(std::time::Instant::now()), ..SoftState::default() };
        let mut duties = tokio::task::JoinSet::new();
        duties.spawn(crate::scheduler_loop::run(master.clone()));
        duties.spawn(crate::link_shard::run(master.clone()));
        while leads(&metrics.borrow_and_update()) {
            if metrics.changed().await.is_err() {
                break;
            }
        }
        tracing::warn!(id = master.id, "no longer the leader: stopped polling and scheduling");
        duties.shutdown().await;
    }
}
