//! Reaching the Borgmaster from a client (borgctl, a Borglet): `--master` takes a
//! comma-separated list of replica addresses, and a client uses the first that answers. Any
//! replica serves reads and forwards writes to the leader, so a client need not know which one
//! leads.

/// Request metadata asking for a linearizable read: with `borg-consistency: linearizable` a
/// read (`GetJob`) is served by the leader once a quorum has confirmed it still leads and its
/// state holds every committed entry (followers forward it). Without it, any replica answers
/// from its own copy, which may lag the leader by a few entries.
pub const CONSISTENCY_HEADER: &str = "borg-consistency";
/// The value of [`CONSISTENCY_HEADER`] for a linearizable read.
pub const LINEARIZABLE: &str = "linearizable";

use crate::{Error, Result};
use std::time::Duration;
use tonic::transport::Channel;

/// Splits a `--master` value (`host:port[,host:port...]`) into addresses, in the given order.
///
/// Errors: no address at all, or an item without a port; the message quotes the item.
pub fn master_addresses(s: &str) -> Result<Vec<String>> {
    let addrs: Vec<String> = s.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect();
    if addrs.is_empty() {
        return Err(Error::BadAddress("no Borgmaster address given (expected host:port[,host:port...])".into()));
    }
    if let Some(bad) = addrs.iter().find(|a| !a.contains(':')) {
        return Err(Error::BadAddress(format!("{bad:?} is not host:port")));
    }
    Ok(addrs)
}

/// Connects to the first of `addrs` that accepts a connection within `connect_timeout`, trying
/// them in order (mutual TLS with `credentials`, plain without); calls on the channel time out
/// after `timeout`. Returns that address and the
/// channel.
///
/// Errors: none could be reached; the message names each address and why (the innermost cause,
/// e.g. "Connection refused").
pub async fn connect_any(
    addrs: &[String],
    credentials: Option<&crate::auth::Credentials>,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<(String, Channel)> {
    let mut why = Vec::new();
    for addr in addrs {
        let ep = match crate::auth::endpoint(addr, credentials) {
            Ok(ep) => ep.connect_timeout(connect_timeout).timeout(timeout),
            Err(e) => {
                why.push(format!("{addr}: bad address: {e}"));
                continue;
            }
        };
        match ep.connect().await {
            Ok(ch) => return Ok((addr.clone(), ch)),
            Err(e) => why.push(format!("{addr}: {}", explain(&innermost(&e)))),
        }
    }
    Err(Error::Unreachable(if addrs.len() == 1 {
        format!("cannot reach the Borgmaster at {}", why.join(""))
    } else {
        format!("cannot reach any Borgmaster replica ({})", why.join("; "))
    }))
}

/// Whether a call failed with its connection refused (tonic's UNAVAILABLE "tcp connect error"):
/// the request never left this process, so the server cannot have acted on it.
pub fn connection_refused(s: &tonic::Status) -> bool {
    let text = format!("{} {:?}", s.message(), std::error::Error::source(s));
    s.code() == tonic::Code::Unavailable && (text.contains("Connection refused") || text.contains("tcp connect error"))
}

/// A transport error as a user can act on it: a TLS handshake that met plain HTTP (a master's
/// --http port) or a plain server says which port it probably reached.
pub fn explain(err: &str) -> String {
    if err.contains("InvalidContentType") || err.contains("corrupt message") {
        format!(
            "{err}: that address answers without TLS, maybe HTTP (a master's --http port serves the status page); \
             use the master's --listen address (its `borgmaster listening on ADDR` line), or --insecure for a master run with --insecure"
        )
    } else {
        err.to_string()
    }
}

/// What a call's failure means when the server at `addr` is not a Borgmaster API at all: `None`
/// when the status looks like an ordinary answer of the master's.
pub fn wrong_server(addr: &str, code: tonic::Code, message: &str) -> Option<String> {
    let fix = "point --master (or BORG_MASTER) at the master's gRPC address (its `borgmaster listening on ADDR` line)";
    if message.contains("grpc-status header missing") || message.contains("HTTP status code") {
        return Some(format!(
            "{addr} answers HTTP, not the Borgmaster's gRPC API: it is probably the master's --http port (status page and /metrics); {fix}"
        ));
    }
    if code == tonic::Code::Unimplemented {
        return Some(format!(
            "{addr} serves gRPC but not the Borgmaster API (borg.v1.Borgmaster): it is probably a Borglet's --listen port; {fix}"
        ));
    }
    None
}

/// The innermost cause of an error chain (the part that says what actually went wrong).
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// How long `borgctl replicas add` waits for AddReplica (120 s; sent as its grpc-timeout, so a
/// replica that forwards the add to the leader waits as long): the Borgmaster's own bounds are a
/// fresh snapshot first (up to 30 s), then the new replica's catch-up (up to 30 s), then its
/// promotion. At 1,000,000 tasks an add took 14-29 s, past the 30 s other calls get.
pub const ADD_REPLICA_CALL: std::time::Duration = std::time::Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_and_refuse() {
        assert_eq!(master_addresses("a:1, b:2,").unwrap(), vec!["a:1", "b:2"]);
        assert!(master_addresses(" , ").unwrap_err().to_string().contains("no Borgmaster address"));
        assert!(master_addresses("a:1,b").unwrap_err().to_string().contains("\"b\""));
    }

    #[tokio::test]
    async fn connect_any_skips_dead_replicas_and_names_them() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap().to_string();
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (_s, _) = live.accept().await.unwrap();
            let _ = rx.await;
        });
        let addrs = vec![dead_addr.clone(), live_addr.clone()];
        let t = Duration::from_secs(2);
        let (chosen, _) = connect_any(&addrs, None, t, t).await.unwrap();
        assert_eq!(chosen, live_addr);
        let err = connect_any(std::slice::from_ref(&dead_addr), None, t, t).await.unwrap_err().to_string();
        assert!(err.contains(&dead_addr) && err.to_lowercase().contains("refused"), "{err}");
        server.abort();
    }
}
