//! Loader for Google's ClusterData2011-2 trace (`machine_events`, `task_events`; gzip CSV, no
//! header; schema in the trace's PROVENANCE.md).
//!
//! Mapping to a [`Workload`]:
//! - Machines: those ADDed at timestamp 0 form the time-0 cell; later ADD / REMOVE / UPDATE rows
//!   become events. The trace gives no disk capacity: every machine gets `disk_scale` bytes.
//! - Tasks: a SCHEDULE row at timestamp 0 is a task running at time 0 (with the machine Borg put
//!   it on); a SUBMIT at 0 without a SCHEDULE at 0 is pending at time 0 (a Submit event at 0);
//!   later SUBMIT rows are Submit events; EVICT, FAIL, FINISH, KILL and LOST rows are End events.
//!   SCHEDULE rows after 0 and UPDATE rows are ignored: the simulator schedules by itself.
//!   Requests are the row's, or the last ones seen for the task when the row has none; the
//!   task's user is the row's (hashed) user id.
//! - Units: normalized CPU and memory (largest machine = 1.0) are multiplied by [`Units`].
//! - Priorities 0-11: 0-1 free (0-1), 2-8 batch (102-108), 9-11 production (209-211).
//! - Times: seconds = timestamp / 10^6 (the trace window opens at 600 s).

use crate::workload::{Event, EventKind, LoadError, Machine, Names, Task, Workload};
use scheduler_core::{Attributes, Priority, Resources};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How normalized trace units map to concrete ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Units {
    /// Millicores per 1.0 of normalized CPU.
    pub cpu_millis: f64,
    /// Bytes per 1.0 of normalized memory.
    pub ram_bytes: f64,
    /// Bytes per 1.0 of normalized disk; also every machine's disk capacity.
    pub disk_bytes: f64,
}

impl Default for Units {
    /// 1.0 CPU = 64,000 millicores (64 cores); 1.0 RAM = 256 GiB; 1.0 disk = 4 TiB.
    fn default() -> Self {
        Units { cpu_millis: 64_000.0, ram_bytes: 256.0 * (1u64 << 30) as f64, disk_bytes: 4.0 * (1u64 << 40) as f64 }
    }
}

impl Units {
    /// `1.0 CPU = 64000 millicores, 1.0 RAM = 256.0 GiB, 1.0 disk = 4096.0 GiB`.
    pub fn describe(&self) -> String {
        let gib = (1u64 << 30) as f64;
        format!(
            "1.0 CPU = {} millicores, 1.0 RAM = {:.1} GiB, 1.0 disk = {:.1} GiB (machine disk capacity)",
            self.cpu_millis,
            self.ram_bytes / gib,
            self.disk_bytes / gib
        )
    }

    fn resources(&self, cpu: f64, ram: f64, disk: f64) -> Resources {
        let conv = |x: f64, s: f64| if x > 0.0 { ((x * s).round() as u64).max(1) } else { 0 };
        Resources::new(conv(cpu, self.cpu_millis), conv(ram, self.ram_bytes), conv(disk, self.disk_bytes))
    }
}

/// A trace that cannot be read: which file, which line, what.
/// Every `*.csv.gz` (or `*.csv`) file under `dir`, sorted.
fn parts(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let rd = std::fs::read_dir(dir).map_err(|source| LoadError::Io { path: dir.into(), source })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".csv.gz") || p.extension().is_some_and(|x| x == "csv"))
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(LoadError::Io { path: dir.into(), source: std::io::Error::other("no .csv.gz or .csv files") });
    }
    Ok(v)
}

/// Reads every row of every part under `dir` as string fields, with the file and line.
fn for_each_row(
    dir: &Path,
    mut f: impl FnMut(&Path, u64, &csv::StringRecord) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    for path in parts(dir)? {
        let file = std::fs::File::open(&path).map_err(|source| LoadError::Io { path: path.clone(), source })?;
        let reader: Box<dyn Read> = if path.to_string_lossy().ends_with(".gz") {
            Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)))
        } else {
            Box::new(std::io::BufReader::new(file))
        };
        let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(reader);
        let mut rec = csv::StringRecord::new();
        let mut line = 0u64;
        loop {
            match rdr.read_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {
                    line += 1;
                    f(&path, line, &rec)?;
                }
                Err(e) => {
                    return Err(LoadError::Row { path, line: line + 1, field: "row", message: e.to_string() });
                }
            }
        }
    }
    Ok(())
}

fn num<T: std::str::FromStr>(
    path: &Path,
    line: u64,
    rec: &csv::StringRecord,
    i: usize,
    field: &'static str,
) -> Result<Option<T>, LoadError> {
    match rec.get(i).map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| LoadError::Row {
            path: path.into(),
            line,
            field,
            message: format!("{s:?} is not a number"),
        }),
    }
}

/// Trace priority (0-11) -> our priority (see the module docs).
pub fn map_priority(p: i32) -> Priority {
    Priority(match p {
        i32::MIN..=1 => p.max(0),
        2..=8 => 100 + p,
        _ => 200 + p.min(99),
    })
}

/// What was skipped while loading, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LoadNotes {
    /// Machine rows without a capacity.
    pub machines_without_capacity: u64,
    /// Submit rows of tasks whose requests were never given.
    pub tasks_without_requests: u64,
}

/// Loads the trace under `dir` (with `machine_events/` and `task_events/` subdirectories).
///
/// Errors: a missing directory or file, a gzip or CSV error, or a field that is not a number
/// where one is required (file, line and column named).
pub fn load(dir: &Path, units: &Units) -> Result<(Workload, LoadNotes), LoadError> {
    let mut notes = LoadNotes::default();
    let mut w = Workload { units: units.describe(), ..Default::default() };
    let mut time0: Vec<Machine> = Vec::new();
    for_each_row(&dir.join("machine_events"), |path, line, rec| {
        let ts: u64 = num(path, line, rec, 0, "timestamp")?.unwrap_or(0);
        let id: u64 = num(path, line, rec, 1, "machine ID")?.ok_or_else(|| LoadError::Row {
            path: path.into(),
            line,
            field: "machine ID",
            message: "missing".into(),
        })?;
        let kind: u8 = num(path, line, rec, 2, "event type")?.unwrap_or(0);
        let cpu: Option<f64> = num(path, line, rec, 4, "CPUs")?;
        let mem: Option<f64> = num(path, line, rec, 5, "memory")?;
        let time_s = ts as f64 / 1e6;
        let id = id.to_string();
        let capacity = match (cpu, mem) {
            (Some(c), Some(m)) => Some(units.resources(c, m, 1.0)),
            _ => None,
        };
        match (kind, capacity) {
            (0, Some(capacity)) => {
                let mut attributes = Attributes::new();
                if let Some(p) = rec.get(3).filter(|p| !p.is_empty()) {
                    attributes.insert("platform".into(), p.to_string());
                }
                let m = Machine { id: id.clone(), capacity, attributes, domain: id };
                if ts == 0 {
                    time0.push(m);
                } else {
                    w.events.push(Event { time_s, kind: EventKind::MachineAdd(m) });
                }
            }
            (1, _) => w.events.push(Event { time_s, kind: EventKind::MachineRemove(id) }),
            (2, Some(c)) => w.events.push(Event { time_s, kind: EventKind::MachineUpdate(id, c) }),
            _ => notes.machines_without_capacity += 1,
        }
        Ok(())
    })?;
    w.machines = time0;

    let mut jobs = Names::default();
    let mut users = Names::default();
    let mut last_request: HashMap<(u32, u32), (Resources, bool)> = HashMap::new();
    let mut running0: HashSet<(u32, u32)> = HashSet::new();
    let mut submitted0: Vec<((u32, u32), Option<Task>)> = Vec::new();
    for_each_row(&dir.join("task_events"), |path, line, rec| {
        let ts: u64 = num(path, line, rec, 0, "timestamp")?.unwrap_or(0);
        let job_raw = rec.get(2).unwrap_or("").trim();
        let index: u32 = num(path, line, rec, 3, "task index")?.unwrap_or(0);
        let kind: u8 = num(path, line, rec, 5, "event type")?.unwrap_or(255);
        let prio: i32 = num(path, line, rec, 8, "priority")?.unwrap_or(0);
        let cpu: Option<f64> = num(path, line, rec, 9, "CPU request")?;
        let mem: Option<f64> = num(path, line, rec, 10, "memory request")?;
        let disk: Option<f64> = num(path, line, rec, 11, "disk request")?;
        let dm: u8 = num(path, line, rec, 12, "different-machine restriction")?.unwrap_or(0);
        let job = jobs.id(job_raw);
        let user = users.id(rec.get(6).unwrap_or("").trim());
        let key = (job, index);
        if let (Some(c), Some(m)) = (cpu, mem) {
            last_request.insert(key, (units.resources(c, m, disk.unwrap_or(0.0)), dm == 1));
        }
        let known = last_request.get(&key).copied();
        let task = |machine: Option<String>| {
            known.map(|(request, different_machine)| Task {
                job,
                index,
                priority: map_priority(prio),
                request,
                different_machine,
                machine,
                user,
                usage: None,
            })
        };
        let time_s = ts as f64 / 1e6;
        match kind {
            1 if ts == 0 => {
                let machine = rec.get(4).filter(|m| !m.is_empty()).map(str::to_string);
                if let Some(t) = task(machine) {
                    running0.insert(key);
                    w.tasks.push(t);
                }
            }
            0 if ts == 0 => submitted0.push((key, task(None))),
            0 => match task(None) {
                Some(t) => w.events.push(Event { time_s, kind: EventKind::Submit(t) }),
                None => notes.tasks_without_requests += 1,
            },
            2..=6 if ts > 0 => w.events.push(Event { time_s, kind: EventKind::End { job, index } }),
            _ => {}
        }
        Ok(())
    })?;
    // Submitted at 0 but not running at 0: pending at the start of the replay.
    for (_, t) in submitted0.into_iter().filter(|(key, _)| !running0.contains(key)) {
        match t {
            Some(t) => w.events.push(Event { time_s: 0.0, kind: EventKind::Submit(t) }),
            None => notes.tasks_without_requests += 1,
        }
    }
    w.finish(jobs, users);
    Ok((w, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = std::fs::File::create(path).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
    }

    #[test]
    fn loads_time0_cell_running_tasks_and_events() {
        let d = tempfile::tempdir().unwrap();
        gz(
            &d.path().join("machine_events/part-00000-of-00001.csv.gz"),
            "0,5,0,P,0.5,0.25\n0,6,0,P,1,1\n700000000,6,1,,,\n800000000,7,0,P,0.25,0.5\n",
        );
        gz(
            &d.path().join("task_events/part-00000-of-00500.csv.gz"),
            "0,2,10,0,5,0,u,3,9,,,,\n0,,10,0,5,1,u,3,9,0.125,0.0625,0.001,1\n0,,11,0,,0,u,0,0,0.01,0.01,0,0\n\
             900000000,,10,0,5,4,u,3,9,,,,\n900000000,,12,3,,0,u,1,5,0.5,0.5,0,0\n",
        );
        let (w, notes) = load(d.path(), &Units::default()).unwrap();
        assert_eq!(w.machines.len(), 2);
        assert_eq!(w.machines[0].capacity, Resources::new(32_000, 64 << 30, 4 << 40));
        assert_eq!(w.tasks.len(), 1, "one task running at time 0");
        let t = &w.tasks[0];
        assert_eq!(
            (t.priority, t.request.cpu_millis, t.different_machine, t.machine.as_deref()),
            (Priority(209), 8000, true, Some("5"))
        );
        // pending at 0, machine remove/add, a finish and a later submit
        let kinds: Vec<String> = w
            .events
            .iter()
            .map(|e| format!("{:?}", e.kind).split('(').next().unwrap().split(' ').next().unwrap().to_string())
            .collect();
        assert_eq!(kinds, ["Submit", "MachineRemove", "MachineAdd", "End", "Submit"]);
        assert_eq!(w.events[4].time_s, 900.0);
        assert_eq!(notes, LoadNotes::default());
        assert_eq!(w.users, ["u"], "the trace's user ids");
        assert_eq!(map_priority(0), Priority(0));
        assert_eq!(map_priority(5), Priority(105));
        assert_eq!(map_priority(11), Priority(211));
    }

    #[test]
    fn a_bad_field_names_file_line_and_column() {
        let d = tempfile::tempdir().unwrap();
        gz(&d.path().join("machine_events/part-0.csv.gz"), "0,5,0,P,0.5,0.25\n0,x,0,P,1,1\n");
        gz(&d.path().join("task_events/part-0.csv.gz"), "");
        let e = load(d.path(), &Units::default()).unwrap_err().to_string();
        assert!(e.ends_with("part-0.csv.gz:2: machine ID: \"x\" is not a number"), "{e}");
    }
}
