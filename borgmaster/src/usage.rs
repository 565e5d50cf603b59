//! Cell-wide accounting for capacity planners: capacity, allocation, usage, free and stranded
//! resources, by priority band. One computation serves `GetCellUsage`, `/metrics` and the
//! status page.

use crate::soft::SoftState;
use crate::state::{charge_in, reservation_within, CellState, JobsByName, MachineState, TaskState};
use scheduler_core::{Band, MachineId, Resources};

/// A free dimension counts as stranded when another dimension of the same machine has less than
/// this fraction of its capacity free.
pub const STRANDED_THRESHOLD: f64 = 0.05;

/// The part of `free` on a machine of `capacity` that no task can use: if the machine's free CPU
/// is under [`STRANDED_THRESHOLD`] of its CPU, its free RAM and disk are stranded; if its free RAM
/// is under the threshold, its free CPU and disk are. (Borg §5.1's stranded resources.)
pub fn stranded(capacity: Resources, free: Resources) -> Resources {
    let low = |f: u64, c: u64| c > 0 && (f as f64) < STRANDED_THRESHOLD * c as f64;
    let cpu_low = low(free.cpu_millis, capacity.cpu_millis);
    let ram_low = low(free.ram_bytes, capacity.ram_bytes);
    Resources::new(
        if ram_low { free.cpu_millis } else { 0 },
        if cpu_low { free.ram_bytes } else { 0 },
        if cpu_low || ram_low { free.disk_bytes } else { 0 },
    )
}

/// Accounting for one band.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandUsage {
    /// Requests of its tasks bound to machines ([`CellState::charge_of`]: allocs count, tasks
    /// inside allocs do not).
    pub allocated: Resources,
    /// Usage its Borglets reported.
    pub used: Resources,
    /// Reservations of the same tasks (Borg §5.5: what each is estimated to need; its request
    /// until estimated). `reserved + reclaimed = allocated`.
    pub reserved: Resources,
    /// What was reclaimed from them: `allocated - reserved`, the room batch and free tasks may
    /// run in beyond the requests.
    pub reclaimed: Resources,
    /// Tasks running.
    pub running: u32,
    /// Tasks pending.
    pub pending: u32,
    /// Tasks dead.
    pub dead: u32,
}

/// Accounting for the whole cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellUsage {
    /// Machines up / down.
    pub machines_up: u32,
    /// Machines down.
    pub machines_down: u32,
    /// Capacity of the machines that are up.
    pub capacity: Resources,
    /// Requests of bound tasks, all bands.
    pub allocated: Resources,
    /// Reported usage, all bands.
    pub used: Resources,
    /// Reservations of bound tasks, all bands.
    pub reserved: Resources,
    /// Reclaimed from bound tasks (allocated - reserved), all bands.
    pub reclaimed: Resources,
    /// Capacity minus allocation, summed per machine (never negative per machine).
    pub free: Resources,
    /// Stranded part of `free` (see [`stranded`]).
    pub stranded: Resources,
    /// By band, lowest first (free, batch, production, monitoring).
    pub bands: [BandUsage; 4],
}

fn band_index(b: Band) -> usize {
    Band::ALL.iter().position(|x| *x == b).unwrap_or(0)
}

/// Computes the cell's accounting from the replicated state and the leader's soft state:
/// [`allocation`] plus [`add_used`] over every machine that reported. The leader's own callers
/// (every `/metrics` scrape, the status page, `GetCellUsage`) go through
/// [`crate::master::Master::cell_usage`], which computes the same without holding the locks for
/// the whole sweep.
pub fn cell_usage(state: &CellState, soft: &SoftState) -> CellUsage {
    let mut u = allocation(state);
    add_used(&mut u, state, soft, soft.task_usage.keys());
    u
}

/// The cell's accounting but for `used` (zero in every band): in one sweep over the tasks
/// (charges are summed per machine on the way, so a machine's free room costs no second walk
/// over its tasks) and one over the machines: O(tasks + machines), with no lookup of a job by
/// name and none of the soft state. About 30 ms at 1,000,000 tasks (`cargo bench -p
/// borg-benches --bench state cell_usage`).
pub fn allocation(state: &CellState) -> CellUsage {
    let mut u = CellUsage::default();
    let mut on_machine: foldhash::HashMap<&MachineId, Resources> =
        foldhash::HashMap::with_capacity_and_hasher(state.machines.len(), Default::default());
    for job in state.jobs.values() {
        let b = &mut u.bands[band_index(job.spec.band())];
        for t in &job.tasks {
            match t.state {
                TaskState::Running => b.running += 1,
                TaskState::Pending => b.pending += 1,
                TaskState::Dead => {
                    b.dead += 1;
                    continue;
                }
            }
            let charge = charge_in(job, t);
            if let (Some(m), false) = (&t.machine, charge == Resources::ZERO) {
                let on = on_machine.entry(m).or_insert(Resources::ZERO);
                *on = on.saturating_add(charge);
            }
            b.allocated = b.allocated.saturating_add(charge);
            let reserved = reservation_within(t, charge);
            b.reserved = b.reserved.saturating_add(reserved);
            b.reclaimed = b.reclaimed.saturating_add(charge.saturating_sub(reserved));
        }
    }
    for m in state.machines.values() {
        if m.state != MachineState::Up {
            u.machines_down += 1;
            continue;
        }
        u.machines_up += 1;
        u.capacity = u.capacity.saturating_add(m.capacity);
        let allocated = on_machine.get(&m.id).copied().unwrap_or(Resources::ZERO);
        let free = m.capacity.saturating_sub(allocated);
        u.free = u.free.saturating_add(free);
        u.stranded = u.stranded.saturating_add(stranded(m.capacity, free));
    }
    for b in &u.bands {
        u.allocated = u.allocated.saturating_add(b.allocated);
        u.reserved = u.reserved.saturating_add(b.reserved);
        u.reclaimed = u.reclaimed.saturating_add(b.reclaimed);
    }
    u
}

/// Adds to `u` (its bands' `used` and the total) the usage the last polls of `machines`
/// reported for the runs the state still places there: a run counts when its task is not dead,
/// is bound to that machine and is in that incarnation (what
/// [`SoftState::usage_of_task`] finds for each task, looked up from the reports' side). Soft
/// figures: each machine's come from its own last poll, so summing the machines in slices,
/// with the locks released in between, loses nothing a single sweep would show.
pub fn add_used<'a>(
    u: &mut CellUsage,
    state: &CellState,
    soft: &SoftState,
    machines: impl IntoIterator<Item = &'a MachineId>,
) {
    let mut jobs = JobsByName::new(state);
    for m in machines {
        let Some(runs) = soft.task_usage.get(m) else { continue };
        for (run, (used, _)) in runs {
            let Some(job) = jobs.get(&run.task.job) else { continue };
            let current = job.tasks.get(run.task.index as usize).is_some_and(|t| {
                t.state != TaskState::Dead && t.incarnation == run.incarnation && t.machine.as_ref() == Some(m)
            });
            if current {
                let b = &mut u.bands[band_index(job.spec.band())];
                b.used = b.used.saturating_add(*used);
                u.used = u.used.saturating_add(*used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::*;
    use crate::state::{Command, Entry, Reservation, TaskId};
    use borg_jobspec::RunId;
    use proptest::prelude::*;

    /// The cell's accounting by definition, the slow way: each machine's free room from
    /// [`CellState::allocated_on`] (a walk over its tasks), each task's charge and reservation
    /// looked up through its job's name. [`cell_usage`] computes the same in one sweep.
    fn usage_by_definition(s: &CellState) -> CellUsage {
        let mut u = CellUsage::default();
        for m in s.machines.values() {
            if m.state != MachineState::Up {
                u.machines_down += 1;
                continue;
            }
            u.machines_up += 1;
            u.capacity = u.capacity.saturating_add(m.capacity);
            let free = m.capacity.saturating_sub(s.allocated_on(&m.id));
            u.free = u.free.saturating_add(free);
            u.stranded = u.stranded.saturating_add(stranded(m.capacity, free));
        }
        for job in s.jobs.values() {
            let b = &mut u.bands[Band::ALL.iter().position(|x| *x == job.spec.band()).unwrap()];
            for t in &job.tasks {
                match t.state {
                    TaskState::Running => b.running += 1,
                    TaskState::Pending => b.pending += 1,
                    TaskState::Dead => b.dead += 1,
                }
                b.allocated = b.allocated.saturating_add(s.charge_of(t));
                b.reserved = b.reserved.saturating_add(s.reservation_of(t));
                b.reclaimed = b.reclaimed.saturating_add(s.charge_of(t).saturating_sub(s.reservation_of(t)));
            }
        }
        for b in u.bands {
            u.allocated = u.allocated.saturating_add(b.allocated);
            u.reserved = u.reserved.saturating_add(b.reserved);
            u.reclaimed = u.reclaimed.saturating_add(b.reclaimed);
        }
        u
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// The one sweep is the accounting by definition, after every command of random
        /// sequences (machines registered, down, up and removed; jobs and alloc sets applied and
        /// killed; binds, task reports, restarts, maintenance, quotas).
        #[test]
        fn the_sweep_is_the_accounting_by_definition(ops in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()), 1..80)) {
            let mut s = CellState::new("p");
            for (i, (op, a, b, c)) in ops.into_iter().enumerate() {
                let command = crate::state::props::command(&s, op, a, b, c);
                let _ = s.apply(&Entry { time_ms: i as i64, command });
                prop_assert_eq!(cell_usage(&s, &SoftState::default()), usage_by_definition(&s));
            }
        }
    }

    #[test]
    fn reserved_and_reclaimed_add_up_to_allocated() {
        let mut s = CellState::new("dev");
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        run(&mut s, Command::ApplyJob { spec: spec("web", 3), expected_version: None }).unwrap();
        for i in 0..3 {
            bind(&mut s, "web", i, "m1");
        }
        let reservation =
            Reservation { job: "web".into(), index: 1, incarnation: 1, resources: Resources::new(30, 1 << 19, 0) };
        run(&mut s, Command::SetReservations { reservations: vec![reservation] }).unwrap();
        let u = cell_usage(&s, &SoftState::default());
        let p = &u.bands[band_index(Band::Batch)];
        assert_eq!(p.allocated, Resources::new(300, 3 << 20, 0));
        assert_eq!(p.reserved, Resources::new(230, (2 << 20) + (1 << 19), 0));
        assert_eq!(p.reserved.saturating_add(p.reclaimed), p.allocated);
        assert_eq!(u.reserved.saturating_add(u.reclaimed), u.allocated);
        assert_eq!(u.reclaimed, Resources::new(70, 1 << 19, 0));
    }

    /// `used` counts exactly the runs the state still places where they were reported: what
    /// [`SoftState::usage_of_task`] finds for each task. Stale incarnations, runs reported by a
    /// machine the task is no longer bound to, dead tasks and unknown jobs count nothing; and the
    /// sum in slices of machines (as [`crate::master::Master::cell_usage`] takes it) is the sum
    /// at once.
    #[test]
    fn used_counts_the_current_runs_where_they_run_in_any_slices() {
        let mut s = CellState::new("dev");
        for m in ["m1", "m2", "m3"] {
            run(&mut s, Command::RegisterMachine { machine: machine(m) }).unwrap();
        }
        run(&mut s, Command::ApplyJob { spec: spec("web", 4), expected_version: None }).unwrap();
        for (i, m) in [(0, "m1"), (1, "m1"), (2, "m2"), (3, "m3")] {
            bind(&mut s, "web", i, m);
            report(&mut s, m, "web", i, TaskState::Running, None);
        }
        report(&mut s, "m3", "web", 3, TaskState::Dead, Some(1));
        let inc = |s: &CellState, i: u32| s.task(&TaskId::new("web", i)).unwrap().incarnation;
        let r = |cpu: u64| (Resources::new(cpu, cpu << 20, 0), 0.0);
        let mut soft = SoftState::default();
        soft.task_usage.insert(
            MachineId("m1".into()),
            [
                (RunId::new("web", 0, inc(&s, 0)), r(10)),
                (RunId::new("web", 1, inc(&s, 1) + 1), r(1_000)), // not this incarnation
                (RunId::new("web", 2, inc(&s, 2)), r(1_000)),     // bound to m2, not m1
                (RunId::new("gone", 0, 1), r(1_000)),             // no such job
            ]
            .into(),
        );
        soft.task_usage.insert(MachineId("m2".into()), [(RunId::new("web", 2, inc(&s, 2)), r(20))].into());
        soft.task_usage.insert(MachineId("m3".into()), [(RunId::new("web", 3, inc(&s, 3)), r(1_000))].into()); // dead
        soft.task_usage.insert(MachineId("m9".into()), [(RunId::new("web", 0, inc(&s, 0)), r(1_000))].into());
        let by_definition = s
            .jobs
            .values()
            .flat_map(|j| &j.tasks)
            .filter(|t| t.state != TaskState::Dead)
            .filter_map(|t| soft.usage_of_task(t))
            .fold(Resources::ZERO, Resources::saturating_add);
        assert_eq!(by_definition, Resources::new(30, 30 << 20, 0));
        let u = cell_usage(&s, &soft);
        assert_eq!(u.used, by_definition);
        assert_eq!(u.bands[band_index(Band::Batch)].used, by_definition);
        let mut sliced = allocation(&s);
        assert_eq!(sliced.used, Resources::ZERO);
        let machines: Vec<&MachineId> = soft.task_usage.keys().collect();
        for part in machines.chunks(1) {
            add_used(&mut sliced, &s, &soft, part.iter().copied());
        }
        assert_eq!(sliced, u);
    }

    #[test]
    fn stranded_is_the_free_side_of_an_exhausted_machine() {
        let cap = Resources::new(1000, 1000, 1000);
        assert_eq!(
            stranded(cap, Resources::new(500, 10, 300)),
            Resources::new(500, 0, 300),
            "RAM full strands CPU and disk"
        );
        assert_eq!(
            stranded(cap, Resources::new(0, 600, 300)),
            Resources::new(0, 600, 300),
            "CPU full strands RAM and disk"
        );
        assert_eq!(stranded(cap, Resources::new(400, 400, 400)), Resources::ZERO);
    }
}
