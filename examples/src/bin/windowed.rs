//! Counts generated clicks per user in tumbling event-time windows and prints each window.
//!
//! `windowed [--count N] [--rate R] [--users U] [--window-ms W] [-p P] [-D key=value]...`

/// Records cross task threads; mimalloc frees them cheaply on the receiving side.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::Parser;
use sluice::prelude::*;
use sluice_examples::windowed::{click, clicks_per_window};

#[derive(Parser)]
struct Args {
    /// Number of events (unbounded when not given).
    #[arg(long)]
    count: Option<u64>,
    /// Events per second over all subtasks (unlimited when not given).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 5)]
    users: u64,
    #[arg(long, default_value_t = 10_000)]
    window_ms: u64,
    /// Milliseconds of event time between consecutive events.
    #[arg(long, default_value_t = 100)]
    step_ms: i64,
    #[arg(short = 'p', long)]
    parallelism: Option<usize>,
    /// Configuration overrides, Flink key names.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    config: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let env = StreamEnv::from_config_file(None, &args.config)?;
    if let Some(p) = args.parallelism {
        env.set_parallelism(p);
    }
    let (users, step) = (args.users, args.step_ms);
    let clicks = env
        .generate(args.count, args.rate, move |i| {
            click(i, users, step, 3 * step)
        })
        .uid("clicks");
    clicks_per_window(
        &clicks,
        Duration::from_millis(args.window_ms),
        Duration::from_millis(5 * step as u64),
    )
    .print()
    .uid("print");
    let result = env.execute("windowed clicks")?;
    eprintln!(
        "job {} finished in {:.2?}; late records dropped: {}",
        result.job_id,
        result.duration,
        result.late_records_dropped()
    );
    Ok(())
}
