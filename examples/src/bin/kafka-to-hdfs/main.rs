//! Kafka → HDFS: reads JSON events `{"id": 7, "user": "...", "amount": 12, "ts": <ms>}` from
//! Kafka, keeps a running total per user (keyed state; `-D state.backend.type=rocksdb` for
//! RocksDB) and writes each event with its user's total as a CSV line `id,user,amount,ts,total`
//! into part files under `<output>/dt=YYYY-MM-DD/hour=HH/` (the event's UTC date and hour), on
//! HDFS (`hdfs://namenode/dir`) or a local disk (`file:///dir`).
//!
//! The output is exactly-once with checkpointing on (`-D execution.checkpointing.interval=5s`):
//! a subtask stages the lines of each checkpoint in `<output>/_staging/<subtask>/` and renames
//! them into their hour's directory when the checkpoint completes (see [`hour_files`]). Without
//! checkpointing a part is published at the end of a bounded read only.
//!
//! `kafka-to-hdfs --bootstrap HOST:PORT --topic T --output URL
//! [--startup-mode earliest-offset|latest-offset|group-offsets|timestamp:<ms>] [--group G]
//! [--bounded] [--ignore-parse-errors] [-p N] [-D key=value]...`
//!
//! After a crash, `-D execution.state-recovery.path=<checkpoint dir>` resumes at the
//! checkpointed offsets, at any parallelism; its staged parts are published, later ones dropped.

/// Records cross task threads; mimalloc frees them cheaply on the receiving side.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::Parser;
use serde::{Deserialize, Serialize};
use sluice::StreamEnv;
use sluice_kafka::{JsonValues, KafkaSourceBuilder, KafkaStreamEnvExt};

mod hour_files;

#[derive(Parser)]
#[command(about = "Running totals of JSON events from Kafka into exactly-once CSV files per hour")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: String,
    /// The topic to read (`;`-separated for several).
    #[arg(long)]
    topic: String,
    /// Directory of the hourly directories: `hdfs://namenode/dir` or `file:///dir`.
    #[arg(long, value_name = "URL")]
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

#[derive(Debug, Clone, Deserialize, Serialize)]
struct Event {
    id: u64,
    user: String,
    amount: i64,
    /// Event time, ms since the epoch.
    ts: i64,
    /// The user's total including this event (not in the input).
    #[serde(default)]
    total: i64,
}

fn main() -> Result<()> {
    let args = Args::parse_from(sluice::job_args());
    let env = StreamEnv::from_config_file(None, &args.config)?;
    if let Some(p) = args.parallelism {
        env.set_parallelism(p);
    }
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
    let sink = hour_files::HourFiles::new(&args.output)?;
    env.kafka_source("events", source, JsonValues::<Event>::new())
        .uid("kafka-events")
        .map(|e: Event| Event {
            total: e.amount,
            ..e
        })
        .uid("events")
        .key_by_field(|e: &Event| &e.user)
        .reduce(|acc: Event, e: Event| Event {
            total: acc.total + e.amount,
            ..e
        })
        .uid("totals")
        .map(|e: Event| {
            let line = format!(
                "{},{},{},{},{}\n",
                e.id,
                hour_files::csv_field(&e.user),
                e.amount,
                e.ts,
                e.total
            );
            (hour_files::hour_dir(e.ts), line)
        })
        .add_sink(&format!("Sink: CSV per hour {}", args.output), move || {
            sink.operator()
        })
        .uid("hour-files");
    let result = env.execute("Kafka to HDFS")?;
    eprintln!(
        "job {} {:?} in {:.2?}, {} restarts",
        result.job_id, result.status, result.duration, result.restarts
    );
    Ok(())
}
