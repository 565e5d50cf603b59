//! The neutral CSV format, so capacity planners can bring their own cell and workload.
//!
//! Machines (`--machines FILE.csv`), one per line, optional header line starting with `id`:
//! ```text
//! id,cpu_millis,ram_bytes,disk_bytes,attrs
//! m1,32000,137438953472,4398046511104,rack=r1;arch=x86_64
//! ```
//! `attrs` is `k=v` pairs separated by `;` (may be empty); the `rack` attribute, if present, is
//! the machine's failure domain.
//!
//! Tasks (`--tasks FILE.csv`), optional header line starting with `job`:
//! ```text
//! job,index,priority,cpu_millis,ram_bytes,disk_bytes,different_machine,submit_time_s,duration_s,user
//! web,0,200,500,1073741824,0,false,,,alice
//! crunch,3,100,2000,4294967296,0,0,30,600,bob
//! ```
//! `priority` on our scale (free 0-99, batch 100-199, production 200-299, monitoring 300-399);
//! `different_machine` is `true/false/1/0`. A task with no (or zero) `submit_time_s` is present at
//! time 0; a later one is submitted then. `duration_s`, when given, ends the task that long after
//! its submission (replay only). `user` names the task's owner for fair share (replay orders
//! users within a band by their dominant share, as the master does). Two more optional
//! columns, `cpu_used_millis,ram_used_bytes`, give the task's peak usage, which `--reclaim`
//! reserves instead of its request (Borg §5.5; one of the two given: the other is taken at the
//! request). Trailing columns may be omitted (no user: every task belongs to one unnamed user;
//! no usage: `--reclaim` models it, see `fauxmaster::usage`).

use crate::workload::{Event, EventKind, LoadError, Machine, Names, Task, Workload};
use scheduler_core::{Attributes, Priority, Resources};
use std::path::Path;

/// A malformed neutral CSV file: which file, line and column, and what.
fn rows(
    path: &Path,
    header: &str,
    mut f: impl FnMut(u64, &csv::StringRecord) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    let file = std::fs::File::open(path).map_err(|source| LoadError::Io { path: path.into(), source })?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(file);
    let mut rec = csv::StringRecord::new();
    let mut line = 0;
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                line += 1;
                if (line == 1 && rec.get(0) == Some(header)) || rec.iter().all(str::is_empty) {
                    continue;
                }
                f(line, &rec)?;
            }
            Err(e) => {
                return Err(LoadError::Row { path: path.into(), line: line + 1, field: "row", message: e.to_string() })
            }
        }
    }
}

fn field<T: std::str::FromStr>(
    path: &Path,
    line: u64,
    rec: &csv::StringRecord,
    i: usize,
    name: &'static str,
    required: bool,
) -> Result<Option<T>, LoadError> {
    match rec.get(i).unwrap_or("") {
        "" if required => Err(LoadError::Row { path: path.into(), line, field: name, message: "missing".into() }),
        "" => Ok(None),
        s => s.parse().map(Some).map_err(|_| LoadError::Row {
            path: path.into(),
            line,
            field: name,
            message: format!("{s:?} is not valid"),
        }),
    }
}

/// Loads a neutral-format cell and workload.
///
/// Errors: a file that cannot be read, or a row with a missing or malformed field (file, line
/// and column named).
pub fn load(machines: &Path, tasks: &Path) -> Result<Workload, LoadError> {
    let mut w = Workload { units: "neutral CSV: millicores and bytes as given".into(), ..Default::default() };
    rows(machines, "id", |line, rec| {
        let id: String = field(machines, line, rec, 0, "id", true)?.unwrap_or_default();
        let cpu: u64 = field(machines, line, rec, 1, "cpu_millis", true)?.unwrap_or(0);
        let ram: u64 = field(machines, line, rec, 2, "ram_bytes", true)?.unwrap_or(0);
        let disk: u64 = field(machines, line, rec, 3, "disk_bytes", false)?.unwrap_or(0);
        let mut attributes = Attributes::new();
        for kv in rec.get(4).unwrap_or("").split(';').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| LoadError::Row {
                path: machines.into(),
                line,
                field: "attrs",
                message: format!("{kv:?} is not k=v"),
            })?;
            attributes.insert(k.to_string(), v.to_string());
        }
        let domain = attributes.get("rack").cloned().unwrap_or_else(|| id.clone());
        w.machines.push(Machine { id, capacity: Resources::new(cpu, ram, disk), attributes, domain });
        Ok(())
    })?;
    let mut jobs = Names::default();
    let mut users = Names::default();
    rows(tasks, "job", |line, rec| {
        let name: String = field(tasks, line, rec, 0, "job", true)?.unwrap_or_default();
        let index: u32 = field(tasks, line, rec, 1, "index", true)?.unwrap_or(0);
        let priority: i32 = field(tasks, line, rec, 2, "priority", true)?.unwrap_or(0);
        if Priority(priority).band().is_none() {
            return Err(LoadError::Row {
                path: tasks.into(),
                line,
                field: "priority",
                message: format!("{priority} is outside 0-399"),
            });
        }
        let cpu: u64 = field(tasks, line, rec, 3, "cpu_millis", true)?.unwrap_or(0);
        let ram: u64 = field(tasks, line, rec, 4, "ram_bytes", true)?.unwrap_or(0);
        let disk: u64 = field(tasks, line, rec, 5, "disk_bytes", false)?.unwrap_or(0);
        let dm = match rec.get(6).unwrap_or("") {
            "" | "0" | "false" => false,
            "1" | "true" => true,
            s => {
                return Err(LoadError::Row {
                    path: tasks.into(),
                    line,
                    field: "different_machine",
                    message: format!("{s:?} is not true/false/1/0"),
                })
            }
        };
        let submit: f64 = field(tasks, line, rec, 7, "submit_time_s", false)?.unwrap_or(0.0);
        let duration: Option<f64> = field(tasks, line, rec, 8, "duration_s", false)?;
        let user = users.id(rec.get(9).unwrap_or(""));
        let cpu_used: Option<u64> = field(tasks, line, rec, 10, "cpu_used_millis", false)?;
        let ram_used: Option<u64> = field(tasks, line, rec, 11, "ram_used_bytes", false)?;
        let usage = match (cpu_used, ram_used) {
            (None, None) => None,
            (c, r) => Some(Resources::new(c.unwrap_or(cpu), r.unwrap_or(ram), 0)),
        };
        let job = jobs.id(&name);
        let t = Task {
            job,
            index,
            priority: Priority(priority),
            request: Resources::new(cpu, ram, disk),
            different_machine: dm,
            machine: None,
            user,
            usage,
        };
        if submit > 0.0 {
            w.events.push(Event { time_s: submit, kind: EventKind::Submit(t) });
        } else {
            w.tasks.push(t);
        }
        if let Some(d) = duration {
            w.events.push(Event { time_s: submit + d, kind: EventKind::End { job, index } });
        }
        Ok(())
    })?;
    w.finish(jobs, users);
    Ok(w)
}

/// Writes the first `machines` machines of `w` and its time-0 tasks in this format (with header
/// lines): whole jobs in workload order until at least `tasks` tasks are written (all of them
/// when `tasks` is at least their number); job names are the workload's. Returns (machines,
/// tasks) written.
///
/// Errors: a file cannot be written.
pub fn write(
    w: &Workload,
    machines: usize,
    tasks: usize,
    machines_path: &Path,
    tasks_path: &Path,
) -> std::io::Result<(usize, usize)> {
    use std::io::Write;
    let mut m = std::io::BufWriter::new(std::fs::File::create(machines_path)?);
    writeln!(m, "id,cpu_millis,ram_bytes,disk_bytes,attrs")?;
    for x in w.machines.iter().take(machines) {
        let attrs: Vec<String> = x.attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            m,
            "{},{},{},{},{}",
            x.id,
            x.capacity.cpu_millis,
            x.capacity.ram_bytes,
            x.capacity.disk_bytes,
            attrs.join(";")
        )?;
    }
    m.flush()?;
    let mut t = std::io::BufWriter::new(std::fs::File::create(tasks_path)?);
    writeln!(
        t,
        "job,index,priority,cpu_millis,ram_bytes,disk_bytes,different_machine,submit_time_s,duration_s,user,cpu_used_millis,ram_used_bytes"
    )?;
    // whole jobs: stop at the first job boundary once `tasks` are written
    let mut written = 0;
    let mut last_job = None;
    for x in &w.tasks {
        if written >= tasks && last_job != Some(x.job) {
            break;
        }
        written += 1;
        last_job = Some(x.job);
        let job = w.jobs.get(x.job as usize).map_or("", String::as_str);
        let user = w.users.get(x.user as usize).map_or("", String::as_str);
        let (cu, ru) =
            x.usage.map_or((String::new(), String::new()), |u| (u.cpu_millis.to_string(), u.ram_bytes.to_string()));
        writeln!(
            t,
            "{job},{},{},{},{},{},{},,,{user},{cu},{ru}",
            x.index, x.priority.0, x.request.cpu_millis, x.request.ram_bytes, x.request.disk_bytes, x.different_machine
        )?;
    }
    t.flush()?;
    Ok((machines.min(w.machines.len()), written))
}

/// The node list OpenB pod lists are placed on, beside them in the trace's `csv/` directory.
pub const OPENB_NODES: &str = "openb_node_list_all_node.csv";

/// Loads a cell and workload from Alibaba's GPU cluster trace of 2023 (`cluster-trace-gpu-v2023`
/// in github.com/alibaba/clusterdata; not shipped here): the pod list `pods`
/// (`name,cpu_milli,memory_mib,num_gpu,...`, one pod per line) on the node list
/// [`OPENB_NODES`] in the same directory (`sn,cpu_milli,memory_mib,gpu,model`). A real cell
/// shape for checking that scoring generalizes beyond the Google trace: 1,523 nodes of 8-128
/// cores and 16-768 GiB.
///
/// CPU and memory only: GPUs are neither a resource nor a constraint here, so a GPU pod may be
/// placed on a node without GPUs. Every pod is a production task (priority 200) of a job of its
/// own (the trace does not group pods into jobs; equal requests still share an equivalence
/// class), present at time 0. Memory is MiB in the trace, bytes here; a zero request counts as
/// 1 millicore / 1 MiB.
///
/// Errors: a file that cannot be read, or a row with a missing or malformed field (file, line
/// and column named).
pub fn load_openb(pods: &Path) -> Result<Workload, LoadError> {
    const MIB: u64 = 1 << 20;
    let nodes = pods.with_file_name(OPENB_NODES);
    let mut w = Workload {
        units: "Alibaba OpenB (cluster-trace-gpu-v2023): millicores and bytes, GPUs left out".into(),
        ..Default::default()
    };
    rows(&nodes, "sn", |line, rec| {
        let id: String = field(&nodes, line, rec, 0, "sn", true)?.unwrap_or_default();
        let cpu: u64 = field(&nodes, line, rec, 1, "cpu_milli", true)?.unwrap_or(0);
        let mib: u64 = field(&nodes, line, rec, 2, "memory_mib", true)?.unwrap_or(0);
        let capacity = Resources::new(cpu, mib.saturating_mul(MIB), 0);
        w.machines.push(Machine { id: id.clone(), capacity, attributes: Attributes::new(), domain: id });
        Ok(())
    })?;
    let mut jobs = Names::default();
    rows(pods, "name", |line, rec| {
        let name: String = field(pods, line, rec, 0, "name", true)?.unwrap_or_default();
        let cpu: u64 = field(pods, line, rec, 1, "cpu_milli", true)?.unwrap_or(0);
        let mib: u64 = field(pods, line, rec, 2, "memory_mib", true)?.unwrap_or(0);
        w.tasks.push(Task {
            job: jobs.id(&name),
            index: 0,
            priority: Priority(200),
            request: Resources::new(cpu.max(1), mib.max(1).saturating_mul(MIB), 0),
            different_machine: false,
            machine: None,
            user: 0,
            usage: None,
        });
        Ok(())
    })?;
    w.finish(jobs, Names::default());
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_both_files_with_headers_and_reports_bad_rows() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m.csv");
        let t = d.path().join("t.csv");
        std::fs::write(
            &m,
            "id,cpu_millis,ram_bytes,disk_bytes,attrs\nm1,32000,1000,0,rack=r1;arch=x86_64\nm2,16000,500,0,\n",
        )
        .unwrap();
        std::fs::write(&t, "job,index,priority,cpu_millis,ram_bytes,disk_bytes,different_machine,submit_time_s,duration_s\nweb,0,200,500,10,0,false,,\nweb,1,200,500,10,0,1\nbatch,0,100,100,1,0,0,30,60,bob\n").unwrap();
        let w = load(&m, &t).unwrap();
        assert_eq!(w.machines[0].domain, "r1");
        assert_eq!(w.machines[1].domain, "m2");
        assert_eq!(w.tasks.len(), 2);
        assert!(w.tasks[1].different_machine);
        assert_eq!(w.events.len(), 2);
        assert_eq!(w.events[1].time_s, 90.0);
        assert_eq!(w.users, ["", "bob"], "no user column: the unnamed user");
        let EventKind::Submit(b) = &w.events[0].kind else { panic!("{:?}", w.events[0]) };
        assert_eq!((w.tasks[0].user, b.user), (0, 1));
        std::fs::write(&t, "web,0,200,500,1000,0,0,,,alice,120,400\nweb,1,200,500,1000,0,0,,,alice,,\n").unwrap();
        let w = load(&m, &t).unwrap();
        assert_eq!(w.tasks[0].usage, Some(Resources::new(120, 400, 0)));
        assert_eq!(w.tasks[1].usage, None);
        std::fs::write(&t, "web,0,500,1,1,0\n").unwrap();
        let e = load(&m, &t).unwrap_err().to_string();
        assert!(e.ends_with("t.csv:1: priority: 500 is outside 0-399"), "{e}");
        std::fs::write(&t, "web,0,100,lots,1,0\n").unwrap();
        assert!(load(&m, &t).unwrap_err().to_string().contains("t.csv:1: cpu_millis"));
    }
}
