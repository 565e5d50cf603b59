//! Rendering of API messages: JSON values (stable field names, for scripts) and tables (for
//! people).

use borg_proto as pb;
use comfy_table::{presets::NOTHING, Table};
use scheduler_core::{format_bytes, Priority};
use serde_json::{json, Value};

/// `pending`, `running`, `dead` (or `unknown`).
pub fn task_state(s: i32) -> &'static str {
    match pb::TaskState::try_from(s) {
        Ok(pb::TaskState::Pending) => "pending",
        Ok(pb::TaskState::Running) => "running",
        Ok(pb::TaskState::Dead) => "dead",
        _ => "unknown",
    }
}

fn kind(k: i32) -> &'static str {
    match pb::JobKind::try_from(k) {
        Ok(pb::JobKind::Batch) => "batch",
        Ok(pb::JobKind::Service) => "service",
        _ => "unknown",
    }
}

fn band(p: i32) -> &'static str {
    Priority(p).band().map_or("invalid", |b| b.name())
}

fn res(r: &Option<pb::Resources>) -> Value {
    let r = r.unwrap_or_default();
    json!({"cpu_millis": r.cpu_millis, "ram_bytes": r.ram_bytes, "disk_bytes": r.disk_bytes})
}

/// A task as JSON: `index`, `state`, `machine`, `exit_code`, `signal`, `restarts`, `pid`,
/// `reason`, `incarnation`, `job_version`, `since_ms`.
pub fn task_json(t: &pb::Task) -> Value {
    json!({
        "job": t.job, "index": t.index, "state": task_state(t.state), "machine": t.machine,
        "exit_code": t.exit_code, "signal": t.signal, "restarts": t.restarts, "pid": t.pid,
        "reason": t.reason, "incarnation": t.incarnation, "job_version": t.job_version,
        "since_ms": t.state_since_ms,
    })
}

/// A job as JSON: `name`, `user`, `priority`, `band`, `tasks`, `kind`, `state`, counts,
/// `version`, `why_pending`, `resources` (per task).
pub fn job_json(j: &pb::Job) -> Value {
    let s = j.spec.clone().unwrap_or_default();
    json!({
        "name": s.name, "user": s.user, "priority": s.priority, "band": band(s.priority),
        "tasks": s.tasks, "kind": kind(s.kind), "state": j.state, "version": j.version,
        "pending": j.pending, "running": j.running, "dead": j.dead, "succeeded": j.succeeded,
        "submitted_ms": j.submitted_ms, "why_pending": j.why_pending,
        "resources": res(&s.resources), "command": s.command,
    })
}

/// A machine as JSON: `id`, `address`, `state`, `capacity`, `allocated`, `used`, `tasks`,
/// `attributes`, `last_seen_ms`.
pub fn machine_json(m: &pb::Machine) -> Value {
    json!({
        "id": m.id, "address": m.address,
        "state": if m.state == pb::MachineState::Up as i32 { "up" } else { "down" },
        "capacity": res(&m.capacity), "allocated": res(&m.allocated), "used": res(&m.used),
        "tasks": m.tasks, "attributes": m.attributes, "last_seen_ms": m.last_seen_ms,
    })
}

/// An event as JSON.
pub fn event_json(e: &pb::Event) -> Value {
    json!({"time_ms": e.time_ms, "job": e.job, "index": e.index, "kind": e.kind, "detail": e.detail, "machine": e.machine})
}

/// Time of day (UTC) of a ms-since-epoch timestamp: `14:03:07.250Z`.
pub fn clock(ms: i64) -> String {
    let day_ms = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (day_ms / 3_600_000, day_ms / 60_000 % 60, day_ms / 1000 % 60, day_ms % 1000);
    format!("{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING).set_header(header.iter().copied());
    t
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |x| x.to_string())
}

/// Tasks as a table.
pub fn tasks_table(tasks: &[pb::Task]) -> Table {
    let mut t = table(&["INDEX", "STATE", "MACHINE", "PID", "EXIT", "RESTARTS", "REASON"]);
    for k in tasks {
        let exit = match (k.exit_code, k.signal) {
            (_, Some(s)) => format!("sig {s}"),
            (c, None) => opt(c),
        };
        t.add_row(vec![
            k.index.to_string(),
            task_state(k.state).to_string(),
            k.machine.clone().unwrap_or("-".into()),
            opt(k.pid),
            exit,
            k.restarts.to_string(),
            k.reason.clone(),
        ]);
    }
    t
}

/// Jobs as a table.
pub fn jobs_table(jobs: &[pb::Job]) -> Table {
    let mut t = table(&["NAME", "USER", "PRIORITY", "KIND", "STATE", "TASKS", "PENDING", "RUNNING", "DEAD", "VERSION"]);
    for j in jobs {
        let s = j.spec.clone().unwrap_or_default();
        t.add_row(vec![
            s.name,
            s.user,
            format!("{} ({})", s.priority, band(s.priority)),
            kind(s.kind).into(),
            j.state.clone(),
            s.tasks.to_string(),
            j.pending.to_string(),
            j.running.to_string(),
            j.dead.to_string(),
            j.version.to_string(),
        ]);
    }
    t
}

/// Machines as a table (capacity and allocation side by side).
pub fn machines_table(ms: &[pb::Machine]) -> Table {
    let mut t = table(&["ID", "STATE", "ADDRESS", "TASKS", "CPU (alloc/cap)", "RAM (alloc/cap)", "DISK (alloc/cap)"]);
    for m in ms {
        let c = m.capacity.unwrap_or_default();
        let a = m.allocated.unwrap_or_default();
        t.add_row(vec![
            m.id.clone(),
            if m.state == pb::MachineState::Up as i32 { "up".into() } else { "down".into() },
            m.address.clone(),
            m.tasks.to_string(),
            format!("{}m/{}m", a.cpu_millis, c.cpu_millis),
            format!("{}/{}", format_bytes(a.ram_bytes), format_bytes(c.ram_bytes)),
            format!("{}/{}", format_bytes(a.disk_bytes), format_bytes(c.disk_bytes)),
        ]);
    }
    t
}

/// A job's summary, spec and recent events, for `borgctl job NAME`.
pub fn job_detail(j: &pb::Job, events: &[pb::Event]) -> String {
    let s = j.spec.clone().unwrap_or_default();
    let r = s.resources.unwrap_or_default();
    let mut out = format!(
        "Job:        {}\nUser:       {}\nPriority:   {} ({})\nKind:       {}\nState:      {}\nVersion:    {}\n\
         Tasks:      {} ({} pending, {} running, {} dead, {} succeeded)\n\
         Per task:   cpu={}m ram={} disk={}\nCommand:    {}\n",
        s.name,
        s.user,
        s.priority,
        band(s.priority),
        kind(s.kind),
        j.state,
        j.version,
        s.tasks,
        j.pending,
        j.running,
        j.dead,
        j.succeeded,
        r.cpu_millis,
        format_bytes(r.ram_bytes),
        format_bytes(r.disk_bytes),
        s.command.join(" "),
    );
    if !j.why_pending.is_empty() {
        out.push_str(&format!("Pending:    {}\n", j.why_pending));
    }
    out.push_str("Events:\n");
    for e in events {
        let who = e.index.map_or(String::new(), |i| format!("task {i} "));
        let at = e.machine.as_ref().map_or(String::new(), |m| format!(" [{m}]"));
        out.push_str(&format!("  {} {}{}: {}{}\n", clock(e.time_ms), who, e.kind, e.detail, at));
    }
    out
}
