//! Reservations (Borg §5.5, "Resource reclamation"): for every running task the leader estimates
//! what it really needs from its Borglet's usage reports, so that batch and free tasks can run
//! in the difference between what production asked for and what it uses.
//!
//! **The formula.** A new incarnation's reservation is its request (its limit). Once it has
//! run for `warmup` (default 300 s: Borg's "after 300 s, to allow for startup transients") and
//! this leader has watched it for as long (a new leader does not lower what it has not seen),
//! its reservation becomes
//!
//! ```text
//! reservation = min(request, peak * (1 + margin) + FLOOR)
//! ```
//!
//! per resource, where `peak` is the highest usage reported over the last `window` (default
//! 300 s, kept as maxima per [`bucket_ms`]), `margin` 10% by default (Borg's "actual usage plus
//! a safety margin"; Autopilot's recommenders use 10-15% over a peak or high percentile) and
//! [`FLOOR`] 50 millicores and 64 MiB (a task idle so far still gets room to wake up in). Disk is
//! not sampled: it stays at the request. A reservation rises at once when usage goes above it
//! (Borg: "rapidly increased if the usage exceeds it"); it falls only by more than
//! [`HYSTERESIS`] of the request, so the log is not written for noise.
//!
//! **How it reaches the replicated state.** Estimates are soft (they come from polls), but
//! scheduling must not depend on which replica leads: every `interval` (default 5 s) the leader
//! commits `Command::SetReservations` for the tasks whose estimate moved. Every replica then
//! places batch work against the same figures, and a new leader starts from the last committed
//! ones (and only lowers them after its own warmup of observation).
//!
//! Allocs, and tasks inside allocs, keep their request: an alloc's room is its owner's.

use crate::soft::TaskUsage;
use crate::state::{CellState, Reservation, TaskState};
use borg_jobspec::RunId;
use scheduler_core::{MachineId, Resources};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

pub use scheduler_core::reclaim::{estimate, FLOOR};

/// A lower estimate is committed only when it is below the current reservation by more than
/// this fraction of the request in CPU or RAM.
pub const HYSTERESIS: f64 = 0.05;

/// Usage is kept as the maximum of each bucket of a tenth of the window (between 1 s and 30 s),
/// so a task costs about ten buckets, not a sample per poll.
pub fn bucket_ms(window: Duration) -> i64 {
    (window.as_millis() as i64 / 10).clamp(1_000, 30_000)
}

/// Most reservations committed in one entry.
pub const MAX_PER_ENTRY: usize = 5_000;

/// Reclamation settings (borgmaster `--reclaim`, `--reservation-*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReclaimConfig {
    /// Estimate reservations and place batch and free tasks against them; off: every task is
    /// reserved at its request (committed reservations are ignored).
    pub enabled: bool,
    /// How long a task runs at its request before its reservation follows its usage.
    pub warmup: Duration,
    /// The peak usage is taken over this window.
    pub window: Duration,
    /// Safety margin over the peak (0.10 = 10%).
    pub margin: f64,
    /// How often estimates are committed.
    pub interval: Duration,
}

impl Default for ReclaimConfig {
    fn default() -> Self {
        ReclaimConfig {
            enabled: true,
            warmup: Duration::from_secs(300),
            window: Duration::from_secs(300),
            margin: scheduler_core::reclaim::DEFAULT_MARGIN,
            interval: Duration::from_secs(5),
        }
    }
}

/// The most a run used in one bucket of time: CPU and RAM, the two resources sampled (disk and
/// ports stay at the request, see [`estimate`]). 16 bytes, so that a run's ten-odd buckets cost
/// about 200 bytes: at 1,000,000 runs the leader keeps every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peak {
    /// The bucket: its start in milliseconds divided by the bucket width ([`bucket_ms`]), so a
    /// later bucket has a greater number (saturated at `u32::MAX`, past the year 2100 at the
    /// narrowest width of 1 s: buckets past it merge into one, which only raises the peak).
    bucket: u32,
    /// Millicores (saturated at `u32::MAX`, 4.2 million cores).
    cpu_millis: u32,
    /// Bytes.
    ram_bytes: u64,
}

impl Peak {
    /// The number of the bucket holding `ms`.
    fn bucket_number(ms: i64, width_ms: i64) -> u32 {
        u32::try_from(ms.div_euclid(width_ms.max(1)).max(0)).unwrap_or(u32::MAX)
    }

    /// The number of the first bucket that starts at or after `ms`: buckets from it on are the
    /// ones that start within a window beginning at `ms`.
    fn first_bucket_from(ms: i64, width_ms: i64) -> u32 {
        let width = width_ms.max(1);
        u32::try_from((-(ms.saturating_neg().div_euclid(width))).max(0)).unwrap_or(u32::MAX)
    }

    /// The number of the first bucket still counted at `now_ms`: the buckets that start within
    /// the last `window` plus one bucket width (`width_ms`).
    fn first_kept(now_ms: i64, window: Duration, width_ms: i64) -> u32 {
        Peak::first_bucket_from(now_ms - window.as_millis() as i64 - width_ms, width_ms)
    }

    fn of(bucket: u32, u: Resources) -> Peak {
        Peak { bucket, cpu_millis: u32::try_from(u.cpu_millis).unwrap_or(u32::MAX), ram_bytes: u.ram_bytes }
    }

    fn max(self, o: Peak) -> Peak {
        Peak {
            bucket: self.bucket.max(o.bucket),
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            ram_bytes: self.ram_bytes.max(o.ram_bytes),
        }
    }

    /// As usage: CPU and RAM; disk and ports 0 (not sampled).
    fn usage(self) -> Resources {
        Resources { cpu_millis: u64::from(self.cpu_millis), ram_bytes: self.ram_bytes, disk_bytes: 0, ports: 0 }
    }
}

fn max_each(a: Resources, b: Resources) -> Resources {
    Resources {
        cpu_millis: a.cpu_millis.max(b.cpu_millis),
        ram_bytes: a.ram_bytes.max(b.ram_bytes),
        disk_bytes: a.disk_bytes.max(b.disk_bytes),
        ports: a.ports.max(b.ports),
    }
}

/// One run's observed usage: per-bucket maxima, oldest first, at most the buckets of one window
/// plus two (the capacity grows one bucket at a time, so it stays that).
#[derive(Debug, Clone, Default)]
struct Track {
    first_ms: i64,
    /// The observation round that last saw it (runs not seen in a round are forgotten).
    seen: u64,
    buckets: VecDeque<Peak>,
}

impl Track {
    /// Takes in usage `u` in bucket number `bucket`, first forgetting the buckets before
    /// `keep_from` (a bucket number).
    fn record(&mut self, bucket: u32, keep_from: u32, u: Resources) {
        while self.buckets.front().is_some_and(|p| p.bucket < keep_from) {
            self.buckets.pop_front();
        }
        let sample = Peak::of(bucket, u);
        match self.buckets.back_mut() {
            Some(last) if last.bucket == bucket => *last = last.max(sample),
            _ => {
                if self.buckets.len() == self.buckets.capacity() {
                    // exact growth: a VecDeque doubles, and most runs would then carry 16 buckets
                    // of room for 12
                    self.buckets.reserve_exact(1);
                }
                self.buckets.push_back(sample);
            }
        }
    }

    /// The peak usage over the buckets from bucket number `from` on (CPU and RAM).
    fn peak(&self, from: u32) -> Resources {
        self.buckets.iter().filter(|p| p.bucket >= from).fold(Peak::of(0, Resources::ZERO), |a, p| a.max(*p)).usage()
    }
}

/// The leader's usage observations (soft: a new leader starts empty) and the estimates made
/// from them.
#[derive(Debug, Default)]
pub struct Estimator {
    /// Per machine, per run on it (the shape of [`crate::soft::SoftState::task_usage`]), so that
    /// a round can be observed and estimated a share of the machines at a time.
    /// (foldhash for the runs: each round looks every reported run up here.)
    tracks: HashMap<MachineId, foldhash::HashMap<RunId, Track>>,
    round: u64,
}

impl Estimator {
    /// Records the usage of every run in `usage` (each machine's last poll) at `now_ms`, and
    /// forgets runs no longer reported: [`Estimator::begin_round`], [`Estimator::observe_part`]
    /// of all of it, [`Estimator::end_round`] (the leader does it a share at a time).
    #[cfg(test)]
    pub fn observe<'a>(
        &mut self,
        usage: impl IntoIterator<Item = (&'a MachineId, &'a TaskUsage)>,
        now_ms: i64,
        window: Duration,
    ) {
        self.begin_round();
        self.observe_part(usage, now_ms, window);
        self.end_round();
    }

    /// Starts an observation round: the runs that no [`Estimator::observe_part`] of it reports
    /// are forgotten at [`Estimator::end_round`].
    pub fn begin_round(&mut self) {
        self.round += 1;
    }

    /// Records the usage of the runs in `usage` (some machines' last polls) at `now_ms`, in the
    /// current round. Allocates only for machines and runs seen for the first time.
    pub fn observe_part<'a>(
        &mut self,
        usage: impl IntoIterator<Item = (&'a MachineId, &'a TaskUsage)>,
        now_ms: i64,
        window: Duration,
    ) {
        let round = self.round;
        let width = bucket_ms(window);
        let bucket = Peak::bucket_number(now_ms, width);
        let keep_from = Peak::first_kept(now_ms, window, width);
        for (machine, runs) in usage {
            let tracks = match self.tracks.get_mut(machine) {
                Some(t) => t,
                None => self.tracks.entry(machine.clone()).or_default(),
            };
            for (run, (u, _)) in runs {
                let t = match tracks.get_mut(run) {
                    Some(t) => t,
                    None => tracks.entry(run.clone()).or_insert_with(|| Track { first_ms: now_ms, ..Track::default() }),
                };
                t.seen = round;
                t.record(bucket, keep_from, *u);
            }
        }
    }

    /// Ends the round: forgets the runs (and machines) it did not report.
    pub fn end_round(&mut self) {
        let round = self.round;
        self.tracks.retain(|_, runs| {
            runs.retain(|_, t| t.seen == round);
            !runs.is_empty()
        });
    }

    /// The machines with runs observed, in no particular order (for [`Estimator::due_part`]).
    pub fn machines(&self) -> Vec<MachineId> {
        self.tracks.keys().cloned().collect()
    }

    /// The reservations to commit now, by job and index: for each run the leader has usage for
    /// whose task runs it (not an alloc, not in one), its estimate when it differs enough from
    /// the committed one (a rise at once; a fall past [`HYSTERESIS`], after the warmup); and
    /// whether one of them falls (room is reclaimed). At most [`MAX_PER_ENTRY`]. (The leader
    /// does it a share of the machines at a time: [`Estimator::due_part`], [`finish_due`].)
    #[cfg(test)]
    pub fn due(&self, state: &CellState, cfg: &ReclaimConfig, now_ms: i64) -> (Vec<Reservation>, bool) {
        let mut out = Vec::new();
        let fell = self.due_part(&self.machines(), state, cfg, now_ms, &mut out);
        (finish_due(out), fell)
    }

    /// The reservations to commit now for the runs on `machines`: for each run the leader has
    /// usage for whose task runs it (not an alloc, not in one), its estimate when it differs
    /// enough from the committed one (a rise at once; a fall past [`HYSTERESIS`], after the
    /// warmup). Appends them to `out` (unsorted; [`finish_due`] orders and bounds the whole) and
    /// returns whether one of them falls (room is reclaimed).
    pub fn due_part(
        &self,
        machines: &[MachineId],
        state: &CellState,
        cfg: &ReclaimConfig,
        now_ms: i64,
        out: &mut Vec<Reservation>,
    ) -> bool {
        let mut fell = false;
        let warmup = cfg.warmup.as_millis() as i64;
        let width = bucket_ms(cfg.window);
        let from = Peak::first_kept(now_ms, cfg.window, width);
        let mut jobs = crate::state::JobsByName::new(state);
        for (run, track) in machines.iter().filter_map(|m| self.tracks.get(m)).flatten() {
            let Some(job) = jobs.get(&run.task.job) else { continue };
            if job.spec.kind == borg_jobspec::JobKind::AllocSet || !job.spec.alloc_set.is_empty() {
                continue;
            }
            let Some(t) = job.tasks.get(run.task.index as usize) else { continue };
            if t.incarnation != run.incarnation || t.state != TaskState::Running || t.machine.is_none() {
                continue;
            }
            let peak = track.peak(from);
            let watched = now_ms - track.first_ms;
            let request = job.spec_for(t.job_version).resources;
            let current = t.reservation.unwrap_or(request);
            let next = estimate(request, peak, cfg.margin);
            let rises = next.cpu_millis > current.cpu_millis || next.ram_bytes > current.ram_bytes;
            let warmed = now_ms - t.state_since_ms.max(t.scheduled_ms) >= warmup && watched >= warmup;
            let falls_enough = |n: u64, c: u64, r: u64| c > n && (c - n) as f64 > HYSTERESIS * r as f64;
            let falls = warmed
                && (falls_enough(next.cpu_millis, current.cpu_millis, request.cpu_millis)
                    || falls_enough(next.ram_bytes, current.ram_bytes, request.ram_bytes));
            fell |= falls;
            if rises || falls {
                // a rise takes the new figure in every resource that rose, keeps the rest
                let resources = if falls { next } else { max_each(current, next).min_each(&request) };
                out.push(Reservation { job: t.job.clone(), index: t.index, incarnation: t.incarnation, resources });
            }
        }
        fell
    }
}

/// The reservations of every [`Estimator::due_part`] of a round, by job and index, at most
/// [`MAX_PER_ENTRY`].
pub fn finish_due(mut out: Vec<Reservation>) -> Vec<Reservation> {
    out.sort_unstable_by(|a, b| a.job.cmp(&b.job).then(a.index.cmp(&b.index)));
    out.truncate(MAX_PER_ENTRY);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::{self, bind, machine, report_running_at, spec};
    use crate::state::{Command, TaskId};

    const MIB: u64 = 1 << 20;

    fn usage(job: &str, cpu: u64, ram: u64) -> HashMap<MachineId, TaskUsage> {
        let mut runs = TaskUsage::new();
        runs.insert(RunId::new(job, 0, 1), (Resources::new(cpu, ram, 0), 0.0));
        HashMap::from([(MachineId("m1".into()), runs)])
    }

    #[test]
    fn reservations_fall_after_the_warmup_and_rise_at_once() {
        let mut s = CellState::new("dev");
        fixtures::run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        let mut web = spec("web", 1);
        web.resources = Resources::new(1500, 1024 * MIB, 0);
        fixtures::run(&mut s, Command::ApplyJob { spec: web, expected_version: None }).unwrap();
        bind(&mut s, "web", 0, "m1");
        report_running_at(&mut s, "m1", "web", 0, true, 1000);
        let cfg =
            ReclaimConfig { warmup: Duration::from_secs(60), window: Duration::from_secs(60), ..Default::default() };
        let mut est = Estimator::default();
        let idle = usage("web", 5, 10 * MIB);
        // watched from 1 s: nothing before the warmup
        for t in (1_000..=50_000).step_by(5_000) {
            est.observe(idle.iter(), t, cfg.window);
            assert!(est.due(&s, &cfg, t).0.is_empty(), "at {t} ms");
        }
        for t in (55_000..=61_000).step_by(1_000) {
            est.observe(idle.iter(), t, cfg.window);
        }
        let (due, fell) = est.due(&s, &cfg, 61_000);
        assert!(fell);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].resources, Resources::new(56, 11 * MIB + 64 * MIB, 0));
        fixtures::run(&mut s, Command::SetReservations { reservations: due }).unwrap();
        assert!(est.due(&s, &cfg, 61_000).0.is_empty(), "committed: nothing moves");
        // it starts using its memory: the reservation rises at the next look, warmup or not
        let busy = usage("web", 5, 900 * MIB);
        est.observe(busy.iter(), 62_000, cfg.window);
        let (due, fell) = est.due(&s, &cfg, 62_000);
        assert!(!fell, "a rise reclaims nothing");
        assert_eq!(due[0].resources.ram_bytes, 1024 * MIB, "capped at the request");
        assert_eq!(due[0].resources.cpu_millis, 56, "CPU did not rise: unchanged");
        fixtures::run(&mut s, Command::SetReservations { reservations: due }).unwrap();
        assert_eq!(s.task(&TaskId::new("web", 0)).unwrap().reservation, Some(Resources::new(56, 1024 * MIB, 0)));
        // a new leader's estimator has not watched it: it does not lower, but still raises
        let fresh = Estimator::default();
        assert!(fresh.due(&s, &cfg, 70_000).0.is_empty());
        // a run no longer reported is forgotten
        est.observe(HashMap::<MachineId, TaskUsage>::new().iter(), 63_000, cfg.window);
        assert!(est.tracks.is_empty());
    }

    /// A track's peak is the highest usage reported in the buckets that start within the window
    /// (a reference: every sample kept, with its bucket's start in milliseconds), and it keeps
    /// at most the window's buckets plus two, with no spare room.
    #[test]
    fn a_track_keeps_the_window_s_peak_in_few_bytes() {
        use proptest::prelude::*;
        assert_eq!(std::mem::size_of::<Peak>(), 16);
        let window = Duration::from_secs(60);
        let width = bucket_ms(window);
        let most = (window.as_millis() as i64 / width) as usize + 2;
        proptest!(ProptestConfig::with_cases(200), |(steps in proptest::collection::vec((1i64..20_000, 0u64..5_000, 0u64..(1 << 34)), 1..120))| {
            let mut track = Track::default();
            let mut all: Vec<(i64, Resources)> = Vec::new();
            let mut now = 1_700_000_000_000i64;
            for (dt, cpu, ram) in steps {
                now += dt;
                let u = Resources::new(cpu, ram, 7);
                let keep_from = now - window.as_millis() as i64 - width;
                track.record(Peak::bucket_number(now, width), Peak::first_bucket_from(keep_from, width), u);
                all.push((now - now.rem_euclid(width), u));
                let want = all
                    .iter()
                    .filter(|(b, _)| *b >= keep_from)
                    .fold(Resources::ZERO, |a, (_, u)| Resources { disk_bytes: 0, ..max_each(a, *u) });
                prop_assert_eq!(track.peak(Peak::first_bucket_from(keep_from, width)), want);
                prop_assert!(track.buckets.len() <= most, "{} buckets", track.buckets.len());
                prop_assert!(track.buckets.capacity() <= most, "room for {}", track.buckets.capacity());
            }
        });
    }

    /// A round observed a share of the machines at a time estimates what one pass over all of
    /// them does, and still forgets the machines the round did not report.
    #[test]
    fn a_round_in_parts_is_a_round_at_once() {
        let mut s = CellState::new("dev");
        for m in ["m1", "m2"] {
            fixtures::run(&mut s, Command::RegisterMachine { machine: machine(m) }).unwrap();
        }
        let mut web = spec("web", 2);
        web.resources = Resources::new(1500, 1024 * MIB, 0);
        fixtures::run(&mut s, Command::ApplyJob { spec: web, expected_version: None }).unwrap();
        bind(&mut s, "web", 0, "m1");
        bind(&mut s, "web", 1, "m2");
        report_running_at(&mut s, "m1", "web", 0, true, 0);
        report_running_at(&mut s, "m2", "web", 1, true, 0);
        let cfg =
            ReclaimConfig { warmup: Duration::from_secs(10), window: Duration::from_secs(10), ..Default::default() };
        let mut usage = HashMap::new();
        for (m, i) in [("m1", 0), ("m2", 1)] {
            let mut runs = TaskUsage::new();
            runs.insert(RunId::new("web", i, 1), (Resources::new(5, 10 * MIB, 0), 0.0));
            usage.insert(MachineId(m.into()), runs);
        }
        let (mut whole, mut parts) = (Estimator::default(), Estimator::default());
        for t in (0..=20_000).step_by(1_000) {
            whole.observe(usage.iter(), t, cfg.window);
            parts.begin_round();
            for m in ["m2", "m1"] {
                parts.observe_part(usage.get_key_value(&MachineId(m.into())), t, cfg.window);
            }
            parts.end_round();
        }
        let (all, fell) = whole.due(&s, &cfg, 20_000);
        assert!(fell);
        assert_eq!(all.len(), 2);
        let mut due = Vec::new();
        let mut fell_parts = false;
        for m in parts.machines() {
            fell_parts |= parts.due_part(&[m], &s, &cfg, 20_000, &mut due);
        }
        assert_eq!((finish_due(due), fell_parts), (all, fell));
        // a round that reports only m1 forgets m2
        parts.begin_round();
        parts.observe_part(usage.get_key_value(&MachineId("m1".into())), 21_000, cfg.window);
        parts.end_round();
        assert_eq!(parts.machines(), vec![MachineId("m1".into())]);
    }
}
