//! One module per command family (the mini-redis `cmd/` shape); [`run`] dispatches.

mod bench;
mod cell;
mod certs;
mod jobs;
mod quota;
mod replicas;
mod rollout;
mod task;
mod watch;

use crate::cli::{CellWhat, Cli, Cmd, Output, QuotaCmd};
use crate::conn::load_credentials;
use crate::output::FORMAT;
use std::process::ExitCode;

/// What every command needs: where the master is and whether to print JSON/YAML.
pub struct Cx {
    /// The `--master` value.
    pub master: String,
    /// `-o json` or `-o yaml` (else tables).
    pub json: bool,
}

/// Runs the command `cli` names.
///
/// Errors: the command's (unreadable file, unreachable master, refused request).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let _ = FORMAT.set(cli.output);
    if let Cmd::Certs { action } = &cli.command {
        return certs::certs(action, &cli);
    }
    if let Some(c) = load_credentials(&cli)? {
        borg_rpc::auth::install(c);
    }
    let cx = Cx { master: cli.master.clone(), json: cli.output != Output::Table };
    match cli.command {
        Cmd::Apply { file, dry_run, expected_version } => jobs::apply(&cx, file, dry_run, expected_version).await,
        Cmd::Jobs => jobs::jobs(&cx).await,
        Cmd::Job { name, linearizable } => jobs::job(&cx, name, linearizable).await,
        Cmd::Tasks { name, watch: false } => jobs::tasks(&cx, name).await,
        Cmd::Tasks { name, watch: true } => watch::tasks(&cx, name).await,
        Cmd::Kill { name } => jobs::kill(&cx, name).await,
        Cmd::Delete { names } => jobs::delete(&cx, names).await,
        Cmd::Logs { name, index, stderr, tail, tail_bytes, follow, all } => {
            let how = task::LogArgs { stderr, tail, tail_bytes };
            match (follow, all, index) {
                (true, true, _) => task::follow_all(&cx, name, how).await,
                (true, false, Some(i)) => task::follow(&cx, name, i, how).await,
                (_, _, i) => task::logs(&cx, name, i.unwrap_or(0), how).await,
            }
        }
        Cmd::Exec { name, index, command } => task::exec(&cx, name, index, command).await,
        Cmd::Restart { name, indices } => task::restart(&cx, name, indices).await,
        Cmd::Queue { band } => cell::queue(&cx, band).await,
        Cmd::Cron { action } => jobs::cron(&cx, action).await,
        Cmd::Events { job, limit, watch: false } => jobs::events(&cx, job, limit).await,
        Cmd::Events { job, limit, watch: true } => watch::events(&cx, job, limit).await,
        Cmd::WhyPending { name } => jobs::why_pending(&cx, name).await,
        Cmd::Wait { name, until, timeout } => jobs::wait(&cx, name, until, timeout).await,
        Cmd::Machines { action: None } => cell::machines(&cx).await,
        Cmd::Machines { action: Some(a) } => cell::maintain(&cx, a).await,
        Cmd::Top { what } => cell::top(&cx, what).await,
        Cmd::Cell { what: CellWhat::Usage } => cell::usage(&cx).await,
        Cmd::Allocs => cell::allocs(&cx).await,
        Cmd::Quota { action: QuotaCmd::Set { user, band, resources } } => quota::set(&cx, user, band, resources).await,
        Cmd::Quota { action: QuotaCmd::Get { user } } => quota::get(&cx, user).await,
        Cmd::Replicas { action } => replicas::replicas(&cx, action).await,
        Cmd::Bench(a) => bench::bench(&cx, a).await,
        Cmd::Resolve { name, watch } => jobs::resolve(&cx, name, watch).await,
        Cmd::Rollout { action } => rollout::rollout(&cx, action).await,
        // handled above (local files only)
        Cmd::Certs { .. } => Ok(ExitCode::SUCCESS),
    }
}
