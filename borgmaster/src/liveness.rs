//! When a machine is declared down: on evidence about the machine, never on the leader's own
//! slowness.
//!
//! A Borglet restart (an upgrade, a crash) takes about a second, and the master must not take
//! its tasks away for that; a newly elected leader polling 10,000 machines at once is slow for a
//! while, and must not take that for machines dying. The rule, per machine (pure: the link shard
//! feeds it poll outcomes and the clock):
//!
//! 1. **Wall time, not attempts.** A machine is down once no poll of it has succeeded for
//!    `missed_polls x poll_interval` (the *grace*, 5 s by default) *and* at least `missed_polls`
//!    polls in a row failed. Extra polls (a poller is woken whenever the machine's desired task
//!    set changes) do not shorten the grace.
//! 2. **A full grace after the leader's first round.** The clock of every machine starts no
//!    earlier than the moment this leader finished its first poll round (every machine
//!    attempted once), so a new leader that needs 20 s for that round still gives each machine
//!    its full grace afterwards.
//! 3. **The leader's own stalls do not count.** The link shard's heartbeat measures how late the
//!    leader's runtime wakes up; a stall longer than a poll interval restarts every machine's
//!    grace when it ends (a leader that could not run could not poll).
//! 4. **Timeouts adapt to the leader's latency**: a poll's timeout is at least four times the
//!    recent (EWMA) latency of successful polls, so a loaded leader waits longer instead of
//!    reading its own queueing as timeouts ([`PollLatency`]).
//! 5. **Mass failure is the leader's problem.** When more than half of the machines of a cell of
//!    at least [`MASS_FAILURE_MIN_MACHINES`] fail their polls at once, the cause is far likelier
//!    the leader's network than half the cell dying (Kubernetes' node lifecycle controller stops
//!    evicting in "full disruption" for the same reason): nothing is marked down until fewer
//!    fail.
//!
//! Detection time for a machine that really died: the grace after its last successful poll
//! (5-6 s with the defaults; Kubernetes ~5 min 50 s, Nomad ~20 s: DESIGN.md §5).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Smallest cell in which the mass-failure rule (5) holds back down marks.
pub const MASS_FAILURE_MIN_MACHINES: usize = 3;

/// The failure-detection state of one machine's poller.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// Polls failed in a row.
    pub misses: u32,
    /// Last successful poll (or, before one, when this poller started).
    last_ok: Instant,
}

/// What the leader knows about itself when judging one machine.
#[derive(Debug, Clone, Copy)]
pub struct LeaderView {
    /// When this leader's first poll round ended (None: not yet; nothing goes down before).
    pub first_round_done: Option<Instant>,
    /// When the leader's last stall (a runtime wake-up later than a poll interval) ended.
    pub last_stall_end: Option<Instant>,
    /// Machines whose last poll failed, and machines registered.
    pub failing: usize,
    /// Machines registered.
    pub machines: usize,
}

impl Liveness {
    /// A poller starting at `now`.
    pub fn new(now: Instant) -> Liveness {
        Liveness { misses: 0, last_ok: now }
    }

    /// Records a successful poll at `now`.
    pub fn ok(&mut self, now: Instant) {
        self.misses = 0;
        self.last_ok = now;
    }

    /// Records a failed poll.
    pub fn failed(&mut self) {
        self.misses = self.misses.saturating_add(1);
    }

    /// Whether the machine should be declared down at `now`, given `missed_polls` and `grace`
    /// (missed_polls x poll interval) and what the leader knows of itself; `Err` says why not
    /// (for logs), `Ok` gives the time since the machine's clock started.
    pub fn down(&self, now: Instant, missed_polls: u32, grace: Duration, leader: LeaderView) -> Result<Duration, Why> {
        if self.misses < missed_polls {
            return Err(Why::FewMisses);
        }
        let Some(round) = leader.first_round_done else { return Err(Why::FirstRound) };
        let since = [Some(self.last_ok), Some(round), leader.last_stall_end].into_iter().flatten().max();
        let waited = since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        if waited < grace {
            return Err(Why::InGrace);
        }
        if leader.machines >= MASS_FAILURE_MIN_MACHINES && leader.failing * 2 > leader.machines {
            return Err(Why::MassFailure);
        }
        Ok(waited)
    }
}

/// Why a failing machine is not (yet) declared down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Fewer than `missed_polls` polls failed in a row.
    FewMisses,
    /// The leader has not finished its first poll round.
    FirstRound,
    /// Less than the grace has passed since its last successful poll (or the leader's first
    /// round, or the leader's last stall).
    InGrace,
    /// More than half the cell fails at once: the leader suspects itself.
    MassFailure,
}

/// The recent latency of successful polls across the cell (an EWMA, microseconds), from which
/// poll timeouts are derived, and its mean deviation, from which [`PollLatency::margin`] is.
/// Shared by every poller; lock-free (the two are updated one after the other, not together:
/// an estimate, not an account).
#[derive(Debug, Default)]
pub struct PollLatency {
    /// Smoothed latency, microseconds (0: none recorded yet).
    mean: AtomicU64,
    /// Smoothed absolute deviation from `mean`, microseconds.
    deviation: AtomicU64,
}

impl PollLatency {
    /// Folds in one successful poll's latency: the mean with weight 1/16, the deviation from the
    /// mean before it with weight 1/4 (RFC 6298's beta).
    pub fn record(&self, latency: Duration) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let before = self.mean.load(Ordering::Relaxed);
        let _ = self.mean.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            Some(if old == 0 { us } else { old - old / 16 + us / 16 })
        });
        let deviation = if before == 0 { us / 2 } else { us.abs_diff(before) };
        let _ = self
            .deviation
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| Some(old - old / 4 + deviation / 4));
    }

    /// The current estimate.
    pub fn get(&self) -> Duration {
        Duration::from_micros(self.mean.load(Ordering::Relaxed))
    }

    /// A latency that polls of this kind rarely exceed: the mean plus four mean deviations
    /// (RFC 6298's retransmission timeout, SRTT + 4 RTTVAR). Zero before any was recorded.
    pub fn margin(&self) -> Duration {
        Duration::from_micros(
            self.mean.load(Ordering::Relaxed).saturating_add(self.deviation.load(Ordering::Relaxed).saturating_mul(4)),
        )
    }

    /// A poll timeout: `base`, or four times the recent latency if that is longer, at most 60 s.
    pub fn timeout(&self, base: Duration) -> Duration {
        base.max(self.get() * 4).min(Duration::from_secs(60).max(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    fn leader(t0: Instant) -> LeaderView {
        LeaderView { first_round_done: Some(t0), last_stall_end: None, failing: 1, machines: 10 }
    }

    #[test]
    fn many_quick_failures_do_not_make_a_machine_down_before_the_grace() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        l.ok(t0);
        // a Borglet restart under apply load: 20 wake-ups, each a refused connection, in 1 s
        for _ in 0..20 {
            l.failed();
        }
        assert_eq!(l.down(t0 + Duration::from_secs(1), 5, GRACE, leader(t0)), Err(Why::InGrace));
        // it comes back: the clock starts again
        l.ok(t0 + Duration::from_millis(1200));
        assert_eq!(l.misses, 0);
        assert_eq!(l.down(t0 + Duration::from_secs(7), 5, GRACE, leader(t0)), Err(Why::FewMisses));
    }

    #[test]
    fn a_dead_machine_is_down_once_both_the_grace_and_the_misses_are_spent() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        l.ok(t0);
        for _ in 0..4 {
            l.failed();
        }
        assert_eq!(l.down(t0 + Duration::from_secs(60), 5, GRACE, leader(t0)), Err(Why::FewMisses));
        l.failed();
        assert_eq!(l.down(t0 + Duration::from_secs(4), 5, GRACE, leader(t0)), Err(Why::InGrace));
        assert_eq!(l.down(t0 + Duration::from_secs(6), 5, GRACE, leader(t0)), Ok(Duration::from_secs(6)));
    }

    #[test]
    fn a_slow_first_round_and_a_leader_stall_each_restart_the_grace() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        for _ in 0..10 {
            l.failed();
        }
        let mut view = leader(t0);
        view.first_round_done = None;
        assert_eq!(l.down(t0 + Duration::from_secs(30), 5, GRACE, view), Err(Why::FirstRound));
        // the first round took 24 s: a full grace after it
        view.first_round_done = Some(t0 + Duration::from_secs(24));
        assert_eq!(l.down(t0 + Duration::from_secs(27), 5, GRACE, view), Err(Why::InGrace));
        assert!(l.down(t0 + Duration::from_secs(30), 5, GRACE, view).is_ok());
        // the leader stalled until 29 s
        view.last_stall_end = Some(t0 + Duration::from_secs(29));
        assert_eq!(l.down(t0 + Duration::from_secs(30), 5, GRACE, view), Err(Why::InGrace));
        assert!(l.down(t0 + Duration::from_secs(34), 5, GRACE, view).is_ok());
    }

    #[test]
    fn more_than_half_the_cell_failing_marks_nothing_down_but_small_cells_are_exempt() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0);
        for _ in 0..10 {
            l.failed();
        }
        let late = t0 + Duration::from_secs(60);
        let view =
            |failing, machines| LeaderView { first_round_done: Some(t0), last_stall_end: None, failing, machines };
        assert_eq!(l.down(late, 5, GRACE, view(6, 10)), Err(Why::MassFailure));
        assert!(l.down(late, 5, GRACE, view(5, 10)).is_ok(), "half is a rack, not the leader");
        assert!(l.down(late, 5, GRACE, view(1, 1)).is_ok(), "a one-machine cell");
        assert!(l.down(late, 5, GRACE, view(1, 2)).is_ok());
    }

    #[test]
    fn timeouts_follow_the_recent_latency() {
        let p = PollLatency::default();
        let base = Duration::from_secs(2);
        assert_eq!(p.timeout(base), base);
        p.record(Duration::from_secs(3));
        assert_eq!(p.timeout(base), Duration::from_secs(12));
        for _ in 0..200 {
            p.record(Duration::from_millis(1));
        }
        assert_eq!(p.timeout(base), base, "back to the base once polls are quick again");
        p.record(Duration::from_secs(1000));
        assert!(p.timeout(base) <= Duration::from_secs(60));
    }

    #[test]
    fn the_margin_covers_latencies_that_vary() {
        let ms = Duration::from_millis;
        let p = PollLatency::default();
        assert_eq!(p.margin(), Duration::ZERO);
        for _ in 0..100 {
            p.record(ms(10));
        }
        assert!(p.margin() >= ms(10) && p.margin() <= ms(11), "steady: about the latency, {:?}", p.margin());
        // polls of 10 and 50 ms in turn: the mean lags at ~30 ms, the margin covers the slow ones
        for i in 0..100 {
            p.record(if i % 2 == 0 { ms(10) } else { ms(50) });
        }
        assert!(p.get() < ms(50), "{:?}", p.get());
        assert!(p.margin() > ms(50), "{:?}", p.margin());
        for _ in 0..100 {
            p.record(ms(10));
        }
        assert!(p.margin() <= ms(12), "steady again: the margin shrinks back, {:?}", p.margin());
    }
}
