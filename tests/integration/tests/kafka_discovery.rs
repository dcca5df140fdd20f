//! Topic patterns and partition discovery of the Kafka source on the real broker: while a job
//! reads the topics matching a pattern, partitions are added to one and a new matching topic
//! is created; their records appear in the output exactly once, a topic that does not match
//! stays unread, and the discovered partitions' offsets are in the savepoint: the restored job
//! reads only what came after it.
//!
//!   cargo test --release -p sluice-integration-tests --test kafka_discovery -- --test-threads=1

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer};
use sluice::prelude::*;
use sluice::{CollectHandle, JobStatus};
use sluice_integration_tests::unique;
use sluice_kafka::{BoundedMode, KafkaSourceBuilder, KafkaStreamEnvExt, KeyValueStrings};
use sluice_testkit::{assert_same, checkpointing};

#[path = "common/kafka.rs"]
mod kafka_common;
use kafka_common::{add_partitions, bootstrap, create_topic, producer, send};

/// Writes `count` records to each of `partitions` of `topic`, valued `topic/partition/i`
/// (`i` from `from`), and returns the values.
fn produce(bootstrap: &str, topic: &str, partitions: &[i32], from: u32, count: u32) -> Vec<String> {
    let producer = producer(bootstrap);
    let mut values = Vec::new();
    for &p in partitions {
        for i in from..from + count {
            let value = format!("{topic}/{p}/{i}");
            send(
                &producer,
                BaseRecord::<(), str>::to(topic)
                    .partition(p)
                    .payload(&value),
            );
            values.push(value);
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    values
}

/// The values of the topics matching `<prefix>-.*`, collected exactly-once into `out`.
fn pattern_job(
    env: &StreamEnv,
    bootstrap: &str,
    prefix: &str,
    bounded: BoundedMode,
    out: &CollectHandle<String>,
) {
    let source = KafkaSourceBuilder::new(bootstrap)
        .option("topic-pattern", &format!("{prefix}-.*"))
        .unwrap()
        .option("partition.discovery.interval", "500 ms")
        .unwrap()
        .option("scan.startup.mode", "earliest-offset")
        .unwrap()
        .bounded(bounded);
    env.kafka_source("pattern", source, KeyValueStrings)
        .uid("kafka-in")
        .map(|(_k, v): (Option<String>, String)| v)
        .collect_into(out);
}

/// Waits until `out` holds at least `n` records.
fn wait_for(out: &CollectHandle<String>, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {n} records arrived",
            out.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn new_partitions_and_matching_topics_are_read_while_running() {
    let bootstrap = bootstrap();
    let prefix = unique("kd");
    let first = format!("{prefix}-a");
    let second = format!("{prefix}-b");
    // Contains the prefix but does not match `<prefix>-.*` as a whole name.
    let unmatched = format!("x{prefix}-c");
    create_topic(&bootstrap, &first, 2);
    create_topic(&bootstrap, &unmatched, 1);
    let mut expected = produce(&bootstrap, &first, &[0, 1], 0, 300);
    produce(&bootstrap, &unmatched, &[0], 0, 50);

    let ck = tempfile::tempdir().unwrap();
    let sp = tempfile::tempdir().unwrap();
    let ck_url = format!("file://{}", ck.path().display());
    let out = CollectHandle::<String>::default();
    let env = StreamEnv::new();
    env.set_parallelism(3);
    checkpointing(&env, &ck_url, "300 ms");
    pattern_job(&env, &bootstrap, &prefix, BoundedMode::Unbounded, &out);
    let client = env.execute_async("kafka discovery").unwrap();
    wait_for(&out, expected.len(), "the first topic");

    // Two more partitions of the first topic and a new matching topic, while it runs.
    add_partitions(&bootstrap, &first, 4);
    create_topic(&bootstrap, &second, 3);
    expected.extend(produce(&bootstrap, &first, &[2, 3], 0, 200));
    expected.extend(produce(&bootstrap, &second, &[0, 1, 2], 0, 200));
    wait_for(&out, expected.len(), "the discovered partitions");

    let location = client
        .stop_with_savepoint(Some(&format!("file://{}", sp.path().display())), false)
        .unwrap();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_same(out.get(), expected.clone(), "before the savepoint");

    // The savepoint holds the offsets of every partition, the discovered ones included: the
    // restored job (at another parallelism) reads only the records produced after it.
    let mut after = produce(&bootstrap, &first, &[0, 1, 2, 3], 1000, 25);
    after.extend(produce(&bootstrap, &second, &[0, 1, 2], 1000, 25));
    expected.extend(after.iter().cloned());
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &ck_url, "300 ms");
    env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
    pattern_job(&env, &bootstrap, &prefix, BoundedMode::Latest, &out);
    let r = env.execute("kafka discovery restored").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(
        r.metrics.get("kafka-in").map(|m| m.records_out),
        Some(after.len() as u64),
        "the restored job reads only what came after the savepoint"
    );
    assert_same(out.get(), expected, "after the restore");
    let per_topic = out.get().iter().fold(BTreeMap::new(), |mut m, v| {
        *m.entry(v.split('/').next().unwrap_or("").to_string())
            .or_insert(0usize) += 1;
        m
    });
    assert!(!per_topic.contains_key(&unmatched), "{per_topic:?}");
}
