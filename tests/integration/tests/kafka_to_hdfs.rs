//! The `kafka-to-hdfs` example on the real broker and HDFS: JSON events in a Kafka topic, a
//! running total per user in RocksDB, CSV part files per event hour on HDFS, exactly-once
//! with checkpoints: the job is killed (`kill -9`) mid-way while more events arrive and
//! restored from its last checkpoint at another parallelism; every event is in the committed
//! output once, in its hour's directory, with its user's running total. The same holds on a
//! standalone cluster when a worker daemon is killed, the job stopped with a savepoint and
//! restored at another parallelism after more events arrived.
//!
//!   cargo build --release -p sluice-examples --bin kafka-to-hdfs
//!   cargo build --release -p sluice-am -p sluice-worker -p sluice-cli
//!   cargo test --release -p sluice-integration-tests --test kafka_to_hdfs -- --test-threads=1

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, Producer};
use sluice_hdfs_backend::{Storage, resolve};
use sluice_integration_tests::{TestCluster, unique};
use sluice_testkit::release_bin;

#[path = "common/kafka.rs"]
mod kafka_common;
#[path = "../../../examples/tests/support/mod.rs"]
mod support;
use kafka_common::{create_topic, producer, send};

const EVENTS: u64 = 20_000;
const USERS: u64 = 7;
/// 2025-11-26T00:00:00Z: events are 3 s apart, so they span 16.7 hours of that day.
const DAY: i64 = 1_764_115_200_000;

fn user(id: u64) -> String {
    format!("user-{}", id % USERS)
}

fn amount(id: u64) -> i64 {
    (id % 100) as i64 + 1
}

fn ts(id: u64) -> i64 {
    DAY + id as i64 * 3_000
}

/// Events `ids`, keyed by user so each user's events stay in order in one partition; `paced`
/// spreads them over about 4 s.
fn produce(bootstrap: &str, topic: &str, ids: std::ops::Range<u64>, paced: bool) {
    let producer = producer(bootstrap);
    for id in ids {
        if paced && id % 25 == 0 {
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_millis(10));
        }
        let key = user(id);
        let value = format!(
            r#"{{"id": {id}, "user": "{key}", "amount": {}, "ts": {}}}"#,
            amount(id),
            ts(id)
        );
        send(&producer, BaseRecord::to(topic).key(&key).payload(&value));
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Every published CSV line under `dir` (not the staging area), with the hour directory it is
/// in, walking `dt=*/hour=*`.
/// Also the name of the part file (`part-<attempt>-<subtask>-<n>.csv`).
fn published(storage: &dyn Storage, dir: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    // Nothing yet before the first checkpoint completed.
    for day in storage.list(dir).unwrap_or_default() {
        if day.name == "_staging" {
            continue;
        }
        assert!(day.name.starts_with("dt="), "unexpected {}", day.name);
        let day_dir = format!("{dir}/{}", day.name);
        for hour in storage.list(&day_dir).unwrap() {
            let hour_dir = format!("{day_dir}/{}", hour.name);
            for part in storage.list(&hour_dir).unwrap() {
                assert!(
                    part.name.starts_with("part-") && part.name.ends_with(".csv"),
                    "unexpected file {hour_dir}/{}",
                    part.name
                );
                let bytes = storage.read(&format!("{hour_dir}/{}", part.name)).unwrap();
                for line in String::from_utf8(bytes).unwrap().lines() {
                    out.push((
                        format!("{}/{}", day.name, hour.name),
                        part.name.clone(),
                        line.to_string(),
                    ));
                }
            }
        }
    }
    out
}

/// The completed checkpoint with the highest number under `dir` (`<job id>/chk-<n>`).
fn last_checkpoint(dir: &Path) -> Option<PathBuf> {
    let mut best: Option<(u64, PathBuf)> = None;
    for job in std::fs::read_dir(dir).ok()?.flatten() {
        for c in std::fs::read_dir(job.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = c.file_name().to_string_lossy().into_owned();
            let Some(n) = name
                .strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if c.path().join("_metadata").exists() && best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, c.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}

#[test]
fn every_event_lands_once_in_its_hour_on_hdfs() {
    let cluster = TestCluster::ensure_up(&["hdfs", "kafka"]).expect("HDFS and Kafka must be up");
    let bootstrap = cluster.kafka_bootstrap().to_string();
    let topic = unique("k2h-events");
    create_topic(&bootstrap, &topic, 3);
    produce(&bootstrap, &topic, 0..EVENTS / 2, false);

    let output = format!(
        "{}/tmp/{}",
        cluster.hdfs_url().trim_end_matches('/'),
        unique("kafka-to-hdfs")
    );
    let (storage, dir) = resolve(&output).unwrap();
    let ck = tempfile::tempdir().unwrap();
    let job = |parallelism: &str, extra: &[&str]| {
        let mut c = Command::new(release_bin("kafka-to-hdfs"));
        c.env("HADOOP_CONF_DIR", cluster.conf_dir())
            .args([
                "--bootstrap",
                &bootstrap,
                "--topic",
                &topic,
                "--output",
                &output,
            ])
            .args(["-p", parallelism])
            .args(["-D", "execution.checkpointing.interval=200ms"])
            .args([
                "-D",
                &format!("state.checkpoints.dir=file://{}", ck.path().display()),
            ])
            .args(["-D", "state.backend.type=rocksdb"])
            .args(extra);
        c
    };

    // An unbounded run, killed (SIGKILL) once part of the second half of the events, which
    // arrives while it runs, is published.
    let mut first = job("2", &[]).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while published(storage.as_ref(), &dir).len() < 1_000 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the unbounded job ended"
        );
        assert!(Instant::now() < deadline, "no output published");
        std::thread::sleep(Duration::from_millis(200));
    }
    let late = {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        std::thread::spawn(move || produce(&bootstrap, &topic, EVENTS / 2..EVENTS, true))
    };
    while published(storage.as_ref(), &dir).len() < EVENTS as usize / 2 + 1_000 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the unbounded job ended"
        );
        assert!(
            Instant::now() < deadline,
            "no output of the second half published"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    late.join().unwrap();
    let before_kill = published(storage.as_ref(), &dir).len();
    eprintln!("{before_kill} lines published before the kill");

    // Restored from the last completed checkpoint at parallelism 3, reading to the end.
    let checkpoint = last_checkpoint(ck.path()).expect("a completed checkpoint");
    let recovery = format!(
        "execution.state-recovery.path=file://{}",
        checkpoint.display()
    );
    let run = job("3", &["--bounded", "-D", &recovery]).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "restored kafka-to-hdfs failed: {stderr}"
    );
    assert!(stderr.contains("Finished"), "{stderr}");

    let lines = published(storage.as_ref(), &dir);
    // Parts of the attempt before the failure (published by checkpoints that completed before
    // it) and of the attempt after it: writer tokens of more than the two subtasks of one.
    let attempts: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|(_, part, _)| part.split('-').nth(1).unwrap_or_default().to_string())
        .collect();
    assert!(attempts.len() >= 3, "parts of both runs: {attempts:?}");
    check_published(storage.as_ref(), &dir);
    storage.delete(&dir, true).unwrap();
}

/// The same pipeline on a standalone cluster (a master and three worker daemons): a worker
/// daemon killed with SIGKILL mid-stream, then a stop with a savepoint, more events, and a
/// restore at another parallelism; every event is published once with its running total.
#[test]
fn a_killed_worker_then_a_savepoint_and_a_rescale_publish_every_event_once() {
    let cluster = TestCluster::ensure_up(&["hdfs", "kafka"]).expect("HDFS and Kafka must be up");
    let bootstrap = cluster.kafka_bootstrap().to_string();
    let topic = unique("k2h-standalone");
    create_topic(&bootstrap, &topic, 3);
    produce(&bootstrap, &topic, 0..EVENTS / 2, false);
    let output = format!(
        "{}/tmp/{}",
        cluster.hdfs_url().trim_end_matches('/'),
        unique("kafka-to-hdfs-standalone")
    );
    let (storage, dir) = resolve(&output).unwrap();

    let mut standalone = support::Cluster::start(3);
    let work = tempfile::tempdir().unwrap();
    let bundle = sluice_testkit::stripped_bundle("kafka-to-hdfs", work.path());
    let checkpoints = format!("file://{}", work.path().join("checkpoints").display());
    let flags = |parallelism: &'static str| {
        vec![
            "-p".to_string(),
            parallelism.to_string(),
            "-D".to_string(),
            "execution.checkpointing.interval=200ms".to_string(),
            "-D".to_string(),
            format!("state.checkpoints.dir={checkpoints}"),
            "-D".to_string(),
            "state.backend.type=rocksdb".to_string(),
            "-D".to_string(),
            "restart-strategy.type=fixed-delay".to_string(),
            "-D".to_string(),
            "restart-strategy.fixed-delay.delay=200ms".to_string(),
        ]
    };
    let job_args = |extra: &[&str]| {
        let mut a = vec!["--bootstrap", &bootstrap, "--topic", &topic, "--output"];
        a.push(&output);
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let published_now = || published(storage.as_ref(), &dir).len();

    let job = standalone.submit(&bundle, &strs(&flags("2")), &strs(&job_args(&[])));
    standalone.wait_for_state(&job, "RUNNING", Duration::from_secs(60));
    support::wait_until("the first output", Duration::from_secs(120), || {
        published_now() >= 1_000
    });
    let late = {
        let (bootstrap, topic) = (bootstrap.clone(), topic.clone());
        std::thread::spawn(move || produce(&bootstrap, &topic, EVENTS / 2..EVENTS * 3 / 4, true))
    };
    support::wait_until(
        "output of the late events",
        Duration::from_secs(120),
        || published_now() >= EVENTS as usize / 2 + 500,
    );
    let busy = standalone.busy_worker();
    standalone.workers[busy]
        .kill()
        .expect("SIGKILL a worker daemon");
    let _ = standalone.workers[busy].wait();
    let killed_at = published_now();
    late.join().unwrap();
    // The job recovers on the two remaining workers and publishes everything produced so far.
    support::wait_until(
        "the recovered job to publish every event so far",
        Duration::from_secs(120),
        || published_now() >= EVENTS as usize * 3 / 4,
    );
    let restarts = standalone
        .get(&format!("/jobs/{job}/exceptions"))
        .expect("the exception history");
    assert!(
        restarts["exceptionHistory"]["entries"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "the worker's loss is in the exception history: {restarts}"
    );
    let savepoint = standalone.stop_with_savepoint(&job, &work.path().join("savepoints"));
    standalone.wait_for_state(&job, "FINISHED", Duration::from_secs(60));
    eprintln!("{killed_at} lines published at the kill; savepoint {savepoint}");

    // More events while nothing runs, then a bounded restore at parallelism 3.
    produce(&bootstrap, &topic, EVENTS * 3 / 4..EVENTS, false);
    let mut restore = flags("3");
    restore.extend(["-s".to_string(), savepoint]);
    let resumed = standalone.submit(&bundle, &strs(&restore), &strs(&job_args(&["--bounded"])));
    standalone.wait_for_state(&resumed, "FINISHED", Duration::from_secs(120));

    check_published(storage.as_ref(), &dir);
    storage.delete(&dir, true).unwrap();
}

/// Every event of `0..EVENTS` is published under `dir` exactly once, in its hour's directory,
/// with its user's running total, and nothing is left in staging.
fn check_published(storage: &dyn Storage, dir: &str) {
    let lines = published(storage, dir);
    let mut per_id: BTreeMap<u64, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for (hour, _part, line) in lines {
        let fields: Vec<String> = line.split(',').map(str::to_string).collect();
        assert_eq!(fields.len(), 5, "{line}");
        let id: u64 = fields[0].parse().unwrap();
        per_id.entry(id).or_default().push((hour, fields));
    }
    let duplicated: Vec<_> = per_id.iter().filter(|(_, v)| v.len() > 1).take(5).collect();
    assert!(duplicated.is_empty(), "published twice: {duplicated:?}");
    let missing: Vec<u64> = (0..EVENTS).filter(|id| !per_id.contains_key(id)).collect();
    assert!(
        missing.is_empty(),
        "{} events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(per_id.len() as u64, EVENTS, "only the produced events");

    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for (id, found) in per_id {
        let (hour, fields) = &found[0];
        let expected_hour = format!("dt=2025-11-26/hour={:02}", (ts(id) - DAY) / 3_600_000);
        assert_eq!(hour, &expected_hour, "event {id}");
        let total = totals.entry(user(id)).or_default();
        *total += amount(id);
        let expected = [
            id.to_string(),
            user(id),
            amount(id).to_string(),
            ts(id).to_string(),
            total.to_string(),
        ];
        assert_eq!(fields.as_slice(), expected.as_slice(), "event {id}");
    }
    // Nothing staged is left behind: every staged part was published.
    let staged: Vec<_> = storage
        .list(&format!("{dir}/_staging"))
        .unwrap_or_default()
        .into_iter()
        .flat_map(|d| {
            storage
                .list(&format!("{dir}/_staging/{}", d.name))
                .unwrap_or_default()
        })
        .collect();
    assert!(staged.is_empty(), "left in staging: {staged:?}");
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
