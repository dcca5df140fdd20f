//! A standalone cluster on loopback for the tests: a master (`sluice-am`) and worker daemons
//! (`sluice-worker`) as child processes, their logs in a temp dir, and the REST calls and
//! `sluice` commands the tests make against it.

// Each test file uses its own part of these helpers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_testkit::release_bin as bin;
use sluice_testkit::stripped_bundle;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub rpc: u16,
    pub rest: u16,
    pub master: Child,
    pub workers: Vec<Child>,
    /// Each worker's Prometheus port (`metrics.reporter.prom.port`), by worker index.
    pub prom_ports: Vec<u16>,
    pub http: reqwest::blocking::Client,
}

pub const TIMING: [&str; 6] = [
    "-D",
    "heartbeat.interval=200ms",
    "-D",
    "heartbeat.timeout=2s",
    "-D",
    "slot.request.timeout=60s",
];

impl Cluster {
    pub fn start(workers: usize) -> Cluster {
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
            prom_ports: Vec::new(),
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

    pub fn add_worker(&mut self) {
        let n = self.workers.len();
        let log =
            |name: String| std::fs::File::create(self.dir.path().join(name)).expect("a log file");
        let prom = free_port();
        let w = Command::new(bin("sluice-worker"))
            .args(["-D", &format!("jobmanager.rpc.port={}", self.rpc)])
            .args(["-D", &format!("metrics.reporter.prom.port={prom}")])
            .args(["-D", "taskmanager.numberOfTaskSlots=2"])
            .args(["-D", &format!("taskmanager.resource-id=worker-{n}")])
            .args(TIMING)
            .env("SLUICE_LOG_DIR", self.dir.path())
            .stdout(log(format!("worker-{n}.out")))
            .stderr(log(format!("worker-{n}.err")))
            .spawn()
            .expect("a worker starts");
        self.workers.push(w);
        self.prom_ports.push(prom);
    }

    /// Worker `i`'s Prometheus text, if it answers.
    pub fn worker_metrics(&self, i: usize) -> Option<String> {
        self.http
            .get(format!("http://127.0.0.1:{}/metrics", self.prom_ports[i]))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.text().ok())
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.http
            .get(format!("http://127.0.0.1:{}/v1{path}", self.rest))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.json().ok())
    }

    /// `sluice <verb> -m ... <args>`: (success, stdout + stderr).
    pub fn cli(&self, verb: &str, args: &[&str]) -> (bool, String) {
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
    pub fn stop_with_savepoint(&self, job: &str, dir: &Path) -> String {
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

    pub fn wait_for_checkpoints(&self, job: &str, n: u64) {
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

    pub fn master(&self) -> String {
        format!("127.0.0.1:{}", self.rest)
    }

    /// `sluice run -m ... -d`; returns the job id.
    pub fn submit(&self, bundle: &Path, flags: &[&str], job_args: &[&str]) -> String {
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

    pub fn state(&self, job: &str) -> String {
        self.get(&format!("/jobs/{job}"))
            .and_then(|j| j["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn wait_for_state(&self, job: &str, state: &str, timeout: Duration) {
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

    pub fn completed_checkpoints(&self, job: &str) -> u64 {
        self.get(&format!("/jobs/{job}/checkpoints"))
            .and_then(|c| c["counts"]["completed"].as_u64())
            .unwrap_or(0)
    }

    /// The index of a worker that runs subtasks (four subtasks may fit on two of three
    /// workers).
    pub fn busy_worker(&self) -> usize {
        let taskmanagers = self.get("/taskmanagers").expect("the worker list");
        taskmanagers["taskmanagers"]
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
            .unwrap_or_else(|| panic!("a worker runs subtasks: {taskmanagers}"))
    }

    /// The pid of the latest process of `job` that worker `n` started, from its log.
    pub fn job_process(&self, n: usize, job: &str) -> Option<u32> {
        let log = std::fs::read_to_string(self.dir.path().join(format!("worker-{n}.err"))).ok()?;
        let prefix = format!("started job {job} (pid ");
        log.lines()
            .rev()
            .find_map(|l| l.split_once(&prefix)?.1.strip_suffix(')')?.parse().ok())
    }

    pub fn logs(&self) -> String {
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

/// A WordCount job at parallelism 4 running on a [`Cluster`], with exactly-once part files.
pub struct WordCountRun {
    /// Holds the bundle, the output and the checkpoints; removed on drop.
    pub work: tempfile::TempDir,
    pub out: PathBuf,
    pub job: String,
    /// How many lines the job generates.
    pub lines: u64,
}

/// Submits WordCount generating `lines` lines at 6,000 a second, checkpointing every 300 ms to
/// local disk and restarting after 200 ms, and returns once it runs and 2 checkpoints completed
/// — the point where the fault tests strike.
pub fn start_wordcount(cluster: &Cluster, lines: u64) -> WordCountRun {
    let work = tempfile::tempdir().expect("a temp dir");
    let bundle = stripped_bundle("wordcount", work.path());
    let out = work.path().join("out");
    let checkpoints = format!("file://{}", work.path().join("checkpoints").display());
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
            &lines.to_string(),
            "--rate",
            "6000",
            "--output",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    cluster.wait_for_state(&job, "RUNNING", Duration::from_secs(60));
    cluster.wait_for_checkpoints(&job, 2);
    WordCountRun {
        work,
        out,
        job,
        lines,
    }
}
