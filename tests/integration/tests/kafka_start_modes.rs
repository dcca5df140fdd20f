//! Starting positions of the Kafka source on the real broker (`scan.startup.mode`):
//! `timestamp`, `specific-offsets` and `group-offsets`, each reading a three-partition topic
//! to its end and checked record by record.
//!
//!   cargo test --release -p sluice-integration-tests --test kafka_start_modes -- --test-threads=1

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice::JobStatus;
use sluice::prelude::*;
use sluice_integration_tests::{TestCluster, unique};
use sluice_kafka::{KafkaSourceBuilder, KafkaStreamEnvExt, KeyValueStrings};
use sluice_testkit::assert_same;

const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 10;

fn bootstrap() -> String {
    TestCluster::ensure_up(&["kafka"])
        .expect("the test cluster's Kafka broker must be up")
        .kafka_bootstrap()
        .to_string()
}

/// A topic whose record `i` of partition `p` is valued `p/i` with timestamp `t0 + i s`;
/// returns `t0`.
fn topic_with_records(bootstrap: &str, topic: &str) -> i64 {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for r in rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap()
    {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - 600_000;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let value = format!("{p}/{i}");
            producer
                .send(
                    BaseRecord::<(), str>::to(topic)
                        .partition(p)
                        .timestamp(t0 + i * 1000)
                        .payload(&value),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    t0
}

/// Reads `topic` to its end with `options` added and returns the values.
fn read(bootstrap: &str, topic: &str, options: &[(&str, &str)]) -> Vec<String> {
    let mut all = vec![
        ("topic", topic),
        ("properties.bootstrap.servers", bootstrap),
        ("scan.bounded.mode", "latest-offset"),
    ];
    all.extend_from_slice(options);
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let source = KafkaSourceBuilder::from_options(all).unwrap();
    let (out, _sink) = env
        .kafka_source("start", source, KeyValueStrings)
        .map(|(_k, v): (Option<String>, String)| v)
        .collect();
    let r = env.execute("kafka start mode").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    out.get()
}

/// The values `p/i` for `i` from `from[p]` on.
fn from(first: [i64; PARTITIONS as usize]) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        for i in first[p as usize]..PER_PARTITION {
            out.push(format!("{p}/{i}"));
        }
    }
    out
}

#[test]
fn timestamp_specific_and_group_offsets() {
    let bootstrap = bootstrap();
    let topic = unique("ks-start");
    let t0 = topic_with_records(&bootstrap, &topic);

    // The first record at or after the timestamp, in every partition.
    let at = (t0 + 4_500).to_string();
    let got = read(
        &bootstrap,
        &topic,
        &[
            ("scan.startup.mode", "timestamp"),
            ("scan.startup.timestamp-millis", &at),
        ],
    );
    assert_same(got, from([5, 5, 5]), "timestamp");

    // Given offsets for two partitions; the third starts at the earliest.
    let got = read(
        &bootstrap,
        &topic,
        &[(
            "scan.startup.mode",
            "specific-offsets:partition:0,offset:3;partition:2,offset:7",
        )],
    );
    assert_same(got, from([3, 0, 7]), "specific-offsets");

    // The group's committed offsets; a partition without one starts at the earliest.
    let group = unique("ks-group");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(4))
        .unwrap();
    tpl.add_partition_offset(&topic, 1, Offset::Offset(8))
        .unwrap();
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
    let got = read(
        &bootstrap,
        &topic,
        &[
            ("scan.startup.mode", "group-offsets"),
            ("properties.group.id", &group),
        ],
    );
    assert_same(got, from([4, 8, 0]), "group-offsets");
}
