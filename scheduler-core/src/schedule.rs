//! The placement pipeline: for each task, feasibility checking then scoring, then bind.

use crate::cell::{CellModel, MachineIndex};
use crate::feasibility::check;
use crate::scoring::best_fit;
use crate::task_group::TaskGroup;
use crate::why_pending::WhyPending;

/// One placement decision: task `job/index` goes to machine `machine` of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Job name.
    pub job: String,
    /// Task index.
    pub index: u32,
    /// Index into the [`CellModel`] the pass ran on.
    pub machine: MachineIndex,
}

/// Tasks of one group that could not be placed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// Job name.
    pub job: String,
    /// Task indices left pending, ascending.
    pub tasks: Vec<u32>,
    /// Per-reason machine counts for the first of them.
    pub why: WhyPending,
}

/// Result of one scheduling pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Decisions in the order they were made (groups by descending priority, then input order;
    /// tasks by ascending index).
    pub bindings: Vec<Binding>,
    /// Groups with tasks left pending, in the same order.
    pub unplaced: Vec<Unplaced>,
}

/// Places as many tasks of `groups` as fit on `cell`, highest priority first, each task on its
/// best-fit feasible machine (see [`best_fit`]; ties go to the lower machine index, so a pass is
/// deterministic). Adds each placed task's request to `cell.allocated`.
///
/// This is the first placement function: an exhaustive O(machines) scan per task, without
/// preemption. It never returns an error: a task that fits nowhere is reported in
/// [`Placement::unplaced`] with its [`WhyPending`].
pub fn schedule(cell: &mut CellModel, groups: &[TaskGroup]) -> Placement {
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| std::cmp::Reverse(groups[g].priority));
    let mut out = Placement::default();
    for g in order {
        let group = &groups[g];
        let mut taken = vec![false; cell.len()];
        for &m in &group.occupied {
            if let Some(t) = taken.get_mut(m) {
                *t = true;
            }
        }
        for (k, &index) in group.tasks.iter().enumerate() {
            let mut best: Option<(f64, MachineIndex)> = None;
            for i in 0..cell.len() {
                if check(cell, i, group, &taken).is_ok() {
                    let s = best_fit(cell, i, &group.request);
                    if best.is_none_or(|(bs, _)| s < bs) {
                        best = Some((s, i));
                    }
                }
            }
            match best {
                Some((_, i)) => {
                    cell.allocated[i] = cell.allocated[i].saturating_add(group.request);
                    taken[i] = true;
                    out.bindings.push(Binding { job: group.job.clone(), index, machine: i });
                }
                None => {
                    let mut why = WhyPending { machines: cell.len(), ..Default::default() };
                    for i in 0..cell.len() {
                        if let Err(e) = check(cell, i, group, &taken) {
                            why.add(&e);
                        }
                    }
                    out.unplaced.push(Unplaced { job: group.job.clone(), tasks: group.tasks[k..].to_vec(), why });
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::MachineId;
    use crate::constraint::{Attributes, Constraint, ConstraintOp};
    use crate::priority::Priority;
    use crate::resources::Resources;
    use proptest::prelude::*;

    fn cell(machines: &[(u64, u64, &str)]) -> CellModel {
        let mut c = CellModel::new();
        for (n, (cpu, ram, arch)) in machines.iter().enumerate() {
            let attrs: Attributes = [("arch".to_string(), arch.to_string())].into();
            c.push(MachineId(format!("m{n}")), Resources::new(*cpu, *ram, 1 << 40), Resources::ZERO, attrs, true);
        }
        c
    }

    fn group(job: &str, prio: i32, cpu: u64, ram: u64, n: u32) -> TaskGroup {
        TaskGroup {
            job: job.into(),
            priority: Priority(prio),
            request: Resources::new(cpu, ram, 0),
            constraints: vec![],
            different_machine: false,
            tasks: (0..n).collect(),
            occupied: vec![],
        }
    }

    #[test]
    fn best_fit_prefers_the_tightest_machine() {
        let mut c = cell(&[(4000, 8 << 30, "x86_64"), (1000, 2 << 30, "x86_64"), (2000, 4 << 30, "x86_64")]);
        let p = schedule(&mut c, &[group("a", 100, 1000, 1 << 30, 1)]);
        assert_eq!(p.bindings, vec![Binding { job: "a".into(), index: 0, machine: 1 }]);
        assert_eq!(c.allocated[1], Resources::new(1000, 1 << 30, 0));
    }

    #[test]
    fn unplaced_tasks_say_why_per_machine() {
        let mut c = cell(&[(1000, 1 << 30, "x86_64"), (1000, 1 << 30, "arm64")]);
        c.up.push(false);
        c.ids.push(MachineId("down".into()));
        c.capacity.push(Resources::new(8000, 8 << 30, 0));
        c.allocated.push(Resources::ZERO);
        c.attributes.push(Attributes::new());
        let mut g = group("a", 100, 600, 1 << 20, 3);
        g.constraints.push(Constraint {
            attribute: "arch".into(),
            op: ConstraintOp::Eq,
            values: vec!["x86_64".into()],
        });
        let p = schedule(&mut c, &[g]);
        assert_eq!(p.bindings.len(), 1);
        assert_eq!(p.unplaced.len(), 1);
        assert_eq!(p.unplaced[0].tasks, vec![1, 2]);
        assert_eq!(
            p.unplaced[0].why.to_string(),
            "0/3 machines fit: 1 constraint arch == x86_64 not met, 1 insufficient cpu, 1 machine down"
        );
    }

    #[test]
    fn different_machine_spreads_and_counts_occupied() {
        let mut c = cell(&[(8000, 8 << 30, "x"), (8000, 8 << 30, "x"), (8000, 8 << 30, "x")]);
        let mut g = group("a", 100, 100, 1 << 20, 3);
        g.different_machine = true;
        g.occupied = vec![0];
        let p = schedule(&mut c, &[g]);
        let ms: Vec<_> = p.bindings.iter().map(|b| b.machine).collect();
        assert_eq!(ms, vec![1, 2]);
        assert_eq!(p.unplaced[0].tasks, vec![2]);
    }

    #[test]
    fn higher_priority_groups_go_first() {
        let mut c = cell(&[(1000, 8 << 30, "x")]);
        let p = schedule(&mut c, &[group("low", 0, 1000, 1, 1), group("prod", 200, 1000, 1, 1)]);
        assert_eq!(p.bindings[0].job, "prod");
        assert_eq!(p.unplaced[0].job, "low");
    }

    proptest! {
        /// No machine is ever allocated beyond its capacity, constraints and different_machine hold.
        #[test]
        fn capacity_and_constraints_hold(
            machines in proptest::collection::vec((1u64..8000, 1u64..(16 << 30), prop_oneof!["x86_64", "arm64"]), 1..12),
            groups in proptest::collection::vec((0i32..400, 1u64..4000, 1u64..(8 << 30), 1u32..8, any::<bool>(), any::<bool>()), 1..8),
        ) {
            let ms: Vec<(u64, u64, &str)> = machines.iter().map(|(c, r, a)| (*c, *r, a.as_str())).collect();
            let mut c = cell(&ms);
            let gs: Vec<TaskGroup> = groups.iter().enumerate().map(|(n, (p, cpu, ram, count, dm, arm))| {
                let mut g = group(&format!("j{n}"), *p, *cpu, *ram, *count);
                g.different_machine = *dm;
                if *arm {
                    g.constraints.push(Constraint { attribute: "arch".into(), op: ConstraintOp::Eq, values: vec!["arm64".into()] });
                }
                g
            }).collect();
            let p = schedule(&mut c, &gs);
            let mut used = vec![Resources::ZERO; c.len()];
            for b in &p.bindings {
                let g = gs.iter().find(|g| g.job == b.job).unwrap();
                used[b.machine] = used[b.machine].saturating_add(g.request);
                prop_assert!(g.constraints.iter().all(|k| k.holds(&c.attributes[b.machine])));
                if g.different_machine {
                    let same = p.bindings.iter().filter(|x| x.job == b.job && x.machine == b.machine).count();
                    prop_assert_eq!(same, 1);
                }
            }
            for (i, u) in used.iter().enumerate() {
                prop_assert!(u.fits_in(&c.capacity[i]));
                prop_assert_eq!(*u, c.allocated[i]);
            }
            let placed = p.bindings.len() + p.unplaced.iter().map(|u| u.tasks.len()).sum::<usize>();
            prop_assert_eq!(placed, gs.iter().map(|g| g.tasks.len()).sum::<usize>());
        }
    }
}
