//! A standalone cluster on loopback — a master (`sluice-am`) and three worker daemons
//! (`sluice-worker`) — runs the WordCount bundle at parallelism 4 with its subtasks spread over
//! the workers. A worker killed with SIGKILL mid-stream is replaced by the others, and the
//! exactly-once part files equal a failure-free run's updates exactly; a stop-with-savepoint
//! restored at parallelism 2 and 6 ends with the same counts.

mod support;

use std::time::Duration;

use sluice_examples::wordcount::expected_updates;
use sluice_testkit::{assert_same, committed_lines, stripped_bundle};
use support::{Cluster, WordCountRun, start_wordcount, wait_until};

#[test]
fn a_worker_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut cluster = Cluster::start(3);
    let WordCountRun {
        work: _work,
        out,
        job,
        lines: n,
    } = start_wordcount(&cluster, 60_000);
    let before_kill = committed_lines(&out).len();
    // Four subtasks may fit on two of the three workers: kill one that runs subtasks.
    let busy = cluster.busy_worker();
    cluster.workers[busy].kill().expect("SIGKILL a worker");
    let _ = cluster.workers[busy].wait();
    cluster.wait_for_state(&job, "FINISHED", Duration::from_secs(120));
    let got = committed_lines(&out);
    assert!(
        before_kill < got.len(),
        "the job made progress after the worker was killed"
    );
    let restarts = cluster
        .get(&format!("/jobs/{job}/exceptions"))
        .expect("exceptions");
    assert!(
        restarts["exceptionHistory"]["entries"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "the worker's loss is in the exception history: {restarts}"
    );
    assert_same(
        got,
        expected_updates(n),
        "WordCount updates after a worker was killed",
    );
}

#[test]
fn stop_with_savepoint_and_restore_at_parallelism_2_and_6_keeps_every_count() {
    let cluster = Cluster::start(3);
    let work = tempfile::tempdir().expect("a temp dir");
    let bundle = stripped_bundle("wordcount", work.path());
    let out = work.path().join("out");
    let savepoints = work.path().join("savepoints");
    let n = 60_000u64;
    let job_args = [
        "--generate".to_string(),
        n.to_string(),
        "--rate".to_string(),
        "6000".to_string(),
        "--output".to_string(),
        out.to_str().expect("a UTF-8 path").to_string(),
    ];
    let job_args: Vec<&str> = job_args.iter().map(String::as_str).collect();
    let checkpoints = format!("file://{}", work.path().join("checkpoints").display());
    let common = [
        "-D".to_string(),
        "execution.checkpointing.interval=300ms".to_string(),
        "-D".to_string(),
        format!("state.checkpoints.dir={checkpoints}"),
    ];
    let run = |flags: &[&str]| {
        let mut all: Vec<&str> = common.iter().map(String::as_str).collect();
        all.extend_from_slice(flags);
        cluster.submit(&bundle, &all, &job_args)
    };
    let first = run(&["-p", "4"]);
    cluster.wait_for_checkpoints(&first, 1);
    // The workers' record counters reach the job's page while it runs, and so do the bytes
    // the keyed exchange sends between the processes the 4 subtasks are spread over.
    wait_until(
        "records and bytes counted on the job page",
        Duration::from_secs(20),
        || {
            cluster.get(&format!("/jobs/{first}")).is_some_and(|j| {
                j["vertices"].as_array().is_some_and(|vs| {
                    ["write-records", "read-records", "write-bytes", "read-bytes"]
                        .iter()
                        .all(|m| vs.iter().any(|v| v["metrics"][m].as_u64() > Some(0)))
                })
            })
        },
    );
    // Every worker daemon serves its Prometheus metrics; those running the job's subtasks
    // count a job process with its memory.
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let mut running_processes = 0.0;
    for i in 0..cluster.workers.len() {
        let text = cluster
            .worker_metrics(i)
            .unwrap_or_else(|| panic!("worker {i} serves no metrics"));
        assert_eq!(value(&text, "sluice_taskmanager_numberOfTaskSlots{"), 2.0);
        assert!(value(&text, "sluice_process_rss_bytes") > 0.0, "{text}");
        let processes = value(&text, "sluice_taskmanager_jobProcesses{");
        if processes > 0.0 {
            assert!(
                value(&text, "sluice_taskmanager_jobProcesses_rss_bytes{") > 0.0,
                "{text}"
            );
        }
        running_processes += processes;
    }
    assert!(
        running_processes >= 2.0,
        "p=4 on 2-slot workers needs 2 or more processes"
    );
    let sp1 = cluster.stop_with_savepoint(&first, &savepoints);
    cluster.wait_for_state(&first, "FINISHED", Duration::from_secs(30));
    let after_first = committed_lines(&out).len();
    assert!(after_first > 0, "the first run committed output");

    let second = run(&["-p", "2", "-s", &sp1]);
    cluster.wait_for_checkpoints(&second, 1);
    let sp2 = cluster.stop_with_savepoint(&second, &savepoints);
    cluster.wait_for_state(&second, "FINISHED", Duration::from_secs(30));
    assert!(
        committed_lines(&out).len() > after_first,
        "the second run went on"
    );

    let third = run(&["-p", "6", "-s", &sp2]);
    cluster.wait_for_state(&third, "FINISHED", Duration::from_secs(120));
    assert_same(
        committed_lines(&out),
        expected_updates(n),
        "WordCount updates over runs at parallelism 4, 2 and 6",
    );
}

#[test]
fn a_panicking_operator_restarts_then_fails_with_its_message_in_list_and_rest() {
    let cluster = Cluster::start(2);
    let work = tempfile::tempdir().expect("a temp dir");
    let bundle = stripped_bundle("wordcount", work.path());
    let job = cluster.submit(
        &bundle,
        &[
            "-p",
            "2",
            "-D",
            "restart-strategy.type=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.attempts=2",
            "-D",
            "restart-strategy.fixed-delay.delay=100ms",
        ],
        &["--generate", "1000", "--panic-on", "w500"],
    );
    cluster.wait_for_state(&job, "FAILED", Duration::from_secs(60));
    let exceptions = cluster
        .get(&format!("/jobs/{job}/exceptions"))
        .expect("the job's exceptions");
    let root = exceptions["root-exception"].as_str().unwrap_or_default();
    assert!(
        root.contains("panicked") && root.contains("a line holds the word 'w500'"),
        "{exceptions}"
    );
    let entries = exceptions["exceptionHistory"]["entries"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(entries, 3, "two restarts, then the failure: {exceptions}");
    let (ok, listed) = cluster.cli("list", &["-a"]);
    assert!(ok, "{listed}");
    let line = listed
        .lines()
        .position(|l| l.contains(&job))
        .unwrap_or_else(|| panic!("job {job} not listed: {listed}"));
    assert!(
        listed
            .lines()
            .nth(line)
            .is_some_and(|l| l.contains("FAILED")),
        "{listed}"
    );
    assert!(
        listed.contains("a line holds the word 'w500'"),
        "the root cause is listed: {listed}"
    );
}
