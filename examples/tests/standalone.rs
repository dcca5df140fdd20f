//! A standalone cluster on loopback — a master (`sluice-am`) and three worker daemons
//! (`sluice-worker`) — runs the WordCount bundle at parallelism 4 with its subtasks spread over
//! the workers. A worker killed with SIGKILL mid-stream is replaced by the others, and the
//! exactly-once part files equal a failure-free run's updates exactly; a stop-with-savepoint
//! restored at parallelism 2 and 6 ends with the same counts.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_examples::wordcount::expected_updates;
use sluice_testkit::{assert_same, committed_lines, release_bin as bin, stripped_bundle};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    rpc: u16,
    rest: u16,
    master: Child,
    workers: Vec<Child>,
    http: reqwest::blocking::Client,
}

const TIMING: [&str; 6] = [
    "-D",
    "heartbeat.interval=200ms",
    "-D",
    "heartbeat.timeout=2s",
    "-D",
    "slot.request.timeout=60s",
];

impl Cluster {
    fn start(workers: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (rpc, rest) = (free_port(), free_port());
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("a log file");
        let master = Command::new(bin("sluice-am"))
            .args(["-D", &format!("jobmanager.rpc.port={rpc}")])
            .args(["-D", &format!("rest.port={rest}")])
            .args(TIMING)
            .stdout(log("master.out"))
            .stderr(log("master.err"))
            .spawn()
            .expect("the master starts");
        let mut c = Cluster {
            dir,
            rpc,
            rest,
            master,
            workers: Vec::new(),
            http: reqwest::blocking::Client::new(),
        };
        wait_until("the master's REST API", Duration::from_secs(20), || {
            c.get("/overview").is_some()
        });
        for _ in 0..workers {
            c.add_worker();
        }
        wait_until("the workers to register", Duration::from_secs(20), || {
            c.get("/overview")
                .is_some_and(|o| o["taskmanagers"] == workers as u64)
        });
        c
    }

    fn add_worker(&mut self) {
        let n = self.workers.len();
        let log =
            |name: String| std::fs::File::create(self.dir.path().join(name)).expect("a log file");
        let w = Command::new(bin("sluice-worker"))
            .args(["-D", &format!("jobmanager.rpc.port={}", self.rpc)])
            .args(["-D", "taskmanager.numberOfTaskSlots=2"])
            .args(["-D", &format!("taskmanager.resource-id=worker-{n}")])
            .args(TIMING)
            .env("SLUICE_LOG_DIR", self.dir.path())
            .stdout(log(format!("worker-{n}.out")))
            .stderr(log(format!("worker-{n}.err")))
            .spawn()
            .expect("a worker starts");
        self.workers.push(w);
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.http
            .get(format!("http://127.0.0.1:{}/v1{path}", self.rest))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.json().ok())
    }

    /// `sluice <verb> -m ... <args>`: (success, stdout + stderr).
    fn cli(&self, verb: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new(bin("sluice"))
            .args([verb, "-m", &self.master()])
            .args(args)
            .output()
            .expect("sluice runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Stops `job` with a savepoint into `dir`; returns the savepoint's path.
    fn stop_with_savepoint(&self, job: &str, dir: &Path) -> String {
        let (ok, text) = self.cli(
            "stop",
            &["--savepointPath", dir.to_str().expect("a UTF-8 path"), job],
        );
        assert!(ok, "sluice stop failed: {text}\n{}", self.logs());
        text.lines()
            .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
            .unwrap_or_else(|| panic!("no savepoint path in: {text}"))
            .trim()
            .to_string()
    }

    fn wait_for_checkpoints(&self, job: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.completed_checkpoints(job) < n {
            assert!(
                Instant::now() < deadline,
                "no checkpoint completed: {:?}\n{}",
                self.get(&format!("/jobs/{job}/checkpoints")),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn master(&self) -> String {
        format!("127.0.0.1:{}", self.rest)
    }

    /// `sluice run -m ... -d`; returns the job id.
    fn submit(&self, bundle: &Path, flags: &[&str], job_args: &[&str]) -> String {
        let out = Command::new(bin("sluice"))
            .args(["run", "-m", &self.master(), "-d"])
            .args(flags)
            .arg(bundle)
            .arg("--")
            .args(job_args)
            .stderr(Stdio::inherit())
            .output()
            .expect("sluice run starts");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "sluice run -m failed: {text}");
        text.lines()
            .find_map(|l| l.strip_prefix("Job has been submitted with JobID "))
            .unwrap_or_else(|| panic!("no job id in: {text}"))
            .trim()
            .to_string()
    }

    fn state(&self, job: &str) -> String {
        self.get(&format!("/jobs/{job}"))
            .and_then(|j| j["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn wait_for_state(&self, job: &str, state: &str, timeout: Duration) {
        wait_until(&format!("job {job} to be {state}"), timeout, || {
            let s = self.state(job);
            assert!(
                s != "FAILED" || state == "FAILED",
                "job {job} failed: {:?}\n{}",
                self.get(&format!("/jobs/{job}/exceptions")),
                self.logs()
            );
            s == state
        });
    }

    fn completed_checkpoints(&self, job: &str) -> u64 {
        self.get(&format!("/jobs/{job}/checkpoints"))
            .and_then(|c| c["counts"]["completed"].as_u64())
            .unwrap_or(0)
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

#[test]
fn a_worker_killed_mid_stream_loses_and_duplicates_nothing() {
    let mut cluster = Cluster::start(3);
    let work = tempfile::tempdir().expect("a temp dir");
    let bundle = stripped_bundle("wordcount", work.path());
    let out = work.path().join("out");
    let checkpoints = format!("file://{}", work.path().join("checkpoints").display());
    let n = 60_000u64;
    let job = cluster.submit(
        &bundle,
        &[
            "-p",
            "4",
            "-D",
            "execution.checkpointing.interval=300ms",
            "-D",
            &format!("state.checkpoints.dir={checkpoints}"),
            "-D",
            "restart-strategy.type=fixed-delay",
            "-D",
            "restart-strategy.fixed-delay.delay=200ms",
        ],
        &[
            "--generate",
            &n.to_string(),
            "--rate",
            "6000",
            "--output",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    cluster.wait_for_state(&job, "RUNNING", Duration::from_secs(60));
    cluster.wait_for_checkpoints(&job, 2);
    let before_kill = committed_lines(&out).len();
    // Four subtasks may fit on two of the three workers: kill one that runs subtasks.
    let taskmanagers = cluster.get("/taskmanagers").expect("the worker list");
    let busy = taskmanagers["taskmanagers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["freeSlots"].as_u64() < w["slotsNumber"].as_u64())
        .and_then(|w| {
            w["id"]
                .as_str()?
                .strip_prefix("worker-")?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("a worker runs subtasks: {taskmanagers}"));
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
    // The workers' record counters reach the job's page while it runs.
    wait_until(
        "records counted on the job page",
        Duration::from_secs(20),
        || {
            cluster.get(&format!("/jobs/{first}")).is_some_and(|j| {
                j["vertices"].as_array().is_some_and(|vs| {
                    vs.iter()
                        .any(|v| v["metrics"]["write-records"].as_u64() > Some(0))
                        && vs
                            .iter()
                            .any(|v| v["metrics"]["read-records"].as_u64() > Some(0))
                })
            })
        },
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
