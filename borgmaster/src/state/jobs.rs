//! Commands of the job family: apply (create, update in place, rolling update), kill, delete,
//! and the rollouts that advance after every command.

use super::apply::{new_task, Events};
use super::{ApplyOutcome, CommandError, OverQuota};
use super::{CellState, EventKind, Job, MachineState, PendingReason, Revision, Task, TaskState};
use borg_jobspec::{JobKind, JobSpec};
use scheduler_core::{Band, MachineId};
use std::sync::Arc;

impl CellState {
    /// Whether applying `spec` to its existing job would change it in place, restarting no task:
    /// the job is live and the new spec only lowers requests or moves the priority within its
    /// band. The rule apply uses, and dry runs report.
    pub fn update_is_in_place(&self, spec: &JobSpec) -> bool {
        self.jobs.get(&spec.name).is_some_and(|j| !j.killed && *j.spec != *spec && only_lowered(&j.spec, spec))
    }

    pub(super) fn per_machine_targets(&self) -> Vec<MachineId> {
        self.machines.values().filter(|m| m.state == MachineState::Up).map(|m| m.id.clone()).collect()
    }

    pub(super) fn apply_job(
        &mut self,
        spec: &JobSpec,
        expected: Option<u64>,
        ev: &mut Events,
    ) -> Result<ApplyOutcome, CommandError> {
        if spec.schedule.is_some() {
            return self.apply_cron(spec, expected, ev);
        }
        if self.crons.contains_key(&spec.name) {
            return Err(CommandError::NameTaken { name: spec.name.clone(), what: "cron job" });
        }
        let actual = self.jobs.get(&spec.name).map_or(0, |j| j.version);
        if let Some(expected) = expected {
            if expected != actual {
                return Err(CommandError::VersionMismatch { job: spec.name.clone(), expected, actual });
            }
        }
        if let Some(job) = self.jobs.get(&spec.name) {
            if *job.spec == *spec && !job.killed {
                return Ok(ApplyOutcome::Unchanged(job.version));
            }
        }
        self.check_after(spec)?;
        let targets = if spec.per_machine { self.per_machine_targets() } else { Vec::new() };
        let count = if spec.per_machine { targets.len() as u32 } else { spec.tasks };
        // Admission control (see quota.rs for the rule).
        let band = spec.band();
        if band != Band::Free && spec.alloc_set.is_empty() {
            if let Some(limit) = self.quota_limit(&spec.user, band) {
                let needed = spec.resources.saturating_mul(count as u64);
                let free = super::quota::headroom(limit, self.quota_used(&spec.user, band, Some(&spec.name)));
                if !needed.fits_in(&free) {
                    return Err(CommandError::OverQuota(Box::new(OverQuota {
                        job: spec.name.clone(),
                        user: spec.user.clone(),
                        band,
                        needed,
                        free,
                        limit,
                    })));
                }
            }
        }
        let now = ev.now;
        let pin = |t: &mut Task, i: usize| t.pinned = targets.get(i).cloned();
        let Some(job) = self.jobs.get(&spec.name) else {
            let tasks = (0..count)
                .map(|i| {
                    let mut t = new_task(&spec.name, i, 1, 1, now, PendingReason::Submitted, "submitted");
                    pin(&mut t, i as usize);
                    t
                })
                .collect();
            let shared = Arc::new(spec.clone());
            let job = Job {
                spec: shared.clone(),
                version: 1,
                submitted_ms: now,
                killed: false,
                tasks,
                old_specs: Default::default(),
                paused: None,
                history: vec![Revision { version: 1, applied_ms: now, spec: shared }],
                after_settled: false,
                cron: None,
            };
            if job.held() {
                self.held.insert(spec.name.clone());
            }
            self.jobs.insert(spec.name.clone(), job);
            ev.push(&spec.name, None, EventKind::Submitted, format!("{count} tasks, {}", spec.priority), None);
            return Ok(ApplyOutcome::Created(1));
        };
        let version = job.version + 1;
        let old = job.spec.clone();
        let new_after = old.after != spec.after;
        let killed = job.killed;
        let in_place = self.update_is_in_place(spec);
        // Tasks beyond the new count go away.
        let dropped: Vec<Task> = job.tasks.get(count as usize..).map(<[Task]>::to_vec).unwrap_or_default();
        for t in &dropped {
            self.unbind(t);
            if let (Some(m), false) = (&t.machine, t.state == TaskState::Dead) {
                ev.push(&spec.name, Some(t.index), EventKind::Stopping, "task count reduced".into(), Some(m));
            }
        }
        self.mark_job(&spec.name);
        let Some(job) = self.jobs.get_mut(&spec.name) else { return Ok(ApplyOutcome::Unchanged(actual)) };
        job.tasks.truncate(count as usize);
        for i in job.tasks.len() as u32..count {
            let mut t = new_task(
                &spec.name,
                i,
                1,
                version,
                now,
                PendingReason::Submitted,
                &format!("created by version {version}"),
            );
            pin(&mut t, i as usize);
            job.tasks.push(t);
        }
        if in_place {
            // Lower requests or a priority change within the band: no restart needed.
            for t in job.tasks.iter_mut().filter(|t| t.state != TaskState::Dead) {
                t.job_version = version;
            }
            job.old_specs.clear();
        } else if !killed {
            job.old_specs.insert(job.version, old);
        }
        let shared = Arc::new(spec.clone());
        job.spec = shared.clone();
        job.version = version;
        job.paused = None;
        job.record_revision(version, now, shared);
        if job.rolling() {
            self.rolling.insert(spec.name.clone());
        }
        // a new list of jobs to wait for, or a killed job applied again, waits again
        if killed || new_after {
            job.after_settled = false;
        }
        if killed {
            // A killed job comes back whole: every task starts again at once.
            job.killed = false;
            job.old_specs.clear();
            for t in job.tasks.iter_mut() {
                replace_with_version(t, version, now);
            }
        }
        if job.held() {
            self.held.insert(spec.name.clone());
        }
        let how = if in_place {
            "in place"
        } else if killed {
            "restarted"
        } else {
            "rolling"
        };
        ev.push(&spec.name, None, EventKind::Updated, format!("version {version}, {count} tasks, {how}"), None);
        Ok(ApplyOutcome::Updated(version))
    }

    /// Rolling updates (DESIGN: Borg-style job updates; Kubernetes Deployments' readiness
    /// gating): replaces tasks still on an earlier version, in index order, while fewer than
    /// `max_unavailable` of the job's live tasks are unavailable. A task is available once it
    /// runs and has been ready for `min_ready`; a replacement not ready within
    /// `progress_deadline` of being replaced pauses the rollout (with an event) until the next
    /// apply. Runs after every command (the leader proposes `Tick`s while a rollout waits on
    /// time), so each task that becomes available lets the next one go.
    pub(super) fn advance_rollouts(&mut self, ev: &mut Events) {
        let rolling: Vec<String> = self.rolling.iter().cloned().collect();
        for name in rolling {
            // Tasks of an earlier version that were never placed take the new spec at once:
            // replacing them takes nothing down. (Unbound tasks only: no poll generation moves.)
            if let Some(job) = self.jobs.get_mut(&name) {
                let version = job.version;
                for t in job.tasks.iter_mut() {
                    if t.job_version < version && t.state == TaskState::Pending && t.machine.is_none() {
                        t.job_version = version;
                    }
                }
            }
            let Some(job) = self.jobs.get(&name) else {
                self.rolling.remove(&name);
                continue;
            };
            // a killed job replaces nothing (its tasks are dead); it only drops out below
            let max = if job.killed || job.paused.is_some() { 0 } else { job.spec.max_unavailable.max(1) as usize };
            let version = job.version;
            let now = ev.now;
            let min_ready = job.spec.min_ready_ms as i64;
            // min_ready is asked of the replacements; an old task counts while it runs ready
            let available = |t: &Task| {
                t.state == TaskState::Running
                    && t.ready
                    && (t.job_version < version || now.saturating_sub(t.ready_since_ms) >= min_ready)
            };
            let down = job.tasks.iter().filter(|t| t.state != TaskState::Dead && !available(t)).count();
            // a replacement that is not ready in time pauses the rollout
            let deadline = job.spec.progress_deadline_ms as i64;
            let late = job.tasks.iter().find(|t| {
                t.job_version == version
                    && t.state != TaskState::Dead
                    && !t.ready
                    && t.pending_reason == Some(PendingReason::Updated)
                    && now.saturating_sub(t.queued_ms) > deadline
            });
            if let (Some(t), None, false) = (late, &job.paused, job.killed) {
                let why = format!(
                    "task {} of version {version} not ready within the progress deadline ({} s): {}",
                    t.index,
                    deadline / 1000,
                    t.reason
                );
                let index = t.index;
                // (no task changes: no poll generation moves)
                if let Some(job) = self.jobs.get_mut(&name) {
                    job.paused = Some(why.clone());
                }
                ev.push(&name, Some(index), EventKind::Paused, why, None);
                continue;
            }
            // old tasks that are unavailable anyway are replaced at once (that takes nothing more
            // down, and a stuck one must not block its own replacement); available ones while
            // fewer than max_unavailable are down
            let old = || job.tasks.iter().filter(|t| t.job_version < version && t.state != TaskState::Dead);
            let next: Vec<Task> = old()
                .filter(|t| max > 0 && !available(t))
                .chain(old().filter(|t| available(t)).take(max.saturating_sub(down)))
                .cloned()
                .collect();
            for t in next {
                self.unbind(&t);
                if let Some(m) = &t.machine {
                    ev.push(
                        &name,
                        Some(t.index),
                        EventKind::Stopping,
                        format!("replaced by version {version}"),
                        Some(m),
                    );
                }
                let now = ev.now;
                if let Some(task) = self.task_mut(&name, t.index) {
                    replace_with_version(task, version, now);
                }
                ev.push(&name, Some(t.index), EventKind::Pending, format!("updated to version {version}"), None);
            }
            // (drops only specs no live task runs: no poll generation moves)
            if let Some(job) = self.jobs.get_mut(&name) {
                let used: std::collections::BTreeSet<u64> =
                    job.tasks.iter().filter(|t| t.state != TaskState::Dead).map(|t| t.job_version).collect();
                job.old_specs.retain(|v, _| used.contains(v));
                if job.killed || !job.rolling() {
                    self.rolling.remove(&name);
                }
            }
        }
    }

    /// Removes job `name`, which must have no live task; its events stay in the cell's event log.
    pub(super) fn delete_job(&mut self, name: &str, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        if !self.jobs.contains_key(name) && self.crons.remove(name).is_some() {
            ev.push(name, None, EventKind::Cron, "cron job deleted (its runs stay)".into(), None);
            return Ok(ApplyOutcome::Done);
        }
        let job = self.jobs.get(name).ok_or_else(|| CommandError::NoSuchJob(name.to_string()))?;
        let live = job.tasks.iter().filter(|t| t.state != TaskState::Dead).count() as u32;
        if live > 0 {
            return Err(CommandError::JobStillLive { job: name.to_string(), live });
        }
        let was = if job.killed { "killed" } else { "finished" };
        self.jobs.remove(name);
        ev.push(name, None, EventKind::Deleted, format!("{was} job removed"), None);
        Ok(ApplyOutcome::Done)
    }

    pub(super) fn restart_tasks(
        &mut self,
        name: &str,
        indices: &[u32],
        ev: &mut Events,
    ) -> Result<ApplyOutcome, CommandError> {
        let job = self.job_mut(name).ok_or_else(|| CommandError::NoSuchJob(name.to_string()))?;
        if job.killed {
            return Err(CommandError::JobKilled(name.to_string()));
        }
        if let Some(&index) = indices.iter().find(|i| **i as usize >= job.tasks.len()) {
            return Err(CommandError::NoSuchTask { job: name.to_string(), index, count: job.tasks.len() });
        }
        let (old, version) = (job.version, job.version + 1);
        let spec = job.spec.clone();
        job.old_specs.insert(old, spec.clone());
        let mut restarting = Vec::new();
        for t in job.tasks.iter_mut().filter(|t| t.state != TaskState::Dead) {
            if t.job_version == old && !(indices.is_empty() || indices.contains(&t.index)) {
                t.job_version = version; // not asked for: carries on as the new version
            } else if t.job_version == old {
                restarting.push(t.index);
            }
        }
        job.version = version;
        job.paused = None;
        job.record_revision(version, ev.now, spec);
        if job.rolling() {
            self.rolling.insert(name.to_string());
        }
        let list = restarting.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        ev.push(
            name,
            None,
            EventKind::Updated,
            format!("version {version}, restart of tasks [{list}] within max_unavailable"),
            None,
        );
        Ok(ApplyOutcome::Restarting { version, tasks: restarting.len() as u32 })
    }

    pub(super) fn kill_job(&mut self, name: &str, ev: &mut Events) -> Result<ApplyOutcome, CommandError> {
        let job = self.jobs.get(name).ok_or_else(|| CommandError::NoSuchJob(name.to_string()))?;
        let live: Vec<Task> = job.tasks.iter().filter(|t| t.state != TaskState::Dead).cloned().collect();
        if live.is_empty() && !job.tasks.is_empty() {
            // done (or killed before): a kill changes nothing, and a done job stays done
            return Ok(ApplyOutcome::AlreadyFinished);
        }
        for t in &live {
            self.unbind(t);
            ev.push(name, Some(t.index), EventKind::Dead, "killed".into(), t.machine.as_ref());
        }
        let now = ev.now;
        // (the machines of its live tasks were marked by `unbind` above: no poll generation moves
        // again)
        if let Some(job) = self.jobs.get_mut(name) {
            job.killed = true;
            for t in job.tasks.iter_mut().filter(|t| t.state != TaskState::Dead) {
                t.state = TaskState::Dead;
                t.reason = "killed".into();
                t.pid = None;
                t.state_since_ms = now;
            }
        }
        ev.push(name, None, EventKind::Killed, format!("{} tasks stopped", live.len()), None);
        if self.jobs.get(name).is_some_and(|j| j.spec.kind == JobKind::AllocSet) {
            for t in &live {
                self.evict_alloc_contents(name, t.index, "alloc set killed", ev);
            }
        }
        Ok(ApplyOutcome::Killed(live.len() as u32))
    }
}

/// Replaces task `t` by a new incarnation of spec `version`, pending since `now` (it keeps its
/// machine pin, for per_machine jobs): how updates restart a task.
fn replace_with_version(t: &mut Task, version: u64, now: i64) {
    let fresh = new_task(
        &t.job,
        t.index,
        t.incarnation + 1,
        version,
        now,
        PendingReason::Updated,
        &format!("updated to version {version}"),
    );
    *t = Task { pinned: t.pinned.take(), ..fresh };
}

/// Whether `new` differs from `old` only by lower (or equal) requests, a priority in the same
/// band, the task count or the update policy: such an update is applied in place, without
/// restarting tasks.
pub(super) fn only_lowered(old: &JobSpec, new: &JobSpec) -> bool {
    // the task count and the update policy do not change what a task runs: scaling a job, or
    // changing how its updates roll, restarts nothing
    let same_rest = JobSpec {
        resources: old.resources,
        priority: old.priority,
        tasks: old.tasks,
        max_unavailable: old.max_unavailable,
        min_ready_ms: old.min_ready_ms,
        progress_deadline_ms: old.progress_deadline_ms,
        ..new.clone()
    } == *old;
    same_rest && new.resources.fits_in(&old.resources) && new.band() == old.band()
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use scheduler_core::{Band, MachineId, Resources};

    #[test]
    fn restart_replaces_the_chosen_tasks_one_budget_at_a_time() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 3), expected_version: None }).unwrap();
        running(&mut s, "web", "m1");
        run(&mut s, Command::RestartTasks { name: "web".into(), indices: vec![0, 2] }).unwrap();
        let inc: Vec<u64> = s.jobs["web"].tasks.iter().map(|t| t.incarnation).collect();
        assert_eq!(inc, [2, 1, 1], "one at a time (max_unavailable 1), task 1 untouched");
        running(&mut s, "web", "m1");
        let inc: Vec<u64> = s.jobs["web"].tasks.iter().map(|t| t.incarnation).collect();
        assert_eq!(inc, [2, 1, 2], "the next once the first is back");
        running(&mut s, "web", "m1");
        assert!(!s.jobs["web"].rolling());
        let e = run(&mut s, Command::RestartTasks { name: "web".into(), indices: vec![9] }).unwrap_err();
        assert_eq!(e.to_string(), "job \"web\" has no task 9 (it has 3)");
    }

    #[test]
    fn scaling_a_job_or_changing_its_update_policy_restarts_no_task() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: None }).unwrap();
        running(&mut s, "web", "m1");
        let mut more = spec("web", 3);
        more.max_unavailable = 2;
        run(&mut s, Command::ApplyJob { spec: more, expected_version: None }).unwrap();
        let t = &s.jobs["web"].tasks;
        assert_eq!((t[0].incarnation, t[1].incarnation, t[0].state), (1, 1, TaskState::Running), "{t:?}");
        assert_eq!(t[2].state, TaskState::Pending);
        assert!(!s.jobs["web"].rolling());
    }

    #[test]
    fn update_kill_and_version_checks() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 3), expected_version: None }).unwrap();
        bind(&mut s, "web", 2, "m1");
        assert_eq!(
            run(&mut s, Command::ApplyJob { spec: spec("web", 3), expected_version: None }).unwrap().0,
            ApplyOutcome::Unchanged(1)
        );
        let err = run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: Some(7) }).unwrap_err();
        assert_eq!(err, CommandError::VersionMismatch { job: "web".into(), expected: 7, actual: 1 });
        let (o, ev) = run(&mut s, Command::ApplyJob { spec: spec("web", 2), expected_version: Some(1) }).unwrap();
        assert_eq!(o, ApplyOutcome::Updated(2));
        assert!(ev.iter().any(|e| e.kind == EventKind::Stopping && e.index == Some(2)));
        assert_eq!(s.jobs["web"].tasks.len(), 2);
        assert_eq!(s.task_count_on(&MachineId("m1".into())), 0);
        bind(&mut s, "web", 0, "m1");
        assert_eq!(run(&mut s, Command::KillJob { name: "web".into() }).unwrap().0, ApplyOutcome::Killed(2));
        assert_eq!(s.jobs["web"].state_name(), "killed");
        assert_eq!(s.task_count_on(&MachineId("m1".into())), 0);
        assert_eq!(
            run(&mut s, Command::KillJob { name: "nope".into() }).unwrap_err(),
            CommandError::NoSuchJob("nope".into())
        );
    }

    #[test]
    fn a_done_job_stays_done_when_killed_and_only_dead_jobs_are_deleted() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("b", 1), expected_version: None }).unwrap();
        bind(&mut s, "b", 0, "m1");
        let err = run(&mut s, Command::DeleteJob { name: "b".into() }).unwrap_err();
        assert_eq!(err, CommandError::JobStillLive { job: "b".into(), live: 1 });
        assert!(err.to_string().contains("borgctl kill b"), "{err}");
        report(&mut s, "m1", "b", 0, TaskState::Dead, Some(0));
        let (o, ev) = run(&mut s, Command::KillJob { name: "b".into() }).unwrap();
        assert_eq!(o, ApplyOutcome::AlreadyFinished);
        assert!(ev.is_empty() && !s.jobs["b"].killed, "a finished job is not turned into a killed one");
        let (_, ev) = run(&mut s, Command::DeleteJob { name: "b".into() }).unwrap();
        assert!(ev.iter().any(|e| e.kind == EventKind::Deleted && e.detail == "finished job removed"), "{ev:?}");
        assert!(!s.jobs.contains_key("b"));
        assert_eq!(
            run(&mut s, Command::DeleteJob { name: "b".into() }).unwrap_err(),
            CommandError::NoSuchJob("b".into())
        );
        // the name is free again
        run(&mut s, Command::ApplyJob { spec: spec("b", 1), expected_version: Some(0) }).unwrap();
    }

    #[test]
    fn quota_admission_per_band_and_release_on_kill() {
        let mut s = CellState::new("dev");
        s.default_quota = Some(Resources::ZERO);
        let mut web = spec("web", 2); // batch, 2 x 100m
        assert!(matches!(
            run(&mut s, Command::ApplyJob { spec: web.clone(), expected_version: None }),
            Err(CommandError::OverQuota(q)) if q.needed == Resources::new(200, 2 << 20, 0) && q.free == Resources::ZERO.with_ports(u64::MAX)
        ));
        let limit = Resources::new(300, 1 << 30, 1 << 30);
        run(&mut s, Command::SetQuota { user: "alice".into(), band: Band::Batch, limit }).unwrap();
        run(&mut s, Command::ApplyJob { spec: web.clone(), expected_version: None }).unwrap();
        assert_eq!(s.quota_used("alice", Band::Batch, None), Resources::new(200, 2 << 20, 0));
        // production quota is separate: a production job is refused, a free one needs none
        let mut prod = spec("prod", 1);
        prod.priority = scheduler_core::Priority(200);
        assert!(run(&mut s, Command::ApplyJob { spec: prod, expected_version: None }).is_err());
        let mut free = spec("free", 50);
        free.priority = scheduler_core::Priority(5);
        run(&mut s, Command::ApplyJob { spec: free, expected_version: None }).unwrap();
        // another 2-task batch job does not fit next to web; after killing web it does
        let other = spec("other", 2);
        assert!(run(&mut s, Command::ApplyJob { spec: other.clone(), expected_version: None }).is_err());
        run(&mut s, Command::KillJob { name: "web".into() }).unwrap();
        run(&mut s, Command::ApplyJob { spec: other, expected_version: None }).unwrap();
        // an update is charged without the job's own current use
        web.tasks = 3;
        run(&mut s, Command::KillJob { name: "other".into() }).unwrap();
        run(&mut s, Command::ApplyJob { spec: web, expected_version: None }).unwrap();
        assert_eq!(s.quota_used("alice", Band::Batch, None).cpu_millis, 300);
    }

    #[test]
    fn an_update_of_unplaced_tasks_applies_at_once_and_keeps_no_old_spec() {
        let mut s = CellState::new("dev");
        let mut v = spec("web", 3);
        run(&mut s, Command::ApplyJob { spec: v.clone(), expected_version: None }).unwrap();
        for round in 0..5 {
            v.command = vec!["sleep".into(), format!("{round}")];
            run(&mut s, Command::ApplyJob { spec: v.clone(), expected_version: None }).unwrap();
        }
        let job = &s.jobs["web"];
        assert_eq!(job.version, 6);
        assert!(job.tasks.iter().all(|t| t.job_version == 6 && t.incarnation == 1), "{:?}", job.tasks);
        assert!(job.old_specs.is_empty(), "old specs kept for tasks that never ran");
        assert!(!job.rolling());
        let mut again = s.clone();
        again.reindex();
        assert_eq!(again, s, "the rolling index matches a rebuilt one");
    }

    #[test]
    fn rolling_update_keeps_at_most_max_unavailable_down() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        let mut v1 = spec("web", 4);
        run(&mut s, Command::ApplyJob { spec: v1.clone(), expected_version: None }).unwrap();
        running(&mut s, "web", "m1");
        v1.command = vec!["sleep".into(), "200".into()];
        v1.max_unavailable = 2;
        run(&mut s, Command::ApplyJob { spec: v1.clone(), expected_version: None }).unwrap();
        let down = |s: &CellState| s.jobs["web"].tasks.iter().filter(|t| t.state == TaskState::Pending).count();
        let versions = |s: &CellState| s.jobs["web"].tasks.iter().map(|t| t.job_version).collect::<Vec<_>>();
        assert_eq!(down(&s), 2);
        assert_eq!(versions(&s), vec![2, 2, 1, 1], "index order, two at a time");
        assert_eq!(s.jobs["web"].spec_for(1).command, vec!["sleep", "100"], "old tasks keep the old spec");
        running(&mut s, "web", "m1");
        assert_eq!(versions(&s), vec![2, 2, 2, 2]);
        running(&mut s, "web", "m1");
        assert!(!s.jobs["web"].rolling() && s.jobs["web"].old_specs.is_empty());
        // lowering requests is applied in place: nothing restarts
        let before: Vec<u64> = s.jobs["web"].tasks.iter().map(|t| t.incarnation).collect();
        v1.resources = Resources::new(50, 1 << 20, 0);
        run(&mut s, Command::ApplyJob { spec: v1, expected_version: None }).unwrap();
        let after: Vec<u64> = s.jobs["web"].tasks.iter().map(|t| t.incarnation).collect();
        assert_eq!(before, after);
        assert_eq!(down(&s), 0);
        assert_eq!(s.jobs["web"].version, 3);
    }

    /// Reports `job/index` running on m1 at `time_ms`, ready or not.
    fn report_at(s: &mut CellState, job: &str, index: u32, ready: bool, time_ms: i64) {
        report_running_at(s, "m1", job, index, ready, time_ms);
    }

    #[test]
    fn rollouts_wait_for_readiness_and_min_ready_and_pause_at_the_progress_deadline() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        let mut v = spec("web", 3);
        v.min_ready_ms = 5_000;
        v.progress_deadline_ms = 60_000;
        run(&mut s, Command::ApplyJob { spec: v.clone(), expected_version: None }).unwrap();
        running(&mut s, "web", "m1");
        v.command = vec!["sleep".into(), "300".into()];
        s.apply(&Entry { time_ms: 10_000, command: Command::ApplyJob { spec: v.clone(), expected_version: None } })
            .unwrap();
        let versions = |s: &CellState| s.jobs["web"].tasks.iter().map(|t| t.job_version).collect::<Vec<_>>();
        assert_eq!(versions(&s), [2, 1, 1]);
        // the replacement runs but is not ready: it is unavailable, nothing more goes
        bind(&mut s, "web", 0, "m1");
        report_at(&mut s, "web", 0, false, 11_000);
        assert_eq!(versions(&s), [2, 1, 1]);
        // ready, but not yet for min_ready (5 s): still nothing
        report_at(&mut s, "web", 0, true, 12_000);
        s.apply(&Entry { time_ms: 16_000, command: Command::Tick }).unwrap();
        assert_eq!(versions(&s), [2, 1, 1]);
        // ready for 5 s: the next task goes
        s.apply(&Entry { time_ms: 17_000, command: Command::Tick }).unwrap();
        assert_eq!(versions(&s), [2, 2, 1]);
        // the next replacement never becomes ready: past the deadline the rollout pauses
        bind(&mut s, "web", 1, "m1");
        report_at(&mut s, "web", 1, false, 18_000);
        let (_, ev) = s.apply(&Entry { time_ms: 17_000 + 60_001, command: Command::Tick }).unwrap();
        let paused = s.jobs["web"].paused.clone().expect("paused");
        assert!(paused.contains("task 1 of version 2 not ready within the progress deadline (60 s)"), "{paused}");
        assert!(ev.iter().any(|e| e.kind == EventKind::Paused));
        s.apply(&Entry { time_ms: 200_000, command: Command::Tick }).unwrap();
        assert_eq!(versions(&s), [2, 2, 1], "a paused rollout replaces nothing");
        // undo = apply the old spec again: a new version, unpaused
        let old = s.jobs["web"].history[0].spec.as_ref().clone();
        s.apply(&Entry { time_ms: 201_000, command: Command::ApplyJob { spec: old, expected_version: None } }).unwrap();
        assert_eq!(s.jobs["web"].paused, None);
        assert_eq!(s.jobs["web"].version, 3);
        assert_eq!(s.jobs["web"].history.iter().map(|r| r.version).collect::<Vec<_>>(), [1, 2, 3]);
        // history keeps the last MAX_REVISIONS
        for i in 0..12 {
            v.env.insert("N".into(), i.to_string());
            run(&mut s, Command::ApplyJob { spec: v.clone(), expected_version: None }).unwrap();
        }
        let h = &s.jobs["web"].history;
        assert_eq!((h.len(), h.last().map(|r| r.version)), (MAX_REVISIONS, Some(15)));
        // the current spec and its revision are one copy
        assert!(h.last().is_some_and(|r| std::sync::Arc::ptr_eq(&r.spec, &s.jobs["web"].spec)));
    }
}
