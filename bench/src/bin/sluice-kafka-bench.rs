//! `sluice-kafka-bench --bootstrap HOST:PORT`: end-to-end throughput of Kafka → keyed count →
//! Kafka, exactly-once with checkpoints every 5 s, against a plain pass-through consumer →
//! producer over the same input in the same run (what the broker and client manage without
//! Sluice). Prints one line per case with records/s and records per CPU-second of this process
//! (the broker's CPU is not counted).
//!
//! Both cases read the same pre-produced topic (`--records` records, keys `k<i % keys>`,
//! `--partitions` partitions) from the beginning up to its end and write every output record
//! to a fresh topic.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use clap::Parser;
use sluice::prelude::*;
use sluice_bench::process_cpu_time;
use sluice_kafka::rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use sluice_kafka::rdkafka::client::DefaultClientContext;
use sluice_kafka::rdkafka::config::ClientConfig;
use sluice_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_kafka::rdkafka::message::Message;
use sluice_kafka::rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_kafka::rdkafka::{Offset, TopicPartitionList};
use sluice_kafka::{
    BoundedMode, DeliveryGuarantee, KafkaDataStreamExt, KafkaSinkBuilder, KafkaSourceBuilder,
    KafkaStreamEnvExt, KeyValueStrings, StartingOffsets,
};

#[derive(Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Parallelism of the Sluice job.
    #[arg(short = 'p', long, default_value_t = 2)]
    parallelism: usize,
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{nanos}")
}

fn create_topics(bootstrap: &str, topics: &[&str], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for r in rt.block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))? {
        r.map_err(|(t, e)| anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

fn delete_topics(bootstrap: &str, topics: &[&str]) {
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        let _ignored = rt.block_on(admin.delete_topics(topics, &AdminOptions::new()));
    }
}

fn send(producer: &BaseProducer, topic: &str, key: &[u8], value: &[u8]) {
    loop {
        match producer.send(BaseRecord::to(topic).key(key).payload(value)) {
            Ok(()) => return,
            Err(_) => producer.poll(Duration::from_millis(5)),
        }
    }
}

fn producer(bootstrap: &str) -> Result<BaseProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?)
}

/// Consumes `input` from the beginning and produces every record to `output`.
fn pass_through(args: &Args, input: &str, output: &str) -> Result<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .set("group.id", unique("bench-pass-through"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.partitions {
        tpl.add_partition_offset(input, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let producer = producer(&args.bootstrap)?;
    let mut n = 0;
    while n < args.records {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                send(
                    &producer,
                    output,
                    m.key().unwrap_or_default(),
                    m.payload().unwrap_or_default(),
                );
                n += 1;
            }
            Some(Err(e)) => eprintln!("pass-through consumer: {e}"),
            None => {}
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(n)
}

/// Kafka → count per key → Kafka exactly-once, checkpoints every 5 s.
fn sluice_job(args: &Args, input: &str, output: &str) -> Result<u64> {
    let ck = tempfile::tempdir()?;
    let env = StreamEnv::new();
    env.set_parallelism(args.parallelism);
    env.set("execution.checkpointing.interval", "5 s")?;
    env.set(
        "state.checkpoints.dir",
        &format!("file://{}", ck.path().display()),
    )?;
    let source = KafkaSourceBuilder::new(&args.bootstrap)
        .topic(input)
        .starting_offsets(StartingOffsets::Earliest)
        .bounded(BoundedMode::Latest);
    let sink = KafkaSinkBuilder::new(&args.bootstrap, output)
        .delivery_guarantee(DeliveryGuarantee::ExactlyOnce)
        .transactional_id_prefix(output);
    env.kafka_source("input", source, KeyValueStrings)
        .uid("kafka-in")
        .map(|(k, _v): (Option<String>, String)| (k.unwrap_or_default(), 1u64))
        .key_by_field(|r: &(String, u64)| &r.0)
        .sum()
        .uid("counts")
        .sink_to_kafka(sink, |r: &(String, u64)| {
            (Some(r.0.as_bytes().to_vec()), r.1.to_string().into_bytes())
        })
        .uid("kafka-out");
    let r = env.execute("kafka bench")?;
    Ok(r.metrics.get("kafka-in").map_or(0, |m| m.records_out))
}

fn report(case: &str, records: u64, f: impl FnOnce() -> Result<u64>) -> Result<()> {
    let cpu = process_cpu_time();
    let start = Instant::now();
    let n = f()?;
    let wall = start.elapsed().as_secs_f64();
    let cpu = (process_cpu_time() - cpu).as_secs_f64();
    if n != records {
        eprintln!("{case}: read {n} records, expected {records}");
    }
    println!(
        "{case:<40} {n:>10} records  {:>8.2} s  {:>10.0} records/s  {:>10.0} records/CPU-s",
        wall,
        n as f64 / wall,
        n as f64 / cpu.max(1e-9)
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let input = unique("bench-in");
    let pass_out = unique("bench-pass-out");
    let job_out = unique("bench-job-out");
    let topics = [input.as_str(), pass_out.as_str(), job_out.as_str()];
    create_topics(&args.bootstrap, &topics, args.partitions)?;
    let result = (|| -> Result<()> {
        report("produce input", args.records, || {
            let producer = producer(&args.bootstrap)?;
            for i in 0..args.records {
                let key = format!("k{}", i % args.keys);
                send(&producer, &input, key.as_bytes(), i.to_string().as_bytes());
            }
            producer.flush(Duration::from_secs(120))?;
            Ok(args.records)
        })?;
        report("pass-through consumer -> producer", args.records, || {
            pass_through(&args, &input, &pass_out)
        })?;
        report(
            &format!("sluice keyed count exactly-once p={}", args.parallelism),
            args.records,
            || sluice_job(&args, &input, &job_out),
        )
    })();
    delete_topics(&args.bootstrap, &topics);
    result
}
