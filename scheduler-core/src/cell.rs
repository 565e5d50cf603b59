//! The cell as the scheduler sees it: machines in arrays (struct of arrays), indexed by position,
//! with the resources available to each priority band and the tasks resident on each machine.

use crate::constraint::Attributes;
use crate::priority::{Band, Priority};
use crate::resources::Resources;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// A machine's name in the cell (the Borglet's `--machine-id`, by default its hostname).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MachineId(pub String);

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Index of a machine inside one [`CellModel`] (0..len). Only meaningful for that model.
pub type MachineIndex = usize;

/// A task, by the caller's job number and task index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskRef {
    /// The caller's number for the job ([`crate::TaskGroup::job_id`]).
    pub job: u32,
    /// Task index within the job.
    pub index: u32,
}

/// A task placed on a machine, as preemption planning needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resident {
    /// Which task.
    pub task: TaskRef,
    /// Its priority (its band decides who may preempt it).
    pub priority: Priority,
    /// Its request (its limit).
    pub request: Resources,
    /// Its reservation: what it is estimated to need (Borg §5.5), at most its request. Batch
    /// and free tasks are placed against capacity minus reservations (they may run in
    /// reclaimed resources); production and monitoring tasks against capacity minus requests.
    /// Equal to `request` when nothing is reclaimed ([`Resident::new`]).
    pub reservation: Resources,
}

impl Resident {
    /// A resident whose reservation is its whole request (nothing reclaimed from it).
    pub fn new(task: TaskRef, priority: Priority, request: Resources) -> Resident {
        Resident { task, priority, request, reservation: request }
    }

    /// With reservation `reservation` (capped at the request).
    pub fn reserving(mut self, reservation: Resources) -> Resident {
        self.reservation = reservation.min_each(&self.request);
        self
    }

    /// What this task holds in the eyes of a task of priority `placer`: its request for a
    /// production or monitoring placer, its reservation for a batch or free one.
    pub fn held_for(&self, placer: Priority) -> Resources {
        if places_against_requests(placer) {
            self.request
        } else {
            self.reservation
        }
    }
}

/// Whether a task of priority `p` is placed against requests (production and monitoring: they
/// never depend on reclaimed resources) rather than reservations (batch and free).
pub fn places_against_requests(p: Priority) -> bool {
    matches!(p.band(), Some(Band::Production | Band::Monitoring))
}

/// Number of bands.
pub const BANDS: usize = 4;

fn band_index(p: Priority) -> usize {
    match p.band().unwrap_or(Band::Free) {
        Band::Free => 0,
        Band::Batch => 1,
        Band::Production => 2,
        Band::Monitoring => 3,
    }
}

/// The machines of a cell. Every per-machine vector has one entry per machine.
///
/// `avail[m][b]` is capacity minus the requests of band `b` and higher: what a production or
/// monitoring task could use on `m` if every task of a band below `b` there were preempted.
/// `avail_reserved[m][b]` is the same with reservations instead of requests: what a batch or
/// free task could use, counting reclaimed resources (Borg §5.5). `[m][0]` is what is free
/// outright. Keeping it per band makes feasibility "counting what preemption would free" one
/// comparison per resource.
#[derive(Debug, Clone, Default)]
pub struct CellModel {
    /// Machine ids.
    pub ids: Vec<MachineId>,
    /// Capacity of each machine.
    pub capacity: Vec<Resources>,
    /// Attributes of each machine.
    pub attributes: Vec<Attributes>,
    /// Failure domain (rack) of each machine, an index into [`CellModel::domain_names`].
    pub domain: Vec<u32>,
    /// Names of the failure domains, by index.
    pub domain_names: Vec<String>,
    /// Whether each machine is up (a down machine takes no new task).
    pub up: Vec<bool>,
    alloc: Vec<[Resources; BANDS]>,
    reserved: Vec<[Resources; BANDS]>,
    avail: Vec<[Resources; BANDS]>,
    avail_reserved: Vec<[Resources; BANDS]>,
    resident: Vec<Vec<Resident>>,
    version: Vec<u64>,
    domain_index: HashMap<String, u32>,
    freed: Vec<u32>,
    /// Per machine: 1 + the position of its latest entry in `freed` (0: none).
    freed_at: Vec<u32>,
    /// Every reader of `freed` has read no further than this (see [`CellModel::freed_read`]).
    read_mark: Option<usize>,
    fit: FitIndex,
    largest: Resources,
}

/// Buckets of the fit index: free fractions from 0 to 1 in steps of 1/1024.
pub(crate) const FIT_BUCKETS: usize = 1025;

/// The machines by how much of them is free outright: bucket `b` holds the machines whose mean
/// free fraction of CPU, RAM and disk (`free / capacity` per resource, 0 for a resource the
/// machine has none of) is in `[b / 1024, (b + 1) / 1024)`. On a cell of one machine shape this
/// is the order of best fit (the waste term of the score is this fraction minus one that is the
/// same on every machine), so walking the buckets upwards from the first that could fit a request
/// finds the tightest feasible machines without scoring the cell ([`crate::Scheduler`]'s fit
/// walk). Kept up to date by every change to a machine, O(1) each (a machine moves only when its
/// bucket changes: swap-remove from the old, push on the new).
#[derive(Debug, Clone, Default)]
struct FitIndex {
    buckets: Vec<Vec<u32>>,
    /// Per machine: its bucket and its position in it.
    place: Vec<(u16, u32)>,
}

impl FitIndex {
    fn insert(&mut self, m: usize, bucket: usize) {
        if self.buckets.is_empty() {
            self.buckets = vec![Vec::new(); FIT_BUCKETS];
        }
        let list = &mut self.buckets[bucket];
        let entry = (bucket as u16, list.len() as u32);
        list.push(m as u32);
        if m == self.place.len() {
            self.place.push(entry);
        } else {
            self.place[m] = entry;
        }
    }

    fn update(&mut self, m: usize, bucket: usize) {
        let (old, pos) = self.place[m];
        if old as usize == bucket {
            return;
        }
        let list = &mut self.buckets[old as usize];
        list.swap_remove(pos as usize);
        if let Some(&moved) = list.get(pos as usize) {
            self.place[moved as usize].1 = pos;
        }
        self.insert(m, bucket);
    }
}

/// The fit-index bucket of a mean free fraction in 0..=1.
pub(crate) fn fit_bucket_of(fraction: f64) -> usize {
    ((fraction * (FIT_BUCKETS - 1) as f64) as usize).min(FIT_BUCKETS - 1)
}

impl CellModel {
    /// An empty cell.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an empty machine in failure domain `domain` (e.g. its rack; use the machine id
    /// when there is none) and returns its index.
    pub fn push(
        &mut self,
        id: MachineId,
        capacity: Resources,
        attributes: Attributes,
        domain: &str,
        up: bool,
    ) -> MachineIndex {
        let next = self.domain_names.len() as u32;
        let d = *self.domain_index.entry(domain.to_string()).or_insert(next);
        if d == next {
            self.domain_names.push(domain.to_string());
        }
        self.ids.push(id);
        self.capacity.push(capacity);
        self.attributes.push(attributes);
        self.domain.push(d);
        self.up.push(up);
        self.alloc.push([Resources::ZERO; BANDS]);
        self.reserved.push([Resources::ZERO; BANDS]);
        self.avail.push([capacity; BANDS]);
        self.avail_reserved.push([capacity; BANDS]);
        self.resident.push(Vec::new());
        self.version.push(0);
        self.freed_at.push(0);
        let m = self.ids.len() - 1;
        self.note_freed(m);
        self.fit.insert(m, self.fit_key(m));
        self.largest = self.largest.max_each(&capacity);
        m
    }

    /// The largest capacity of each resource over the cell's machines (each resource on its
    /// own: CPU of one machine, RAM perhaps of another). Never shrinks.
    pub fn largest(&self) -> Resources {
        self.largest
    }

    /// The mean free fraction of machine `m`'s CPU, RAM and disk (what is free outright over
    /// its capacity; a resource it has none of counts 0), in 0..=1.
    pub fn free_fraction(&self, m: MachineIndex) -> f64 {
        self.avail[m][0].mean_fraction(&self.capacity[m])
    }

    fn fit_key(&self, m: MachineIndex) -> usize {
        fit_bucket_of(self.free_fraction(m))
    }

    /// The machines of fit-index bucket `b` (see `FitIndex`), in no particular order; empty past
    /// the last bucket.
    pub(crate) fn fit_bucket(&self, b: usize) -> &[u32] {
        self.fit.buckets.get(b).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Machines that gained room (a task removed, capacity raised, back up, newly added), in
    /// order, each once between two [`CellModel::freed_read`] marks once a reader sets them;
    /// entries from `since` on. With [`CellModel::freed_len`] this lets a scheduler that
    /// found no room for a class re-examine only machines that changed since.
    pub fn freed_since(&self, since: usize) -> &[u32] {
        &self.freed[since.min(self.freed.len())..]
    }

    /// Length of the freed-machines log (see [`CellModel::freed_since`]).
    pub fn freed_len(&self) -> usize {
        self.freed.len()
    }

    /// Tells the cell that every reader of the freed log has read it up to
    /// [`CellModel::freed_len`] at most: from then on a machine that already has an entry at
    /// or after that point is not logged again (every reader will see that entry), so between
    /// reads the log grows by machines, not by events. A reader that calls it once must call it
    /// after every read ([`crate::Scheduler`] does, after each class); until the first call
    /// every event is logged.
    pub fn freed_read(&mut self) {
        self.read_mark = Some(self.freed.len());
    }

    fn note_freed(&mut self, m: MachineIndex) {
        if self.read_mark.is_some_and(|mark| self.freed_at[m] as usize > mark) {
            return; // an entry no reader has passed yet
        }
        self.freed.push(m as u32);
        self.freed_at[m] = self.freed.len() as u32;
    }

    /// Number of machines.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the cell has no machine.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Capacity minus every request on machine `m`.
    pub fn free(&self, m: MachineIndex) -> Resources {
        self.avail[m][0]
    }

    /// What a task of priority `p` could use on `m` without preempting anything: capacity minus
    /// requests for production and monitoring, minus reservations for batch and free.
    pub fn free_for(&self, m: MachineIndex, p: Priority) -> Resources {
        self.available_at(m, p, 0)
    }

    /// What a task of priority `p` could use on `m` after preempting every lower-band task there.
    pub fn available_to(&self, m: MachineIndex, p: Priority) -> Resources {
        self.available_at(m, p, band_index(p))
    }

    /// What a task of priority `p` could use on `m` after preempting every task of a band below
    /// `band` (0 = free .. 3 = monitoring) there.
    pub fn available_at(&self, m: MachineIndex, p: Priority, band: usize) -> Resources {
        if places_against_requests(p) {
            self.avail[m][band]
        } else {
            self.avail_reserved[m][band]
        }
    }

    /// Capacity minus every reservation on `m`: what batch and free tasks may still use.
    pub fn free_reserved(&self, m: MachineIndex) -> Resources {
        self.avail_reserved[m][0]
    }

    /// Whether some task on `m` reserves less than it requests (resources are reclaimed there).
    pub fn reclaims(&self, m: MachineIndex) -> bool {
        self.reserved[m] != self.alloc[m]
    }

    /// Reservations held on `m` by each band, lowest band first.
    pub fn reserved_by_band(&self, m: MachineIndex) -> [Resources; BANDS] {
        self.reserved[m]
    }

    /// Sum of the requests of every task on `m`.
    pub fn allocated(&self, m: MachineIndex) -> Resources {
        self.capacity[m].saturating_sub(self.avail[m][0])
    }

    /// Requests held on `m` by each band, lowest band first.
    pub fn allocated_by_band(&self, m: MachineIndex) -> [Resources; BANDS] {
        self.alloc[m]
    }

    /// Tasks on `m`, in the order they were added.
    pub fn residents(&self, m: MachineIndex) -> &[Resident] {
        &self.resident[m]
    }

    /// Changes whenever `m`'s allocation changes (for score caching).
    pub fn version(&self, m: MachineIndex) -> u64 {
        self.version[m]
    }

    fn recompute(&mut self, m: MachineIndex) {
        let (mut acc, mut acc_reserved) = (self.capacity[m], self.capacity[m]);
        for b in (0..BANDS).rev() {
            acc = acc.saturating_sub(self.alloc[m][b]);
            acc_reserved = acc_reserved.saturating_sub(self.reserved[m][b]);
            self.avail[m][b] = acc;
            self.avail_reserved[m][b] = acc_reserved;
        }
        self.version[m] += 1;
        let key = self.fit_key(m);
        self.fit.update(m, key);
    }

    /// Records `task` as running on `m`. Capacity is not checked here: feasibility is the
    /// scheduler's job, and a caller loading observed state may hold an overcommitted machine.
    pub fn add(&mut self, m: MachineIndex, task: Resident) {
        let b = band_index(task.priority);
        self.alloc[m][b] = self.alloc[m][b].saturating_add(task.request);
        self.reserved[m][b] = self.reserved[m][b].saturating_add(task.reservation);
        self.resident[m].push(task);
        self.recompute(m);
    }

    /// Removes `task` from `m`; returns it, or `None` if it was not there.
    pub fn remove(&mut self, m: MachineIndex, task: TaskRef) -> Option<Resident> {
        let pos = self.resident[m].iter().position(|r| r.task == task)?;
        let r = self.resident[m].swap_remove(pos);
        let b = band_index(r.priority);
        self.alloc[m][b] = self.alloc[m][b].saturating_sub(r.request);
        self.reserved[m][b] = self.reserved[m][b].saturating_sub(r.reservation);
        self.recompute(m);
        self.note_freed(m);
        Some(r)
    }

    /// Sets the reservation of `task` on `m` (capped at its request), as a task's estimate
    /// moves; returns false when it is not there. A lower reservation is room gained for batch
    /// and free tasks ([`CellModel::freed_since`]).
    pub fn set_reservation(&mut self, m: MachineIndex, task: TaskRef, reservation: Resources) -> bool {
        let Some(r) = self.resident[m].iter_mut().find(|r| r.task == task) else { return false };
        let new = reservation.min_each(&r.request);
        if new == r.reservation {
            return true;
        }
        let (old, b) = (r.reservation, band_index(r.priority));
        r.reservation = new;
        self.reserved[m][b] = self.reserved[m][b].saturating_sub(old).saturating_add(new);
        self.recompute(m);
        if !old.fits_in(&new) {
            self.note_freed(m);
        }
        true
    }

    /// Changes machine `m`'s capacity (a machine update); its tasks stay, even if they no longer
    /// fit (the caller decides whether to evict them).
    pub fn set_capacity(&mut self, m: MachineIndex, capacity: Resources) {
        self.capacity[m] = capacity;
        self.largest = self.largest.max_each(&capacity);
        self.recompute(m);
        self.note_freed(m);
    }

    /// Marks machine `m` up or down and returns the tasks it held when going down (they are
    /// removed: a down machine runs nothing).
    pub fn set_up(&mut self, m: MachineIndex, up: bool) -> Vec<Resident> {
        self.up[m] = up;
        if up {
            self.version[m] += 1;
            self.note_freed(m);
            return Vec::new();
        }
        let gone = std::mem::take(&mut self.resident[m]);
        self.alloc[m] = [Resources::ZERO; BANDS];
        self.reserved[m] = [Resources::ZERO; BANDS];
        self.recompute(m);
        gone
    }

    /// Index of the machine with this id (linear search; for tests and small cells).
    pub fn index_of(&self, id: &MachineId) -> Option<MachineIndex> {
        self.ids.iter().position(|m| m == id)
    }

    /// Band index (0 = free .. 3 = monitoring) of a priority.
    pub fn band_of(p: Priority) -> usize {
        band_index(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After any sequence of adds, removes, capacity changes and machines going down, every
    /// machine is in exactly the fit-index bucket of its free fraction.
    #[test]
    fn the_fit_index_follows_every_change() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        let mut c = CellModel::new();
        for i in 0..50 {
            let cap = Resources::new(1000 * (1 + i % 4), (1 << 30) * (1 + i % 3), if i % 5 == 0 { 0 } else { 1 << 34 });
            c.push(MachineId(format!("m{i}")), cap, Attributes::new(), "r", true);
        }
        let mut placed: Vec<(usize, TaskRef)> = Vec::new();
        for step in 0..2000u32 {
            let m = rng.random_range(0..50usize);
            match rng.random_range(0..10) {
                0..=5 => {
                    let task = TaskRef { job: step, index: 0 };
                    let prio = Priority(rng.random_range(0..400));
                    c.add(
                        m,
                        Resident::new(
                            task,
                            prio,
                            Resources::new(rng.random_range(0..300), rng.random_range(0..1 << 28), 0),
                        ),
                    );
                    placed.push((m, task));
                }
                6..=8 if !placed.is_empty() => {
                    let (m, task) = placed.swap_remove(rng.random_range(0..placed.len()));
                    c.remove(m, task);
                }
                9 => c.set_capacity(m, Resources::new(rng.random_range(500..5000), 1 << 30, 1 << 34)),
                _ => {
                    c.set_up(m, false);
                    placed.retain(|p| p.0 != m);
                    c.set_up(m, true);
                }
            }
            let mut seen = 0;
            for b in 0..FIT_BUCKETS {
                for &m in c.fit_bucket(b) {
                    assert_eq!(b, fit_bucket_of(c.free_fraction(m as usize)), "step {step}: machine {m}");
                    seen += 1;
                }
            }
            assert_eq!(seen, 50, "step {step}: every machine once");
        }
    }

    /// Between reads the freed log holds each machine once, however often it was freed; before
    /// the first read mark, every event.
    #[test]
    fn the_freed_log_grows_by_machines_between_reads() {
        let mut c = CellModel::new();
        let m = c.push(MachineId("m".into()), Resources::new(1000, 1000, 0), Attributes::new(), "r", true);
        let task = |i| Resident::new(TaskRef { job: 1, index: i }, Priority(100), Resources::new(10, 10, 0));
        for i in 0..4 {
            c.add(m, task(i));
        }
        c.remove(m, TaskRef { job: 1, index: 0 });
        c.remove(m, TaskRef { job: 1, index: 1 });
        assert_eq!(c.freed_since(0), [m as u32; 3], "added, then freed twice: no reader yet");
        c.freed_read();
        let read = c.freed_len();
        c.remove(m, TaskRef { job: 1, index: 2 });
        c.remove(m, TaskRef { job: 1, index: 3 });
        assert_eq!(c.freed_since(read), [m as u32], "once after the read");
        c.freed_read();
        c.set_capacity(m, Resources::new(2000, 1000, 0));
        assert_eq!(c.freed_since(read), [m as u32, m as u32], "and again after the next read");
    }

    #[test]
    fn availability_per_band_counts_only_equal_or_higher_bands() {
        let mut c = CellModel::new();
        let m = c.push(MachineId("m".into()), Resources::new(1000, 1000, 0), Attributes::new(), "r1", true);
        let t = |job, p, cpu| Resident::new(TaskRef { job, index: 0 }, Priority(p), Resources::new(cpu, 0, 0));
        c.add(m, t(1, 0, 100)); // free
        c.add(m, t(2, 150, 200)); // batch
        c.add(m, t(3, 250, 300)); // production
        assert_eq!(c.free(m).cpu_millis, 400);
        assert_eq!(c.available_to(m, Priority(50)).cpu_millis, 400);
        assert_eq!(c.available_to(m, Priority(100)).cpu_millis, 500, "batch may preempt free");
        assert_eq!(
            c.available_to(m, Priority(200)).cpu_millis,
            700,
            "production preempts batch and free, not production"
        );
        assert_eq!(c.available_to(m, Priority(300)).cpu_millis, 1000);
        let v = c.version(m);
        assert!(c.remove(m, TaskRef { job: 2, index: 0 }).is_some());
        assert!(c.version(m) > v);
        assert_eq!(c.free(m).cpu_millis, 600);
        assert_eq!(c.allocated(m).cpu_millis, 400);
        assert!(c.remove(m, TaskRef { job: 9, index: 0 }).is_none());
    }

    #[test]
    fn batch_counts_reservations_production_counts_requests() {
        let mut c = CellModel::new();
        let m = c.push(MachineId("m".into()), Resources::new(2000, 1000, 0), Attributes::new(), "r1", true);
        // a production task asks for 1.5 cores and is estimated to need 0.1
        let prod = Resident::new(TaskRef { job: 1, index: 0 }, Priority(200), Resources::new(1500, 100, 0))
            .reserving(Resources::new(100, 50, 0));
        c.add(m, prod);
        assert_eq!(c.free_for(m, Priority(100)).cpu_millis, 1900, "batch sees the reclaimed 1.4 cores");
        assert_eq!(c.free_for(m, Priority(200)).cpu_millis, 500, "production never counts them");
        assert_eq!(c.available_to(m, Priority(250)).cpu_millis, 500);
        // batch in reclaimed resources: production still sees what the requests leave, and may
        // preempt the batch task for it
        let batch = Resident::new(TaskRef { job: 2, index: 0 }, Priority(100), Resources::new(1000, 100, 0));
        c.add(m, batch);
        assert_eq!(c.free(m).cpu_millis, 0, "requests overcommit the machine");
        assert_eq!(c.free_for(m, Priority(100)).cpu_millis, 900);
        assert_eq!(c.available_to(m, Priority(200)).cpu_millis, 500, "production may preempt batch");
        assert_eq!(c.reserved_by_band(m)[2].cpu_millis, 100);
        // a reservation is never above the request
        assert_eq!(prod.reserving(Resources::new(9000, 9000, 9)).reservation, prod.request);
        // the estimate moves: batch sees the change, production does not
        let freed = c.freed_len();
        assert!(c.set_reservation(m, TaskRef { job: 1, index: 0 }, Resources::new(600, 50, 0)));
        assert_eq!(c.free_for(m, Priority(100)).cpu_millis, 400);
        assert_eq!(c.free_for(m, Priority(200)).cpu_millis, 0);
        assert_eq!(c.freed_len(), freed, "a rise frees nothing");
        assert!(c.set_reservation(m, TaskRef { job: 1, index: 0 }, Resources::new(100, 50, 0)));
        assert_eq!(c.freed_since(freed), [m as u32], "a fall frees room");
        assert!(!c.set_reservation(m, TaskRef { job: 9, index: 0 }, Resources::ZERO));
        c.remove(m, TaskRef { job: 1, index: 0 });
        assert_eq!(c.free_reserved(m).cpu_millis, 1000);
    }
}
