//! `borgmaster`: runs one Borgmaster replica for a cell.
//!
//! ```text
//! borgmaster --listen 127.0.0.1:9000 --data-dir /var/lib/borg/master [--cell dev]
//! borgmaster --id 2 --peers 1=h1:9000,2=h2:9000,3=h3:9000 --listen 0.0.0.0:9000 --data-dir DIR
//! ```
//! Without `--peers` the replica forms a group of one. Prints `borgmaster listening on ADDR` on
//! stdout once it accepts connections (ADDR is the bound address, useful with port 0).

use anyhow::Context;
use borgmaster::master::{Master, MasterConfig};
use borgmaster::service::BorgmasterService;
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Parses `500ms`, `1s`, `2m` (or a bare number of seconds) into a Duration.
fn duration(s: &str) -> Result<Duration, borg_jobspec::quantity::QuantityError> {
    borg_jobspec::quantity::parse_duration_ms(&borg_jobspec::quantity::Scalar::Str(s.into())).map(Duration::from_millis)
}

#[derive(Parser, Debug)]
#[command(version, about = "The Borgmaster: owns a cell's state, schedules its tasks, polls its Borglets.")]
struct Args {
    /// Address for the gRPC API (host:port; port 0 picks a free one).
    #[arg(long, required_unless_present = "force_voters", default_value = "")]
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
    /// A machine is marked down, and its tasks rescheduled, when no poll of it has succeeded for
    /// this many poll intervals of wall time (and at least this many polls in a row failed),
    /// counted from no earlier than the end of a new leader's first poll round and of the
    /// leader's own stalls (see `borgmaster::liveness`).
    #[arg(long, default_value_t = 5)]
    missed_polls: u32,
    /// Address for HTTP: /metrics (Prometheus), /healthz, and the status page at / (host:port;
    /// port 0 picks a free one). Off when not given.
    #[arg(long)]
    http: Option<String>,
    /// Serve DNS for the cell's names on this address, UDP and TCP (host:port; port 0 picks a
    /// free one): A for `<index>.<job>.<user>.<cell>.borg.`, SRV for
    /// `_<port>._tcp.<job>.<user>.<cell>.borg.` (ready tasks). Plain and unauthenticated, like
    /// --http. Off when not given.
    #[arg(long)]
    dns: Option<String>,
    /// Quota of users who have no grant at a band: `zero` (the default: nothing is admitted
    /// above the free band without a grant), `unlimited` (the whole cell), or a vector such as
    /// `cpu=100,ram=400Gi,disk=1Ti`. Applied to the cell state at start.
    #[arg(long, default_value = "zero")]
    default_quota: String,
    /// Longest wait between scheduling passes when nothing triggers one (passes run at once
    /// whenever something may have become placeable).
    #[arg(long, default_value = "10s", value_parser = duration)]
    schedule_interval: Duration,
    /// Resource reclamation (Borg §5.5): estimate each running task's reservation from its
    /// usage and place batch and free tasks against capacity minus reservations (production and
    /// monitoring are always placed against requests). `false`: every task is reserved at its
    /// request.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    reclaim: bool,
    /// How long a task is reserved at its request before its reservation follows its usage
    /// (Borg: 300 s, for startup transients).
    #[arg(long, default_value = "5m", value_parser = duration)]
    reservation_warmup: Duration,
    /// Safety margin over a task's peak usage, in percent: reservation = min(request, peak x
    /// (1 + margin) + 50 millicores / 64 MiB).
    #[arg(long, default_value_t = 10.0)]
    reservation_margin: f64,
    /// The peak usage is taken over this sliding window.
    #[arg(long, default_value = "5m", value_parser = duration)]
    reservation_window: Duration,
    /// How often the leader commits the reservations that moved.
    #[arg(long, default_value = "5s", value_parser = duration)]
    reservation_interval: Duration,
    /// This replica's id in the master group (a positive integer, stable for its data dir).
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Every replica of the master group at first start: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`
    /// (their gRPC addresses; Raft runs on the same listener). Without it, a group of one. The
    /// replica with the lowest id forms the group once all answer; later changes go through
    /// `borgctl replicas add|remove`.
    #[arg(long, default_value = "")]
    peers: String,
    /// Raft log entries between snapshots (checkpoints of the whole cell state); the log they
    /// cover is then purged.
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Shortest silence from the leader after which a replica stands for election (each picks
    /// at random up to twice it, and waits out the old leader's lease of twice it first); the
    /// leader sends heartbeats every two thirds of it, and a follower must acknowledge a log
    /// payload within one heartbeat interval. A follower whose silent leader does not answer
    /// (or no longer leads) once the lease has passed stands at once (README "Failover").
    /// Short means fast failover; replicas on overloaded hosts need longer, or they re-elect
    /// under load.
    #[arg(long, default_value = "300ms", value_parser = duration)]
    election_timeout: Duration,
    /// This replica's credentials (`ca.pem`, `cert.pem`, `key.pem`; a `replica` certificate
    /// from `borgctl certs issue --role replica --name ID --host HOST`). Default:
    /// `<data-dir>/credentials`.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// After a quorum of the master group is lost for good: rewrite this replica's stored Raft
    /// log (the replica must be stopped) so that the group's voters are exactly these ids
    /// (comma-separated, this replica's --id among them, each a member of the last committed
    /// configuration), then exit. Run it on every surviving replica with the same list, then
    /// start them as usual. Entries never committed (such as a stuck membership change) are
    /// dropped; writes that only the lost replicas held are lost, as with etcd's
    /// --force-new-cluster.
    #[arg(long, value_delimiter = ',')]
    force_voters: Vec<u64>,
    /// Turn authentication and TLS off: plain gRPC, and anyone who reaches the port may do
    /// anything (experiments only; warned on every start and on the status page).
    #[arg(long)]
    insecure: bool,
}

/// mimalloc instead of glibc's malloc: at 1,000,000 tasks a profile of the leader
/// (`perf record` during `scripts/bench-million`'s apply phase) spent about a third of its CPU in
/// glibc's allocator (`_int_malloc`, `malloc_consolidate`, `unlink_chunk`, `free`): poll answers,
/// reports and log entries are many short-lived allocations freed on other threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    borg_rpc::server::exit_status("borgmaster", run().await)
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,tower=warn,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    // failpoints named in FAILPOINTS (fault-injection tests only; none is set otherwise)
    let _failpoints = fail::FailScenario::setup();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    if !args.force_voters.is_empty() {
        return force_voters(&args);
    }
    let peers = borgmaster::raft::parse_peers(&args.peers).map_err(|e| anyhow::anyhow!("--peers: {e}"))?;
    if !peers.is_empty() && !peers.contains_key(&args.id) {
        anyhow::bail!("--peers does not list this replica's --id {}", args.id);
    }
    let default_quota = match args.default_quota.as_str() {
        "zero" => Some(scheduler_core::Resources::ZERO),
        "unlimited" => None,
        v => Some(borg_jobspec::quantity::parse_resources(v).map_err(|e| anyhow::anyhow!("--default-quota: {e}"))?),
    };
    let credentials = if args.insecure {
        tracing::warn!(
            "--insecure: authentication and TLS are OFF; anyone who can reach {} may do anything",
            args.listen
        );
        eprintln!("WARNING: borgmaster --insecure: authentication and TLS are off");
        None
    } else {
        let dir = args.credentials.clone().unwrap_or_else(|| args.data_dir.join("credentials"));
        let c = borg_rpc::auth::Credentials::load(&dir).map_err(|e| {
            anyhow::anyhow!(
                "credentials: {e}\n(issue a replica certificate with `borgctl certs issue --ca DIR --role replica --name {} --host HOST --out {}`, or run with --insecure)",
                args.id,
                dir.display()
            )
        })?;
        if c.identity.role != borg_rpc::auth::Role::Replica {
            anyhow::bail!("credentials in {}: the certificate is for {}, not a replica", dir.display(), c.identity);
        }
        tracing::info!(identity = %c.identity, "mutual TLS on; callers must present certificates from the cell's CA");
        borg_rpc::auth::install(c.clone());
        Some(c)
    };
    let config = MasterConfig {
        cell: args.cell.clone(),
        poll_interval: args.poll_interval,
        missed_polls_down: args.missed_polls.max(1),
        schedule_interval: args.schedule_interval,
        default_quota,
        auth: credentials.is_some(),
        reclaim: borgmaster::reservation::ReclaimConfig {
            enabled: args.reclaim,
            warmup: args.reservation_warmup,
            window: args.reservation_window.max(Duration::from_secs(1)),
            margin: (args.reservation_margin / 100.0).max(0.0),
            interval: args.reservation_interval.max(Duration::from_millis(100)),
        },
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let addr = listener.local_addr()?;
    let advertised = peers.get(&args.id).cloned().unwrap_or_else(|| addr.to_string());
    // before anything that records a metric starts: what is recorded before the recorder is
    // installed is lost (a leadership that began first lost the poll-overrun counter's 0, so
    // /metrics lacked it until the first overrun)
    let metrics_handle = match &args.http {
        Some(_) => Some(borgmaster::metrics::install()?),
        None => None,
    };
    let (raft, state) =
        borgmaster::raft::open(args.id, &args.data_dir, &args.cell, args.snapshot_every, args.election_timeout).await?;
    let heard = borgmaster::raft::election::Heard::default();
    tokio::spawn(borgmaster::raft::election::watch(
        raft.clone(),
        args.id,
        borgmaster::raft::network::Network::default(),
        heard.clone(),
    ));
    tokio::spawn(borgmaster::raft::group::finish_membership_changes(raft.clone(), Duration::from_secs(1)));
    let (master, committer) = Master::new(config, args.id, advertised.clone(), raft.clone(), state);
    tokio::spawn(committer.run(Arc::downgrade(&master)));
    tokio::spawn(borgmaster::leader::run(master.clone()));
    {
        let s = master.state();
        tracing::info!(id = args.id, cell = %s.cell, jobs = s.jobs.len(), machines = s.machines.len(), applied_index = s.applied_index, "cell state loaded");
    }
    let single = peers.is_empty();
    let (r, id, address) = (raft.clone(), args.id, master.address.clone());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ready2, data_dir) = (ready.clone(), args.data_dir.clone());
    let formed = tokio::spawn(async move {
        // a replica that started empty takes no part in Raft until its peers say it may
        if let Err(e) = borgmaster::raft::check_store_not_lost(&r, id, &data_dir, &peers).await {
            tracing::error!(error = %e, "refusing to start");
            eprintln!("borgmaster: {e:#}");
            std::process::exit(2);
        }
        ready2.store(true, std::sync::atomic::Ordering::Release);
        if let Err(e) = borgmaster::raft::bootstrap(&r, id, &address, &peers).await {
            tracing::error!(error = %e, "could not form the master group");
        }
    });
    if let (Some(http), Some(handle)) = (&args.http, metrics_handle) {
        let l = tokio::net::TcpListener::bind(http).await.with_context(|| format!("binding --http {http}"))?;
        let http_addr = l.local_addr()?;
        let app = borgmaster::http::router(master.clone(), handle, credentials.is_none());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
        tracing::info!(%http_addr, "status page and /metrics");
        println!("borgmaster http on {http_addr}");
    }
    if let Some(dns) = &args.dns {
        let (udp, tcp) = bind_dns(dns).await?;
        let dns_addr = udp.local_addr()?;
        tokio::spawn(borgmaster::dns::serve(master.clone(), udp, tcp));
        tracing::info!(%dns_addr, "DNS for the cell's names");
        println!("borgmaster dns on {dns_addr}");
    }
    let service = borg_proto::borgmaster_server::BorgmasterServer::new(BorgmasterService::new(master.clone()));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let raft_service = borgmaster::raft::network::RaftService::new(
        raft.clone(),
        args.id,
        advertised,
        credentials.is_some(),
        ready,
        heard,
    )
    .closing_on(closing_rx)
    .server();
    let mut builder = borg_rpc::server::builder();
    if let Some(c) = &credentials {
        // client certificates optional at the handshake so that a caller without one gets a
        // clear UNAUTHENTICATED error from the service instead of a failed handshake
        builder = builder.tls_config(c.server_tls(true)).context("TLS configuration")?;
    }
    let server = tokio::spawn(builder.add_service(service).add_service(raft_service).serve_with_incoming_shutdown(
        borg_rpc::server::incoming(listener),
        async move {
            borg_rpc::server::shutdown().await;
            // ends the leader's AppendEntries streams, which the graceful shutdown waits for
            let _ = closing_tx.send(true);
        },
    ));
    if single {
        // A group of one leads at once: announce only when it accepts writes with its quota set,
        // as a single master always did.
        formed.await?;
        let ready = async {
            while master.leadership() != borgmaster::master::Leadership::Me
                || master.state().default_quota != master.config.default_quota
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), ready).await.is_err() {
            tracing::warn!("not leading 10 s after start; serving anyway");
        }
    }
    // Raft is the replica: if its core stops by itself (a storage error, or a panic inside
    // openraft, as the fault suite met during membership changes), a process that lived on
    // would answer reads from a state that no longer moves. Exit instead, so that the
    // supervisor restarts the replica from its data dir.
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (raft, stopping) = (raft.clone(), stopping.clone());
        tokio::spawn(async move {
            let why = borgmaster::raft::group::stopped(&raft).await;
            if stopping.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            tracing::error!(error = %why, "Raft stopped; exiting so that this replica is restarted from its data dir");
            eprintln!("borgmaster: Raft stopped ({why}); exiting so that this replica is restarted from its data dir");
            std::process::exit(1);
        });
    }
    tracing::info!(%addr, id = args.id, cell = %master.state().cell, "borgmaster serving");
    println!("borgmaster listening on {addr}");
    std::io::stdout().flush()?;
    server.await??;
    stopping.store(true, std::sync::atomic::Ordering::Release);
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "Raft did not shut down cleanly");
    }
    tracing::info!("borgmaster stopped");
    Ok(())
}

/// The UDP socket and TCP listener of `--dns ADDR`, on one port. With port 0, UDP picks a free
/// port and TCP takes the same number; if another process holds it for TCP, another port is
/// tried (up to 32 times).
///
/// Errors: the address does not bind (in use, not local, malformed), naming it.
async fn bind_dns(dns: &str) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let any_port = dns.rsplit_once(':').is_some_and(|(_, p)| p == "0");
    let mut tries = 0;
    loop {
        let udp = tokio::net::UdpSocket::bind(dns).await.with_context(|| format!("binding --dns {dns} (UDP)"))?;
        let addr = udp.local_addr()?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if any_port && e.kind() == std::io::ErrorKind::AddrInUse && tries < 32 => tries += 1,
            Err(e) => return Err(e).with_context(|| format!("binding --dns {addr} (TCP)")),
        }
    }
}

/// `--force-voters`: the offline recovery after a quorum loss (see `borgmaster::raft::membership`).
fn force_voters(args: &Args) -> anyhow::Result<()> {
    let dir = args.data_dir.join("raft");
    let db = borgmaster::raft::log_store::open_db(&dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(--force-voters works on a stopped replica: stop the borgmaster using {} first)",
            dir.display()
        )
    })?;
    let voters: std::collections::BTreeSet<u64> = args.force_voters.iter().copied().collect();
    let report = borgmaster::raft::membership::force_voters(&db, args.id, &voters)
        .map_err(|e| anyhow::anyhow!("--force-voters: {e}; nothing was changed"))?;
    println!(
        "replica {}: voters were {:?}, are now {:?} (log entry {}); dropped {} uncommitted entries. Start the replica as usual.",
        args.id, report.previous_voters, voters, report.index, report.dropped
    );
    Ok(())
}
