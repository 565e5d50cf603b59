//! borgctl's command line: the clap types (global flags, one variant per command).

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Output {
    /// Human-readable table.
    Table,
    /// JSON (stable field names).
    Json,
    /// YAML (the same fields as JSON).
    Yaml,
}

#[derive(Parser, Debug)]
#[command(version, about = "Client of a Borg cell: submit jobs, inspect tasks and machines.")]
pub struct Cli {
    /// Borgmaster address (host:port), or every replica's, comma-separated: the first that
    /// answers is used (any replica serves reads and forwards writes to the leader).
    #[arg(long, global = true, env = "BORG_MASTER", default_value = "127.0.0.1:9000")]
    pub master: String,
    /// Output format of listings.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// Your credentials (`ca.pem`, `cert.pem`, `key.pem`, from `borgctl certs issue`): mutual
    /// TLS to the cell. Default: `~/.config/borg/credentials` when it exists, else plain gRPC
    /// (for a master started with `--insecure`).
    #[arg(long, global = true, env = "BORG_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// Talk plain gRPC even when credentials are configured (to a master run with --insecure).
    #[arg(long, global = true)]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
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
        /// Read it linearizably: from the leader, once a quorum confirmed it still leads and its
        /// state holds every committed write (default: any replica's own copy, which may lag by
        /// a few entries).
        #[arg(long)]
        linearizable: bool,
    },
    /// List the tasks of a job.
    Tasks {
        /// Job name.
        name: String,
        /// Keep watching: print each task again when it changes, as the change commits
        /// (reconnecting to any replica after a failover).
        #[arg(long)]
        watch: bool,
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
    /// List the machines of the cell (state: up, cordoned, draining, drained, down), or, as an
    /// admin, take machines out for maintenance: `machines cordon|uncordon|drain|remove M...`.
    Machines {
        #[command(subcommand)]
        action: Option<MachinesCmd>,
    },
    /// Print the tail of a task's stdout (or stderr).
    Logs {
        /// Job name.
        name: String,
        /// Task index (not with --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        index: Option<u32>,
        /// Read stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Only the last N lines of what is there (of at most the last --tail-bytes).
        #[arg(long)]
        tail: Option<usize>,
        /// Bytes from the end to read; 0 means the Borglet's default, the last 64 KiB.
        #[arg(long, default_value_t = 0)]
        tail_bytes: u64,
        /// Keep following: print what the task writes until it ends.
        #[arg(short = 'f', long)]
        follow: bool,
        /// With -f: every task of the job, each line prefixed by its index (`[3] ...`).
        #[arg(long, requires = "follow")]
        all: bool,
    },
    /// Cron jobs (specs with a `schedule`): `cron list`, `cron suspend NAME`, `cron resume NAME`.
    Cron {
        #[command(subcommand)]
        action: CronCmd,
    },
    /// Pending jobs in the order the scheduler takes them: by priority, then fair share (each
    /// user's dominant share at the band), then backlog; jobs waiting for others (`after`) last.
    Queue {
        /// Only this band.
        #[arg(long)]
        band: Option<String>,
    },
    /// Restart a job's tasks (all, or those of --index) through the rolling-update path: one
    /// new version, each task replaced only while the job's max_unavailable allows (and, with
    /// readiness, once the last replacement is ready). Follow with `rollout status JOB --wait`.
    Restart {
        /// Job name.
        name: String,
        /// Only these task indices (repeatable).
        #[arg(long = "index")]
        indices: Vec<u32>,
    },
    /// Run a command inside a running task (its sandbox, cgroup, user and environment), with
    /// this terminal's stdin, stdout and stderr; exits with the command's code. Owner or
    /// admin; recorded as an `exec` event. `borgctl exec web 0 -- ls -l`
    Exec {
        /// Job name.
        name: String,
        /// Task index.
        index: u32,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
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
    /// `replicas remove ID`, `replicas snapshot`.
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
        /// Keep watching: print each new event as it commits (one JSON object per line with
        /// `-o json`), resuming from the last applied index through any replica after a
        /// failover.
        #[arg(long)]
        watch: bool,
    },
    /// Alloc sets and their allocs: machine, reservation, and the tasks inside each.
    Allocs,
    /// Why a job's tasks are pending: per-reason machine counts (Kubernetes style).
    WhyPending {
        /// Job name.
        name: String,
    },
    /// Load driver: apply many jobs concurrently, measure apply -> bound -> running per task.
    Bench(BenchArgs),
    /// Rolling updates: `rollout status JOB [--wait]`, `rollout history JOB`, `rollout undo JOB
    /// [--to-version N]`.
    Rollout {
        #[command(subcommand)]
        action: RolloutCmd,
    },
    /// Where a job's (or one task's) named ports listen: `resolve web`, `resolve web/0`,
    /// `resolve /bns/CELL/USER/JOB[/INDEX]` (Borg's BNS). Lists placed tasks with host, ports and
    /// readiness.
    Resolve {
        /// A job, `job/index`, or a BNS name.
        name: String,
        /// Keep watching: print the endpoints again each time they change (one JSON object per
        /// line with `-o json`), reconnecting to any replica and resuming after a failover.
        #[arg(long)]
        watch: bool,
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
pub enum QuotaCmd {
    /// Grant USER a quota at BAND (batch, production, monitoring); prints the limit now in force.
    Set {
        /// User.
        user: String,
        /// Band.
        band: String,
        /// Resources: cpu=2 ram=4Gi disk=10Gi. Dimensions not named keep their current limit
        /// (the user's grant at the band, or the cell default), like `kubectl set`. `weight=N`
        /// sets the user's fair-share weight at the band (default 1: a user of weight 2 is
        /// served as if it used half of what it does).
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
pub enum ReplicasCmd {
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
    /// Make the replica named by --master (one address) write a snapshot of its state now,
    /// e.g. before an upgrade; prints the log index it covers.
    Snapshot,
}

#[derive(Subcommand, Debug)]
pub enum CertsCmd {
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
pub enum TopWhat {
    /// One row per machine.
    Machines,
    /// One row per job.
    Jobs,
    /// One row per user (their jobs summed).
    Users,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum CellWhat {
    /// Capacity, allocated, used, free and stranded, by band.
    Usage,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Until {
    /// Every task running.
    Running,
    /// Every task dead (finished, failed or killed).
    Done,
}

/// `borgctl bench`'s flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Job name prefix.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Jobs to apply.
    #[arg(long, default_value_t = 1000)]
    pub jobs: usize,
    /// Tasks per job.
    #[arg(long, default_value_t = 1)]
    pub tasks_per_job: u32,
    /// Per-task CPU ("100m", "0.5").
    #[arg(long, default_value = "100m")]
    pub cpu: String,
    /// Per-task RAM ("500Mi").
    #[arg(long, default_value = "500Mi")]
    pub ram: String,
    /// Priority (band name or integer).
    #[arg(long, default_value = "batch")]
    pub priority: String,
    /// Applies in flight at once.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
    /// Seconds to wait for every task to run.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Stop waiting once no more tasks started for this many seconds (the rest does not fit);
    /// with 0, wait for every task (up to --timeout).
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// The synthetic jobs' rolling-update budget: how many of a job's tasks a later re-apply
    /// with a new request (--cpu, --ram) replaces at once (the spec's max_unavailable, >= 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_unavailable: u32,
    /// Apply the jobs of a tasks CSV (fauxmaster's neutral format, e.g. from `fauxmaster
    /// export`) instead of synthetic ones.
    #[arg(long)]
    pub tasks_csv: Option<PathBuf>,
    /// Then open this many WatchEndpoints streams on the first job and time how long each takes
    /// to see a new task ready (watch fan-out; 0: skip).
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// With --watchers: tasks added to the first job, one at a time, each timed.
    #[arg(long, default_value_t = 5)]
    pub watch_changes: u32,
}

/// `borgctl cron` actions.
#[derive(Subcommand, Debug)]
pub enum CronCmd {
    /// Every cron job: schedule, policy, last and next tick, runs.
    List,
    /// Skip its ticks until resumed (owner or admin).
    Suspend {
        /// Cron job name.
        name: String,
    },
    /// Tick again.
    Resume {
        /// Cron job name.
        name: String,
    },
}

/// `borgctl machines ...` actions (admin only).
#[derive(Subcommand, Debug)]
pub enum MachinesCmd {
    /// No new tasks on these machines; what runs there keeps running.
    Cordon {
        /// Machine ids.
        #[arg(required = true)]
        machines: Vec<String>,
    },
    /// Lift a cordon or a drain: the machines take new tasks again.
    Uncordon {
        /// Machine ids.
        #[arg(required = true)]
        machines: Vec<String>,
    },
    /// Cordon, then move the machines' tasks off: batch and free tasks at once (reason
    /// `drain`), production and monitoring ones within each job's disruption budget (its
    /// `max_unavailable`, counting every drain and rollout of the job). Ends `drained`.
    Drain {
        /// Machine ids (drained together, every job within its budget).
        #[arg(required = true)]
        machines: Vec<String>,
        /// After this long ("10m", "90s"), evict whatever is left regardless of budgets.
        #[arg(long)]
        deadline: Option<String>,
        /// Block until every machine is drained (exit 0), or --timeout passes (exit 2).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Forget machines. Refused while one holds live tasks (drain it first) unless --force,
    /// which sends them back to pending. A removed machine that registers again is new.
    Remove {
        /// Machine ids.
        #[arg(required = true)]
        machines: Vec<String>,
        /// Remove even machines that still hold tasks.
        #[arg(long)]
        force: bool,
    },
}

/// `borgctl rollout` actions.
#[derive(Subcommand, Debug)]
pub enum RolloutCmd {
    /// Version, tasks updated and ready, and why it is paused. Exits 0 when complete (every
    /// live task on the current version and ready), 2 when paused, 3 while in progress.
    Status {
        /// Job name.
        name: String,
        /// Block until the rollout completes (exit 0) or pauses (exit 2).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 3).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// The job's last 10 versions, oldest first, with the fields each changed.
    History {
        /// Job name.
        name: String,
    },
    /// Apply an earlier version's spec again (a new version, through the same readiness-gated
    /// rolling update); default: the version before the current one.
    Undo {
        /// Job name.
        name: String,
        /// The version whose spec to bring back.
        #[arg(long)]
        to_version: Option<u64>,
    },
}
