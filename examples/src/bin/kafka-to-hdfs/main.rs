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
use sluice_examples::kafka_events::{KafkaArgs, UserEvent, user_totals};

mod hour_files;

#[derive(Parser)]
#[command(about = "Running totals of JSON events from Kafka into exactly-once CSV files per hour")]
struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Directory of the hourly directories: `hdfs://namenode/dir` or `file:///dir`.
    #[arg(long, value_name = "URL")]
    output: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct Event {
    id: u64,
    user: String,
    amount: i64,
    /// Event time, ms since the epoch.
    ts: i64,
}

impl UserEvent for Event {
    fn user(&self) -> &String {
        &self.user
    }
    fn amount(&self) -> i64 {
        self.amount
    }
}

fn main() -> Result<()> {
    let args = Args::parse_from(sluice::job_args());
    let env = args.kafka.env()?;
    let sink = hour_files::HourFiles::new(&args.output)?;
    user_totals::<Event>(&env, &args.kafka)?
        .map(|(e, total): (Event, i64)| {
            let line = format!(
                "{},{},{},{},{}\n",
                e.id,
                hour_files::csv_field(&e.user),
                e.amount,
                e.ts,
                total
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
