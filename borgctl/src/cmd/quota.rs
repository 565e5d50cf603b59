//! `quota set` and `quota get`.

use super::Cx;
use crate::conn::{connect, status};
use crate::output::print_json;
use anyhow::anyhow;
use borg_proto as pb;
use borgctl::render;
use std::process::ExitCode;

pub async fn set(cx: &Cx, user: String, band: String, resources: Vec<String>) -> anyhow::Result<ExitCode> {
    // weight=N is the fair-share weight, the rest the limit's dimensions
    let (weights, dims): (Vec<&String>, Vec<&String>) = resources.iter().partition(|r| r.starts_with("weight="));
    let weight = match weights.last() {
        Some(w) => Some(
            w["weight=".len()..]
                .parse::<u32>()
                .ok()
                .filter(|w| *w >= 1)
                .ok_or_else(|| anyhow!("{w:?}: the weight is a whole number, at least 1"))?,
        ),
        None => None,
    };
    let dims: Vec<&str> = dims.iter().map(|d| d.as_str()).collect();
    let limit = if dims.is_empty() && weight.is_some() {
        None
    } else {
        let (given, named) =
            borg_jobspec::quantity::parse_resources_named(&dims.join(",")).map_err(|e| anyhow!("{e}"))?;
        Some((given, named))
    };
    let mut c = connect(&cx.master).await?;
    let req = pb::SetQuotaRequest {
        user: user.clone(),
        band: band.clone(),
        limit: limit.as_ref().map(|(g, _)| borg_jobspec::convert::resources_to_pb(*g)),
        dimensions: limit.as_ref().map(|(_, n)| n.iter().map(|d| d.to_string()).collect()).unwrap_or_default(),
        weight,
    };
    let now = c.set_quota(req).await.map_err(status)?.into_inner().limit;
    let limit = borg_jobspec::convert::resources_from_pb(now.as_ref());
    if cx.json {
        print_json(
            &serde_json::json!({"user": user, "band": band, "limit": {"cpu_millis": limit.cpu_millis, "ram_bytes": limit.ram_bytes, "disk_bytes": limit.disk_bytes}}),
        )?;
    } else {
        outln!("quota of {user} at {band}: {limit}")?;
        if let Some(w) = weight {
            outln!("fair-share weight of {user} at {band}: {w}")?;
        }
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
