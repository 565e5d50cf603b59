//! Leader forwarding: a follower sends a write to the leader, once, and returns its answer; reads
//! are served from the replica's own copy of the state.

use super::caller::{Caller, FORWARDED_FOR};
use super::BorgmasterService;
use crate::master::Leadership;
use borg_proto::borgmaster_client::BorgmasterClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Metadata a follower puts on a write it forwards to the leader (its id); a replica that is not
/// the leader refuses such a request instead of forwarding it again.
pub(super) const FORWARDED_BY: &str = "borg-forwarded-by";

/// Metadata on an error a replica answers for a write it did not apply (it does not lead, or
/// no leader is known): the forwarding follower may send the write again. Any other failure
/// of a forwarded write (an error from the connection, or none at all) leaves its outcome
/// unknown, and the write is not sent again: a compare-and-set that took effect the first time
/// would be answered "version mismatch" the second (the fault suite found exactly that), and a
/// kill "already killed".
pub(super) const NOT_APPLIED: &str = "borg-not-applied";

/// `status` marked as an answer for a write this replica did not apply ([`NOT_APPLIED`]).
pub(super) fn not_applied(mut status: Status) -> Status {
    status.metadata_mut().insert(NOT_APPLIED, tonic::metadata::MetadataValue::from_static("1"));
    status
}

/// Whether a forwarded write that failed with `s` surely was not applied: the leader said so,
/// or the connection to it was refused (the request never left).
fn surely_not_applied(s: &Status) -> bool {
    s.metadata().get(NOT_APPLIED).is_some() || borg_rpc::client::connection_refused(s)
}

/// How long a follower keeps trying to forward a write while the leader is unknown or
/// unreachable (an election takes well under a second).
const FORWARD_PATIENCE: Duration = Duration::from_secs(5);

/// The deadline of a forwarded call, unless its caller set a longer one.
const FORWARD_CALL: Duration = Duration::from_secs(30);

/// The deadline the caller sent (gRPC's `grpc-timeout` header: digits and a unit, H M S m u n),
/// if any and well-formed.
fn caller_timeout(meta: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let v = meta.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl BorgmasterService {
    /// A client of the leader at `address` (one channel per address, reused).
    fn leader_client(&self, address: &str) -> Result<BorgmasterClient<Channel>, Status> {
        let mut map = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = map.get(address) {
            return Ok(BorgmasterClient::new(ch.clone()));
        }
        let ch = crate::raft::network::channel(address)
            .map_err(|e| Status::unavailable(format!("leader address {address:?}: {e}")))?;
        map.insert(address.to_string(), ch.clone());
        Ok(BorgmasterClient::new(ch))
    }

    /// Routes a write: [`Route::Local`] when this replica leads (serve it here), else forwards it
    /// to the leader, marked forwarded by this replica, and returns the leader's answer. While
    /// the leader is unknown or unreachable (an election is under way) it waits and tries again
    /// for up to [`FORWARD_PATIENCE`], serving it here if this replica is elected meanwhile. A
    /// write is sent again only when it surely was not applied ([`NOT_APPLIED`], or the
    /// connection was refused); one cut off mid-call is answered UNAVAILABLE with its outcome
    /// unknown.
    ///
    /// Errors: UNAVAILABLE when no leader appears in time, or when the request was already
    /// forwarded once and this replica does not lead (leadership is moving; the caller retries).
    pub(super) async fn route<T, R, F, Fut>(&self, req: Request<T>, call: F) -> Result<Route<T, R>, Status>
    where
        T: Clone,
        F: Fn(BorgmasterClient<Channel>, Request<T>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<R>, Status>>,
    {
        let deadline = Instant::now() + FORWARD_PATIENCE;
        let forwarded_for = match self.caller(&req)? {
            Caller::Is(id) => Some(id.uri()),
            Caller::Anyone => None,
        };
        let already_forwarded = req.metadata().get(FORWARDED_BY).is_some();
        loop {
            let address = match self.master.leadership() {
                Leadership::Me => return Ok(Route::Local(req)),
                _ if already_forwarded => {
                    return Err(not_applied(Status::unavailable(
                        "forwarded to a replica that does not lead (leadership is moving); retry",
                    )))
                }
                Leadership::Other { address, .. } => address,
                Leadership::Unknown if Instant::now() >= deadline => {
                    return Err(not_applied(Status::unavailable("no Borgmaster leader is elected; retry in a moment")))
                }
                Leadership::Unknown => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let mut fwd = Request::new(req.get_ref().clone());
            fwd.metadata_mut().insert(FORWARDED_BY, tonic::metadata::MetadataValue::from(self.master.id));
            if let Some(uri) = forwarded_for.as_deref().and_then(|u| u.parse().ok()) {
                fwd.metadata_mut().insert(FORWARDED_FOR, uri);
            }
            // the caller's own deadline when it set a longer one (AddReplica), else 30 s
            fwd.set_timeout(caller_timeout(req.metadata()).map_or(FORWARD_CALL, |t| t.max(FORWARD_CALL)));
            match call(self.leader_client(&address)?, fwd).await {
                // the leader did not apply it (it no longer leads), or was never reached
                // (connection refused: the old leader is gone): wait for a leader, send again
                Err(s) if surely_not_applied(&s) && Instant::now() < deadline => {
                    tracing::debug!(error = %s.message(), "forwarding to the leader failed; waiting for a leader");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // cut off mid-call (reset, timeout): it may have been applied; never sent twice
                Err(s)
                    if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled) =>
                {
                    return Err(Status::unavailable(format!(
                        "the leader at {address} did not answer ({}): the write may or may not have been applied; \
                         look (borgctl job NAME, borgctl replicas) before sending it again",
                        s.message()
                    )))
                }
                other => return other.map(Route::Forwarded),
            }
        }
    }
}

impl BorgmasterService {
    /// For a streaming write (exec): `None` when this replica leads (serve it here), else the
    /// leader's client and the metadata to send with the forwarded stream (marked forwarded,
    /// with the original caller).
    ///
    /// Errors: UNAVAILABLE while no leader is known, or when the call was already forwarded
    /// once and this replica does not lead.
    pub(super) fn stream_route<T>(
        &self,
        req: &Request<T>,
    ) -> Result<Option<(BorgmasterClient<Channel>, tonic::metadata::MetadataMap)>, Status> {
        let address = match self.master.leadership() {
            Leadership::Me => return Ok(None),
            _ if req.metadata().get(FORWARDED_BY).is_some() => {
                return Err(Status::unavailable(
                    "forwarded to a replica that does not lead (leadership is moving); retry",
                ))
            }
            Leadership::Other { address, .. } => address,
            Leadership::Unknown => {
                return Err(Status::unavailable("no Borgmaster leader is elected; retry in a moment"))
            }
        };
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(FORWARDED_BY, tonic::metadata::MetadataValue::from(self.master.id));
        if let Caller::Is(id) = self.caller(req)? {
            if let Ok(uri) = id.uri().parse() {
                md.insert(FORWARDED_FOR, uri);
            }
        }
        Ok(Some((self.leader_client(&address)?, md)))
    }
}

/// Where a write is served.
pub(super) enum Route<T, R> {
    /// Here: this replica leads.
    Local(Request<T>),
    /// By the leader, which answered this.
    Forwarded(Response<R>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_callers_grpc_timeout_is_read_in_every_unit_and_garbage_is_none() {
        let at = |v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            caller_timeout(&m)
        };
        assert_eq!(at("120S"), Some(Duration::from_secs(120)));
        assert_eq!(at("2M"), Some(Duration::from_secs(120)));
        assert_eq!(at("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(at("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(at("7u"), Some(Duration::from_micros(7)));
        assert_eq!(at("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "12", "12x", "-1S", "1.5S"] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
        assert_eq!(caller_timeout(&tonic::metadata::MetadataMap::new()), None);
    }
}
