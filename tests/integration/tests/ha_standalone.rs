//! ZooKeeper high availability of the standalone master, on the real 3-member ensemble: two
//! masters (`sluice-am`) and three worker daemons (`sluice-worker`) with
//! `high-availability.type: zookeeper`. The WordCount bundle runs at parallelism 4 with
//! checkpoints on a `file://` directory; the leading master is killed with SIGKILL mid-stream,
//! the standby takes over, recovers the job from its latest completed checkpoint, and the
//! committed part files equal a failure-free run's updates exactly. The failover times are
//! printed (run with `--nocapture`).
//!
//! Needs the workspace's binaries: `cargo build --release -p sluice-am -p sluice-worker
//! -p sluice-cli -p sluice-examples`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_examples::wordcount::expected_updates;
use sluice_integration_tests::{TestCluster, unique};
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET http://127.0.0.1:<port>/v1<path>` → the JSON body of a 2xx answer.
fn get(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("an address"),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /v1{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    if !status.starts_with('2') {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// Give leadership up as soon as the ZooKeeper connection is suspended (Flink's default).
const INTOLERANT: [&str; 2] = [
    "-D",
    "high-availability.zookeeper.client.tolerate-suspended-connections=false",
];

/// Fast heartbeats and a 5 s ZooKeeper session, as the failover target assumes.
const TIMING: [&str; 8] = [
    "-D",
    "heartbeat.interval=200ms",
    "-D",
    "heartbeat.timeout=2s",
    "-D",
    "slot.request.timeout=60s",
    "-D",
    "high-availability.zookeeper.client.session-timeout=5s",
];

struct Master {
    child: Child,
    rest: u16,
}

struct Cluster {
    dir: tempfile::TempDir,
    cluster_id: String,
    ha: Vec<String>,
    masters: Vec<Master>,
    workers: Vec<Child>,
    /// More `-D` settings for every master and worker, after the others.
    extra: Vec<String>,
}

impl Cluster {
    fn start(quorum: &str, masters: usize, workers: usize) -> Cluster {
        Self::start_with(quorum, masters, workers, &[])
    }

    fn start_with(quorum: &str, masters: usize, workers: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let storage = format!("file://{}", dir.path().join("ha").display());
        let cluster_id = unique("ha-standalone");
        let ha = vec![
            "-D".to_string(),
            "high-availability.type=zookeeper".to_string(),
            "-D".to_string(),
            format!("high-availability.zookeeper.quorum={quorum}"),
            "-D".to_string(),
            format!("high-availability.storageDir={storage}"),
            "-D".to_string(),
            format!("high-availability.cluster-id={cluster_id}"),
        ];
        let mut c = Cluster {
            dir,
            cluster_id,
            ha,
            masters: Vec::new(),
            workers: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..masters {
            c.add_master();
        }
        for _ in 0..workers {
            c.add_worker();
        }
        let leader = c.wait_for_leader(Duration::from_secs(30));
        wait_until("the workers to register", Duration::from_secs(30), || {
            get(c.masters[leader].rest, "/overview")
                .is_some_and(|o| o["taskmanagers"] == workers as u64)
        });
        c
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.path().join(name)).expect("a log file")
    }

    fn add_master(&mut self) {
        let n = self.masters.len();
        let rest = free_port();
        let child = Command::new(bin("sluice-am"))
            .args(["-D", "jobmanager.rpc.port=0"])
            .args(["-D", &format!("rest.port={rest}")])
            .args(TIMING)
            .args(&self.ha)
            .args(&self.extra)
            .stdout(self.log(&format!("master-{n}.out")))
            .stderr(self.log(&format!("master-{n}.err")))
            .spawn()
            .expect("a master starts");
        self.masters.push(Master { child, rest });
    }

    fn add_worker(&mut self) {
        let n = self.workers.len();
        let w = Command::new(bin("sluice-worker"))
            .args(["-D", "taskmanager.numberOfTaskSlots=2"])
            .args(["-D", &format!("taskmanager.resource-id=worker-{n}")])
            .args(TIMING)
            .args(&self.ha)
            .args(&self.extra)
            .env("SLUICE_LOG_DIR", self.dir.path())
            .stdout(self.log(&format!("worker-{n}.out")))
            .stderr(self.log(&format!("worker-{n}.err")))
            .spawn()
            .expect("a worker starts");
        self.workers.push(w);
    }

    /// The index of the master whose REST API answers (only the leader serves one).
    fn leader(&self) -> Option<usize> {
        let mut alive = self
            .masters
            .iter()
            .enumerate()
            .filter(|(_, m)| get(m.rest, "/overview").is_some());
        let first = alive.next().map(|(i, _)| i);
        assert!(alive.next().is_none(), "two masters lead\n{}", self.logs());
        first
    }

    fn wait_for_leader(&self, timeout: Duration) -> usize {
        let mut leader = None;
        wait_until("a leading master", timeout, || {
            leader = self.leader();
            leader.is_some()
        });
        leader.expect("a leader")
    }

    /// `sluice run -m ... -d`; returns the job id.
    fn submit(&self, rest: u16, bundle: &Path, flags: &[&str], job_args: &[&str]) -> String {
        let out = Command::new(bin("sluice"))
            .args(["run", "-m", &format!("127.0.0.1:{rest}"), "-d"])
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

    /// Runs `sluice <args>` with a configuration that has this cluster's `high-availability.*`
    /// keys and no REST address; its stdout (the command must succeed).
    fn sluice_without_address(&self, args: &[&str]) -> String {
        let conf = self.dir.path().join("cli-conf");
        std::fs::create_dir_all(&conf).expect("a conf dir");
        let yaml: String = self
            .ha
            .iter()
            .filter(|a| *a != "-D")
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| format!("{k}: \"{v}\"\n"))
            .collect();
        std::fs::write(conf.join("sluice.yaml"), yaml).expect("sluice.yaml");
        let out = Command::new(bin("sluice"))
            .args(args)
            .env("SLUICE_CONF_DIR", &conf)
            .output()
            .expect("sluice runs");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "sluice {args:?}: {stdout}{stderr}");
        stdout.into_owned()
    }

    fn state(&self, rest: u16, job: &str) -> String {
        get(rest, &format!("/jobs/{job}"))
            .and_then(|j| j["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn wait_for_state(&self, rest: u16, job: &str, state: &str, timeout: Duration) {
        wait_until(&format!("job {job} to be {state}"), timeout, || {
            let s = self.state(rest, job);
            assert!(
                s != "FAILED" || state == "FAILED",
                "job {job} failed: {:?}\n{}",
                get(rest, &format!("/jobs/{job}/exceptions")),
                self.logs()
            );
            s == state
        });
    }

    fn completed_checkpoints(&self, rest: u16, job: &str) -> u64 {
        get(rest, &format!("/jobs/{job}/checkpoints"))
            .and_then(|c| c["counts"]["completed"].as_u64())
            .unwrap_or(0)
    }

    fn wait_for_checkpoints(&self, rest: u16, job: &str, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.completed_checkpoints(rest, job) < n {
            assert!(
                Instant::now() < deadline,
                "no checkpoint completed\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The job files in the HA job store (`<storageDir>/<cluster-id>/jobs/`).
    fn stored_jobs(&self) -> Vec<String> {
        let dir = self
            .dir
            .path()
            .join("ha")
            .join(&self.cluster_id)
            .join("jobs");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// SIGKILL the master `i`.
    fn kill_master(&mut self, i: usize) {
        self.masters[i].child.kill().expect("SIGKILL a master");
        let _ = self.masters[i].child.wait();
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if !e.path().is_file() {
                continue;
            }
            if let Ok(t) = std::fs::read_to_string(e.path()) {
                let tail: Vec<&str> = t.lines().rev().take(20).collect();
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
        for m in &mut self.masters {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

/// This checkout's `scripts/testcluster.sh` (or `$SLUICE_TESTCLUSTER_SCRIPT`).
fn testcluster_script() -> PathBuf {
    std::env::var_os("SLUICE_TESTCLUSTER_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testcluster.sh")
        })
}

/// `scripts/testcluster.sh ARGS` of this checkout (or `$SLUICE_TESTCLUSTER_SCRIPT`) on the
/// running test cluster.
fn testcluster(dir: &Path, args: &[&str]) {
    let out = Command::new(testcluster_script())
        .args(args)
        .env("SLUICE_TESTCLUSTER_DIR", dir)
        .output()
        .expect("testcluster.sh runs");
    assert!(
        out.status.success(),
        "testcluster.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test cluster with the 3-member ZooKeeper ensemble running (`testcluster.sh up zk3`
/// leaves running services alone).
fn zookeeper_ensemble() -> TestCluster {
    if let Ok(c) = TestCluster::open()
        && c.info().zookeeper.mode == "zk3"
        && c.process_names("zk").iter().all(|p| c.process_alive(p))
    {
        return c;
    }
    testcluster(&TestCluster::dir(), &["up", "zk3"]);
    TestCluster::open().expect("the test cluster's cluster.json")
}

/// Kills the current leader; returns the new leader's index, and prints how long the job took
/// to be RUNNING again on it and to commit new output.
fn fail_over(cluster: &mut Cluster, leader: usize, job: &str, out: &Path) -> usize {
    let committed = committed_lines(out).len();
    let killed = Instant::now();
    cluster.kill_master(leader);
    let mut new_leader = None;
    wait_until("a new leader", Duration::from_secs(60), || {
        new_leader = cluster.leader();
        new_leader.is_some()
    });
    let new_leader = new_leader.expect("a new leader");
    assert_ne!(new_leader, leader);
    let rest = cluster.masters[new_leader].rest;
    let leading = killed.elapsed();
    wait_until(
        &format!("job {job} RUNNING on the new leader"),
        Duration::from_secs(60),
        || {
            let s = cluster.state(rest, job);
            s == "RUNNING" || s == "FINISHED"
        },
    );
    let running = killed.elapsed();
    wait_until(
        "new committed output after the failover",
        Duration::from_secs(120),
        || committed_lines(out).len() > committed || cluster.state(rest, job) == "FINISHED",
    );
    let output = killed.elapsed();
    println!(
        "failover: kill -9 of the leading master → new leader serving {:.2} s, job RUNNING \
         {:.2} s, first new committed output {:.2} s",
        leading.as_secs_f64(),
        running.as_secs_f64(),
        output.as_secs_f64()
    );
    new_leader
}

#[test]
fn the_leading_master_killed_mid_stream_is_replaced_and_nothing_is_lost_or_duplicated() {
    let zk = zookeeper_ensemble();
    let mut cluster = Cluster::start(zk.zk_quorum(), 2, 3);
    let work = tempfile::tempdir().expect("a temp dir");
    let bundle = stripped_bundle("wordcount", work.path());
    let out = work.path().join("out");
    let checkpoints = format!("file://{}", work.path().join("checkpoints").display());
    let n = 90_000u64;
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let job = cluster.submit(
        cluster.masters[leader].rest,
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
            "4000",
            "--output",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    let rest = cluster.masters[leader].rest;
    assert_eq!(
        cluster.stored_jobs(),
        vec![job.clone()],
        "the job is stored"
    );
    cluster.wait_for_state(rest, &job, "RUNNING", Duration::from_secs(60));
    cluster.wait_for_checkpoints(rest, &job, 2);
    assert!(
        !committed_lines(&out).is_empty() || cluster.completed_checkpoints(rest, &job) >= 2,
        "the job made progress before the kill"
    );

    let second = fail_over(&mut cluster, leader, &job, &out);
    // Without -m, the CLI finds the new leader in ZooKeeper, as Flink's does.
    let listed = cluster.sluice_without_address(&["list"]);
    assert!(
        listed.contains(&format!(" : {job} : ")) && listed.contains("(RUNNING)"),
        "`sluice list` through the leader found in ZooKeeper: {listed}"
    );

    // A third master joins as the standby; the second leader is killed too.
    cluster.add_master();
    let rest = cluster.masters[second].rest;
    if cluster.state(rest, &job) == "RUNNING" {
        cluster.wait_for_checkpoints(rest, &job, 1);
        fail_over(&mut cluster, second, &job, &out);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let rest = cluster.masters[leader].rest;
    cluster.wait_for_state(rest, &job, "FINISHED", Duration::from_secs(180));
    assert!(
        cluster.stored_jobs().is_empty(),
        "a finished job leaves the HA job store: {:?}",
        cluster.stored_jobs()
    );
    assert_same(
        committed_lines(&out),
        expected_updates(n),
        "WordCount updates after the leading master was killed twice",
    );
}

#[test]
fn a_zookeeper_member_killed_changes_nothing_visible() {
    let zk = zookeeper_ensemble();
    // The leader's client may be connected to the member killed: it reconnects to another
    // one and, tolerating the suspended connection (the default), keeps leading.
    let cluster = Cluster::start_with(zk.zk_quorum(), 2, 3, &[]);
    let work = tempfile::tempdir().expect("a temp dir");
    let bundle = stripped_bundle("wordcount", work.path());
    let out = work.path().join("out");
    let checkpoints = format!("file://{}", work.path().join("checkpoints").display());
    let n = 40_000u64;
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let rest = cluster.masters[leader].rest;
    let job = cluster.submit(
        rest,
        &bundle,
        &[
            "-p",
            "4",
            "-D",
            "execution.checkpointing.interval=300ms",
            "-D",
            &format!("state.checkpoints.dir={checkpoints}"),
        ],
        &[
            "--generate",
            &n.to_string(),
            "--rate",
            "4000",
            "--output",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    cluster.wait_for_state(rest, &job, "RUNNING", Duration::from_secs(60));
    cluster.wait_for_checkpoints(rest, &job, 1);
    let member = zk.process_names("zk")[0].to_string();
    testcluster(&zk.info().dir, &["kill", &member]);
    let before = cluster.completed_checkpoints(rest, &job);
    cluster.wait_for_state(rest, &job, "FINISHED", Duration::from_secs(120));
    testcluster(&zk.info().dir, &["restart", &member]);
    assert_eq!(
        cluster.leader(),
        Some(leader),
        "the leader stayed\n{}",
        cluster.logs()
    );
    assert!(
        cluster.completed_checkpoints(rest, &job) > before,
        "checkpoints went on completing"
    );
    let restarts = get(rest, &format!("/jobs/{job}/exceptions")).expect("exceptions");
    assert!(
        restarts["exceptionHistory"]["entries"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "the job did not restart: {restarts}"
    );
    assert_same(
        committed_lines(&out),
        expected_updates(n),
        "WordCount updates with one ZooKeeper member killed",
    );
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Fencing: the leader is paused (SIGSTOP) until the standby took over and completed a
/// checkpoint of its own, then resumed (SIGCONT). The resumed master finds its ZooKeeper
/// session gone and exits without acting: it completes no checkpoint (the pointers in
/// ZooKeeper only name the new leader's), deploys nothing, and the output is exact.
#[test]
fn a_paused_leader_resumed_after_a_failover_neither_checkpoints_nor_deploys() {
    let zk = zookeeper_ensemble();
    let mut cluster = Cluster::start(zk.zk_quorum(), 2, 2);
    let work = tempfile::tempdir().expect("a temp dir");
    let bundle = stripped_bundle("wordcount", work.path());
    let out = work.path().join("out");
    let checkpoints = format!("file://{}", work.path().join("checkpoints").display());
    let n = 60_000u64;
    let old = cluster.wait_for_leader(Duration::from_secs(10));
    let job = cluster.submit(
        cluster.masters[old].rest,
        &bundle,
        &[
            "-p",
            "2",
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
            "3000",
            "--output",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    let old_rest = cluster.masters[old].rest;
    cluster.wait_for_state(old_rest, &job, "RUNNING", Duration::from_secs(60));
    cluster.wait_for_checkpoints(old_rest, &job, 2);

    let old_pid = cluster.masters[old].child.id();
    signal(old_pid, "STOP");
    let new = 1 - old;
    let new_rest = cluster.masters[new].rest;
    wait_until("the standby to lead", Duration::from_secs(60), || {
        get(new_rest, "/overview").is_some()
    });
    cluster.wait_for_state(new_rest, &job, "RUNNING", Duration::from_secs(60));
    cluster.wait_for_checkpoints(new_rest, &job, 1);
    let resumed_at = std::fs::read_to_string(cluster.dir.path().join(format!("master-{old}.err")))
        .expect("the paused master's log")
        .len();

    // Every worker left the paused master and registered with the new leader, whose epoch is
    // newer: a message of the old one would now be refused as stale (the refusal itself is
    // shown in ha_fencing.rs and the daemon's tests).
    let epoch_of = |i: usize| {
        let log = cluster.master_log(i);
        log.lines()
            .find_map(|l| {
                l.strip_prefix("sluice-am: leader (epoch ")
                    .and_then(|r| r.split(')').next())
                    .and_then(|e| e.parse::<i64>().ok())
            })
            .unwrap_or_else(|| panic!("master {i} published no epoch:\n{log}"))
    };
    let (old_epoch, new_epoch) = (epoch_of(old), epoch_of(new));
    assert!(new_epoch > old_epoch, "epochs {old_epoch} → {new_epoch}");
    for w in 0..cluster.workers.len() {
        let file = cluster.dir.path().join(format!("worker-{w}.out"));
        let marker = format!("; leader epoch {new_epoch})");
        wait_until(
            &format!("worker {w} to register with epoch {new_epoch}"),
            Duration::from_secs(30),
            || std::fs::read_to_string(&file).is_ok_and(|t| t.contains(&marker)),
        );
    }
    let resumed = Instant::now();
    signal(old_pid, "CONT");
    let mut exited = None;
    wait_until(
        "the resumed master to exit",
        Duration::from_secs(30),
        || {
            exited = cluster.masters[old].child.try_wait().expect("try_wait");
            exited.is_some()
        },
    );
    println!(
        "paused leader (epoch {old_epoch}) resumed after the failover to epoch {new_epoch}: \
         exited {:.2} s after SIGCONT",
        resumed.elapsed().as_secs_f64()
    );
    assert!(
        !exited.expect("exited").success(),
        "a deposed master exits with an error"
    );
    let log = std::fs::read_to_string(cluster.dir.path().join(format!("master-{old}.err")))
        .expect("the old master's log");
    let after = &log[resumed_at.min(log.len())..];
    assert!(
        after.contains("lost leadership"),
        "the resumed master says it lost leadership:\n{after}"
    );
    assert!(
        !after.contains("deployed on") && !after.contains("completed at"),
        "the resumed master deployed nothing and completed no checkpoint:\n{after}"
    );

    let new_log = std::fs::read_to_string(cluster.dir.path().join(format!("master-{new}.err")))
        .expect("the new leader's log");
    assert!(
        new_log.contains("completed at"),
        "the new leader registered its checkpoints in ZooKeeper:\n{new_log}"
    );
    cluster.wait_for_state(new_rest, &job, "FINISHED", Duration::from_secs(120));
    assert_same(
        committed_lines(&out),
        expected_updates(n),
        "WordCount updates after a paused leader was resumed",
    );
}

/// Every member of the ensemble paused (SIGSTOP: connections stay open, nothing answers);
/// dropping this resumes them all, also when a test fails in between.
struct QuorumDown {
    dir: PathBuf,
    members: Vec<String>,
}

impl QuorumDown {
    fn pause(zk: &TestCluster, members: Vec<String>) -> QuorumDown {
        let dir = zk.info().dir.clone();
        for m in &members {
            testcluster(&dir, &["pause", m]);
        }
        QuorumDown { dir, members }
    }
}

impl Drop for QuorumDown {
    fn drop(&mut self) {
        for m in &self.members {
            testcluster(&self.dir, &["resume", m]);
        }
    }
}

/// The whole ZooKeeper quorum stops answering for 20 s (every member paused), shorter than
/// the masters' 45 s session, with `tolerate-suspended-connections: true` (the default): the leader
/// suspends (no checkpoint completes while it cannot reach ZooKeeper), then resumes when the
/// quorum is back, without a restart of the master or the job, and nothing is lost.
#[test]
fn the_quorum_lost_for_20_s_suspends_the_leader_which_resumes_without_a_restart() {
    let zk = zookeeper_ensemble();
    let cluster = Cluster::start_with(
        zk.zk_quorum(),
        1,
        2,
        &[
            "-D",
            "high-availability.zookeeper.client.session-timeout=45s",
        ],
    );
    let work = tempfile::tempdir().expect("a temp dir");
    let bundle = stripped_bundle("wordcount", work.path());
    let out = work.path().join("out");
    let checkpoints = format!("file://{}", work.path().join("checkpoints").display());
    let n = 100_000u64;
    let rest = cluster.masters[0].rest;
    let job = cluster.submit(
        rest,
        &bundle,
        &[
            "-p",
            "2",
            "-D",
            "execution.checkpointing.interval=300ms",
            "-D",
            &format!("state.checkpoints.dir={checkpoints}"),
        ],
        &[
            "--generate",
            &n.to_string(),
            "--rate",
            "2000",
            "--output",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    cluster.wait_for_state(rest, &job, "RUNNING", Duration::from_secs(60));
    cluster.wait_for_checkpoints(rest, &job, 2);

    let members: Vec<String> = zk
        .process_names("zk")
        .iter()
        .map(|m| m.to_string())
        .collect();
    let quorum = QuorumDown::pause(&zk, members);
    // A checkpoint in flight when the quorum went may still end; none after that.
    std::thread::sleep(Duration::from_secs(3));
    let suspended = cluster.completed_checkpoints(rest, &job);
    std::thread::sleep(Duration::from_secs(17));
    let still = cluster.completed_checkpoints(rest, &job);
    assert_eq!(
        still,
        suspended,
        "no checkpoint completes while the quorum is lost\n{}",
        cluster.logs()
    );
    drop(quorum);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.completed_checkpoints(rest, &job) <= still {
        assert!(
            Instant::now() < deadline,
            "checkpoints resume once the quorum is back\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cluster.wait_for_state(rest, &job, "FINISHED", Duration::from_secs(120));
    let restarts = get(rest, &format!("/jobs/{job}/exceptions")).expect("exceptions");
    assert!(
        restarts["exceptionHistory"]["entries"]
            .as_array()
            .is_none_or(|e| e.is_empty()),
        "the job did not restart: {restarts}"
    );
    assert_same(
        committed_lines(&out),
        expected_updates(n),
        "WordCount updates across a lost ZooKeeper quorum",
    );
}

impl Cluster {
    /// Waits up to `timeout` for master `i` to exit; its exit code.
    fn wait_for_exit(&mut self, i: usize, timeout: Duration) -> Option<i32> {
        let mut status = None;
        let child = &mut self.masters[i].child;
        let deadline = Instant::now() + timeout;
        while status.is_none() {
            status = child.try_wait().expect("try_wait");
            if status.is_none() {
                assert!(
                    Instant::now() < deadline,
                    "master {i} still runs after {timeout:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        status.expect("exited").code()
    }

    fn master_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("master-{i}.err")))
            .expect("a master's log")
    }

    /// Submits the WordCount bundle (`n` records at `rate`/s, parallelism 2, checkpoints every
    /// 300 ms, restarts after 200 ms) to master `leader`; returns the job id once it is
    /// RUNNING and completed 2 checkpoints.
    fn run_wordcount(&self, leader: usize, work: &Path, n: u64, rate: u64) -> String {
        let bundle = stripped_bundle("wordcount", work);
        let checkpoints = format!("file://{}", work.join("checkpoints").display());
        let rest = self.masters[leader].rest;
        let job = self.submit(
            rest,
            &bundle,
            &[
                "-p",
                "2",
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
                &rate.to_string(),
                "--output",
                work.join("out").to_str().expect("a UTF-8 path"),
            ],
        );
        self.wait_for_state(rest, &job, "RUNNING", Duration::from_secs(60));
        self.wait_for_checkpoints(rest, &job, 2);
        job
    }
}

/// The leader watches its own latch node: deleted by someone else (here the test, through
/// ZooKeeper), the leader stops leading at once and exits with code 3; the standby, which
/// watched that node too, takes over and finishes the job with nothing lost or duplicated.
#[test]
fn a_leader_whose_latch_node_is_deleted_stops_leading_and_the_standby_takes_over() {
    let zk = zookeeper_ensemble();
    let mut cluster = Cluster::start(zk.zk_quorum(), 2, 2);
    let work = tempfile::tempdir().expect("a temp dir");
    let n = 40_000u64;
    let old = cluster.wait_for_leader(Duration::from_secs(10));
    let job = cluster.run_wordcount(old, work.path(), n, 3000);

    let session = sluice_am::ha::Zk::connect(zk.zk_quorum(), Duration::from_secs(10))
        .expect("a ZooKeeper session");
    let dir = format!("/sluice/{}/leader/latch", cluster.cluster_id);
    let mut latches = session.children(&dir).expect("the latch nodes");
    latches.sort();
    assert_eq!(latches.len(), 2, "one latch node per master: {latches:?}");
    let deleted = Instant::now();
    session
        .delete(&format!("{dir}/{}", latches[0]))
        .expect("the leader's latch node deleted");

    let code = cluster.wait_for_exit(old, Duration::from_secs(10));
    let exited = deleted.elapsed();
    assert_eq!(code, Some(3), "the old leader exits with code 3");
    let log = cluster.master_log(old);
    assert!(
        log.contains(&format!("its latch node {dir}/{} was deleted", latches[0]))
            && log.contains("lost leadership"),
        "the old leader says why it stopped:\n{log}"
    );
    let new = 1 - old;
    let new_rest = cluster.masters[new].rest;
    wait_until("the standby to lead", Duration::from_secs(30), || {
        get(new_rest, "/overview").is_some()
    });
    let serving = deleted.elapsed();
    cluster.wait_for_state(new_rest, &job, "RUNNING", Duration::from_secs(60));
    println!(
        "latch node deleted → old leader exited {:.2} s, new leader serving {:.2} s",
        exited.as_secs_f64(),
        serving.as_secs_f64()
    );
    cluster.wait_for_state(new_rest, &job, "FINISHED", Duration::from_secs(120));
    assert_same(
        committed_lines(&work.path().join("out")),
        expected_updates(n),
        "WordCount updates after the leader's latch node was deleted",
    );
}

/// `tolerate-suspended-connections: false` (Flink's default): the quorum stops answering (every
/// member paused) until the leader gave up, well within the 20 s session, which would have
/// survived: the leader gives leadership up as soon as its client declares the connection
/// lost (suspended), exiting with code 3 as on session loss, instead of waiting; the standby
/// leads once the quorum is back and the job ends with nothing lost or duplicated.
#[test]
fn without_tolerating_suspended_connections_a_lost_quorum_makes_the_leader_give_up() {
    let zk = zookeeper_ensemble();
    let mut cluster = Cluster::start_with(
        zk.zk_quorum(),
        2,
        2,
        &[
            "-D",
            "high-availability.zookeeper.client.session-timeout=20s",
            INTOLERANT[0],
            INTOLERANT[1],
        ],
    );
    let work = tempfile::tempdir().expect("a temp dir");
    let n = 60_000u64;
    let old = cluster.wait_for_leader(Duration::from_secs(10));
    let job = cluster.run_wordcount(old, work.path(), n, 2000);

    let members: Vec<String> = zk
        .process_names("zk")
        .iter()
        .map(|m| m.to_string())
        .collect();
    let paused = Instant::now();
    let quorum = QuorumDown::pause(&zk, members);
    let code = cluster.wait_for_exit(old, Duration::from_secs(12));
    let gave_up = paused.elapsed();
    drop(quorum);
    assert_eq!(code, Some(3), "the leader exits with code 3");
    let log = cluster.master_log(old);
    assert!(
        log.contains(
            "lost leadership: the ZooKeeper connection was lost (suspended) and \
             high-availability.zookeeper.client.tolerate-suspended-connections is false"
        ),
        "the leader says why it gave up:\n{log}"
    );
    let new = 1 - old;
    let new_rest = cluster.masters[new].rest;
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(new_rest, "/overview").is_none() {
        assert!(
            Instant::now() < deadline,
            "the standby does not lead\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let serving = paused.elapsed();
    cluster.wait_for_state(new_rest, &job, "FINISHED", Duration::from_secs(180));
    println!(
        "quorum paused → leader gave up {:.2} s, standby serving {:.2} s (quorum back after \
         the leader gave up)",
        gave_up.as_secs_f64(),
        serving.as_secs_f64()
    );
    assert_same(
        committed_lines(&work.path().join("out")),
        expected_updates(n),
        "WordCount updates after the leader gave up on a suspended connection",
    );
}
