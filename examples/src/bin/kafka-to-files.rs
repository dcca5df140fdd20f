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
use serde::{Deserialize, Serialize};
use sluice::RollingPolicy;
use sluice_examples::kafka_events::{KafkaArgs, UserEvent, user_totals};

#[derive(Parser)]
#[command(about = "Sums JSON events from Kafka per user into exactly-once JSON-lines files")]
struct Args {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Directory of the part files: a path or a `file://` URL.
    #[arg(long, value_name = "DIR")]
    output: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct Event {
    user: String,
    amount: i64,
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
    let dir = match args.output.split_once("://") {
        None => args.output.clone(),
        Some(("file", path)) => path.to_string(),
        Some((scheme, _)) => bail!("--output: {scheme}:// is not supported by the file sink"),
    };
    user_totals::<Event>(&env, &args.kafka)?
        .map(|(e, total): (Event, i64)| (e.user, total))
        .write_json_files(dir, RollingPolicy::default())
        .uid("files");
    let result = env.execute("Kafka to files")?;
    eprintln!(
        "job {} {:?} in {:.2?}",
        result.job_id, result.status, result.duration
    );
    Ok(())
}
