//! Registration: the Borglet (or a hollow Borglet's machines) registering with the Borgmaster,
//! and registering again when polls stop arriving (the master lost its state, or this Borglet's
//! address changed). Runs beside the task runtime and never blocks it: tasks keep running while
//! no master answers.

use crate::service::Borglet;
use borg_proto as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Registers hollow machines, 64 at a time, over one connection.
pub async fn register_hollow(
    master: &str,
    specs: &[crate::hollow::HollowSpec],
    address: &str,
    port_range: Option<(u16, u16)>,
) {
    let client = match connect_master(master, Duration::from_secs(30)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot register hollow machines; retrying");
            return;
        }
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut set = tokio::task::JoinSet::new();
    for s in specs {
        let req = pb::RegisterMachineRequest {
            id: s.id.clone(),
            address: address.to_string(),
            capacity: Some(borg_jobspec::convert::resources_to_pb(s.capacity)),
            attributes: s.attributes.clone().into_iter().collect(),
            port_range_first: port_range.map_or(0, |r| u32::from(r.0)),
            port_range_last: port_range.map_or(0, |r| u32::from(r.1)),
        };
        let (mut c, limit) = (client.clone(), limit.clone());
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            c.register_machine(req).await.map(|_| ()).map_err(|e| e.message().to_string())
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => ok += 1,
            _ => failed += 1,
        }
    }
    tracing::info!(registered = ok, failed, "hollow machines registered");
}

/// Registers with the master, retrying with backoff until it succeeds; then registers again
/// whenever no poll has arrived for 10 s (the master lost its state, or our address changed).
pub async fn register_loop(master: String, req: pb::RegisterMachineRequest, borglet: Arc<Borglet>) {
    let mut delay = Duration::from_millis(200);
    loop {
        let stale = borglet
            .last_poll
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if stale {
            match register_once(&master, req.clone()).await {
                Ok(r) => {
                    tracing::info!(%master, cell = %r.cell, poll_interval_ms = r.poll_interval_ms, "registered with the Borgmaster");
                    delay = Duration::from_millis(200);
                    *borglet.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(%master, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot register; tasks keep running");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn register_once(master: &str, req: pb::RegisterMachineRequest) -> Result<pb::RegisterMachineResponse, String> {
    let mut c = connect_master(master, Duration::from_secs(5)).await?;
    c.register_machine(req).await.map(tonic::Response::into_inner).map_err(|s| s.message().to_string())
}

/// A client of the first Borgmaster replica in `--master` (comma-separated) that answers; it
/// forwards registrations to the leader.
async fn connect_master(
    master: &str,
    timeout: Duration,
) -> Result<pb::borgmaster_client::BorgmasterClient<tonic::transport::Channel>, String> {
    let addrs = borg_rpc::client::master_addresses(master).map_err(|e| format!("--master: {e}"))?;
    let (_, ch) = borg_rpc::client::connect_any(&addrs, borg_rpc::auth::installed(), Duration::from_secs(3), timeout)
        .await
        .map_err(|e| e.to_string())?;
    Ok(pb::borgmaster_client::BorgmasterClient::new(ch))
}
