//! The status page (Borg's Sigma, §2.6): server-rendered HTML with the cell summary, machines,
//! jobs with their tasks, and recent events. No JavaScript; it refreshes itself every 5 s.

use crate::master::Master;
use crate::state::{MachineState, TaskState};
use crate::usage::cell_usage;
use scheduler_core::{format_bytes, format_cores as cores, format_share as pct, Band, Resources};
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

/// Renders the whole page. `insecure` adds a warning banner (auth off).
pub fn render(master: &Master, insecure: bool) -> String {
    let state = master.state();
    let soft = master.soft();
    let u = cell_usage(&state, &soft);
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
         <title>borg cell {cell}</title><style>{STYLE}</style></head><body>\
         <h1>Cell {cell}</h1><div class=muted>Borgmaster status; refreshes every 5 s; log index {idx}</div>",
        cell = esc(&state.cell),
        idx = state.applied_index
    );
    if insecure {
        h.push_str(
            "<p class=banner>Authentication and TLS are off: anyone who can reach this cell's API can change it.</p>",
        );
    }
    // Summary
    h.push_str("<h2>Cell</h2><table><tr><th>resource</th><th class=num>capacity</th><th class=num>allocated</th><th class=num>used</th><th class=num>free</th><th class=num>stranded</th></tr>");
    let row = |h: &mut String, name: &str, f: &dyn Fn(Resources) -> String, g: &dyn Fn(Resources) -> u64| {
        let _ = write!(
            h,
            "<tr><td>{name}</td><td class=num>{}</td><td class=num>{} ({})</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            f(u.capacity),
            f(u.allocated),
            pct(g(u.allocated), g(u.capacity)),
            f(u.used),
            f(u.free),
            f(u.stranded)
        );
    };
    row(&mut h, "CPU (cores)", &|r| cores(r.cpu_millis), &|r| r.cpu_millis);
    row(&mut h, "RAM", &|r| format_bytes(r.ram_bytes), &|r| r.ram_bytes);
    row(&mut h, "disk", &|r| format_bytes(r.disk_bytes), &|r| r.disk_bytes);
    let _ = write!(h, "</table><p>{} machines up, {} down.</p>", u.machines_up, u.machines_down);
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
        let (cls, st) = if m.state == MachineState::Up { ("up", "up") } else { ("down", "down") };
        let attrs: Vec<String> = m.attributes.iter().map(|(k, v)| format!("{}={}", esc(k), esc(v))).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class={cls}>{st}</td><td>{}</td><td class=num>{}</td><td class=num>{} / {}</td><td class=num>{} / {}</td><td class=num>{}</td><td class=num>{}</td><td class=muted>{}</td></tr>",
            esc(&m.id.0),
            esc(&m.address),
            state.task_count_on(&m.id),
            cores(alloc.cpu_millis),
            cores(m.capacity.cpu_millis),
            format_bytes(alloc.ram_bytes),
            format_bytes(m.capacity.ram_bytes),
            cores(used.cpu_millis),
            format_bytes(used.ram_bytes),
            attrs.join(" ")
        );
    }
    h.push_str("</table>");
    // Jobs and tasks
    h.push_str("<h2>Jobs</h2><table><tr><th>job</th><th>user</th><th>priority</th><th>kind</th><th>state</th><th class=num>tasks</th><th class=num>running</th><th class=num>pending</th><th class=num>dead</th><th>why pending</th></tr>");
    for j in state.jobs.values() {
        let n = |s: TaskState| j.tasks.iter().filter(|t| t.state == s).count();
        let why = soft.why_pending.get(&j.spec.name).cloned().unwrap_or_default();
        let _ = write!(
            h,
            "<tr><td><a href='#job-{name}'>{name}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td class=muted>{}</td></tr>",
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
    h.push_str("</table><h2>Tasks</h2>");
    for j in state.jobs.values() {
        let _ = write!(h, "<h3 id='job-{0}'>{0}</h3><table><tr><th>task</th><th>state</th><th>machine</th><th class=num>pid</th><th class=num>exit</th><th class=num>restarts</th><th>reason</th><th>since</th></tr>", esc(&j.spec.name));
        for t in &j.tasks {
            let cls = if t.state == TaskState::Dead { " class=dead" } else { "" };
            let _ = write!(
                h,
                "<tr{cls}><td>{}/{}</td><td>{}</td><td>{}</td><td class=num>{}</td><td class=num>{}</td><td class=num>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.job),
                t.index,
                t.state.name(),
                t.machine.as_ref().map_or("-".into(), |m| esc(&m.0)),
                t.pid.map_or("-".into(), |p| p.to_string()),
                t.exit_code.map_or("-".into(), |c| c.to_string()),
                t.restarts,
                esc(&t.reason),
                clock(t.state_since_ms)
            );
        }
        h.push_str("</table>");
    }
    // Events
    h.push_str("<h2>Recent events</h2><table><tr><th>time</th><th>job</th><th>task</th><th>event</th><th>machine</th><th>detail</th></tr>");
    for e in state.events.iter().rev().take(EVENTS_SHOWN) {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            clock(e.time_ms),
            esc(&e.job),
            e.index.map_or(String::new(), |i| i.to_string()),
            esc(&e.kind),
            e.machine.as_ref().map_or(String::new(), |m| esc(&m.0)),
            esc(&e.detail)
        );
    }
    h.push_str("</table></body></html>\n");
    h
}

/// The quota table: limit / used / free per user and band (the same rows as `borgctl quota
/// get`, from [`CellState::quota_rows`]), with the cell's default for users without a grant.
fn quota_section(h: &mut String, state: &crate::state::CellState) {
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
        let free =
            |f: fn(&Resources) -> String| q.limit.map_or("unlimited".to_string(), |l| f(&l.saturating_sub(q.used)));
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
