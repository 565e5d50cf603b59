//! `quota set` and `quota get`.

use super::Cx;
use crate::conn::{connect, status};
use crate::output::print_json;
use anyhow::anyhow;
use borg_proto as pb;
use borgctl::render;
use std::process::ExitCode;

pub async fn set(cx: &Cx, user: String, band: String, resources: Vec<String>) -> anyhow::Result<ExitCode> {
    let (given, named) =
        borg_jobspec::quantity::parse_resources_named(&resources.join(",")).map_err(|e| anyhow!("{e}"))?;
    let mut c = connect(&cx.master).await?;
    let req = pb::SetQuotaRequest {
        user: user.clone(),
        band: band.clone(),
        limit: Some(borg_jobspec::convert::resources_to_pb(given)),
        dimensions: named.iter().map(|d| d.to_string()).collect(),
    };
    let now = c.set_quota(req).await.map_err(status)?.into_inner().limit;
    let limit = borg_jobspec::convert::resources_from_pb(now.as_ref());
    if cx.json {
        print_json(
            &serde_json::json!({"user": user, "band": band, "limit": {"cpu_millis": limit.cpu_millis, "ram_bytes": limit.ram_bytes, "disk_bytes": limit.disk_bytes}}),
        )?;
    } else {
        outln!("quota of {user} at {band}: {limit}")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn get(cx: &Cx, user: Option<String>) -> anyhow::Result<ExitCode> {
    let rows = connect(&cx.master)
        .await?
        .get_quota(pb::GetQuotaRequest { user: user.unwrap_or_default() })
        .await
        .map_err(status)?
        .into_inner()
        .rows;
    if cx.json {
        print_json(&rows.iter().map(render::quota_json).collect())?;
    } else {
        outln!("{}", render::quota_table(&rows))?;
    }
    Ok(ExitCode::SUCCESS)
}
