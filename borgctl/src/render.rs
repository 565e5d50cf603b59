//! Rendering of API messages: JSON values (stable field names, for scripts) and tables (for
//! people).

use borg_proto as pb;
use comfy_table::{presets::NOTHING, Table};
use scheduler_core::{format_bytes, format_cores as cores, format_share as pct, Priority};
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
        Ok(pb::JobKind::AllocSet) => "alloc_set",
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
/// `reason`, `incarnation`, `job_version`, `since_ms`, `host` (its machine's address host; empty while
/// unplaced), `ports` (`{"http": 20001}`: its port numbers by name) and `ready` (running and
/// passing its readiness check).
pub fn task_json(t: &pb::Task) -> Value {
    json!({
        "job": t.job, "index": t.index, "state": task_state(t.state), "machine": t.machine,
        "exit_code": t.exit_code, "signal": t.signal, "restarts": t.restarts, "pid": t.pid,
        "used": res(&t.used), "reservation": t.reservation.map(|r| res(&Some(r))),
        "reason": t.reason, "incarnation": t.incarnation, "job_version": t.job_version, "alloc": t.alloc,
        "since_ms": t.state_since_ms, "scheduled_ms": t.scheduled_ms,
        "host": t.host, "ports": t.ports.iter().collect::<std::collections::BTreeMap<_, _>>(), "ready": t.ready, "ready_since_ms": t.ready_since_ms,
    })
}

/// A job as JSON: `name`, `user`, `priority`, `band`, `tasks`, `kind`, `state`, counts,
/// `version`, `why_pending`, `resources` (per task), `allocated` (requests), `reserved`
/// (reservations, Borg §5.5) and `used` (whole job),
/// `ports` (named), `updated` (live tasks on the current version), `ready` (of those, the
/// ready ones) and `paused` (why the rolling update is paused; empty if not).
pub fn job_json(j: &pb::Job) -> Value {
    let s = j.spec.clone().unwrap_or_default();
    json!({
        "name": s.name, "user": s.user, "priority": s.priority, "band": band(s.priority),
        "tasks": s.tasks, "kind": kind(s.kind), "state": j.state, "version": j.version,
        "pending": j.pending, "running": j.running, "dead": j.dead, "succeeded": j.succeeded,
        "submitted_ms": j.submitted_ms, "why_pending": j.why_pending,
        "resources": res(&s.resources), "command": s.command, "env": s.env,
        "allocated": res(&j.allocated), "reserved": res(&j.reserved), "used": res(&j.used),
        "ports": s.ports, "updated": j.updated, "ready": j.ready, "paused": j.paused,
    })
}

/// A machine as JSON: `id`, `address`, `state`, `capacity`, `allocated`, `used`, `tasks`,
/// `attributes`, `last_seen_ms`.
pub fn machine_json(m: &pb::Machine) -> Value {
    json!({
        "id": m.id, "address": m.address,
        "state": machine_state(m),
        "capacity": res(&m.capacity), "allocated": res(&m.allocated), "used": res(&m.used),
        "tasks": m.tasks, "attributes": m.attributes, "last_seen_ms": m.last_seen_ms,
    })
}

/// A machine's state: up, cordoned, draining, drained or down.
pub fn machine_state(m: &pb::Machine) -> &str {
    match m.lifecycle.as_str() {
        "" if m.state == pb::MachineState::Up as i32 => "up",
        "" => "down",
        s => s,
    }
}

/// An event as JSON.
pub fn event_json(e: &pb::Event) -> Value {
    json!({"time_ms": e.time_ms, "job": e.job, "index": e.index, "kind": e.kind, "detail": e.detail, "machine": e.machine, "log_index": e.log_index})
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
    let with_ports = tasks.iter().any(|k| !k.ports.is_empty());
    let mut head = vec!["INDEX", "STATE", "MACHINE", "PID", "EXIT", "RESTARTS", "REASON"];
    if with_ports {
        head.insert(3, "PORTS");
    }
    let mut t = table(&head);
    for k in tasks {
        let exit = match (k.exit_code, k.signal) {
            (_, Some(s)) => format!("sig {s}"),
            (c, None) => opt(c),
        };
        let mut row = vec![
            k.index.to_string(),
            task_state(k.state).to_string(),
            k.machine.clone().unwrap_or("-".into()),
            opt(k.pid),
            exit,
            k.restarts.to_string(),
            k.reason.clone(),
        ];
        if with_ports {
            let ports: std::collections::BTreeMap<_, _> = k.ports.iter().collect();
            let text: Vec<String> = ports.iter().map(|(n, p)| format!("{n}={p}")).collect();
            row.insert(3, if text.is_empty() { "-".into() } else { text.join(",") });
        }
        t.add_row(row);
    }
    t
}

/// An endpoint as JSON: `bns`, `job`, `index`, `host`, `machine`, `ports` (`{"http": 20001}`),
/// `ready`.
pub fn endpoint_json(e: &pb::Endpoint) -> Value {
    json!({
        "bns": e.bns, "job": e.job, "index": e.index, "host": e.host, "machine": e.machine,
        "ports": e.ports.iter().collect::<std::collections::BTreeMap<_, _>>(), "ready": e.ready,
    })
}

/// Endpoints as a table: BNS name, `host:port` per named port, readiness.
pub fn endpoints_table(es: &[pb::Endpoint]) -> Table {
    let mut t = table(&["BNS", "ENDPOINTS", "READY"]);
    for e in es {
        let ports: std::collections::BTreeMap<_, _> = e.ports.iter().collect();
        let text: Vec<String> = ports.iter().map(|(n, p)| format!("{n}={}:{p}", e.host)).collect();
        t.add_row(vec![
            e.bns.clone(),
            if text.is_empty() { e.host.clone() } else { text.join(" ") },
            e.ready.to_string(),
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
            machine_state(m).into(),
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
    if !s.ports.is_empty() {
        out.push_str(&format!("Ports:      {}\n", s.ports.join(", ")));
    }
    let live = j.pending + j.running;
    if live > 0 {
        out.push_str(&format!(
            "Rollout:    {}/{live} tasks on version {}, {} of them ready\n",
            j.updated, j.version, j.ready
        ));
    }
    if !j.paused.is_empty() {
        out.push_str(&format!("Paused:     {}\n", j.paused));
    }
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

/// `top machines`: per machine, CPU and RAM used / allocated / capacity.
pub fn top_machines(ms: &[pb::Machine]) -> Table {
    let mut t = table(&[
        "MACHINE",
        "STATE",
        "TASKS",
        "CPU USED",
        "CPU ALLOC",
        "CPU CAP",
        "CPU ALLOC%",
        "RAM USED",
        "RAM ALLOC",
        "RAM CAP",
        "RAM ALLOC%",
    ]);
    for m in ms {
        let (c, a, u) = (m.capacity.unwrap_or_default(), m.allocated.unwrap_or_default(), m.used.unwrap_or_default());
        t.add_row(vec![
            m.id.clone(),
            machine_state(m).into(),
            m.tasks.to_string(),
            cores(u.cpu_millis),
            cores(a.cpu_millis),
            cores(c.cpu_millis),
            pct(a.cpu_millis, c.cpu_millis),
            format_bytes(u.ram_bytes),
            format_bytes(a.ram_bytes),
            format_bytes(c.ram_bytes),
            pct(a.ram_bytes, c.ram_bytes),
        ]);
    }
    t
}

/// `top jobs`: per job, running tasks and CPU / RAM used vs allocated.
pub fn top_jobs(jobs: &[pb::Job]) -> Table {
    let mut t = table(&[
        "JOB", "USER", "BAND", "RUNNING", "CPU REQ", "CPU RESV", "CPU USED", "RAM REQ", "RAM RESV", "RAM USED",
    ]);
    for j in jobs {
        let s = j.spec.clone().unwrap_or_default();
        let (a, u) = (j.allocated.unwrap_or_default(), j.used.unwrap_or_default());
        let r = j.reserved.unwrap_or(a);
        t.add_row(vec![
            s.name,
            s.user,
            band(s.priority).into(),
            j.running.to_string(),
            cores(a.cpu_millis),
            cores(r.cpu_millis),
            cores(u.cpu_millis),
            format_bytes(a.ram_bytes),
            format_bytes(r.ram_bytes),
            format_bytes(u.ram_bytes),
        ]);
    }
    t
}

/// One user's jobs summed: (user, jobs, running tasks, allocated, used), sorted by user.
pub type UserRow = (String, u32, u32, pb::Resources, pb::Resources);

/// Sums jobs by user.
pub fn users(jobs: &[pb::Job]) -> Vec<UserRow> {
    let mut m: std::collections::BTreeMap<String, UserRow> = Default::default();
    for j in jobs {
        let s = j.spec.clone().unwrap_or_default();
        let e =
            m.entry(s.user.clone()).or_insert_with(|| (s.user.clone(), 0, 0, Default::default(), Default::default()));
        let (a, u) = (j.allocated.unwrap_or_default(), j.used.unwrap_or_default());
        e.1 += 1;
        e.2 += j.running;
        e.3.cpu_millis += a.cpu_millis;
        e.3.ram_bytes += a.ram_bytes;
        e.3.disk_bytes += a.disk_bytes;
        e.4.cpu_millis += u.cpu_millis;
        e.4.ram_bytes += u.ram_bytes;
    }
    m.into_values().collect()
}

/// A user row as JSON: `user`, `jobs`, `running`, `allocated`, `used`.
pub fn user_json(u: &UserRow) -> Value {
    json!({"user": u.0, "jobs": u.1, "running": u.2, "allocated": res(&Some(u.3)), "used": res(&Some(u.4))})
}

/// `top users`.
pub fn top_users(users: &[UserRow]) -> Table {
    let mut t = table(&["USER", "JOBS", "RUNNING", "CPU USED", "CPU ALLOC", "RAM USED", "RAM ALLOC"]);
    for u in users {
        t.add_row(vec![
            u.0.clone(),
            u.1.to_string(),
            u.2.to_string(),
            cores(u.4.cpu_millis),
            cores(u.3.cpu_millis),
            format_bytes(u.4.ram_bytes),
            format_bytes(u.3.ram_bytes),
        ]);
    }
    t
}

/// `cell usage` as JSON: `cell`, `machines_up`, `machines_down`, `capacity`, `allocated`,
/// `used`, `free`, `stranded`, `reserved`, `reclaimed` (allocated = reserved + reclaimed, Borg
/// §5.5), and `bands` (lowest first) with `band`, `allocated`, `reserved`, `reclaimed`, `used`,
/// `tasks_running`, `tasks_pending`, `tasks_dead`.
pub fn cell_usage_json(u: &pb::CellUsageResponse) -> Value {
    json!({
        "cell": u.cell, "machines_up": u.machines_up, "machines_down": u.machines_down,
        "capacity": res(&u.capacity), "allocated": res(&u.allocated), "used": res(&u.used),
        "free": res(&u.free), "stranded": res(&u.stranded),
        "reserved": res(&u.reserved), "reclaimed": res(&u.reclaimed),
        "bands": u.bands.iter().map(|b| json!({
            "band": b.band, "allocated": res(&b.allocated), "used": res(&b.used),
            "reserved": res(&b.reserved), "reclaimed": res(&b.reclaimed),
            "tasks_running": b.tasks_running, "tasks_pending": b.tasks_pending, "tasks_dead": b.tasks_dead,
        })).collect::<Vec<_>>(),
    })
}

/// `cell usage` as text: a resource table and a band table.
pub fn cell_usage_text(u: &pb::CellUsageResponse) -> String {
    let (c, a, us, f, s) = (
        u.capacity.unwrap_or_default(),
        u.allocated.unwrap_or_default(),
        u.used.unwrap_or_default(),
        u.free.unwrap_or_default(),
        u.stranded.unwrap_or_default(),
    );
    let (rv, rc) = (u.reserved.unwrap_or(a), u.reclaimed.unwrap_or_default());
    let mut t =
        table(&["RESOURCE", "CAPACITY", "ALLOCATED", "ALLOC%", "RESERVED", "RECLAIMED", "USED", "FREE", "STRANDED"]);
    t.add_row(vec![
        "cpu (cores)".into(),
        cores(c.cpu_millis),
        cores(a.cpu_millis),
        pct(a.cpu_millis, c.cpu_millis),
        cores(rv.cpu_millis),
        cores(rc.cpu_millis),
        cores(us.cpu_millis),
        cores(f.cpu_millis),
        cores(s.cpu_millis),
    ]);
    t.add_row(vec![
        "ram".into(),
        format_bytes(c.ram_bytes),
        format_bytes(a.ram_bytes),
        pct(a.ram_bytes, c.ram_bytes),
        format_bytes(rv.ram_bytes),
        format_bytes(rc.ram_bytes),
        format_bytes(us.ram_bytes),
        format_bytes(f.ram_bytes),
        format_bytes(s.ram_bytes),
    ]);
    t.add_row(vec![
        "disk".into(),
        format_bytes(c.disk_bytes),
        format_bytes(a.disk_bytes),
        pct(a.disk_bytes, c.disk_bytes),
        format_bytes(rv.disk_bytes),
        format_bytes(rc.disk_bytes),
        "-".into(),
        format_bytes(f.disk_bytes),
        format_bytes(s.disk_bytes),
    ]);
    let mut b = table(&[
        "BAND", "RUNNING", "PENDING", "DEAD", "CPU REQ", "CPU RESV", "CPU USED", "RAM REQ", "RAM RESV", "RAM USED",
    ]);
    for x in u.bands.iter().rev() {
        let (xa, xu) = (x.allocated.unwrap_or_default(), x.used.unwrap_or_default());
        let xr = x.reserved.unwrap_or(xa);
        b.add_row(vec![
            x.band.clone(),
            x.tasks_running.to_string(),
            x.tasks_pending.to_string(),
            x.tasks_dead.to_string(),
            cores(xa.cpu_millis),
            cores(xr.cpu_millis),
            cores(xu.cpu_millis),
            format_bytes(xa.ram_bytes),
            format_bytes(xr.ram_bytes),
            format_bytes(xu.ram_bytes),
        ]);
    }
    format!("cell {}: {} machines up, {} down\n{t}\n{b}\n", u.cell, u.machines_up, u.machines_down)
}

fn res_text(r: &pb::Resources) -> String {
    borg_jobspec::convert::resources_from_pb(Some(r)).to_string()
}

/// A quota row as JSON: `user`, `band`, `limit` (null = unlimited), `used`, `free`.
pub fn quota_json(q: &pb::QuotaRow) -> Value {
    json!({"user": q.user, "band": q.band, "limit": q.limit.map(|l| res(&Some(l))), "used": res(&q.used), "free": q.free.map(|f| res(&Some(f))), "weight": q.weight.max(1)})
}

/// Quota rows as a table.
pub fn quota_table(rows: &[pb::QuotaRow]) -> Table {
    let mut t = table(&["USER", "BAND", "LIMIT", "USED", "FREE", "WEIGHT"]);
    for q in rows {
        t.add_row(vec![
            q.user.clone(),
            q.band.clone(),
            q.limit.as_ref().map_or("unlimited".into(), res_text),
            res_text(&q.used.unwrap_or_default()),
            q.free.as_ref().map_or("-".into(), res_text),
            q.weight.max(1).to_string(),
        ]);
    }
    t
}

/// Events as a table, oldest first.
pub fn events_table(events: &[pb::Event]) -> Table {
    let mut t = table(&["TIME", "JOB", "TASK", "EVENT", "MACHINE", "DETAIL"]);
    for e in events {
        t.add_row(vec![
            clock(e.time_ms),
            e.job.clone(),
            e.index.map_or(String::new(), |i| i.to_string()),
            e.kind.clone(),
            e.machine.clone().unwrap_or_default(),
            e.detail.clone(),
        ]);
    }
    t
}

/// A queue entry as JSON: `position` (from 1), `job`, `user`, `priority`, `band`, `pending`,
/// `share` (0..1), `waiting_for` (empty unless held back by `after`).
pub fn queue_json((i, e): (usize, &pb::QueueEntry)) -> Value {
    json!({"position": i + 1, "job": e.job, "user": e.user, "priority": e.priority, "band": e.band,
           "pending": e.pending, "share": e.share, "waiting_for": e.waiting_for})
}

/// A cron job as JSON: `name`, `user`, `schedule`, `concurrency`, `history`, `suspended`,
/// `last_tick_ms`, `next_tick_ms` (0: none), `runs` (oldest first), `live`.
pub fn cron_json(c: &pb::CronEntry) -> Value {
    json!({"name": c.name, "user": c.user, "schedule": c.schedule, "concurrency": c.concurrency,
           "history": c.history, "suspended": c.suspended, "last_tick_ms": c.last_tick_ms,
           "next_tick_ms": c.next_tick_ms, "runs": c.runs, "live": c.live})
}

/// Cron jobs as a table.
pub fn crons_table(crons: &[pb::CronEntry]) -> Table {
    let mut t = table(&[
        "NAME",
        "USER",
        "SCHEDULE (UTC)",
        "CONCURRENCY",
        "SUSPENDED",
        "LAST TICK",
        "NEXT TICK",
        "RUNS",
        "LIVE",
    ]);
    let when = |ms: i64| if ms == 0 { "-".to_string() } else { clock(ms) };
    for c in crons {
        t.add_row(vec![
            c.name.clone(),
            c.user.clone(),
            c.schedule.clone(),
            c.concurrency.clone(),
            c.suspended.to_string(),
            when(c.last_tick_ms),
            when(c.next_tick_ms),
            c.runs.len().to_string(),
            c.live.to_string(),
        ]);
    }
    t
}

/// The scheduling queue as a table, in order.
pub fn queue_table(entries: &[pb::QueueEntry]) -> Table {
    let mut t = table(&["#", "JOB", "USER", "PRIORITY", "PENDING", "USER SHARE", "WAITING FOR"]);
    for (i, e) in entries.iter().enumerate() {
        t.add_row(vec![
            (i + 1).to_string(),
            e.job.clone(),
            e.user.clone(),
            format!("{} ({})", e.priority, e.band),
            e.pending.to_string(),
            format!("{:.1}%", e.share * 100.0),
            e.waiting_for.clone(),
        ]);
    }
    t
}

/// One event on one line (a followed stream): `14:03:07.250Z web/0 running [m1] pid 4242`.
pub fn event_line(e: &pb::Event) -> String {
    let what = match e.index {
        Some(i) => format!("{}/{i}", e.job),
        None if e.job.is_empty() => e.machine.clone().unwrap_or_default(),
        None => e.job.clone(),
    };
    let on = match (&e.machine, e.index) {
        (Some(m), Some(_)) => format!(" [{m}]"),
        _ => String::new(),
    };
    format!("{} {what} {}{on} {}", clock(e.time_ms), e.kind, e.detail)
}

/// One task on one line (a followed stream): `web/0 running m1 pid 4242 restarts 0 ready`.
pub fn task_line(t: &pb::Task) -> String {
    let mut s = format!("{}/{} {} {}", t.job, t.index, task_state(t.state), t.machine.as_deref().unwrap_or("-"));
    if let Some(p) = t.pid {
        s += &format!(" pid {p}");
    }
    s += &format!(" restarts {}", t.restarts);
    if t.ready {
        s += " ready";
    }
    if !t.reason.is_empty() {
        s += &format!(" ({})", t.reason);
    }
    s
}

/// The dry-run plan of an apply, for people.
pub fn plan_text(r: &pb::ApplyJobResponse) -> String {
    let list = |v: &[u32]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        }
    };
    let mut out = format!("job {}: would be {} (version {})\n", r.job, r.action, r.version);
    if r.in_place {
        out.push_str("  applied in place: no task restarts\n");
    }
    out.push_str(&format!(
        "  create tasks:  {}\n  restart tasks: {}\n  remove tasks:  {}\n",
        list(&r.created),
        list(&r.restarted),
        list(&r.removed)
    ));
    out.push_str(&format!("  placement now: {} of {} pending tasks fit\n", r.placeable, r.placeable + r.unplaceable));
    if r.unplaceable > 0 {
        out.push_str(&format!("  would stay pending: {}\n", r.why_pending));
    }
    if !r.evicted.is_empty() {
        out.push_str(&format!("  would preempt {} tasks:\n", r.evicted.len()));
        const SHOWN: usize = 20;
        for v in r.evicted.iter().take(SHOWN) {
            out.push_str(&format!("    {v}\n"));
        }
        if r.evicted.len() > SHOWN {
            out.push_str(&format!("    ... and {} more (-o json lists them all)\n", r.evicted.len() - SHOWN));
        }
    }
    let used = r.quota_used_after.unwrap_or_default();
    out.push_str(&format!(
        "  quota after: {} of {}\n",
        res_text(&used),
        r.quota_limit.as_ref().map_or("unlimited".into(), res_text)
    ));
    out
}

/// A replica of the master group as JSON: `id`, `address`, `role`
/// (`leader|follower|learner|candidate|unreachable`), `voter`, `last_applied_index`,
/// `last_log_index`, `term`, `leader_id` (0 = none known).
pub fn replica_json(r: &pb::ReplicaStatus) -> Value {
    json!({
        "id": r.id, "address": r.address, "role": r.role, "voter": r.voter,
        "last_applied_index": r.last_applied_index, "last_log_index": r.last_log_index,
        "term": r.term, "leader_id": r.leader_id, "voters": r.voters, "joint": r.joint,
    })
}

/// Replicas as a table, by id.
pub fn replicas_table(rs: &[pb::ReplicaStatus]) -> Table {
    let mut t = table(&["ID", "ADDRESS", "ROLE", "VOTER", "APPLIED", "LOG", "TERM"]);
    for r in rs {
        let unreachable = r.role == "unreachable";
        let num = |v: u64| if unreachable { "-".to_string() } else { v.to_string() };
        t.add_row(vec![
            r.id.to_string(),
            r.address.clone(),
            r.role.clone(),
            if r.voter { "yes" } else { "no" }.to_string(),
            num(r.last_applied_index),
            num(r.last_log_index),
            num(r.term),
        ]);
    }
    t
}

/// `allocs` as a table: one row per alloc (ALLOC `set/index`, STATE, MACHINE, RESERVED, TASKS
/// inside), from the rows `allocs -o json` prints.
pub fn allocs_table(rows: &[Value]) -> Table {
    let mut t = table(&["ALLOC", "STATE", "MACHINE", "RESERVED", "TASKS"]);
    for r in rows {
        let reserved = r["reserved"].as_object().map_or("-".to_string(), |o| {
            let g = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
            scheduler_core::Resources::new(g("cpu_millis"), g("ram_bytes"), g("disk_bytes")).to_string()
        });
        let tasks = r["tasks"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "));
        t.add_row(vec![
            format!("{}/{}", r["alloc_set"].as_str().unwrap_or(""), r["index"]),
            r["state"].as_str().unwrap_or("").to_string(),
            r["machine"].as_str().unwrap_or("-").to_string(),
            reserved,
            tasks.filter(|t| !t.is_empty()).unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// The spec changes of a dry run for people, one line per changed leaf field, in units:
/// `resources.cpu: 500m -> 400m`, `resources.ram: 64Mi -> 128Mi`, `command: sleep 1 -> sleep 2`.
/// `diff` is the JSON map field -> {from, to} that `apply --dry-run -o json` prints.
pub fn spec_changes(diff: &serde_json::Map<String, Value>) -> Vec<String> {
    fn leaf(field: &str, v: &Value) -> String {
        match (field, v) {
            (_, Value::Null) => "-".into(),
            (f, Value::Number(n)) if f.ends_with("cpu_millis") => format!("{n}m"),
            (f, Value::Number(n)) if f.ends_with("_bytes") => n.as_u64().map_or(n.to_string(), format_bytes),
            (f, Value::Number(n)) if f.ends_with("_ms") => format!("{n}ms"),
            (_, Value::String(s)) => s.clone(),
            (_, Value::Array(a)) => a.iter().map(|x| leaf("", x)).collect::<Vec<_>>().join(" "),
            (_, other) => other.to_string(),
        }
    }
    fn walk(path: &str, from: &Value, to: &Value, out: &mut Vec<String>) {
        if from == to {
            return;
        }
        if let (Value::Object(a), Value::Object(b)) = (from, to) {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let null = Value::Null;
                walk(&format!("{path}.{k}"), a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null), out);
            }
            return;
        }
        let name = path.trim_start_matches('.').replace("cpu_millis", "cpu").replace("_bytes", "").replace("_ms", "");
        out.push(format!("{name}: {} -> {}", leaf(path, from), leaf(path, to)));
    }
    let mut out = Vec::new();
    for (field, ch) in diff {
        walk(field, &ch["from"], &ch["to"], &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_changes_read_in_units() {
        let d = json!({
            "resources": {"from": {"cpu_millis": 500, "ram_bytes": 67108864, "disk_bytes": 0},
                          "to": {"cpu_millis": 400, "ram_bytes": 67108864, "disk_bytes": 0}},
            "command": {"from": ["sleep", "1"], "to": ["sleep", "2"]},
            "tasks": {"from": 2, "to": 3},
        });
        let lines = spec_changes(d.as_object().unwrap());
        assert_eq!(lines, ["command: sleep 1 -> sleep 2", "resources.cpu: 500m -> 400m", "tasks: 2 -> 3"]);
    }
}
