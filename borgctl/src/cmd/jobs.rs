//! Job commands: apply, jobs, job, tasks, kill, delete, logs, events, why-pending, wait.

use super::Cx;
use crate::cli::Until;
use crate::conn::{connect, status};
use crate::output::print_json;
use anyhow::Context;
use borg_proto as pb;
use borg_proto::borgmaster_client::BorgmasterClient;
use borgctl::render;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub async fn apply(cx: &Cx, file: PathBuf, dry_run: bool, expected_version: Option<u64>) -> anyhow::Result<ExitCode> {
    let (label, text) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
            .context("reading the spec from stdin")?;
        ("<stdin>".to_string(), text)
    } else {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        (file.display().to_string(), text)
    };
    let spec = match borg_jobspec::parse_job_spec(&label, &text) {
        Ok(s) => s,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("borgctl: {} problem(s) in {label}; nothing was submitted", errors.0.len());
            return Ok(ExitCode::from(1));
        }
    };
    let mut c = connect(&cx.master).await?;
    // for a dry run, the spec fields that would change (from the job's current spec)
    let diff = if dry_run { spec_diff(&mut c, &spec).await } else { serde_json::Value::Null };
    let req = pb::ApplyJobRequest { spec: Some((&spec).into()), dry_run, expected_version };
    let r = match c.apply_job(req).await {
        Ok(r) => r.into_inner(),
        // what the master refuses about one field of the spec (`after: job "x" does not
        // exist`) is located in the file like a local problem
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            let field = s.message().split_once(": ").map(|(f, _)| f).unwrap_or("");
            match borg_jobspec::field_position(&text, field) {
                Some((line, column)) => {
                    eprintln!("{label}:{line}:{column}: {}", s.message());
                    eprintln!("borgctl: the master refused {label}; nothing was submitted");
                    return Ok(ExitCode::from(1));
                }
                None => return Err(status(s)),
            }
        }
        Err(s) => return Err(status(s)),
    };
    if cx.json {
        let res = |x: Option<pb::Resources>| {
            x.map(|r| serde_json::json!({"cpu_millis": r.cpu_millis, "ram_bytes": r.ram_bytes, "disk_bytes": r.disk_bytes}))
        };
        print_json(&serde_json::json!({
            "job": r.job, "action": r.action, "version": r.version, "dry_run": dry_run,
            "placeable": r.placeable, "unplaceable": r.unplaceable, "why_pending": r.why_pending,
            "why_pending_reasons": r.why_pending_reasons.iter().collect::<std::collections::BTreeMap<_, _>>(),
            "created": r.created, "restarted": r.restarted, "removed": r.removed, "in_place": r.in_place,
            "evicted": r.evicted, "quota_used_after": res(r.quota_used_after), "quota_limit": res(r.quota_limit),
            "diff": diff,
        }))?;
    } else if dry_run {
        out!("{}", render::plan_text(&r))?;
        if let Some(d) = diff.as_object().filter(|d| !d.is_empty()) {
            outln!("  spec changes:")?;
            for line in render::spec_changes(d) {
                outln!("    {line}")?;
            }
        }
    } else {
        outln!("job {} {} (version {})", r.job, r.action, r.version)?;
    }
    if dry_run && r.unplaceable > 0 {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn jobs(cx: &Cx) -> anyhow::Result<ExitCode> {
    let jobs = connect(&cx.master).await?.list_jobs(pb::ListJobsRequest {}).await.map_err(status)?.into_inner().jobs;
    if cx.json {
        print_json(&jobs.iter().map(render::job_json).collect())?;
    } else {
        outln!("{}", render::jobs_table(&jobs))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn job(cx: &Cx, name: String, linearizable: bool) -> anyhow::Result<ExitCode> {
    let mut req = tonic::Request::new(pb::GetJobRequest { name });
    if linearizable {
        req.metadata_mut().insert(
            borg_rpc::client::CONSISTENCY_HEADER,
            tonic::metadata::MetadataValue::from_static(borg_rpc::client::LINEARIZABLE),
        );
    }
    let r = connect(&cx.master).await?.get_job(req).await.map_err(status)?.into_inner();
    let job = r.job.unwrap_or_default();
    if cx.json {
        let mut v = render::job_json(&job);
        v["events"] = r.events.iter().map(render::event_json).collect();
        print_json(&v)?;
    } else {
        out!("{}", render::job_detail(&job, &r.events))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn tasks(cx: &Cx, name: String) -> anyhow::Result<ExitCode> {
    let tasks = connect(&cx.master)
        .await?
        .list_tasks(pb::ListTasksRequest { job: name })
        .await
        .map_err(status)?
        .into_inner()
        .tasks;
    if cx.json {
        print_json(&tasks.iter().map(render::task_json).collect())?;
    } else {
        outln!("{}", render::tasks_table(&tasks))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn kill(cx: &Cx, name: String) -> anyhow::Result<ExitCode> {
    let r = connect(&cx.master)
        .await?
        .kill_job(pb::KillJobRequest { name: name.clone() })
        .await
        .map_err(status)?
        .into_inner();
    if cx.json {
        print_json(&serde_json::json!({"job": name, "killed": r.killed, "already_finished": r.already_finished}))?;
    } else if r.already_finished {
        outln!("job {name} had already finished: nothing to kill (`borgctl delete {name}` removes it)")?;
    } else {
        outln!("job {name} killed ({} tasks stopped)", r.killed)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn delete(cx: &Cx, names: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut c = connect(&cx.master).await?;
    for name in &names {
        c.delete_job(pb::DeleteJobRequest { name: name.clone() }).await.map_err(status)?;
        if cx.json {
            print_json(&serde_json::json!({"job": name, "deleted": true}))?;
        } else {
            outln!("job {name} deleted")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn events(cx: &Cx, job: Option<String>, limit: u32) -> anyhow::Result<ExitCode> {
    let events = connect(&cx.master)
        .await?
        .list_events(pb::ListEventsRequest { job: job.unwrap_or_default(), limit })
        .await
        .map_err(status)?
        .into_inner()
        .events;
    if cx.json {
        print_json(&events.iter().map(render::event_json).collect())?;
    } else {
        outln!("{}", render::events_table(&events))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn why_pending(cx: &Cx, name: String) -> anyhow::Result<ExitCode> {
    let job = connect(&cx.master)
        .await?
        .get_job(pb::GetJobRequest { name: name.clone() })
        .await
        .map_err(status)?
        .into_inner()
        .job
        .unwrap_or_default();
    if cx.json {
        let reasons: std::collections::BTreeMap<&String, &u32> = job.why_pending_reasons.iter().collect();
        print_json(&serde_json::json!({
            "job": name, "pending": job.pending, "why_pending": job.why_pending,
            "machines": job.why_pending_machines, "reasons": reasons,
        }))?;
    } else if job.pending == 0 {
        outln!("job {name}: no pending tasks")?;
    } else if job.why_pending.is_empty() {
        outln!(
            "job {name}: {} pending tasks, placed on machines and starting, or not yet tried by the scheduler",
            job.pending
        )?;
    } else {
        outln!("job {name}: {} pending tasks: {}", job.pending, job.why_pending)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn wait(cx: &Cx, name: String, until: Until, timeout: u64) -> anyhow::Result<ExitCode> {
    let mut c = connect(&cx.master).await?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let tasks = c.list_tasks(pb::ListTasksRequest { job: name.clone() }).await.map_err(status)?.into_inner().tasks;
        let want = match until {
            Until::Running => pb::TaskState::Running,
            Until::Done => pb::TaskState::Dead,
        } as i32;
        if tasks.iter().all(|t| t.state == want) {
            if cx.json {
                print_json(&tasks.iter().map(render::task_json).collect())?;
            } else {
                outln!("{}", render::tasks_table(&tasks))?;
            }
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("borgctl: timed out after {timeout}s waiting for job {name}");
            outln!("{}", render::tasks_table(&tasks))?;
            return Ok(ExitCode::from(2));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// `borgctl resolve NAME [--watch]`: the endpoints of a job's placed tasks.
///
/// Errors: an unreachable master; NOT_FOUND for a name that denotes no job or task.
pub async fn resolve(cx: &Cx, name: String, watch: bool) -> anyhow::Result<ExitCode> {
    let print = |r: &pb::ResolveResponse| -> anyhow::Result<()> {
        if cx.json {
            let v = serde_json::json!({
                "applied_index": r.applied_index,
                "endpoints": r.endpoints.iter().map(render::endpoint_json).collect::<Vec<_>>(),
            });
            if watch {
                outln!("{v}")?; // one object per line
            } else {
                print_json(&v)?;
            }
        } else {
            outln!("{}", render::endpoints_table(&r.endpoints))?;
        }
        Ok(())
    };
    if !watch {
        let r = connect(&cx.master).await?.resolve(pb::ResolveRequest { name }).await.map_err(status)?.into_inner();
        print(&r)?;
        return Ok(ExitCode::SUCCESS);
    }
    super::watch::resolve(cx, name, print).await
}

/// Spec fields that differ between the job's current spec and `new`, as
/// `{field: {"from": old, "to": new}}`; empty when the job does not exist yet.
async fn spec_diff(c: &mut BorgmasterClient<Channel>, new: &borg_jobspec::JobSpec) -> serde_json::Value {
    let Ok(r) = c.get_job(pb::GetJobRequest { name: new.name.clone() }).await else { return serde_json::json!({}) };
    let Some(old) = r.into_inner().job.and_then(|j| j.spec).and_then(|s| borg_jobspec::JobSpec::try_from(&s).ok())
    else {
        return serde_json::json!({});
    };
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(&old), serde_json::to_value(new))
    else {
        return serde_json::json!({});
    };
    let mut out = serde_json::Map::new();
    for (k, v) in &b {
        if a.get(k) != Some(v) {
            out.insert(k.clone(), serde_json::json!({"from": a.get(k), "to": v}));
        }
    }
    serde_json::Value::Object(out)
}

/// `cron list|suspend|resume`.
pub async fn cron(cx: &Cx, action: crate::cli::CronCmd) -> anyhow::Result<ExitCode> {
    use crate::cli::CronCmd;
    let mut c = connect(&cx.master).await?;
    let (name, suspended) = match action {
        CronCmd::List => {
            let crons = c.list_crons(pb::ListCronsRequest {}).await.map_err(status)?.into_inner().crons;
            if cx.json {
                print_json(&crons.iter().map(render::cron_json).collect())?;
            } else {
                outln!("{}", render::crons_table(&crons))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        CronCmd::Suspend { name } => (name, true),
        CronCmd::Resume { name } => (name, false),
    };
    c.set_cron_suspended(pb::SetCronSuspendedRequest { name: name.clone(), suspended }).await.map_err(status)?;
    if !cx.json {
        outln!("cron job {name} {}", if suspended { "suspended" } else { "resumed" })?;
    }
    Ok(ExitCode::SUCCESS)
}
