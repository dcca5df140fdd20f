//! A stop-with-savepoint whose savepoint cannot be written fails with an error naming the
//! target, and the job goes on: its sources resume, a later stop succeeds, and the restored
//! run completes the output exactly once.

use std::time::{Duration, Instant};

use sluice::prelude::*;
use sluice::{CollectHandle, JobStatus};
use sluice_testkit::{assert_same, checkpointing, expected_sums, sums_job_into};

fn records_into_sums(client: &sluice::JobClient) -> u64 {
    client.metrics().get("sums").map_or(0, |m| m.records_in)
}

/// Waits until the `sums` operator has received more than `n` records.
fn wait_past(client: &sluice::JobClient, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while records_into_sums(client) <= n {
        assert!(!client.is_finished(), "the job ended while waiting {what}");
        assert!(Instant::now() < deadline, "no records {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_failed_stop_with_savepoint_resumes_the_job_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("checkpoints");
    let total = 12_000;
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, ck.to_str().unwrap(), "1 h"); // savepoints only
    let out = CollectHandle::default();
    sums_job_into(&env, total, Some(6000.0), vec![], &out);
    let client = env.execute_async("stop fails").unwrap();
    wait_past(&client, 1000, "before the first stop");

    // A target below a regular file: no directory can be created there.
    let blocker = tmp.path().join("not-a-directory");
    std::fs::write(&blocker, b"file").unwrap();
    let bad = blocker.join("savepoints");
    let e = client
        .stop_with_savepoint(Some(bad.to_str().unwrap()), false)
        .expect_err("a savepoint under a file cannot be written")
        .to_string();
    assert!(
        e.contains("not-a-directory"),
        "the error names the target: {e}"
    );

    // The sources resumed: records flow again and the job still runs.
    let after_failure = records_into_sums(&client);
    wait_past(&client, after_failure + 500, "after the failed stop");
    assert_eq!(client.view().status, JobStatus::Running);

    let sp = tmp.path().join("savepoints");
    let location = client
        .stop_with_savepoint(Some(sp.to_str().unwrap()), false)
        .unwrap();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    let before = out.len();
    assert!(
        before > after_failure as usize && before < total as usize,
        "{before} records before the second stop"
    );

    // The rest from the savepoint: together exactly a failure-free run's output.
    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
    sums_job_into(&env, total, None, vec![], &out);
    env.execute("resumed").unwrap();
    assert_same(out.get(), expected_sums(total), "both runs");
}
