//! The candidate heap and the score cache of a scheduling pass (Borg §3.4, score caching):
//! feasible machines of one equivalence class ordered by score, and what a class keeps between
//! passes so that unchanged machines are not scored again.

use std::cmp::Ordering;

/// One scored feasible machine in a class's candidate heap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    /// Score now (base plus spreading penalties); lower is better.
    pub(crate) score: f64,
    /// Score from the machine's resources alone (what the cache keeps).
    pub(crate) base: f64,
    /// Machine index.
    pub(crate) m: u32,
    /// The machine's version when scored (a changed machine is scored again).
    pub(crate) version: u64,
    /// What the crowding term depended on when scored.
    pub(crate) crowd: Crowd,
}

/// What a candidate's crowding term depends on (a change makes the candidate stale).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Crowd {
    /// Tasks of the class in the machine's failure domain.
    pub(crate) count: u32,
    /// Whether the machine was an empty one kept for large tasks.
    pub(crate) kept: bool,
}

impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    /// Max-heap order that pops the lowest score first, ties to the lower machine index.
    fn cmp(&self, o: &Self) -> Ordering {
        o.score.total_cmp(&self.score).then(o.m.cmp(&self.m))
    }
}

/// What a class keeps between passes.
#[derive(Debug, Default)]
pub(crate) struct ClassCache {
    /// Where in the random machine order the class's next examination starts.
    pub(crate) cursor: usize,
    /// (machine, version, base score) of the candidates left at the end of the last pass.
    pub(crate) candidates: Vec<(u32, u64, f64)>,
    /// Set once the whole cell was examined: the freed-log position then. Every machine not in
    /// `candidates` was infeasible at that point, so later passes examine only machines freed
    /// since.
    pub(crate) exhausted_at: Option<usize>,
    /// The pass that last used this entry (entries unused for [`CACHE_TTL`] passes are dropped).
    pub(crate) last_pass: u64,
}

/// Passes a class may go unused before its cache entry is dropped.
pub(crate) const CACHE_TTL: u64 = 64;

/// Candidates a class keeps between passes, at most (the best by score): a production class
/// examines several per task ([`crate::Params::per_task`]), and what it keeps is only a warm
/// start.
pub(crate) const CACHE_KEEP: usize = 256;
