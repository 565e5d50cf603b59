//! Standing for election as soon as the leader is known to be gone, instead of waiting out
//! openraft's silence timer (issue 21, item 4: failovers that never hurt the data plane).
//!
//! openraft 0.9 lets a follower that knows a leader stand for election only after the
//! leader's lease (`election_timeout_max`) *plus* the follower's own timeout (fixed at random
//! in `[election_timeout_min, election_timeout_max)` when the replica starts) without a
//! heartbeat: 3-4x `--election-timeout` with our [`super::config`]. Voters refuse any candidate
//! while that lease lasts, so nobody can be elected sooner than the lease; but the extra
//! 1-2x timeout is pure waiting, and with the 1 s timeout a loaded cell needs it put a dead
//! leader's successor 3.4-4.8 s after the kill (bench-million at 1M tasks).
//!
//! The watch asks for evidence instead of waiting longer: once the lease has passed since this
//! follower last heard from its leader (an AppendEntries or snapshot chunk it accepted, see
//! [`Heard`]) plus a fresh jitter of 1/8 to 1/2 of `election_timeout_min`, it asks that leader
//! for its status (the `Status` RPC, at most `election_timeout_min`). If the leader does not
//! answer (a killed process: connection refused at once; a dead or cut-off host: the
//! timeout), or answers that it no longer leads in this replica's term, the replica stands at
//! once (`trigger().elect()`). A leader that answers as leader is alive: the watch leaves the
//! decision to openraft's timer, as before. So the watch only ever makes an election earlier,
//! and only on evidence that the leader is gone; it never changes who may win (Raft's vote and
//! lease checks are openraft's, untouched).
//!
//! The jitter is a hash of (replica id, term, attempt), not a random draw: two followers stand
//! at different moments, and the deterministic simulation (tests/tests/simulation.rs) replays
//! a seed exactly.

use super::network::Network;
use super::{BorgRaft, NodeId};
use openraft::ServerState;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Counter: elections this replica started because its leader did not answer (or no longer
/// led) after the lease passed in silence, labelled by what the leader answered
/// (`answer`: `none` or `not_leader`). Described with the other metrics in `crate::metrics`.
pub const EARLY_ELECTIONS: &str = "borg_raft_early_elections_total";

/// When this replica last accepted a message from a leader (an AppendEntries, heartbeats
/// included, or a snapshot chunk): the Raft service records it, the watch reads it. Shared
/// between them (cloning shares it).
#[derive(Clone, Default)]
pub struct Heard(Arc<Mutex<Option<Instant>>>);

impl Heard {
    /// Records that a leader's message was accepted just now.
    pub fn now(&self) {
        if let Ok(mut t) = self.0.lock() {
            *t = Some(Instant::now());
        }
    }

    /// The last time a leader's message was accepted, if any.
    pub fn last(&self) -> Option<Instant> {
        self.0.lock().ok().and_then(|t| *t)
    }
}

/// What the watch does on a tick, from this replica's Raft metrics and how long it has been
/// quiet (since it last heard from a leader, started, or acted).
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: it leads, is no voter, knows no committed leader, or the lease and
    /// jitter have not passed yet.
    Wait,
    /// Ask leader `leader` (at `address`) whether it still leads.
    Probe { leader: NodeId, address: String },
}

/// The watch's decision for replica `id` (see the module doc): probe the leader when this is a
/// voting follower of a committed leader (not itself) that has been quiet for at least
/// `patience` (the lease plus this attempt's jitter).
pub fn step(
    m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    id: NodeId,
    quiet: Duration,
    patience: Duration,
) -> Step {
    let membership = m.membership_config.membership();
    if m.state != ServerState::Follower || !m.vote.is_committed() || quiet < patience {
        return Step::Wait;
    }
    if !membership.voter_ids().any(|v| v == id) {
        return Step::Wait;
    }
    match m.current_leader {
        Some(l) if l != id => match membership.get_node(&l) {
            Some(node) => Step::Probe { leader: l, address: node.addr.clone() },
            None => Step::Wait,
        },
        _ => Step::Wait,
    }
}

/// Whether the leader's answer to the probe (or the probe's error) shows it gone, for a
/// replica in term `term`: no answer, or an answer that it does not lead and knows no term
/// newer than `term` (it restarted, or stepped down, and nobody has been elected since).
/// Returns the `answer` label of [`EARLY_ELECTIONS`] when gone, `None` when it leads or a
/// newer term exists (then openraft's own timer and the newer term decide).
pub fn gone(term: u64, answer: &Result<borg_proto::ReplicaStatus, String>) -> Option<&'static str> {
    match answer {
        Err(_) => Some("none"),
        Ok(s) if s.role != "leader" && s.term <= term => Some("not_leader"),
        Ok(_) => None,
    }
}

/// This attempt's jitter: 1/8 to 1/2 of `timeout`, from a hash of (`id`, `term`, `attempt`)
/// (splitmix64), so that two followers of the same leader stand at different moments.
pub fn jitter(timeout: Duration, id: NodeId, term: u64, attempt: u64) -> Duration {
    let mut z = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ term.rotate_left(21) ^ attempt.rotate_left(42);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let frac = (z >> 11) as f64 / (1u64 << 53) as f64;
    timeout.mul_f64(0.125 + 0.375 * frac)
}

/// Runs the watch of replica `id` until its Raft node shuts down (see the module doc):
/// `heard` is what its Raft service records, `network` how it reaches the leader.
pub async fn watch(raft: BorgRaft, id: NodeId, network: Network, heard: Heard) {
    let (min, lease) = {
        let c = raft.config();
        (Duration::from_millis(c.election_timeout_min), Duration::from_millis(c.election_timeout_max))
    };
    let tick = (min / 10).clamp(Duration::from_millis(10), Duration::from_millis(100));
    let mut acted = Instant::now();
    let mut attempt = 0u64;
    let metrics = raft.metrics();
    loop {
        tokio::time::sleep(tick).await;
        let m = metrics.borrow().clone();
        if m.state == ServerState::Shutdown || m.running_state.is_err() {
            return;
        }
        let since = heard.last().map_or(acted, |h| h.max(acted));
        let patience = lease + jitter(min, id, m.current_term, attempt);
        let Step::Probe { leader, address } = step(&m, id, since.elapsed(), patience) else {
            continue;
        };
        let answer = super::peer_status_over(&network, &address, min).await;
        acted = Instant::now();
        attempt += 1;
        let Some(label) = gone(m.current_term, &answer) else {
            tracing::debug!(leader, "silent leader answers as leader; openraft's timer decides");
            continue;
        };
        // nothing heard and nothing changed while asking: stand now
        let now = metrics.borrow().clone();
        if heard.last().is_some_and(|h| h > since) || now.current_leader != Some(leader) || now.vote != m.vote {
            continue;
        }
        tracing::info!(
            leader,
            term = m.current_term,
            quiet_ms = since.elapsed().as_millis() as u64,
            answer = %label,
            detail = %match &answer {
                Ok(s) => format!("it answered as {} in term {}", s.role, s.term),
                Err(e) => e.clone(),
            },
            "the leader is gone (its lease passed in silence and it does not lead); standing for election now"
        );
        metrics::counter!(EARLY_ELECTIONS, "answer" => label).increment(1);
        if raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{BasicNode, Membership, RaftMetrics, StoredMembership, Vote};
    use std::collections::{BTreeMap, BTreeSet};

    fn metrics(
        id: NodeId,
        state: ServerState,
        leader: Option<NodeId>,
        committed: bool,
        voters: &[NodeId],
    ) -> RaftMetrics<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> =
            [1, 2, 3, 4].iter().map(|i| (*i, BasicNode::new(format!("127.0.0.1:900{i}")))).collect();
        let voters: BTreeSet<NodeId> = voters.iter().copied().collect();
        let mut m = RaftMetrics::new_initial(id);
        m.state = state;
        m.current_leader = leader;
        m.current_term = 7;
        m.vote = if committed { Vote::new_committed(7, leader.unwrap_or(1)) } else { Vote::new(7, 2) };
        m.membership_config = Arc::new(StoredMembership::new(None, Membership::new(vec![voters], nodes)));
        m
    }

    const S: Duration = Duration::from_secs(1);

    /// A voting follower of a committed leader probes that leader once it has been quiet for
    /// its patience, and not before; leaders, candidates, learners, followers that voted for a
    /// candidate (no committed leader) and the leader itself never do.
    #[test]
    fn only_a_quiet_voting_follower_of_a_committed_leader_probes_it() {
        let m = metrics(2, ServerState::Follower, Some(1), true, &[1, 2, 3]);
        assert_eq!(step(&m, 2, 2 * S, 2 * S), Step::Probe { leader: 1, address: "127.0.0.1:9001".into() });
        assert_eq!(step(&m, 2, 2 * S - Duration::from_millis(1), 2 * S), Step::Wait, "not yet quiet long enough");
        for m in [
            metrics(2, ServerState::Leader, Some(2), true, &[1, 2, 3]),
            metrics(2, ServerState::Candidate, None, false, &[1, 2, 3]),
            metrics(2, ServerState::Follower, Some(1), false, &[1, 2, 3]),
            metrics(2, ServerState::Follower, None, true, &[1, 2, 3]),
            metrics(2, ServerState::Follower, Some(2), true, &[1, 2, 3]),
            metrics(4, ServerState::Learner, Some(1), true, &[1, 2, 3]),
            metrics(4, ServerState::Follower, Some(1), true, &[1, 2, 3]),
        ] {
            assert_eq!(step(&m, m.id, 10 * S, 2 * S), Step::Wait, "{:?} leader {:?}", m.state, m.current_leader);
        }
    }

    fn status(role: &str, term: u64) -> Result<borg_proto::ReplicaStatus, String> {
        Ok(borg_proto::ReplicaStatus { role: role.into(), term, ..Default::default() })
    }

    /// No answer, or an answer that it does not lead in this term, is evidence that the leader
    /// is gone; an answer as leader, or of a newer term, is not.
    #[test]
    fn the_leader_is_gone_only_on_evidence() {
        assert_eq!(gone(7, &Err("connection refused".into())), Some("none"));
        assert_eq!(gone(7, &status("follower", 7)), Some("not_leader"), "restarted with its vote, leads nothing");
        assert_eq!(gone(7, &status("candidate", 6)), Some("not_leader"));
        assert_eq!(gone(7, &status("leader", 7)), None, "alive and leading: openraft's timer decides");
        assert_eq!(gone(7, &status("leader", 8)), None);
        assert_eq!(gone(7, &status("follower", 8)), None, "a newer term exists");
    }

    /// The jitter stays within 1/8 to 1/2 of the timeout and differs between replicas and
    /// attempts (so two followers of one leader do not stand together).
    #[test]
    fn the_jitter_is_bounded_and_differs_between_replicas() {
        let t = Duration::from_millis(1000);
        let mut seen = BTreeSet::new();
        for id in 1..=5 {
            for term in 1..=20 {
                for attempt in 0..3 {
                    let j = jitter(t, id, term, attempt);
                    assert!(j >= t / 8 && j < t / 2, "{j:?}");
                    seen.insert(j.as_micros() / 10_000);
                }
            }
        }
        assert!(seen.len() > 25, "jitter spreads over the range: {} buckets of 10 ms", seen.len());
        assert_ne!(jitter(t, 2, 7, 0), jitter(t, 3, 7, 0));
        assert_eq!(jitter(t, 2, 7, 0), jitter(t, 2, 7, 0), "deterministic");
    }
}
