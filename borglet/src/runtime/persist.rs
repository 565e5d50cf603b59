//! The runtime's state file (`<work-dir>/borglet-state.json`): saved on every change, loaded and
//! adopted after a Borglet restart, and the orphans in task cgroups that no saved run explains.

use super::{Phase, Runtime, TaskRun, TaskSpec};
use crate::process;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Serialize, Deserialize)]
struct SavedRun {
    spec: TaskSpec,
    phase: Phase,
    pid: Option<u32>,
    start_ticks: u64,
    restarts: u32,
    exit_code: Option<i32>,
    signal: Option<i32>,
    message: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Saved {
    applied_version: u64,
    cell: String,
    desired: Vec<TaskSpec>,
    runs: Vec<SavedRun>,
}

impl Runtime {
    /// Kills processes left in task cgroups that belong to no known run (a state file lost or
    /// damaged, a crash between start and save: such processes cannot be adopted) and removes those cgroups: a
    /// Borglet restart leaves no orphan behind. Runs once, at the first desired set from the
    /// master ([`Runtime::set_desired`]): only then does the Borglet know what it should run, so a
    /// Borglet that never reaches its master kills nothing.
    pub(super) fn reap_orphans(&mut self) {
        let known: std::collections::HashSet<String> = self.runs.values().map(|r| r.spec.run_name()).collect();
        for name in self.cgroups.task_cgroup_names(&self.machine_id) {
            if known.contains(&name) {
                continue;
            }
            if let Some(cg) = self.cgroups.existing(&self.machine_id, &name) {
                let pids = cg.pids();
                if !pids.is_empty() {
                    tracing::warn!(cgroup = %name, ?pids, "killing orphan processes of an unknown task run");
                }
                process::kill_cgroup(&cg);
                cg.remove();
            }
        }
    }

    pub(super) fn state_file(&self) -> PathBuf {
        self.work_dir.join("borglet-state.json")
    }

    pub(super) fn load(&mut self) {
        let path = self.state_file();
        let saved: Saved = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "state file damaged; starting empty");
                    return;
                }
            },
            Err(_) => return,
        };
        self.applied_version = saved.applied_version;
        self.cell = saved.cell;
        self.desired = saved.desired.into_iter().map(|t| (t.task_id(), t)).collect();
        for s in saved.runs {
            let alive = s.pid.is_some_and(|p| process::start_ticks(p) == Some(s.start_ticks));
            let name = s.spec.run_name();
            let sandbox = self.work_dir.join("tasks").join(&name);
            let cgroup = self.cgroups.existing(&self.machine_id, &name);
            tracing::info!(task = %name, pid = ?s.pid, alive, "adopting task from previous Borglet");
            let key = s.spec.run_id();
            let phase = match s.phase {
                Phase::Running | Phase::Stopping if !alive => Phase::Running, // reaped on the next tick
                Phase::Backoff => Phase::Backoff,
                p => p,
            };
            let run = TaskRun {
                phase,
                pid: s.pid,
                start_ticks: s.start_ticks,
                restarts: s.restarts,
                exit_code: s.exit_code,
                signal: s.signal,
                message: s.message,
                deadline: (phase == Phase::Backoff || phase == Phase::Stopping).then(Instant::now),
                cgroup,
                ..TaskRun::new(s.spec, sandbox)
            };
            self.runs.insert(key, run);
        }
    }

    pub(super) fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let saved = Saved {
            applied_version: self.applied_version,
            cell: self.cell.clone(),
            desired: self.desired.values().cloned().collect(),
            runs: self
                .runs
                .values()
                .map(|r| SavedRun {
                    spec: r.spec.clone(),
                    phase: r.phase,
                    pid: r.pid,
                    start_ticks: r.start_ticks,
                    restarts: r.restarts,
                    exit_code: r.exit_code,
                    signal: r.signal,
                    message: r.message.clone(),
                })
                .collect(),
        };
        let path = self.state_file();
        let tmp = path.with_extension("json.tmp");
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = result {
            tracing::error!(file = %path.display(), error = %e, "cannot save Borglet state; adoption after a restart may miss tasks");
            self.dirty = true;
        }
    }
}
