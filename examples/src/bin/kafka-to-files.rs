//! Kafka → files: reads JSON events `{"user": "...", "amount": 12, ...}` from a Kafka topic,
//! keeps a running total per user (keyed state; `-D state.backend.type=rocksdb` for RocksDB)
//! and writes every update as a JSON line `["user",total]` into rolling part files, exactly-once
//! when checkpointing is on (`-D execution.checkpointing.interval=5s`).
//!
//! `kafka-to-files --bootstrap HOST:PORT --topic T --output DIR|file:///DIR
//! [--startup-mode earliest-offset|latest-offset|group-offsets|timestamp:<ms>] [--group G]
//! [--bounded] [--ignore-parse-errors] [-p N] [-D key=value]...`
//!
//! Malformed events fail the job naming their offset, or with `--ignore-parse-errors` are
//! skipped and counted.

/// Records cross task threads; mimalloc frees them cheaply on the receiving side.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Result, bail};
use clap::Parser;
use serde::Deserialize;
use sluice::{RollingPolicy, StreamEnv};
use sluice_kafka::{JsonValues, KafkaSourceBuilder, KafkaStreamEnvExt};

#[derive(Parser)]
#[command(about = "Sums JSON events from Kafka per user into exactly-once JSON-lines files")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: String,
    /// The topic to read (`;`-separated for several).
    #[arg(long)]
    topic: String,
    /// Directory of the part files: a path or a `file://` URL.
    #[arg(long, value_name = "DIR")]
    output: String,
    /// Where partitions without checkpointed offsets start.
    #[arg(long, default_value = "earliest-offset")]
    startup_mode: String,
    /// Consumer group the offsets are committed to on checkpoints (monitoring only).
    #[arg(long)]
    group: Option<String>,
    /// Stop at the end of the partitions as of the start.
    #[arg(long)]
    bounded: bool,
    /// Skip and count malformed events instead of failing.
    #[arg(long)]
    ignore_parse_errors: bool,
    #[arg(short = 'p', long)]
    parallelism: Option<usize>,
    /// Configuration overrides with Flink's key names, e.g. -D state.backend.type=rocksdb.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    config: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
struct Event {
    user: String,
    amount: i64,
}

fn main() -> Result<()> {
    let args = Args::parse_from(sluice::job_args());
    let env = StreamEnv::from_config_file(None, &args.config)?;
    if let Some(p) = args.parallelism {
        env.set_parallelism(p);
    }
    let dir = match args.output.split_once("://") {
        None => args.output.clone(),
        Some(("file", path)) => path.to_string(),
        Some((scheme, _)) => bail!("--output: {scheme}:// is not supported by the file sink"),
    };
    let ignore = if args.ignore_parse_errors {
        "true"
    } else {
        "false"
    };
    let mut options = vec![
        ("topic", args.topic.as_str()),
        ("properties.bootstrap.servers", args.bootstrap.as_str()),
        ("scan.startup.mode", args.startup_mode.as_str()),
        ("format.ignore-parse-errors", ignore),
    ];
    if args.bounded {
        options.push(("scan.bounded.mode", "latest-offset"));
    }
    if let Some(g) = &args.group {
        options.push(("properties.group.id", g.as_str()));
    }
    let source = KafkaSourceBuilder::from_options(options)?;
    env.kafka_source("events", source, JsonValues::<Event>::new())
        .uid("kafka-events")
        .map(|e: Event| (e.user, e.amount))
        .key_by_field(|r: &(String, i64)| &r.0)
        .sum()
        .uid("totals")
        .write_json_files(dir, RollingPolicy::default())
        .uid("files");
    let result = env.execute("Kafka to files")?;
    eprintln!(
        "job {} {:?} in {:.2?}",
        result.job_id, result.status, result.duration
    );
    Ok(())
}
