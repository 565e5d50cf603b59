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

/// A class's candidate heap (the best candidate first: lowest score, ties to the lower machine
/// index, as [`Cand`]'s order). A pop moves and compares 16-byte keys, not whole candidates: the
/// key is the score in an order-preserving integer form with the machine index, and the rest of
/// each candidate (base score, version, crowding) is kept beside it per machine, which works
/// because a machine is in a class's heap at most once (every way in is stamped per class run,
/// and a candidate is popped before its machine is pushed again). Pops were 40% of a C1M pass's
/// instructions with 40-byte candidates.
#[derive(Debug, Default)]
pub(crate) struct CandHeap {
    keys: std::collections::BinaryHeap<u128>,
    /// Per machine index: the candidate last pushed for it (valid while its key is in `keys`).
    meta: Vec<Meta>,
}

/// The part of a [`Cand`] not in its heap key.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    score: f64,
    base: f64,
    version: u64,
    crowd: Crowd,
}

/// The heap key of a candidate: larger for a better candidate (the max-heap pops it first), the
/// same order as [`Cand`]'s `Ord`: lower score first (`f64::total_cmp`'s order), then lower
/// machine index.
fn key(score: f64, m: u32) -> u128 {
    // f64::total_cmp's transform: an i64 in the floats' total order; then to an unsigned order
    let bits = score.to_bits() as i64;
    let ordered = bits ^ ((((bits >> 63) as u64) >> 1) as i64);
    let unsigned = (ordered as u64) ^ (1 << 63);
    ((!unsigned as u128) << 32) | (!m) as u128
}

fn machine_of(key: u128) -> u32 {
    !(key as u32)
}

impl CandHeap {
    /// An empty heap for a cell of `machines` machines, reusing `spare`'s memory (what
    /// [`CandHeap::into_spare`] returned), with room for `capacity` candidates.
    pub(crate) fn new(spare: CandHeap, machines: usize, capacity: usize) -> CandHeap {
        let CandHeap { mut keys, mut meta } = spare;
        keys.clear();
        keys.reserve(capacity);
        if meta.len() < machines {
            meta.resize(machines, Meta::default());
        }
        CandHeap { keys, meta }
    }

    /// The heap emptied, its memory kept for the next [`CandHeap::new`].
    pub(crate) fn into_spare(mut self) -> CandHeap {
        self.keys.clear();
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Adds `c` (whose machine must not be in the heap already).
    pub(crate) fn push(&mut self, c: Cand) {
        let m = c.m as usize;
        if m >= self.meta.len() {
            self.meta.resize(m + 1, Meta::default());
        }
        self.meta[m] = Meta { score: c.score, base: c.base, version: c.version, crowd: c.crowd };
        self.keys.push(key(c.score, c.m));
    }

    fn cand(&self, key: u128) -> Cand {
        let m = machine_of(key);
        let x = self.meta[m as usize];
        Cand { score: x.score, base: x.base, m, version: x.version, crowd: x.crowd }
    }

    /// Removes and returns the best candidate.
    pub(crate) fn pop(&mut self) -> Option<Cand> {
        self.keys.pop().map(|k| self.cand(k))
    }

    /// Whether the best candidate in the heap is better than `c`.
    pub(crate) fn top_beats(&self, c: &Cand) -> bool {
        self.keys.peek().is_some_and(|&k| k > key(c.score, c.m))
    }

    /// The machines in the heap, in no particular order.
    pub(crate) fn machines(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys.iter().map(|&k| machine_of(k))
    }

    /// Every candidate, in no particular order; the heap is left empty.
    pub(crate) fn drain(&mut self) -> Vec<Cand> {
        let mut keys = std::mem::take(&mut self.keys).into_vec();
        let out = keys.iter().map(|&k| self.cand(k)).collect();
        keys.clear();
        self.keys = std::collections::BinaryHeap::from(keys); // empty: keeps the memory
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(score: f64, m: u32) -> Cand {
        Cand { score, base: score / 2.0, m, version: u64::from(m) * 3, crowd: Crowd { count: m % 5, kept: m.is_multiple_of(2) } }
    }

    proptest! {
        /// The heap pops in `Cand`'s order (lowest score first, ties to the lower machine), with
        /// each candidate's other fields intact: scores of either sign, ties, and zero of both
        /// signs included.
        #[test]
        fn pops_in_the_order_of_cand(scores in proptest::collection::vec(
            prop_oneof![-1e6f64..1e6, Just(0.0), Just(-0.0), Just(1.5), Just(f64::INFINITY)], 0..200)
        ) {
            let cands: Vec<Cand> = scores.iter().enumerate().map(|(m, &s)| cand(s, (m as u32).wrapping_mul(7919) % 100_003)).collect();
            let mut heap = CandHeap::new(CandHeap::default(), 0, cands.len());
            for c in &cands {
                heap.push(*c);
            }
            let mut expected = cands.clone();
            expected.sort_by(|a, b| b.cmp(a)); // the max-heap order: best first
            let mut popped = Vec::new();
            while let Some(c) = heap.pop() {
                prop_assert!(!heap.top_beats(&c), "a candidate left is better than the one popped");
                popped.push(c);
            }
            prop_assert_eq!(popped.len(), expected.len());
            for (p, e) in popped.iter().zip(&expected) {
                prop_assert_eq!((p.m, p.score.to_bits(), p.base.to_bits(), p.version, p.crowd), (e.m, e.score.to_bits(), e.base.to_bits(), e.version, e.crowd));
            }
        }
    }

    #[test]
    fn top_beats_compares_with_the_best() {
        let mut heap = CandHeap::new(CandHeap::default(), 4, 4);
        assert!(!heap.top_beats(&cand(1.0, 0)), "an empty heap beats nothing");
        heap.push(cand(0.5, 3));
        heap.push(cand(0.7, 1));
        assert!(heap.top_beats(&cand(0.6, 0)));
        assert!(heap.top_beats(&cand(0.5, 4)), "a tie goes to the lower machine");
        assert!(!heap.top_beats(&cand(0.5, 2)));
        let mut ms: Vec<u32> = heap.machines().collect();
        ms.sort();
        assert_eq!(ms, vec![1, 3]);
        let drained = heap.drain();
        assert_eq!((drained.len(), heap.len()), (2, 0));
        let heap = CandHeap::new(heap.into_spare(), 4, 1);
        assert_eq!(heap.len(), 0);
    }
}
