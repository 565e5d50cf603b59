//! A workload for the simulator: machines, the tasks to place, and (for replay) timed events.

use scheduler_core::{Attributes, CellModel, Constraint, MachineId, Priority, Resources, TaskGroup};
use std::collections::{BTreeMap, HashMap};

/// An input file that cannot be loaded: which file (and line and column), and what.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file or directory cannot be opened, read or decompressed.
    #[error("{path}: {source}")]
    Io {
        /// File or directory.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A row is malformed.
    #[error("{path}:{line}: {field}: {message}")]
    Row {
        /// File.
        path: std::path::PathBuf,
        /// 1-based line.
        line: u64,
        /// Column name.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// One machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Id.
    pub id: String,
    /// Capacity: millicores, bytes, bytes.
    pub capacity: Resources,
    /// Attributes.
    pub attributes: Attributes,
    /// Failure domain (rack); the id when unknown.
    pub domain: String,
}

/// One task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Job number (index into [`Workload::jobs`]).
    pub job: u32,
    /// Task index.
    pub index: u32,
    /// Priority (our scale: free 0-99, batch 100-199, production 200-299, monitoring 300-399).
    pub priority: Priority,
    /// Request.
    pub request: Resources,
    /// At most one task of the job per machine.
    pub different_machine: bool,
    /// Where the source put it, if anywhere (the trace's time-0 placement; used by replay).
    pub machine: Option<String>,
    /// Owner (index into [`Workload::users`]), for fair share; 0 when the source names none.
    pub user: u32,
    /// Its peak usage (CPU millicores, RAM bytes), when the source gives one (the neutral CSV's
    /// `cpu_used_millis,ram_used_bytes`); `--reclaim` models it otherwise
    /// ([`crate::usage::peak`]).
    pub usage: Option<Resources>,
}

/// What happens at one time in a replay.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A task is submitted (becomes pending).
    Submit(Task),
    /// A task ends (finish, kill, fail, lost or evicted by the source scheduler).
    End {
        /// Job number.
        job: u32,
        /// Task index.
        index: u32,
    },
    /// A machine joins (or returns with this capacity).
    MachineAdd(Machine),
    /// A machine leaves; its tasks become pending.
    MachineRemove(String),
    /// A machine's capacity changes.
    MachineUpdate(String, Resources),
}

/// A timed event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the start of the workload.
    pub time_s: f64,
    /// What happens.
    pub kind: EventKind,
}

/// Machines, tasks and events, with job names.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// The cell at time 0.
    pub machines: Vec<Machine>,
    /// Tasks present at time 0 (for repack: everything to place).
    pub tasks: Vec<Task>,
    /// Events after time 0, by time.
    pub events: Vec<Event>,
    /// Job names by job number.
    pub jobs: Vec<String>,
    /// User names by user number (the trace's hashed ids; `""` for tasks whose source names no
    /// user). Empty when no task has a user.
    pub users: Vec<String>,
    /// How units were mapped, for reports (e.g. "1.0 CPU = 64000 millicores").
    pub units: String,
    /// Hard constraints by job number (shorter than `jobs` when the tail has none).
    pub constraints: Vec<Vec<Constraint>>,
    /// Time of the last task event, seconds (replays stop there by default: later machine
    /// events change nothing that matters).
    pub horizon_s: f64,
}

impl Workload {
    /// Completes a loaded workload: sorts the events by time (stable: equal times keep file
    /// order), sets the horizon to the last task event, and takes the job and user names.
    pub fn finish(&mut self, jobs: Names, users: Names) {
        self.events.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
        self.horizon_s = self
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Submit(_) | EventKind::End { .. }))
            .map(|e| e.time_s)
            .fold(0.0, f64::max);
        self.jobs = jobs.names;
        self.users = users.names;
    }
}

/// Interns names (of jobs, of users) as numbers, in order of first appearance.
#[derive(Debug, Default)]
pub struct Names {
    index: HashMap<String, u32>,
    /// Names by number.
    pub names: Vec<String>,
}

impl Names {
    /// The number of `name`, assigning the next one if new.
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.index.insert(name.to_string(), i);
        self.names.push(name.to_string());
        i
    }
}

/// A cell model of `machines` (all up, empty).
pub fn cell_model(machines: &[Machine]) -> CellModel {
    let mut c = CellModel::new();
    for m in machines {
        c.push(MachineId(m.id.clone()), m.capacity, m.attributes.clone(), &m.domain, true);
    }
    c
}

/// Groups tasks for the scheduler: one group per (job, priority, request, different_machine),
/// in order of first appearance, task indices ascending; `constraints` by job number.
pub fn groups(tasks: &[&Task], jobs: &[String], constraints: &[Vec<Constraint>]) -> Vec<TaskGroup> {
    let mut index: HashMap<(u32, Priority, Resources, bool), usize> = HashMap::new();
    let mut out: Vec<TaskGroup> = Vec::new();
    // a job's tasks mostly come one after the other: the last group is tried before the index
    let mut last: Option<((u32, Priority, Resources, bool), usize)> = None;
    for t in tasks {
        let key = (t.job, t.priority, t.request, t.different_machine);
        let gi = match last {
            Some((k, gi)) if k == key => gi,
            _ => *index.entry(key).or_insert_with(|| {
                out.push(TaskGroup {
                    job_id: t.job,
                    name: jobs.get(t.job as usize).cloned().unwrap_or_default(),
                    priority: t.priority,
                    request: t.request,
                    constraints: constraints.get(t.job as usize).cloned().unwrap_or_default(),
                    different_machine: t.different_machine,
                    tasks: vec![],
                    occupied: vec![],
                });
                out.len() - 1
            }),
        };
        out[gi].tasks.push(t.index);
        last = Some((key, gi));
    }
    for g in &mut out {
        g.tasks.sort_unstable();
    }
    out
}

/// Sum of the requests of `tasks`, by band index (0 free .. 3 monitoring).
pub fn requests_by_band<'a>(tasks: impl Iterator<Item = &'a Task>) -> [Resources; 4] {
    let mut out = [Resources::ZERO; 4];
    for t in tasks {
        let b = CellModel::band_of(t.priority);
        out[b] = out[b].saturating_add(t.request);
    }
    out
}

/// Tasks counted by band name.
pub fn count_by_band<'a>(tasks: impl Iterator<Item = &'a Task>) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for t in tasks {
        *out.entry(t.priority.band().map_or("invalid", |b| b.name())).or_default() += 1;
    }
    out
}
