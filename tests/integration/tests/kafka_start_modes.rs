//! Starting positions of the Kafka source on the real broker (`scan.startup.mode`):
//! `timestamp`, `specific-offsets` and `group-offsets`, each reading a three-partition topic
//! to its end and checked record by record; and a savepoint restored with another topic list
//! (new topics start per the starting position, removed ones are dropped).
//!
//!   cargo test --release -p sluice-integration-tests --test kafka_start_modes -- --test-threads=1

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice::JobStatus;
use sluice::prelude::*;
use sluice_integration_tests::unique;
use sluice_kafka::{KafkaSourceBuilder, KafkaStreamEnvExt, KeyValueStrings};
use sluice_testkit::assert_same;

#[path = "common/kafka.rs"]
mod kafka_common;
use kafka_common::{bootstrap, create_topic, producer, send};

const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 10;

/// A topic whose record `i` of partition `p` is valued `p/i` with timestamp `t0 + i s`;
/// returns `t0`.
fn topic_with_records(bootstrap: &str, topic: &str) -> i64 {
    create_topic(bootstrap, topic, PARTITIONS);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now - 600_000;
    let producer = producer(bootstrap);
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let value = format!("{p}/{i}");
            send(
                &producer,
                BaseRecord::<(), str>::to(topic)
                    .partition(p)
                    .timestamp(t0 + i * 1000)
                    .payload(&value),
            );
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

/// Writes values `<topic>/<p>/<i>` for `i` in `from..to` to each of `partitions` partitions of
/// `topic` and returns them.
fn fill(bootstrap: &str, topic: &str, partitions: i32, from: u32, to: u32) -> Vec<String> {
    let producer = producer(bootstrap);
    let mut values = Vec::new();
    for p in 0..partitions {
        for i in from..to {
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

/// Reads `topics` (restored from `savepoint` if given) into a collect sink, checkpointing to
/// `checkpoints`. Bounded jobs run to the end of the topics as of their start; unbounded ones
/// run until `wait_for` records were collected and then stop with a savepoint into
/// `savepoints`. Returns the values and the savepoint's location.
fn read_topics(
    bootstrap: &str,
    topics: &[&str],
    startup: &str,
    savepoint: Option<&str>,
    dirs: (&str, &str),
    wait_for: Option<usize>,
) -> (Vec<String>, Option<String>) {
    let env = StreamEnv::new();
    env.set_parallelism(if savepoint.is_some() { 3 } else { 2 });
    sluice_testkit::checkpointing(&env, dirs.0, "300 ms");
    if let Some(sp) = savepoint {
        env.set(sluice::RESTORE_PATH_KEY, sp).unwrap();
    }
    let mut source = KafkaSourceBuilder::new(bootstrap)
        .topics(topics)
        .option("scan.startup.mode", startup)
        .unwrap();
    if wait_for.is_none() {
        source = source.option("scan.bounded.mode", "latest-offset").unwrap();
    }
    let (out, _sink) = env
        .kafka_source("topics", source, KeyValueStrings)
        .uid("kafka-in")
        .map(|(_k, v): (Option<String>, String)| v)
        .collect();
    let Some(n) = wait_for else {
        let r = env.execute("kafka topics").unwrap();
        assert_eq!(r.status, JobStatus::Finished);
        return (out.get(), None);
    };
    let client = env.execute_async("kafka topics").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // The collect sink publishes on checkpoints: wait for checkpoints covering `n` records.
    while out.len() < n {
        assert!(!client.is_finished(), "the unbounded job ended");
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} records read",
            out.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let location = client.stop_with_savepoint(Some(dirs.1), false).unwrap();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    (out.get(), Some(location))
}

#[test]
fn a_savepoint_restored_with_another_topic_list() {
    let bootstrap = bootstrap();
    let [a, b, c] = ["ks-a", "ks-b", "ks-c"].map(unique);
    for t in [&a, &b, &c] {
        create_topic(&bootstrap, t, 2);
    }
    let ck = tempfile::tempdir().unwrap();
    let sp = tempfile::tempdir().unwrap();
    let ck_url = format!("file://{}", ck.path().display());
    let sp_url = format!("file://{}", sp.path().display());
    let dirs = (ck_url.as_str(), sp_url.as_str());

    // Read a and b to a savepoint.
    let mut first = fill(&bootstrap, &a, 2, 0, 5);
    first.extend(fill(&bootstrap, &b, 2, 0, 5));
    let c_before = fill(&bootstrap, &c, 2, 0, 5);
    let (got, savepoint) = read_topics(
        &bootstrap,
        &[&a, &b],
        "earliest-offset",
        None,
        dirs,
        Some(20),
    );
    assert_same(got, first.clone(), "a and b before the savepoint");
    let savepoint = savepoint.unwrap();
    let a_after = fill(&bootstrap, &a, 2, 5, 10);
    let b_after = fill(&bootstrap, &b, 2, 5, 10);

    // Restored reading b and c: b resumes right after the savepoint's offsets, a (no longer
    // listed) is not read and its offsets are dropped, c is new and starts per the starting
    // position: nothing of what it held with latest-offset...
    let (got, _) = read_topics(
        &bootstrap,
        &[&b, &c],
        "latest-offset",
        Some(&savepoint),
        dirs,
        None,
    );
    assert_same(got, b_after.clone(), "b and c from latest-offset");

    // ...everything with earliest-offset.
    let mut expected = b_after.clone();
    expected.extend(c_before.clone());
    let (got, second) = read_topics(
        &bootstrap,
        &[&b, &c],
        "earliest-offset",
        Some(&savepoint),
        dirs,
        Some(expected.len()),
    );
    assert_same(got, expected, "b and c from earliest-offset");

    // The second savepoint has no position for a: listed again, a starts per the starting
    // position like any new topic, while b and c resume where they were.
    let c_after = fill(&bootstrap, &c, 2, 5, 7);
    let mut expected = first[..10].to_vec();
    expected.extend(a_after);
    expected.extend(c_after);
    let (got, _) = read_topics(
        &bootstrap,
        &[&a, &b, &c],
        "earliest-offset",
        Some(&second.unwrap()),
        dirs,
        None,
    );
    assert_same(got, expected, "a again, from earliest-offset");
}
