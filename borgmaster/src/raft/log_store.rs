//! The Raft log in RocksDB (openraft's `RaftLogStorage`).
//!
//! One RocksDB database per replica (`<data-dir>/raft`), two column families:
//! - `log`: key = log index as 8 big-endian bytes (so keys sort by index), value = JSON of the
//!   openraft entry.
//! - `meta`: `vote`, `committed`, `last_purged` (JSON of openraft's types) and `snapshot` (see
//!   `state_machine`).
//!
//! Every append, truncation and vote is one synced write: when openraft is told an entry is
//! flushed, it survives `kill -9` and power loss, so a quorum's acknowledgement really is durable.

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

/// One synced write of `batch`.
pub(crate) fn write_synced(db: &DB, batch: WriteBatch) -> Result<(), rocksdb::Error> {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo)
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The replica's Raft log, vote and committed log id.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

impl LogStore {
    /// The log in `db` (from [`open_db`]).
    pub fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> StorageResult<Option<T>> {
        let cf = cf(&self.db, CF_META)?;
        match self.db.get_cf(cf, key).map_err(|e| StorageIOError::read(&e))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StorageIOError::read(&e).into()),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), StorageIOError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(|e| StorageIOError::write(&e))?;
        let cf = cf(&self.db, CF_META).map_err(|e| StorageIOError::write(&std::io::Error::other(e.to_string())))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key, bytes);
        write_synced(&self.db, batch).map_err(|e| StorageIOError::write(&e))
    }

    fn decode(index: u64, bytes: &[u8]) -> StorageResult<Entry<TypeConfig>> {
        serde_json::from_slice(bytes).map_err(|e| {
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
        self.put_meta("vote", vote).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        Ok(self.put_meta("committed", &committed)?)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(cf, index_key(entry.log_id.index), bytes);
        }
        // The write happens before openraft is told; a failure is reported both ways.
        let db = self.db.clone();
        let result = tokio::task::block_in_place(|| write_synced(&db, batch));
        match result {
            Ok(()) => {
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
        write_synced(&self.db, batch).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let bytes = serde_json::to_vec(&log_id).map_err(|e| StorageIOError::write(&e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, "last_purged", bytes);
        batch.delete_range_cf(cf(&self.db, CF_LOG)?, index_key(0), index_key(log_id.index.saturating_add(1)));
        write_synced(&self.db, batch).map_err(|e| StorageIOError::write_logs(&e).into())
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

    /// openraft's own conformance suite for log stores and state machines, on real RocksDB.
    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(Builder).unwrap();
    }
}
