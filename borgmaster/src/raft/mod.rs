//! Replication of the cell state with openraft 0.9 (Borg §3.1: the Borgmaster is replicated; each
//! replica keeps the cell state in memory and records it durably; one elected leader mutates it).
//!
//! - [`log_store`]: the Raft log, vote and committed index in RocksDB (synced writes).
//! - [`durable`]: a leader's own entries sync while they replicate; nothing reveals them
//!   committed before (Raft thesis §10.2.1).
//! - [`state_machine`]: applies committed [`Group`]s to the in-memory [`CellState`]; snapshots are
//!   Borg-style checkpoints (the whole state as JSON) kept in the same RocksDB.
//! - [`membership`]: adding replicas through learner and catch-up, and forcing the voters after
//!   a quorum is lost.
//! - [`network`]: openraft's RPCs over tonic (`borg.v1.Raft`), client and server side, served on
//!   the same listener as the Borgmaster API.
//! - [`election`]: a follower stands for election as soon as its silent leader is known to be
//!   gone (it does not answer, or no longer leads), instead of waiting out openraft's timer.
//!
//! Nothing outside this module knows about openraft's traits; the master proposes [`Group`]s with
//! `client_write` and reads the state through the shared lock.

// openraft's traits fix the error types (StorageError, RaftError: 200+ bytes); the helpers here
// return them as they are rather than boxing and unboxing at every trait boundary.
#![allow(clippy::result_large_err)]

/// Histogram: wall time of applying one committed log entry to the cell state (the state's
/// write lock is held that long), seconds. Described with the other metrics in `crate::metrics`.
pub const APPLY_SECONDS: &str = "borg_state_apply_duration_seconds";

pub mod codec;
pub mod durable;
pub mod election;
pub mod group;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod state_machine;

pub use group::{Leadership, RaftStatus};

use crate::state::{ApplyOutcome, CellState, CommandError, Entry, Event};
use openraft::BasicNode;
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

openraft::declare_raft_types!(
    /// The master group's openraft types: node ids are the `--id` numbers (u64), nodes are their
    /// gRPC addresses, and a log entry's application data is a [`Group`] of commands.
    pub TypeConfig:
        D = Group,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The Raft handle of a Borgmaster replica.
pub type BorgRaft = openraft::Raft<TypeConfig>;

/// A replica id (`--id`).
pub type NodeId = u64;

/// One Raft log entry's payload: the commands committed together (group commit), each with the
/// time the leader accepted it. Applied in order; a rejected command changes nothing and does not
/// stop the ones after it.
///
/// The commands are shared, not copied, when openraft clones the entry: the log store keeps
/// recent entries in memory and hands out clones to replication (once per follower) and to the
/// state machine; deep copies of every job spec in them were about 3% of the replicas' CPU
/// under `replbench throughput --concurrency 64`. Encoded as a plain sequence of commands.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    /// The commands, in proposal order.
    pub entries: Arc<[Entry]>,
}

impl Group {
    /// A group of `entries`, in this order.
    pub fn new(entries: Vec<Entry>) -> Group {
        Group { entries: entries.into() }
    }
}

impl std::fmt::Display for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "group of {} commands", self.entries.len())
    }
}

/// The result of applying one command: its outcome and events, or why it was rejected.
pub type CommandResult = Result<(ApplyOutcome, Vec<Event>), CommandError>;

/// What applying a [`Group`] returned on this replica: one result per command, in order (empty for
/// blank and membership entries).
///
/// Only the replica that applied it reads it (openraft hands it to the `client_write` caller on
/// the leader); it never crosses the network, so it serializes as nothing.
#[derive(Debug, Default)]
pub struct Applied(pub Vec<CommandResult>);

impl serde::Serialize for Applied {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for Applied {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Applied::default())
    }
}

/// Parses `--peers`: `1=host:port,2=host:port,...` into id -> address.
///
/// Errors: an item without `=`, an id that is not a positive integer, an empty address, or an id
/// given twice; the message quotes the item.
pub fn parse_peers(s: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item.split_once('=').ok_or_else(|| format!("{item:?}: expected ID=HOST:PORT"))?;
        let id: NodeId = id.trim().parse().map_err(|_| format!("{item:?}: the id must be a positive integer"))?;
        if id == 0 {
            return Err(format!("{item:?}: ids start at 1"));
        }
        let addr = addr.trim();
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!("{item:?}: expected ID=HOST:PORT"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("{item:?}: id {id} is given twice"));
        }
    }
    Ok(out)
}

/// openraft settings for a master group.
///
/// `election_timeout` (borgmaster's `--election-timeout`, default 300 ms) sets the timing:
/// - each follower picks an election timeout at random between it and twice it; openraft 0.9
///   lets a follower that knows a leader stand only after that leader's lease (twice the
///   timeout) *plus* its own timeout without a heartbeat: 900-1,200 ms with the default (a
///   follower whose leader is known gone stands after the lease: [`election`]);
/// - the leader sends heartbeats every two thirds of it (200 ms with the default, at least
///   50 ms). openraft also gives up on any AppendEntries call after one heartbeat interval, so
///   this is how long a follower may take to receive, fsync and acknowledge a payload: at a
///   third of the timeout (100 ms), a follower sharing 2 cores with 10,000 hollow Borglets fell
///   behind, every retry of its backlog timed out again, and it stood for election (three
///   needless elections while loading the trace's workload).
///
/// With the default a dead leader is replaced in about a second (failover p99 <= 2 s).
///
/// A snapshot is taken every `snapshot_every` log entries; up to `snapshot_every` entries (at
/// most 1,000) are kept after it for followers that lag a little, older ones are purged (a
/// follower further behind gets the snapshot), in batches of at most 256.
///
/// Errors: openraft's validation (only with nonsensical numbers).
pub fn config(snapshot_every: u64, election_timeout: Duration) -> Result<openraft::Config, openraft::ConfigError> {
    let election_ms = (election_timeout.as_millis() as u64).max(150);
    openraft::Config {
        cluster_name: "borgmaster".into(),
        heartbeat_interval: (election_ms * 2 / 3).max(50),
        election_timeout_min: election_ms,
        election_timeout_max: election_ms * 2,
        install_snapshot_timeout: 10_000,
        // Chunks of 16 MiB, not openraft's 3 MiB: each chunk is a round trip through both
        // replicas' runtimes, and on a leader busy polling 10,000 machines each took ~80 ms, so
        // a 281 MB snapshot (1,000,000 tasks, before snapshots were compressed: 5 MB now) spent
        // 7 s in transit in 3 MiB chunks. A chunk fits in one HTTP/2 stream window
        // (borg_rpc::server::STREAM_WINDOW_BYTES).
        snapshot_max_chunk_size: u64::from(borg_rpc::server::STREAM_WINDOW_BYTES),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every.max(1)),
        max_in_snapshot_log_to_keep: snapshot_every.clamp(1, 1000),
        purge_batch_size: snapshot_every.clamp(1, 256),
        // openraft bounds each AppendEntries call by the heartbeat interval: keep payloads
        // small enough to be sent, fsynced and answered in that time on a busy host. An entry
        // holds at most about MAX_GROUP_WEIGHT (2,000) task records (placements and task
        // reports come in commands of at most COMMAND_CHUNK), so a call carries at most about
        // 8,000; with 16 entries per call, a 100,000-task pass made calls of 32,000 records
        // that timed out on followers of a 2-core host with 10,000 hollow machines (elections
        // while loading, scripts/bench-million)
        max_payload_entries: 4,
        ..Default::default()
    }
    .validate()
}

/// Opens this replica's Raft store under `data_dir/raft` and starts its Raft node, with the
/// timing of [`config`] for `election_timeout`.
///
/// Returns the handle and the cell state the state machine keeps (loaded from the last snapshot;
/// openraft then replays the committed log after it). `cell` names the cell when the store is
/// new.
///
/// Errors: the store cannot be opened or its snapshot does not decode; openraft refused the
/// configuration or could not read its log.
pub async fn open(
    id: NodeId,
    data_dir: &Path,
    cell: &str,
    snapshot_every: u64,
    election_timeout: Duration,
) -> anyhow::Result<(BorgRaft, Arc<RwLock<CellState>>)> {
    let db = log_store::open_db(&data_dir.join("raft"))?;
    start(id, db, cell, config(snapshot_every, election_timeout)?, network::Network::default()).await
}

/// Starts replica `id`'s Raft node over the store `db` (from [`log_store::open_db`]) with
/// openraft settings `config`, reaching its peers through `network`: what [`open`] does, and
/// what the deterministic simulation (tests/tests/simulation.rs) does with its own timing and
/// simulated network.
///
/// Errors: as [`open`]'s.
pub async fn start(
    id: NodeId,
    db: Arc<rocksdb::DB>,
    cell: &str,
    config: openraft::Config,
    network: network::Network,
) -> anyhow::Result<(BorgRaft, Arc<RwLock<CellState>>)> {
    let state = Arc::new(RwLock::new(CellState::new(cell)));
    // the leader's own entries sync while they replicate; applying them, and telling the
    // followers they are committed, wait for that sync (durable.rs)
    let durable = durable::Durable::new();
    let sm = state_machine::StateMachine::open(db.clone(), state.clone(), cell)?.applying_synced(durable.clone());
    let log = log_store::LogStore::new(db)
        .waiting_for_installs(sm.installing())
        .leading_as(id, durable.clone())
        .map_err(|e| anyhow::anyhow!("syncing the Raft store's WAL: {e}"))?;
    let raft = openraft::Raft::new(id, Arc::new(config), network.committing_synced(durable), log, sm).await?;
    Ok((raft, state))
}

/// Asks the replica at `address` for its status, waiting at most `timeout`.
///
/// Errors: it did not answer (down, cut off, not a Borgmaster).
pub async fn peer_status(address: &str, timeout: Duration) -> Result<borg_proto::ReplicaStatus, String> {
    peer_status_over(&network::Network::default(), address, timeout).await
}

/// [`peer_status`] over `network` (the deterministic simulation's dials over its own).
///
/// Errors: as [`peer_status`]'s.
pub async fn peer_status_over(
    network: &network::Network,
    address: &str,
    timeout: Duration,
) -> Result<borg_proto::ReplicaStatus, String> {
    let mut client = network.client(address).map_err(|e| e.to_string())?;
    let mut req = tonic::Request::new(borg_proto::ReplicaStatusRequest {});
    req.set_timeout(timeout);
    match tokio::time::timeout(timeout, client.status(req)).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(s.message().to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Whether this replica's store is empty: never part of a group, no term, no vote, no log (a
/// new replica, or one whose data dir was wiped or lost).
pub async fn store_is_empty(raft: &BorgRaft) -> anyhow::Result<bool> {
    let m = raft.metrics().borrow().clone();
    Ok(!raft.is_initialized().await? && m.current_term == 0 && m.last_log_index.is_none())
}

/// Raft's safety needs durable votes (Raft §5.2, "Persistent state on all servers"): a replica
/// that voted in a term and then lost its data dir could vote again in that term, for another
/// candidate, and elect a second leader. So a replica that starts with an empty store, in a
/// group with `peers`, asks them before it takes part (its Raft service refuses votes and
/// entries meanwhile):
///
/// - the newest membership configuration the answering peers know (ordered by log id) lists
///   this replica's id as a voter: the store was lost. Refused, with what to do (restore the
///   dir, or remove the replica and add it back as a new member, which is safe: a replica that
///   is not a voter has no vote to remember);
/// - it does not list it, and its peer has applied it: a new replica, waiting to be added (a
///   lagging peer that still lists a removed replica is outvoted by the newer configuration);
/// - every peer answered that it belongs to no group: the group's first start.
///
/// Until one of these is known (peers down) it keeps asking, every 500 ms. Returns at once for
/// a replica with a store, or without peers (a group of one).
///
/// Errors: the store was lost (the message says what to do), or the store could not be read.
pub async fn check_store_not_lost(
    raft: &BorgRaft,
    id: NodeId,
    data_dir: &Path,
    peers: &BTreeMap<NodeId, String>,
) -> anyhow::Result<()> {
    if peers.is_empty() || !store_is_empty(raft).await? {
        return Ok(());
    }
    let mut said = false;
    loop {
        let mut statuses = Vec::new();
        for (peer, addr) in peers.iter().filter(|(p, _)| **p != id) {
            if let Ok(s) = peer_status(addr, Duration::from_secs(1)).await {
                statuses.push((*peer, s));
            }
        }
        match store_lost_verdict(id, peers.len() - 1, &statuses) {
            StoreVerdict::Lost(peer) => anyhow::bail!(
                "replica {id}'s data dir {} is empty, but replica {peer} lists replica {id} as a voter of the master group: \
                 it has lost the votes and entries it stored, and must not vote as if it remembered them. \
                 Restore the data dir from its disk, or make it a new member: `borgctl replicas remove {id}`, \
                 start it again with the empty data dir, then `borgctl replicas add {id} {}`",
                data_dir.display(),
                peers.get(&id).map_or("HOST:PORT", String::as_str),
            ),
            StoreVerdict::NotAVoter => return Ok(()),
            StoreVerdict::Unknown => {}
        }
        if !said {
            tracing::info!(id, "empty data dir: waiting for a peer to say whether this replica was a voter");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What the peers' answers say about a replica that started with an empty store.
#[derive(Debug, PartialEq, Eq)]
enum StoreVerdict {
    /// The newest membership configuration any peer knows lists it as a voter (this peer's).
    Lost(NodeId),
    /// It is not a voter: a new member, or the group's first start.
    NotAVoter,
    /// Not known yet (peers down, or the newest configuration not applied yet): ask again.
    Unknown,
}

/// The verdict of [`check_store_not_lost`] from the answers of the peers that answered, out of
/// `others` peers. Configurations are ordered by their log id, so the newest one decides: a
/// lagging peer (paused, cut off, or simply a heartbeat behind) may still list a voter that a
/// `borgctl replicas remove` took out, and must not make the removed replica refuse to start
/// as a new member. The newest one counts as "not a voter" only once its peer has applied it
/// (an uncommitted configuration may still be truncated); one that lists the replica counts at
/// once (refusing is the safe side). Every peer answered and none is initialized: the group's
/// first start.
fn store_lost_verdict(id: NodeId, others: usize, statuses: &[(NodeId, borg_proto::ReplicaStatus)]) -> StoreVerdict {
    let newest = statuses
        .iter()
        .filter(|(_, s)| s.initialized)
        .max_by_key(|(_, s)| (s.membership_term, s.membership_index, s.voters.contains(&id)));
    match newest {
        Some((peer, s)) if s.voters.contains(&id) => StoreVerdict::Lost(*peer),
        Some((_, s)) if s.membership_index <= s.last_applied_index => StoreVerdict::NotAVoter,
        Some(_) => StoreVerdict::Unknown,
        None if statuses.len() == others => StoreVerdict::NotAVoter,
        None => StoreVerdict::Unknown,
    }
}

/// Forms the master group on its very first start; does nothing for a replica whose store
/// already belongs to a group.
///
/// - No `peers`: a group of one (this replica at `address`), as the dev cell runs.
/// - With `peers`, only the replica with the lowest id forms the group, and only once every
///   other peer has answered that it belongs to none and is ready (done with
///   [`check_store_not_lost`], so that it cannot take the new group for one it lost). If any
///   peer already belongs to a group (a replica that lost its disk is restarting), nobody forms
///   one: the group's leader replicates
///   to this replica (from a snapshot when its log was purged). Other replicas wait for the
///   leader, as do replicas added later with `borgctl replicas add`.
///
/// Retries every 500 ms until the group exists. Errors: openraft refused to initialize.
pub async fn bootstrap(
    raft: &BorgRaft,
    id: NodeId,
    address: &str,
    peers: &BTreeMap<NodeId, String>,
) -> anyhow::Result<()> {
    if raft.is_initialized().await? {
        return Ok(());
    }
    if peers.is_empty() {
        raft.initialize(BTreeMap::from([(id, BasicNode::new(address))])).await?;
        return Ok(());
    }
    if peers.keys().next() != Some(&id) {
        tracing::info!(id, "new replica: waiting for the group's leader to replicate to it");
        return Ok(());
    }
    loop {
        if raft.is_initialized().await? {
            return Ok(());
        }
        let mut all_fresh = true;
        for (peer, addr) in peers.iter().filter(|(p, _)| **p != id) {
            match peer_status(addr, Duration::from_secs(1)).await {
                Ok(s) if s.initialized => {
                    tracing::info!(id, peer, "the master group exists already: waiting for its leader");
                    return Ok(());
                }
                // a peer still asking whether it lost its store: forming the group now would
                // make it see itself a voter of a group it never joined
                Ok(s) if !s.ready => {
                    tracing::info!(peer, "waiting for the peer to finish its empty-store check");
                    all_fresh = false;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(peer, address = %addr, error = %e, "waiting for every replica before forming the group");
                    all_fresh = false;
                }
            }
        }
        if all_fresh {
            let members: BTreeMap<NodeId, BasicNode> =
                peers.iter().map(|(p, a)| (*p, BasicNode::new(a.as_str()))).collect();
            tracing::info!(?members, "forming the master group");
            raft.initialize(members).await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(voters: &[u64], membership: (u64, u64), applied: u64) -> borg_proto::ReplicaStatus {
        borg_proto::ReplicaStatus {
            initialized: !voters.is_empty(),
            voters: voters.to_vec(),
            membership_term: membership.0,
            membership_index: membership.1,
            last_applied_index: applied,
            ..Default::default()
        }
    }

    /// A replica removed from the group and restarted empty is a new member even while a
    /// lagging peer still lists it; one that the newest configuration lists lost its store;
    /// an unapplied newest configuration, or no answer, is not yet a verdict.
    #[test]
    fn the_newest_membership_decides_whether_an_empty_replica_lost_its_store() {
        use StoreVerdict::*;
        let removed = peer(&[2, 3], (4, 120), 121);
        let lagging = peer(&[1, 2, 3], (3, 80), 119);
        assert_eq!(store_lost_verdict(1, 2, &[(2, lagging.clone()), (3, removed.clone())]), NotAVoter);
        assert_eq!(store_lost_verdict(1, 2, &[(2, lagging.clone())]), Lost(2));
        // re-added after the removal: the newest lists it
        let readded = peer(&[1, 2, 3], (4, 130), 131);
        assert_eq!(store_lost_verdict(1, 2, &[(2, removed.clone()), (3, readded)]), Lost(3));
        // the removal is not applied anywhere yet: wait
        let unapplied = peer(&[2, 3], (4, 120), 110);
        assert_eq!(store_lost_verdict(1, 2, &[(2, unapplied)]), Unknown);
        // the group's first start: every peer answered, none initialized
        let fresh = peer(&[], (0, 0), 0);
        assert_eq!(store_lost_verdict(1, 2, &[(2, fresh.clone()), (3, fresh.clone())]), NotAVoter);
        assert_eq!(store_lost_verdict(1, 2, &[(2, fresh)]), Unknown);
        assert_eq!(store_lost_verdict(1, 2, &[]), Unknown);
        // a peer of an earlier version (no membership log id) that lists it: refused
        let old = peer(&[1, 2, 3], (0, 0), 50);
        assert_eq!(store_lost_verdict(1, 2, &[(2, old)]), Lost(2));
    }

    /// Groups submitted one after the other apply in that order although nobody waits for one
    /// before submitting the next (the committer relies on it: a pass's evictions before its
    /// placements, a Borglet's reports in the order observed): fifty updates of one job, each
    /// expecting the version the one before produced, all succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn submitted_groups_apply_in_submission_order() {
        use crate::state::{ApplyOutcome, Command, Entry};
        let dir = tempfile::tempdir().unwrap();
        let (raft, state) = open(1, dir.path(), "t", 10_000, Duration::from_millis(300)).await.unwrap();
        bootstrap(&raft, 1, "127.0.0.1:1", &BTreeMap::new()).await.unwrap();
        raft.wait(Some(Duration::from_secs(10)))
            .state(openraft::ServerState::Leader, "single replica leads")
            .await
            .unwrap();
        let apply = |v: u64| {
            let mut spec = crate::state::fixtures::spec("j", 1);
            spec.command = vec!["sleep".into(), format!("{v}")];
            Group::new(vec![Entry { time_ms: 0, command: Command::ApplyJob { spec, expected_version: Some(v) } }])
        };
        let mut outcomes = Vec::new();
        for v in 0..50 {
            outcomes.push(group::submit(&raft, apply(v)).await.unwrap());
        }
        for (v, outcome) in outcomes.into_iter().enumerate() {
            let results = outcome.await.unwrap();
            assert!(
                matches!(results.as_slice(), [Ok((ApplyOutcome::Created(1) | ApplyOutcome::Updated(_), _))]),
                "update {v}: {results:?}"
            );
        }
        assert_eq!(state.read().unwrap().jobs["j"].version, 50);
        raft.shutdown().await.unwrap();
    }

    #[test]
    fn peers_parse_and_refuse_with_the_item() {
        let p = parse_peers("1=a:1, 2=b:2,3=c:3").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[&2], "b:2");
        assert!(parse_peers("1=a:1,1=b:2").unwrap_err().contains("given twice"));
        assert!(parse_peers("x=a:1").unwrap_err().contains("\"x=a:1\""));
        assert!(parse_peers("0=a:1").unwrap_err().contains("start at 1"));
        assert!(parse_peers("2=nohost").unwrap_err().contains("HOST:PORT"));
    }

    #[test]
    fn election_timeout_sets_the_random_range_and_the_heartbeats() {
        let c = config(100, Duration::from_millis(300)).unwrap();
        assert_eq!((c.heartbeat_interval, c.election_timeout_min, c.election_timeout_max), (200, 300, 600));
        let c = config(100, Duration::from_secs(1)).unwrap();
        assert_eq!((c.heartbeat_interval, c.election_timeout_min, c.election_timeout_max), (666, 1000, 2000));
        // too short to be sane: floored
        let c = config(100, Duration::from_millis(10)).unwrap();
        assert_eq!((c.heartbeat_interval, c.election_timeout_min), (100, 150));
    }

    #[test]
    fn applied_never_crosses_the_wire() {
        let a = Applied(vec![Err(CommandError::NoSuchJob("j".into()))]);
        assert_eq!(serde_json::to_string(&a).unwrap(), "null");
        let back: Applied = serde_json::from_str("null").unwrap();
        assert!(back.0.is_empty());
    }
}
