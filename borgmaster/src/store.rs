//! Durable storage of the cell state in RocksDB: a log of [`Entry`]s plus a checkpoint.
//!
//! Every command is appended to the log with a synced write before it is applied, so an
//! acknowledged change survives `kill -9` and power loss. Every [`CHECKPOINT_EVERY`] entries the
//! whole state is written as a checkpoint and the log up to it is deleted, in one atomic batch
//! (Borg §3.1: checkpoints are periodic snapshots plus a change log). On start, [`Store::load`]
//! reads the checkpoint and replays the log after it.
//!
//! Keys: `checkpoint` -> JSON [`CellState`]; `log/<index as 8 big-endian bytes>` -> JSON [`Entry`].

use crate::state::{CellState, Entry};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::path::{Path, PathBuf};

/// Log entries between checkpoints (a checkpoint writes the whole state).
pub const CHECKPOINT_EVERY: u64 = 10_000;

const CHECKPOINT_KEY: &[u8] = b"checkpoint";
const LOG_PREFIX: &[u8] = b"log/";

/// A storage failure: which operation, on which directory, and RocksDB's or serde's message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed.
    #[error("{op} in {dir}: {source}")]
    Db {
        /// What was being done (open, append entry 12, checkpoint, ...).
        op: String,
        /// Data directory.
        dir: PathBuf,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// A stored record does not decode: the data directory is damaged or from another version.
    #[error("{what} in {dir} does not decode: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Data directory.
        dir: PathBuf,
        /// serde's error.
        source: serde_json::Error,
    },
}

/// The master's RocksDB database.
pub struct Store {
    db: DB,
    dir: PathBuf,
}

fn log_key(index: u64) -> Vec<u8> {
    let mut k = LOG_PREFIX.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

impl Store {
    /// Opens (creating if needed) the database under `dir`.
    ///
    /// Errors: [`StoreError::Db`] when RocksDB cannot open it (permissions, another process holds
    /// the lock, damaged files).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db =
            DB::open(&opts, dir).map_err(|source| StoreError::Db { op: "open".into(), dir: dir.into(), source })?;
        Ok(Store { db, dir: dir.to_path_buf() })
    }

    fn db_err(&self, op: String) -> impl FnOnce(rocksdb::Error) -> StoreError + '_ {
        move |source| StoreError::Db { op, dir: self.dir.clone(), source }
    }

    fn corrupt(&self, what: String) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
        move |source| StoreError::Corrupt { what, dir: self.dir.clone(), source }
    }

    /// One synced write of `batch`.
    fn write_synced(&self, batch: WriteBatch, op: String) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(self.db_err(op))
    }

    /// Rebuilds the state: the checkpoint (or an empty cell named `cell`), then every log entry
    /// after it, in index order. Entries that were rejected when first applied are rejected again
    /// and change nothing.
    ///
    /// Errors: a read failure, or a record that does not decode.
    pub fn load(&self, cell: &str) -> Result<CellState, StoreError> {
        let mut state = match self.db.get(CHECKPOINT_KEY).map_err(self.db_err("read checkpoint".into()))? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(self.corrupt("checkpoint".into()))?,
            None => CellState::new(cell),
        };
        state.reindex();
        let start = log_key(state.applied_index + 1);
        for item in self.db.iterator(IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item.map_err(self.db_err("read log".into()))?;
            if !k.starts_with(LOG_PREFIX) {
                break;
            }
            let index = u64::from_be_bytes(k[LOG_PREFIX.len()..].try_into().unwrap_or([0; 8]));
            let entry: Entry = serde_json::from_slice(&v).map_err(self.corrupt(format!("log entry {index}")))?;
            let _ = state.apply(&entry);
            state.applied_index = index;
        }
        Ok(state)
    }

    /// Appends entry `index` with a synced write; when this returns Ok the entry is durable.
    ///
    /// Errors: the write failed; the entry is then not in the log.
    pub fn append(&self, index: u64, entry: &Entry) -> Result<(), StoreError> {
        self.append_all(index, std::slice::from_ref(entry))
    }

    /// Appends `entries` as indexes `first`, `first + 1`, ... in one synced write (group
    /// commit: one fsync however many entries). When this returns Ok all of them are durable;
    /// on error none is.
    pub fn append_all(&self, first: u64, entries: &[Entry]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (i, entry) in entries.iter().enumerate() {
            let index = first + i as u64;
            let bytes = serde_json::to_vec(entry).map_err(self.corrupt(format!("log entry {index}")))?;
            batch.put(log_key(index), bytes);
        }
        let last = first + entries.len() as u64 - 1;
        self.write_synced(batch, format!("append log entries {first}..={last}"))
    }

    /// Writes `state` as the checkpoint and deletes the log up to `state.applied_index`, in one
    /// synced batch.
    ///
    /// Errors: the write failed; the previous checkpoint and the log are then unchanged.
    pub fn checkpoint(&self, state: &CellState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).map_err(self.corrupt("checkpoint".into()))?;
        let mut batch = WriteBatch::default();
        batch.put(CHECKPOINT_KEY, bytes);
        batch.delete_range(log_key(0), log_key(state.applied_index + 1));
        self.write_synced(batch, format!("checkpoint at {}", state.applied_index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;

    fn kill(name: &str) -> Entry {
        Entry { time_ms: 5, command: Command::KillJob { name: name.into() } }
    }

    fn register(id: &str) -> Entry {
        use crate::state::{Machine, MachineState};
        let machine = Machine {
            id: scheduler_core::MachineId(id.into()),
            address: "a:1".into(),
            capacity: scheduler_core::Resources::new(1000, 1 << 30, 0),
            attributes: Default::default(),
            state: MachineState::Up,
            registered_ms: 0,
        };
        Entry { time_ms: 7, command: Command::RegisterMachine { machine } }
    }

    #[test]
    fn log_and_checkpoint_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut expected = CellState::new("c");
        {
            let store = Store::open(dir.path()).unwrap();
            for (i, e) in [register("m1"), kill("nope"), register("m2")].iter().enumerate() {
                store.append(i as u64 + 1, e).unwrap();
                let _ = expected.apply(e);
                expected.applied_index = i as u64 + 1;
            }
            assert_eq!(store.load("c").unwrap(), expected);
            store.checkpoint(&expected).unwrap();
            store.append(4, &register("m3")).unwrap();
            let _ = expected.apply(&register("m3"));
            expected.applied_index = 4;
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load("ignored").unwrap();
        assert_eq!(loaded, expected);
        assert_eq!(loaded.machines.len(), 3);
        assert_eq!(loaded.cell, "c");
        // the checkpoint deleted the log entries it covers
        assert!(store.db.get(log_key(1)).unwrap().is_none());
        assert!(store.db.get(log_key(4)).unwrap().is_some());
    }

    #[test]
    fn a_damaged_entry_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.db.put(log_key(1), b"{not json").unwrap();
        let err = store.load("c").unwrap_err();
        assert!(err.to_string().contains("log entry 1 in"), "{err}");
    }
}
