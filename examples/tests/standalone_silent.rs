//! A worker daemon that goes silent (SIGSTOP) in a standalone cluster: the master declares it
//! lost after `heartbeat.timeout` and fences its job process, which exits although its
//! stopped daemon cannot tell it to; the job recovers on the other workers. Woken again
//! (SIGCONT), the daemon finds its master connection closed and exits, and the exactly-once
//! part files equal a failure-free run's updates exactly: nothing was committed twice. The
//! same holds when the job process is stopped with its daemon and wakes mid-stream.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use sluice_examples::wordcount::expected_updates;
use sluice_testkit::{assert_same, committed_lines};
use support::{Cluster, WordCountRun, start_wordcount, wait_until};

fn signal(name: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid}");
}

/// Whether process `pid` has exited: it is gone, or a zombie its stopped parent did not reap.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_silent_worker_is_fenced_and_on_waking_commits_nothing_twice() {
    silent_worker(false);
}

/// The whole machine goes silent: the job process stops with its daemon, and wakes with its
/// subtasks mid-stream.
#[test]
fn a_silent_worker_and_its_job_process_wake_and_commit_nothing_twice() {
    silent_worker(true);
}

/// Stops a worker daemon that runs subtasks (and with `with_job_process` its job process),
/// lets the job recover without it, wakes it and checks the output.
fn silent_worker(with_job_process: bool) {
    let mut cluster = Cluster::start(3);
    let WordCountRun {
        work: _work,
        out,
        job,
        lines: n,
    } = start_wordcount(&cluster, 120_000);
    let busy = cluster.busy_worker();
    let daemon = cluster.workers[busy].id();
    let process = cluster
        .job_process(busy, &job)
        .unwrap_or_else(|| panic!("worker-{busy} started job {job}\n{}", cluster.logs()));
    let before_stop = committed_lines(&out).len();

    signal("STOP", daemon);
    if with_job_process {
        signal("STOP", process);
    }
    let stopped = Instant::now();
    if !with_job_process {
        // heartbeat.timeout is 2 s: the master fences the process a moment after.
        wait_until(
            "the silent worker's job process to exit",
            Duration::from_secs(20),
            || exited(process),
        );
        let fenced_after = stopped.elapsed();
        assert!(
            fenced_after >= Duration::from_millis(1500),
            "the job process exited {fenced_after:?} after its daemon stopped, before the \
             heartbeat timeout"
        );
        eprintln!("job process exited {fenced_after:?} after its daemon was stopped");
        // It exited because the master fenced it, not on a timeout of its own.
        let log = std::fs::read_to_string(
            cluster
                .dir
                .path()
                .join(format!("job-{job}-worker-{busy}.out")),
        )
        .unwrap_or_default();
        assert!(
            log.contains(&format!("its process on worker worker-{busy} was fenced")),
            "the job process's log: {log}"
        );
    }
    wait_until(
        "the worker's loss in the exception history",
        Duration::from_secs(20),
        || {
            cluster
                .get(&format!("/jobs/{job}/exceptions"))
                .is_some_and(|e| {
                    e["exceptionHistory"]["entries"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty())
                })
        },
    );
    // The job goes on without the worker: checkpoints complete after the restart.
    let completed = cluster.completed_checkpoints(&job);
    cluster.wait_for_checkpoints(&job, completed + 2);
    assert_eq!(
        cluster.state(&job),
        "RUNNING",
        "the job still runs when the silent worker wakes"
    );

    let woke = Instant::now();
    if with_job_process {
        signal("CONT", process);
    }
    signal("CONT", daemon);
    wait_until(
        "the woken worker daemon to exit",
        Duration::from_secs(20),
        || matches!(cluster.workers[busy].try_wait(), Ok(Some(_))),
    );
    let daemon_log = std::fs::read_to_string(cluster.dir.path().join(format!("worker-{busy}.err")))
        .unwrap_or_default();
    assert!(
        daemon_log.contains("lost the master"),
        "the daemon says why it exits: {daemon_log}"
    );
    wait_until(
        "the woken job process to exit",
        Duration::from_secs(20),
        || exited(process),
    );
    eprintln!(
        "daemon and job process exited {:?} after SIGCONT",
        woke.elapsed()
    );

    cluster.wait_for_state(&job, "FINISHED", Duration::from_secs(120));
    let got = committed_lines(&out);
    assert!(
        before_stop < got.len(),
        "the job made progress after the worker went silent"
    );
    assert_same(
        got,
        expected_updates(n),
        "WordCount updates after a worker went silent and woke again",
    );
}
