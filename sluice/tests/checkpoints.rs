//! Checkpoints, recovery and savepoints on the embedded cluster, measured against the output
//! of a failure-free run: nothing lost, nothing duplicated.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice::prelude::*;
use sluice::{Collector, JobStatus, SluiceError};
use sluice_testkit::{assert_same, expected_sums, sorted, sums_job, sums_job_into};

fn checkpointing(env: &StreamEnv, dir: &std::path::Path, interval: &str) {
    sluice_testkit::checkpointing(env, dir.to_str().unwrap(), interval);
}

#[test]
fn injected_failures_recover_to_exactly_the_failure_free_output() {
    for backend in ["hashmap", "rocksdb"] {
        let dir = tempfile::tempdir().unwrap();
        let env = StreamEnv::new();
        env.set_parallelism(2);
        env.set("state.backend.type", backend).unwrap();
        checkpointing(&env, dir.path(), "30 ms");
        let out = sums_job(&env, 6000, Some(12_000.0), vec![1500, 3100, 4700]);
        let r = env.execute("exactly-once").unwrap();
        assert_eq!(r.restarts, 3, "{backend}");
        assert!(
            r.checkpoints
                .iter()
                .any(|c| c.status == sluice_am_status_completed()),
            "{backend}"
        );
        assert_same(out.get(), expected_sums(6000), backend);
    }
}

fn sluice_am_status_completed() -> sluice::CheckpointStatus {
    sluice::CheckpointStatus::Completed
}

#[test]
fn without_restart_strategy_a_failure_fails_the_job() {
    let env = StreamEnv::new();
    let _out = sums_job(&env, 1000, None, vec![10]);
    let e = env.execute("no-restart").unwrap_err().to_string();
    assert!(
        e.contains("injected failure at 10") && e.contains("maybe-fail"),
        "{e}"
    );
}

#[test]
fn retention_keeps_the_configured_number_of_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    checkpointing(&env, dir.path(), "20 ms");
    env.set("state.checkpoints.num-retained", "2").unwrap();
    let _out = sums_job(&env, 4000, Some(8000.0), vec![]);
    let client = env.execute_async("retention").unwrap();
    let job_id = client.job_id().to_string();
    let r = client.wait().unwrap();
    let completed = r
        .checkpoints
        .iter()
        .filter(|c| c.status == sluice::CheckpointStatus::Completed)
        .count();
    assert!(completed >= 3, "{completed} checkpoints completed");
    let mut chk: Vec<String> = std::fs::read_dir(dir.path().join(&job_id))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    chk.sort();
    assert_eq!(chk.len(), 2, "{chk:?}");
    for c in &chk {
        assert!(
            dir.path().join(&job_id).join(c).join("_metadata").exists(),
            "{c}"
        );
    }
}

#[test]
fn stop_with_savepoint_then_restore_at_another_parallelism() {
    for backend in ["hashmap", "rocksdb"] {
        let sp = tempfile::tempdir().unwrap();
        let ck = tempfile::tempdir().unwrap();
        let total = 8000;
        let env = StreamEnv::new();
        env.set_parallelism(2);
        env.set("state.backend.type", backend).unwrap();
        checkpointing(&env, ck.path(), "1 h"); // savepoints only
        let out = sluice::CollectHandle::default();
        sums_job_into(&env, total, Some(8000.0), vec![], &out);
        let client = env.execute_async("before").unwrap();
        while !client.is_finished() {
            // Nothing is published before a checkpoint or savepoint: wait for records to flow.
            if client
                .metrics()
                .get("sums")
                .is_some_and(|m| m.records_in > 2000)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let location = client
            .stop_with_savepoint(Some(sp.path().to_str().unwrap()), false)
            .unwrap();
        let r = client.wait().unwrap();
        assert_eq!(r.status, JobStatus::Finished);
        let before = out.len();
        assert!(
            before > 0 && before < total as usize,
            "{backend}: {before} records before the stop"
        );

        // Same job, parallelism 3, from the savepoint.
        let env = StreamEnv::new();
        env.set_parallelism(3);
        env.set("state.backend.type", backend).unwrap();
        env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
        // The same sink as before (an external system would be the same too): the restore
        // re-publishes what the savepoint pre-committed, idempotently.
        sums_job_into(&env, total, None, vec![], &out);
        env.execute("after").unwrap();
        assert_same(out.get(), expected_sums(total), backend);
    }
}

#[test]
fn savepoint_while_running_and_bad_restore_paths() {
    let sp = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set("state.savepoints.dir", sp.path().to_str().unwrap())
        .unwrap();
    let _out = sums_job(&env, 3000, Some(3000.0), vec![]);
    let client = env.execute_async("savepoint").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let location = client.trigger_savepoint(None).unwrap();
    client.wait().unwrap();
    assert!(location.contains("savepoint-"), "{location}");

    // A restore path that does not exist.
    let env = StreamEnv::new();
    env.set(sluice::RESTORE_PATH_KEY, "/nonexistent/savepoint-x")
        .unwrap();
    let _o = sums_job(&env, 10, None, vec![]);
    let e = env.execute("bad").unwrap_err().to_string();
    assert!(e.contains("/nonexistent/savepoint-x"), "{e}");

    // A directory without _metadata.
    let empty = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set(sluice::RESTORE_PATH_KEY, empty.path().to_str().unwrap())
        .unwrap();
    let _o = sums_job(&env, 10, None, vec![]);
    let e = env.execute("bad").unwrap_err().to_string();
    assert!(e.contains("_metadata"), "{e}");

    // A savepoint of a job whose operators have other uids.
    let env = StreamEnv::new();
    env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
    let (_o, _) = env
        .generate(Some(10), None, |i| i)
        .uid("other-source")
        .map(|x: u64| x)
        .uid("other-map")
        .collect();
    let e = env.execute("other").unwrap_err().to_string();
    assert!(
        e.contains("'numbers'") && e.contains("allow-non-restored-state"),
        "{e}"
    );

    // ... which --allow-non-restored-state accepts.
    let env = StreamEnv::new();
    env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
    env.set(sluice::ALLOW_NON_RESTORED_KEY, "true").unwrap();
    let (o, _) = env
        .generate(Some(10), None, |i| i)
        .uid("other-source")
        .collect();
    env.execute("other").unwrap();
    assert_eq!(sorted(o.get()), (0..10).collect::<Vec<u64>>());
}

#[test]
fn a_non_writable_checkpoint_directory_fails_checkpoints_not_the_job() {
    let base = tempfile::tempdir().unwrap();
    let blocked = base.path().join("not-a-dir");
    std::fs::write(&blocked, b"a file where the checkpoint directory should be").unwrap();
    let env = StreamEnv::new();
    checkpointing(&env, &blocked, "20 ms");
    let out = sums_job(&env, 2000, Some(10_000.0), vec![]);
    let r = env.execute("unwritable").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_same(out.get(), expected_sums(2000), "unwritable");
    let failed: Vec<_> = r
        .checkpoints
        .iter()
        .filter(|c| c.status == sluice::CheckpointStatus::Failed)
        .collect();
    assert!(!failed.is_empty(), "{:?}", r.checkpoints);
    let why = failed[0].failure_message.clone().unwrap_or_default();
    assert!(why.contains("not-a-dir"), "{why}");
}

/// Flink's WordCount demonstration: after `a`, `b`, `b`, a completed checkpoint, then `ERROR`,
/// the job restarts from the checkpoint and the next `b` counts 3.
#[test]
fn wordcount_recovers_from_fail_on_word_with_socket_input() {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let env = StreamEnv::new();
    checkpointing(&env, dir.path(), "50 ms");
    let lines = env.socket_text_stream(&addr).uid("lines");
    let (out, _) = lines
        .try_flat_map(|line: String, out: &mut Collector<(String, u64)>| {
            for w in line.split_whitespace() {
                if w == "ERROR" {
                    return Err(SluiceError::job("saw ERROR"));
                }
                out.collect((w.to_string(), 1));
            }
            Ok(())
        })
        .uid("tokenizer")
        .key_by_field(|r: &(String, u64)| &r.0)
        .sum()
        .uid("counts")
        .collect();
    let client = env.execute_async("wc").unwrap();
    let (mut first, _) = listener.accept().unwrap();
    first.write_all(b"a\nb\nb\n").unwrap();
    // Counts become visible when a checkpoint covering them completes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !out.get().contains(&("b".to_string(), 2)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint covered a, b, b: {:?}",
            client.view().checkpoints
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    first.write_all(b"ERROR\n").unwrap();
    // The restarted source connects again.
    let (mut second, _) = listener.accept().unwrap();
    second.write_all(b"b\n").unwrap();
    drop(second);
    drop(first);
    let r = client.wait().unwrap();
    assert_eq!(r.restarts, 1);
    let got = out.get();
    assert!(got.contains(&("b".to_string(), 3)), "{got:?}");
    assert_eq!(
        sorted(got),
        sorted(vec![
            ("a".to_string(), 1),
            ("b".into(), 1),
            ("b".into(), 2),
            ("b".into(), 3)
        ])
    );
}

#[test]
fn generator_rescales_from_a_savepoint_without_gaps_or_repeats() {
    let sp = tempfile::tempdir().unwrap();
    let out = sluice::CollectHandle::<u64>::default();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.set("state.savepoints.dir", sp.path().to_str().unwrap())
        .unwrap();
    env.generate(Some(20_000), Some(20_000.0), |i| i)
        .uid("gen")
        .collect_into(&out);
    let client = env.execute_async("gen-before").unwrap();
    while client
        .metrics()
        .get("gen")
        .is_none_or(|m| m.records_out < 3000)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let location = client.stop_with_savepoint(None, false).unwrap();
    client.wait().unwrap();
    let before = out.len();
    assert!(before > 0 && before < 20_000, "{before}");

    let env = StreamEnv::new();
    env.set_parallelism(3);
    env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
    env.generate(Some(20_000), None, |i| i)
        .uid("gen")
        .collect_into(&out);
    env.execute("gen-after").unwrap();
    assert_eq!(sorted(out.get()), (0..20_000).collect::<Vec<u64>>());
}

#[test]
fn a_corrupt_latest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, dir.path(), "1 h"); // checkpoints only when the test asks
    env.set("state.checkpoints.num-retained", "2").unwrap();
    env.set("state.storage.fs.memory-threshold", "0").unwrap(); // every state in its own file
    let armed = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicBool::new(false));
    let (a, f) = (armed.clone(), fired.clone());
    let out = sluice::CollectHandle::<(u64, u64)>::default();
    let fail = move |_x: u64| a.load(Ordering::SeqCst) && !f.swap(true, Ordering::SeqCst);
    sluice_testkit::sums_job_failing_when(&env, 6000, Some(3000.0), fail, &out);
    let client = env.execute_async("fallback").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let first = client.trigger_checkpoint().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let second = client.trigger_checkpoint().unwrap();
    assert_ne!(first, second);
    // Flip one byte in every state file of the latest checkpoint.
    let second_dir = std::path::PathBuf::from(second.trim_start_matches("file://"));
    let mut flipped = 0;
    for e in std::fs::read_dir(&second_dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "_metadata" {
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
            flipped += 1;
        }
    }
    assert!(flipped > 0, "no state files in {second}");
    armed.store(true, Ordering::SeqCst);
    let r = client.wait().unwrap();
    assert_eq!(r.restarts, 1);
    let first_id: u64 = first.rsplit("chk-").next().unwrap().parse().unwrap();
    assert_eq!(
        r.restored_checkpoint,
        Some(first_id),
        "restored from {:?}",
        r.restored_checkpoint
    );
    // Keyed state rolled back to the first checkpoint and was rebuilt by the replay: the last
    // update of every key is its full sum.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, s) in out.get() {
        let e = last.entry(k).or_insert(0);
        *e = (*e).max(s);
    }
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for x in 0..6000u64 {
        *expected.entry(x % 17).or_insert(0) += x;
    }
    assert_eq!(last, expected);
}

#[test]
fn stop_with_drain_fires_every_window_before_the_savepoint() {
    for drain in [true, false] {
        let sp = tempfile::tempdir().unwrap();
        let env = StreamEnv::new();
        env.set("state.savepoints.dir", sp.path().to_str().unwrap())
            .unwrap();
        let (windows, _) = env
            .generate(None, Some(2000.0), |i| (i % 3, i as i64 * 10))
            .uid("events")
            .assign_timestamps_and_watermarks(Duration::ZERO, |e: &(u64, i64)| e.1)
            .uid("ts")
            .key_by_field(|e: &(u64, i64)| &e.0)
            .window(WindowAssigner::tumbling(Duration::from_secs(1)))
            .count()
            .uid("windows")
            .collect();
        let client = env.execute_async("drain").unwrap();
        while client
            .metrics()
            .get("events")
            .is_none_or(|m| m.records_out < 1500)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        client.stop_with_savepoint(None, drain).unwrap();
        let r = client.wait().unwrap();
        let emitted = r.metrics("events").unwrap().records_out;
        let counted: u64 = windows.get().iter().map(|w| w.value).sum();
        if drain {
            // The final max watermark fired every window, the last partial ones included.
            assert_eq!(counted, emitted);
        } else {
            // Without drain the open windows stay in the savepoint, unfired.
            assert!(counted < emitted, "{counted} of {emitted}");
        }
    }
}

/// A job restored from a savepoint that fails before its first checkpoint starts again from
/// that savepoint, not from empty state.
#[test]
fn a_failure_before_the_first_checkpoint_restarts_from_the_restored_savepoint() {
    for backend in ["hashmap", "rocksdb"] {
        let sp = tempfile::tempdir().unwrap();
        let ck = tempfile::tempdir().unwrap();
        let total = 6000;
        let env = StreamEnv::new();
        env.set("state.backend.type", backend).unwrap();
        checkpointing(&env, ck.path(), "1 h"); // savepoints only
        let out = sluice::CollectHandle::default();
        sums_job_into(&env, total, Some(6000.0), vec![], &out);
        let client = env.execute_async("before").unwrap();
        while !client.is_finished()
            && client
                .metrics()
                .get("sums")
                .is_none_or(|m| m.records_in <= 1500)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let location = client
            .stop_with_savepoint(Some(sp.path().to_str().unwrap()), false)
            .unwrap();
        assert_eq!(client.wait().unwrap().status, JobStatus::Finished);

        // Restored, with no checkpoint before the injected failure near the end.
        let env = StreamEnv::new();
        env.set("state.backend.type", backend).unwrap();
        checkpointing(&env, ck.path(), "1 h");
        env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
        sums_job_into(&env, total, None, vec![total - 10], &out);
        let r = env.execute("after").unwrap();
        assert_eq!(r.restarts, 1, "{backend}: one injected failure");
        assert_same(out.get(), expected_sums(total), backend);
    }
}
