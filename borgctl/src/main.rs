//! `borgctl`: the command-line client of a Borg cell.
//!
//! Exit codes: 0 success; 1 error (bad spec, unreachable master, refused request); 2 a dry run
//! found tasks that cannot be placed, or `wait` timed out.

#[macro_use]
mod output;
mod cli;
mod cmd;
mod conn;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // an empty variable counts as unset (`export BORG_CREDENTIALS=` turns credentials off
    // rather than being an error), as shells and most tools treat it
    for var in ["BORG_MASTER", "BORG_CREDENTIALS"] {
        if std::env::var_os(var).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(var);
        }
    }
    let cli = cli::Cli::parse();
    match cmd::run(cli).await {
        Ok(code) => code,
        // the reader of our output went away (`borgctl jobs | head`): nothing left to say
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("borgctl: {e:#}");
            ExitCode::from(1)
        }
    }
}
