//! `sluice-bench <case>`: runs one benchmark job on the embedded cluster and prints one line
//! with records per second, records per CPU-second (records ÷ this process's CPU time) and
//! peak RSS. Run each case in a fresh process (as `bench/run.sh` does) so RSS is its own.
//! Records per second are over the whole job, and also up to the moment the source generated
//! its last record (`records_per_s_to_input_end`): what follows that moment (the end of the
//! job, and with checkpoints its final checkpoint) is a cost per job, not per record, and
//! `input_end_to_done_ms` shows it.
//!
//! Cases (the word-count shape is the Flink reference job's: generated strings
//! `words[i % 10] + (i % K)`, flat_map to `(word, 1)`, key_by, sum, discarding sink, p = 1):
//! - `stateless`: generator → map → filter → discarding sink
//! - `wordcount --backend hashmap|rocksdb [--keys K]`

/// Records are allocated on one task thread and freed on another; mimalloc handles that
/// far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use sluice::prelude::*;
use sluice_bench::{peak_rss_bytes, process_cpu_time};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    case: Case,
    /// Records to generate.
    #[arg(long, global = true, default_value_t = 30_000_000)]
    records: u64,
    /// Configuration overrides with Flink's key names.
    #[arg(short = 'D', global = true, value_name = "KEY=VALUE")]
    config: Vec<String>,
}

#[derive(Subcommand)]
enum Case {
    /// generator → map → filter → discarding sink.
    Stateless,
    /// The Flink reference word count.
    Wordcount {
        #[arg(long, default_value = "hashmap")]
        backend: String,
        /// Distinct numbers per word: 10007 gives 100,070 keys (the reference), 100003 about 1 M.
        #[arg(long, default_value_t = 10_007)]
        keys: u64,
    },
}

const WORDS: [&str; 10] = [
    "alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota", "kappa",
];

fn main() -> Result<()> {
    let args = Args::parse();
    let env = StreamEnv::from_config_file(None, &args.config)?;
    env.set_parallelism(1);
    let n = args.records;
    // When the source generated its last record (the job runs at parallelism 1).
    let input_end = Arc::new(OnceLock::<Instant>::new());
    let last = {
        let input_end = input_end.clone();
        move |i: u64| {
            if i + 1 == n {
                let _first_only = input_end.set(Instant::now());
            }
        }
    };
    let name = match &args.case {
        Case::Stateless => {
            env.generate(Some(n), None, move |i| {
                last(i);
                i
            })
            .map(|i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .filter(|x: &u64| x & 1 == 0 || x & 2 == 0)
            .discard();
            "stateless".to_string()
        }
        Case::Wordcount { backend, keys } => {
            env.set("state.backend.type", backend)?;
            let k = *keys;
            env.generate(Some(n), None, move |i| {
                last(i);
                let mut s = String::with_capacity(16);
                s.push_str(WORDS[(i % 10) as usize]);
                s.push_str(itoa::Buffer::new().format(i % k));
                s
            })
            .flat_map(|s: String| std::iter::once((s, 1u64)))
            .key_by_field(|r: &(String, u64)| &r.0)
            .sum()
            .discard();
            format!("wordcount backend={backend} keys={}", k * 10)
        }
    };
    let cpu0 = process_cpu_time();
    let t0 = Instant::now();
    let result = env.execute("bench")?;
    let done = Instant::now();
    let wall = (done - t0).as_secs_f64();
    let cpu = (process_cpu_time() - cpu0).as_secs_f64();
    // A job that generated nothing never reached the end of its input: it ended there.
    let input_end = input_end.get().copied().unwrap_or(done);
    let to_input_end = (input_end - t0).as_secs_f64();
    println!(
        "sluice {name} records={n} seconds={wall:.2} records_per_s={:.0} cpu_s={cpu:.2} records_per_cpu_s={:.0} peak_rss_mib={:.1} records_per_s_to_input_end={:.0} input_end_to_done_ms={:.0}",
        n as f64 / wall,
        n as f64 / cpu,
        peak_rss_bytes() as f64 / (1 << 20) as f64,
        n as f64 / to_input_end,
        (done - input_end).as_secs_f64() * 1e3
    );
    let _ = result;
    Ok(())
}
