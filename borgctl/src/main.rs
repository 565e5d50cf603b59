//! `borgctl`: the command-line client of a Borg cell.
//!
//! Exit codes: 0 success; 1 error (bad spec, unreachable master, refused request); 2 a dry run
//! found tasks that cannot be placed, or `wait` timed out.

use anyhow::{anyhow, Context};
use borg_proto as pb;
use borg_proto::borgmaster_client::BorgmasterClient;
use borgctl::render;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Output {
    /// Human-readable table.
    Table,
    /// JSON (stable field names).
    Json,
    /// YAML (the same fields as JSON).
    Yaml,
}

#[derive(Parser, Debug)]
#[command(version, about = "Client of a Borg cell: submit jobs, inspect tasks and machines.")]
struct Cli {
    /// Borgmaster address (host:port), or every replica's, comma-separated: the first that
    /// answers is used (any replica serves reads and forwards writes to the leader).
    #[arg(long, global = true, env = "BORG_MASTER", default_value = "127.0.0.1:9000")]
    master: String,
    /// Output format of listings.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Output,
    /// Your credentials (`ca.pem`, `cert.pem`, `key.pem`, from `borgctl certs issue`): mutual
    /// TLS to the cell. Default: `~/.config/borg/credentials` when it exists, else plain gRPC
    /// (for a master started with `--insecure`).
    #[arg(long, global = true, env = "BORG_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// Talk plain gRPC even when credentials are configured (to a master run with --insecure).
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a job, or replace the spec of an existing one, from a YAML spec.
    Apply {
        /// Job spec file (YAML, one job); `-` reads it from stdin.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Check the spec and show what would happen; change nothing. Exits 2 if tasks would
        /// stay pending.
        #[arg(long)]
        dry_run: bool,
        /// Apply only if the job is at this version (0 = must not exist yet).
        #[arg(long)]
        expected_version: Option<u64>,
    },
    /// List jobs.
    Jobs,
    /// Show one job: spec summary, task counts, why tasks are pending, recent events.
    Job {
        /// Job name.
        name: String,
    },
    /// List the tasks of a job.
    Tasks {
        /// Job name.
        name: String,
    },
    /// Kill every task of a job (SIGTERM, grace period, SIGKILL).
    Kill {
        /// Job name.
        name: String,
    },
    /// Remove jobs whose tasks are all dead (killed or finished) from the cell: they leave
    /// `jobs` and the status page. Owner or admin. A job with live tasks is refused: kill it
    /// first.
    Delete {
        /// Job names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List the machines of the cell.
    Machines,
    /// Print the tail of a task's stdout (or stderr).
    Logs {
        /// Job name.
        name: String,
        /// Task index.
        index: u32,
        /// Read stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Bytes from the end; 0 means the Borglet's default, the last 64 KiB.
        #[arg(long, default_value_t = 0)]
        tail: u64,
    },
    /// Resource use like `kubectl top`: by machine, job or user (allocated vs used).
    Top {
        /// What to list.
        #[arg(value_enum)]
        what: TopWhat,
    },
    /// Cell-wide capacity, allocation, usage, free and stranded resources, by band.
    Cell {
        /// What to show.
        #[arg(value_enum)]
        what: CellWhat,
    },
    /// Quotas: `quota set USER BAND cpu=.. ram=.. disk=..`, `quota get [USER]`.
    Quota {
        #[command(subcommand)]
        action: QuotaCmd,
    },
    /// The cell's certificate authority and credentials: `certs init --ca DIR`, `certs issue
    /// --ca DIR --role user|admin|machine|replica --name NAME [--host H,...] --out DIR`.
    Certs {
        #[command(subcommand)]
        action: CertsCmd,
    },
    /// Replicas of the master group: `replicas [list]`, `replicas add ID HOST:PORT`,
    /// `replicas remove ID`.
    Replicas {
        #[command(subcommand)]
        action: Option<ReplicasCmd>,
    },
    /// Recent events (scheduling, preemption, evictions, machines), optionally of one job.
    Events {
        /// Job name (default: all).
        job: Option<String>,
        /// Most events shown.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Alloc sets and their allocs: machine, reservation, and the tasks inside each.
    Allocs,
    /// Why a job's tasks are pending: per-reason machine counts (Kubernetes style).
    WhyPending {
        /// Job name.
        name: String,
    },
    /// Load driver: apply many jobs concurrently, measure apply -> bound -> running per task.
    Bench {
        /// Job name prefix.
        #[arg(long, default_value = "bench")]
        prefix: String,
        /// Jobs to apply.
        #[arg(long, default_value_t = 1000)]
        jobs: usize,
        /// Tasks per job.
        #[arg(long, default_value_t = 1)]
        tasks_per_job: u32,
        /// Per-task CPU ("100m", "0.5").
        #[arg(long, default_value = "100m")]
        cpu: String,
        /// Per-task RAM ("500Mi").
        #[arg(long, default_value = "500Mi")]
        ram: String,
        /// Priority (band name or integer).
        #[arg(long, default_value = "batch")]
        priority: String,
        /// Applies in flight at once.
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
        /// Seconds to wait for every task to run.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Apply the jobs of a tasks CSV (fauxmaster's neutral format, e.g. from `fauxmaster
        /// export`) instead of synthetic ones.
        #[arg(long)]
        tasks_csv: Option<PathBuf>,
    },
    /// Wait until a job's tasks are all running, or all dead (done).
    Wait {
        /// Job name.
        name: String,
        /// What to wait for.
        #[arg(long = "for", value_enum, default_value = "done")]
        until: Until,
        /// Give up after this many seconds (exit 2).
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

#[derive(Subcommand, Debug)]
enum QuotaCmd {
    /// Grant USER a quota at BAND (batch, production, monitoring); prints the limit now in force.
    Set {
        /// User.
        user: String,
        /// Band.
        band: String,
        /// Resources: cpu=2 ram=4Gi disk=10Gi. Dimensions not named keep their current limit
        /// (the user's grant at the band, or the cell default), like `kubectl set`.
        #[arg(required = true)]
        resources: Vec<String>,
    },
    /// Limit, used and free per user and band.
    Get {
        /// One user (default: all).
        user: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ReplicasCmd {
    /// Every replica with its role (leader, follower, learner, unreachable) and last applied
    /// log index.
    List,
    /// Add replica ID at HOST:PORT (start it first with `borgmaster --id ID --peers ...`): it
    /// catches up as a learner, then becomes a voter.
    Add {
        /// Its `--id`.
        id: u64,
        /// Its gRPC address.
        address: String,
    },
    /// Remove replica ID from the group.
    Remove {
        /// Its `--id`.
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Create the cell's CA (`ca.pem`, `ca.key`) in a new directory; keep `ca.key` secret.
    Init {
        /// Directory for the CA.
        #[arg(long)]
        ca: PathBuf,
        /// Cell name (in the CA's common name).
        #[arg(long, default_value = "dev")]
        cell: String,
    },
    /// Issue credentials signed by the CA: `ca.pem`, `cert.pem`, `key.pem` into `--out`.
    Issue {
        /// Directory of the CA (from `certs init`).
        #[arg(long)]
        ca: PathBuf,
        /// user (owns their jobs), admin (everything), machine (a Borglet: --name is its
        /// machine id), replica (a Borgmaster replica: --name is its id).
        #[arg(long)]
        role: String,
        /// User name, machine id or replica id.
        #[arg(long)]
        name: String,
        /// DNS names or IPs the certificate serves as (replicas, Borglets), comma-separated;
        /// localhost and 127.0.0.1 are always included.
        #[arg(long, default_value = "")]
        host: String,
        /// Output directory (made mode 0700).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show who a credentials directory says you are.
    Show {
        /// Credentials directory (default: --credentials).
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum TopWhat {
    /// One row per machine.
    Machines,
    /// One row per job.
    Jobs,
    /// One row per user (their jobs summed).
    Users,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum CellWhat {
    /// Capacity, allocated, used, free and stranded, by band.
    Usage,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Until {
    /// Every task running.
    Running,
    /// Every task dead (finished, failed or killed).
    Done,
}

/// The credentials chosen with `--credentials`/`--insecure` (installed once at start; None =
/// plain).
fn credentials() -> Option<&'static borg_spec::auth::Credentials> {
    borg_spec::auth::installed()
}

/// Loads the credentials `cli` names (see `Cli::credentials`).
///
/// Errors: `--credentials` names a directory without usable credentials.
fn load_credentials(cli: &Cli) -> anyhow::Result<Option<borg_spec::auth::Credentials>> {
    if cli.insecure {
        return Ok(None);
    }
    let dir = match &cli.credentials {
        Some(d) => d.clone(),
        None => match std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/borg/credentials")) {
            Some(d) if d.join(borg_spec::auth::CERT_FILE).exists() => d,
            _ => return Ok(None),
        },
    };
    borg_spec::auth::Credentials::load(&dir).map(Some).map_err(|e| anyhow!("--credentials: {e}"))
}

async fn connect(master: &str) -> anyhow::Result<BorgmasterClient<Channel>> {
    let addrs = borg_spec::client::master_addresses(master).map_err(|e| anyhow!("--master: {e}"))?;
    let (addr, ch) =
        borg_spec::client::connect_any(&addrs, credentials(), Duration::from_secs(5), Duration::from_secs(30))
            .await
            .map_err(|e| anyhow!("{e}"))?;
    let _ = CONNECTED.set(addr);
    Ok(BorgmasterClient::new(ch))
}

/// The master address `connect` reached (for errors that depend on what answers there).
static CONNECTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn status(s: tonic::Status) -> anyhow::Error {
    let addr = CONNECTED.get().map_or("the --master address", String::as_str);
    if let Some(why) = borg_spec::client::wrong_server(addr, s.code(), s.message()) {
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

/// `print!` that returns the write's error instead of panicking, so that a reader that went
/// away (`borgctl jobs | head`) ends borgctl quietly (see `main`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `println!` that returns the write's error (see [`out`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// The output format chosen with `-o` (set once at start).
static FORMAT: std::sync::OnceLock<Output> = std::sync::OnceLock::new();

/// Prints a machine-readable value as JSON, or YAML with `-o yaml`.
fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    if FORMAT.get() == Some(&Output::Yaml) {
        out!("{}", serde_saphyr::to_string(v).map_err(|e| anyhow!("YAML output: {e}"))?)?;
    } else {
        outln!("{}", serde_json::to_string_pretty(v)?)?;
    }
    Ok(())
}

/// Spec fields that differ between the job's current spec and `new`, as
/// `{field: {"from": old, "to": new}}`; empty when the job does not exist yet.
async fn spec_diff(c: &mut BorgmasterClient<Channel>, new: &borg_spec::JobSpec) -> serde_json::Value {
    let Ok(r) = c.get_job(pb::GetJobRequest { name: new.name.clone() }).await else { return serde_json::json!({}) };
    let Some(old) = r.into_inner().job.and_then(|j| j.spec).and_then(|s| borg_spec::JobSpec::try_from(&s).ok()) else {
        return serde_json::json!({});
    };
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(&old), serde_json::to_value(new))
    else {
        return serde_json::json!({});
    };
    let mut out = serde_json::Map::new();
    for (k, v) in &b {
        if a.get(k) != Some(v) {
            out.insert(k.clone(), serde_json::json!({"from": a.get(k), "to": v}));
        }
    }
    serde_json::Value::Object(out)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = FORMAT.set(cli.output);
    if let Cmd::Certs { action } = &cli.command {
        return certs(action, &cli);
    }
    if let Some(c) = load_credentials(&cli)? {
        borg_spec::auth::install(c);
    }
    let json = cli.output != Output::Table;
    match cli.command {
        Cmd::Apply { file, dry_run, expected_version } => {
            let (label, text) = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
                    .context("reading the spec from stdin")?;
                ("<stdin>".to_string(), text)
            } else {
                let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
                (file.display().to_string(), text)
            };
            let spec = match borg_spec::parse_job_spec(&label, &text) {
                Ok(s) => s,
                Err(errors) => {
                    eprintln!("{errors}");
                    eprintln!("borgctl: {} problem(s) in {label}; nothing was submitted", errors.0.len());
                    return Ok(ExitCode::from(1));
                }
            };
            let mut c = connect(&cli.master).await?;
            // for a dry run, the spec fields that would change (from the job's current spec)
            let diff = if dry_run { spec_diff(&mut c, &spec).await } else { serde_json::Value::Null };
            let req = pb::ApplyJobRequest { spec: Some((&spec).into()), dry_run, expected_version };
            let r = c.apply_job(req).await.map_err(status)?.into_inner();
            if json {
                let res = |x: Option<pb::Resources>| {
                    x.map(|r| serde_json::json!({"cpu_millis": r.cpu_millis, "ram_bytes": r.ram_bytes, "disk_bytes": r.disk_bytes}))
                };
                print_json(&serde_json::json!({
                    "job": r.job, "action": r.action, "version": r.version, "dry_run": dry_run,
                    "placeable": r.placeable, "unplaceable": r.unplaceable, "why_pending": r.why_pending,
                    "why_pending_reasons": r.why_pending_reasons.iter().collect::<std::collections::BTreeMap<_, _>>(),
                    "created": r.created, "restarted": r.restarted, "removed": r.removed, "in_place": r.in_place,
                    "evicted": r.evicted, "quota_used_after": res(r.quota_used_after), "quota_limit": res(r.quota_limit),
                    "diff": diff,
                }))?;
            } else if dry_run {
                out!("{}", render::plan_text(&r))?;
                if let Some(d) = diff.as_object().filter(|d| !d.is_empty()) {
                    outln!("  spec changes:")?;
                    for line in render::spec_changes(d) {
                        outln!("    {line}")?;
                    }
                }
            } else {
                outln!("job {} {} (version {})", r.job, r.action, r.version)?;
            }
            if dry_run && r.unplaceable > 0 {
                return Ok(ExitCode::from(2));
            }
        }
        Cmd::Jobs => {
            let jobs =
                connect(&cli.master).await?.list_jobs(pb::ListJobsRequest {}).await.map_err(status)?.into_inner().jobs;
            if json {
                print_json(&jobs.iter().map(render::job_json).collect())?;
            } else {
                outln!("{}", render::jobs_table(&jobs))?;
            }
        }
        Cmd::Job { name } => {
            let r = connect(&cli.master).await?.get_job(pb::GetJobRequest { name }).await.map_err(status)?.into_inner();
            let job = r.job.unwrap_or_default();
            if json {
                let mut v = render::job_json(&job);
                v["events"] = r.events.iter().map(render::event_json).collect();
                print_json(&v)?;
            } else {
                out!("{}", render::job_detail(&job, &r.events))?;
            }
        }
        Cmd::Tasks { name } => {
            let tasks = connect(&cli.master)
                .await?
                .list_tasks(pb::ListTasksRequest { job: name })
                .await
                .map_err(status)?
                .into_inner()
                .tasks;
            if json {
                print_json(&tasks.iter().map(render::task_json).collect())?;
            } else {
                outln!("{}", render::tasks_table(&tasks))?;
            }
        }
        Cmd::Kill { name } => {
            let r = connect(&cli.master)
                .await?
                .kill_job(pb::KillJobRequest { name: name.clone() })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                print_json(
                    &serde_json::json!({"job": name, "killed": r.killed, "already_finished": r.already_finished}),
                )?;
            } else if r.already_finished {
                outln!("job {name} had already finished: nothing to kill (`borgctl delete {name}` removes it)")?;
            } else {
                outln!("job {name} killed ({} tasks stopped)", r.killed)?;
            }
        }
        Cmd::Delete { names } => {
            let mut c = connect(&cli.master).await?;
            for name in &names {
                c.delete_job(pb::DeleteJobRequest { name: name.clone() }).await.map_err(status)?;
                if json {
                    print_json(&serde_json::json!({"job": name, "deleted": true}))?;
                } else {
                    outln!("job {name} deleted")?;
                }
            }
        }
        Cmd::Machines => {
            let ms = connect(&cli.master)
                .await?
                .list_machines(pb::ListMachinesRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .machines;
            if json {
                print_json(&ms.iter().map(render::machine_json).collect())?;
            } else {
                outln!("{}", render::machines_table(&ms))?;
            }
        }
        Cmd::Logs { name, index, stderr, tail } => {
            let stream = if stderr { pb::LogStream::Stderr } else { pb::LogStream::Stdout } as i32;
            let r = connect(&cli.master)
                .await?
                .task_logs(pb::TaskLogsRequest { job: name, index, stream, tail_bytes: tail })
                .await
                .map_err(status)?
                .into_inner();
            use std::io::Write;
            std::io::stdout().write_all(&r.data)?;
        }
        Cmd::Top { what } => {
            let mut c = connect(&cli.master).await?;
            let (json_rows, table) = match what {
                TopWhat::Machines => {
                    let ms = c.list_machines(pb::ListMachinesRequest {}).await.map_err(status)?.into_inner().machines;
                    (ms.iter().map(render::machine_json).collect(), render::top_machines(&ms))
                }
                TopWhat::Jobs => {
                    let jobs = c.list_jobs(pb::ListJobsRequest {}).await.map_err(status)?.into_inner().jobs;
                    (jobs.iter().map(render::job_json).collect(), render::top_jobs(&jobs))
                }
                TopWhat::Users => {
                    let jobs = c.list_jobs(pb::ListJobsRequest {}).await.map_err(status)?.into_inner().jobs;
                    let users = render::users(&jobs);
                    (users.iter().map(render::user_json).collect(), render::top_users(&users))
                }
            };
            if json {
                print_json(&json_rows)?;
            } else {
                outln!("{table}")?;
            }
        }
        Cmd::Cell { what: CellWhat::Usage } => {
            let u =
                connect(&cli.master).await?.get_cell_usage(pb::CellUsageRequest {}).await.map_err(status)?.into_inner();
            if json {
                print_json(&render::cell_usage_json(&u))?;
            } else {
                out!("{}", render::cell_usage_text(&u))?;
            }
        }
        Cmd::Quota { action: QuotaCmd::Set { user, band, resources } } => {
            let (given, named) =
                borg_spec::quantity::parse_resources_named(&resources.join(",")).map_err(|e| anyhow!("{e}"))?;
            let mut c = connect(&cli.master).await?;
            let req = pb::SetQuotaRequest {
                user: user.clone(),
                band: band.clone(),
                limit: Some(borg_spec::convert::resources_to_pb(given)),
                dimensions: named.iter().map(|d| d.to_string()).collect(),
            };
            let now = c.set_quota(req).await.map_err(status)?.into_inner().limit;
            let limit = borg_spec::convert::resources_from_pb(now.as_ref());
            if json {
                print_json(
                    &serde_json::json!({"user": user, "band": band, "limit": {"cpu_millis": limit.cpu_millis, "ram_bytes": limit.ram_bytes, "disk_bytes": limit.disk_bytes}}),
                )?;
            } else {
                outln!("quota of {user} at {band}: {limit}")?;
            }
        }
        Cmd::Quota { action: QuotaCmd::Get { user } } => {
            let rows = connect(&cli.master)
                .await?
                .get_quota(pb::GetQuotaRequest { user: user.unwrap_or_default() })
                .await
                .map_err(status)?
                .into_inner()
                .rows;
            if json {
                print_json(&rows.iter().map(render::quota_json).collect())?;
            } else {
                outln!("{}", render::quota_table(&rows))?;
            }
        }
        // handled before connecting (local files only)
        Cmd::Certs { .. } => {}
        Cmd::Replicas { action } => {
            let mut c = connect(&cli.master).await?;
            let voters = match action.unwrap_or(ReplicasCmd::List) {
                ReplicasCmd::List => {
                    let rs = c.list_replicas(pb::ListReplicasRequest {}).await.map_err(status)?.into_inner().replicas;
                    if json {
                        print_json(&rs.iter().map(render::replica_json).collect())?;
                    } else {
                        outln!("{}", render::replicas_table(&rs))?;
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                ReplicasCmd::Add { id, address } => {
                    c.add_replica(pb::AddReplicaRequest { id, address }).await.map_err(status)?.into_inner().voters
                }
                ReplicasCmd::Remove { id } => {
                    c.remove_replica(pb::RemoveReplicaRequest { id }).await.map_err(status)?.into_inner().voters
                }
            };
            if json {
                print_json(&serde_json::json!({ "voters": voters }))?;
            } else {
                outln!("voters: {}", voters.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))?;
            }
        }
        Cmd::Events { job, limit } => {
            let events = connect(&cli.master)
                .await?
                .list_events(pb::ListEventsRequest { job: job.unwrap_or_default(), limit })
                .await
                .map_err(status)?
                .into_inner()
                .events;
            if json {
                print_json(&events.iter().map(render::event_json).collect())?;
            } else {
                outln!("{}", render::events_table(&events))?;
            }
        }
        Cmd::Allocs => {
            let mut c = connect(&cli.master).await?;
            let jobs = c.list_jobs(pb::ListJobsRequest {}).await.map_err(status)?.into_inner().jobs;
            let mut rows = Vec::new();
            for j in &jobs {
                let s = j.spec.clone().unwrap_or_default();
                if s.kind != pb::JobKind::AllocSet as i32 {
                    continue;
                }
                let allocs = c
                    .list_tasks(pb::ListTasksRequest { job: s.name.clone() })
                    .await
                    .map_err(status)?
                    .into_inner()
                    .tasks;
                // tasks of the jobs that run in this alloc set
                let mut inside: Vec<(u32, String)> = Vec::new();
                for user in jobs.iter().filter(|u| u.spec.as_ref().is_some_and(|x| x.alloc_set == s.name)) {
                    let name = user.spec.clone().unwrap_or_default().name;
                    for t in c
                        .list_tasks(pb::ListTasksRequest { job: name.clone() })
                        .await
                        .map_err(status)?
                        .into_inner()
                        .tasks
                    {
                        if let Some(a) = t.alloc {
                            inside.push((a, format!("{name}/{}", t.index)));
                        }
                    }
                }
                for a in allocs {
                    let tasks: Vec<String> =
                        inside.iter().filter(|(i, _)| *i == a.index).map(|(_, n)| n.clone()).collect();
                    rows.push(serde_json::json!({
                        "alloc_set": s.name, "index": a.index, "state": render::task_state(a.state),
                        "machine": a.machine, "reserved": s.resources.map(|r| serde_json::json!({"cpu_millis": r.cpu_millis, "ram_bytes": r.ram_bytes, "disk_bytes": r.disk_bytes})),
                        "tasks": tasks,
                    }));
                }
            }
            if json {
                print_json(&serde_json::Value::Array(rows))?;
            } else {
                outln!("{}", render::allocs_table(&rows))?;
            }
        }
        Cmd::Bench { prefix, jobs, tasks_per_job, cpu, ram, priority, concurrency, timeout, tasks_csv } => {
            use borg_spec::quantity::{parse_bytes, parse_cpu, Scalar};
            let cpu = parse_cpu(&Scalar::Str(cpu)).map_err(|e| anyhow!("--cpu: {e}"))?;
            let ram = parse_bytes(&Scalar::Str(ram)).map_err(|e| anyhow!("--ram: {e}"))?;
            let priority = match scheduler_core::Band::from_name(&priority) {
                Some(b) => b.base_priority().0,
                None => {
                    priority.parse().map_err(|_| anyhow!("--priority: {priority:?} is not a band or an integer"))?
                }
            };
            // one HTTP/2 channel carries every concurrent apply; 120 s per call
            let addrs = borg_spec::client::master_addresses(&cli.master).map_err(|e| anyhow!("--master: {e}"))?;
            let (_, ch) =
                borg_spec::client::connect_any(&addrs, credentials(), Duration::from_secs(5), Duration::from_secs(120))
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
            let client = BorgmasterClient::new(ch);
            let spec = borgctl::bench::BenchSpec {
                prefix,
                jobs,
                tasks_per_job,
                resources: scheduler_core::Resources::new(cpu, ram, 0),
                priority,
                concurrency,
                timeout: Duration::from_secs(timeout),
            };
            let specs = match &tasks_csv {
                Some(p) => borgctl::bench::jobs_from_csv(p, &spec.prefix)?,
                None => borgctl::bench::synthetic_jobs(&spec),
            };
            let r = borgctl::bench::run(client, &spec, specs).await?;
            if json {
                print_json(&r)?;
            } else {
                outln!(
                    "{} of {} tasks ({} jobs, concurrency {}) running {:.3} s after the first apply: {:.0} tasks/s\n  apply -> bound:   p50 {} ms, p90 {} ms, p99 {} ms\n  apply -> running: p50 {} ms, p90 {} ms, p99 {} ms",
                    r["running"], r["tasks"], r["jobs"], r["concurrency"], r["seconds"].as_f64().unwrap_or(0.0), r["tasks_per_second"].as_f64().unwrap_or(0.0),
                    r["apply_to_bound"]["p50_ms"], r["apply_to_bound"]["p90_ms"], r["apply_to_bound"]["p99_ms"],
                    r["apply_to_running"]["p50_ms"], r["apply_to_running"]["p90_ms"], r["apply_to_running"]["p99_ms"],
                )?;
            }
        }
        Cmd::WhyPending { name } => {
            let job = connect(&cli.master)
                .await?
                .get_job(pb::GetJobRequest { name: name.clone() })
                .await
                .map_err(status)?
                .into_inner()
                .job
                .unwrap_or_default();
            if json {
                let reasons: std::collections::BTreeMap<&String, &u32> = job.why_pending_reasons.iter().collect();
                print_json(&serde_json::json!({
                    "job": name, "pending": job.pending, "why_pending": job.why_pending,
                    "machines": job.why_pending_machines, "reasons": reasons,
                }))?;
            } else if job.pending == 0 {
                outln!("job {name}: no pending tasks")?;
            } else if job.why_pending.is_empty() {
                outln!(
                    "job {name}: {} pending tasks, placed on machines and starting, or not yet tried by the scheduler",
                    job.pending
                )?;
            } else {
                outln!("job {name}: {} pending tasks: {}", job.pending, job.why_pending)?;
            }
        }
        Cmd::Wait { name, until, timeout } => {
            let mut c = connect(&cli.master).await?;
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                let tasks =
                    c.list_tasks(pb::ListTasksRequest { job: name.clone() }).await.map_err(status)?.into_inner().tasks;
                let want = match until {
                    Until::Running => pb::TaskState::Running,
                    Until::Done => pb::TaskState::Dead,
                } as i32;
                if tasks.iter().all(|t| t.state == want) {
                    if json {
                        print_json(&tasks.iter().map(render::task_json).collect())?;
                    } else {
                        outln!("{}", render::tasks_table(&tasks))?;
                    }
                    break;
                }
                if Instant::now() >= deadline {
                    eprintln!("borgctl: timed out after {timeout}s waiting for job {name}");
                    outln!("{}", render::tasks_table(&tasks))?;
                    return Ok(ExitCode::from(2));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `borgctl certs ...`: runs locally, touches only files.
fn certs(action: &CertsCmd, cli: &Cli) -> anyhow::Result<ExitCode> {
    use borg_spec::auth::{init_ca, issue, Credentials, Identity, Role};
    match action {
        CertsCmd::Init { ca, cell } => {
            init_ca(ca, cell).map_err(|e| anyhow!("{e}"))?;
            outln!("cell CA created in {} (ca.pem; keep ca.key secret)", ca.display())?;
        }
        CertsCmd::Issue { ca, role, name, host, out } => {
            let id = Identity::new(Role::parse(role).map_err(|e| anyhow!("--role: {e}"))?, name.clone());
            let hosts: Vec<String> = host.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
            issue(ca, &id, &hosts, out).map_err(|e| anyhow!("{e}"))?;
            outln!("issued {} ({}) into {}", id, id.uri(), out.display())?;
        }
        CertsCmd::Show { dir } => {
            let dir = dir.clone().or_else(|| cli.credentials.clone()).ok_or_else(|| anyhow!("give a directory"))?;
            let c = Credentials::load(&dir).map_err(|e| anyhow!("{e}"))?;
            outln!("{} ({})", c.identity, c.identity.uri())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // an empty variable counts as unset (`export BORG_CREDENTIALS=` turns credentials off
    // rather than being an error), as shells and most tools treat it
    for var in ["BORG_MASTER", "BORG_CREDENTIALS"] {
        if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(var);
        }
    }
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        // the reader of our output went away (`borgctl jobs | head`): nothing left to say
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borgctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Whether `e` comes from writing to a pipe or socket whose reader has gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
