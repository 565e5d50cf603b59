//! Cell commands: machines, top, cell usage, allocs.

use super::Cx;
use crate::cli::{MachinesCmd, TopWhat};
use crate::conn::{connect, status};
use crate::output::print_json;
use borg_proto as pb;
use borgctl::render;
use std::process::ExitCode;
use std::time::Duration;

pub async fn machines(cx: &Cx) -> anyhow::Result<ExitCode> {
    let ms = connect(&cx.master)
        .await?
        .list_machines(pb::ListMachinesRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .machines;
    if cx.json {
        print_json(&ms.iter().map(render::machine_json).collect())?;
    } else {
        outln!("{}", render::machines_table(&ms))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `machines cordon|uncordon|drain|remove`: prints the machines after the change (drain
/// `--wait`: then waits until each is drained, printing each step's events).
pub async fn maintain(cx: &Cx, a: MachinesCmd) -> anyhow::Result<ExitCode> {
    let mut c = connect(&cx.master).await?;
    let (machines, action, deadline, wait) = match a {
        MachinesCmd::Remove { machines, force } => {
            c.remove_machines(pb::RemoveMachinesRequest { machines: machines.clone(), force }).await.map_err(status)?;
            if !cx.json {
                outln!("removed {}", machines.join(", "))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        MachinesCmd::Cordon { machines } => (machines, "cordon", 0, None),
        MachinesCmd::Uncordon { machines } => (machines, "uncordon", 0, None),
        MachinesCmd::Drain { machines, deadline, wait, timeout } => {
            let secs = match deadline {
                Some(d) => borg_jobspec::quantity::parse_duration_ms(&borg_jobspec::quantity::Scalar::Str(d.clone()))
                    .map_err(|e| anyhow::anyhow!("--deadline {d:?}: {e}"))?
                    .div_ceil(1000),
                None => 0,
            };
            (machines, "drain", secs, wait.then_some(timeout))
        }
    };
    let req =
        pb::SetMaintenanceRequest { machines: machines.clone(), action: action.into(), deadline_seconds: deadline };
    let ms = c.set_maintenance(req).await.map_err(status)?.into_inner().machines;
    if let Some(timeout) = wait {
        let started = std::time::Instant::now();
        loop {
            let all = c.list_machines(pb::ListMachinesRequest {}).await.map_err(status)?.into_inner().machines;
            let mine: Vec<&pb::Machine> = all.iter().filter(|m| machines.contains(&m.id)).collect();
            if mine.iter().all(|m| render::machine_state(m) == "drained") {
                let ms: Vec<pb::Machine> = mine.into_iter().cloned().collect();
                print_machines(cx, &ms)?;
                if !cx.json {
                    outln!("drained in {:.1} s", started.elapsed().as_secs_f64())?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            if started.elapsed() > Duration::from_secs(timeout) {
                let left: u32 = mine.iter().map(|m| m.tasks).sum();
                eprintln!("borgctl: not drained after {timeout} s: {left} tasks left (their jobs' disruption budgets hold them; --deadline evicts regardless)");
                return Ok(ExitCode::from(2));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    print_machines(cx, &ms)?;
    Ok(ExitCode::SUCCESS)
}

fn print_machines(cx: &Cx, ms: &[pb::Machine]) -> anyhow::Result<()> {
    if cx.json {
        print_json(&ms.iter().map(render::machine_json).collect())?;
    } else {
        outln!("{}", render::machines_table(ms))?;
    }
    Ok(())
}

/// `queue [--band B]`: pending jobs in scheduling order.
pub async fn queue(cx: &Cx, band: Option<String>) -> anyhow::Result<ExitCode> {
    let req = pb::ListQueueRequest { band: band.unwrap_or_default() };
    let entries = connect(&cx.master).await?.list_queue(req).await.map_err(status)?.into_inner().entries;
    if cx.json {
        print_json(&entries.iter().enumerate().map(render::queue_json).collect())?;
    } else {
        outln!("{}", render::queue_table(&entries))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn top(cx: &Cx, what: TopWhat) -> anyhow::Result<ExitCode> {
    let mut c = connect(&cx.master).await?;
    let (json_rows, table) = match what {
        TopWhat::Machines => {
            let ms = c.list_machines(pb::ListMachinesRequest {}).await.map_err(status)?.into_inner().machines;
            (ms.iter().map(render::machine_json).collect(), render::top_machines(&ms))
        }
        TopWhat::Jobs => {
            let jobs = c.list_jobs(pb::ListJobsRequest {}).await.map_err(status)?.into_inner().jobs;
            (jobs.iter().map(render::job_json).collect(), render::top_jobs(&jobs))
        }
        TopWhat::Users => {
            let jobs = c.list_jobs(pb::ListJobsRequest {}).await.map_err(status)?.into_inner().jobs;
            let users = render::users(&jobs);
            (users.iter().map(render::user_json).collect(), render::top_users(&users))
        }
    };
    if cx.json {
        print_json(&json_rows)?;
    } else {
        outln!("{table}")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn usage(cx: &Cx) -> anyhow::Result<ExitCode> {
    let u = connect(&cx.master).await?.get_cell_usage(pb::CellUsageRequest {}).await.map_err(status)?.into_inner();
    if cx.json {
        print_json(&render::cell_usage_json(&u))?;
    } else {
        out!("{}", render::cell_usage_text(&u))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn allocs(cx: &Cx) -> anyhow::Result<ExitCode> {
    let mut c = connect(&cx.master).await?;
    let jobs = c.list_jobs(pb::ListJobsRequest {}).await.map_err(status)?.into_inner().jobs;
    let mut rows = Vec::new();
    for j in &jobs {
        let s = j.spec.clone().unwrap_or_default();
        if s.kind != pb::JobKind::AllocSet as i32 {
            continue;
        }
        let allocs =
            c.list_tasks(pb::ListTasksRequest { job: s.name.clone() }).await.map_err(status)?.into_inner().tasks;
        // tasks of the jobs that run in this alloc set
        let mut inside: Vec<(u32, String)> = Vec::new();
        for user in jobs.iter().filter(|u| u.spec.as_ref().is_some_and(|x| x.alloc_set == s.name)) {
            let name = user.spec.clone().unwrap_or_default().name;
            for t in c.list_tasks(pb::ListTasksRequest { job: name.clone() }).await.map_err(status)?.into_inner().tasks
            {
                if let Some(a) = t.alloc {
                    inside.push((a, format!("{name}/{}", t.index)));
                }
            }
        }
        for a in allocs {
            let tasks: Vec<String> = inside.iter().filter(|(i, _)| *i == a.index).map(|(_, n)| n.clone()).collect();
            rows.push(serde_json::json!({
                "alloc_set": s.name, "index": a.index, "state": render::task_state(a.state),
                "machine": a.machine, "reserved": s.resources.map(|r| serde_json::json!({"cpu_millis": r.cpu_millis, "ram_bytes": r.ram_bytes, "disk_bytes": r.disk_bytes})),
                "tasks": tasks,
            }));
        }
    }
    if cx.json {
        print_json(&serde_json::Value::Array(rows))?;
    } else {
        outln!("{}", render::allocs_table(&rows))?;
    }
    Ok(ExitCode::SUCCESS)
}
