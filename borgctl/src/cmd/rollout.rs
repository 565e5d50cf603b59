//! `rollout status|history|undo`: a job's rolling update and its versions.

use super::Cx;
use crate::cli::RolloutCmd;
use crate::conn::{connect, status};
use crate::output::print_json;
use anyhow::anyhow;
use borg_proto as pb;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Where a rollout stands.
#[derive(PartialEq)]
enum Standing {
    Complete,
    Paused,
    InProgress,
}

fn standing(j: &pb::Job) -> Standing {
    let live = j.pending + j.running;
    if !j.paused.is_empty() {
        Standing::Paused
    } else if j.updated == live && j.ready == live {
        Standing::Complete
    } else {
        Standing::InProgress
    }
}

/// The spec fields that differ between two versions (`command`, `resources`, ...), in field order.
fn changed(a: &pb::JobSpec, b: &pb::JobSpec) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (
        borg_jobspec::JobSpec::try_from(a).map(|s| serde_json::to_value(s).unwrap_or_default()),
        borg_jobspec::JobSpec::try_from(b).map(|s| serde_json::to_value(s).unwrap_or_default()),
    ) else {
        return vec![];
    };
    b.keys().chain(a.keys().filter(|k| !b.contains_key(*k))).filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}

/// Runs a `rollout` subcommand.
///
/// Errors: an unreachable master, no such job, no such version to undo to.
pub async fn rollout(cx: &Cx, action: RolloutCmd) -> anyhow::Result<ExitCode> {
    let mut c = connect(&cx.master).await?;
    match action {
        RolloutCmd::Status { name, wait, timeout } => {
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                let r = c.get_job(pb::GetJobRequest { name: name.clone() }).await.map_err(status)?.into_inner();
                let j = r.job.unwrap_or_default();
                let st = standing(&j);
                let live = j.pending + j.running;
                let done = st != Standing::InProgress || !wait || Instant::now() >= deadline;
                if done {
                    let word = match st {
                        Standing::Complete => "complete",
                        Standing::Paused => "paused",
                        Standing::InProgress => "in progress",
                    };
                    if cx.json {
                        print_json(&serde_json::json!({
                            "job": name, "version": j.version, "state": word, "tasks": live,
                            "updated": j.updated, "ready": j.ready, "paused": j.paused,
                        }))?;
                    } else {
                        outln!(
                            "job {name} version {}: {word}: {}/{live} tasks updated, {} ready",
                            j.version,
                            j.updated,
                            j.ready
                        )?;
                        if !j.paused.is_empty() {
                            outln!("  paused: {} (`borgctl rollout undo {name}` goes back)", j.paused)?;
                        }
                    }
                    return Ok(match st {
                        Standing::Complete => ExitCode::SUCCESS,
                        Standing::Paused => ExitCode::from(2),
                        Standing::InProgress => ExitCode::from(3),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        RolloutCmd::History { name } => {
            let r = c.get_job(pb::GetJobRequest { name: name.clone() }).await.map_err(status)?.into_inner();
            let rows: Vec<serde_json::Value> = r
                .history
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let spec = h.spec.clone().unwrap_or_default();
                    let prev = i.checked_sub(1).and_then(|p| r.history[p].spec.clone());
                    let what = prev.map(|p| changed(&p, &spec)).unwrap_or_else(|| vec!["created".into()]);
                    serde_json::json!({"version": h.version, "applied_ms": h.applied_ms, "changed": what})
                })
                .collect();
            if cx.json {
                print_json(&serde_json::Value::Array(rows))?;
            } else {
                outln!("VERSION  CHANGED")?;
                for row in &rows {
                    let what: Vec<&str> =
                        row["changed"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
                    outln!("{:<8} {}", row["version"], what.join(", "))?;
                }
            }
        }
        RolloutCmd::Undo { name, to_version } => {
            let r = c.get_job(pb::GetJobRequest { name: name.clone() }).await.map_err(status)?.into_inner();
            let current = r.job.as_ref().map_or(0, |j| j.version);
            let target = match to_version {
                Some(v) => r.history.iter().find(|h| h.version == v),
                None => r.history.iter().rev().find(|h| h.version < current),
            };
            let kept: Vec<String> = r.history.iter().map(|h| h.version.to_string()).collect();
            let Some(target) = target else {
                return Err(anyhow!(
                    "job {name} has no version {} to go back to (kept: {})",
                    to_version.map_or("before the current one".to_string(), |v| v.to_string()),
                    kept.join(", ")
                ));
            };
            let req =
                pb::ApplyJobRequest { spec: target.spec.clone(), dry_run: false, expected_version: Some(current) };
            let a = c.apply_job(req).await.map_err(status)?.into_inner();
            if cx.json {
                print_json(&serde_json::json!({"job": name, "from_version": target.version, "version": a.version}))?;
            } else {
                outln!("job {name}: the spec of version {} applied again as version {}", target.version, a.version)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
