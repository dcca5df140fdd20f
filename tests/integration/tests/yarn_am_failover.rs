//! ZooKeeper high availability of the YARN ApplicationMaster, on the real YARN + HDFS +
//! ZooKeeper test cluster: WordCount submitted with `yarn-submit -d -p 4` and
//! `high-availability.type: zookeeper` (cluster id: the application id) checkpoints to HDFS;
//! the ApplicationMaster's process is killed with SIGKILL mid-stream; YARN starts attempt 2,
//! which wins the leader election, recovers the job from its latest completed checkpoint and
//! keeps the worker containers of attempt 1, whose workers re-register with it. The job ends
//! with exactly a failure-free run's updates committed, and the application leaves no
//! container, ZooKeeper node or HA file behind. The failover time is printed (run with
//! `--nocapture`). Also: `yarn-submit --kill` removes the ZooKeeper nodes, the HA directory and
//! the staging directory the killed application leaves; an attempt that finds the
//! application's result recorded unregisters with it instead of running the job again.
//!
//! Needs the workspace's binaries: `cargo build --release -p sluice-yarn-submit -p sluice-cli
//! -p sluice-examples -p sluice-am -p sluice-worker`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hdfs_native::{Client, ClientBuilder};
use sluice_examples::wordcount::expected_updates;
use sluice_integration_tests::{TestCluster, unique};
use sluice_testcluster::yarn::{
    am_address, app_ended, app_report, application_id, client_command, get_json, output_text,
    wait_for_app_end, wait_for_checkpointed_job,
};
use sluice_testkit::{assert_same, committed_lines, release_bin as bin, stripped_bundle};

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
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["-d", "-p", "4"])
        .args(conf_args(&cluster, &base))
        .arg(&bundle)
        .arg("--")
        .args(["--generate", &n.to_string(), "--rate", "3000", "--output"])
        .arg(&output)
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "yarn-submit -d: {stdout}{stderr}");
    let id = application_id(&stdout);
    let zk = zookeeper_client::Client::connect(cluster.zk_quorum()).await?;
    let result = fail_over(&rm, &zk, &id, &output).await;
    if result.is_err() {
        // Leave nothing running behind a failed test.
        let _ = client_command(&cluster, &bin("yarn-submit"), &user)
            .args(["--kill", &id])
            .output();
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
        if app_ended(&r) {
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
    // Nor do its HA nodes and files (the HA directory of the application exists while it
    // runs: see `yarn_submit_kill_removes_what_the_killed_application_leaves`).
    let zk_base = format!("/sluice/{id}");
    assert!(
        zk.check_stat(&zk_base).await?.is_none(),
        "{zk_base} is removed from ZooKeeper with the application"
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
            !app_ended(&r),
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

/// `yarn-submit --kill` of a running HA application: YARN ends its ApplicationMaster with
/// SIGTERM, so the client removes what the master would have: the application's ZooKeeper
/// nodes, its HA storage directory and its staging directory.
#[tokio::test]
async fn yarn_submit_kill_removes_what_the_killed_application_leaves() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["zk", "hdfs", "yarn"])?;
    let rm = cluster.rm_web().to_string();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("yskill");
    let base = unique("sluice-am-kill-test");
    let output = tmp.path().join("out");
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["-d", "-p", "4"])
        .args(conf_args(&cluster, &base))
        .arg(&bundle)
        .arg("--")
        .args(["--generate", "300000", "--rate", "3000", "--output"])
        .arg(&output)
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "yarn-submit -d: {stdout}{stderr}");
    let id = application_id(&stdout);
    let kill = || {
        client_command(&cluster, &bin("yarn-submit"), &user)
            .args(["--kill", &id])
            .output()
    };
    let zk = zookeeper_client::Client::connect(cluster.zk_quorum()).await?;
    let hdfs = hdfs(&cluster);
    let zk_base = format!("/sluice/{id}");
    let ha_dir = format!("/{base}/ha/{id}");
    let staging = format!("/user/{user}/.sluice/{id}");
    // Everything to be removed exists while the job runs.
    let running = async {
        let (_, jid) = wait_for_checkpointed_job(&rm, &id, Duration::from_secs(120)).await?;
        anyhow::ensure!(
            zk.check_stat(&format!("{zk_base}/jobs/{jid}"))
                .await?
                .is_some(),
            "job {jid} is stored under {zk_base}/jobs"
        );
        for dir in [&ha_dir, &staging] {
            anyhow::ensure!(
                hdfs.get_file_info(dir).await.is_ok_and(|s| s.isdir),
                "{dir} exists while {id} runs"
            );
        }
        Ok(())
    }
    .await;
    if running.is_err() {
        let _ = kill();
    }
    running?;

    let out = kill()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "yarn-submit --kill: {stdout}{stderr}");
    assert!(
        stdout.contains(&format!("Killed application {id}: KILLED")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "Removed its high-availability nodes {zk_base} from ZooKeeper"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("Removed its high-availability directory") && stdout.contains(&ha_dir),
        "{stdout}"
    );
    let r = app_report(&rm, &id).await?;
    assert_eq!(r["state"], "KILLED", "{r:#}");
    assert!(
        zk.check_stat(&zk_base).await?.is_none(),
        "{zk_base} is removed from ZooKeeper by --kill"
    );
    for dir in [&ha_dir, &staging] {
        let left = hdfs.get_file_info(dir).await;
        assert!(left.is_err(), "{dir} is removed by --kill: {left:?}");
    }
    Ok(())
}

/// An attempt that finds the application's result recorded in ZooKeeper (a previous attempt
/// recorded it as its job ended, then died before unregistering) unregisters with that result
/// and does not run the job again.
#[tokio::test]
async fn an_attempt_finding_the_recorded_result_does_not_run_the_job_again() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["zk", "hdfs", "yarn"])?;
    let rm = cluster.rm_web().to_string();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("ysres");
    let base = unique("sluice-am-result-test");
    let cluster_id = unique("recorded");
    let output = tmp.path().join("out");
    // What the previous attempt left: `<root>/<cluster-id>/application-result`, KILLED (3).
    let zk = zookeeper_client::Client::connect(cluster.zk_quorum()).await?;
    let zk_base = format!("/sluice/{cluster_id}");
    let opts =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    for path in ["/sluice", zk_base.as_str()] {
        match zk.create(path, &[], &opts).await {
            Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    zk.create(
        &format!("{zk_base}/application-result"),
        br#"{"status":3,"diagnostics":"the job was cancelled in an earlier attempt"}"#,
        &opts,
    )
    .await?;
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["-d", "-p", "4"])
        .args(conf_args(&cluster, &base))
        .args(["-D", &format!("high-availability.cluster-id={cluster_id}")])
        .arg(&bundle)
        .arg("--")
        .args(["--generate", "20000", "--rate", "5000", "--output"])
        .arg(&output)
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "yarn-submit -d: {stdout}{stderr}");
    let id = application_id(&stdout);
    let end = wait_for_app_end(&rm, &id, Duration::from_secs(120)).await?;
    assert_eq!(end["state"], "FINISHED", "{end:#}");
    assert_eq!(end["finalStatus"], "KILLED", "the recorded result: {end:#}");
    assert!(
        end["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("cancelled in an earlier attempt")),
        "{end:#}"
    );
    assert!(
        committed_lines(&output).is_empty(),
        "the job did not run again"
    );
    // The ApplicationMaster removes them right after unregistering.
    let staging = format!("/user/{user}/.sluice/{id}");
    let hdfs = hdfs(&cluster);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let zk_left = zk.check_stat(&zk_base).await?.is_some();
        let staging_left = hdfs.get_file_info(&staging).await.is_ok();
        if !zk_left && !staging_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after the end: {zk_base} left: {zk_left}, {staging} left: {staging_left}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A detached application whose master fails on its last attempt (here: the only one, its
/// ZooKeeper quorum unreachable) deletes its staging directory before it exits.
#[tokio::test]
async fn a_master_failing_on_the_last_attempt_deletes_the_staging_directory() -> anyhow::Result<()>
{
    let cluster = TestCluster::ensure_up(&["zk", "hdfs", "yarn"])?;
    let rm = cluster.rm_web().to_string();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("yslast");
    let base = unique("sluice-am-last-attempt-test");
    // Nothing listens on port 1: the election cannot start, the attempt fails.
    let args: Vec<String> = conf_args(&cluster, &base)
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some(("high-availability.zookeeper.quorum", _)) => {
                "high-availability.zookeeper.quorum=127.0.0.1:1".to_string()
            }
            Some(("high-availability.zookeeper.client.session-timeout", _)) => {
                "high-availability.zookeeper.client.session-timeout=2s".to_string()
            }
            Some(("yarn.application-attempts", _)) => "yarn.application-attempts=1".to_string(),
            _ => a,
        })
        .collect();
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["-d", "-p", "2"])
        .args(&args)
        .arg(&bundle)
        .arg("--")
        .args(["--generate", "1000", "--output"])
        .arg(tmp.path().join("out"))
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "yarn-submit -d: {stdout}{stderr}");
    let id = application_id(&stdout);
    let staging = format!("/user/{user}/.sluice/{id}");
    let end = wait_for_app_end(&rm, &id, Duration::from_secs(120)).await?;
    assert_eq!(end["finalStatus"], "FAILED", "{end:#}");
    let attempts = get_json(&format!("{rm}/ws/v1/cluster/apps/{id}/appattempts")).await?;
    let attempts = attempts["appAttempts"]["appAttempt"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(attempts, 1, "one attempt of {id}");
    let hdfs = hdfs(&cluster);
    let deadline = Instant::now() + Duration::from_secs(20);
    while hdfs.get_file_info(&staging).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "{staging} is still there 20 s after the last attempt failed: {end:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
