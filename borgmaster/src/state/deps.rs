//! Dependencies between batch jobs (`after: [a, b]`, issue 19): a job's tasks are held back
//! (not offered to the scheduler) until every job it waits for has finished with every task
//! succeeded; if one of them fails (a task ended with a non-zero exit or a signal, or it was
//! killed or deleted before it finished), the job fails too, each task dead with the reason.
//! Checked at apply: a job waits only for jobs that exist, and never in a cycle.

use super::apply::Events;
use super::{CellState, CommandError, EventKind, Job, TaskState};
use borg_jobspec::JobSpec;
use std::collections::BTreeSet;

/// Where a job's `after` jobs stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// Every one succeeded.
    Met,
    /// This one has not finished yet.
    Waiting(String),
    /// One failed: why.
    Failed(String),
}

impl CellState {
    /// Where the jobs `job` waits for stand, in its `after` order.
    pub fn after_state(&self, job: &Job) -> After {
        for a in &job.spec.after {
            let Some(d) = self.jobs.get(a) else { return After::Failed(format!("job {a} was deleted")) };
            if d.killed {
                return After::Failed(format!("job {a} was killed"));
            }
            if d.held() || d.tasks.iter().any(|t| t.state != TaskState::Dead) {
                return After::Waiting(a.clone());
            }
            if let Some(t) = d.tasks.iter().find(|t| t.exit_code != Some(0)) {
                return After::Failed(format!("job {a} failed (task {}: {})", t.index, t.reason));
            }
        }
        After::Met
    }

    /// Batch jobs whose `ttl_after_finished` has passed at `now_ms`: every task dead (the
    /// newest death is when it finished), and no held job still waits for it.
    pub fn expired_jobs(&self, now_ms: i64) -> Vec<String> {
        let waited_for: BTreeSet<&String> =
            self.held.iter().filter_map(|h| self.jobs.get(h)).flat_map(|j| j.spec.after.iter()).collect();
        self.jobs
            .values()
            .filter(|j| j.spec.kind == borg_jobspec::JobKind::Batch && !j.tasks.is_empty())
            .filter(|j| !waited_for.contains(&j.spec.name))
            .filter(|j| j.tasks.iter().all(|t| t.state == TaskState::Dead))
            .filter(|j| {
                let finished = j.tasks.iter().map(|t| t.state_since_ms).max().unwrap_or(0);
                finished.saturating_add(j.spec.ttl_after_finished_ms as i64) <= now_ms
            })
            .map(|j| j.spec.name.clone())
            .collect()
    }

    /// Refuses `spec` when its `after` names a job the cell does not have or closes a cycle.
    pub(super) fn check_after(&self, spec: &JobSpec) -> Result<(), CommandError> {
        if let Some(a) = spec.after.iter().find(|a| !self.jobs.contains_key(*a)) {
            return Err(CommandError::UnknownDependency { job: spec.name.clone(), after: a.clone() });
        }
        // depth-first along `after` from the new spec's own; reaching it again is a cycle
        let mut stack: Vec<Vec<String>> = spec.after.iter().map(|a| vec![spec.name.clone(), a.clone()]).collect();
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let Some(last) = path.last() else { continue };
            if *last == spec.name {
                return Err(CommandError::DependencyCycle { cycle: path });
            }
            if !seen.insert(last.clone()) {
                continue;
            }
            for a in self.jobs.get(last).map(|j| j.spec.after.as_slice()).unwrap_or_default() {
                let mut p = path.clone();
                p.push(a.clone());
                stack.push(p);
            }
        }
        Ok(())
    }

    /// Releases the held jobs whose `after` jobs all succeeded and fails those one of whose
    /// failed; runs after every command.
    pub(super) fn advance_dependencies(&mut self, ev: &mut Events) {
        let held: Vec<String> = self.held.iter().cloned().collect();
        for name in held {
            let Some(job) = self.jobs.get(&name) else {
                self.held.remove(&name);
                continue;
            };
            if !job.held() {
                self.held.remove(&name);
                continue;
            }
            let state = self.after_state(job);
            let now = ev.now;
            match state {
                After::Waiting(_) => continue,
                After::Met => {
                    let list = job.spec.after.join(", ");
                    ev.push(
                        &name,
                        None,
                        EventKind::Released,
                        format!("{list} succeeded: its tasks may be placed"),
                        None,
                    );
                }
                After::Failed(why) => {
                    let reason = format!("dependency failed: {why}");
                    if let Some(job) = self.job_mut(&name) {
                        for t in job.tasks.iter_mut().filter(|t| t.state != TaskState::Dead) {
                            t.state = TaskState::Dead;
                            t.reason = reason.clone();
                            t.state_since_ms = now;
                            ev.push(&name, Some(t.index), EventKind::Dead, reason.clone(), None);
                        }
                    }
                }
            }
            // (no task changes: no poll generation moves)
            if let Some(job) = self.jobs.get_mut(&name) {
                job.after_settled = true;
            }
            self.held.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;
    use super::After;

    fn batch(name: &str, after: &[&str]) -> borg_jobspec::JobSpec {
        let mut s = spec(name, 1);
        s.kind = borg_jobspec::JobKind::Batch;
        s.after = after.iter().map(|a| a.to_string()).collect();
        s
    }

    fn finish(s: &mut CellState, job: &str, exit: i32) {
        bind(s, job, 0, "m1");
        report(s, "m1", job, 0, TaskState::Running, None);
        report(s, "m1", job, 0, TaskState::Dead, Some(exit));
    }

    #[test]
    fn a_chain_runs_in_order_and_a_failure_fails_what_waits_for_it() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        for (j, after) in [("a", vec![]), ("b", vec!["a"]), ("c", vec!["b"])] {
            run(&mut s, Command::ApplyJob { spec: batch(j, &after), expected_version: None }).unwrap();
        }
        assert!(s.jobs["b"].held() && s.jobs["c"].held());
        assert_eq!(s.after_state(&s.jobs["c"]), After::Waiting("b".into()));
        // held tasks are not placed
        bind(&mut s, "b", 0, "m1");
        assert!(crate::snapshot::snapshot(&s, true).groups.iter().all(|g| g.name == "a"), "only a is offered");
        finish(&mut s, "a", 0);
        assert!(!s.jobs["b"].held() && s.jobs["c"].held());
        assert!(s.events.iter().any(|e| e.job == "b" && e.kind == EventKind::Released));
        finish(&mut s, "b", 1);
        let c = &s.jobs["c"].tasks[0];
        assert_eq!(c.state, TaskState::Dead);
        assert!(c.reason.starts_with("dependency failed: job b failed (task 0:"), "{}", c.reason);
    }

    #[test]
    fn finished_batch_jobs_expire_after_their_ttl_unless_something_waits_for_them() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        let mut a = batch("a", &[]);
        a.ttl_after_finished_ms = 5000;
        run(&mut s, Command::ApplyJob { spec: a, expected_version: None }).unwrap();
        finish(&mut s, "a", 0); // at 1000 (the fixtures' clock)
        assert!(s.expired_jobs(5999).is_empty());
        assert_eq!(s.expired_jobs(6000), ["a"]);
        let mut b = batch("b", &["a"]);
        b.tasks = 1;
        run(&mut s, Command::ApplyJob { spec: b, expected_version: None }).unwrap();
        // b was released at once (a had succeeded): nothing waits for a
        assert_eq!(s.expired_jobs(6000), ["a"]);
        run(&mut s, Command::ApplyJob { spec: batch("c", &["b"]), expected_version: None }).unwrap();
        assert!(s.jobs["c"].held());
        assert!(!s.expired_jobs(i64::MAX).contains(&"b".to_string()), "c waits for b");
    }

    #[test]
    fn unknown_jobs_and_cycles_are_refused_at_apply() {
        let mut s = CellState::new("dev");
        let e = run(&mut s, Command::ApplyJob { spec: batch("b", &["a"]), expected_version: None }).unwrap_err();
        assert!(e.to_string().starts_with("after: job \"a\" does not exist"), "{e}");
        run(&mut s, Command::ApplyJob { spec: batch("a", &[]), expected_version: None }).unwrap();
        run(&mut s, Command::ApplyJob { spec: batch("b", &["a"]), expected_version: None }).unwrap();
        run(&mut s, Command::ApplyJob { spec: batch("c", &["b"]), expected_version: None }).unwrap();
        let e = run(&mut s, Command::ApplyJob { spec: batch("a", &["c"]), expected_version: None }).unwrap_err();
        assert_eq!(e.to_string(), "after: a -> c -> b -> a is a cycle: no job of it could ever start");
        assert!(s.jobs["a"].spec.after.is_empty(), "nothing changed");
    }
}
