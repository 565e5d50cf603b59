//! The Borglet's task lifecycle: converge the processes on this machine to the desired task set.
//!
//! Level-triggered: [`Runtime::set_desired`] replaces the desired set (from the master's poll),
//! and [`Runtime::tick`] (run every 100 ms and after each poll) starts what is missing, reaps what
//! exited, restarts per policy with exponential backoff, and stops what is no longer desired
//! (SIGTERM to the process group, the task's grace period, then SIGKILL to the group and to
//! anything left in its cgroup). Nothing here depends on the master being reachable: tasks keep
//! running, and keep being restarted, while it is down.
//!
//! The runtime persists itself to `<work-dir>/borglet-state.json` on every change. After a
//! Borglet restart it **adopts** the processes it started (matching pid and start time, so a
//! reused pid is never mistaken for a task): they keep running undisturbed. An adopted process
//! is not our child, so when it exits its exit status is unknown; it is treated as a failure for
//! the restart policy (a task whose success cannot be proven is retried).

mod health;
mod persist;
mod task;

pub use health::{ProbeJob, Which};

use task::{backoff, should_restart};
pub use task::{oom_text, Phase, RunUsage, TaskRun, TaskSpec, BASE_BACKOFF, MAX_BACKOFF};

use crate::cgroup::{CgroupSupport, TaskCgroup};
use crate::process;
use borg_jobspec::{RunId, TaskId};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The run a sandbox directory name (`<job>.<index>.<incarnation>`) belongs to.
fn run_of_sandbox(name: &str) -> Option<RunId> {
    let (rest, inc) = name.rsplit_once('.')?;
    let (job, index) = rest.rsplit_once('.')?;
    Some(RunId::new(job, index.parse().ok()?, inc.parse().ok()?))
}

/// Where and as whom a command runs inside a task (`borgctl exec`), like its exec checks.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// The run it runs in.
    pub run: RunId,
    /// Working directory.
    pub sandbox: PathBuf,
    /// Exactly the task's environment.
    pub env: Vec<(String, String)>,
    /// The task's cgroup (joined before exec).
    pub cgroup: Option<TaskCgroup>,
    /// The task's uid and gid.
    pub user: Option<(u32, u32)>,
}

/// All task runs of this machine and the desired set they converge to.
pub struct Runtime {
    machine_id: String,
    /// Cell name, from the master's polls (for BORG_CELL).
    pub cell: String,
    work_dir: PathBuf,
    cgroups: CgroupSupport,
    desired: BTreeMap<TaskId, TaskSpec>,
    /// Version of the desired set last applied (0 = none).
    pub applied_version: u64,
    runs: BTreeMap<RunId, TaskRun>,
    dirty: bool,
    /// (uid, gid) tasks run as; None: as the Borglet's own user (it is not root, or the cell
    /// runs tasks as root).
    pub task_user: Option<(u32, u32)>,
    /// Whether orphans in this machine's cgroups were reaped (at the first desired set).
    orphans_reaped: bool,
}

impl Runtime {
    /// A runtime for machine `machine_id` working under `work_dir`; reloads and adopts what a
    /// previous Borglet left in `<work_dir>/borglet-state.json`.
    ///
    /// Errors: the work dir cannot be created. A damaged state file is logged and ignored.
    pub fn new(machine_id: &str, work_dir: &Path, cgroups: CgroupSupport) -> std::io::Result<Runtime> {
        std::fs::create_dir_all(work_dir.join("tasks"))?;
        let mut rt = Runtime {
            machine_id: machine_id.to_string(),
            cell: String::new(),
            work_dir: work_dir.to_path_buf(),
            cgroups,
            desired: BTreeMap::new(),
            applied_version: 0,
            runs: BTreeMap::new(),
            dirty: false,
            task_user: None,
            orphans_reaped: false,
        };
        rt.load();
        Ok(rt)
    }

    /// Replaces the desired task set (`version` is the master's digest of it).
    pub fn set_desired(&mut self, version: u64, cell: &str, tasks: Vec<TaskSpec>) {
        self.desired = tasks.into_iter().map(|t| (t.task_id(), t)).collect();
        self.applied_version = version;
        self.cell = cell.to_string();
        self.dirty = true;
        self.desired_confirmed();
    }

    /// Applies a delta from the master (`PollRequest.base_version`): when this Borglet holds the
    /// set of digest `base`, drops the tasks in `removed`, takes `added` (new tasks, or new runs
    /// or versions of tasks it holds) and holds `version`, provided the result's digest
    /// ([`borg_proto::desired_digest`]) is `version`. Returns whether it did; otherwise nothing
    /// changed (the master then sends the whole set).
    pub fn apply_delta(
        &mut self,
        base: u64,
        version: u64,
        cell: &str,
        removed: &[TaskId],
        added: Vec<TaskSpec>,
    ) -> bool {
        if base == 0 || base != self.applied_version {
            return false;
        }
        let added: BTreeMap<TaskId, TaskSpec> = added.into_iter().map(|t| (t.task_id(), t)).collect();
        let removed: std::collections::BTreeSet<&TaskId> = removed.iter().collect();
        let mut result: Vec<&TaskSpec> = self
            .desired
            .iter()
            .filter(|(id, _)| !removed.contains(id) && !added.contains_key(*id))
            .map(|(_, t)| t)
            .chain(added.values())
            .collect();
        result.sort_by(|a, b| (a.job.as_str(), a.index).cmp(&(b.job.as_str(), b.index)));
        let digest =
            borg_proto::desired_digest(result.iter().map(|t| (t.job.as_str(), t.index, t.incarnation, t.job_version)));
        if digest != version {
            tracing::warn!(
                base,
                version,
                digest,
                "a delta from the master does not give its set; keeping ours (the master sends the whole set)"
            );
            return false;
        }
        for id in removed {
            self.desired.remove(id);
        }
        self.desired.extend(added);
        self.applied_version = version;
        self.cell = cell.to_string();
        self.dirty = true;
        self.desired_confirmed();
        true
    }

    /// The master confirmed the desired set (a poll whose version matches the one applied):
    /// reaps orphans the first time.
    pub fn desired_confirmed(&mut self) {
        if !self.orphans_reaped {
            self.orphans_reaped = true;
            self.reap_orphans();
        }
    }

    fn is_desired(&self, run: &RunId) -> bool {
        self.desired.get(&run.task).is_some_and(|t| t.incarnation == run.incarnation)
    }

    pub(super) fn env_for(&self, t: &TaskSpec, sandbox: &Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.push(("PATH".into(), process::TASK_PATH.into()));
        env.push(("HOME".into(), sandbox.display().to_string()));
        env.push(("BORG_CELL".into(), self.cell.clone()));
        env.push(("BORG_JOB".into(), t.job.clone()));
        env.push(("BORG_TASK_INDEX".into(), t.index.to_string()));
        env.push(("BORG_USER".into(), t.user.clone()));
        for (name, port) in &t.ports {
            env.push((borg_jobspec::job::port_env(name), port.to_string()));
        }
        env
    }

    /// Starts (or restarts) the process of `run`; on failure the run exits like a failed process.
    fn start(&mut self, key: &RunId, now: Instant) {
        let Some(run) = self.runs.get(key) else { return };
        let spec = run.spec.clone();
        let sandbox = run.sandbox.clone();
        let env = self.env_for(&spec, &sandbox);
        let cgroup = match &run.cgroup {
            Some(c) => Ok(Some(c.clone())),
            None => self.cgroups.create(&self.machine_id, &spec.run_name(), spec.resources, spec.priority),
        };
        let user = self.task_user;
        let result = std::fs::create_dir_all(&sandbox)
            .and_then(|_| process::own_sandbox(&sandbox, user))
            .and(cgroup)
            .and_then(|cg| process::spawn(&spec.command, &sandbox, &env, cg.as_ref(), user).map(|c| (c, cg)));
        self.dirty = true;
        let Some(run) = self.runs.get_mut(key) else { return };
        match result {
            Ok((child, cg)) => {
                let pid = child.id();
                run.start_ticks = process::start_ticks(pid).unwrap_or(0);
                run.child = Some(child);
                run.pid = Some(pid);
                run.cgroup = cg;
                run.phase = Phase::Running;
                run.sigkilled = false;
                run.health = health::HealthState::started(now);
                run.message = match (run.restarts, &run.last_exit) {
                    (0, _) => "running".into(),
                    (n, Some(last)) => format!("running after {n} restarts (last: {last})"),
                    (n, None) => format!("running after {n} restarts"),
                };
                tracing::info!(task = %spec.run_name(), pid, "task started");
            }
            Err(e) => {
                tracing::warn!(task = %spec.run_name(), error = %e, "task did not start");
                run.pid = None;
                run.child = None;
                Self::after_exit(run, None, None, format!("{e}"), true, false, now);
            }
        }
    }

    /// Decides what follows an exit: restart after backoff, or dead for good.
    fn after_exit(
        run: &mut TaskRun,
        code: Option<i32>,
        signal: Option<i32>,
        what: String,
        desired: bool,
        failed: bool,
        now: Instant,
    ) {
        run.exit_code = code;
        run.signal = signal;
        run.pid = None;
        run.child = None;
        // a process stopped for failing its liveness check failed, whatever its exit status
        let success = code == Some(0) && signal.is_none() && !failed;
        run.last_exit = Some(what.clone());
        if desired && should_restart(&run.spec.restart, success, run.restarts) {
            let delay = backoff(run.restarts);
            run.phase = Phase::Backoff;
            run.deadline = Some(now + delay);
            run.message = format!("{what}; restarting in {:.1}s", delay.as_secs_f64());
        } else {
            run.phase = Phase::Exited;
            run.deadline = None;
            run.message = if run.restarts > 0 { format!("{what} after {} restarts", run.restarts) } else { what };
            if let Some(cg) = &run.cgroup {
                cg.remove();
            }
        }
    }

    /// One convergence step at time `now`: reap exits, restart, stop, start. Persists changes.
    pub fn tick(&mut self, now: Instant) {
        let keys: Vec<_> = self.runs.keys().cloned().collect();
        // 1. Reap exits and escalate stops.
        for key in &keys {
            let desired = self.is_desired(key);
            let Some(run) = self.runs.get_mut(key) else { continue };
            if !matches!(run.phase, Phase::Running | Phase::Stopping) {
                continue;
            }
            let exit = match (&mut run.child, run.pid) {
                (Some(child), _) => match child.try_wait() {
                    Ok(Some(status)) => Some(process::exit_parts(status)),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(task = %run.spec.run_name(), error = %e, "wait failed");
                        Some((None, None))
                    }
                },
                (None, Some(pid)) => (process::start_ticks(pid) != Some(run.start_ticks)).then_some((None, None)),
                (None, None) => Some((None, None)),
            };
            match exit {
                Some((code, signal)) => {
                    if let Some(pid) = run.pid {
                        process::signal_group(pid, Signal::SIGKILL); // stragglers of the group
                    }
                    if let Some(cg) = &run.cgroup {
                        process::kill_cgroup(cg);
                    }
                    self.dirty = true;
                    if run.phase == Phase::Stopping {
                        if let Some(cg) = &run.cgroup {
                            cg.remove();
                        }
                        tracing::info!(task = %run.spec.run_name(), "task stopped");
                        self.runs.remove(key);
                        continue;
                    }
                    if let Some(why) = run.reclaimed.clone() {
                        // stopped to give memory back: the run ends here, the master reschedules
                        run.exit_code = code;
                        run.signal = signal;
                        run.pid = None;
                        run.child = None;
                        run.phase = Phase::Exited;
                        run.deadline = None;
                        run.message = why;
                        if let Some(cg) = &run.cgroup {
                            cg.remove();
                        }
                        tracing::info!(task = %run.spec.run_name(), "task stopped: its memory was reclaimed");
                        continue;
                    }
                    let ooms = run.cgroup.as_ref().map_or(0, TaskCgroup::oom_kills);
                    let oom = ooms > run.oom_seen && signal == Some(Signal::SIGKILL as i32);
                    run.oom_seen = ooms;
                    let unhealthy = run.health.unhealthy.take();
                    let what = match (code, signal, run.child.is_none() && run.pid.is_some()) {
                        _ if unhealthy.is_some() => unhealthy.clone().unwrap_or_default(),
                        _ if oom => {
                            metrics::counter!(crate::metrics::OOM_KILLS, "job" => run.spec.job.clone()).increment(1);
                            oom_text(run.spec.resources.ram_bytes)
                        }
                        (None, None, true) => "exited while the Borglet was restarting (status unknown)".to_string(),
                        _ => borg_jobspec::exit_text(code, signal),
                    };
                    tracing::info!(task = %run.spec.run_name(), ?code, ?signal, "task exited");
                    Self::after_exit(run, code, signal, what, desired, unhealthy.is_some(), now);
                }
                None if run.phase == Phase::Running
                    && !run.sigkilled
                    && run.health.kill_at.is_some_and(|d| now >= d) =>
                {
                    // failed its liveness check and outlived its grace period
                    if let Some(pid) = run.pid {
                        tracing::info!(task = %run.spec.run_name(), pid, "unhealthy and still running after its grace period; SIGKILL");
                        process::signal_group(pid, Signal::SIGKILL);
                    }
                    if let Some(cg) = &run.cgroup {
                        process::kill_cgroup(cg);
                    }
                    run.sigkilled = true;
                }
                None if run.phase == Phase::Stopping && !run.sigkilled && run.deadline.is_some_and(|d| now >= d) => {
                    if let Some(pid) = run.pid {
                        tracing::info!(task = %run.spec.run_name(), pid, "grace period over; SIGKILL");
                        process::signal_group(pid, Signal::SIGKILL);
                    }
                    if let Some(cg) = &run.cgroup {
                        process::kill_cgroup(cg);
                    }
                    run.sigkilled = true;
                }
                None => {}
            }
        }
        // 2. Stop or drop runs that are no longer desired.
        for key in &keys {
            if self.is_desired(key) {
                continue;
            }
            let Some(run) = self.runs.get_mut(key) else { continue };
            match run.phase {
                Phase::Running => {
                    let grace = Duration::from_millis(run.spec.grace_period_ms);
                    if let Some(pid) = run.pid {
                        tracing::info!(task = %run.spec.run_name(), pid, grace_ms = run.spec.grace_period_ms, "stopping: SIGTERM");
                        process::signal_group(pid, Signal::SIGTERM);
                    }
                    run.phase = Phase::Stopping;
                    run.deadline = Some(now + grace);
                    run.message = "stopping".into();
                    self.dirty = true;
                }
                Phase::Backoff | Phase::Exited => {
                    if let Some(cg) = &run.cgroup {
                        cg.remove();
                    }
                    self.runs.remove(key);
                    self.dirty = true;
                }
                Phase::Stopping => {}
            }
        }
        // 3. Restart runs whose backoff ended.
        for key in &keys {
            let due =
                self.runs.get(key).is_some_and(|r| r.phase == Phase::Backoff && r.deadline.is_some_and(|d| now >= d));
            if due && self.is_desired(key) {
                if let Some(run) = self.runs.get_mut(key) {
                    run.restarts += 1;
                }
                self.start(key, now);
            }
        }
        // 4. Start desired tasks that have no run.
        let missing: Vec<TaskSpec> =
            self.desired.values().filter(|t| !self.runs.contains_key(&t.run_id())).cloned().collect();
        for spec in missing {
            let key = spec.run_id();
            let sandbox = self.work_dir.join("tasks").join(spec.run_name());
            self.runs.insert(key.clone(), TaskRun::new(spec, sandbox));
            self.start(&key, now);
        }
        self.save();
    }

    /// Every run, sorted by (job, index, incarnation).
    pub fn runs(&self) -> impl Iterator<Item = &TaskRun> {
        self.runs.values()
    }

    /// Memory-pressure eviction (Borg §5.5: non-production tasks run in resources reclaimed
    /// from production, and give them back when production needs them). When the working set of
    /// this machine's tasks exceeds `threshold` (0..1) of `capacity_bytes`, stops batch and free
    /// tasks (priority below 200), lowest priority first and the largest first within one, until
    /// the rest fit under the threshold (SIGKILL to the group and the cgroup: memory is needed
    /// now). Production and monitoring tasks are never stopped here; if they alone exceed the
    /// machine, the kernel's OOM killer and their own limits decide. Each stopped run ends
    /// (no restart) and is reported DEAD with `reclaimed`, so the master sends the task back to
    /// pending with reason `reclaimed`.
    ///
    /// Returns the runs stopped, with their working sets in bytes.
    pub fn reclaim_memory(&mut self, capacity_bytes: u64, threshold: f64) -> Vec<(RunId, u64)> {
        let limit = (capacity_bytes as f64 * threshold) as u64;
        let mut live: Vec<(RunId, i32, u64)> = self
            .runs
            .iter()
            .filter(|(_, r)| r.phase == Phase::Running && r.pid.is_some() && r.reclaimed.is_none())
            .map(|(k, r)| {
                let mem = match (&r.cgroup, r.pid) {
                    (Some(cg), _) => cg.usage().memory_bytes,
                    (None, Some(pid)) => process::proc_usage(pid).map_or(0, |(_, m)| m),
                    (None, None) => 0,
                };
                (k.clone(), r.spec.priority, mem)
            })
            .collect();
        let mut total: u64 = live.iter().map(|(_, _, m)| *m).sum();
        if total <= limit {
            return Vec::new();
        }
        live.retain(|(_, p, _)| *p < 200);
        live.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        let mut stopped = Vec::new();
        for (key, _, mem) in live {
            if total <= limit {
                break;
            }
            let Some(run) = self.runs.get_mut(&key) else { continue };
            let why = format!(
                "reclaimed: stopped to give memory back to production tasks (the machine's tasks used {} of its {}, over {:.0}%)",
                scheduler_core::format_bytes(total),
                scheduler_core::format_bytes(capacity_bytes),
                threshold * 100.0
            );
            tracing::warn!(task = %run.spec.run_name(), bytes = mem, "{why}");
            if let Some(pid) = run.pid {
                process::signal_group(pid, Signal::SIGKILL);
            }
            if let Some(cg) = &run.cgroup {
                process::kill_cgroup(cg);
            }
            run.sigkilled = true;
            run.reclaimed = Some(why);
            self.dirty = true;
            total = total.saturating_sub(mem);
            stopped.push((key, mem));
        }
        stopped
    }

    /// Samples the usage of every run (CPU rate since the previous sample).
    pub fn sample_usage(&mut self, now: Instant) -> Vec<RunUsage> {
        self.runs
            .values_mut()
            .map(|r| {
                let (cpu_seconds, memory_bytes) = match (&r.cgroup, r.pid) {
                    (Some(cg), _) => {
                        let u = cg.usage();
                        (u.cpu_seconds, u.memory_bytes)
                    }
                    (None, Some(pid)) => process::proc_usage(pid).unwrap_or_default(),
                    (None, None) => (0.0, 0),
                };
                if let Some((t0, c0)) = r.last_cpu {
                    let dt = now.duration_since(t0).as_secs_f64();
                    if dt > 0.0 {
                        r.cpu_rate_millis = (((cpu_seconds - c0).max(0.0) / dt) * 1000.0) as u64;
                    }
                }
                r.last_cpu = Some((now, cpu_seconds));
                RunUsage { cpu_seconds, cpu_millis: r.cpu_rate_millis, memory_bytes }
            })
            .collect()
    }

    /// Where a command runs inside task `job/index` (`borgctl exec`): its newest live run's id,
    /// sandbox, environment, cgroup and user; `None` when no run of it has a process here.
    pub fn exec_context(&self, job: &str, index: u32) -> Option<ExecContext> {
        let (id, run) = self.newest(job, index)?;
        if run.phase != Phase::Running || run.pid.is_none() {
            return None;
        }
        Some(ExecContext {
            run: id.clone(),
            sandbox: run.sandbox.clone(),
            env: self.env_for(&run.spec, &run.sandbox),
            cgroup: run.cgroup.clone(),
            user: self.task_user,
        })
    }

    fn newest(&self, job: &str, index: u32) -> Option<(&RunId, &TaskRun)> {
        self.runs.iter().rev().find(|(k, _)| k.task.job == job && k.task.index == index)
    }

    /// The newest run of task `job/index` this Borglet knows (live or exited) and its sandbox.
    pub fn newest_run(&self, job: &str, index: u32) -> Option<(RunId, PathBuf)> {
        self.newest(job, index).map(|(k, r)| (k.clone(), r.sandbox.clone()))
    }

    /// Whether run `id` may still write output: it is known here and has not exited for good.
    pub fn is_live(&self, id: &RunId) -> bool {
        self.runs.get(id).is_some_and(|r| r.phase != Phase::Exited)
    }

    /// Removes the sandboxes of runs this Borglet no longer has (they ended and the master
    /// dropped them from the desired set) that have not changed for `retention`; returns them.
    /// A run it still has is never touched, nor anything before the master has confirmed the
    /// desired set after a restart (adoption may still claim it).
    pub fn collect_sandboxes(&self, retention: Duration) -> Vec<PathBuf> {
        if !self.orphans_reaped {
            return Vec::new();
        }
        let Ok(dir) = std::fs::read_dir(self.work_dir.join("tasks")) else { return Vec::new() };
        let mut removed = Vec::new();
        for e in dir.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(run) = run_of_sandbox(&name) else { continue };
            if self.runs.contains_key(&run) {
                continue;
            }
            let idle = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
            if idle.is_some_and(|d| d >= retention) && std::fs::remove_dir_all(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
        removed
    }

    /// Sandbox of the newest run of task `job/index`, living or not, if any exists on disk.
    pub fn sandbox_of(&self, job: &str, index: u32) -> Option<PathBuf> {
        let prefix = format!("{job}.{index}.");
        let newest = std::fs::read_dir(self.work_dir.join("tasks"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let inc: u64 = name.strip_prefix(&prefix)?.parse().ok()?;
                Some((inc, e.path()))
            })
            .max_by_key(|(inc, _)| *inc)?;
        Some(newest.1)
    }

    /// Stops every process at once (SIGKILL): for tests and `--kill-tasks-on-exit`.
    pub fn kill_all(&mut self) {
        for r in self.runs.values_mut() {
            if let Some(pid) = r.pid {
                process::signal_group(pid, Signal::SIGKILL);
            }
            if let Some(c) = r.child.as_mut() {
                let _ = c.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borg_jobspec::{JobKind, Restart, RestartPolicy};
    use scheduler_core::Resources;

    fn spec(job: &str, index: u32, inc: u64, cmd: &str, restart: Restart) -> TaskSpec {
        TaskSpec {
            job: job.into(),
            index,
            incarnation: inc,
            user: "alice".into(),
            kind: JobKind::Batch,
            command: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            resources: Resources::new(100, 64 << 20, 0),
            restart,
            grace_period_ms: 200,
            job_version: 1,
            ports: [("http".to_string(), 20001)].into(),
            health: Default::default(),
            priority: 100,
        }
    }

    fn never() -> Restart {
        Restart { policy: RestartPolicy::Never, max_restarts: None }
    }

    fn digest(tasks: &[&TaskSpec]) -> u64 {
        borg_proto::desired_digest(tasks.iter().map(|t| (t.job.as_str(), t.index, t.incarnation, t.job_version)))
    }

    #[test]
    fn a_delta_is_taken_only_against_the_set_held_and_only_when_it_gives_the_masters_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = Runtime::new("m1", dir.path(), CgroupSupport::None("test".into())).unwrap();
        let (a0, a1) = (spec("a", 0, 1, "sleep 30", never()), spec("a", 1, 1, "sleep 30", never()));
        let base = digest(&[&a0, &a1]);
        rt.set_desired(base, "c", vec![a0.clone(), a1.clone()]);
        // a/0 goes, a/1 takes a new incarnation, b/0 comes
        let (a1b, b0) = (spec("a", 1, 2, "sleep 30", never()), spec("b", 0, 1, "sleep 30", never()));
        let version = digest(&[&a1b, &b0]);
        let removed = [TaskId::new("a", 0)];
        // against another base, or giving another set: refused, nothing changes
        assert!(!rt.apply_delta(base + 1, version, "c", &removed, vec![a1b.clone(), b0.clone()]));
        assert!(!rt.apply_delta(base, version, "c", &removed, vec![a1b.clone()]));
        assert_eq!(rt.applied_version, base);
        assert_eq!(
            rt.desired.values().map(|t| (t.job.as_str(), t.index, t.incarnation)).collect::<Vec<_>>(),
            [("a", 0, 1), ("a", 1, 1)]
        );
        assert!(rt.apply_delta(base, version, "c", &removed, vec![a1b, b0]));
        assert_eq!(rt.applied_version, version);
        assert_eq!(
            rt.desired.values().map(|t| (t.job.as_str(), t.index, t.incarnation)).collect::<Vec<_>>(),
            [("a", 1, 2), ("b", 0, 1)]
        );
    }

    /// Ticks until `f` holds (at most 10 s of real time).
    fn tick_until(rt: &mut Runtime, mut f: impl FnMut(&Runtime) -> bool) {
        let start = Instant::now();
        while !f(rt) {
            assert!(start.elapsed() < Duration::from_secs(10), "condition not reached");
            std::thread::sleep(Duration::from_millis(20));
            rt.tick(Instant::now());
        }
    }

    fn run<'a>(rt: &'a Runtime, job: &str) -> &'a TaskRun {
        rt.runs().find(|r| r.spec.job == job).expect("run exists")
    }

    #[test]
    fn a_task_runs_with_its_env_and_sandbox_and_exits_with_its_code() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = Runtime::new("m1", dir.path(), CgroupSupport::None("test".into())).unwrap();
        let cmd = "echo $GREETING $BORG_JOB $BORG_TASK_INDEX $BORG_CELL $BORG_USER $BORG_PORT_HTTP; pwd; exit 3";
        rt.set_desired(7, "dev", vec![spec("hello", 2, 1, cmd, never())]);
        rt.tick(Instant::now());
        assert!(run(&rt, "hello").pid.is_some());
        tick_until(&mut rt, |rt| run(rt, "hello").phase == Phase::Exited);
        let r = run(&rt, "hello");
        assert_eq!((r.exit_code, r.signal, r.message.as_str()), (Some(3), None, "exited 3"));
        let out = std::fs::read_to_string(r.sandbox.join("stdout")).unwrap();
        assert_eq!(out, format!("hi hello 2 dev alice 20001\n{}\n", r.sandbox.display()));
        assert_eq!(rt.sandbox_of("hello", 2), Some(r.sandbox.clone()));
    }

    #[test]
    fn on_failure_restarts_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = Runtime::new("m1", dir.path(), CgroupSupport::None("test".into())).unwrap();
        let r = Restart { policy: RestartPolicy::OnFailure, max_restarts: Some(1) };
        rt.set_desired(1, "dev", vec![spec("flaky", 0, 1, "echo run >> count; exit 1", r)]);
        rt.tick(Instant::now());
        tick_until(&mut rt, |rt| run(rt, "flaky").phase == Phase::Exited);
        let r = run(&rt, "flaky");
        assert_eq!((r.restarts, r.exit_code), (1, Some(1)));
        assert_eq!(std::fs::read_to_string(r.sandbox.join("count")).unwrap(), "run\nrun\n");
        assert_eq!(r.message, "exited 1 after 1 restarts");
    }

    #[test]
    fn undesired_tasks_get_sigterm_then_sigkill_after_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = Runtime::new("m1", dir.path(), CgroupSupport::None("test".into())).unwrap();
        // ignores SIGTERM, so only SIGKILL after the 200 ms grace ends it
        rt.set_desired(
            1,
            "dev",
            vec![spec("stubborn", 0, 1, "trap '' TERM; echo ready; while :; do sleep 0.05; done", never())],
        );
        rt.tick(Instant::now());
        let pid = run(&rt, "stubborn").pid.unwrap();
        let sandbox = run(&rt, "stubborn").sandbox.clone();
        tick_until(&mut rt, |_| std::fs::read_to_string(sandbox.join("stdout")).unwrap_or_default() == "ready\n");
        rt.set_desired(2, "dev", vec![]);
        let stop = Instant::now();
        rt.tick(Instant::now());
        assert_eq!(run(&rt, "stubborn").phase, Phase::Stopping);
        tick_until(&mut rt, |rt| rt.runs().next().is_none());
        assert!(stop.elapsed() >= Duration::from_millis(200), "SIGKILL came before the grace period ended");
        assert!(process::start_ticks(pid).is_none(), "process {pid} still alive");
    }

    #[test]
    fn a_restarted_borglet_adopts_running_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let mut rt = Runtime::new("m1", dir.path(), CgroupSupport::None("test".into())).unwrap();
        rt.set_desired(5, "dev", vec![spec("svc", 0, 1, "sleep 30", never())]);
        rt.tick(Instant::now());
        let pid = run(&rt, "svc").pid.unwrap();
        drop(rt); // the Borglet goes away; its child keeps running
        let mut rt2 = Runtime::new("m1", dir.path(), CgroupSupport::None("test".into())).unwrap();
        assert_eq!(rt2.applied_version, 5);
        rt2.tick(Instant::now());
        let r = run(&rt2, "svc");
        assert_eq!((r.pid, r.phase, r.restarts), (Some(pid), Phase::Running, 0), "adopted, not restarted");
        rt2.set_desired(6, "dev", vec![]);
        rt2.tick(Instant::now());
        tick_until(&mut rt2, |rt| rt.runs().next().is_none());
        // the process is gone (a zombie of ours until reaped counts as gone)
        assert!(process::start_ticks(pid).is_none());
    }
}
