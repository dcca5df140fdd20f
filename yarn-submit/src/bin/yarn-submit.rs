//! `yarn-submit`: see the `sluice_yarn_submit` crate.

use std::process::ExitCode;

use clap::Parser;
use sluice_yarn_submit::args::Args;
use sluice_yarn_submit::{SubmitOptions, commands, follow, submit};

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // An error may leave the bundle's verification running on a blocking thread: exit
    // without waiting for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.list {
        print!("{}", commands::list(args.all).await?);
        return Ok(());
    }
    if let Some(id) = &args.status {
        print!("{}", commands::status(id).await?);
        return Ok(());
    }
    if let Some(id) = &args.kill {
        let k = commands::kill(id).await?;
        let r = &k.report;
        if k.had_ended {
            println!(
                "Application {id} had already ended: {} ({}). Its staging directory is removed.",
                r.state, r.final_status
            );
        } else {
            println!("Killed application {id}: {} ({}).", r.state, r.final_status);
        }
        if let Some(base) = &k.removed.zk_base {
            println!("Removed its high-availability nodes {base} from ZooKeeper.");
        }
        if let Some(dir) = &k.removed.ha_dir {
            println!("Removed its high-availability directory {dir}.");
        }
        return Ok(());
    }
    let Some(bundle) = args.bundle.clone() else {
        anyhow::bail!("give a job bundle, or --list, --status or --kill");
    };
    let opts = SubmitOptions {
        bundle,
        overrides: args.overrides(),
        job_args: args.job_args.clone(),
    };
    let s = submit::submit(&opts).await?;
    println!("Application {}", s.app_id);
    let report = follow::until_accepted(&s.rm, &s.app_id).await?;
    let tracking = if report.tracking_url.is_empty() {
        s.rm.app_page(&s.app_id)
    } else {
        report.tracking_url.clone()
    };
    println!("Tracking URL: {tracking}");
    if args.detached {
        println!(
            "Detached: follow it with `yarn-submit --status {0}`, stop it with `yarn-submit --kill {0}`.",
            s.app_id
        );
        return Ok(());
    }
    follow::follow(&s.rm, &s.app_id, &s.staging).await?;
    Ok(())
}
