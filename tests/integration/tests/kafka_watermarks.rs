//! Per-partition watermarks of the Kafka source on the real broker: an event-time window job
//! over a two-partition topic where one partition goes silent early. Without an idle timeout
//! the silent partition holds the watermark back, so only the windows before its last record
//! fire; with `source.idle-timeout` it stops counting and every window the other partition
//! has passed fires, each with exactly the records it should hold. And with more source
//! subtasks than partitions, the subtasks without a partition are idle as a whole and do not
//! hold back the windows downstream.
//!
//!   cargo test --release -p sluice-integration-tests --test kafka_watermarks -- --test-threads=1

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice::prelude::*;
use sluice::{JobStatus, Windowed};
use sluice_integration_tests::unique;
use sluice_kafka::{KafkaSourceBuilder, KafkaStreamEnvExt, KeyValueStrings, StartingOffsets};

#[path = "common/kafka.rs"]
mod kafka_common;
use kafka_common::{bootstrap, create_topic, producer};

const KEYS: i64 = 3;
/// Partition 1 has records for the first 2 s of event time only.
const SILENT_AFTER: i64 = 20;
/// Partition 0 has 10 s of event time before the job starts, then more as it runs.
const BACKLOG: i64 = 100;

/// Record `i` of a partition has event time `base + i * 100 ms` and key `k<i % 3>`.
fn send(producer: &BaseProducer, topic: &str, partition: i32, base: i64, i: i64) {
    let key = format!("k{}", i % KEYS);
    let value = format!("{partition}-{i}");
    let record = BaseRecord::to(topic)
        .partition(partition)
        .timestamp(base + i * 100)
        .key(&key)
        .payload(&value);
    kafka_common::send(producer, record);
}

/// Counts per (window start offset from `base`, key) of one-second windows over records
/// `0..p0` of partition 0 and `0..SILENT_AFTER` of partition 1.
fn expected(p0: i64) -> BTreeMap<(i64, String), u64> {
    let mut out = BTreeMap::new();
    for count in [p0, SILENT_AFTER] {
        for i in 0..count {
            let start = (i * 100) / 1000 * 1000;
            *out.entry((start, format!("k{}", i % KEYS))).or_default() += 1;
        }
    }
    out
}

/// Fills a new two-partition topic (partition 0: `BACKLOG` records, partition 1:
/// `SILENT_AFTER`), runs the window job over it while partition 0 gets a record every 50 ms,
/// until the windows up to `windows` seconds fired for every key (or a minute passed), then 4 s
/// more; cancels it and returns what fired and how many records partition 0 got.
/// The source runs with `source_parallelism` subtasks.
fn run(
    bootstrap: &str,
    idle_timeout: Option<Duration>,
    windows: i64,
    source_parallelism: usize,
) -> (BTreeMap<(i64, String), u64>, i64) {
    let topic = unique("kw-events");
    create_topic(bootstrap, &topic, 2);
    // Recent event times (an hour ago, on a 10 s boundary) so retention keeps the records.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = (now - 3_600_000) / 10_000 * 10_000;
    let p = producer(bootstrap);
    for i in 0..BACKLOG {
        send(&p, &topic, 0, base, i);
    }
    for i in 0..SILENT_AFTER {
        send(&p, &topic, 1, base, i);
    }
    p.flush(Duration::from_secs(60)).unwrap();

    let env = StreamEnv::new();
    env.set_parallelism(2);
    let mut source = KafkaSourceBuilder::new(bootstrap)
        .topic(&topic)
        .starting_offsets(StartingOffsets::Earliest)
        .watermarks(Duration::ZERO);
    if let Some(t) = idle_timeout {
        source = source.idle_timeout(t);
    }
    let (out, _sink) = env
        .kafka_source("events", source, KeyValueStrings)
        .uid("kafka-events")
        // One subtask reading both partitions: its watermark is the minimum over them. Two:
        // one partition each, the downstream watermark is the minimum over the subtasks.
        .set_parallelism(source_parallelism)
        .map(|(k, _v): (Option<String>, String)| k.unwrap_or_default())
        .key_by(|k: &String| k.clone())
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .count()
        .collect();
    let client = env.execute_async("kafka watermarks").unwrap();
    let wanted = |fired: &[Windowed<String, u64>]| {
        fired
            .iter()
            .filter(|w| w.start - base < windows * 1000)
            .count() as i64
            >= windows * KEYS
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settle: Option<Instant> = None;
    let mut p0 = BACKLOG;
    while settle.is_none_or(|s| Instant::now() < s) && Instant::now() < deadline {
        assert!(!client.is_finished(), "the unbounded job ended");
        send(&p, &topic, 0, base, p0);
        p.poll(Duration::ZERO);
        p0 += 1;
        std::thread::sleep(Duration::from_millis(50));
        if settle.is_none() && wanted(&out.get()) {
            settle = Some(Instant::now() + Duration::from_secs(4));
        }
    }
    p.flush(Duration::from_secs(60)).unwrap();
    client.cancel();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Canceled);
    assert_eq!(r.late_records_dropped(), 0, "no record was late");
    let mut fired = BTreeMap::new();
    for w in out.get() {
        let Windowed {
            key,
            start,
            end,
            value,
        } = w;
        assert_eq!(end - start, 1000);
        let previous = fired.insert((start - base, key.clone()), value);
        assert!(previous.is_none(), "window {start} of {key} fired twice");
    }
    (fired, p0)
}

#[test]
fn an_idle_partition_does_not_hold_back_the_windows() {
    let bootstrap = bootstrap();

    // Without an idle timeout partition 1 (last record at +1.9 s) holds the watermark at
    // +1.899 s while partition 0 runs ahead: only the window [0 s, 1 s) fires.
    let (fired, p0) = run(&bootstrap, None, 1, 1);
    assert!(p0 > BACKLOG + 60, "partition 0 ran ahead");
    let all = expected(p0);
    let first: BTreeMap<_, _> = all.into_iter().filter(|((s, _), _)| *s == 0).collect();
    assert_eq!(fired, first, "without idle timeout");

    // With it, partition 0 alone decides once partition 1 is idle: the windows up to 10 s
    // and later ones partition 0 passed fire, each complete.
    let (fired, p0) = run(&bootstrap, Some(Duration::from_secs(3)), 10, 1);
    let all = expected(p0);
    for s in 0..10 {
        for k in 0..KEYS {
            let w = (s * 1000, format!("k{k}"));
            assert!(fired.contains_key(&w), "window {w:?} fired: {fired:?}");
        }
    }
    for (w, count) in &fired {
        assert_eq!(Some(count), all.get(w), "window {w:?}");
    }
}

#[test]
fn a_subtask_whose_partitions_are_all_idle_does_not_hold_back_the_windows() {
    let bootstrap = bootstrap();
    // Two source subtasks, one partition each: once partition 1 is idle, its subtask as a
    // whole is, and the windows downstream follow partition 0's subtask alone.
    let (fired, p0) = run(&bootstrap, Some(Duration::from_secs(3)), 10, 2);
    let all = expected(p0);
    for s in 0..10 {
        for k in 0..KEYS {
            let w = (s * 1000, format!("k{k}"));
            assert!(fired.contains_key(&w), "window {w:?} fired: {fired:?}");
        }
    }
    for (w, count) in &fired {
        assert_eq!(Some(count), all.get(w), "window {w:?}");
    }
}

#[test]
fn source_subtasks_without_partitions_do_not_hold_back_the_windows() {
    let bootstrap = bootstrap();
    let topic = unique("kw-few");
    create_topic(&bootstrap, &topic, 1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let base = (now - 3_600_000) / 10_000 * 10_000;
    // 5 s of event time in the one partition: the watermark reaches +4.899 s.
    let records = 50;
    let p = producer(&bootstrap);
    for i in 0..records {
        send(&p, &topic, 0, base, i);
    }
    p.flush(Duration::from_secs(60)).unwrap();

    let env = StreamEnv::new();
    env.set_parallelism(2);
    // No idle timeout: only having no partition makes a subtask idle.
    let source = KafkaSourceBuilder::new(&bootstrap)
        .topic(&topic)
        .starting_offsets(StartingOffsets::Earliest)
        .watermarks(Duration::ZERO);
    let (out, _sink) = env
        .kafka_source("events", source, KeyValueStrings)
        .uid("kafka-events")
        // Three subtasks for one partition: two of them read nothing and are idle.
        .set_parallelism(3)
        .map(|(k, _v): (Option<String>, String)| k.unwrap_or_default())
        .key_by(|k: &String| k.clone())
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .count()
        .collect();
    let client = env.execute_async("kafka idle subtasks").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < 4 * KEYS {
        assert!(!client.is_finished(), "the unbounded job ended");
        assert!(
            Instant::now() < deadline,
            "the windows did not fire while the job ran: {:?}",
            out.get()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let any window fired twice or too early show up.
    std::thread::sleep(Duration::from_secs(1));
    client.cancel();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Canceled);
    let mut fired = BTreeMap::new();
    for w in out.get() {
        let previous = fired.insert((w.start - base, w.key.clone()), w.value);
        assert!(
            previous.is_none(),
            "window {} of {} fired twice",
            w.start,
            w.key
        );
    }
    let mut expected = BTreeMap::new();
    for i in 0..40 {
        *expected
            .entry((i * 100 / 1000 * 1000, format!("k{}", i % KEYS)))
            .or_insert(0u64) += 1;
    }
    assert_eq!(
        fired, expected,
        "the windows [0 s, 4 s) fired, each complete"
    );
}
