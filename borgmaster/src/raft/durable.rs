//! A leader's own log entries are synced while they replicate (Raft thesis §10.2.1, "the
//! leader can write to its disk in parallel with replicating to the followers"), and nothing
//! reveals them as committed before they are synced.
//!
//! openraft 0.9 sends a leader's new entries to the followers only once its own append reports
//! them flushed. With a synced write there, every replicated apply waited for two fsyncs one
//! after the other: the leader's, then the followers'. So [`super::log_store::LogStore`] writes
//! the leader's own entries unsynced (in RocksDB's WAL: they survive `kill -9`), reports them at
//! once, and a sync of the WAL runs beside the replication (`Durable::sync_in_background`).
//!
//! openraft then counts the leader's copy toward the quorum before it is synced, so an entry may
//! be committed in openraft's eyes while the leader's copy could still be lost to a power cut. That
//! is safe as long as no one learns of the commit before the leader's copy is synced too (etcd's
//! raft does the same: a leader's `Ready` is persisted before the commit it leads to goes out).
//! The commit shows in two places only, and both wait here ([`Durable::wait`]):
//! - applying: the state machine applies an entry (and so answers its proposer, serves reads
//!   of it, builds snapshots with it) only once it is synced;
//! - the followers: an AppendEntries call whose `leader_commit` is not yet synced here waits
//!   before it is sent.
//!
//! A follower's appends are synced before openraft is told (its answer to the leader says they
//! are durable), as every other write of the log is; any synced write also syncs what was
//! written before it, so it settles whatever was pending.
//!
//! A failed sync is final: every waiter gets the error (openraft stops on it, and the replica
//! exits, as with any failed write of the log), and so does every later append.

use std::sync::{Arc, Mutex};

/// What of the log is written but not yet synced. Shared by the log store (which writes and
/// syncs), the state machine and the network (which wait).
#[derive(Default)]
pub struct Durable {
    state: Mutex<State>,
    /// Told whenever `state` changes (pending shrinks or the sync failed).
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// The leader's own entries written unsynced and not yet known synced: indexes
    /// `from ..= to`, and whether any holds commands (the condition of the failpoints
    /// `log-append-sync` and `log-leader-sync`).
    pending: Option<Pending>,
    /// Bumped by every unsynced write: a background sync that began before the last one does
    /// not cover it.
    writes: u64,
    /// Bumped whenever a synced write settles everything: a background sync that began before
    /// does not describe the log any more (it may since have been truncated and written again).
    epoch: u64,
    /// A background sync is running (it loops until nothing is pending).
    syncing: bool,
    /// Why a sync failed; from then on nothing is durable.
    failed: Option<String>,
}

#[derive(Clone, Copy)]
struct Pending {
    from: u64,
    to: u64,
    commands: bool,
}

impl Durable {
    /// Nothing pending: every entry in the store is synced (the log store syncs its WAL when
    /// given this, see [`super::log_store::LogStore::leading_as`]).
    pub fn new() -> Arc<Durable> {
        Arc::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why the log cannot be synced, once a sync failed.
    pub fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Whether the entry at `index` is synced (or its sync failed: `Err`).
    fn is_synced(&self, index: u64) -> Result<bool, String> {
        let s = self.lock();
        if let Some(why) = &s.failed {
            return Err(why.clone());
        }
        Ok(s.pending.is_none_or(|p| index < p.from))
    }

    /// Waits until the entry at `index` is synced.
    ///
    /// Errors: a sync failed (the text says why); the entry never will be.
    pub async fn wait(&self, index: u64) -> Result<(), String> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_synced(index)? {
                return Ok(());
            }
            changed.await;
        }
    }

    /// Records entries `from ..= to` written unsynced (`commands`: some hold commands). Start
    /// their sync with [`Durable::sync_in_background`].
    pub(crate) fn written_unsynced(&self, from: u64, to: u64, commands: bool) {
        let mut s = self.lock();
        s.writes += 1;
        s.pending = Some(match s.pending {
            Some(p) => Pending { from: p.from.min(from), to, commands: p.commands || commands },
            None => Pending { from, to, commands },
        });
    }

    /// Records a synced write of the store: everything written before it is synced too.
    pub(crate) fn synced_all(&self) {
        let mut s = self.lock();
        if s.pending.take().is_some() {
            s.epoch += 1;
            drop(s);
            self.changed.notify_waiters();
        }
    }

    /// Records a failed write or sync of the store: nothing pending will ever be synced.
    pub(crate) fn fail(&self, why: String) {
        self.lock().failed.get_or_insert(why);
        self.changed.notify_waiters();
    }

    /// Syncs `db`'s WAL until nothing is pending, unless a sync is running already (it will
    /// take in what was written meanwhile). On a multi-threaded runtime on the blocking pool;
    /// on a current-thread one (the deterministic simulation) as a task of its own, so that
    /// when it completes is simulated time's, not a real thread's.
    pub(crate) fn sync_in_background(self: &Arc<Self>, db: &Arc<rocksdb::DB>) {
        {
            let mut s = self.lock();
            if s.syncing || s.pending.is_none() || s.failed.is_some() {
                return;
            }
            s.syncing = true;
        }
        let (this, db) = (self.clone(), db.clone());
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                tokio::task::spawn_blocking(move || this.sync_until_settled(&db));
            }
            Ok(_) => {
                tokio::spawn(async move { this.sync_until_settled(&db) });
            }
            Err(_) => this.sync_until_settled(&db),
        }
    }

    fn sync_until_settled(&self, db: &rocksdb::DB) {
        while let Some(began) = self.begin_sync() {
            let synced = sync_wal(db, began.pending.commands);
            self.end_sync(began, synced);
        }
    }

    /// What a sync beginning now covers; `None` (and no sync running any more) when nothing is
    /// pending or a sync failed.
    fn begin_sync(&self) -> Option<Began> {
        let mut s = self.lock();
        match s.pending {
            Some(pending) if s.failed.is_none() => Some(Began { epoch: s.epoch, writes: s.writes, pending }),
            _ => {
                s.syncing = false;
                None
            }
        }
    }

    /// Records how the sync that `began` ended.
    fn end_sync(&self, began: Began, synced: Result<(), std::io::Error>) {
        let mut s = self.lock();
        match synced {
            Ok(()) if s.epoch == began.epoch => {
                if s.writes == began.writes {
                    s.pending = None;
                } else if let Some(p) = &mut s.pending {
                    // written after the sync began: the leader's entries only grow
                    p.from = began.pending.to + 1;
                }
            }
            // a synced write settled everything meanwhile (and what followed it is not ours)
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "syncing the Raft log failed; this replica acknowledges nothing more");
                s.failed.get_or_insert(e.to_string());
            }
        }
        drop(s);
        self.changed.notify_waiters();
    }
}

/// What a background sync covers: the state when it began.
struct Began {
    epoch: u64,
    writes: u64,
    pending: Pending,
}

/// Syncs RocksDB's WAL (everything written so far). `commands`: what it syncs holds commands
/// (the durability tests' failpoint `log-append-sync` fails only those).
///
/// Errors: RocksDB's (a failed fsync).
fn sync_wal(db: &rocksdb::DB, commands: bool) -> Result<(), std::io::Error> {
    // the durability tests' failed fsync of entries holding commands
    // (`FAILPOINTS=log-append-sync=return`), as an fsync returning EIO
    fail::fail_point!("log-append-sync", commands, |_| {
        tracing::error!("failpoint log-append-sync: the sync of the log fails");
        Err(std::io::Error::other("failpoint log-append-sync: fsync failed (EIO)"))
    });
    // the durability tests' slow sync of a leader's own entries holding commands
    // (`FAILPOINTS=log-leader-sync=sleep(1000)`): followers must not learn of the commit first
    fail::fail_point!("log-leader-sync", commands, |_| {
        Err(std::io::Error::other("failpoint log-leader-sync: fsync failed (EIO)"))
    });
    db.flush_wal(true).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_entries_are_not_synced_until_a_sync_or_a_synced_write_settles_them() {
        let d = Durable::new();
        assert_eq!(d.is_synced(5), Ok(true));
        d.written_unsynced(6, 8, true);
        assert_eq!(d.is_synced(5), Ok(true));
        assert_eq!(d.is_synced(6), Ok(false));
        assert_eq!(d.is_synced(8), Ok(false));
        d.written_unsynced(9, 9, false);
        assert_eq!(d.is_synced(9), Ok(false));
        d.synced_all();
        assert_eq!(d.is_synced(9), Ok(true));
    }

    #[test]
    fn a_background_sync_covers_what_was_written_before_it_began() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::log_store::open_db(dir.path()).unwrap();
        let d = Durable::new();
        d.written_unsynced(1, 3, true);
        // no runtime: the sync runs inline
        d.sync_in_background(&db);
        assert_eq!(d.is_synced(3), Ok(true));
        assert!(!d.lock().syncing);
    }

    #[test]
    fn a_sync_covers_only_what_was_written_before_it_began() {
        let d = Durable::new();
        d.written_unsynced(1, 3, false);
        let began = d.begin_sync().unwrap();
        d.written_unsynced(4, 5, false);
        d.end_sync(began, Ok(()));
        assert_eq!(d.is_synced(3), Ok(true));
        assert_eq!(d.is_synced(4), Ok(false));
        let began = d.begin_sync().unwrap();
        d.end_sync(began, Ok(()));
        assert_eq!(d.is_synced(5), Ok(true));
        assert!(d.begin_sync().is_none());
    }

    #[test]
    fn a_sync_that_began_before_a_synced_write_does_not_settle_what_followed_it() {
        let d = Durable::new();
        d.written_unsynced(1, 3, false);
        let began = d.begin_sync().unwrap();
        // a truncation (synced) then an entry written again, unsynced, by a new term
        d.synced_all();
        d.written_unsynced(2, 2, false);
        d.end_sync(began, Ok(()));
        assert_eq!(d.is_synced(2), Ok(false));
        assert_eq!(d.is_synced(1), Ok(true));
    }

    #[test]
    fn a_failed_sync_is_final() {
        let d = Durable::new();
        d.written_unsynced(1, 1, true);
        let began = d.begin_sync().unwrap();
        d.end_sync(began, Err(std::io::Error::other("EIO")));
        assert_eq!(d.is_synced(1), Err("EIO".into()));
        assert_eq!(d.is_synced(0), Err("EIO".into()));
        d.synced_all();
        assert!(d.failed().is_some());
        assert!(d.begin_sync().is_none());
    }

    #[tokio::test]
    async fn waiters_wake_when_synced_and_fail_when_the_sync_fails() {
        let d = Durable::new();
        d.written_unsynced(1, 1, true);
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait(1).await }
        });
        tokio::task::yield_now().await;
        d.synced_all();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        d.written_unsynced(2, 2, true);
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait(2).await }
        });
        tokio::task::yield_now().await;
        d.fail("EIO".into());
        assert_eq!(waiter.await.unwrap(), Err("EIO".into()));
        assert_eq!(d.is_synced(1), Err("EIO".into()));
    }
}
