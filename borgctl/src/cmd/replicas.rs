//! `replicas [list|add|remove|snapshot]`: the master group's members.

use super::Cx;
use crate::cli::ReplicasCmd;
use crate::conn::{connect, connect_waiting, status};
use crate::output::print_json;
use borg_proto as pb;
use borg_rpc::client::ADD_REPLICA_CALL;
use borgctl::render;
use std::process::ExitCode;

pub async fn replicas(cx: &Cx, action: Option<ReplicasCmd>) -> anyhow::Result<ExitCode> {
    // an add may take minutes on a large cell (a fresh snapshot, sent and installed, then the
    // catch-up): wait as long as the master's own deadlines allow
    let mut c = match action {
        Some(ReplicasCmd::Add { .. }) => connect_waiting(&cx.master, ADD_REPLICA_CALL).await?,
        _ => connect(&cx.master).await?,
    };
    let voters = match action.unwrap_or(ReplicasCmd::List) {
        ReplicasCmd::List => {
            let rs = c.list_replicas(pb::ListReplicasRequest {}).await.map_err(status)?.into_inner().replicas;
            if cx.json {
                print_json(&rs.iter().map(render::replica_json).collect())?;
            } else {
                outln!("{}", render::replicas_table(&rs))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        ReplicasCmd::Add { id, address } => {
            let mut req = tonic::Request::new(pb::AddReplicaRequest { id, address });
            // (sent as grpc-timeout: a replica that forwards the add to the leader waits as long)
            req.set_timeout(ADD_REPLICA_CALL);
            c.add_replica(req).await.map_err(status)?.into_inner().voters
        }
        ReplicasCmd::Remove { id } => {
            c.remove_replica(pb::RemoveReplicaRequest { id }).await.map_err(status)?.into_inner().voters
        }
        ReplicasCmd::Snapshot => {
            let r = c.take_snapshot(pb::TakeSnapshotRequest {}).await.map_err(status)?.into_inner();
            if cx.json {
                print_json(&serde_json::json!({ "replica": r.replica, "index": r.index }))?;
            } else {
                outln!("replica {} stored a snapshot up to log index {}", r.replica, r.index)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if cx.json {
        print_json(&serde_json::json!({ "voters": voters }))?;
    } else {
        outln!("voters: {}", voters.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))?;
    }
    Ok(ExitCode::SUCCESS)
}
