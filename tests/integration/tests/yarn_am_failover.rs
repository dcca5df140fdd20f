//! ZooKeeper high availability of the YARN ApplicationMaster, on the real YARN + HDFS +
//! ZooKeeper test cluster: WordCount submitted with `yarn-submit -d -p 4` and
//! `high-availability.type: zookeeper` (cluster id: the application id) checkpoints to HDFS;
//! the ApplicationMaster's process is killed with SIGKILL mid-stream; YARN starts attempt 2,
//! which wins the leader election, recovers the job from its latest completed checkpoint and
//! keeps the worker containers of attempt 1, whose workers re-register with it. The job ends
//! with exactly a failure-free run's updates committed, and the application leaves no
//! container, ZooKeeper node or HA file behind. The failover time is printed (run with
//! `--nocapture`).
//!
//! Needs the workspace's binaries: `cargo build --release -p sluice-yarn-submit -p sluice-cli
//! -p sluice-examples -p sluice-am -p sluice-worker`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hdfs_native::{Client, ClientBuilder};
use serde_json::Value;
use sluice_examples::wordcount::expected_updates;
use sluice_integration_tests::{TestCluster, unique};
use sluice_testkit::{assert_same, committed_lines, release_bin as bin, stripped_bundle};

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn yarn_submit(cluster: &TestCluster, user: &str) -> Command {
    let mut cmd = Command::new(bin("yarn-submit"));
    cmd.env_remove("YARN_CONF_DIR")
        .env_remove("HADOOP_HOME")
        .env_remove("SLUICE_CONF_DIR")
        .env("HADOOP_CONF_DIR", cluster.conf_dir())
        .env("HADOOP_USER_NAME", user)
        .current_dir(std::env::temp_dir());
    cmd
}

/// Containers small enough for the test cluster's two 2 GiB NodeManagers (attempt 2's
/// ApplicationMaster starts while attempt 1's workers still run), frequent checkpoints on
/// HDFS, ZooKeeper HA with the HA store on HDFS, two application attempts.
fn conf_args(cluster: &TestCluster, base: &str) -> Vec<String> {
    let hdfs = cluster.hdfs_url();
    [
        "dfs.blocksize=128m".to_string(),
        "jobmanager.memory.process.size=512m".into(),
        "taskmanager.memory.process.size=512m".into(),
        "taskmanager.numberOfTaskSlots=2".into(),
        "execution.checkpointing.interval=300ms".into(),
        format!("state.checkpoints.dir={hdfs}/{base}/checkpoints"),
        "restart-strategy.type=fixed-delay".into(),
        "restart-strategy.fixed-delay.delay=200ms".into(),
        "heartbeat.interval=200ms".into(),
        "heartbeat.timeout=2s".into(),
        "high-availability.type=zookeeper".into(),
        format!("high-availability.zookeeper.quorum={}", cluster.zk_quorum()),
        format!("high-availability.storageDir={hdfs}/{base}/ha"),
        "high-availability.zookeeper.client.session-timeout=10s".into(),
        "yarn.application-attempts=2".into(),
    ]
    .into_iter()
    .flat_map(|kv| ["-D".to_string(), kv])
    .collect()
}

fn application_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Application "))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no `Application <id>` line in {stdout}"))
}

async fn get_json(url: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(url)
        .await?
        .error_for_status()?
        .json::<Value>()
        .await?)
}

async fn app_report(rm: &str, id: &str) -> anyhow::Result<Value> {
    Ok(get_json(&format!("{rm}/ws/v1/cluster/apps/{id}")).await?["app"].clone())
}

fn ended(r: &Value) -> bool {
    matches!(r["state"].as_str(), Some("FINISHED" | "FAILED" | "KILLED"))
}

/// The registered ApplicationMaster's REST address, once one registered.
fn am_address(r: &Value) -> Option<String> {
    r["amRPCAddress"]
        .as_str()
        .filter(|a| !a.ends_with(":0") && a.contains(':'))
        .map(str::to_string)
}

/// Waits until the ApplicationMaster's REST API lists a RUNNING job with at least one
/// completed checkpoint; returns the AM's address and the job id.
async fn wait_for_checkpointed_job(
    rm: &str,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<(String, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = app_report(rm, id).await?;
        anyhow::ensure!(
            !ended(&r),
            "the application ended before its job ran: {r:#}"
        );
        if let Some(addr) = am_address(&r)
            && let Ok(v) = get_json(&format!("http://{addr}/v1/jobs/overview")).await
            && let Some(jid) = v["jobs"].as_array().and_then(|j| {
                j.iter()
                    .find(|j| j["state"] == "RUNNING")
                    .and_then(|j| j["jid"].as_str())
            })
            && let Ok(c) = get_json(&format!("http://{addr}/v1/jobs/{jid}/checkpoints")).await
            && c["counts"]["completed"].as_u64().unwrap_or(0) >= 1
        {
            return Ok((addr, jid.to_string()));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out waiting for a checkpointed RUNNING job of {id}: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pids of this application's processes named `name` (`sluice-am`, `sluice-worker`): the
/// application id's digits are in their container ids, on the command line (workers) or in
/// the environment (`CONTAINER_ID`).
fn processes(app_id: &str, name: &str) -> BTreeSet<u32> {
    // application_<ts>_<n> → containers are container_[eNN_]<ts>_<n>_..
    let key = app_id.trim_start_matches("application");
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ);
        let first = cmd.split_whitespace().next().unwrap_or_default();
        if first.ends_with(name) && (cmd.contains(key) || environ.contains(key)) {
            out.insert(pid);
        }
    }
    out
}

fn hdfs(cluster: &TestCluster) -> Client {
    ClientBuilder::new()
        .with_url(cluster.hdfs_url())
        .with_config_dir(cluster.conf_dir().to_string_lossy())
        .build()
        .expect("an HDFS client")
}

/// What the failover took, in milliseconds after the kill.
#[derive(Debug)]
struct Failover {
    /// Attempt 2 registered with the ResourceManager.
    registered: u128,
    /// The job RUNNING again on attempt 2.
    running: u128,
    /// The first new output committed (a checkpoint of attempt 2 completed).
    committed: Option<u128>,
}

/// `kill -9` of the ApplicationMaster mid-stream: attempt 2 recovers the job from its latest
/// checkpoint on attempt 1's worker containers; nothing lost, nothing duplicated.
#[tokio::test]
async fn the_application_master_killed_mid_stream_is_recovered_by_attempt_2_exactly_once()
-> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["zk", "hdfs", "yarn"])?;
    let rm = cluster.rm_web().to_string();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("ysfo");
    let base = unique("sluice-am-failover-test");
    let output = tmp.path().join("out");
    // 30 s of input: the kill and the recovery happen well before its end.
    let n = 90_000u64;
    let out = yarn_submit(&cluster, &user)
        .args(["-d", "-p", "4"])
        .args(conf_args(&cluster, &base))
        .arg(&bundle)
        .arg("--")
        .args(["--generate", &n.to_string(), "--rate", "3000", "--output"])
        .arg(&output)
        .output()?;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "yarn-submit -d: {stdout}{stderr}");
    let id = application_id(&stdout);
    let zk = zookeeper_client::Client::connect(cluster.zk_quorum()).await?;
    let result = fail_over(&rm, &zk, &id, &output).await;
    if result.is_err() {
        // Leave nothing running behind a failed test.
        let _ = yarn_submit(&cluster, &user).args(["--kill", &id]).output();
    }
    let (failover, workers) = result?;
    println!(
        "figure: kill -9 of the ApplicationMaster → attempt 2 registered {} ms, job RUNNING \
         again (restored from a checkpoint) {} ms, first new committed output {} ms",
        failover.registered,
        failover.running,
        failover.committed.map_or_else(
            || "(none: the job had ended)".to_string(),
            |c| c.to_string()
        )
    );

    let deadline = Instant::now() + Duration::from_secs(180);
    let end = loop {
        let r = app_report(&rm, &id).await?;
        if ended(&r) {
            break r;
        }
        anyhow::ensure!(Instant::now() < deadline, "{id} did not end: {r:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(end["state"], "FINISHED", "{end:#}");
    assert_eq!(end["finalStatus"], "SUCCEEDED", "{end:#}");
    let attempts = get_json(&format!("{rm}/ws/v1/cluster/apps/{id}/appattempts")).await?;
    let attempts = attempts["appAttempts"]["appAttempt"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(attempts, 2, "two ApplicationMaster attempts of {id}");
    assert_same(
        committed_lines(&output),
        expected_updates(n),
        "WordCount updates across the ApplicationMaster's failover",
    );

    // No container outlives the application: the kept workers end with it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<u32> = processes(&id, "sluice-worker")
            .into_iter()
            .chain(processes(&id, "sluice-am"))
            .collect();
        if left.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "processes of {id} still run 30 s after it ended: {left:?} (workers of attempt 1: \
             {workers:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nor do its HA nodes and files.
    let base = format!("/sluice/{id}");
    assert!(
        zk.check_stat(&base).await?.is_none(),
        "{base} is removed from ZooKeeper with the application"
    );
    let ha_dir = format!("/{base}/ha/{id}");
    let left = hdfs(&cluster).get_file_info(&ha_dir).await;
    assert!(left.is_err(), "{ha_dir} is removed with the application");
    Ok(())
}

/// Waits for a checkpointed job, kills the ApplicationMaster's process and waits for attempt
/// 2 to run the job again from a checkpoint with attempt 1's workers. Returns the timings and
/// the workers' pids.
async fn fail_over(
    rm: &str,
    zk: &zookeeper_client::Client,
    id: &str,
    output: &Path,
) -> anyhow::Result<(Failover, BTreeSet<u32>)> {
    let (addr1, jid) = wait_for_checkpointed_job(rm, id, Duration::from_secs(120)).await?;
    // The cluster id is the application id: the job and its checkpoints are kept there.
    let base = format!("/sluice/{id}");
    anyhow::ensure!(
        zk.check_stat(&format!("{base}/jobs/{jid}"))
            .await?
            .is_some(),
        "job {jid} is stored under {base}/jobs"
    );
    let pointers = zk
        .list_children(&format!("{base}/checkpoints/{jid}"))
        .await?;
    anyhow::ensure!(
        !pointers.is_empty(),
        "completed checkpoints of {jid} are registered under {base}/checkpoints"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let workers = loop {
        let w = processes(id, "sluice-worker");
        if w.len() == 2 {
            break w;
        }
        anyhow::ensure!(Instant::now() < deadline, "two workers of {id}: {w:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ams = processes(id, "sluice-am");
    anyhow::ensure!(ams.len() == 1, "one sluice-am of {id}: {ams:?}");
    let am = *ams.first().expect("one");
    let committed_before = committed_lines(output).len();
    let killed = Instant::now();
    let status = Command::new("kill")
        .arg("-9")
        .arg(am.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -9 {am}");
    eprintln!("killed the ApplicationMaster of {id} (pid {am}, REST {addr1})");

    let mut registered = None;
    let (addr2, running) = loop {
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(120),
            "job {jid} not RUNNING on attempt 2 of {id} 120 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = app_report(rm, id).await?;
        anyhow::ensure!(
            !ended(&r),
            "{id} ended instead of starting attempt 2: {r:#}"
        );
        let Some(addr) = am_address(&r).filter(|a| *a != addr1) else {
            continue;
        };
        registered.get_or_insert(killed.elapsed().as_millis());
        if let Ok(v) = get_json(&format!("http://{addr}/v1/jobs/{jid}")).await
            && v["state"] == "RUNNING"
        {
            break (addr, killed.elapsed().as_millis());
        }
    };
    eprintln!("attempt 2 of {id} runs job {jid} at {addr2}");
    let am2 = processes(id, "sluice-am");
    assert!(
        am2.len() == 1 && !am2.contains(&am),
        "attempt 2's ApplicationMaster is a new process: {am2:?} (attempt 1: {am})"
    );
    let c = get_json(&format!("http://{addr2}/v1/jobs/{jid}/checkpoints")).await?;
    let restored = &c["latest"]["restored"];
    assert!(
        restored["id"].as_u64().is_some_and(|i| i >= 1)
            && !restored["is_savepoint"].as_bool().unwrap_or(true),
        "attempt 2 restored job {jid} from a checkpoint: {c:#}"
    );
    // The workers of attempt 1 re-registered with attempt 2: the same processes run the job,
    // no container was added.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let overview = get_json(&format!("http://{addr2}/v1/overview")).await?;
        if overview["taskmanagers"] == 2 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "attempt 2 has 2 workers: {overview:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        processes(id, "sluice-worker"),
        workers,
        "attempt 2 runs on the workers of attempt 1"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = loop {
        if committed_lines(output).len() > committed_before {
            break Some(killed.elapsed().as_millis());
        }
        let state = get_json(&format!("http://{addr2}/v1/jobs/{jid}")).await;
        if state.is_ok_and(|v| v["state"] == "FINISHED") {
            break None;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no new committed output 60 s after attempt 2 took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Ok((
        Failover {
            registered: registered.unwrap_or(running),
            running,
            committed,
        },
        workers,
    ))
}
