//! The Raft log in RocksDB (openraft's `RaftLogStorage`).
//!
//! One RocksDB database per replica (`<data-dir>/raft`), two column families:
//! - `log`: key = log index as 8 big-endian bytes (so keys sort by index), value = the openraft
//!   entry in the binary encoding of [`super::codec`] (entries an earlier version wrote as JSON
//!   still read).
//! - `meta`: `vote`, `committed`, `last_purged` (JSON of openraft's types) and `snapshot` (see
//!   `state_machine`).
//!
//! Every truncation, vote and purge, and every append of a follower, is one synced write: when
//! openraft is told an entry is flushed, it survives `kill -9` and power loss, so a quorum's
//! acknowledgement really is durable. The leader's own entries are the exception: written
//! unsynced (they survive `kill -9`), then synced while they replicate, and nothing reveals them
//! committed before that sync (see [`super::durable`]). The committed log id is the other write
//! that is not synced (see [`LogStore::save_committed`]).

use super::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Column family of log entries.
pub(crate) const CF_LOG: &str = "log";
/// Column family of vote, committed, last purged and snapshot.
pub(crate) const CF_META: &str = "meta";

/// The database could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("opening the Raft store in {dir}: {source}")]
pub struct OpenError {
    /// Directory of the database.
    pub dir: PathBuf,
    /// RocksDB's error (permissions, another process holds the lock, damaged files).
    pub source: rocksdb::Error,
}

/// Opens (creating if needed) the replica's RocksDB database under `dir`.
///
/// Errors: [`OpenError`] when RocksDB cannot open it.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, OpenError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_LOG, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    DB::open_cf_descriptors(&opts, dir, cfs).map(Arc::new).map_err(|source| OpenError { dir: dir.into(), source })
}

pub(crate) type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// The column family `name`; its absence (a database from another program) is a read error.
pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> StorageResult<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| {
        StorageIOError::read(&std::io::Error::other(format!("column family {name:?} missing from the Raft store")))
            .into()
    })
}

/// How long a log purge waits for the snapshot that covers it to be stored.
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One synced write of `batch`: Ok only once RocksDB has synced it (WAL fsync).
///
/// Errors: RocksDB's (a full disk, a failed sync); after one, RocksDB refuses further writes,
/// openraft stops, and the replica exits (see borgmaster's main).
pub(crate) fn write_synced(db: &DB, batch: WriteBatch) -> Result<(), std::io::Error> {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo).map_err(std::io::Error::other)
}

/// One write of `batch` without waiting for the disk: in RocksDB's WAL (the OS has it, so it
/// survives `kill -9`, and the next synced write syncs it too), not yet synced.
///
/// Errors: RocksDB's.
pub(crate) fn write_unsynced(db: &DB, batch: WriteBatch) -> Result<(), std::io::Error> {
    db.write(batch).map_err(std::io::Error::other)
}

/// Runs the blocking store I/O `f`: on a multi-threaded runtime through `block_in_place` (the
/// worker's other tasks move to another thread meanwhile); on a current-thread runtime (the
/// hosts of the deterministic simulation, tests/tests/simulation.rs) inline, so that when it
/// completes is not a race between a real thread and simulated time.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Most entries [`Recent`] keeps.
const RECENT_ENTRIES: usize = 4096;
/// Most bytes (of their stored encoding) of the entries [`Recent`] keeps.
const RECENT_BYTES: usize = 64 << 20;

/// The last entries appended, in memory: a leader's replication reads what it has just written
/// (once per follower), and decoding it from RocksDB was a tenth of a busy leader's CPU.
/// Contiguous indexes `first .. first + entries.len()`; only entries already in the store (a
/// leader's own may still be syncing); truncation and purges apply to it as to the store.
#[derive(Default)]
struct Recent {
    first: u64,
    entries: std::collections::VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Recent {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Records `entries` (contiguous, with their encoded sizes) once they are in the store.
    fn appended(&mut self, entries: Vec<(Entry<TypeConfig>, usize)>) {
        let Some(first) = entries.first().map(|(e, _)| e.log_id.index) else { return };
        if self.entries.is_empty() || first < self.first || first > self.end() {
            // not following what is kept (the first append, or after a snapshot was installed)
            self.clear(first);
        } else {
            // an overwrite (openraft truncates first; this keeps the kept entries right anyway)
            self.truncated(first);
        }
        for (e, size) in entries {
            self.bytes += size;
            self.entries.push_back((e, size));
        }
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            self.first += 1;
        }
    }

    fn clear(&mut self, first: u64) {
        self.entries.clear();
        self.bytes = 0;
        self.first = first;
    }

    /// Forgets the entries from `index` on.
    fn truncated(&mut self, index: u64) {
        while self.end() > index {
            match self.entries.pop_back() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// Forgets the entries up to `index` (included).
    fn purged(&mut self, index: u64) {
        while self.first <= index && !self.entries.is_empty() {
            self.pop_front();
        }
        if self.entries.is_empty() {
            self.first = self.first.max(index.saturating_add(1));
        }
    }

    /// The entries `start .. end` if all are kept.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        if start < self.first || end > self.end() || start > end {
            return None;
        }
        let from = (start - self.first) as usize;
        Some(self.entries.range(from..from + (end - start) as usize).map(|(e, _)| e.clone()).collect())
    }
}

/// The replica's Raft log, vote and committed log id.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// Set by the state machine while it receives and stores a leader's snapshot.
    installing: Arc<std::sync::atomic::AtomicBool>,
    /// The last entries appended (shared with the log readers).
    recent: Arc<std::sync::Mutex<Recent>>,
    /// This replica's id, when its own entries as leader are synced in the background
    /// ([`LogStore::leading_as`]).
    id: Option<NodeId>,
    /// The vote last saved or read.
    vote: Arc<std::sync::Mutex<Option<Vote<NodeId>>>>,
    /// What of the log is written but not yet synced.
    durable: Arc<super::durable::Durable>,
    /// The committed log id openraft last saved, until a write of the log carries it.
    unsaved: Arc<std::sync::Mutex<Unsaved>>,
}

/// The committed log id a follower saved ([`LogStore::save_committed`]) and not yet written:
/// the next write of the log (an append, a truncation, a purge) carries it, and the store
/// writes it itself when it is closed (the last clone dropped, as at a graceful shutdown).
struct Unsaved {
    db: Arc<DB>,
    committed: Option<Option<LogId<NodeId>>>,
}

impl Unsaved {
    /// Puts the unsaved committed log id, if any, into `batch`.
    ///
    /// Errors: the column family is missing.
    fn take_into(&mut self, batch: &mut WriteBatch) -> Result<(), std::io::Error> {
        if let Some(committed) = self.committed.take() {
            let bytes = serde_json::to_vec(&committed).map_err(std::io::Error::other)?;
            batch.put_cf(cf(&self.db, CF_META).map_err(|e| std::io::Error::other(e.to_string()))?, "committed", bytes);
        }
        Ok(())
    }

    /// Writes the unsaved committed log id, if any, now (unsynced).
    ///
    /// Errors: RocksDB's, or the column family is missing.
    fn write(&mut self) -> Result<(), std::io::Error> {
        let mut batch = WriteBatch::default();
        self.take_into(&mut batch)?;
        match batch.is_empty() {
            true => Ok(()),
            false => write_unsynced(&self.db, batch),
        }
    }
}

impl Drop for Unsaved {
    fn drop(&mut self) {
        if let Err(e) = self.write() {
            tracing::warn!(
                "the committed log id could not be saved at close: {e}; the next start learns it from the leader"
            );
        }
    }
}

impl LogStore {
    /// The log in `db` (from [`open_db`]): every append synced before openraft is told.
    pub fn new(db: Arc<DB>) -> Self {
        LogStore {
            installing: Arc::default(),
            recent: Arc::default(),
            id: None,
            vote: Arc::default(),
            durable: super::durable::Durable::new(),
            unsaved: Arc::new(std::sync::Mutex::new(Unsaved { db: db.clone(), committed: None })),
            db,
        }
    }

    /// Makes the entries replica `id` appends as leader synced in the background, while they
    /// replicate, with `durable` tracking the sync (see [`super::durable`]; give the state
    /// machine and the network the same one). Syncs the WAL first: what is in the store now is
    /// durable.
    ///
    /// Errors: the sync failed.
    pub fn leading_as(mut self, id: NodeId, durable: Arc<super::durable::Durable>) -> Result<Self, std::io::Error> {
        self.db.flush_wal(true).map_err(std::io::Error::other)?;
        self.id = Some(id);
        self.durable = durable;
        Ok(self)
    }

    /// Whether this replica leads: its saved vote is for itself, committed.
    fn leading(&self) -> bool {
        let Some(id) = self.id else { return false };
        let vote = self.vote.lock().unwrap_or_else(|e| e.into_inner());
        vote.is_some_and(|v| v.committed && v.leader_id.voted_for() == Some(id))
    }

    /// Whether entries of `term` are this replica's own as the leader: its saved vote is for
    /// itself in `term`, committed (granted by a quorum). Only one leader has a term, so no
    /// other replica's entries of that term exist to be received.
    fn own_as_leader(&self, term: u64) -> bool {
        let Some(id) = self.id else { return false };
        let vote = self.vote.lock().unwrap_or_else(|e| e.into_inner());
        vote.is_some_and(|v| v.committed && v.leader_id.term == term && v.leader_id.voted_for() == Some(id))
    }

    /// Makes purges wait, while `installing` is set, for the stored snapshot to cover them
    /// (the state machine's [`super::state_machine::StateMachine::installing`]).
    pub fn waiting_for_installs(mut self, installing: Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.installing = installing;
        self
    }

    /// Puts the committed log id openraft saved last, if not yet written, into `batch`.
    ///
    /// Errors: the column family is missing.
    fn carry_committed(&self, batch: &mut WriteBatch) -> Result<(), std::io::Error> {
        self.unsaved.lock().unwrap_or_else(|e| e.into_inner()).take_into(batch)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let cf = cf(&self.db, CF_META)?;
        match self.db.get_cf(cf, key).map_err(|e| StorageIOError::read(&e))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageIOError::read(&e).into()),
        }
    }

    /// Writes `value` under `key` in `meta`, synced.
    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageIOError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        let cf = cf(&self.db, CF_META).map_err(|e| StorageIOError::write(&std::io::Error::other(e.to_string())))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key, bytes);
        let db = &self.db;
        self.settled(blocking(|| write_synced(db, batch))).map_err(|e| StorageIOError::write(&e))
    }

    /// Records how a synced write ended: it synced everything written before it; a failure
    /// means nothing pending will be.
    fn settled(&self, written: Result<(), std::io::Error>) -> Result<(), std::io::Error> {
        match &written {
            Ok(()) => self.durable.synced_all(),
            Err(e) => self.durable.fail(e.to_string()),
        }
        written
    }

    /// Whether the log holds every entry `from ..= upto.index`, the last one being `upto`.
    fn replayable(&self, from: u64, upto: LogId<NodeId>) -> StorageResult<bool> {
        let cf = cf(&self.db, CF_LOG)?;
        let stored = self.db.iterator_cf(cf, IteratorMode::From(&index_key(from), Direction::Forward));
        for (next, item) in (from..).zip(stored) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8]));
            if index != next {
                return Ok(false);
            }
            if index == upto.index {
                return Ok(Self::decode(index, &v)?.log_id == upto);
            }
        }
        Ok(false)
    }

    /// While a leader's snapshot is being installed, waits (up to [`PURGE_WAIT`]) until the
    /// stored snapshot covers `index`, or, with `or_logged`, the log holds `index`. openraft
    /// 0.9 purges the log, and appends the leader's entries after the snapshot, without waiting
    /// for the state machine to store it; a crash in between left a hole (neither entries nor
    /// snapshot) that the replica could not start over.
    async fn wait_for_install(&self, index: u64, or_logged: bool, what: &str) -> StorageResult<()> {
        let waited = tokio::time::Instant::now();
        while self.installing.load(std::sync::atomic::Ordering::Acquire) {
            let covered = blocking(|| super::state_machine::stored_snapshot_index(&self.db))?;
            if covered.is_some_and(|i| i >= index) {
                break;
            }
            if or_logged {
                let cf = cf(&self.db, CF_LOG)?;
                if self.db.get_pinned_cf(cf, index_key(index)).map_err(|e| StorageIOError::read_logs(&e))?.is_some() {
                    break;
                }
            }
            if waited.elapsed() > PURGE_WAIT {
                tracing::warn!(?covered, index, what, "no stored snapshot covers it after 60 s; going on");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    fn decode(index: u64, bytes: &[u8]) -> StorageResult<Entry<TypeConfig>> {
        super::codec::decode(bytes).map_err(|e| {
            StorageIOError::read_logs(&std::io::Error::other(format!("log entry {index} does not decode: {e}"))).into()
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(x.saturating_add(1)),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        if let Some(end) = end {
            if let Some(kept) = self.recent.lock().ok().and_then(|r| r.get(start, end)) {
                return Ok(kept);
            }
        }
        let cf = cf(&self.db, CF_LOG)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&index_key(start), Direction::Forward)) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8]));
            if !range.contains(&index) {
                break;
            }
            out.push(Self::decode(index, &v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta("last_purged")?;
        let cf = cf(&self.db, CF_LOG)?;
        let last = match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => None,
            Some(item) => {
                let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let index = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8]));
                Some(Self::decode(index, &v)?.log_id)
            }
        };
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta("vote", vote).map_err(|e| StorageIOError::write_vote(&e))?;
        *self.vote.lock().unwrap_or_else(|e| e.into_inner()) = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        let vote = self.get_meta("vote")?;
        *self.vote.lock().unwrap_or_else(|e| e.into_inner()) = vote;
        Ok(vote)
    }

    /// Records the committed log id so that a restarted replica applies its committed log before
    /// it serves (openraft calls this before every apply, and awaits it on the path of every
    /// commit). Not synced: a synced write here was a third fsync in each replicated apply.
    ///
    /// - The leader writes it at once (unsynced: in the WAL, so it survives `kill -9`), before
    ///   it applies the entries and acknowledges them: `force_voters` on a leader that survived
    ///   a lost quorum keeps every entry it acknowledged.
    /// - A follower (it hears of commits with every AppendEntries, and openraft sends one that
    ///   carries only the commit after each commit) leaves it to its next write of the log (an
    ///   append, a truncation, a purge), and writes it itself at close ([`Unsaved`]). As a
    ///   write of its own it cost a `write(2)` and a memtable insert per heartbeat on each
    ///   follower (with every replica deferring it, a first version, the CPU per apply at 1
    ///   client fell 8%: `replbench throughput`). A follower killed loses the commits it heard
    ///   since its last append; what a follower has heard races the leader's acknowledgements
    ///   anyway.
    ///
    /// Losing it only makes it older, which is safe: a committed id is a lower bound, and the
    /// replica learns the rest from the leader's next message (a new leader commits everything
    /// before its first entry).
    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner());
        unsaved.committed = Some(committed);
        if !self.leading() {
            return Ok(());
        }
        Ok(unsaved.write().map_err(|e| StorageIOError::write(&e))?)
    }

    /// The committed log id saved, if the store can still replay up to it: the stored snapshot
    /// covers it, or the log holds every entry from just after the snapshot to it. Else `None`
    /// (openraft then starts from the snapshot and learns the rest from the leader): openraft
    /// saves the committed id of a leader's snapshot before the state machine has stored that
    /// snapshot, so a crash in between left `committed` ahead of both the snapshot and the log,
    /// and the replica could not start ("Failed to get log entries, expected index: [5150,
    /// 5214)"; found by the fault suite, a follower killed after receiving a snapshot).
    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let unsaved = self.unsaved.lock().unwrap_or_else(|e| e.into_inner()).committed;
        let saved = match unsaved {
            Some(committed) => committed,
            None => self.get_meta::<Option<LogId<NodeId>>>("committed")?.flatten(),
        };
        let Some(committed) = saved else {
            return Ok(None);
        };
        let snapshot = blocking(|| super::state_machine::stored_snapshot_index(&self.db))?;
        if snapshot.is_some_and(|s| s >= committed.index) {
            return Ok(Some(committed));
        }
        let from = snapshot.map_or(0, |s| s + 1);
        match self.replayable(from, committed)? {
            true => Ok(Some(committed)),
            false => {
                tracing::warn!(
                    %committed,
                    snapshot = ?snapshot,
                    "the saved committed log id is ahead of the stored snapshot and the log; starting from the snapshot"
                );
                Ok(None)
            }
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut entries = entries.into_iter().peekable();
        if let Some(first) = entries.peek().map(|e| e.log_id.index) {
            if first > 0 {
                // entries after a snapshot not yet stored would leave a hole (see wait_for_install)
                self.wait_for_install(first - 1, true, "append").await?;
            }
        }
        if let Some(why) = self.durable.failed() {
            let e = std::io::Error::other(format!("an earlier sync of the log failed: {why}"));
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(StorageIOError::write_logs(&e).into());
        }
        let cf = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        self.carry_committed(&mut batch).map_err(|e| StorageIOError::write_logs(&e))?;
        let mut commands = false;
        let mut written = Vec::new();
        for entry in entries {
            commands |= matches!(entry.payload, openraft::EntryPayload::Normal(_));
            let bytes = super::codec::encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf, index_key(entry.log_id.index), &bytes);
            written.push((entry, bytes.len()));
        }
        let (Some((first, _)), Some((last, _))) = (written.first(), written.last()) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let (first, last, term) = (first.log_id.index, last.log_id.index, last.log_id.leader_id.term);
        // The write happens before openraft is told; a failure is reported both ways.
        let db = self.db.clone();
        let own = self.own_as_leader(term);
        let result = if own {
            // the leader's own entries: in the WAL now, synced while they replicate (see
            // super::durable: nothing reveals them committed before the sync)
            write_unsynced(&db, batch).inspect_err(|e| self.durable.fail(e.to_string()))
        } else {
            // A follower's entries: synced before openraft is told, so before the leader hears.
            // Inline on this worker, not through `blocking`: openraft's core awaits this write
            // either way, and `block_in_place` handed the worker's other tasks to another
            // thread on every append. On this box (3 replicas on 2 cores, `replbench
            // throughput --concurrency 1`) that hand-off was 12% of the CPU per apply and
            // 13% of the applies per second. A follower's other tasks wait at most one sync.
            let synced = || {
                // the durability tests' failed fsync of entries holding commands
                // (`FAILPOINTS=log-append-sync=return`), as an fsync returning EIO
                fail::fail_point!("log-append-sync", commands, |_| {
                    tracing::error!("failpoint log-append-sync: the synced write of the log fails");
                    Err(std::io::Error::other("failpoint log-append-sync: fsync failed (EIO)"))
                });
                write_synced(&db, batch)
            };
            self.settled(synced())
        };
        match result {
            Ok(()) => {
                if let Ok(mut recent) = self.recent.lock() {
                    recent.appended(written);
                }
                if own {
                    self.durable.written_unsynced(first, last, commands);
                    self.durable.sync_in_background(&self.db);
                }
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let cf = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(cf, index_key(u64::MAX));
        self.carry_committed(&mut batch).map_err(|e| StorageIOError::write_logs(&e))?;
        if let Ok(mut recent) = self.recent.lock() {
            recent.truncated(log_id.index);
        }
        self.settled(write_synced(&self.db, batch)).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    /// Deletes the log up to `log_id`. openraft asks for the purge as soon as it has handed a
    /// leader's snapshot to the state machine, without waiting for the state machine to store
    /// it (openraft 0.9: `PurgeLog` has no condition): a crash in between left a replica with
    /// neither the entries nor the snapshot, unable to start ("Failed to get log entries";
    /// found by the fault suite's crash in the middle of writing a snapshot). So while a
    /// snapshot is being installed the purge waits until the stored snapshot covers `log_id`,
    /// up to [`PURGE_WAIT`].
    ///
    /// Errors: the store cannot be written.
    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.wait_for_install(log_id.index, false, "purge").await?;
        let bytes = serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write(&e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, "last_purged", bytes);
        batch.delete_range_cf(cf(&self.db, CF_LOG)?, index_key(0), index_key(log_id.index.saturating_add(1)));
        self.carry_committed(&mut batch).map_err(|e| StorageIOError::write_logs(&e))?;
        if let Ok(mut recent) = self.recent.lock() {
            recent.purged(log_id.index);
        }
        self.settled(write_synced(&self.db, batch)).map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::StorageError;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, super::super::state_machine::StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, super::super::state_machine::StateMachine), StorageError<NodeId>>
        {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let db = open_db(dir.path()).map_err(|e| StorageIOError::write(&e))?;
            let state = Arc::new(std::sync::RwLock::new(crate::state::CellState::new("t")));
            let sm = super::super::state_machine::StateMachine::open(db.clone(), state, "t")?;
            Ok((dir, LogStore::new(db), sm))
        }
    }

    /// A purge asked for while a leader's snapshot is being installed deletes nothing until the
    /// snapshot that covers it is stored (a crash in between must leave the entries).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_during_a_snapshot_install_waits_for_the_snapshot() {
        use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
        use openraft::testing::{blank_ent, log_id};
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let state = Arc::new(std::sync::RwLock::new(crate::state::CellState::new("t")));
        let mut sm = super::super::state_machine::StateMachine::open(db.clone(), state, "t").unwrap();
        let mut log = LogStore::new(db.clone()).waiting_for_installs(sm.installing());
        log.blocking_append((0..10).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await.unwrap();
        let buf = sm.begin_receiving_snapshot().await.unwrap();
        let mut purging = log.clone();
        let purge = tokio::spawn(async move { purging.purge(log_id(1, 1, 5)).await });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!purge.is_finished(), "the purge waits for the snapshot");
        let entries = log.try_get_log_entries(0..10).await.unwrap();
        assert_eq!(entries.len(), 10, "nothing deleted yet");
        // the snapshot that covers index 5 is stored: the purge goes ahead
        let mut data = Vec::new();
        serde_json::to_writer(&mut data, &crate::state::CellState::new("t")).unwrap();
        let mut snap = buf;
        snap.get_mut().extend_from_slice(&data);
        let meta = openraft::SnapshotMeta {
            last_log_id: Some(log_id(1, 1, 5)),
            last_membership: Default::default(),
            snapshot_id: "s".into(),
        };
        sm.install_snapshot(&meta, snap).await.unwrap();
        purge.await.unwrap().unwrap();
        let entries = log.try_get_log_entries(0..10).await.unwrap();
        assert_eq!(entries.first().map(|e| e.log_id.index), Some(6), "{entries:?}");
    }

    fn cell_snapshot(index: u64) -> (openraft::SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>) {
        let data = serde_json::to_vec(&crate::state::CellState::new("t")).unwrap();
        let meta = openraft::SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id(1, 1, index)),
            last_membership: Default::default(),
            snapshot_id: format!("s{index}"),
        };
        (meta, data)
    }

    /// A replica killed after openraft saved the committed id of a leader's snapshot but before
    /// the state machine stored it still starts (the fault suite's "Failed to get log entries"):
    /// the committed id read back is only one the store can replay to.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_committed_id_ahead_of_the_snapshot_and_the_log_is_not_replayed() {
        use openraft::storage::{RaftLogStorageExt, RaftStateMachine, StorageHelper};
        use openraft::testing::{blank_ent, log_id};
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let state = Arc::new(std::sync::RwLock::new(crate::state::CellState::new("t")));
        let mut sm = super::super::state_machine::StateMachine::open(db.clone(), state.clone(), "t").unwrap();
        let mut log = LogStore::new(db.clone()).waiting_for_installs(sm.installing());
        log.blocking_append((0..10).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await.unwrap();
        let (meta, data) = cell_snapshot(5);
        sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(data))).await.unwrap();
        // entries 6..=9 and a committed id the log holds: replayed
        log.save_committed(Some(log_id(1, 1, 9))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 9)));
        // a committed id of another leader at index 9: not this log's entry
        log.save_committed(Some(log_id(2, 2, 9))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);
        // a leader's snapshot up to 20 is being received; openraft saves its committed id; crash
        let _ = sm.begin_receiving_snapshot().await.unwrap();
        log.save_committed(Some(log_id(1, 1, 20))).await.unwrap();
        drop((log, sm));
        let mut log = LogStore::new(db.clone());
        let mut sm = super::super::state_machine::StateMachine::open(db.clone(), state, "t").unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None, "index 20 is in neither the log nor the snapshot");
        let initial = StorageHelper::new(&mut log, &mut sm).get_initial_state().await.expect("the replica starts");
        assert_eq!(initial.committed.map(|l| l.index), Some(5), "from the stored snapshot");
        // the snapshot covers the committed id: kept
        let (meta, data) = cell_snapshot(20);
        sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(data))).await.unwrap();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 20)));
    }

    /// openraft saves the committed log id before every apply: a follower's is written with its
    /// next write of the log, or when the store closes, never as a write of its own; a leader's
    /// at once.
    #[tokio::test]
    async fn the_committed_id_is_written_with_the_next_append_or_at_close() {
        use openraft::storage::RaftLogStorageExt;
        use openraft::testing::{blank_ent, log_id};
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let stored = |db: &DB| {
            let bytes = db.get_cf(cf(db, CF_META).unwrap(), "committed").unwrap();
            bytes.and_then(|b| serde_json::from_slice::<Option<LogId<NodeId>>>(&b).unwrap())
        };
        let mut log = LogStore::new(db.clone());
        log.blocking_append((0..3).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await.unwrap();
        log.save_committed(Some(log_id(1, 1, 2))).await.unwrap();
        assert_eq!(stored(&db), None, "not a write of its own");
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 1, 2)), "read as saved");
        log.blocking_append([blank_ent::<TypeConfig>(1, 1, 3)]).await.unwrap();
        assert_eq!(stored(&db), Some(log_id(1, 1, 2)), "carried by the next append");
        log.save_committed(Some(log_id(1, 1, 3))).await.unwrap();
        let reader = log.get_log_reader().await;
        drop(log);
        assert_eq!(stored(&db), Some(log_id(1, 1, 2)), "a log reader still holds the store open");
        drop(reader);
        assert_eq!(stored(&db), Some(log_id(1, 1, 3)), "written at close");
        // the leader writes it at once, before it applies and acknowledges what it commits
        let mut leader = LogStore::new(db.clone()).leading_as(1, super::super::durable::Durable::new()).unwrap();
        leader.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        leader.blocking_append([blank_ent::<TypeConfig>(2, 1, 4)]).await.unwrap();
        leader.save_committed(Some(log_id(2, 1, 4))).await.unwrap();
        assert_eq!(stored(&db), Some(log_id(2, 1, 4)), "a leader's at once, not left to its close");
    }

    /// Entries a leader sends after its snapshot are not appended before the snapshot is stored
    /// (a crash in between would leave a hole in the log that the replica cannot start over).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_after_a_snapshot_wait_for_it_to_be_stored() {
        use openraft::storage::{RaftLogStorageExt, RaftStateMachine};
        use openraft::testing::blank_ent;
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let state = Arc::new(std::sync::RwLock::new(crate::state::CellState::new("t")));
        let mut sm = super::super::state_machine::StateMachine::open(db.clone(), state, "t").unwrap();
        let mut log = LogStore::new(db.clone()).waiting_for_installs(sm.installing());
        log.blocking_append((0..5).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await.unwrap();
        let buf = sm.begin_receiving_snapshot().await.unwrap();
        // entries that follow the log go ahead while a snapshot is received
        log.blocking_append((5..7).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await.unwrap();
        let mut appending = log.clone();
        let append =
            tokio::spawn(
                async move { appending.blocking_append((21..24).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await },
            );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!append.is_finished(), "the entries after the snapshot wait for it");
        assert_eq!(indexes(&log.try_get_log_entries(0..30).await.unwrap()), (0..7).collect::<Vec<_>>());
        let (meta, data) = cell_snapshot(20);
        let mut snap = buf;
        snap.get_mut().extend_from_slice(&data);
        sm.install_snapshot(&meta, snap).await.unwrap();
        append.await.unwrap().unwrap();
        assert_eq!(indexes(&log.try_get_log_entries(21..30).await.unwrap()), vec![21, 22, 23]);
    }

    fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    /// The kept entries follow appends, overwrites, truncations and purges, and answer only
    /// ranges they hold whole.
    #[test]
    fn recent_entries_follow_the_log() {
        use openraft::testing::blank_ent;
        let ents = |r: std::ops::Range<u64>, term: u64| -> Vec<(Entry<TypeConfig>, usize)> {
            r.map(|i| (blank_ent::<TypeConfig>(term, 1, i), 10)).collect()
        };
        let mut r = Recent::default();
        assert_eq!(r.get(0, 1).map(|v| v.len()), None);
        r.appended(ents(1..11, 1));
        assert_eq!(r.get(3, 7).map(|v| indexes(&v)), Some(vec![3, 4, 5, 6]));
        assert_eq!(r.get(0, 3), None, "index 0 was never appended");
        assert_eq!(r.get(9, 12), None, "past the end");
        r.truncated(5);
        assert_eq!(r.get(3, 7), None);
        assert_eq!(r.get(3, 5).map(|v| indexes(&v)), Some(vec![3, 4]));
        // a new leader's entries from 5 on
        r.appended(ents(5..8, 2));
        let got = r.get(4, 8).unwrap_or_default();
        assert_eq!(indexes(&got), vec![4, 5, 6, 7]);
        assert_eq!(got.iter().map(|e| e.log_id.leader_id.term).collect::<Vec<_>>(), vec![1, 2, 2, 2]);
        r.purged(4);
        assert_eq!(r.get(4, 6), None);
        assert_eq!(r.get(5, 8).map(|v| indexes(&v)), Some(vec![5, 6, 7]));
        assert_eq!(r.bytes, 30);
        // after a snapshot: entries that do not follow replace what was kept
        r.appended(ents(20..22, 2));
        assert_eq!(r.get(5, 8), None);
        assert_eq!(r.get(20, 22).map(|v| indexes(&v)), Some(vec![20, 21]));
        assert_eq!(r.bytes, 20);
        r.purged(30);
        assert_eq!((r.entries.len(), r.bytes, r.get(31, 31).map(|v| v.len())), (0, 0, Some(0)));
        // bounded
        r.appended(ents(31..31 + RECENT_ENTRIES as u64 + 5, 2));
        assert_eq!(r.entries.len(), RECENT_ENTRIES);
        assert_eq!(r.first, 36);
    }

    /// What the log store answers from the entries it keeps is what RocksDB holds: after
    /// appends, a truncation, an overwrite and a purge, a store opened afresh on the same
    /// database reads the same entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kept_entries_read_as_the_stored_ones() {
        use openraft::storage::RaftLogStorageExt;
        use openraft::testing::{blank_ent, log_id};
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path()).unwrap();
        let mut log = LogStore::new(db.clone());
        log.blocking_append((1..20).map(|i| blank_ent::<TypeConfig>(1, 1, i))).await.unwrap();
        log.truncate(log_id(1, 1, 12)).await.unwrap();
        log.blocking_append((12..25).map(|i| blank_ent::<TypeConfig>(2, 2, i))).await.unwrap();
        log.purge(log_id(1, 1, 6)).await.unwrap();
        let mut fresh = LogStore::new(db.clone());
        for range in [0..30, 7..25, 10..14, 20..25] {
            let kept = log.try_get_log_entries(range.clone()).await.unwrap();
            let stored = fresh.try_get_log_entries(range.clone()).await.unwrap();
            assert_eq!(kept, stored, "range {range:?}");
        }
        assert_eq!(indexes(&log.try_get_log_entries(10..14).await.unwrap()), vec![10, 11, 12, 13]);
        let terms: Vec<u64> =
            log.try_get_log_entries(10..14).await.unwrap().iter().map(|e| e.log_id.leader_id.term).collect();
        assert_eq!(terms, vec![1, 1, 2, 2]);
    }

    /// openraft's own conformance suite for log stores and state machines, on real RocksDB.
    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(Builder).unwrap();
    }
}
