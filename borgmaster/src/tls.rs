//! This replica's credentials for mutual TLS (`borg_rpc::auth` has the scheme): installed once
//! at start with `borg_rpc::auth::install`; every outgoing connection (Raft peers, forwarded
//! writes, Borglet polls) uses them. Without them (`--insecure`, and in unit tests)
//! connections are plain HTTP/2.

use tonic::transport::Endpoint;

/// An endpoint for `address` (`host:port`), mutual TLS when credentials are installed.
///
/// Errors: the address is malformed, or the TLS configuration is refused.
pub fn endpoint(address: &str) -> borg_rpc::Result<Endpoint> {
    borg_rpc::auth::endpoint(address, borg_rpc::auth::installed())
}
