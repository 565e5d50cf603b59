//! What every borg gRPC server (Borgmaster replicas, Borglets, hollow Borglets) shares: HTTP/2
//! settings and graceful shutdown on a signal.

/// HTTP/2 connection flow-control window of borg's gRPC servers, in bytes (32 MiB).
///
/// h2 (0.4.20, the version this workspace locks) closes a connection with GOAWAY
/// `ENHANCE_YOUR_CALM "too_many_data_frames"` when the framing overhead of the small DATA frames
/// buffered on it outgrows half this window; with h2's default 64 KiB window that is about 145
/// small requests in flight at once. A hollow Borglet serves 10,000 machines' polls on one
/// connection and a newly elected leader polls them all at once (measured: 9,278 of 10,000 first
/// polls failed with the default window, and the round took one more poll interval); a master
/// takes bursts of 1,000 concurrent applies. The window is credit the peer may use, not memory
/// reserved up front.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Streams a peer may reset before they are served without h2 closing the connection: the
/// master cancels polls that time out, and a burst of them over one connection carrying
/// thousands of machines must not drop every machine (h2's default is 20).
pub const MAX_PENDING_RESET_STREAMS: usize = 65_536;

/// HTTP/2 flow-control window of each stream (one request) to borg's gRPC servers, in bytes
/// (16 MiB: a Raft snapshot chunk fits in one window).
///
/// With h2's default of 64 KiB a large request (a Raft snapshot chunk of 3 MiB, an
/// AppendEntries of thousands of task records) crosses in 64 KiB steps, each waiting for the
/// server to read it and send a WINDOW_UPDATE back: on an idle host that costs nothing, but with
/// the server's runtime busy (a follower applying, a leader polling 10,000 machines) each step
/// waits its turn. Measured at 1,000,000 tasks (scripts/bench-million): a 281 MB snapshot (before
/// snapshots were compressed) took 13.3 s to reach a wiped replica with the default. Like the
/// connection window, credit and not memory reserved up front.
pub const STREAM_WINDOW_BYTES: u32 = 16 << 20;

/// A tonic server builder with [`CONNECTION_WINDOW_BYTES`], [`STREAM_WINDOW_BYTES`] and
/// [`MAX_PENDING_RESET_STREAMS`].
pub fn builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESET_STREAMS))
}

/// The connections `listener` accepts, with `TCP_NODELAY` set on each. tonic sets it only on
/// listeners it binds itself (`serve`): handed a listener (`serve_with_incoming`), its replies
/// went out under Nagle's algorithm, and a small reply waiting for the peer's delayed ACK was the
/// 40-45 ms p99 of replicated applies (replbench, 64 clients).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Resolves on SIGINT or SIGTERM (a server's graceful shutdown). If SIGTERM cannot be watched,
/// only SIGINT ends it.
pub async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A daemon's exit: success, or its error as one readable line (no backtrace) on stderr,
/// prefixed with `name` (the error and its causes, `: `-separated), plus a hint when an address
/// it wanted to bind is still taken (another copy running, or one still shutting down). For the
/// `main` of `borgmaster` and `borglet` (pass their `anyhow::Result`).
pub fn exit_status<E>(name: &str, result: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    let Err(e) = result else { return std::process::ExitCode::SUCCESS };
    let mut chain = vec![e.as_ref().to_string()];
    let mut busy = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(c) = cur {
        busy |= c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse);
        cur = c.source();
        if let Some(next) = cur {
            chain.push(next.to_string());
        }
    }
    eprintln!("{name}: {}", chain.join(": "));
    if busy {
        eprintln!(
            "{name}: another process listens there: a {name} still running (or still shutting down)? stop it, or choose another address"
        );
    }
    std::process::ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    /// Every connection [`super::incoming`] accepts has `TCP_NODELAY` set (a plain accepted
    /// socket has it off).
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        use tokio_stream::StreamExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = super::incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
        // what serve_with_incoming was handed before
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(plain.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = plain.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap());
    }
}
