//! Health checks of task runs (the spec's `health`): which checks are due, and what their
//! results do. Liveness failing `failures` times in a row stops the process (SIGTERM to its
//! group, its grace period, SIGKILL) and it restarts per its restart policy with a message that
//! starts with `unhealthy`; readiness decides what [`TaskRun::ready`] reports. The probes
//! themselves run outside the runtime's lock ([`crate::probe`]).

use super::{Phase, Runtime, TaskRun};
use crate::cgroup::TaskCgroup;
use borg_jobspec::{Check, Probe, RunId};
use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Which of a task's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Failing: restart.
    Liveness,
    /// Failing: not ready.
    Readiness,
}

/// Health bookkeeping of one run (reset at every start of its process).
#[derive(Debug, Default)]
pub struct HealthState {
    started: Option<Instant>,
    next: [Option<Instant>; 2],
    in_flight: [bool; 2],
    failures: [u32; 2],
    ready: bool,
    /// Why liveness failed, once it did: the process is being stopped for it.
    pub(super) unhealthy: Option<String>,
    pub(super) kill_at: Option<Instant>,
}

impl HealthState {
    /// Fresh state for a process started at `now`.
    pub(super) fn started(now: Instant) -> HealthState {
        HealthState { started: Some(now), ..HealthState::default() }
    }
}

/// One probe to run now, with everything it needs (the runtime stays unlocked meanwhile).
#[derive(Debug, Clone)]
pub struct ProbeJob {
    /// The run probed.
    pub run: RunId,
    /// Which check.
    pub which: Which,
    /// What to probe.
    pub probe: Probe,
    /// The port number of the probe's named port (http, tcp).
    pub port: Option<u16>,
    /// How long it may take.
    pub timeout: Duration,
    /// For exec: the task's sandbox, environment, cgroup and user.
    pub sandbox: PathBuf,
    /// The task's environment.
    pub env: Vec<(String, String)>,
    /// The task's cgroup.
    pub cgroup: Option<TaskCgroup>,
    /// The task's user.
    pub user: Option<(u32, u32)>,
}

fn index(w: Which) -> usize {
    match w {
        Which::Liveness => 0,
        Which::Readiness => 1,
    }
}

fn check_of(run: &TaskRun, w: Which) -> Option<&Check> {
    match w {
        Which::Liveness => run.spec.health.liveness.as_deref(),
        Which::Readiness => run.spec.health.readiness.as_deref(),
    }
}

impl TaskRun {
    /// Running, and passing its readiness check (without one: running).
    pub fn ready(&self) -> bool {
        self.phase == Phase::Running
            && self.pid.is_some()
            && self.health.unhealthy.is_none()
            && (self.spec.health.readiness.is_none() || self.health.ready)
    }
}

impl Runtime {
    /// The checks due at `now` (each run's checks every period, after its initial delay, one at
    /// a time per check); they are marked in flight until [`Runtime::record_probe`].
    pub fn due_probes(&mut self, now: Instant) -> Vec<ProbeJob> {
        let mut jobs = Vec::new();
        let keys: Vec<RunId> = self.runs.keys().cloned().collect();
        for key in keys {
            for w in [Which::Liveness, Which::Readiness] {
                let Some(run) = self.runs.get(&key) else { continue };
                let Some(check) = check_of(run, w).cloned() else { continue };
                let h = &run.health;
                let i = index(w);
                let Some(started) = h.started else {
                    // adopted after a Borglet restart: its checks start now
                    if let Some(run) = self.runs.get_mut(&key) {
                        run.health.started = Some(now);
                    }
                    continue;
                };
                if run.phase != Phase::Running || run.pid.is_none() || h.unhealthy.is_some() || h.in_flight[i] {
                    continue;
                }
                let due = h.next[i].unwrap_or(started + Duration::from_millis(check.initial_delay_ms));
                if now < due {
                    continue;
                }
                let port = check.probe.port().and_then(|p| run.spec.ports.get(p).copied());
                let (sandbox, cgroup) = (run.sandbox.clone(), run.cgroup.clone());
                let env = self.env_for(&run.spec, &sandbox);
                jobs.push(ProbeJob {
                    run: key.clone(),
                    which: w,
                    probe: check.probe.clone(),
                    port,
                    timeout: Duration::from_millis(check.timeout_ms),
                    sandbox,
                    env,
                    cgroup,
                    user: self.task_user,
                });
                if let Some(run) = self.runs.get_mut(&key) {
                    run.health.in_flight[i] = true;
                    run.health.next[i] = Some(now + Duration::from_millis(check.period_ms));
                }
            }
        }
        jobs
    }

    /// Records the result of a probe of `run` started by [`Runtime::due_probes`] (`Err`: why it
    /// failed). A result for a process that has since been replaced is ignored.
    pub fn record_probe(&mut self, run: &RunId, which: Which, result: Result<(), String>, now: Instant) {
        let grace_of = |r: &TaskRun| Duration::from_millis(r.spec.grace_period_ms);
        let Some(r) = self.runs.get_mut(run) else { return };
        let i = index(which);
        if !r.health.in_flight[i] {
            return; // a probe of an earlier process of this run
        }
        r.health.in_flight[i] = false;
        let Some(check) = check_of(r, which).cloned() else { return };
        match result {
            Ok(()) => {
                r.health.failures[i] = 0;
                if which == Which::Readiness && !r.health.ready {
                    r.health.ready = true;
                    self.dirty = true;
                }
            }
            Err(why) => {
                r.health.failures[i] += 1;
                if r.health.failures[i] < check.failures {
                    return;
                }
                match which {
                    Which::Readiness => {
                        if r.health.ready {
                            tracing::info!(task = %r.spec.run_name(), %why, "not ready");
                            r.health.ready = false;
                            self.dirty = true;
                        }
                    }
                    Which::Liveness if r.health.unhealthy.is_none() => {
                        let text = format!("unhealthy: {} failed {} times: {why}", check.probe, check.failures);
                        tracing::warn!(task = %r.spec.run_name(), %text, "liveness failed: stopping the task");
                        if let Some(pid) = r.pid {
                            crate::process::signal_group(pid, Signal::SIGTERM);
                        }
                        r.health.kill_at = Some(now + grace_of(r));
                        r.health.unhealthy = Some(text);
                        self.dirty = true;
                    }
                    Which::Liveness => {}
                }
            }
        }
    }
}
