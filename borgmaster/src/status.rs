//! The status pages (Borg's Sigma, §2.6): server-rendered HTML, no JavaScript, each refreshing
//! itself every 5 s.
//!
//! - `/`: the cell summary (resources by band, quotas), machines, live jobs (finished and killed
//!   ones behind `/?all=1`) and recent events; every machine and job links to its own page.
//! - `/job/NAME`: the job's spec summary, why its tasks are pending, every task, its events.
//! - `/machine/ID`: the machine's capacity, allocation and use, and the tasks bound to it.

use crate::master::Master;
use crate::state::{CellState, Event, Job, MachineState, Task, TaskState};
use scheduler_core::{format_bytes, format_cores as cores, format_share as pct, Band, MachineId, Resources};
use std::fmt::Write;

/// Most events shown.
const EVENTS_SHOWN: usize = 50;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn clock(ms: i64) -> String {
    let d = ms.rem_euclid(86_400_000);
    format!("{:02}:{:02}:{:02}Z", d / 3_600_000, d / 60_000 % 60, d / 1000 % 60)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{margin:0 0 .2em}h2{margin-top:1.4em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:14px}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}\
th{background:#f3f3f3}.num{text-align:right}.up{color:#070}.down{color:#b00}.dead{color:#888}\
.banner{background:#fff3cd;padding:.5em;border:1px solid #e0c36a}.muted{color:#777}";

/// The start of every page: title, heading, the refresh, and a banner when `insecure` (auth off).
fn page_head(state: &CellState, title: &str, insecure: bool) -> String {
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
         <title>{title} - borg cell {cell}</title><style>{STYLE}</style></head><body>\
         <h1>{title}</h1><div class=muted><a href='/'>cell {cell}</a>; Borgmaster status; refreshes every 5 s; log index {idx}</div>",
        title = esc(title),
        cell = esc(&state.cell),
        idx = state.applied_index
    );
    if insecure {
        h.push_str(
            "<p class=banner>Authentication and TLS are off: anyone who can reach this cell's API can change it.</p>",
        );
    }
    h
}

/// Whether job `j` is finished or killed (hidden from the summary unless asked for).
fn finished(j: &Job) -> bool {
    matches!(j.state_name(), "done" | "killed")
}

/// Renders the summary page `/` with the cell's accounting `u` ([`Master::cell_usage`]); `all`
/// shows finished and killed jobs too. `insecure` adds a warning banner (auth off).
pub fn render(master: &Master, u: crate::usage::CellUsage, insecure: bool, all: bool) -> String {
    let state = master.state();
    let soft = master.soft();
    let mut h = page_head(&state, &format!("Cell {}", state.cell), insecure);
    // Summary
    h.push_str("<h2>Cell</h2><table><tr><th>resource</th><th class=num>capacity</th><th class=num>allocated</th><th class=num>reserved</th><th class=num>reclaimed</th><th class=num>used</th><th class=num>free</th><th class=num>stranded</th></tr>");
    let row = |h: &mut String, name: &str, f: &dyn Fn(Resources) -> String, g: &dyn Fn(Resources) -> u64| {
        let _ = write!(
            h,
            "<tr><td>{name}</td><td class=num>{}</td><td class=num>{} ({})</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            f(u.capacity),
            f(u.allocated),
            pct(g(u.allocated), g(u.capacity)),
            f(u.reserved),
            f(u.reclaimed),
            f(u.used),
            f(u.free),
            f(u.stranded)
        );
    };
    row(&mut h, "CPU (cores)", &|r| cores(r.cpu_millis), &|r| r.cpu_millis);
    row(&mut h, "RAM", &|r| format_bytes(r.ram_bytes), &|r| r.ram_bytes);
    row(&mut h, "disk", &|r| format_bytes(r.disk_bytes), &|r| r.disk_bytes);
    let _ = write!(
        h,
        "</table><p>{} machines up, {} down. Reserved: what bound tasks are estimated to need (Borg §5.5; a task's request until estimated); reclaimed: allocated minus reserved, where batch and free tasks may run.</p>",
        u.machines_up, u.machines_down
    );
    h.push_str("<table><tr><th>band</th><th class=num>running</th><th class=num>pending</th><th class=num>dead</th><th class=num>CPU alloc</th><th class=num>CPU used</th><th class=num>RAM alloc</th><th class=num>RAM used</th></tr>");
    for (b, bu) in u.bands.iter().enumerate().rev() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            Band::ALL[b].name(),
            bu.running,
            bu.pending,
            bu.dead,
            cores(bu.allocated.cpu_millis),
            cores(bu.used.cpu_millis),
            format_bytes(bu.allocated.ram_bytes),
            format_bytes(bu.used.ram_bytes)
        );
    }
    h.push_str("</table>");
    // Quotas
    quota_section(&mut h, &state);
    // Machines
    h.push_str("<h2>Machines</h2><table><tr><th>machine</th><th>state</th><th>address</th><th class=num>tasks</th><th class=num>CPU alloc / cap</th><th class=num>RAM alloc / cap</th><th class=num>CPU used</th><th class=num>RAM used</th><th>attributes</th></tr>");
    for m in state.machines.values() {
        let alloc = state.allocated_on(&m.id);
        let used = soft.machine_usage.get(&m.id).copied().unwrap_or_default();
        let st = state.machine_state_name(&m.id);
        let cls = if m.state == MachineState::Up { "up" } else { "down" };
        let attrs: Vec<String> = m.attributes.iter().map(|(k, v)| format!("{}={}", esc(k), esc(v))).collect();
        let _ = write!(
            h,
            "<tr><td><a href='/machine/{id}'>{id}</a></td><td class={cls}>{st}</td><td>{}</td><td class=num>{}</td><td class=num>{} / {}</td><td class=num>{} / {}</td><td class=num>{}</td><td class=num>{}</td><td class=muted>{}</td></tr>",
            esc(&m.address),
            state.task_count_on(&m.id),
            cores(alloc.cpu_millis),
            cores(m.capacity.cpu_millis),
            format_bytes(alloc.ram_bytes),
            format_bytes(m.capacity.ram_bytes),
            cores(used.cpu_millis),
            format_bytes(used.ram_bytes),
            attrs.join(" "),
            id = esc(&m.id.0),
        );
    }
    h.push_str("</table>");
    // Jobs
    let hidden = if all { 0 } else { state.jobs.values().filter(|j| finished(j)).count() };
    h.push_str("<h2>Jobs</h2>");
    if hidden > 0 {
        let jobs = if hidden == 1 { "job" } else { "jobs" };
        let _ = write!(h, "<p class=muted>{hidden} finished or killed {jobs} hidden: <a href='/?all=1'>show all jobs</a> (<code>borgctl delete JOB</code> removes them).</p>");
    } else if all {
        h.push_str("<p class=muted>Every job, finished and killed ones too: <a href='/'>live jobs only</a>.</p>");
    }
    h.push_str("<table><tr><th>job</th><th>user</th><th>priority</th><th>kind</th><th>state</th><th class=num>tasks</th><th class=num>running</th><th class=num>pending</th><th class=num>dead</th><th>why pending</th></tr>");
    for j in state.jobs.values().filter(|j| all || !finished(j)) {
        let n = |s: TaskState| j.tasks.iter().filter(|t| t.state == s).count();
        let why = soft.why_pending.get(&j.spec.name).map(ToString::to_string).unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td><a href='/job/{name}'>{name}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=muted>{}</td></tr>",
            esc(&j.spec.user),
            j.spec.priority,
            j.spec.kind.name(),
            j.state_name(),
            j.tasks.len(),
            n(TaskState::Running),
            n(TaskState::Pending),
            n(TaskState::Dead),
            esc(&why),
            name = esc(&j.spec.name),
        );
    }
    h.push_str("</table>");
    events_section(&mut h, "Recent events", state.events.iter().rev().take(EVENTS_SHOWN));
    h.push_str("</body></html>\n");
    h
}

/// An events table, newest first as given.
fn events_section<'a>(h: &mut String, title: &str, events: impl Iterator<Item = &'a Event>) {
    let _ = write!(h, "<h2>{title}</h2><table><tr><th>time</th><th>job</th><th>task</th><th>event</th><th>machine</th><th>detail</th></tr>");
    for e in events {
        let machine =
            e.machine.as_ref().map_or(String::new(), |m| format!("<a href='/machine/{0}'>{0}</a>", esc(&m.0)));
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{machine}</td><td>{}</td></tr>",
            clock(e.time_ms),
            esc(&e.job),
            e.index.map_or(String::new(), |i| i.to_string()),
            e.kind.as_str(),
            esc(&e.detail)
        );
    }
    h.push_str("</table>");
}

/// A tasks table: index, state, ready, ports, machine (linked), pid, exit, restarts, reason,
/// since.
fn tasks_section<'a>(h: &mut String, tasks: impl Iterator<Item = &'a Task>) {
    h.push_str("<table><tr><th>task</th><th>state</th><th>ready</th><th>ports</th><th>machine</th><th class=num>pid</th><th class=num>exit</th><th class=num>restarts</th><th>reason</th><th>since</th></tr>");
    for t in tasks {
        let cls = if t.state == TaskState::Dead { " class=dead" } else { "" };
        let machine = t.machine.as_ref().map_or("-".into(), |m| format!("<a href='/machine/{0}'>{0}</a>", esc(&m.0)));
        let _ = write!(
            h,
            "<tr{cls}><td><a href='/job/{job}'>{job}</a>/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{machine}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td>{}</td><td>{}</td></tr>",
            t.index,
            t.state.name(),
            if t.ready { "yes" } else { "-" },
            esc(&t.ports.iter().map(|(n, p)| format!("{n}={p}")).collect::<Vec<_>>().join(" ")),
            t.pid.map_or("-".into(), |p| p.to_string()),
            t.exit_code.map_or("-".into(), |c| c.to_string()),
            t.restarts,
            esc(&t.reason),
            clock(t.state_since_ms),
            job = esc(&t.job),
        );
    }
    h.push_str("</table>");
}

/// Renders `/job/NAME`; None when there is no such job.
pub fn render_job(master: &Master, name: &str, insecure: bool) -> Option<String> {
    let state = master.state();
    let j = state.jobs.get(name)?;
    let soft = master.soft();
    let mut h = page_head(&state, &format!("Job {name}"), insecure);
    let spec = &j.spec;
    let _ = write!(
        h,
        "<table><tr><th>user</th><td>{}</td></tr><tr><th>priority</th><td>{} ({})</td></tr><tr><th>kind</th><td>{}</td></tr>\
         <tr><th>state</th><td>{}</td></tr><tr><th>version</th><td>{}</td></tr><tr><th>tasks</th><td>{}</td></tr>\
         <tr><th>request per task</th><td>{}</td></tr><tr><th>command</th><td><code>{}</code></td></tr></table>",
        esc(&spec.user),
        spec.priority,
        spec.band().name(),
        spec.kind.name(),
        j.state_name(),
        j.version,
        j.tasks.len(),
        esc(&spec.resources.to_string()),
        esc(&spec.command.join(" ")),
    );
    if let Some(why) = soft.why_pending.get(name) {
        let _ = write!(h, "<p><b>Why pending:</b> {}</p>", esc(&why.to_string()));
    }
    h.push_str("<h2>Tasks</h2>");
    tasks_section(&mut h, j.tasks.iter());
    events_section(&mut h, "Events", state.events.iter().rev().filter(|e| e.job == name).take(EVENTS_SHOWN));
    h.push_str("</body></html>\n");
    Some(h)
}

/// Renders `/machine/ID`; None when no such machine is registered.
pub fn render_machine(master: &Master, id: &str, insecure: bool) -> Option<String> {
    let state = master.state();
    let m = state.machines.get(&MachineId(id.to_string()))?;
    let soft = master.soft();
    let mut h = page_head(&state, &format!("Machine {id}"), insecure);
    let alloc = state.allocated_on(&m.id);
    let used = soft.machine_usage.get(&m.id).copied().unwrap_or_default();
    let free = m.capacity.saturating_sub(alloc);
    let attrs: Vec<String> = m.attributes.iter().map(|(k, v)| format!("{}={}", esc(k), esc(v))).collect();
    let _ = write!(
        h,
        "<table><tr><th>state</th><td>{}</td></tr><tr><th>address</th><td>{}</td></tr><tr><th>capacity</th><td>{}</td></tr>\
         <tr><th>allocated</th><td>{}</td></tr><tr><th>free</th><td>{}</td></tr><tr><th>used</th><td>{}</td></tr>\
         <tr><th>attributes</th><td>{}</td></tr></table><h2>Tasks</h2>",
        state.machine_state_name(&m.id),
        esc(&m.address),
        esc(&m.capacity.to_string()),
        esc(&alloc.to_string()),
        esc(&free.to_string()),
        esc(&used.to_string()),
        attrs.join(" "),
    );
    tasks_section(&mut h, state.tasks_on(&m.id));
    events_section(
        &mut h,
        "Events",
        state.events.iter().rev().filter(|e| e.machine.as_ref() == Some(&m.id)).take(EVENTS_SHOWN),
    );
    h.push_str("</body></html>\n");
    Some(h)
}

/// The quota table: limit / used / free per user and band (the same rows as `borgctl quota
/// get`, from [`CellState::quota_rows`]), with the cell's default for users without a grant.
fn quota_section(h: &mut String, state: &CellState) {
    h.push_str("<h2>Quotas</h2>");
    let default = match state.default_quota {
        None => "unlimited".to_string(),
        Some(q) => format!("{q}"),
    };
    let _ = write!(
        h,
        "<p class=muted>Users without a grant at a band get the cell default: {}. The free band needs no quota.</p>",
        esc(&default)
    );
    let rows = state.quota_rows(None);
    if rows.is_empty() {
        h.push_str("<p class=muted>No user has a grant or a job yet.</p>");
        return;
    }
    h.push_str("<table><tr><th>user</th><th>band</th><th class=num>CPU limit</th><th class=num>CPU used</th><th class=num>CPU free</th><th class=num>RAM limit</th><th class=num>RAM used</th><th class=num>RAM free</th><th class=num>disk limit</th><th class=num>disk used</th></tr>");
    for q in rows {
        let lim = |f: fn(&Resources) -> String| q.limit.as_ref().map_or("unlimited".to_string(), f);
        let free = |f: fn(&Resources) -> String| {
            q.limit.map_or("unlimited".to_string(), |l| f(&crate::state::quota_headroom(l, q.used)))
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            esc(&q.user),
            q.band.name(),
            lim(|r| cores(r.cpu_millis)),
            cores(q.used.cpu_millis),
            free(|r| cores(r.cpu_millis)),
            lim(|r| format_bytes(r.ram_bytes)),
            format_bytes(q.used.ram_bytes),
            free(|r| format_bytes(r.ram_bytes)),
            lim(|r| format_bytes(r.disk_bytes)),
            format_bytes(q.used.disk_bytes),
        );
    }
    h.push_str("</table>");
}
