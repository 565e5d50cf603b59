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
}
