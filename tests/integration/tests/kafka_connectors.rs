//! The Kafka connectors on the real broker: a job reads a topic, counts per key and writes the
//! running counts to another topic exactly-once; a `read_committed` consumer sees every
//! output record exactly once, across an injected failure and across a stop with savepoint
//! and a restore at another parallelism. Also: a missing topic, malformed JSON.
//!
//! Run serially with the broker up:
//!   scripts/testcluster.sh up kafka
//!   cargo test --release -p sluice-integration-tests --test kafka_connectors -- --test-threads=1

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sluice::prelude::*;
use sluice::{CheckpointStatus, JobStatus, SluiceError};
use sluice_integration_tests::unique;
use sluice_kafka::{
    BoundedMode, DeliveryGuarantee, JsonValues, KafkaDataStreamExt, KafkaSinkBuilder,
    KafkaSourceBuilder, KafkaStreamEnvExt, KeyValueStrings, StartingOffsets,
};
use sluice_testkit::{assert_same, checkpointing};

#[path = "common/kafka.rs"]
mod kafka_common;
use kafka_common::{
    bootstrap, create_topic, expected_counts, log_end_offsets, produce, producer, read_committed,
    read_topic,
};

/// The sum of the offsets group `<topic>-group` committed for the first `partitions`
/// partitions of `topic`.
fn group_offsets(bootstrap: &str, topic: &str, partitions: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-group"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// Whether a checkpoint under `dir` (`<dir>/<job id>/chk-<n>/_metadata`) completed.
fn has_completed_checkpoint(dir: &Path) -> bool {
    let Ok(jobs) = std::fs::read_dir(dir) else {
        return false;
    };
    jobs.flatten().any(|job| {
        std::fs::read_dir(job.path()).is_ok_and(|cks| {
            cks.flatten().any(|c| {
                c.file_name().to_string_lossy().starts_with("chk-")
                    && c.path().join("_metadata").exists()
            })
        })
    })
}

/// Kafka `input` → (a flat map, slowed down so that checkpoints happen while it runs, failing
/// once at the first record after a checkpoint completed in `fail_after_checkpoint_in`) →
/// count per key → Kafka `output`, exactly-once.
fn counting_job(
    env: &StreamEnv,
    bootstrap: &str,
    input: &str,
    output: &str,
    bounded: BoundedMode,
    fail_after_checkpoint_in: Option<&Path>,
) -> Arc<AtomicI64> {
    counting_job_with(
        env,
        bootstrap,
        input,
        output,
        bounded,
        fail_after_checkpoint_in,
        DeliveryGuarantee::ExactlyOnce,
    )
}

/// [`counting_job`] with the sink's delivery guarantee `guarantee`.
fn counting_job_with(
    env: &StreamEnv,
    bootstrap: &str,
    input: &str,
    output: &str,
    bounded: BoundedMode,
    fail_after_checkpoint_in: Option<&Path>,
    guarantee: DeliveryGuarantee,
) -> Arc<AtomicI64> {
    let ck_dir = fail_after_checkpoint_in.map(Path::to_path_buf);
    let failed_at = Arc::new(AtomicI64::new(0));
    let failed_at_ = failed_at.clone();
    let failed = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let source = KafkaSourceBuilder::new(bootstrap)
        .topic(input)
        .group_id(&format!("{input}-group"))
        .starting_offsets(StartingOffsets::Earliest)
        .bounded(bounded);
    let sink = KafkaSinkBuilder::new(bootstrap, output)
        .delivery_guarantee(guarantee)
        .transactional_id_prefix(output);
    env.kafka_source("input", source, KeyValueStrings)
        .uid("kafka-in")
        .try_flat_map(
            move |(key, value): (Option<String>, String), out: &mut Collector<(String, u64)>| {
                let v: u64 = value.parse().map_err(SluiceError::job)?;
                let n = seen.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(2) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if n.is_multiple_of(50)
                    && !failed.load(Ordering::SeqCst)
                    && ck_dir.as_deref().is_some_and(has_completed_checkpoint)
                    && !failed.swap(true, Ordering::SeqCst)
                {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    failed_at_.store(now, Ordering::SeqCst);
                    return Err(SluiceError::job(format!("injected failure at {v}")));
                }
                out.collect((key.unwrap_or_default(), 1));
                Ok(())
            },
        )
        .uid("maybe-fail")
        .key_by_field(|r: &(String, u64)| &r.0)
        .sum()
        .uid("counts")
        .sink_to_kafka(sink, |r: &(String, u64)| {
            (
                Some(r.0.clone().into_bytes()),
                format!("{},{}", r.0, r.1).into_bytes(),
            )
        })
        .uid("kafka-out");
    failed_at
}

#[test]
fn exactly_once_across_a_failure() {
    let bootstrap = bootstrap();
    let input = unique("kc-in");
    let output = unique("kc-out");
    create_topic(&bootstrap, &input, 4);
    create_topic(&bootstrap, &output, 3);
    let total = 12_000;
    produce(&bootstrap, &input, 0, total);

    let ck = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &format!("file://{}", ck.path().display()), "300 ms");
    let failed_at = counting_job(
        &env,
        &bootstrap,
        &input,
        &output,
        BoundedMode::Latest,
        Some(ck.path()),
    );
    let r = env.execute("kafka exactly-once").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert!(r.restarts >= 1, "the injected failure restarted the job");
    let failed_at = failed_at.load(Ordering::SeqCst);
    assert!(
        r.checkpoints
            .iter()
            // The failure waits for a completed checkpoint's `_metadata`; the history records
            // the completion a moment after writing it, so compare trigger times.
            .any(|c| c.status == CheckpointStatus::Completed && c.trigger_timestamp < failed_at),
        "a checkpoint completed before the failure"
    );

    let got = read_committed(
        &bootstrap,
        &output,
        total as usize,
        Duration::from_secs(2),
        Instant::now() + Duration::from_secs(90),
    );
    assert_same(got, expected_counts(total), "read_committed output");
}

#[test]
fn at_least_once_loses_nothing_across_a_failure() {
    let bootstrap = bootstrap();
    let input = unique("kc-alo-in");
    let output = unique("kc-alo-out");
    create_topic(&bootstrap, &input, 4);
    create_topic(&bootstrap, &output, 3);
    let total = 12_000;
    produce(&bootstrap, &input, 0, total);

    let ck = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &format!("file://{}", ck.path().display()), "300 ms");
    counting_job_with(
        &env,
        &bootstrap,
        &input,
        &output,
        BoundedMode::Latest,
        Some(ck.path()),
        DeliveryGuarantee::AtLeastOnce,
    );
    let r = env.execute("kafka at-least-once").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert!(r.restarts >= 1, "the injected failure restarted the job");

    // Records produced after the last checkpoint before the failure are produced again by the
    // restarted attempt: every running count is there, some maybe twice, none missing.
    let got = read_committed(
        &bootstrap,
        &output,
        total as usize,
        Duration::from_secs(2),
        Instant::now() + Duration::from_secs(90),
    );
    let distinct: BTreeSet<(String, String)> = got.iter().cloned().collect();
    let expected: BTreeSet<(String, String)> = expected_counts(total).into_iter().collect();
    let missing: Vec<_> = expected.difference(&distinct).take(5).collect();
    assert!(missing.is_empty(), "outputs lost: {missing:?}...");
    assert_eq!(distinct, expected, "no output the counts never produced");
    println!(
        "at-least-once across a failure: {} outputs for {total} inputs ({} duplicates)",
        got.len(),
        got.len() - total as usize
    );
    // No transactions: the log holds exactly the records, without commit markers.
    assert_eq!(log_end_offsets(&bootstrap, &output), got.len() as i64);
}

#[test]
fn delivery_none_writes_without_transactions() {
    let bootstrap = bootstrap();
    let input = unique("kc-none-in");
    let output = unique("kc-none-out");
    create_topic(&bootstrap, &input, 4);
    create_topic(&bootstrap, &output, 3);
    let total = 3_000;
    produce(&bootstrap, &input, 0, total);

    let ck = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    // Checkpoints run, but a `none` sink neither waits for them nor uses transactions.
    checkpointing(&env, &format!("file://{}", ck.path().display()), "300 ms");
    counting_job_with(
        &env,
        &bootstrap,
        &input,
        &output,
        BoundedMode::Latest,
        None,
        DeliveryGuarantee::None,
    );
    let r = env.execute("kafka delivery none").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(r.restarts, 0);

    // Without a failure everything arrives once, and a read_uncommitted consumer sees the same.
    let got = read_committed(
        &bootstrap,
        &output,
        total as usize,
        Duration::from_secs(2),
        Instant::now() + Duration::from_secs(90),
    );
    assert_same(got.clone(), expected_counts(total), "read_committed output");
    let uncommitted = read_topic(
        &bootstrap,
        &output,
        "read_uncommitted",
        total as usize,
        Duration::from_secs(2),
        Instant::now() + Duration::from_secs(90),
    );
    assert_same(uncommitted, got, "read_uncommitted output");
    assert_eq!(
        log_end_offsets(&bootstrap, &output),
        total as i64,
        "the log holds the records and no transaction markers"
    );
}

#[test]
fn exactly_once_leaves_transaction_markers() {
    // The counterpart of the checks above: the same job exactly-once writes commit markers, so
    // the log end offsets do tell transactional from plain writes.
    let bootstrap = bootstrap();
    let input = unique("kc-eo-in");
    let output = unique("kc-eo-out");
    create_topic(&bootstrap, &input, 2);
    create_topic(&bootstrap, &output, 2);
    let total = 500;
    produce(&bootstrap, &input, 0, total);
    let ck = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &format!("file://{}", ck.path().display()), "300 ms");
    counting_job(&env, &bootstrap, &input, &output, BoundedMode::Latest, None);
    let r = env.execute("kafka exactly-once markers").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    let got = read_committed(
        &bootstrap,
        &output,
        total as usize,
        Duration::from_secs(2),
        Instant::now() + Duration::from_secs(90),
    );
    assert_same(got, expected_counts(total), "read_committed output");
    assert!(log_end_offsets(&bootstrap, &output) > total as i64);
}

#[test]
fn stop_with_savepoint_then_restore_at_another_parallelism() {
    let bootstrap = bootstrap();
    let input = unique("kc-sp-in");
    let output = unique("kc-sp-out");
    create_topic(&bootstrap, &input, 4);
    create_topic(&bootstrap, &output, 2);
    let first = 6_000;
    let total = 10_000;
    produce(&bootstrap, &input, 0, first);

    let ck = tempfile::tempdir().unwrap();
    let sp = tempfile::tempdir().unwrap();
    let ck_url = format!("file://{}", ck.path().display());
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &ck_url, "300 ms");
    counting_job(
        &env,
        &bootstrap,
        &input,
        &output,
        BoundedMode::Unbounded,
        Some(ck.path()),
    );
    let client = env.execute_async("kafka before savepoint").unwrap();
    // The offsets the source commits to its group on checkpoint completion (for monitoring)
    // show when everything was read (metrics count only the attempt after the failure).
    let deadline = Instant::now() + Duration::from_secs(120);
    while group_offsets(&bootstrap, &input, 4) < first as i64 {
        assert!(!client.is_finished(), "the unbounded job ended early");
        assert!(Instant::now() < deadline, "the job did not read its input");
        std::thread::sleep(Duration::from_millis(100));
    }
    let location = client
        .stop_with_savepoint(Some(&format!("file://{}", sp.path().display())), false)
        .unwrap();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);

    produce(&bootstrap, &input, first, total);

    let env = StreamEnv::new();
    env.set_parallelism(3);
    checkpointing(&env, &ck_url, "300 ms");
    env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
    counting_job(&env, &bootstrap, &input, &output, BoundedMode::Latest, None);
    let r = env.execute("kafka after savepoint").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(
        r.metrics.get("kafka-in").map(|m| m.records_out),
        Some(total - first),
        "the restored job reads only what came after the savepoint"
    );

    let got = read_committed(
        &bootstrap,
        &output,
        total as usize,
        Duration::from_secs(2),
        Instant::now() + Duration::from_secs(90),
    );
    assert_same(got, expected_counts(total), "read_committed output");
}

#[test]
fn a_missing_topic_is_named() {
    let bootstrap = bootstrap();
    let missing = unique("kc-missing");
    let env = StreamEnv::new();
    let source = KafkaSourceBuilder::new(&bootstrap)
        .topic(&missing)
        .option("scan.topic-wait", "500 ms")
        .unwrap();
    let (_out, _sink) = env
        .kafka_source("missing", source, KeyValueStrings)
        .collect();
    let message = match env.execute("missing topic") {
        Err(e) => e.to_string(),
        Ok(r) => format!("{:?} {:?}", r.status, r.metrics.keys()),
    };
    assert!(
        message.contains(&missing) && message.contains("does not exist"),
        "{message}"
    );
}

#[test]
fn malformed_json_is_skipped_or_named() {
    let bootstrap = bootstrap();
    let topic = unique("kc-json");
    create_topic(&bootstrap, &topic, 1);
    let producer = producer(&bootstrap);
    for v in [r#"{"n":1}"#, "not json", r#"{"n":2}"#] {
        producer
            .send(BaseRecord::<(), str>::to(&topic).payload(v))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let run = |ignore: &str| {
        let env = StreamEnv::new();
        let source = KafkaSourceBuilder::from_options([
            ("topic", topic.as_str()),
            ("properties.bootstrap.servers", bootstrap.as_str()),
            ("scan.startup.mode", "earliest-offset"),
            ("scan.bounded.mode", "latest-offset"),
            ("format.ignore-parse-errors", ignore),
        ])
        .unwrap();
        let (out, _sink) = env
            .kafka_source("json", source, JsonValues::<serde_json::Value>::new())
            .map(|v: serde_json::Value| v["n"].as_i64().unwrap_or(-1))
            .collect();
        (env.execute("json"), out)
    };

    let (r, out) = run("true");
    assert_eq!(r.unwrap().status, JobStatus::Finished);
    assert_eq!(sluice_testkit::sorted(out.get()), vec![1, 2]);

    let (r, _) = run("false");
    let message = match r {
        Err(e) => e.to_string(),
        Ok(r) => format!("{:?}", r.status),
    };
    assert!(
        message.contains("offset 1") && message.contains(&topic),
        "{message}"
    );
}
