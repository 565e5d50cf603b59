//! The master's core: the cell state behind a lock, the store behind a single writer, and the
//! wake-ups that connect them to the scheduler loop and the link shards.
//!
//! A change goes: [`Master::propose`] -> append to the RocksDB log (synced) -> apply to the
//! in-memory [`CellState`] -> wake whoever the events concern. Readers take a read lock on the
//! state and never wait for disk.

use crate::state::{ApplyOutcome, CellState, Command, CommandError, Entry, Event};
use crate::store::{Store, StoreError, CHECKPOINT_EVERY};
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
}

/// Why a proposed command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// The state machine rejected it (no such job, version mismatch, ...); nothing changed.
    #[error(transparent)]
    Rejected(#[from] CommandError),
    /// It could not be made durable; nothing changed. The text is the storage error.
    #[error("storage: {0}")]
    Storage(String),
    /// The master is shutting down.
    #[error("the Borgmaster is stopping")]
    Stopped,
}

/// The single writer: takes every waiting proposal, appends them with one synced write, applies
/// them, and checkpoints every [`CHECKPOINT_EVERY`] entries. Ends when the master is dropped.
async fn committer(
    master: std::sync::Weak<Master>,
    store: Store,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Proposal>,
) {
    let mut since_checkpoint = 0u64;
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let Some(master) = master.upgrade() else { return };
        let time_ms = now_ms();
        let (entries, replies): (Vec<Entry>, Vec<Reply>) =
            group.into_iter().map(|p| (Entry { time_ms, command: p.command }, p.reply)).unzip();
        let first_index = master.state().applied_index + 1;
        if let Err(e) = tokio::task::block_in_place(|| store.append_all(first_index, &entries)) {
            tracing::error!(error = %e, "log write failed; {} commands not applied", entries.len());
            let text = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(ProposeError::Storage(text.clone())));
            }
            continue;
        }
        metrics::histogram!(crate::metrics::COMMIT_GROUP).record(entries.len() as f64);
        since_checkpoint += entries.len() as u64;
        master.apply_group(first_index, entries, replies);
        if since_checkpoint >= CHECKPOINT_EVERY {
            let snapshot = master.state().clone();
            match tokio::task::block_in_place(|| store.checkpoint(&snapshot)) {
                Ok(()) => since_checkpoint = 0,
                Err(e) => tracing::warn!(error = %e, "checkpoint failed; the log keeps growing until one succeeds"),
            }
        }
    }
}

/// Usage of the tasks of one machine from its last poll: (job, index, incarnation) -> (usage,
/// CPU seconds since start).
pub type TaskUsage = HashMap<(String, u32, u64), (Resources, f64)>;

/// Soft state: known only to the running leader, rebuilt from Borglet polls after a restart.
#[derive(Debug, Default)]
pub struct SoftState {
    /// Why each job's unplaced tasks are pending, from the last scheduling pass.
    pub why_pending: HashMap<String, String>,
    /// When each job's why-pending was computed (they are refreshed after a while).
    pub why_pending_at: HashMap<String, std::time::Instant>,
    /// Last successful poll of each machine, ms since the Unix epoch.
    pub last_seen_ms: HashMap<MachineId, i64>,
    /// Usage each Borglet reported in its last poll.
    pub machine_usage: HashMap<MachineId, Resources>,
    /// Per-task usage from each machine's last poll: ((job, index, incarnation), usage, CPU
    /// seconds), replaced whole on every poll so that gone tasks drop out.
    pub task_usage: HashMap<MachineId, TaskUsage>,
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
    state: RwLock<CellState>,
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
    /// Opens the store and rebuilds the state from it.
    ///
    /// Errors: the store cannot be opened or read (see [`StoreError`]).
    pub fn open(config: MasterConfig, store: Store) -> Result<Arc<Master>, StoreError> {
        let state = store.load(&config.cell)?;
        tracing::info!(
            cell = %state.cell,
            jobs = state.jobs.len(),
            machines = state.machines.len(),
            applied_index = state.applied_index,
            "cell state loaded"
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let master = Arc::new(Master {
            config,
            state: RwLock::new(state),
            proposals: tx,
            soft: Mutex::new(SoftState::default()),
            scheduler: Mutex::new(Scheduler::new(Params { explain: false, ..Params::default() })),
            schedule_wakeup: Notify::new(),
            machines_changed: Notify::new(),
            machine_wakeups: Mutex::new(HashMap::new()),
        });
        tokio::spawn(committer(Arc::downgrade(&master), store, rx));
        Ok(master)
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

    /// Makes `command` durable, applies it, and wakes the parts its events concern.
    ///
    /// Commands from every caller are committed in groups: the committer takes all that are
    /// waiting, writes them with one synced RocksDB write (group commit), then applies them in
    /// order. Returns the outcome and events. Errors: [`ProposeError::Storage`] when the log
    /// write failed (nothing changed); [`ProposeError::Rejected`] when the state machine refused
    /// the command (it stays in the log as a no-op, as it would in a Raft log).
    pub async fn propose(&self, command: Command) -> Result<(ApplyOutcome, Vec<Event>), ProposeError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.proposals.send(Proposal { command, reply }).map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Applies a durable group of entries starting at `first` and answers each proposer.
    fn apply_group(&self, first: u64, entries: Vec<Entry>, replies: Vec<Reply>) {
        let mut results = Vec::with_capacity(entries.len());
        {
            let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
            for (i, entry) in entries.iter().enumerate() {
                s.applied_index = first + i as u64;
                results.push(s.apply(entry));
            }
        }
        for ((entry, result), reply) in entries.iter().zip(results).zip(replies) {
            if let Ok((_, events)) = &result {
                crate::metrics::on_events(&self.state(), events);
                self.dispatch(&entry.command, events);
            }
            let _ = reply.send(result.map_err(ProposeError::Rejected));
        }
    }

    fn dispatch(&self, command: &Command, events: &[Event]) {
        let mut machines: Vec<&MachineId> = events.iter().filter_map(|e| e.machine.as_ref()).collect();
        machines.dedup();
        for m in machines {
            self.machine_wakeup(m).notify_one();
        }
        let placeable_changed = match command {
            Command::Bind { .. } => events.iter().any(|e| e.kind == "preempted"),
            Command::TaskReports { .. } => events.iter().any(|e| e.kind == "dead" || e.kind == "pending"),
            _ => !events.is_empty(),
        };
        if placeable_changed {
            self.schedule_wakeup.notify_one();
        }
        if matches!(command, Command::RegisterMachine { .. }) {
            self.machines_changed.notify_one();
        }
    }
}
