//! `borglet`: the agent on one machine.
//!
//! ```text
//! borglet --master 127.0.0.1:9000 --listen 127.0.0.1:0 --work-dir /var/lib/borg/borglet \
//!         [--machine-id ID] [--cpu MILLICORES] [--ram BYTES] [--disk BYTES] [--attr k=v]...
//! ```
//! Prints `borglet listening on ADDR` on stdout once it serves. Tasks keep running when the
//! master is unreachable, and when the Borglet itself restarts (it adopts them).

use anyhow::Context;
use borg_proto as pb;
use borglet::cgroup::CgroupSupport;
use borglet::runtime::Runtime;
use borglet::service::{Borglet, BorgletService};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("{s:?} is not k=v"))
}

fn duration(s: &str) -> Result<Duration, borg_jobspec::quantity::QuantityError> {
    borg_jobspec::quantity::parse_duration_ms(&borg_jobspec::quantity::Scalar::Str(s.into())).map(Duration::from_millis)
}

fn millicores(s: &str) -> Result<u64, String> {
    s.trim_end_matches('m').parse().map_err(|_| format!("{s:?} is not a number of millicores"))
}

fn bytes(s: &str) -> Result<u64, borg_jobspec::quantity::QuantityError> {
    borg_jobspec::quantity::parse_bytes(&borg_jobspec::quantity::Scalar::Str(s.into()))
}

#[derive(Parser, Debug)]
#[command(version, about = "The Borglet: runs this machine's tasks for the Borgmaster.")]
struct Args {
    /// Borgmaster address (host:port), or every replica's, comma-separated (the first that
    /// answers takes the registration and forwards it to the leader).
    #[arg(long)]
    master: String,
    /// Address to serve the master's polls on (host:port; port 0 picks a free one). The
    /// registered address is the bound one unless --advertise is given.
    #[arg(long)]
    listen: String,
    /// Address the master should poll, when it differs from the bound one (a container's
    /// hostname, with --listen 0.0.0.0:PORT).
    #[arg(long)]
    advertise: Option<String>,
    /// Directory for task sandboxes and the Borglet's state file.
    #[arg(long)]
    work_dir: PathBuf,
    /// Machine id in the cell (default: hostname).
    #[arg(long)]
    machine_id: Option<String>,
    /// CPU capacity in millicores (default: CPUs x 1000).
    #[arg(long, value_parser = millicores)]
    cpu: Option<u64>,
    /// RAM capacity in bytes, suffixes allowed (64Gi) (default: MemTotal).
    #[arg(long, value_parser = bytes)]
    ram: Option<u64>,
    /// Disk capacity in bytes, suffixes allowed (default: the work dir's free space when a
    /// Borglet first ran there, kept in `<work-dir>/disk-capacity`).
    #[arg(long, value_parser = bytes)]
    disk: Option<u64>,
    /// Memory-pressure eviction: when this machine's tasks use more than this percentage of its
    /// RAM capacity (--ram), batch and free tasks are stopped, lowest priority first, with
    /// reason `reclaimed` (they ran in memory reclaimed from production, Borg §5.5) until the
    /// rest fit; production and monitoring tasks are never stopped for it. 0 turns it off.
    #[arg(long, default_value_t = 90.0)]
    reclaim_memory_at: f64,
    /// Address for HTTP: /metrics (Prometheus) and /healthz (host:port; port 0 picks a free one).
    /// Off when not given.
    #[arg(long)]
    http: Option<String>,
    /// Run N hollow machines instead of this one (for testing the master at scale): ids
    /// `<machine-id>-h<i>`, each with --cpu/--ram/--disk (default 4 cores, 32 GiB, 100 GiB)
    /// and the --attr attributes plus `rack=r<i/40>`. No process is ever started.
    #[arg(long, default_value_t = 0)]
    hollow: usize,
    /// Hollow machines from a CSV in fauxmaster's neutral format (id,cpu_millis,ram_bytes,disk_bytes,attrs).
    #[arg(long)]
    hollow_machines: Option<PathBuf>,
    /// Hollow tasks are reported running this long after they are given.
    #[arg(long, default_value = "0ms", value_parser = duration)]
    hollow_start_delay: Duration,
    /// Hollow tasks report using this fraction of their request.
    #[arg(long, default_value_t = 0.5)]
    hollow_usage: f64,
    /// This Borglet's credentials (`ca.pem`, `cert.pem`, `key.pem`: a `machine` certificate
    /// named for this machine, or an admin's for a hollow Borglet). Default:
    /// `<work-dir>/credentials`. Tasks cannot read them (mode 0600, and tasks run as
    /// --task-user).
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Turn authentication and TLS off (plain gRPC; anyone who reaches --listen may poll this
    /// Borglet). Warned on every start.
    #[arg(long)]
    insecure: bool,
    /// Unprivileged user tasks run as when the Borglet runs as root (created as a system user
    /// if missing). `root` runs tasks as root: only for cells that allow it.
    #[arg(long, default_value = "borg")]
    task_user: String,
    /// Machine attribute, repeatable: --attr rack=r1 --attr ssd=true.
    #[arg(long = "attr", value_parser = key_value)]
    attrs: Vec<(String, String)>,
    /// Ports tasks get their named ports from, inclusive (`FIRST-LAST`; `none` for none). The
    /// master assigns numbers from it and never gives one to two live tasks; a task reads its
    /// own in BORG_PORT_<NAME>. Hollow machines use the same range.
    #[arg(long, default_value = "20000-29999", value_parser = port_range)]
    port_range: PortRange,
    /// Remove the sandbox of a run that has ended and is no longer desired once it has not
    /// changed for this long ("24h", "10m", "1s"); its logs go with it. The default matches a
    /// batch job's default ttl_after_finished.
    #[arg(long, default_value = "24h", value_parser = duration)]
    sandbox_retention: Duration,
}

/// `--port-range`: inclusive, or none.
#[derive(Debug, Clone, Copy)]
struct PortRange(Option<(u16, u16)>);

/// `FIRST-LAST` (1-65535, FIRST <= LAST) or `none`.
fn port_range(s: &str) -> Result<PortRange, String> {
    if s == "none" {
        return Ok(PortRange(None));
    }
    let bad = || format!("{s:?} is not a port range FIRST-LAST (like 20000-29999) or none");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(PortRange(Some((a, b))))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    borg_rpc::server::exit_status("borglet", run().await)
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,h2=warn,tower=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let credentials = if args.insecure {
        tracing::warn!(
            "--insecure: authentication and TLS are OFF; anyone who can reach {} may poll this Borglet",
            args.listen
        );
        eprintln!("WARNING: borglet --insecure: authentication and TLS are off");
        None
    } else {
        let dir = args.credentials.clone().unwrap_or_else(|| args.work_dir.join("credentials"));
        let c = borg_rpc::auth::Credentials::load(&dir).map_err(|e| {
            anyhow::anyhow!(
                "credentials: {e}\n(issue a machine certificate with `borgctl certs issue --ca DIR --role machine --name MACHINE_ID --host HOST --out {}`, or run with --insecure)",
                dir.display()
            )
        })?;
        tracing::info!(identity = %c.identity, "mutual TLS on; only the cell's Borgmaster replicas may poll");
        borg_rpc::auth::install(c.clone());
        Some(c)
    };
    // a new leader's first round sends thousands of polls at once over one connection
    let mut server = borg_rpc::server::builder();
    if let Some(c) = &credentials {
        server = server.tls_config(c.server_tls(false)).context("TLS configuration")?;
    }
    if args.hollow > 0 || args.hollow_machines.is_some() {
        return run_hollow(args, server, credentials.is_some()).await;
    }
    let machine_id = args.machine_id.clone().unwrap_or_else(borglet::machine::hostname);
    // refuse before making anything on this machine (cgroups, work dir)
    if let Some(c) = credentials
        .as_ref()
        .filter(|c| c.identity.name != machine_id || c.identity.role != borg_rpc::auth::Role::Machine)
    {
        anyhow::bail!(
            "credentials in {}: the certificate is for {}, not machine {machine_id:?}",
            c.dir.display(),
            c.identity
        );
    }
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating work dir {}", args.work_dir.display()))?;
    // before anything touches the cgroups: a second Borglet for this machine must not
    let _lock = borglet::lock::lock_machine(Some(&machine_id), &args.work_dir)?;
    let detected = borglet::machine::detect_capacity(&args.work_dir);
    let capacity = scheduler_core::Resources::new(
        args.cpu.unwrap_or(detected.cpu_millis),
        args.ram.unwrap_or(detected.ram_bytes),
        args.disk.unwrap_or_else(|| borglet::machine::stable_disk_capacity(&args.work_dir, detected.disk_bytes)),
    );
    let attributes = borglet::machine::attributes(&args.attrs);
    let cgroups = CgroupSupport::detect();
    match &cgroups {
        CgroupSupport::None(why) => {
            tracing::warn!(reason = %why, "cgroups unavailable: tasks run without CPU and memory limits")
        }
        c => {
            if let Err(e) = c.prepare(&machine_id) {
                tracing::warn!(error = %e, "cannot create the Borglet's cgroup; tasks may run without limits");
            } else {
                tracing::info!(cgroups = ?c, "task limits enforced with cgroups");
            }
        }
    }
    let runtime = Runtime::new(&machine_id, &args.work_dir, cgroups)
        .with_context(|| format!("preparing work dir {}", args.work_dir.display()))?;
    let mut runtime = runtime;
    runtime.task_user =
        borglet::machine::task_user(&args.task_user).map_err(|e| anyhow::anyhow!("--task-user: {e}"))?;
    let borglet = Arc::new(Borglet {
        machine_id: machine_id.clone(),
        runtime: Mutex::new(runtime),
        last_poll: Mutex::new(None),
        auth: credentials.is_some(),
    });

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let addr = listener.local_addr()?;

    // The convergence loop: runs whether or not the master is reachable.
    let b = borglet.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            let b = b.clone();
            let _ = tokio::task::spawn_blocking(move || b.runtime().tick(Instant::now())).await;
        }
    });

    // Memory-pressure eviction, every second (Borglet::reclaim_memory)
    if args.reclaim_memory_at > 0.0 {
        let (b, at) = (borglet.clone(), args.reclaim_memory_at / 100.0);
        let ram = capacity.ram_bytes;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let b = b.clone();
                let stopped = tokio::task::spawn_blocking(move || b.runtime().reclaim_memory(ram, at)).await;
                for (run, _) in stopped.unwrap_or_default() {
                    metrics::counter!(borglet::metrics::RECLAIMED, "job" => run.task.job.clone()).increment(1);
                }
            }
        });
    }

    // Sandbox collection: what ended and is no longer desired goes once --sandbox-retention has
    // passed (looked at every minute, or more often for a short retention).
    let (b, retention) = (borglet.clone(), args.sandbox_retention);
    tokio::spawn(async move {
        let mut every =
            tokio::time::interval((retention / 2).clamp(Duration::from_millis(100), Duration::from_secs(60)));
        loop {
            every.tick().await;
            let b = b.clone();
            let removed = tokio::task::spawn_blocking(move || b.runtime().collect_sandboxes(retention)).await;
            for dir in removed.unwrap_or_default() {
                tracing::info!(sandbox = %dir.display(), "sandbox removed: its run ended and is no longer desired");
                metrics::counter!("borg_borglet_sandboxes_removed_total").increment(1);
            }
        }
    });

    // Health checks: every 100 ms, start the probes that are due; each records its result.
    let b = borglet.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            let due = b.runtime().due_probes(Instant::now());
            for job in due {
                let b = b.clone();
                tokio::spawn(async move {
                    let result = borglet::probe::run(&job).await;
                    b.runtime().record_probe(&job.run, job.which, result, Instant::now());
                });
            }
        }
    });

    let register = pb::RegisterMachineRequest {
        id: machine_id.clone(),
        address: args.advertise.clone().unwrap_or_else(|| addr.to_string()),
        capacity: Some(borg_jobspec::convert::resources_to_pb(capacity)),
        attributes: attributes.into_iter().collect(),
        port_range_first: args.port_range.0.map_or(0, |r| u32::from(r.0)),
        port_range_last: args.port_range.0.map_or(0, |r| u32::from(r.1)),
    };
    tokio::spawn(borglet::register::register_loop(args.master.clone(), register, borglet.clone()));

    if let Some(http) = &args.http {
        let handle = borglet::metrics::install()?;
        let l = tokio::net::TcpListener::bind(http).await.with_context(|| format!("binding --http {http}"))?;
        let http_addr = l.local_addr()?;
        let b = borglet.clone();
        let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" })).route(
            "/metrics",
            axum::routing::get(move || {
                let b = b.clone();
                let handle = handle.clone();
                async move {
                    b.refresh_metrics(capacity);
                    handle.run_upkeep();
                    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(error = %e, "HTTP listener failed");
            }
        });
        println!("borglet http on {http_addr}");
    }
    tracing::info!(%addr, machine = %machine_id, %capacity, "borglet serving");
    println!("borglet listening on {addr}");
    std::io::stdout().flush()?;
    let mut server = server;
    server
        .add_service(pb::borglet_server::BorgletServer::new(BorgletService(borglet)))
        .serve_with_incoming_shutdown(borg_rpc::server::incoming(listener), borg_rpc::server::shutdown())
        .await?;
    tracing::info!("borglet stopped; its tasks keep running and are adopted by the next Borglet");
    Ok(())
}

/// Hollow mode: N fake machines behind one listener (see `borglet::hollow`).
async fn run_hollow(args: Args, server: tonic::transport::Server, auth: bool) -> anyhow::Result<()> {
    use borglet::hollow::{read_machines_csv, HollowCell, HollowService, HollowSpec};
    let specs = match &args.hollow_machines {
        Some(p) => read_machines_csv(p).map_err(|e| anyhow::anyhow!("--hollow-machines: {e}"))?,
        None => {
            let prefix = args.machine_id.clone().unwrap_or_else(borglet::machine::hostname);
            let capacity = scheduler_core::Resources::new(
                args.cpu.unwrap_or(4000),
                args.ram.unwrap_or(32 << 30),
                args.disk.unwrap_or(100 << 30),
            );
            (0..args.hollow)
                .map(|i| {
                    let mut attributes = borglet::machine::attributes(&args.attrs);
                    attributes.insert("rack".into(), format!("r{}", i / 40));
                    HollowSpec { id: format!("{prefix}-h{i}"), capacity, attributes }
                })
                .collect()
        }
    };
    let n = specs.len();
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating work dir {}", args.work_dir.display()))?;
    let _lock = borglet::lock::lock_machine(None, &args.work_dir)?;
    let cell = Arc::new(HollowCell::new(specs, args.hollow_start_delay, args.hollow_usage));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    let addr = listener.local_addr()?;
    let c = cell.clone();
    let master = args.master.clone();
    let advertised = args.advertise.clone().unwrap_or_else(|| addr.to_string());
    let port_range = args.port_range.0;
    tokio::spawn(async move {
        loop {
            let stale: Vec<HollowSpec> = c.stale(Duration::from_secs(10)).into_iter().cloned().collect();
            if !stale.is_empty() {
                borglet::register::register_hollow(&master, &stale, &advertised, port_range).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    tracing::info!(%addr, machines = n, "hollow borglet serving");
    println!("borglet listening on {addr}");
    std::io::stdout().flush()?;
    let mut server = server;
    server
        .add_service(pb::borglet_server::BorgletServer::new(HollowService(cell, auth)))
        .serve_with_incoming_shutdown(borg_rpc::server::incoming(listener), borg_rpc::server::shutdown())
        .await?;
    Ok(())
}
