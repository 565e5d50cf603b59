//! Fair share within a priority band: the order in which a pass takes the pending groups of
//! one priority.
//!
//! Borg §3.2 scans pending work "from high to low priority, modulated by a round-robin scheme
//! within a priority to ensure fairness across users and avoid head-of-line blocking behind a
//! large job". We take users by their current share instead of strictly in turn: Dominant
//! Resource Fairness (Ghodsi et al., NSDI 2011), where a user's share is the larger of the
//! fractions of the cell's CPU and RAM its running tasks at that band are charged, divided by
//! its weight there. DRF rather than a plain round-robin because tasks differ in size by orders
//! of magnitude (the Google 2011 trace: 0.0001 to 0.5 of a machine): turn-taking by task would
//! let a user of huge tasks take most of the freed capacity; by share, the user holding less of
//! the cell goes first. The master (`borgmaster::snapshot`) and fauxmaster's replay both order
//! through [`order_by_fair_share`], so simulated waits are the live master's.

use crate::resources::Resources;
use crate::task_group::TaskGroup;
use std::hash::Hash;

/// Dominant share of `used` in a cell of capacity `capacity`: the larger of its fractions of
/// the CPU and the RAM (0 when the cell has none of either).
pub fn dominant_share(used: Resources, capacity: Resources) -> f64 {
    let frac = |u: u64, c: u64| if c == 0 { 0.0 } else { u as f64 / c as f64 };
    frac(used.cpu_millis, capacity.cpu_millis).max(frac(used.ram_bytes, capacity.ram_bytes))
}

/// Orders `groups` for a pass: descending priority; within a priority, ascending `share` of the
/// group's owner (a user at a band, as `owner` names it; the share already divided by the
/// user's weight); between equal shares, the owner with fewer pending tasks in `groups` first
/// (so a user's small job is not kept behind another's huge backlog when both shares are 0);
/// otherwise the order they came in (the sort is stable).
///
/// With shares taken at the start of the pass, a user with a huge backlog cannot delay another
/// user's small job by more than one pass once capacity frees: the other user's share is the
/// smaller one.
pub fn order_by_fair_share<K: Eq + Hash>(
    groups: &mut [TaskGroup],
    owner: impl Fn(&TaskGroup) -> K,
    share: impl Fn(&TaskGroup) -> f64,
) {
    let mut backlog: foldhash::HashMap<K, usize> = foldhash::HashMap::default();
    for g in groups.iter() {
        *backlog.entry(owner(g)).or_default() += g.tasks.len();
    }
    // each group's key once (the owner and share closures look things up), not per comparison;
    // sort_by_cached_key is stable, so equal keys keep arrival order
    groups.sort_by_cached_key(|g| {
        let owner = owner(g);
        (std::cmp::Reverse(g.priority), total_order(share(g)), backlog.get(&owner).copied().unwrap_or(0))
    });
}

/// An integer that orders as [`f64::total_cmp`] orders the floats.
fn total_order(f: f64) -> i64 {
    let bits = f.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::priority::Priority;

    fn g(job_id: u32, prio: i32, tasks: u32) -> TaskGroup {
        TaskGroup {
            job_id,
            name: format!("j{job_id}"),
            priority: Priority(prio),
            request: Resources::new(100, 100, 0),
            constraints: vec![],
            different_machine: false,
            tasks: (0..tasks).collect(),
            occupied: vec![],
        }
    }

    #[test]
    fn total_order_orders_as_total_cmp() {
        let v = [f64::NEG_INFINITY, -2.5, -0.0, 0.0, 1e-300, 0.25, 0.5, 1.0, f64::INFINITY];
        for a in v {
            for b in v {
                assert_eq!(total_order(a).cmp(&total_order(b)), a.total_cmp(&b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn dominant_share_is_the_larger_fraction() {
        let cap = Resources::new(1000, 4000, 0);
        assert_eq!(dominant_share(Resources::new(500, 1000, 0), cap), 0.5);
        assert_eq!(dominant_share(Resources::new(100, 3000, 0), cap), 0.75);
        assert_eq!(dominant_share(Resources::new(100, 100, 0), Resources::ZERO), 0.0);
    }

    #[test]
    fn priority_first_then_smaller_share_then_smaller_backlog_then_arrival() {
        // jobs 0,1 user a; 2 user b; 3 user c; 4 user d at a higher priority
        let user = ["a", "a", "b", "c", "d"];
        let share = [0.5, 0.5, 0.1, 0.0, 0.9];
        let mut gs = vec![g(0, 100, 1000), g(1, 100, 5), g(2, 100, 3), g(3, 100, 7), g(4, 200, 1)];
        order_by_fair_share(&mut gs, |g| user[g.job_id as usize], |g| share[g.job_id as usize]);
        let order: Vec<u32> = gs.iter().map(|g| g.job_id).collect();
        assert_eq!(order, [4, 3, 2, 0, 1], "band first, then c (0.0), b (0.1), a's jobs in arrival order");
        // equal shares: the smaller backlog first
        let mut gs = vec![g(0, 100, 1000), g(2, 100, 3)];
        order_by_fair_share(&mut gs, |g| user[g.job_id as usize], |_| 0.0);
        assert_eq!(gs.iter().map(|g| g.job_id).collect::<Vec<_>>(), [2, 0]);
    }
}
