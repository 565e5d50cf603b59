//! Task identities: a task is `job/index` ([`TaskId`]); one run of it is a [`RunId`] (the task
//! and its incarnation, which the master bumps at every (re)placement, so that a Borglet's
//! report of an older incarnation is recognised as stale).

use serde::{Deserialize, Serialize};

/// A task of a cell: its job's name and its index, `0..tasks`. Displays as `job/index`. Ordered
/// by job, then index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// Job name.
    pub job: String,
    /// Task index.
    pub index: u32,
}

impl TaskId {
    /// Task `index` of `job`.
    pub fn new(job: impl Into<String>, index: u32) -> TaskId {
        TaskId { job: job.into(), index }
    }

    /// Run `incarnation` of this task.
    pub fn run(&self, incarnation: u64) -> RunId {
        RunId { task: self.clone(), incarnation }
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.job, self.index)
    }
}

/// One run of a task: the task and its incarnation. Displays as `job/index#incarnation`. Ordered
/// by task, then incarnation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RunId {
    /// The task.
    pub task: TaskId,
    /// Its incarnation (from 1).
    pub incarnation: u64,
}

impl RunId {
    /// Run `incarnation` of task `index` of `job`.
    pub fn new(job: impl Into<String>, index: u32, incarnation: u64) -> RunId {
        RunId { task: TaskId::new(job, index), incarnation }
    }
}

/// A run named by its parts, to look a [`RunId`] up in a map without building one (no job name
/// to copy): `map.get(&("web", 2, 7) as &dyn RunKey)`. Hashes and compares as the [`RunId`] it
/// names.
pub trait RunKey {
    /// The job's name.
    fn job(&self) -> &str;
    /// The task index.
    fn index(&self) -> u32;
    /// The incarnation.
    fn incarnation(&self) -> u64;
}

impl RunKey for RunId {
    fn job(&self) -> &str {
        &self.task.job
    }
    fn index(&self) -> u32 {
        self.task.index
    }
    fn incarnation(&self) -> u64 {
        self.incarnation
    }
}

impl RunKey for (&str, u32, u64) {
    fn job(&self) -> &str {
        self.0
    }
    fn index(&self) -> u32 {
        self.1
    }
    fn incarnation(&self) -> u64 {
        self.2
    }
}

impl<'a> std::borrow::Borrow<dyn RunKey + 'a> for RunId {
    fn borrow(&self) -> &(dyn RunKey + 'a) {
        self
    }
}

/// As `RunId`'s derived `Hash`: the job's name, the index, the incarnation, in that order.
impl std::hash::Hash for dyn RunKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.job().hash(state);
        self.index().hash(state);
        self.incarnation().hash(state);
    }
}

impl PartialEq for dyn RunKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.index() == other.index() && self.incarnation() == other.incarnation() && self.job() == other.job()
    }
}

impl Eq for dyn RunKey + '_ {}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.task, self.incarnation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_and_order_like_job_then_index_then_incarnation() {
        let a = RunId::new("web", 2, 7);
        assert_eq!(a.to_string(), "web/2#7");
        assert_eq!(a.task.to_string(), "web/2");
        let mut v = [RunId::new("web", 10, 1), RunId::new("db", 3, 1), RunId::new("web", 2, 9), a.clone()];
        v.sort();
        assert_eq!(v.map(|r| r.to_string()), ["db/3#1", "web/2#7", "web/2#9", "web/10#1"]);
        assert_eq!(TaskId::new("web", 2).run(7), a);
    }

    /// A run is found by its parts exactly where it is found by its id.
    #[test]
    fn a_run_key_finds_what_its_run_id_finds() {
        let mut m = std::collections::HashMap::new();
        for (job, i, inc) in [("web", 2, 7), ("web", 2, 8), ("web", 3, 7), ("db", 2, 7), ("we", 2, 7)] {
            m.insert(RunId::new(job, i, inc), format!("{job}/{i}#{inc}"));
        }
        for (job, i, inc) in [("web", 2u32, 7u64), ("web", 2, 8), ("web", 3, 7), ("db", 2, 7), ("we", 2, 7)] {
            let key = (job, i, inc);
            assert_eq!(m.get(&key as &dyn RunKey), Some(&format!("{job}/{i}#{inc}")));
        }
        for key in [("web", 2u32, 9u64), ("web", 4, 7), ("wb", 2, 7), ("", 2, 7)] {
            assert_eq!(m.get(&key as &dyn RunKey), None, "{key:?}");
        }
    }
}
