//! A linearizability checker for recorded client histories: the Wing & Gong search (Wing and
//! Gong, "Testing and verifying concurrent objects", JPDC 1993) with Lowe's memoization of
//! (linearized set, state) pairs ("Testing for linearizability", CCPE 2017), as the porcupine
//! checker that etcd's robustness tests use does it.
//!
//! A history is a list of [`Op`]s, each with the time it was invoked and the time it returned.
//! It is linearizable when every operation can be given one instant between its invocation and
//! its return such that, applied in the order of those instants, the [`Model`] produces every
//! recorded output. An operation whose outcome is unknown (the client lost the answer) may take
//! effect at any instant after its invocation up to its `ret` (the latest time the caller allows
//! for it; `u64::MAX`: any time), with any output, or not at all. A finite bound only ever
//! rejects more histories (fewer linearizations are tried), never fewer: it keeps the search
//! small, at the price of a false alarm should an effect come later than the bound. Histories
//! are checked per key (P-compositionality: a history is linearizable when
//! each key's sub-history is), which keeps the search small.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    /// The object's state; hashed for the memo.
    type State: Clone + Eq + Hash + std::fmt::Debug;
    /// An operation and its arguments.
    type Input: std::fmt::Debug;
    /// What the operation returned.
    type Output: std::fmt::Debug;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// The state after `input` applied to `state`, if `output` is what the specification
    /// answers there (`None` for the output: unknown, any answer the specification can give).
    /// `None` when the output is impossible in `state`.
    fn step(&self, state: &Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::State>;
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq)]
pub struct Op<I, O> {
    /// Which client issued it (for messages).
    pub client: usize,
    /// What it asked.
    pub input: I,
    /// What it got: `None` when the outcome is unknown (timeout, connection lost).
    pub output: Option<O>,
    /// When it was invoked (any monotonic unit, e.g. microseconds since the run started).
    pub call: u64,
    /// When it returned; when `output` is `None`, the latest time it may have taken effect
    /// (`u64::MAX`: any time).
    pub ret: u64,
}

/// Why a history is not (known to be) linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No linearization exists. `longest` is the longest prefix of operations the search
    /// could linearize (op indices in linearization order), and `stuck` the operation whose
    /// return ended that prefix (none of the candidates before it fit), with the model's state
    /// there (`Debug`).
    Illegal { longest: Vec<usize>, stuck: Vec<usize>, state: String },
    /// The search gave up after `steps` steps without deciding.
    Inconclusive { steps: u64 },
}

/// Steps after which [`check`] gives up ([`Verdict::Inconclusive`]).
pub const MAX_STEPS: u64 = 20_000_000;

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call: the index of its return entry.
    partner: usize,
    prev: usize,
    next: usize,
}

/// Checks `history` against `model`.
///
/// Returns `Ok(order)`, a linearization (op indices in order), or a [`Verdict`].
pub fn check<M: Model>(model: &M, history: &[Op<M::Input, M::Output>]) -> Result<Vec<usize>, Verdict> {
    let n = history.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    // events: (time, is_return, op); calls sort before returns at the same time (the more
    // permissive order: the two overlap)
    let end = history.iter().map(|o| if o.ret == u64::MAX { o.call } else { o.ret.max(o.call) }).max().unwrap_or(0);
    let end = end.saturating_add(1);
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in history.iter().enumerate() {
        let ret = if o.ret == u64::MAX { end } else { o.ret.max(o.call) };
        events.push((o.call, false, i));
        events.push((ret, true, i));
    }
    events.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
    // a doubly linked list over entries 1..=2n, with a head at 0
    let head = 0usize;
    let mut e: Vec<Entry> = Vec::with_capacity(2 * n + 1);
    e.push(Entry { op: usize::MAX, is_call: false, partner: 0, prev: 0, next: 1 });
    let mut ret_entry = vec![0usize; n];
    for (k, &(_, is_ret, op)) in events.iter().enumerate() {
        let idx = k + 1;
        e.push(Entry { op, is_call: !is_ret, partner: 0, prev: idx - 1, next: idx + 1 });
        if is_ret {
            ret_entry[op] = idx;
        }
    }
    let last = e.len() - 1;
    e[last].next = usize::MAX;
    for idx in 1..e.len() {
        if e[idx].is_call {
            e[idx].partner = ret_entry[e[idx].op];
        }
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut memo: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    // (call entry, state before it, which alternative was taken)
    let mut stack: Vec<(usize, M::State, usize)> = Vec::new();
    let mut retry_alternative: Option<usize> = None;
    let mut state = model.init();
    let mut longest: Vec<usize> = Vec::new();
    let mut stuck_at: (Vec<usize>, String) = (Vec::new(), String::new());
    let mut cursor = e[head].next;
    let mut steps = 0u64;
    // lift: unlink a call entry and its return
    fn unlink(e: &mut [Entry], i: usize) {
        let (p, nx) = (e[i].prev, e[i].next);
        e[p].next = nx;
        if nx != usize::MAX {
            e[nx].prev = p;
        }
    }
    fn relink(e: &mut [Entry], i: usize) {
        let (p, nx) = (e[i].prev, e[i].next);
        e[p].next = i;
        if nx != usize::MAX {
            e[nx].prev = i;
        }
    }
    while e[head].next != usize::MAX {
        steps += 1;
        if steps > MAX_STEPS {
            return Err(Verdict::Inconclusive { steps });
        }
        let cur = e[cursor];
        if cur.is_call {
            let op = &history[cur.op];
            // an operation with an unknown outcome may also have had no effect at all: its
            // second alternative, tried when the first one is backtracked
            let alternatives = [
                model.step(&state, &op.input, op.output.as_ref()),
                if op.output.is_none() { Some(state.clone()) } else { None },
            ];
            let from = retry_alternative.take().unwrap_or(0);
            let mut bits = linearized.clone();
            bits[cur.op / 64] |= 1 << (cur.op % 64);
            let mut moved = false;
            for (alt, next) in alternatives.into_iter().enumerate().skip(from) {
                let Some(next) = next else { continue };
                if !memo.insert((bits.clone(), next.clone())) {
                    continue;
                }
                stack.push((cursor, state, alt));
                state = next;
                linearized = bits;
                // unlink the return first (it comes later), then the call
                let r = cur.partner;
                unlink(&mut e, r);
                unlink(&mut e, cursor);
                if stack.len() > longest.len() {
                    longest = stack.iter().map(|(c, _, _)| e[*c].op).collect();
                }
                cursor = e[head].next;
                moved = true;
                break;
            }
            if !moved {
                cursor = cur.next;
            }
        } else {
            // a return whose call could not be linearized before it: backtrack
            if stack.len() >= longest.len() {
                stuck_at = (vec![cur.op], format!("{state:?}"));
            }
            let Some((c, prev, alt)) = stack.pop() else {
                let (stuck, state) = stuck_at;
                return Err(Verdict::Illegal { longest, stuck, state });
            };
            let op = e[c].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = prev;
            let r = e[c].partner;
            relink(&mut e, c);
            relink(&mut e, r);
            if alt == 0 && history[op].output.is_none() {
                // the same operation again, without its effect
                cursor = c;
                retry_alternative = Some(1);
            } else {
                cursor = e[c].next;
            }
        }
    }
    Ok(stack.iter().map(|(c, _, _)| e[*c].op).collect())
}

/// The job name of key `k` in the fault suite and the simulation.
pub fn key_name(k: usize) -> String {
    format!("k{k}")
}

/// The spec of key `k` holding `value` (in its env `V`), owned by `user`: one task of 1,000
/// cores, which no machine fits (so it never runs or finishes).
pub fn key_spec(k: usize, value: u64, user: &str) -> borg_jobspec::JobSpec {
    let mut spec = borg_jobspec::JobSpec::new(
        key_name(k),
        user,
        scheduler_core::Priority(100),
        borg_jobspec::JobKind::Service,
        1,
        vec!["/bin/true".into()],
        scheduler_core::Resources::new(1_000_000, 1 << 20, 0),
    );
    spec.env.insert("V".into(), value.to_string());
    spec
}

/// The job store as the fault suite drives it, one job name per key: `apply` (with an optional
/// expected version: a compare-and-set), `kill` and `get`, with the master's semantics
/// (`borgmaster/src/state/jobs.rs`): an apply of the spec the job already has, unkilled, is
/// unchanged; any other apply makes version + 1 and revives a killed job; an apply whose
/// expected version is not the current one (0 = absent) is refused; a kill of a killed job
/// changes nothing.
pub struct JobStore;

/// One key's state: `None` while the job does not exist, else (version, value, killed). The
/// value identifies the spec (the suite writes a distinct value with every apply).
pub type JobState = Option<(u64, u64, bool)>;

/// An operation on one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobInput {
    /// Apply the spec with this value, if the version is `expected` (when given).
    Apply { value: u64, expected: Option<u64> },
    /// Kill the job.
    Kill,
    /// Read it.
    Get,
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutput {
    /// Apply: the version after it.
    Applied { version: u64 },
    /// Apply: refused, the version was `actual`.
    VersionMismatch { actual: u64 },
    /// Kill: done, or already killed.
    Killed { already: bool },
    /// Kill: no such job.
    NoSuchJob,
    /// Get: the job (version, value, killed), or `None` when it does not exist.
    Got(JobState),
}

impl JobOutput {
    /// The version this answer shows the job at (0: absent), if it shows one: what a client
    /// expects next time (kills show none).
    pub fn version(&self) -> Option<u64> {
        match self {
            JobOutput::Applied { version } | JobOutput::VersionMismatch { actual: version } => Some(*version),
            JobOutput::Got(s) => Some(s.map_or(0, |(v, _, _)| v)),
            JobOutput::NoSuchJob => Some(0),
            JobOutput::Killed { .. } => None,
        }
    }
}

/// A client's next operation, drawn from `rng`: an apply `applies`% of the time (of a value
/// unique to `client` and its `seq`-th operation; 7 times in 10 expecting `known`, the last
/// version it saw, 0 when none), a kill `kills`% of the time, else a get.
pub fn random_input(
    rng: &mut rand::rngs::SmallRng,
    client: usize,
    seq: u64,
    known: Option<u64>,
    applies: u32,
    kills: u32,
) -> JobInput {
    use rand::RngExt;
    let r = rng.random_range(0..100);
    if r < applies {
        let expected = if rng.random_range(0..10) < 7 { Some(known.unwrap_or(0)) } else { None };
        JobInput::Apply { value: client as u64 * 1_000_000_000 + seq, expected }
    } else if r < applies + kills {
        JobInput::Kill
    } else {
        JobInput::Get
    }
}

impl Model for JobStore {
    type State = JobState;
    type Input = JobInput;
    type Output = JobOutput;

    fn init(&self) -> JobState {
        None
    }

    fn step(&self, s: &JobState, input: &JobInput, out: Option<&JobOutput>) -> Option<JobState> {
        let version = s.map_or(0, |(v, _, _)| v);
        let (next, answer) = match input {
            JobInput::Apply { expected: Some(e), .. } if *e != version => {
                (*s, JobOutput::VersionMismatch { actual: version })
            }
            JobInput::Apply { value, .. } => match s {
                Some((v, val, false)) if val == value => (*s, JobOutput::Applied { version: *v }),
                _ => (Some((version + 1, *value, false)), JobOutput::Applied { version: version + 1 }),
            },
            JobInput::Kill => match s {
                None => (None, JobOutput::NoSuchJob),
                Some((v, val, killed)) => (Some((*v, *val, true)), JobOutput::Killed { already: *killed }),
            },
            JobInput::Get => (*s, JobOutput::Got(*s)),
        };
        match out {
            None => Some(next),
            Some(o) if *o == answer => Some(next),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, input: JobInput, output: Option<JobOutput>, call: u64, ret: u64) -> Op<JobInput, JobOutput> {
        Op { client, input, output, call, ret }
    }
    fn apply(value: u64, expected: Option<u64>) -> JobInput {
        JobInput::Apply { value, expected }
    }
    fn got(v: u64, value: u64) -> Option<JobOutput> {
        Some(JobOutput::Got(Some((v, value, false))))
    }

    #[test]
    fn sequential_and_overlapping_histories_are_linearizable() {
        // c0 writes 1 then 2; c1's read overlaps the second write and may see either
        for seen in [(1, 1), (2, 2)] {
            let h = vec![
                op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 0, 10),
                op(0, apply(2, Some(1)), Some(JobOutput::Applied { version: 2 }), 20, 40),
                op(1, JobInput::Get, got(seen.0, seen.1), 25, 30),
                op(1, JobInput::Get, got(2, 2), 50, 60),
            ];
            let order = check(&JobStore, &h).unwrap_or_else(|v| panic!("{seen:?}: {v:?}"));
            assert_eq!(order.len(), 4);
        }
        // an unknown apply may have happened (seen later) or not (never seen)
        for later in [got(2, 7), got(1, 1)] {
            let h = vec![
                op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 0, 10),
                op(0, apply(7, None), None, 20, u64::MAX),
                op(1, JobInput::Get, later.clone(), 100, 110),
            ];
            assert!(check(&JobStore, &h).is_ok(), "{later:?}");
        }
        // within its bound, before a read that sees it; or not at all, before one that does not
        let h = vec![
            op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 0, 10),
            op(0, apply(7, None), None, 20, 50),
            op(1, JobInput::Get, got(1, 1), 30, 35),
            op(1, JobInput::Get, got(2, 7), 40, 45),
        ];
        assert!(check(&JobStore, &h).is_ok());
    }

    #[test]
    fn an_unknown_write_seen_after_its_bound_is_rejected() {
        // the caller allowed the lost apply to take effect until 50; it shows up at 100, after
        // a read at 60 that did not see it
        let h = vec![
            op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 0, 10),
            op(0, apply(7, None), None, 20, 50),
            op(1, JobInput::Get, got(1, 1), 60, 65),
            op(1, JobInput::Get, got(2, 7), 100, 110),
        ];
        assert!(matches!(check(&JobStore, &h), Err(Verdict::Illegal { .. })));
    }

    #[test]
    fn a_stale_read_after_a_write_returned_is_rejected() {
        let h = vec![
            op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 0, 10),
            op(0, apply(2, None), Some(JobOutput::Applied { version: 2 }), 20, 30),
            // begins after version 2 was acknowledged, yet sees version 1
            op(1, JobInput::Get, got(1, 1), 40, 50),
        ];
        let Err(Verdict::Illegal { longest, .. }) = check(&JobStore, &h) else { panic!("accepted a stale read") };
        assert_eq!(longest.len(), 2, "the two writes linearize, the read cannot follow them");
    }

    #[test]
    fn a_refused_compare_and_set_that_took_effect_is_rejected() {
        // c0's CAS from version 1 says "mismatch", but its value is there afterwards and no one
        // else wrote it
        let h = vec![
            op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 0, 10),
            op(0, apply(5, Some(1)), Some(JobOutput::VersionMismatch { actual: 2 }), 20, 30),
            op(1, JobInput::Get, got(2, 5), 40, 50),
        ];
        assert!(matches!(check(&JobStore, &h), Err(Verdict::Illegal { .. })));
        // two CASes from the same version cannot both succeed
        let h = vec![
            op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 0, 10),
            op(1, apply(2, Some(1)), Some(JobOutput::Applied { version: 2 }), 20, 30),
            op(2, apply(3, Some(1)), Some(JobOutput::Applied { version: 2 }), 21, 31),
        ];
        assert!(matches!(check(&JobStore, &h), Err(Verdict::Illegal { .. })));
    }

    #[test]
    fn one_write_seen_twice_around_another_is_rejected() {
        // value 1 at version 1, then 2, then 1 again at version 3, but only one apply of 1
        let h = vec![
            op(0, apply(1, None), Some(JobOutput::Applied { version: 3 }), 0, 100),
            op(1, apply(2, None), Some(JobOutput::Applied { version: 2 }), 10, 20),
            op(2, JobInput::Get, got(1, 1), 5, 8),
        ];
        assert!(matches!(check(&JobStore, &h), Err(Verdict::Illegal { .. })));
    }

    #[test]
    fn kills_follow_the_job_store_rules() {
        let h = vec![
            op(0, JobInput::Kill, Some(JobOutput::NoSuchJob), 0, 5),
            op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 10, 20),
            op(0, JobInput::Kill, Some(JobOutput::Killed { already: false }), 30, 40),
            op(1, JobInput::Get, Some(JobOutput::Got(Some((1, 1, true)))), 50, 60),
            op(0, apply(1, None), Some(JobOutput::Applied { version: 2 }), 70, 80),
        ];
        assert!(check(&JobStore, &h).is_ok(), "an apply revives a killed job at version + 1");
        let h = vec![
            op(0, apply(1, None), Some(JobOutput::Applied { version: 1 }), 10, 20),
            op(0, JobInput::Kill, Some(JobOutput::Killed { already: true }), 30, 40),
        ];
        assert!(check(&JobStore, &h).is_err(), "nothing killed it before");
    }

    #[test]
    fn a_wide_concurrent_history_is_decided_quickly() {
        // 8 clients, 200 overlapping reads and writes of one key; each read sees the value of
        // the write that ended just before it began
        let mut h = Vec::new();
        let mut t = 0;
        let mut version = 0;
        for round in 0..25u64 {
            version += 1;
            h.push(op(0, apply(round + 1, None), Some(JobOutput::Applied { version }), t, t + 10));
            for c in 1..8 {
                h.push(op(c, JobInput::Get, got(version, round + 1), t + 11, t + 19 + c as u64));
            }
            t += 30;
        }
        assert!(check(&JobStore, &h).is_ok());
    }
}
