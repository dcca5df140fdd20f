//! Kafka helpers shared by the Kafka test files (`kafka*.rs`): the broker's address, topics,
//! producing, and reading a topic as a `read_committed` consumer. Each test file is its own
//! crate, includes this file with `#[path = "common/kafka.rs"] mod kafka_common;` and uses a
//! part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sluice_integration_tests::{TestCluster, unique};

/// The keys of the counting tests: value `i` has key `k<i % KEYS>`.
pub const KEYS: u64 = 13;

/// The bootstrap address of the test cluster's broker, started if it is down.
pub fn bootstrap() -> String {
    TestCluster::ensure_up(&["kafka"])
        .expect("the test cluster's Kafka broker must be up")
        .kafka_bootstrap()
        .to_string()
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap()
}

/// Creates `topic` with `partitions` partitions (replication 1: one broker).
pub async fn create_topic_async(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<()> {
    let results = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// [`create_topic_async`] for tests without a runtime of their own.
pub fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_topic_async(bootstrap, topic, partitions))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Grows `topic` to `total` partitions.
pub fn add_partitions(bootstrap: &str, topic: &str, total: usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt
        .block_on(admin(bootstrap).create_partitions(
            &[NewPartitions::new(topic, total)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("adding partitions to {t}: {e}"));
    }
}

/// An idempotent producer: a retried send never writes a record twice.
pub fn producer(bootstrap: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap()
}

/// Sends `record`, waiting for room while the producer's queue is full.
pub fn send<K: ToBytes + ?Sized, P: ToBytes + ?Sized>(
    producer: &BaseProducer,
    mut record: BaseRecord<'_, K, P>,
) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
        }
    }
}

/// Produces values `from..to` keyed `k<value % KEYS>`.
pub fn produce(bootstrap: &str, topic: &str, from: u64, to: u64) {
    let producer = producer(bootstrap);
    for i in from..to {
        let key = format!("k{}", i % KEYS);
        let value = i.to_string();
        send(&producer, BaseRecord::to(topic).key(&key).payload(&value));
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// The running counts of a failure-free count per key over the values `0..count` of
/// [`produce`], as the counting jobs write them: key `k`, value `k,n`.
pub fn expected_counts(count: u64) -> Vec<(String, String)> {
    let mut per_key: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..count {
        *per_key.entry(format!("k{}", i % KEYS)).or_default() += 1;
    }
    let mut out = Vec::new();
    for (k, c) in per_key {
        for n in 1..=c {
            out.push((k.clone(), format!("{k},{n}")));
        }
    }
    out
}

/// What a consumer with `isolation` (`read_committed` or `read_uncommitted`) sees in `topic`
/// from the beginning, as `(key, value)`: polls until `expected` records arrived and then
/// `quiet` longer for any extra, or until `deadline`.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    expected: usize,
    quiet: Duration,
    deadline: Instant,
) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .set("group.id", unique("kafka-check"))
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let mut quiet_until: Option<Instant> = None;
    loop {
        if out.len() >= expected && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + quiet);
        }
        if quiet_until.is_some_and(|q| Instant::now() > q) || Instant::now() > deadline {
            break;
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                out.push((text(m.key()), text(m.payload())));
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

/// [`read_topic`] as a `read_committed` consumer (what a downstream exactly-once reader sees).
pub fn read_committed(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    quiet: Duration,
    deadline: Instant,
) -> Vec<(String, String)> {
    read_topic(
        bootstrap,
        topic,
        "read_committed",
        expected,
        quiet,
        deadline,
    )
}

/// The sum over the partitions of `topic` of their log end offsets: the records written plus
/// the control records (commit and abort markers) transactions left.
pub fn log_end_offsets(bootstrap: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(30))
                .unwrap()
                .1
        })
        .sum()
}
