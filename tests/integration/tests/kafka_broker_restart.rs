//! The Kafka connectors across a broker crash: a job reads a topic, counts per key and writes
//! the running counts exactly-once to another topic while the broker is killed with `kill -9`
//! and, a few seconds later, started again on the same port and data directory. The job keeps
//! going (retrying or restarting), reads what is produced to the restarted broker, and a
//! `read_committed` consumer sees every input record's output exactly once.
//!
//! Run serially with the broker up (the test kills and restarts it, and leaves it running):
//!   scripts/testcluster.sh up kafka
//!   cargo test --release -p sluice-integration-tests --test kafka_broker_restart -- --test-threads=1

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice::prelude::*;
use sluice::{JobClient, JobStatus, SluiceError};
use sluice_integration_tests::{TestCluster, unique};
use sluice_kafka::{
    BoundedMode, DeliveryGuarantee, KafkaDataStreamExt, KafkaSinkBuilder, KafkaSourceBuilder,
    KafkaStreamEnvExt, KeyValueStrings, StartingOffsets,
};
use sluice_testkit::{assert_same, checkpointing};

#[path = "common/kafka.rs"]
mod kafka_common;
use kafka_common::{create_topic, expected_counts, produce, read_committed};

const BROKER: &str = "kafka";

/// Starts the broker again when the test ends, however it ends: the Kafka tests that run after
/// this one share it.
struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        match TestCluster::open() {
            Ok(mut cluster) if !cluster.process_alive(BROKER) => {
                eprintln!("restarting the Kafka broker the test left down");
                if let Err(e) = cluster.restart(BROKER) {
                    eprintln!("could not restart the Kafka broker: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("cannot check the Kafka broker: {e}"),
        }
    }
}

/// Kafka `input` → (a flat map slowed down to 1 ms a record, so that the broker dies while it
/// runs; counts the records it sees into `seen`) → count per key → Kafka `output`,
/// exactly-once. Unbounded: it must read what is produced after the broker came back.
fn start_job(
    env: &StreamEnv,
    bootstrap: &str,
    input: &str,
    output: &str,
    seen: Arc<AtomicU64>,
) -> JobClient {
    let source = KafkaSourceBuilder::new(bootstrap)
        .topic(input)
        .group_id(&format!("{input}-group"))
        .starting_offsets(StartingOffsets::Earliest)
        .bounded(BoundedMode::Unbounded);
    let sink = KafkaSinkBuilder::new(bootstrap, output)
        .delivery_guarantee(DeliveryGuarantee::ExactlyOnce)
        .transactional_id_prefix(output);
    env.kafka_source("input", source, KeyValueStrings)
        .uid("kafka-in")
        .try_flat_map(
            move |(key, value): (Option<String>, String), out: &mut Collector<(String, u64)>| {
                let _v: u64 = value.parse().map_err(SluiceError::job)?;
                seen.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
                out.collect((key.unwrap_or_default(), 1));
                Ok(())
            },
        )
        .uid("slow")
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
    env.execute_async("kafka broker restart").unwrap()
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[test]
fn exactly_once_across_a_broker_restart() {
    let mut cluster =
        TestCluster::ensure_up(&[BROKER]).expect("the test cluster's Kafka broker must be up");
    let _guard = BrokerGuard;
    let bootstrap = cluster.kafka_bootstrap().to_string();
    let input = unique("kbr-in");
    let output = unique("kbr-out");
    create_topic(&bootstrap, &input, 4);
    create_topic(&bootstrap, &output, 3);
    // The first half exists before the job starts, the second is produced to the restarted
    // broker, so the job must read from it too.
    let half = 6_000;
    let total = 2 * half;
    produce(&bootstrap, &input, 0, half);

    let ck = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &format!("file://{}", ck.path().display()), "300 ms");
    // An attempt restarted while the broker is down may fail again: pace and bound the restarts.
    env.set("restart-strategy.fixed-delay.delay", "1 s")
        .unwrap();
    env.set("restart-strategy.fixed-delay.attempts", "30")
        .unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let client = start_job(&env, &bootstrap, &input, &output, seen.clone());
    let handle = client.handle();

    // Kill the broker mid-way through the first half, once a checkpoint completed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.load(Ordering::Relaxed) < half / 4 || handle.view().checkpoint_counts.completed == 0
    {
        assert!(!client.is_finished(), "the unbounded job ended early");
        assert!(
            Instant::now() < deadline,
            "no progress: {} records seen, {:?} checkpoints",
            seen.load(Ordering::Relaxed),
            handle.view().checkpoint_counts
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let before_kill = handle.view().checkpoint_counts;
    let seen_at_kill = seen.load(Ordering::Relaxed);
    cluster.kill(BROKER).unwrap();
    let killed = Instant::now();
    assert!(!cluster.process_alive(BROKER), "the broker still runs");
    assert!(
        !client.is_finished(),
        "the job ended before the broker died"
    );
    println!(
        "broker killed {} ms after the job started, at {seen_at_kill} of {half} records seen, {} checkpoints completed",
        ms(killed - started),
        before_kill.completed
    );

    std::thread::sleep(Duration::from_secs(3));
    let seen_while_down = seen.load(Ordering::Relaxed) - seen_at_kill;
    let restart_began = Instant::now();
    cluster.restart(BROKER).unwrap();
    let back = Instant::now();
    assert!(
        !client.is_finished(),
        "the job ended while the broker was down"
    );
    let during = handle.view().checkpoint_counts;
    println!(
        "broker down {} ms (restart took {} ms); while down: {seen_while_down} records seen, {} checkpoints completed, {} failed",
        ms(back - killed),
        ms(back - restart_began),
        during.completed - before_kill.completed,
        during.failed - before_kill.failed
    );

    produce(&bootstrap, &input, half, total);
    let produced = Instant::now();
    let first_checkpoint_after = client.wait_for_checkpoint(Duration::from_secs(60));
    let checkpoint_after = Instant::now();
    assert!(
        first_checkpoint_after.is_some(),
        "no checkpoint completed after the broker came back: {:?}",
        handle.view().exceptions
    );
    let got = read_committed(
        &bootstrap,
        &output,
        total as usize,
        Duration::ZERO,
        Instant::now() + Duration::from_secs(60),
    );
    let complete = Instant::now();
    assert!(
        got.len() >= total as usize,
        "only {} of {total} outputs committed 60 s after the broker came back; failures: {:?}",
        got.len(),
        handle.view().exceptions
    );
    let view = handle.view();
    handle.cancel();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Canceled);
    println!(
        "after the broker was back: second half produced at +{} ms, next checkpoint completed (#{}) at +{} ms, all {total} outputs committed at +{} ms",
        ms(produced - back),
        first_checkpoint_after.unwrap_or_default(),
        ms(checkpoint_after - back),
        ms(complete - back)
    );
    println!(
        "job: {} restarts, restored from checkpoint {:?}, checkpoints {:?}, {} records seen in all",
        r.restarts,
        r.restored_checkpoint,
        view.checkpoint_counts,
        seen.load(Ordering::Relaxed)
    );
    for (at, e) in &view.exceptions {
        println!("failure at {at}: {e}");
    }

    let got = read_committed(
        &bootstrap,
        &output,
        total as usize,
        Duration::from_secs(2),
        Instant::now() + Duration::from_secs(60),
    );
    assert_same(got, expected_counts(total), "read_committed output");
}
