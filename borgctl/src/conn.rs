//! Reaching the cell: credentials (`--credentials`, `--insecure`), the connection to the first
//! replica that answers, and gRPC errors turned into what a user can act on.

use crate::cli::Cli;
use anyhow::anyhow;
use borg_proto::borgmaster_client::BorgmasterClient;
use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::Channel;

/// The credentials chosen with `--credentials`/`--insecure` (installed once at start; None =
/// plain).
pub fn credentials() -> Option<&'static borg_rpc::auth::Credentials> {
    borg_rpc::auth::installed()
}

/// Loads the credentials `cli` names (see `Cli::credentials`).
///
/// Errors: `--credentials` names a directory without usable credentials.
pub fn load_credentials(cli: &Cli) -> anyhow::Result<Option<borg_rpc::auth::Credentials>> {
    if cli.insecure {
        return Ok(None);
    }
    let dir = match &cli.credentials {
        Some(d) => d.clone(),
        None => match std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/borg/credentials")) {
            Some(d) if d.join(borg_rpc::auth::CERT_FILE).exists() => d,
            _ => return Ok(None),
        },
    };
    borg_rpc::auth::Credentials::load(&dir).map(Some).map_err(|e| anyhow!("--credentials: {e}"))
}

/// A client of the first replica in `master` that answers; each call may take up to 30 s.
pub async fn connect(master: &str) -> anyhow::Result<BorgmasterClient<Channel>> {
    connect_waiting(master, Duration::from_secs(30)).await
}

/// Like [`connect`], each call waiting up to `call_timeout` (for calls that may take longer:
/// adding a replica to a large cell).
pub async fn connect_waiting(master: &str, call_timeout: Duration) -> anyhow::Result<BorgmasterClient<Channel>> {
    let addrs = borg_rpc::client::master_addresses(master).map_err(|e| anyhow!("--master: {e}"))?;
    let (addr, ch) = borg_rpc::client::connect_any(&addrs, credentials(), Duration::from_secs(5), call_timeout)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let _ = CONNECTED.set(addr);
    Ok(BorgmasterClient::new(ch))
}

/// The master address `connect` reached (for errors that depend on what answers there).
pub static CONNECTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn status(s: tonic::Status) -> anyhow::Error {
    let addr = CONNECTED.get().map_or("the --master address", String::as_str);
    if let Some(why) = borg_rpc::client::wrong_server(addr, s.code(), s.message()) {
        return anyhow!("{why}");
    }
    match s.code() {
        tonic::Code::Unauthenticated if credentials().is_none() => {
            anyhow!("{}\n(hint: pass --credentials DIR or set BORG_CREDENTIALS)", s.message())
        }
        _ if credentials().is_none() && (s.message().contains("h2 protocol error") || s.message().contains("transport error")) => anyhow!(
            "{}: the master probably requires TLS and a client certificate (auth is on): pass --credentials DIR or set BORG_CREDENTIALS",
            s.message()
        ),
        _ if s.message().contains("transport error") && credentials().is_some() => anyhow!(
            "{} (is the master running with --insecure? then pass --insecure; or your certificate is not from this cell's CA)",
            s.message()
        ),
        _ => anyhow!("{}", s.message()),
    }
}
