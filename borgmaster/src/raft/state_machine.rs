//! The cell state as openraft's state machine, and its snapshots (Borg's checkpoints).
//!
//! The state lives in memory behind a lock shared with the master (readers never wait for disk).
//! It is not written per entry: on start it is rebuilt from the last snapshot and openraft
//! replays the committed log after it. A snapshot is the whole [`CellState`] (MessagePack
//! compressed with zstd, [`super::codec::compress`]) plus openraft's metadata (last log id and
//! membership), written to the `meta` column family as `snapshot_meta` and `snapshot_data` (the
//! bytes as they are) in one synced write; openraft then
//! purges the log it covers. (The first format, one JSON `snapshot` of both, is still read.) A replica that lags
//! behind the purged log, or lost its disk, receives the leader's snapshot and installs it.

use super::log_store::{cf, write_synced, StorageResult, CF_META};
use super::{Applied, NodeId, TypeConfig};
use crate::state::CellState;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use rocksdb::{WriteBatch, DB};
use std::io::Cursor;
use std::sync::{Arc, RwLock};

/// A snapshot in the first format: the whole [`StoredSnapshot`] as JSON (its data as an array
/// of numbers, 3.5 times its size). Still read; replaced by the next snapshot written.
const SNAPSHOT_KEY: &str = "snapshot";
/// The stored snapshot's metadata (JSON of openraft's `SnapshotMeta`).
const SNAPSHOT_META_KEY: &str = "snapshot_meta";
/// The stored snapshot's data (the cell state in the encoding of [`super::codec`], as it is),
/// written with its metadata.
const SNAPSHOT_DATA_KEY: &str = "snapshot_data";
/// The last log index the stored snapshot covers (8 bytes, big endian), written in the same
/// batch as the snapshot, so that it can be read without the snapshot.
const SNAPSHOT_INDEX_KEY: &str = "snapshot_index";

/// A snapshot as stored: openraft's metadata and the state's bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    /// [`CellState`] in the encoding of [`super::codec`] (JSON in stores of earlier versions).
    data: Vec<u8>,
}

/// The cell state machine of one replica.
pub struct StateMachine {
    db: Arc<DB>,
    state: Arc<RwLock<CellState>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Makes snapshot ids unique when two are built at the same log id.
    snapshot_seq: u64,
    /// Set from the first chunk of a leader's snapshot until it is stored (or replaced): the
    /// log store holds back purges meanwhile.
    installing: Arc<std::sync::atomic::AtomicBool>,
    /// When the first chunk of the snapshot being received arrived (for the install's log line).
    receiving_since: Option<std::time::Instant>,
    /// Held across every snapshot write of this store, built or installed ([`write_snapshot`]).
    snapshot_writes: Arc<std::sync::Mutex<()>>,
    /// What of the log is not yet synced: an entry is applied only once it is.
    durable: Arc<super::durable::Durable>,
}

/// Builds one snapshot from the state as encoded when openraft asked for the builder.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    /// The state at `last_applied`, [`super::codec::encode`]d under the state's read lock:
    /// encoding a synthetic 1,000,000-task cell (0.34-0.39 s on the 2-core box) holds the lock
    /// a third to a half as long as the copy of the state this replaced (0.58-1.0 s), and the
    /// 236 MB it makes are freed once compressed.
    encoded: Result<Vec<u8>, std::io::Error>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    seq: u64,
    /// The state machine's [`StateMachine::snapshot_writes`].
    snapshot_writes: Arc<std::sync::Mutex<()>>,
}

/// The stored snapshot's metadata alone (without reading its data), in either format.
fn read_snapshot_meta(db: &DB) -> StorageResult<Option<SnapshotMeta<NodeId, BasicNode>>> {
    let meta = cf(db, CF_META)?;
    match db.get_cf(meta, SNAPSHOT_META_KEY).map_err(|e| StorageIOError::read_snapshot(None, &e))? {
        Some(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageIOError::read_snapshot(None, &e).into())
        }
        None => Ok(read_snapshot(db)?.map(|s| s.meta)),
    }
}

fn read_snapshot(db: &DB) -> StorageResult<Option<StoredSnapshot>> {
    let meta_cf = cf(db, CF_META)?;
    let read = |key: &str| db.get_cf(meta_cf, key).map_err(|e| StorageIOError::read_snapshot(None, &e));
    if let Some(meta) = read(SNAPSHOT_META_KEY)? {
        let meta: SnapshotMeta<NodeId, BasicNode> =
            serde_json::from_slice(&meta).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let data = read(SNAPSHOT_DATA_KEY)?.ok_or_else(|| {
            StorageIOError::read_snapshot(
                Some(meta.signature()),
                &std::io::Error::other("the stored snapshot's metadata has no data beside it"),
            )
        })?;
        return Ok(Some(StoredSnapshot { meta, data }));
    }
    match read(SNAPSHOT_KEY)? {
        None => Ok(None),
        Some(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageIOError::read_snapshot(None, &e).into())
        }
    }
}

/// The membership recorded in the stored snapshot, if there is one (for offline recovery).
pub(crate) fn stored_membership(db: &DB) -> StorageResult<Option<openraft::Membership<NodeId, BasicNode>>> {
    Ok(read_snapshot_meta(db)?.map(|m| m.last_membership.membership().clone()))
}

/// The last log index the stored snapshot covers (`None`: no snapshot, or one of no entry).
pub(crate) fn stored_snapshot_index(db: &DB) -> StorageResult<Option<u64>> {
    let meta = cf(db, CF_META)?;
    match db.get_cf(meta, SNAPSHOT_INDEX_KEY).map_err(|e| StorageIOError::read_snapshot(None, &e))? {
        Some(b) if b.len() == 8 => Ok(Some(u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8])))),
        // a store written before the index was kept: from the snapshot itself
        _ => Ok(read_snapshot_meta(db)?.and_then(|m| m.last_log_id.map(|l| l.index))),
    }
}

/// Whether [`write_snapshot`] may replace a stored snapshot that covers later entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Older {
    /// A leader's snapshot being installed: it is the state from now on, whatever is stored.
    Replaces,
    /// A snapshot this replica built from a copy of its state: skipped when the stored one
    /// covers later entries (a leader's snapshot installed while it was being built).
    Yields,
}

/// Stores `snap` (metadata, data and index in one synced batch) under `writes`, the store's
/// snapshot-write lock, and returns whether it did. With [`Older::Yields`] it is not written
/// when the stored snapshot covers a later entry: a replica building its own snapshot (from its
/// state at index 10,732) while a leader's (at 11,080) was installed wrote its older one last;
/// the log, purged up to 11,080 on the strength of the installed snapshot, then started after
/// the stored one ended, and the replica could never start again (openraft: "purge_upto <=
/// snapshot_last_log_id"; the fault suite, seed 927126).
fn write_snapshot(db: &DB, snap: &StoredSnapshot, writes: &std::sync::Mutex<()>, older: Older) -> StorageResult<bool> {
    let sig = Some(snap.meta.signature());
    let _one_at_a_time = writes.lock().unwrap_or_else(|e| e.into_inner());
    let index = snap.meta.last_log_id.map(|l| l.index);
    if older == Older::Yields && stored_snapshot_index(db)? > index {
        return Ok(false);
    }
    let meta = serde_json::to_vec(&snap.meta).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf(db, CF_META)?, SNAPSHOT_META_KEY, meta);
    batch.put_cf(cf(db, CF_META)?, SNAPSHOT_DATA_KEY, &snap.data);
    batch.delete_cf(cf(db, CF_META)?, SNAPSHOT_KEY);
    if let Some(l) = snap.meta.last_log_id {
        batch.put_cf(cf(db, CF_META)?, SNAPSHOT_INDEX_KEY, l.index.to_be_bytes());
    }
    // the fault suite's crash in the middle of writing a snapshot, taken or received
    // (`FAILPOINTS=snapshot-write=return`)
    fail::fail_point!("snapshot-write", |_| {
        tracing::error!("failpoint snapshot-write: aborting in the middle of writing a snapshot");
        std::process::abort()
    });
    write_synced(db, batch).map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
    Ok(true)
}

fn decode_state(snap: &StoredSnapshot) -> StorageResult<CellState> {
    let mut state: CellState =
        super::codec::decode(&snap.data).map_err(|e| StorageIOError::read_snapshot(Some(snap.meta.signature()), &e))?;
    state.reindex();
    state.applied_index = snap.meta.last_log_id.map_or(0, |l| l.index);
    Ok(state)
}

impl StateMachine {
    /// The state machine over `db`: loads the last snapshot into `state` (or, with none, leaves a
    /// new cell named `cell` there).
    ///
    /// Errors: the snapshot cannot be read or does not decode (the data dir is damaged or from an
    /// incompatible version).
    pub fn open(db: Arc<DB>, state: Arc<RwLock<CellState>>, cell: &str) -> StorageResult<StateMachine> {
        let mut sm = StateMachine {
            db,
            state,
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot_seq: 0,
            installing: Arc::default(),
            receiving_since: None,
            snapshot_writes: Arc::default(),
            durable: super::durable::Durable::new(),
        };
        match read_snapshot(&sm.db)? {
            Some(snap) => sm.load(&snap)?,
            None => *sm.write() = CellState::new(cell),
        }
        Ok(sm)
    }

    /// The flag set while a leader's snapshot is received and stored (for
    /// [`super::log_store::LogStore::waiting_for_installs`]).
    pub fn installing(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.installing.clone()
    }

    /// Makes every entry wait, before it is applied, until `durable` has it synced (the log
    /// store's; see [`super::durable`]).
    pub fn applying_synced(mut self, durable: Arc<super::durable::Durable>) -> Self {
        self.durable = durable;
        self
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, CellState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&mut self, snap: &StoredSnapshot) -> StorageResult<()> {
        let state = decode_state(snap)?;
        self.replace(state, &snap.meta);
        Ok(())
    }

    /// Makes `state`, decoded from the snapshot of `meta`, this state machine's.
    fn replace(&mut self, state: CellState, meta: &SnapshotMeta<NodeId, BasicNode>) {
        // the old state is freed after the lock is released (a lagging replica's may be large)
        let old = std::mem::replace(&mut *self.write(), state);
        drop(old);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let encoded = std::mem::replace(&mut self.encoded, Ok(Vec::new()));
        let data = super::log_store::blocking(|| encoded.and_then(|e| super::codec::compress(&e)))
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.seq),
            None => format!("--{}", self.seq),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        let index = self.last_applied.map_or(0, |l| l.index);
        if super::log_store::blocking(|| write_snapshot(&self.db, &stored, &self.snapshot_writes, Older::Yields))? {
            tracing::info!(index, bytes = stored.data.len(), "snapshot taken");
        } else {
            tracing::info!(index, "snapshot taken but not stored: the stored one (a leader's) covers later entries");
        }
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Applied>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut out = Vec::with_capacity(entries.size_hint().0);
        for entry in entries {
            // not before this replica's copy is synced (a leader's own entries are synced
            // while they replicate; applying reveals the commit)
            if let Err(why) = self.durable.wait(entry.log_id.index).await {
                let e = std::io::Error::other(format!("entry {} was never synced: {why}", entry.log_id.index));
                return Err(StorageIOError::write_logs(&e).into());
            }
            // The write lock is held for one log entry (one committed group, bounded in records
            // by the committer), not for the whole batch openraft hands over: at 1M tasks a batch
            // of dozens of 1,000-task groups held it long enough that every poller and RPC
            // waiting to read the state blocked the runtime's threads (the leader stalled over
            // a second). Readers see the state after whole entries only, as before.
            let started = std::time::Instant::now();
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            self.last_applied = Some(entry.log_id);
            state.applied_index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Blank => out.push(Applied::default()),
                EntryPayload::Normal(group) => {
                    out.push(Applied(group.entries.iter().map(|e| state.apply(e)).collect()))
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Applied::default());
                }
            }
            drop(state);
            metrics::histogram!(super::APPLY_SECONDS).record(started.elapsed().as_secs_f64());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            db: self.db.clone(),
            encoded: super::log_store::blocking(|| {
                super::codec::encode(&*self.state.read().unwrap_or_else(|e| e.into_inner()))
            }),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            seq: self.snapshot_seq,
            snapshot_writes: self.snapshot_writes.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        self.installing.store(true, std::sync::atomic::Ordering::Release);
        self.receiving_since = Some(std::time::Instant::now());
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let stored = StoredSnapshot { meta: meta.clone(), data: snapshot.into_inner() };
        self.installing.store(true, std::sync::atomic::Ordering::Release);
        let received_ms = self.receiving_since.take().map_or(0, |t| t.elapsed().as_millis() as u64);
        let started = std::time::Instant::now();
        // Decoding (CPU) and the synced write (disk) of a large snapshot take seconds each at
        // 1,000,000 tasks: they run side by side, and the state is replaced only when both
        // succeeded. (A snapshot that was written but does not decode, which a leader of this
        // version does not send, would stop this replica at its next start with that error.)
        let (decoded, written) = super::log_store::blocking(|| {
            std::thread::scope(|scope| {
                let writer = scope.spawn(|| {
                    let t = std::time::Instant::now();
                    write_snapshot(&self.db, &stored, &self.snapshot_writes, Older::Replaces).map(|_| t.elapsed())
                });
                let t = std::time::Instant::now();
                let decoded = decode_state(&stored).map(|state| (state, t.elapsed()));
                let written = writer.join().unwrap_or_else(|_| {
                    Err(StorageIOError::write_snapshot(
                        Some(stored.meta.signature()),
                        &std::io::Error::other("the snapshot writer panicked"),
                    )
                    .into())
                });
                (decoded, written)
            })
        });
        let done = decoded.and_then(|d| written.map(|w| (d, w)));
        self.installing.store(false, std::sync::atomic::Ordering::Release);
        let ((state, decode), write) = done?;
        self.replace(state, &stored.meta);
        tracing::info!(
            index = meta.last_log_id.map_or(0, |l| l.index),
            bytes = stored.data.len(),
            received_ms,
            decode_ms = decode.as_millis() as u64,
            write_ms = write.as_millis() as u64,
            install_ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(read_snapshot(&self.db)?.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(index: u64, data: &[u8]) -> StoredSnapshot {
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        };
        StoredSnapshot { meta, data: data.to_vec() }
    }

    #[test]
    fn snapshots_are_stored_as_meta_and_raw_data_and_the_first_format_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::log_store::open_db(dir.path()).unwrap();
        // the first format: one JSON of both
        let old = stored(7, b"{\"cell\":\"old\"}");
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&db, CF_META).unwrap(), SNAPSHOT_KEY, serde_json::to_vec(&old).unwrap());
        write_synced(&db, batch).unwrap();
        let back = read_snapshot(&db).unwrap().unwrap();
        assert_eq!((back.meta.snapshot_id.as_str(), back.data.as_slice()), ("s7", old.data.as_slice()));
        assert_eq!(stored_snapshot_index(&db).unwrap(), Some(7));
        // a new snapshot replaces it: metadata as JSON, the data as its own bytes
        let new = stored(9, b"{\"cell\":\"new\"}");
        assert!(write_snapshot(&db, &new, &Default::default(), Older::Yields).unwrap());
        let meta = cf(&db, CF_META).unwrap();
        assert_eq!(db.get_cf(meta, SNAPSHOT_KEY).unwrap(), None, "the old format is gone");
        assert_eq!(db.get_cf(meta, SNAPSHOT_DATA_KEY).unwrap().as_deref(), Some(new.data.as_slice()));
        let back = read_snapshot(&db).unwrap().unwrap();
        assert_eq!((back.meta.snapshot_id.as_str(), back.data.as_slice()), ("s9", new.data.as_slice()));
        assert_eq!(read_snapshot_meta(&db).unwrap().unwrap().snapshot_id, "s9");
        assert_eq!(stored_snapshot_index(&db).unwrap(), Some(9));
    }

    /// A snapshot built by this version is stored compressed, and a replica restarted on the
    /// store loads the same state from it; a leader of an earlier version's snapshot
    /// (MessagePack, not compressed) still installs.
    #[tokio::test]
    async fn a_built_snapshot_is_stored_compressed_and_loads_and_an_uncompressed_one_installs() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::log_store::open_db(dir.path()).unwrap();
        let state = Arc::new(RwLock::new(CellState::new("c")));
        let mut sm = StateMachine::open(db.clone(), state.clone(), "c").unwrap();
        let spec = crate::state::fixtures::spec("j", 3);
        let entry = crate::state::Entry {
            time_ms: 1,
            command: crate::state::Command::ApplyJob { spec, expected_version: None },
        };
        let _ = state.write().unwrap().apply(&entry);
        sm.last_applied = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 4));
        state.write().unwrap().applied_index = 4;
        let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let data = built.snapshot.into_inner();
        assert!(super::super::codec::is_compressed(&data), "a built snapshot is compressed");
        assert_eq!(read_snapshot(&db).unwrap().unwrap().data, data, "and stored as built");
        let mut want = serde_json::to_value(&*state.read().unwrap()).unwrap();
        let loaded = Arc::new(RwLock::new(CellState::new("other")));
        drop(StateMachine::open(db.clone(), loaded.clone(), "c").unwrap());
        assert_eq!(serde_json::to_value(&*loaded.read().unwrap()).unwrap(), want);
        // an earlier version's snapshot: the same state, MessagePack as it is
        let mut meta = built.meta.clone();
        meta.last_log_id = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 9));
        let raw = super::super::codec::encode(&*state.read().unwrap()).unwrap();
        *state.write().unwrap() = CellState::new("c");
        sm.install_snapshot(&meta, Box::new(Cursor::new(raw))).await.unwrap();
        want["applied_index"] = 9.into();
        assert_eq!(serde_json::to_value(&*state.read().unwrap()).unwrap(), want);
    }

    /// A snapshot this replica built never replaces a stored one that covers later entries (a
    /// leader's, installed while it was being built); a leader's snapshot always replaces.
    #[test]
    fn an_older_built_snapshot_never_replaces_a_newer_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::log_store::open_db(dir.path()).unwrap();
        let writes = std::sync::Mutex::new(());
        assert!(write_snapshot(&db, &stored(11_080, b"leader"), &writes, Older::Replaces).unwrap());
        assert!(!write_snapshot(&db, &stored(10_732, b"built"), &writes, Older::Yields).unwrap());
        let back = read_snapshot(&db).unwrap().unwrap();
        assert_eq!((back.meta.snapshot_id.as_str(), back.data.as_slice()), ("s11080", b"leader".as_slice()));
        assert_eq!(stored_snapshot_index(&db).unwrap(), Some(11_080));
        // the same index or a later one is written
        assert!(write_snapshot(&db, &stored(11_080, b"again"), &writes, Older::Yields).unwrap());
        assert!(write_snapshot(&db, &stored(12_000, b"later"), &writes, Older::Yields).unwrap());
        // a leader's snapshot is the state from now on, even one that covers fewer entries
        assert!(write_snapshot(&db, &stored(5, b"leader's"), &writes, Older::Replaces).unwrap());
        assert_eq!(stored_snapshot_index(&db).unwrap(), Some(5));
    }
}
