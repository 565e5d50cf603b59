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
    /// The crowding term in `score` (spreading weight x crowding).
    pub(crate) term: f64,
    /// The machine's failure domain.
    pub(crate) domain: u32,
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
///
/// **By failure domain** ([`CandHeap::by_domain`], for a class that spreads over domains of
/// several machines): a placement raises the crowding term of every candidate in its domain, and
/// in one heap each of them surfaces stale and is scored again, a pop and a push each (2.6 per
/// placement in a C1M pass on racks of 40). Here each domain's candidates sit in a heap of their
/// own, scored with the domain's current crowding term; a change of the term
/// ([`CandHeap::domain_moved`]) re-keys that domain's heap at once (a few dozen candidates), and
/// a heap of domains holds each domain's best. Within a class run a domain's term only grows
/// (counts only rise; an empty machine kept for large tasks stays kept, see `EmptyReserve`), so
/// the single heap, re-scoring lazily, chose the candidate best by its current score too: both
/// choose the same machines (same keys, same order).
#[derive(Debug, Default)]
pub(crate) struct CandHeap {
    /// The candidates' keys (one heap), when not by domain.
    keys: std::collections::BinaryHeap<u128>,
    /// Per machine index: the candidate last pushed for it (valid while it is in the heap).
    meta: Vec<Meta>,
    domains: Domains,
    by_domain: bool,
    len: usize,
}

/// The part of a [`Cand`] not in its heap key.
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    score: f64,
    base: f64,
    version: u64,
    crowd: Crowd,
    term: f64,
    domain: u32,
}

/// The candidates of a class by failure domain (see [`CandHeap`]); the slot after the last
/// domain's holds the empty machines kept for large tasks (their term is the same constant).
#[derive(Debug, Default)]
struct Domains {
    slots: Vec<Slot>,
    /// Index of the slot of kept machines.
    kept: usize,
    /// Each non-empty slot's best candidate as (key, slot, generation); an entry whose
    /// generation is not its slot's is stale and skipped.
    best: std::collections::BinaryHeap<(u128, u32, u32)>,
    /// Slots used since the run began (to reset).
    touched: Vec<u32>,
    /// Slots whose best changed since `best` was last read (ranked on the next read: a
    /// placement changes its slot up to three times, by the pop, the new term and the re-push).
    dirty: Vec<u32>,
}

#[derive(Debug, Default)]
struct Slot {
    /// key(base score + the slot's term, machine) of each candidate in the slot.
    keys: std::collections::BinaryHeap<u128>,
    generation: u32,
    /// The crowding of the slot's candidates now, and its term (weight x crowding).
    crowd: Crowd,
    term: f64,
    touched: bool,
    dirty: bool,
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

impl Domains {
    fn reset(&mut self) {
        for &s in &self.touched {
            let slot = &mut self.slots[s as usize];
            slot.keys.clear();
            slot.touched = false;
            slot.dirty = false;
        }
        self.touched.clear();
        self.dirty.clear();
        self.best.clear();
    }

    /// Marks slot `s` used, taking `crowd` and `term` as its own if it was not.
    fn touch(&mut self, s: usize, crowd: Crowd, term: f64) {
        let slot = &mut self.slots[s];
        if !slot.touched {
            slot.touched = true;
            slot.crowd = crowd;
            slot.term = term;
            self.touched.push(s as u32);
        }
    }

    /// Marks slot `s`'s entry in `best` stale; its best candidate goes in on the next read.
    fn rank(&mut self, s: usize) {
        let slot = &mut self.slots[s];
        if !slot.dirty {
            slot.dirty = true;
            slot.generation = slot.generation.wrapping_add(1);
            self.dirty.push(s as u32);
        }
    }

    /// Gives slot `s` crowding `crowd` and term `term`, re-keying its candidates when the term
    /// changed, and re-ranks it.
    fn set_term(&mut self, s: usize, crowd: Crowd, term: f64, meta: &[Meta]) {
        let slot = &mut self.slots[s];
        slot.crowd = crowd;
        if slot.term.to_bits() != term.to_bits() {
            slot.term = term;
            let mut keys = std::mem::take(&mut slot.keys).into_vec();
            for k in keys.iter_mut() {
                let m = machine_of(*k);
                // the sum as `Scheduler::candidate` computes it
                *k = key(meta[m as usize].base + term, m);
            }
            slot.keys = std::collections::BinaryHeap::from(keys);
            self.rank(s);
        }
    }

    /// The best current entry of `best` as (key, slot), stale ones dropped on the way.
    fn peek(&mut self) -> Option<(u128, usize)> {
        while let Some(s) = self.dirty.pop() {
            let slot = &mut self.slots[s as usize];
            slot.dirty = false;
            if let Some(&k) = slot.keys.peek() {
                self.best.push((k, s, slot.generation));
            }
        }
        while let Some(&(k, s, g)) = self.best.peek() {
            if self.slots[s as usize].generation == g {
                return Some((k, s as usize));
            }
            self.best.pop();
        }
        None
    }
}

impl CandHeap {
    /// An empty heap (one heap, not by domain) for a cell of `machines` machines, reusing
    /// `spare`'s memory (what [`CandHeap::into_spare`] returned), with room for `capacity`
    /// candidates.
    pub(crate) fn new(spare: CandHeap, machines: usize, capacity: usize) -> CandHeap {
        let mut heap = spare.into_spare();
        heap.keys.reserve(capacity);
        if heap.meta.len() < machines {
            heap.meta.resize(machines, Meta::default());
        }
        heap
    }

    /// This (empty) heap, ordering by failure domain (see the type's docs) in a cell of
    /// `domains` domains: every candidate pushed must carry its machine's domain and the crowding
    /// term it was scored with, and every change of a domain's term must be told
    /// ([`CandHeap::domain_moved`]).
    pub(crate) fn by_domain(mut self, domains: usize) -> CandHeap {
        debug_assert_eq!(self.len, 0);
        if self.domains.slots.len() < domains + 1 {
            self.domains.slots.resize_with(domains + 1, Slot::default);
        }
        self.domains.kept = domains;
        self.by_domain = true;
        self
    }

    /// The heap emptied, its memory kept for the next [`CandHeap::new`].
    pub(crate) fn into_spare(mut self) -> CandHeap {
        self.keys.clear();
        self.domains.reset();
        self.by_domain = false;
        self.len = 0;
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `c` (whose machine must not be in the heap already).
    pub(crate) fn push(&mut self, c: Cand) {
        let m = c.m as usize;
        if m >= self.meta.len() {
            self.meta.resize(m + 1, Meta::default());
        }
        self.meta[m] =
            Meta { score: c.score, base: c.base, version: c.version, crowd: c.crowd, term: c.term, domain: c.domain };
        self.len += 1;
        if !self.by_domain {
            self.keys.push(key(c.score, c.m));
            return;
        }
        let d = &mut self.domains;
        debug_assert!((c.domain as usize) < d.kept, "domain {} of {}", c.domain, d.kept);
        let s = if c.crowd.kept { d.kept } else { (c.domain as usize).min(d.kept) };
        d.touch(s, c.crowd, c.term);
        if !c.crowd.kept && (d.slots[s].crowd != c.crowd || d.slots[s].term.to_bits() != c.term.to_bits()) {
            // scored with another term than the slot's (a change not told): the newest wins
            d.set_term(s, c.crowd, c.term, &self.meta);
        }
        let slot = &mut d.slots[s];
        let k = key(c.score, c.m);
        let was = slot.keys.peek().copied();
        slot.keys.push(k);
        if was.is_none_or(|w| k > w) {
            d.rank(s);
        }
    }

    fn cand(&self, key: u128) -> Cand {
        let m = machine_of(key);
        let x = self.meta[m as usize];
        Cand { score: x.score, base: x.base, m, version: x.version, crowd: x.crowd, term: x.term, domain: x.domain }
    }

    /// The candidate of machine `m` in slot `s`, scored with the slot's term now.
    fn cand_in(&self, s: usize, m: u32) -> Cand {
        let x = self.meta[m as usize];
        let slot = &self.domains.slots[s];
        let crowd = if s == self.domains.kept { x.crowd } else { slot.crowd };
        Cand {
            score: x.base + slot.term,
            base: x.base,
            m,
            version: x.version,
            crowd,
            term: slot.term,
            domain: x.domain,
        }
    }

    /// Removes and returns the best candidate (by domain: scored with its domain's term now).
    pub(crate) fn pop(&mut self) -> Option<Cand> {
        if !self.by_domain {
            let k = self.keys.pop()?;
            self.len -= 1;
            return Some(self.cand(k));
        }
        let (_, s) = self.domains.peek()?;
        self.domains.best.pop();
        let m = machine_of(self.domains.slots[s].keys.pop()?);
        self.domains.rank(s);
        self.len -= 1;
        Some(self.cand_in(s, m))
    }

    /// Whether the best candidate in the heap is better than `c`.
    pub(crate) fn top_beats(&mut self, c: &Cand) -> bool {
        let top = if self.by_domain { self.domains.peek().map(|(k, _)| k) } else { self.keys.peek().copied() };
        top.is_some_and(|k| k > key(c.score, c.m))
    }

    /// Tells the heap that the candidates of failure domain `domain` now have crowding `crowd`
    /// and term `term` (a placement in the domain); nothing when not by domain.
    pub(crate) fn domain_moved(&mut self, domain: u32, crowd: Crowd, term: f64) {
        if !self.by_domain {
            return;
        }
        let d = &mut self.domains;
        let s = (domain as usize).min(d.kept);
        if s == d.kept {
            return;
        }
        d.touch(s, crowd, term);
        d.set_term(s, crowd, term, &self.meta);
    }

    /// The machines in the heap, in no particular order.
    pub(crate) fn machines(&self) -> impl Iterator<Item = u32> + '_ {
        let d = &self.domains;
        let by_domain = d.touched.iter().flat_map(move |&s| d.slots[s as usize].keys.iter());
        self.keys.iter().chain(by_domain).map(|&k| machine_of(k))
    }

    /// Every candidate, in no particular order; the heap is left empty.
    pub(crate) fn drain(&mut self) -> Vec<Cand> {
        let mut out: Vec<Cand> = self.keys.iter().map(|&k| self.cand(k)).collect();
        for &s in &self.domains.touched {
            out.extend(self.domains.slots[s as usize].keys.iter().map(|&k| self.cand_in(s as usize, machine_of(k))));
        }
        self.keys.clear();
        self.domains.reset();
        self.len = 0;
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
        Cand {
            score,
            base: score / 2.0,
            m,
            version: u64::from(m) * 3,
            crowd: Crowd { count: m % 5, kept: m.is_multiple_of(2) },
            term: score / 2.0,
            domain: m % 3,
        }
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
