//! Changing the master group's members without ever leaving it unwritable.
//!
//! Raft changes membership through a joint configuration: while it is in force, every write
//! needs a majority of the old voters *and* of the new ones. A voter added before it can answer
//! (a typo in its address, a replica not started yet) therefore stalls every write of a small
//! group for good: in a group of one, `{1}` -> `{1, 9}` needs 9. So:
//!
//! - [`add_voter`] first asks the address for its status (it must answer, as a Borgmaster
//!   replica with that id), adds it as a **learner** (learners never count for a quorum), waits
//!   until it has caught up with the leader's log, and only then promotes it. A learner that does
//!   not catch up within the deadline is removed again, and the error says what happened and that
//!   nothing changed.
//! - Removing a learner, or a voter while a quorum of the rest answers, is an ordinary change
//!   (`borgctl replicas remove`).
//! - After a quorum is lost for good, [`force_voters`] (`borgmaster --force-voters`, offline, on
//!   each surviving replica) rewrites the local log: it drops the entries that were never
//!   committed (a stuck joint configuration among them) and appends a configuration of just
//!   the surviving voters. Like etcd's `--force-new-cluster`, it may lose writes that a lost
//!   quorum had committed but no survivor held.

use super::log_store::{cf, write_synced, CF_LOG, CF_META};
use super::{BorgRaft, NodeId, TypeConfig};
use openraft::{BasicNode, ChangeMembers, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Why a replica was not added. In every case the group's voters are as they were.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// Nothing that answers as a Borgmaster replica is at the address.
    #[error(
        "replica {id} at {address} does not answer ({why}); start it first (`borgmaster --id {id} --peers ... --listen \
         {address}`), then add it; nothing changed"
    )]
    Unreachable {
        /// The replica id asked for.
        id: NodeId,
        /// The address given.
        address: String,
        /// What the status call returned.
        why: String,
    },
    /// The replica at the address has another `--id`.
    #[error("the Borgmaster at {address} is replica {actual}, not {id}; nothing changed")]
    WrongId {
        /// The replica id asked for.
        id: NodeId,
        /// The address given.
        address: String,
        /// The id it answered with.
        actual: NodeId,
    },
    /// It stayed a learner and did not catch up in time; it was removed again.
    #[error(
        "replica {id} at {address} did not catch up with the leader's log within {} s (it had {matched} of {target} \
         entries); it was removed again and the voters are unchanged; check its log and try again",
        waited.as_secs()
    )]
    NotCaughtUp {
        /// The replica id.
        id: NodeId,
        /// Its address.
        address: String,
        /// How long it was given.
        waited: Duration,
        /// The last log index it had.
        matched: u64,
        /// The leader's last log index when it was added.
        target: u64,
    },
    /// openraft refused a step (another change under way, not the leader, ...).
    #[error("membership change refused: {0}")]
    Refused(String),
}

/// Adds replica `id` at `address` as a voter, through learner and catch-up; gives it `catch_up`
/// to catch up. Returns once it is a voter.
///
/// Errors: see [`AddError`]; every one leaves the voters unchanged.
pub async fn add_voter(raft: &BorgRaft, id: NodeId, address: &str, catch_up: Duration) -> Result<(), AddError> {
    let status = super::peer_status(address, Duration::from_secs(3)).await.map_err(|why| AddError::Unreachable {
        id,
        address: address.to_string(),
        why,
    })?;
    if status.id != id {
        return Err(AddError::WrongId { id, address: address.to_string(), actual: status.id });
    }
    let refused = |e: &dyn std::fmt::Display| AddError::Refused(e.to_string());
    snapshot_current_membership(raft).await;
    raft.add_learner(id, BasicNode::new(address), false).await.map_err(|e| refused(&e))?;
    let target = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let started = Instant::now();
    let matched = loop {
        let matched = matched_index(raft, id);
        if matched >= target {
            break matched;
        }
        if started.elapsed() >= catch_up {
            tracing::warn!(id, %address, matched, target, "the new replica did not catch up; removing it again");
            let removal = raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false);
            if let Err(e) = tokio::time::timeout(Duration::from_secs(10), removal).await {
                tracing::error!(id, error = %e, "could not remove the learner again; `borgctl replicas remove {id}`");
            }
            return Err(AddError::NotCaughtUp { id, address: address.to_string(), waited: catch_up, matched, target });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tracing::info!(id, matched, "the new replica caught up: promoting it to voter");
    super::group::change_membership(raft, ChangeMembers::AddVoterIds(BTreeSet::from([id])))
        .await
        .map_err(|e| refused(&e))?;
    Ok(())
}

/// A replica that gets the leader's snapshot takes its membership from it until the entries
/// after it arrive. If the last snapshot predates the membership in force (a replica removed and
/// now added back, wiped, is in the snapshot as a voter), the new replica would believe itself a
/// voter, stand for election and unseat the leader (seen in bench-failover-at-scale's snapshot
/// step: a leadership gap of about a second). So before a replica is added, a snapshot older
/// than the membership in force is replaced by a new one (waited for up to 30 s; on timeout the
/// add goes ahead, as before). A removal starts one in the background (`group::remove_replica`),
/// so an add that follows usually finds it taken or under way.
pub(crate) async fn snapshot_current_membership(raft: &BorgRaft) {
    let stale = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
        let membership = m.membership_config.log_id().map_or(0, |l| l.index);
        m.snapshot.map_or(0, |l| l.index) < membership && m.last_log_index.unwrap_or(0) > 0
    };
    if !stale(&raft.metrics().borrow()) {
        return;
    }
    if let Err(e) = super::group::snapshot_until(raft, |m| !stale(m), Duration::from_secs(30)).await {
        tracing::warn!(error = %e, "no snapshot of the membership in force was taken; a replica added now may be sent an older one");
    }
}

/// The last log index the leader knows replica `id` holds (0 if none or not the leader).
fn matched_index(raft: &BorgRaft, id: NodeId) -> u64 {
    let m = raft.metrics();
    let m = m.borrow();
    m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map_or(0, |l| l.index)
}

/// What [`force_voters`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForceReport {
    /// Uncommitted entries dropped.
    pub dropped: u64,
    /// Voters of the last committed configuration.
    pub previous_voters: BTreeSet<NodeId>,
    /// Index of the new configuration's entry.
    pub index: u64,
}

/// Rewrites the Raft log in `db` (offline: the replica must not be running) so that the group's
/// voters are `voters`, which must include `me` and be members of the last committed
/// configuration. Drops every entry after the committed index, then appends a membership entry
/// in a new term by `me` and votes for `me` in that term.
///
/// Errors: a voter not in the old configuration (its address is unknown), `me` not in
/// `voters`, or the store cannot be read or written.
pub fn force_voters(db: &DB, me: NodeId, voters: &BTreeSet<NodeId>) -> Result<ForceReport, String> {
    if !voters.contains(&me) {
        return Err(format!("--force-voters must include this replica ({me})"));
    }
    let meta = cf(db, CF_META).map_err(|e| e.to_string())?;
    let log = cf(db, CF_LOG).map_err(|e| e.to_string())?;
    let get = |key: &str| db.get_cf(meta, key).map_err(|e| format!("reading {key}: {e}"));
    let committed: Option<LogId<NodeId>> = match get("committed")? {
        Some(b) => serde_json::from_slice::<Option<LogId<NodeId>>>(&b).map_err(|e| format!("committed: {e}"))?,
        None => None,
    };
    let vote: Option<Vote<NodeId>> = match get("vote")? {
        Some(b) => Some(serde_json::from_slice(&b).map_err(|e| format!("vote: {e}"))?),
        None => None,
    };
    let committed_index = committed.map_or(0, |c| c.index);
    let mut last_membership: Option<Membership<NodeId, BasicNode>> = None;
    let (mut last_term, mut last_index, mut dropped) = (0u64, 0u64, 0u64);
    for item in db.iterator_cf(log, IteratorMode::From(&0u64.to_be_bytes(), Direction::Forward)) {
        let (k, v) = item.map_err(|e| format!("reading the log: {e}"))?;
        let index = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8]));
        if index > committed_index {
            dropped += 1;
            continue;
        }
        let entry: Entry<TypeConfig> = super::codec::decode(&v).map_err(|e| format!("log entry {index}: {e}"))?;
        last_term = entry.log_id.leader_id.term;
        last_index = index;
        if let EntryPayload::Membership(m) = entry.payload {
            last_membership = Some(m);
        }
    }
    let membership = match last_membership {
        Some(m) => m,
        None => snapshot_membership(db)?.ok_or("no committed membership in the log or the snapshot")?,
    };
    let nodes: BTreeMap<NodeId, BasicNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
    if let Some(unknown) = voters.iter().find(|v| !nodes.contains_key(v)) {
        return Err(format!("replica {unknown} is not a member of the last committed configuration"));
    }
    let previous_voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let term = vote.map_or(0, |v| v.leader_id().term).max(last_term) + 1;
    let index = last_index.max(committed_index) + 1;
    let kept: BTreeMap<NodeId, BasicNode> = nodes.into_iter().filter(|(id, _)| voters.contains(id)).collect();
    let entry: Entry<TypeConfig> = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, me), index),
        payload: EntryPayload::Membership(Membership::new(vec![voters.clone()], kept)),
    };
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(log, (committed_index + 1).to_be_bytes(), u64::MAX.to_be_bytes());
    batch.delete_cf(log, u64::MAX.to_be_bytes());
    batch.put_cf(log, index.to_be_bytes(), super::codec::encode(&entry).map_err(|e| e.to_string())?);
    let new_vote = Vote::<NodeId>::new(term, me);
    batch.put_cf(meta, "vote", serde_json::to_vec(&new_vote).map_err(|e| e.to_string())?);
    write_synced(db, batch).map_err(|e| format!("writing the log: {e}"))?;
    Ok(ForceReport { dropped, previous_voters, index })
}

fn snapshot_membership(db: &DB) -> Result<Option<Membership<NodeId, BasicNode>>, String> {
    super::state_machine::stored_membership(db).map_err(|e| e.to_string())
}
