//! The `sluice` command line: runs job binaries and operates their jobs over the REST API.

mod args;
pub mod bundle;
mod client;
mod conf;
pub mod dispose;
mod inspect;
mod ops;
mod progress;
mod run;
mod submit;

use std::process::ExitCode;

use clap::Parser;

pub use args::{Cli, Command};

/// Runs the CLI on `std::env::args()`; what `main` of the `sluice` binary calls.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command; the exit code is the job's for an attached `run`, else 0.
pub fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Bundle(a) => bundle::command(a).map(|_| ExitCode::SUCCESS),
        Command::List(a) => ops::list(a).map(|_| ExitCode::SUCCESS),
        Command::Savepoint(a) => ops::savepoint(a).map(|_| ExitCode::SUCCESS),
        Command::Stop(a) => ops::stop(a).map(|_| ExitCode::SUCCESS),
        Command::Cancel(a) => ops::cancel(a).map(|_| ExitCode::SUCCESS),
        Command::Checkpoint(a) => ops::checkpoint(a).map(|_| ExitCode::SUCCESS),
        Command::Checkpoints(a) => match a.action {
            Some(args::CheckpointsAction::Gc(g)) => ops::gc(g).map(|_| ExitCode::SUCCESS),
            None => {
                let job_id = a.job_id.ok_or_else(|| {
                    anyhow::anyhow!("give a job id, or `gc <dir>` to clean a checkpoint directory")
                })?;
                ops::checkpoints(args::JobArgs {
                    address: a.address,
                    job_id,
                })
                .map(|_| ExitCode::SUCCESS)
            }
        },
        Command::Inspect(a) => inspect::inspect(a).map(|_| ExitCode::SUCCESS),
    }
}
