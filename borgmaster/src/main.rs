//! `borgmaster`: runs one Borgmaster for a cell.
//!
//! ```text
//! borgmaster --listen 127.0.0.1:9000 --data-dir /var/lib/borg/master [--cell dev]
//! ```
//! Prints `borgmaster listening on ADDR` on stdout once it accepts connections (ADDR is the
//! bound address, useful with port 0).

use anyhow::Context;
use borgmaster::master::{Master, MasterConfig};
use borgmaster::service::BorgmasterService;
use borgmaster::store::Store;
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Parses `500ms`, `1s`, `2m` (or a bare number of seconds) into a Duration.
fn duration(s: &str) -> Result<Duration, String> {
    borg_spec::quantity::parse_duration_ms(&borg_spec::quantity::Scalar::Str(s.into())).map(Duration::from_millis)
}

#[derive(Parser, Debug)]
#[command(version, about = "The Borgmaster: owns a cell's state, schedules its tasks, polls its Borglets.")]
struct Args {
    /// Address for the gRPC API (host:port; port 0 picks a free one).
    #[arg(long)]
    listen: String,
    /// Directory for the RocksDB state (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Cell name (used only when the data dir is new).
    #[arg(long, default_value = "dev")]
    cell: String,
    /// Interval between polls of each Borglet.
    #[arg(long, default_value = "1s", value_parser = duration)]
    poll_interval: Duration,
    /// Consecutive missed polls after which a machine is marked down and its tasks rescheduled.
    #[arg(long, default_value_t = 5)]
    missed_polls: u32,
    /// Address for HTTP: /metrics (Prometheus), /healthz, and the status page at / (host:port;
    /// port 0 picks a free one). Off when not given.
    #[arg(long)]
    http: Option<String>,
    /// Quota of users who have no grant at a band: `zero` (the default: nothing is admitted
    /// above the free band without a grant), `unlimited` (the whole cell), or a vector such as
    /// `cpu=100,ram=400Gi,disk=1Ti`. Applied to the cell state at start.
    #[arg(long, default_value = "zero")]
    default_quota: String,
    /// Longest wait between scheduling passes when nothing triggers one (passes run at once
    /// whenever something may have become placeable).
    #[arg(long, default_value = "10s", value_parser = duration)]
    schedule_interval: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,h2=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let store = Store::open(&args.data_dir.join("state"))?;
    let config = MasterConfig {
        cell: args.cell.clone(),
        poll_interval: args.poll_interval,
        missed_polls_down: args.missed_polls.max(1),
        schedule_interval: args.schedule_interval,
    };
    let default_quota = match args.default_quota.as_str() {
        "zero" => Some(scheduler_core::Resources::ZERO),
        "unlimited" => None,
        v => Some(borg_spec::quantity::parse_resources(v).map_err(|e| anyhow::anyhow!("--default-quota: {e}"))?),
    };
    let master = Master::open(config, store)?;
    if master.state().default_quota != default_quota {
        master.propose(borgmaster::state::Command::SetDefaultQuota { limit: default_quota }).await?;
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let addr = listener.local_addr()?;
    tokio::spawn(borgmaster::scheduler_loop::run(master.clone()));
    tokio::spawn(borgmaster::link_shard::run(master.clone()));
    if let Some(http) = &args.http {
        let handle = borgmaster::metrics::install()?;
        let l = tokio::net::TcpListener::bind(http).await.with_context(|| format!("binding --http {http}"))?;
        let http_addr = l.local_addr()?;
        let app = borgmaster::http::router(master.clone(), handle, true);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
        tracing::info!(%http_addr, "status page and /metrics");
        println!("borgmaster http on {http_addr}");
    }
    let service = borg_proto::borgmaster_server::BorgmasterServer::new(BorgmasterService::new(master.clone()));
    tracing::info!(%addr, cell = %master.state().cell, "borgmaster serving");
    println!("borgmaster listening on {addr}");
    std::io::stdout().flush()?;
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown())
        .await?;
    tracing::info!("borgmaster stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown() {
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
