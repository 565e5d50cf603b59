//! The Borgmaster's Prometheus metrics: every name, help text and unit is declared here.
//!
//! Cell gauges are computed at scrape time from the cell state ([`refresh`]); counters and
//! histograms are recorded where things happen ([`on_events`], the scheduler loop, the link
//! shards). CPU is exported in cores, memory and disk in bytes, durations in seconds.

use crate::raft::RaftStatus;
use crate::state::{CellState, Event, EventKind, MachineState, PendingReason, TaskId, TaskState};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use scheduler_core::{Band, Resources};
use std::time::Duration;

/// Scheduling pass duration.
pub const PASS_SECONDS: &str = "borg_scheduling_pass_duration_seconds";
/// Counter: scheduling passes that ran a second time with plain best fit
/// (`scheduler_core::Params::second_pass`), by whether its placement was kept.
pub const SECOND_PASSES: &str = "borg_scheduling_second_passes_total";
/// Apply (or eviction) to running, per task.
pub const PLACEMENT_LATENCY: &str = "borg_placement_latency_seconds";
/// One poll of one Borglet, as the master sees it.
pub const POLL_SECONDS: &str = "borg_link_poll_duration_seconds";
/// Wall time of applying one committed log entry to the cell state (the state's write lock is
/// held that long); recorded by the Raft state machine, which names it.
pub const APPLY_SECONDS: &str = crate::raft::APPLY_SECONDS;
/// Elections started early because the silent leader was gone; named by the election watch.
pub const EARLY_ELECTIONS: &str = crate::raft::election::EARLY_ELECTIONS;
/// Commands per group commit.
pub const COMMIT_GROUP: &str = "borg_commit_group_size";
/// Tasks the kernel killed for exceeding their memory limit.
pub const OOM_KILLS: &str = "borg_task_oom_kills_total";
/// Evictions by reason.
pub const EVICTIONS: &str = "borg_evictions_total";
/// Task state transitions by kind.
pub const TRANSITIONS: &str = "borg_task_transitions_total";
/// Counter: machine events (registered, machine-down, cordoned, draining, drained, removed, ...), by kind.
pub const MACHINE_EVENTS: &str = "borg_machine_events_total";
/// Times this replica became the leader.
pub const LEADER_ELECTED: &str = "borg_raft_leader_elections_won_total";
/// Seconds from this replica's election to the end of its first full poll round.
pub const FIRST_POLL_ROUND: &str = "borg_leader_first_poll_round_seconds";
/// Counter: successful polls, by whether the answer listed the machine's tasks (`listed`) or
/// left them out because nothing the master records changed (`unchanged`).
pub const POLL_ANSWERS: &str = "borg_link_poll_answers_total";
/// Counter: task reports the leader's pollers handed to the log (a report is proposed once, and
/// again only after a commit failed: more than the cell's task changes means copies).
pub const REPORTS_PROPOSED: &str = "borg_link_reports_proposed_total";
/// Gauge (leader only): seconds since the oldest last poll answer among up machines, at scrape
/// time; a full poll round fits in the poll interval while it stays under it. 0 on a follower
/// and in a cell with no machine up.
pub const OLDEST_POLL: &str = "borg_link_oldest_poll_age_seconds";
/// Counter (leader only): polls that ended (answered, failed or timed out) after their
/// machine's next poll was due, so that machine's next poll started late: the rounds fell
/// behind the poll interval. 0 while every full poll round fits in the interval.
pub const POLL_OVERRUNS: &str = "borg_link_poll_overruns_total";
/// Counter (leader only): polls built, by whether the machine's tasks were walked for them
/// (`walk=walked`: its poll generation moved, or its set was sent) or its last digests still
/// held (`walk=skipped`).
pub const POLL_WALKS: &str = "borg_link_poll_walks_total";
/// Counter (leader only): desired sets sent to Borglets, by `sent=whole` (the whole set: the
/// master does not know what the Borglet holds) or `sent=delta` (only what changed since the
/// set it holds).
pub const POLL_SETS: &str = "borg_link_poll_sets_total";

const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Installs the global Prometheus recorder and returns the handle that renders `/metrics`.
/// Gauges not set for 30 s disappear (a task or machine that went away).
///
/// Errors: a recorder is already installed.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)?
        .idle_timeout(metrics_util::MetricKindMask::GAUGE, Some(Duration::from_secs(30)))
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    for (r, unit) in [("cpu_cores", Unit::Count), ("ram_bytes", Unit::Bytes), ("disk_bytes", Unit::Bytes)] {
        describe_gauge!(format!("borg_cell_capacity_{r}"), unit, "Capacity of the machines that are up.");
        describe_gauge!(
            format!("borg_cell_allocated_{r}"),
            unit,
            "Requests of tasks bound to machines, by priority band."
        );
        describe_gauge!(
            format!("borg_cell_free_{r}"),
            unit,
            "Capacity minus allocation, summed over machines that are up."
        );
        describe_gauge!(
            format!("borg_cell_reserved_{r}"),
            unit,
            "Reservations of tasks bound to machines (Borg §5.5: estimated from usage; the request until estimated), by priority band."
        );
        describe_gauge!(
            format!("borg_cell_reclaimed_{r}"),
            unit,
            "Requests minus reservations of tasks bound to machines: resources reclaimed from them, which batch and free tasks may run in, by priority band."
        );
        describe_gauge!(format!("borg_cell_stranded_{r}"), unit, "Free resources no task can use because another dimension of the same machine is nearly exhausted (under 5% free).");
    }
    describe_gauge!(
        "borg_cell_used_cpu_cores",
        Unit::Count,
        "CPU the Borglets report tasks using, by priority band (average over the last poll interval)."
    );
    describe_gauge!(
        "borg_cell_used_ram_bytes",
        Unit::Bytes,
        "Memory the Borglets report tasks using, by priority band."
    );
    describe_gauge!("borg_tasks", Unit::Count, "Tasks by state (pending, running, dead) and priority band.");
    describe_gauge!(
        "borg_tasks_pending",
        Unit::Count,
        "Pending tasks by reason (submitted, updated, preempted, machine_down, alloc_evicted; starting: placed, not yet running)."
    );
    describe_gauge!("borg_jobs", Unit::Count, "Jobs by state (pending, running, done, killed).");
    describe_gauge!("borg_machines", Unit::Count, "Machines by state (up, down).");
    describe_gauge!("borg_machine_up", Unit::Count, "1 if the machine answers polls, 0 if it is down.");
    describe_gauge!("borg_state_applied_index", Unit::Count, "Index of the last log entry applied to the cell state.");
    describe_gauge!("borg_raft_is_leader", Unit::Count, "1 on the replica that leads the master group, else 0.");
    describe_gauge!("borg_raft_term", Unit::Count, "This replica's current Raft term.");
    describe_gauge!("borg_raft_last_log_index", Unit::Count, "Index of the last entry in this replica's Raft log.");
    describe_gauge!("borg_raft_voters", Unit::Count, "Voting replicas in the master group.");
    describe_gauge!(
        FIRST_POLL_ROUND,
        Unit::Seconds,
        "Seconds from this replica's latest election to every registered machine having answered a poll."
    );
    describe_counter!(LEADER_ELECTED, Unit::Count, "Times this replica became the leader and started its duties.");
    describe_counter!(
        OOM_KILLS,
        Unit::Count,
        "Task exits caused by the kernel's OOM killer (the task exceeded its RAM request, the cgroup memory limit)."
    );
    describe_counter!(
        EVICTIONS,
        Unit::Count,
        "Tasks evicted, by reason (preempted, machine_down, alloc_evicted, drain)."
    );
    describe_counter!(
        MACHINE_EVENTS,
        Unit::Count,
        "Machine events by kind (registered, machine-up, machine-down, cordoned, uncordoned, draining, drained, removed)."
    );
    describe_gauge!(
        "borg_machine_lifecycle",
        Unit::Count,
        "Machines by lifecycle state (up, cordoned, draining, drained, down), as `borgctl machines` shows it."
    );
    describe_counter!(
        TRANSITIONS,
        Unit::Count,
        "Task state transitions, by kind (scheduled, running, dead, pending, preempted, stopping)."
    );
    describe_histogram!(PASS_SECONDS, Unit::Seconds, "Wall time of one scheduling pass, snapshot to commit.");
    describe_counter!(
        SECOND_PASSES,
        Unit::Count,
        "Passes that left production work pending for room their own choices took and ran again with plain best fit, by whether the best-fit placement was kept (kept=true|false)."
    );
    describe_histogram!(
        PLACEMENT_LATENCY,
        Unit::Seconds,
        "From a task becoming pending (apply, update, eviction) to its Borglet reporting it running."
    );
    describe_histogram!(
        POLL_SECONDS,
        Unit::Seconds,
        "Round trip of one poll of one Borglet, as the master measures it."
    );
    describe_counter!(
        POLL_ANSWERS,
        Unit::Count,
        "Successful polls, by answer: tasks=listed (every task's status and usage) or tasks=unchanged (the task-status digest matched the committed state: no statuses sent)."
    );
    describe_gauge!(
        OLDEST_POLL,
        Unit::Seconds,
        "Leader only: seconds since the oldest last successful poll answer among up machines (a machine not yet answered in this leadership counts from the election); 0 on a follower and with no machine up."
    );
    describe_counter!(
        POLL_OVERRUNS,
        Unit::Count,
        "Leader only: polls that ended after their machine's next poll was due (the poll rounds fell behind the poll interval); 0 while every round fits in the interval."
    );
    describe_counter!(
        POLL_WALKS,
        Unit::Count,
        "Leader only: polls built, by walk=walked (the machine's tasks walked for its digests: something bound to it changed) or walk=skipped (the digests of the last walk still held)."
    );
    describe_counter!(
        POLL_SETS,
        Unit::Count,
        "Leader only: desired task sets sent to Borglets, by sent=whole (the whole set) or sent=delta (only the tasks new, changed or removed since the set the Borglet holds)."
    );
    describe_counter!(
        REPORTS_PROPOSED,
        Unit::Count,
        "Task reports (state changes Borglets observed) the leader's pollers proposed to the log; a report is proposed again only after a commit failed."
    );
    describe_histogram!(
        APPLY_SECONDS,
        Unit::Seconds,
        "Wall time of applying one committed log entry (one group of commands) to the cell state; readers of the state wait that long."
    );
    describe_histogram!(COMMIT_GROUP, Unit::Count, "Commands written by one synced log write (group commit).");
    describe_counter!(
        EARLY_ELECTIONS,
        Unit::Count,
        "Elections this replica stood for as soon as its leader's lease passed in silence and the leader did not answer (answer=none) or answered that it no longer leads (answer=not_leader), instead of waiting out openraft's timer."
    );
}

fn band(b: usize) -> &'static str {
    Band::ALL[b].name()
}

fn set_resources(prefix: &str, r: Resources, labels: &[(&'static str, String)]) {
    gauge!(format!("{prefix}_cpu_cores"), labels).set(r.cpu_millis as f64 / 1000.0);
    gauge!(format!("{prefix}_ram_bytes"), labels).set(r.ram_bytes as f64);
    if !prefix.starts_with("borg_cell_used") {
        gauge!(format!("{prefix}_disk_bytes"), labels).set(r.disk_bytes as f64);
    }
}

/// Pending-reason label of a pending task: `starting` once placed, else why it was queued.
fn pending_label(reason: Option<PendingReason>, bound: bool) -> &'static str {
    if bound {
        "starting"
    } else {
        reason.unwrap_or(PendingReason::Submitted).as_str()
    }
}

/// What the scrape-time gauges show, read from the cell state and the soft state under their
/// locks by [`read_gauges`]; [`set_gauges`] then sets them with the locks released (setting
/// 10,000 per-machine gauges took part of a scrape's hold of the state's read lock).
pub struct Gauges {
    usage: crate::usage::CellUsage,
    /// Pending tasks by `borg_tasks_pending` reason (every reason, 0 included).
    reasons: std::collections::BTreeMap<&'static str, u32>,
    /// Jobs by state name.
    jobs: std::collections::BTreeMap<&'static str, u32>,
    /// Machines by lifecycle state.
    lifecycle: [(&'static str, usize); 5],
    /// Each machine's id and whether it is up, in id order.
    machines: Vec<(String, bool)>,
    applied_index: u64,
    /// The leader's oldest poll answer among up machines, ms ([`crate::soft::SoftState::oldest_poll_age_ms`]).
    oldest_poll_ms: Option<i64>,
}

/// The scrape-time gauges' values: `usage` (the cell's accounting,
/// [`crate::master::Master::cell_usage`]), `oldest_poll_ms`
/// ([`crate::soft::SoftState::oldest_poll_age_ms`]), and from `state` one sweep over its jobs for the
/// pending reasons. Reads nothing of the soft state, so a scrape never holds the lock every
/// poller takes.
pub fn read_gauges(state: &CellState, usage: crate::usage::CellUsage, oldest_poll_ms: Option<i64>) -> Gauges {
    let mut reasons = std::collections::BTreeMap::<&'static str, u32>::new();
    for r in PendingReason::ALL.map(PendingReason::as_str).into_iter().chain(["starting"]) {
        reasons.insert(r, 0);
    }
    let mut jobs = std::collections::BTreeMap::<&'static str, u32>::new();
    for j in state.jobs.values() {
        *jobs.entry(j.state_name()).or_default() += 1;
        for t in j.tasks.iter().filter(|t| t.state == TaskState::Pending) {
            *reasons.entry(pending_label(t.pending_reason, t.machine.is_some())).or_default() += 1;
        }
    }
    Gauges {
        usage,
        reasons,
        jobs,
        lifecycle: state.machines_by_state(),
        machines: state.machines.values().map(|m| (m.id.0.clone(), m.state == MachineState::Up)).collect(),
        applied_index: state.applied_index,
        oldest_poll_ms,
    }
}

/// Sets every scrape-time gauge from `g` (see [`read_gauges`]) and this replica's Raft status.
/// Call right before rendering.
pub fn set_gauges(g: Gauges, raft: &RaftStatus) {
    let u = &g.usage;
    set_resources("borg_cell_capacity", u.capacity, &[]);
    set_resources("borg_cell_free", u.free, &[]);
    set_resources("borg_cell_stranded", u.stranded, &[]);
    for (b, bu) in u.bands.iter().enumerate() {
        let l = [("band", band(b).to_string())];
        set_resources("borg_cell_allocated", bu.allocated, &l);
        set_resources("borg_cell_used", bu.used, &l);
        set_resources("borg_cell_reserved", bu.reserved, &l);
        set_resources("borg_cell_reclaimed", bu.reclaimed, &l);
        for (st, n) in [("pending", bu.pending), ("running", bu.running), ("dead", bu.dead)] {
            gauge!("borg_tasks", "state" => st, "band" => band(b)).set(n as f64);
        }
    }
    for (r, n) in g.reasons {
        gauge!("borg_tasks_pending", "reason" => r).set(n as f64);
    }
    for s in ["pending", "running", "done", "killed"] {
        gauge!("borg_jobs", "state" => s).set(g.jobs.get(s).copied().unwrap_or(0) as f64);
    }
    gauge!("borg_machines", "state" => "up").set(u.machines_up as f64);
    gauge!("borg_machines", "state" => "down").set(u.machines_down as f64);
    for (st, n) in g.lifecycle {
        gauge!("borg_machine_lifecycle", "state" => st).set(n as f64);
    }
    for (id, up) in g.machines {
        gauge!("borg_machine_up", "machine" => id).set(if up { 1.0 } else { 0.0 });
    }
    gauge!("borg_state_applied_index").set(g.applied_index as f64);
    // 0 where this replica polls nothing (a follower, or no machine up): a replica that led
    // before must not go on showing its last leadership's age
    gauge!(OLDEST_POLL).set(g.oldest_poll_ms.unwrap_or(0) as f64 / 1000.0);
    gauge!("borg_raft_is_leader").set(if raft.is_leader { 1.0 } else { 0.0 });
    gauge!("borg_raft_term").set(raft.term as f64);
    gauge!("borg_raft_last_log_index").set(raft.last_log_index as f64);
    gauge!("borg_raft_voters").set(raft.voters as f64);
}

/// Counts the transitions and evictions in `events` (just applied to `state`) and records the
/// placement latency of tasks that started running.
pub fn on_events(state: &CellState, events: &[Event]) {
    for e in events.iter().filter(|e| e.index.is_none() && e.machine.is_some()) {
        counter!(MACHINE_EVENTS, "kind" => e.kind.as_str()).increment(1);
    }
    for e in events.iter().filter(|e| e.index.is_some()) {
        counter!(TRANSITIONS, "kind" => e.kind.as_str()).increment(1);
        // only evictions carry a cause: preemption, machine loss, alloc eviction
        if let Some(cause) = e.cause {
            counter!(EVICTIONS, "reason" => cause.as_str()).increment(1);
        }
        match e.kind {
            EventKind::Dead if e.detail.starts_with(borg_jobspec::OOM_REASON) => counter!(OOM_KILLS).increment(1),
            EventKind::Running => {
                if let Some(t) = e.index.and_then(|i| state.task(&TaskId::new(&e.job, i))) {
                    let secs = (e.time_ms - t.queued_ms).max(0) as f64 / 1000.0;
                    histogram!(PLACEMENT_LATENCY).record(secs);
                }
            }
            _ => {}
        }
    }
}
