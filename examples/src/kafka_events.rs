//! What the Kafka examples (`kafka-to-files`, `kafka-to-hdfs`) share: their command line, the
//! Kafka source it configures, and the running total per user over JSON events.

use clap::Args;
use serde::de::DeserializeOwned;
use sluice::{Data, DataStream, StreamEnv};
use sluice_kafka::{JsonValues, KafkaSourceBuilder, KafkaStreamEnvExt};

/// The command-line options of the Kafka examples besides their output.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: String,
    /// The topic to read (`;`-separated for several).
    #[arg(long)]
    pub topic: String,
    /// Where partitions without checkpointed offsets start.
    #[arg(long, default_value = "earliest-offset")]
    pub startup_mode: String,
    /// Consumer group the offsets are committed to on checkpoints (monitoring only).
    #[arg(long)]
    pub group: Option<String>,
    /// Stop at the end of the partitions as of the start.
    #[arg(long)]
    pub bounded: bool,
    /// Skip and count malformed events instead of failing.
    #[arg(long)]
    pub ignore_parse_errors: bool,
    #[arg(short = 'p', long)]
    pub parallelism: Option<usize>,
    /// Configuration overrides with Flink's key names, e.g. -D state.backend.type=rocksdb.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    pub config: Vec<String>,
}

impl KafkaArgs {
    /// The job's environment: the configuration file, the `-D` overrides and `-p`.
    pub fn env(&self) -> anyhow::Result<StreamEnv> {
        let env = StreamEnv::from_config_file(None, &self.config)?;
        if let Some(p) = self.parallelism {
            env.set_parallelism(p);
        }
        Ok(env)
    }

    /// The Kafka source the options describe, with Flink's connector option names.
    pub fn source(&self) -> anyhow::Result<KafkaSourceBuilder> {
        let ignore = if self.ignore_parse_errors {
            "true"
        } else {
            "false"
        };
        let mut options = vec![
            ("topic", self.topic.as_str()),
            ("properties.bootstrap.servers", self.bootstrap.as_str()),
            ("scan.startup.mode", self.startup_mode.as_str()),
            ("format.ignore-parse-errors", ignore),
        ];
        if self.bounded {
            options.push(("scan.bounded.mode", "latest-offset"));
        }
        if let Some(g) = &self.group {
            options.push(("properties.group.id", g.as_str()));
        }
        Ok(KafkaSourceBuilder::from_options(options)?)
    }
}

/// A JSON event with a user and an amount (other fields are the example's own).
pub trait UserEvent: Data + DeserializeOwned {
    fn user(&self) -> &String;
    fn amount(&self) -> i64;
}

/// Reads JSON events from Kafka (operator `kafka-events`) and gives each event its user's
/// running total including it (keyed state of operator `totals`).
pub fn user_totals<E: UserEvent>(
    env: &StreamEnv,
    args: &KafkaArgs,
) -> anyhow::Result<DataStream<(E, i64)>> {
    Ok(env
        .kafka_source("events", args.source()?, JsonValues::<E>::new())
        .uid("kafka-events")
        .map(|e: E| {
            let amount = e.amount();
            (e, amount)
        })
        .uid("events")
        .key_by_field(|r: &(E, i64)| r.0.user())
        .reduce(|acc: (E, i64), (e, amount): (E, i64)| (e, acc.1 + amount))
        .uid("totals"))
}
