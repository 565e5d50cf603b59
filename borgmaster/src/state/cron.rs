//! Cron jobs (issue 19): a batch spec with a `schedule` is a template; the leader proposes a
//! `CronTick` when a tick is due (the latest one only, so ticks missed while the master was
//! down run once), and the tick starts a run named `<name>-<unix seconds>` from the template,
//! following its `concurrency` policy (Kubernetes CronJob's `allow`, `forbid`, `replace`); then
//! only the newest `history` finished runs are kept.

use super::apply::Events;
use super::{ApplyOutcome, CellState, CommandError, CronJob, EventKind, TaskState};
use borg_jobspec::{Concurrency, JobSpec};

impl CellState {
    pub(super) fn apply_cron(
        &mut self,
        spec: &JobSpec,
        expected: Option<u64>,
        ev: &mut Events,
    ) -> Result<ApplyOutcome, CommandError> {
        if self.jobs.contains_key(&spec.name) {
            return Err(CommandError::NameTaken { name: spec.name.clone(), what: "job" });
        }
        let actual = self.crons.get(&spec.name).map_or(0, |c| c.version);
        if let Some(expected) = expected.filter(|e| *e != actual) {
            return Err(CommandError::VersionMismatch { job: spec.name.clone(), expected, actual });
        }
        let detail = format!(
            "schedule {:?} (UTC), concurrency {}, history {}",
            spec.schedule.as_deref().unwrap_or(""),
            spec.concurrency.name(),
            spec.history
        );
        let now = ev.now;
        let outcome = match self.crons.get_mut(&spec.name) {
            Some(c) if c.spec == *spec => return Ok(ApplyOutcome::Unchanged(c.version)),
            Some(c) => {
                c.spec = spec.clone();
                c.version += 1;
                ApplyOutcome::Updated(c.version)
            }
            None => {
                let c = CronJob { spec: spec.clone(), version: 1, suspended: false, created_ms: now, last_tick_ms: 0 };
                self.crons.insert(spec.name.clone(), c);
                ApplyOutcome::Created(1)
            }
        };
        ev.push(&spec.name, None, EventKind::Cron, detail, None);
        Ok(outcome)
    }

    pub(super) fn set_cron_suspended(
        &mut self,
        name: &str,
        suspended: bool,
        ev: &mut Events,
    ) -> Result<ApplyOutcome, CommandError> {
        let c = self.crons.get_mut(name).ok_or_else(|| CommandError::NoSuchJob(name.to_string()))?;
        if c.suspended != suspended {
            c.suspended = suspended;
            let what = if suspended { "suspended: ticks are skipped" } else { "resumed" };
            ev.push(name, None, EventKind::Cron, what.into(), None);
        }
        Ok(ApplyOutcome::Done)
    }

    /// The runs of cron job `name`, oldest first.
    pub fn cron_runs(&self, name: &str) -> Vec<&super::Job> {
        let mut runs: Vec<&super::Job> = self.jobs.values().filter(|j| j.cron.as_deref() == Some(name)).collect();
        runs.sort_by_key(|j| (j.submitted_ms, j.spec.name.clone()));
        runs
    }

    pub(super) fn cron_tick(&mut self, name: &str, tick_ms: i64, ev: &mut Events) -> ApplyOutcome {
        let Some(c) = self.crons.get_mut(name) else { return ApplyOutcome::Done };
        if c.suspended || tick_ms <= c.last_tick_ms {
            return ApplyOutcome::Done;
        }
        c.last_tick_ms = tick_ms;
        let template = c.spec.clone();
        let live: Vec<String> = self
            .cron_runs(name)
            .iter()
            .filter(|j| j.tasks.iter().any(|t| t.state != TaskState::Dead))
            .map(|j| j.spec.name.clone())
            .collect();
        match (template.concurrency, live.is_empty()) {
            (Concurrency::Forbid, false) => {
                let detail = format!("tick skipped: {} still running (concurrency forbid)", live.join(", "));
                ev.push(name, None, EventKind::Cron, detail, None);
                return ApplyOutcome::Done;
            }
            (Concurrency::Replace, false) => {
                for run in &live {
                    let _ = self.kill_job(run, ev);
                }
            }
            _ => {}
        }
        let run = format!("{name}-{}", tick_ms.div_euclid(1000));
        let mut spec = template.clone();
        spec.name = run.clone();
        spec.schedule = None;
        match self.apply_job(&spec, Some(0), ev) {
            Ok(_) => {
                // (no task changes: no poll generation moves)
                if let Some(j) = self.jobs.get_mut(&run) {
                    j.cron = Some(name.to_string());
                }
                ev.push(name, None, EventKind::Cron, format!("tick: started run {run}"), None);
            }
            Err(e) => ev.push(name, None, EventKind::Cron, format!("tick: run {run} not started: {e}"), None),
        }
        // keep the newest `history` finished runs
        let finished: Vec<String> = self
            .cron_runs(name)
            .iter()
            .filter(|j| !j.tasks.is_empty() && j.tasks.iter().all(|t| t.state == TaskState::Dead))
            .map(|j| j.spec.name.clone())
            .collect();
        let extra = finished.len().saturating_sub(template.history as usize);
        for old in &finished[..extra] {
            let _ = self.delete_job(old, ev);
        }
        ApplyOutcome::Done
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::*;

    fn cron(concurrency: borg_jobspec::Concurrency, history: u32) -> borg_jobspec::JobSpec {
        let mut s = spec("nightly", 1);
        s.kind = borg_jobspec::JobKind::Batch;
        s.schedule = Some("*/5 * * * *".into());
        s.concurrency = concurrency;
        s.history = history;
        s
    }

    fn tick(s: &mut CellState, ms: i64) {
        s.apply(&Entry { time_ms: ms, command: Command::CronTick { name: "nightly".into(), tick_ms: ms } }).unwrap();
    }

    fn runs(s: &CellState) -> Vec<String> {
        s.cron_runs("nightly").iter().map(|j| j.spec.name.clone()).collect()
    }

    #[test]
    fn ticks_start_runs_forbid_skips_replace_kills_and_history_trims() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: cron(borg_jobspec::Concurrency::Forbid, 1), expected_version: None })
            .unwrap();
        assert!(s.jobs.is_empty() && s.crons.contains_key("nightly"), "a template, not a job");
        tick(&mut s, 300_000);
        assert_eq!(runs(&s), ["nightly-300"]);
        tick(&mut s, 300_000);
        assert_eq!(runs(&s), ["nightly-300"], "the same tick again does nothing");
        tick(&mut s, 600_000);
        assert_eq!(runs(&s), ["nightly-300"], "forbid: skipped while the run is live");
        finish(&mut s, "nightly-300");
        tick(&mut s, 900_000);
        assert_eq!(runs(&s), ["nightly-300", "nightly-900"]);
        finish(&mut s, "nightly-900");
        tick(&mut s, 1_200_000);
        assert_eq!(runs(&s), ["nightly-900", "nightly-1200"], "history 1: one finished run kept");
        // replace kills the live run
        let mut r = cron(borg_jobspec::Concurrency::Replace, 1);
        r.history = 5;
        run(&mut s, Command::ApplyJob { spec: r, expected_version: None }).unwrap();
        tick(&mut s, 1_500_000);
        assert!(s.jobs["nightly-1200"].killed);
        assert!(s.jobs.contains_key("nightly-1500"));
        // suspended: nothing
        run(&mut s, Command::SetCronSuspended { name: "nightly".into(), suspended: true }).unwrap();
        tick(&mut s, 1_800_000);
        assert!(!s.jobs.contains_key("nightly-1800"));
        // a job and a cron job never share a name
        let e = run(&mut s, Command::ApplyJob { spec: spec("nightly", 1), expected_version: None }).unwrap_err();
        assert!(e.to_string().contains("already the name of a cron job"), "{e}");
    }

    fn finish(s: &mut CellState, job: &str) {
        bind(s, job, 0, "m1");
        report(s, "m1", job, 0, TaskState::Running, None);
        report(s, "m1", job, 0, TaskState::Dead, Some(0));
    }
}
