//! What the rest of the Borgmaster asks of its Raft group, in plain types: who leads, this
//! replica's status, the members, writes, and membership changes. Nothing outside `raft/` names
//! an openraft type; [`crate::master::Master`] calls these.

use super::{Applied, BorgRaft, CommandResult, Group, NodeId};
use openraft::error::ClientWriteError;
use openraft::{ChangeMembers, ServerState};
use std::collections::BTreeSet;

/// Who leads the master group, as this replica knows it.
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

/// This replica's view of the group, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// Whether this replica leads.
    pub is_leader: bool,
    /// Its current term.
    pub term: u64,
    /// Index of the last entry in its log (0 when empty).
    pub last_log_index: u64,
    /// Voting members of the group.
    pub voters: usize,
}

/// One member of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its `--id`.
    pub id: NodeId,
    /// Its gRPC address (host:port).
    pub address: String,
    /// Voter (true) or learner.
    pub voter: bool,
}

/// Why a write did not reach a quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// This replica does not lead; `leader` is the leader's address when known.
    NotLeader {
        /// host:port of the current leader, when known.
        leader: Option<String>,
    },
    /// The Raft group has shut down.
    Stopped,
    /// Replication or storage failed (openraft's error text), or this replica lost its
    /// leadership after the write was proposed: the outcome is unknown.
    Storage(String),
}

/// Why a replica could not be removed. Nothing changed, except as [`RemoveError::Refused`] says.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// The id is not a member.
    #[error("no replica {0} in the master group")]
    NotMember(NodeId),
    /// Removing it would leave no voter.
    #[error("replica {0} is the last voter")]
    LastVoter(NodeId),
    /// openraft refused the change (another change in progress, not the leader, ...), or this
    /// replica lost its leadership while the change was under way. In that last case the group
    /// may already be in the joint configuration: the next leader then finishes the change (see
    /// [`finish_membership_changes`]).
    #[error(
        "membership change refused: {0} (if the leader changed meanwhile, the change may still take effect: the \
         next leader finishes a change it finds half done; `borgctl replicas` shows the voters)"
    )]
    Refused(String),
}

/// Who leads, as replica `me` knows it.
pub fn leadership(raft: &BorgRaft, me: NodeId) -> Leadership {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    match m.current_leader {
        Some(l) if l == me && m.state == ServerState::Leader => Leadership::Me,
        Some(l) => match m.membership_config.membership().get_node(&l) {
            Some(node) => Leadership::Other { id: l, address: node.addr.clone() },
            None => Leadership::Unknown,
        },
        None => Leadership::Unknown,
    }
}

/// Replica `me`'s status.
pub fn status(raft: &BorgRaft, me: NodeId) -> RaftStatus {
    let m = raft.metrics().borrow().clone();
    RaftStatus {
        is_leader: m.current_leader == Some(me) && m.state == ServerState::Leader,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        voters: m.membership_config.membership().voter_ids().count(),
    }
}

/// The voters' ids, ascending.
pub fn voters(raft: &BorgRaft) -> Vec<NodeId> {
    raft.metrics().borrow().membership_config.membership().voter_ids().collect()
}

/// Every member (voters and learners), by id.
pub fn members(raft: &BorgRaft) -> Vec<Member> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    membership
        .nodes()
        .map(|(id, node)| Member { id: *id, address: node.addr.clone(), voter: voters.contains(id) })
        .collect()
}

/// Hands `group` to openraft (returns once it is queued for the log, so groups submitted one
/// after the other are appended, and applied, in that order) and returns what resolves, once a
/// quorum has it and this replica applied it, to one result per command.
///
/// Errors: [`WriteError::Stopped`] when openraft stopped; the returned future: [`WriteError`].
pub async fn submit(
    raft: &BorgRaft,
    group: Group,
) -> Result<impl std::future::Future<Output = Result<Vec<CommandResult>, WriteError>> + Send + 'static, WriteError> {
    // Whether openraft may append the entry: it does only while this replica leads. Its answer
    // "forward to the leader" means "not appended" when it did not lead, but it also answers so
    // a proposer whose appended entry it truncated from its log on losing leadership, and such
    // an entry can still be committed by the next leader (the simulation found a write answered
    // NotLeader that was applied at the index it had been given: seed 35548705). A refusal is
    // "surely not applied" (safe to send again) only when this replica did not lead.
    let leading = {
        let m = raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader || m.current_leader == Some(m.id)
    };
    let rx = raft.client_write_ff(group).await.map_err(|_| WriteError::Stopped)?;
    Ok(async move {
        match rx.await {
            Ok(Ok(resp)) => {
                let Applied(results) = resp.data;
                Ok(results)
            }
            Ok(Err(ClientWriteError::ForwardToLeader(_))) if leading => Err(WriteError::Storage(
                "this replica lost its leadership after the write was proposed: it may still be applied; \
                 read before retrying"
                    .to_string(),
            )),
            Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                Err(WriteError::NotLeader { leader: f.leader_node.as_ref().map(|n| n.addr.clone()) })
            }
            Ok(Err(other)) => Err(WriteError::Storage(other.to_string())),
            // openraft dropped the request: it stopped
            Err(_) => Err(WriteError::Stopped),
        }
    })
}

/// Replicates `group` to a quorum and applies it on this replica; one result per command.
///
/// Errors: [`WriteError`].
pub async fn write(raft: &BorgRaft, group: Group) -> Result<Vec<CommandResult>, WriteError> {
    submit(raft, group).await?.await
}

/// Asks openraft for a snapshot now and waits, at most `timeout`, until `done` holds of the
/// replica's metrics (e.g. a snapshot newer than the one before is stored). Returns the last log
/// index the stored snapshot covers then.
///
/// Errors: Raft stopped, or `done` did not hold within `timeout`.
pub async fn snapshot_until(
    raft: &BorgRaft,
    done: impl Fn(&openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> bool,
    timeout: std::time::Duration,
) -> Result<u64, String> {
    raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
    let mut rx = raft.metrics();
    let covered = match tokio::time::timeout(timeout, rx.wait_for(|m| done(m))).await {
        Ok(Ok(m)) => Ok(m.snapshot.map_or(0, |l| l.index)),
        Ok(Err(_)) => Err("Raft stopped".to_string()),
        Err(_) => Err(format!("no snapshot stored within {timeout:?}")),
    };
    covered
}

/// Confirms with a quorum that this replica still leads and that its state holds every
/// committed entry (openraft's `ensure_linearizable`).
///
/// Errors: it does not lead, or the quorum did not answer; openraft's text.
pub async fn confirm_leadership(raft: &BorgRaft) -> Result<(), String> {
    raft.ensure_linearizable().await.map(|_| ()).map_err(|e| e.to_string())
}

/// Removes replica `id` from the group (a voter becomes nothing; a learner is dropped). Returns
/// the voters after the change. The leader then takes a snapshot in the background, so that a
/// replica added later (often this one, its disk replaced) is sent one that names the
/// membership in force at once instead of waiting for it to be taken (1-2 s at 1,000,000
/// tasks; see `membership::snapshot_current_membership`).
///
/// Errors: [`RemoveError`].
pub async fn remove_replica(raft: &BorgRaft, id: NodeId) -> Result<Vec<NodeId>, RemoveError> {
    let members = members(raft);
    let Some(member) = members.iter().find(|m| m.id == id) else { return Err(RemoveError::NotMember(id)) };
    let change = if member.voter {
        if members.iter().filter(|m| m.voter).count() == 1 {
            return Err(RemoveError::LastVoter(id));
        }
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    change_membership(raft, change).await.map_err(RemoveError::Refused)?;
    let snapshot_raft = raft.clone();
    tokio::spawn(async move { super::membership::snapshot_current_membership(&snapshot_raft).await });
    Ok(voters(raft))
}

/// Changes the voters with openraft's two steps (the joint configuration, then the new one), on
/// a task of its own: a caller dropped between the steps (an admin's RPC cancelled) cannot leave
/// the group in the joint configuration. Removed voters leave the group (`retain` false).
///
/// Errors: openraft's text (not the leader, another change under way, leadership lost).
pub(crate) async fn change_membership(
    raft: &BorgRaft,
    change: ChangeMembers<NodeId, openraft::BasicNode>,
) -> Result<(), String> {
    let raft = raft.clone();
    tokio::spawn(async move { raft.change_membership(change, false).await.map(|_| ()).map_err(|e| e.to_string()) })
        .await
        .map_err(|e| format!("the membership change stopped: {e}"))?
}

/// The joint configuration this replica leads under, when its membership is joint and
/// committed: its log index and the new configuration's voters.
fn committed_joint(m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> Option<(u64, BTreeSet<NodeId>)> {
    let configs = m.membership_config.membership().get_joint_config();
    let at = m.membership_config.log_id().as_ref()?.index;
    let committed = m.last_applied.as_ref().is_some_and(|a| a.index >= at);
    let new_voters = configs.last().filter(|_| configs.len() > 1)?;
    (m.state == ServerState::Leader && committed).then(|| (at, new_voters.clone()))
}

/// Finishes membership changes a former leader left half done; runs until Raft stops.
///
/// openraft changes the voters in two steps, the joint configuration (old and new voters) and
/// then the new one; a leader lost between the two leaves the group joint, and nothing moves
/// it on: every write then needs a majority of both voter sets, and the next membership change,
/// built on the new set, silently carries out the interrupted one (found by the fault suite:
/// `replicas remove 2` refused when leadership moved, then `replicas remove 3` dropped 2 as well,
/// which stopped receiving the log). So whenever this replica leads and its committed
/// membership has stayed joint for `settle` (time for a change under way to take its own second
/// step), it moves the group to the new voters, as Raft's joint consensus intends once the joint
/// configuration is committed (Ongaro's thesis §4.3): the change the admin asked for takes effect.
pub async fn finish_membership_changes(raft: BorgRaft, settle: std::time::Duration) {
    let mut rx = raft.metrics();
    loop {
        let joint = committed_joint(&rx.borrow_and_update());
        let Some((at, voters)) = joint else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::time::sleep(settle).await;
        if committed_joint(&raft.metrics().borrow()).map(|(i, _)| i) != Some(at) {
            continue;
        }
        tracing::warn!(index = at, ?voters, "finishing a membership change that a former leader left half done");
        match change_membership(&raft, ChangeMembers::ReplaceAllVoters(voters.clone())).await {
            Ok(()) => tracing::info!(?voters, "membership change finished"),
            Err(e) => {
                tracing::warn!(error = %e, "could not finish the membership change yet; trying again");
                tokio::time::sleep(settle).await;
            }
        }
    }
}

/// Follows the index of the last log entry applied to this replica's state: what the watch
/// streams (endpoints, events, tasks) wait on instead of polling.
pub struct AppliedWatch {
    rx: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, openraft::BasicNode>>,
}

impl AppliedWatch {
    /// A watch of `raft`'s applied index.
    pub fn new(raft: &BorgRaft) -> AppliedWatch {
        AppliedWatch { rx: raft.metrics() }
    }

    /// Waits until an entry after index `after` has been applied; returns the applied index, or
    /// None once the group has shut down.
    pub async fn after(&mut self, after: u64) -> Option<u64> {
        loop {
            let i = self.rx.borrow_and_update().last_applied.map_or(0, |l| l.index);
            if i > after {
                return Some(i);
            }
            self.rx.changed().await.ok()?;
        }
    }
}

/// Follows replica `me`'s leadership: the leader's duties run between
/// [`LeaderWatch::until_leading`] and [`LeaderWatch::while_leading`].
///
/// It follows openraft's server metrics (role, leader, vote, membership), which change only with
/// those, not its full metrics, which are sent again after every batch of log I/O: a watcher of
/// those was woken several times per committed group on every replica for nothing.
pub struct LeaderWatch {
    rx: tokio::sync::watch::Receiver<openraft::metrics::RaftServerMetrics<NodeId, openraft::BasicNode>>,
}

impl LeaderWatch {
    /// A watch of `raft`'s leadership.
    pub fn new(raft: &BorgRaft) -> LeaderWatch {
        LeaderWatch { rx: raft.server_metrics() }
    }

    fn leads(&mut self) -> bool {
        let m = self.rx.borrow_and_update();
        m.state == ServerState::Leader && m.current_leader == Some(m.id)
    }

    /// Waits until this replica leads; returns its term, or None once the group has shut down.
    pub async fn until_leading(&mut self) -> Option<u64> {
        while !self.leads() {
            self.rx.changed().await.ok()?;
        }
        Some(self.rx.borrow().vote.leader_id().get_term())
    }

    /// Waits while this replica leads (returns when it no longer does, or the group shut down).
    pub async fn while_leading(&mut self) {
        while self.leads() {
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Waits until `raft`'s core has stopped, and returns why (openraft's error; "raft stopped" after a
/// shutdown). Follows the server metrics, whose sender goes with the core, so that it is not
/// woken by every batch of log I/O.
pub async fn stopped(raft: &BorgRaft) -> String {
    let mut rx = raft.server_metrics();
    while rx.changed().await.is_ok() {}
    match &raft.metrics().borrow().running_state {
        Err(e) => e.to_string(),
        Ok(()) => "its core ended".to_string(),
    }
}
