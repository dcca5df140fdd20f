//! Savepoints and failures of a YARN application with the real master: WordCount submitted
//! detached at parallelism 4 is stopped with `sluice stop --yarn-app ... --savepointPath
//! hdfs:///...`, the application ends SUCCEEDED, and `yarn-submit -s` resumes it at
//! parallelism 2 to the end; both runs together commit exactly a failure-free run's updates.
//! Also measures the time from `kill -9` of a worker container's process to the job RUNNING
//! again.
//!
//! Needs the workspace's binaries: `cargo build --release -p sluice-yarn-submit -p sluice-cli
//! -p sluice-examples -p sluice-am -p sluice-worker`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_examples::wordcount::expected_updates;
use sluice_integration_tests::{TestCluster, unique};
use sluice_testcluster::yarn::{
    app_report, application_id, client_command, get_json, output_text, wait_for_app_end,
    wait_for_checkpointed_job,
};
use sluice_testkit::{assert_same, committed_lines, release_bin as bin, stripped_bundle};

/// Configuration of every submission: containers small enough for the test cluster's two
/// 2 GiB NodeManagers, frequent checkpoints on HDFS, quick failure detection and restarts.
fn conf_args(checkpoints: &str) -> Vec<String> {
    [
        "dfs.blocksize=128m",
        "jobmanager.memory.process.size=512m",
        "taskmanager.memory.process.size=512m",
        "taskmanager.numberOfTaskSlots=2",
        "execution.checkpointing.interval=300ms",
        &format!("state.checkpoints.dir={checkpoints}"),
        "restart-strategy.type=fixed-delay",
        "restart-strategy.fixed-delay.delay=200ms",
        "heartbeat.interval=200ms",
        "heartbeat.timeout=2s",
    ]
    .iter()
    .flat_map(|kv| ["-D".to_string(), kv.to_string()])
    .collect()
}

fn job_args(n: u64, rate: u64, output: &Path) -> Vec<String> {
    [
        "--generate".to_string(),
        n.to_string(),
        "--rate".to_string(),
        rate.to_string(),
        "--output".to_string(),
        output.to_str().expect("a UTF-8 path").to_string(),
    ]
    .to_vec()
}

/// Pids and command lines of this application's worker container processes.
fn workers(app_id: &str) -> Vec<(u32, String)> {
    // application_<ts>_<n> → containers are container_[eNN_]<ts>_<n>_..
    let key = app_id.trim_start_matches("application");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let first = cmd.split_whitespace().next().unwrap_or_default();
        if first.ends_with("sluice-worker")
            && cmd.contains("taskmanager.resource-id=container_")
            && cmd.contains(key)
        {
            out.push((pid, cmd));
        }
    }
    out
}

/// Stop-with-savepoint on YARN, then a resume at a lower parallelism: exactly-once across both.
#[tokio::test]
async fn stop_with_savepoint_then_resume_at_parallelism_2_is_exact() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
    let rm = cluster.rm_web().to_string();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("yssp");
    let base = unique("sluice-savepoint-test");
    let checkpoints = format!("{}/{base}/checkpoints", cluster.hdfs_url());
    let savepoints = format!("hdfs:///{base}/savepoints");
    let output = tmp.path().join("out");
    // 15 s of input at 4000 lines/s: the stop comes well before the end.
    let n = 60_000;
    let args = job_args(n, 4000, &output);

    let started = Instant::now();
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["-d", "-p", "4"])
        .args(conf_args(&checkpoints))
        .arg(&bundle)
        .arg("--")
        .args(&args)
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "yarn-submit -d: {stdout}{stderr}");
    let id = application_id(&stdout);
    let (_, jid) = wait_for_checkpointed_job(&rm, &id, Duration::from_secs(120)).await?;
    eprintln!(
        "figure: {id} RUNNING with a completed checkpoint {:.1} s after submission",
        started.elapsed().as_secs_f64()
    );

    let stop_started = Instant::now();
    let out = client_command(&cluster, &bin("sluice"), &user)
        .args([
            "stop",
            "--yarn-app",
            &id,
            "--savepointPath",
            &savepoints,
            &jid,
        ])
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "sluice stop: {stdout}{stderr}");
    let savepoint = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Savepoint completed. Path: "))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no savepoint path in: {stdout}{stderr}"));
    assert!(
        savepoint.contains(&format!("/{base}/savepoints/")),
        "the savepoint {savepoint} is under {savepoints}"
    );
    eprintln!(
        "figure: sluice stop --yarn-app took {:.2} s; savepoint {savepoint}",
        stop_started.elapsed().as_secs_f64()
    );
    let end = wait_for_app_end(&rm, &id, Duration::from_secs(60)).await?;
    assert_eq!(end["state"], "FINISHED", "{end:#}");
    assert_eq!(end["finalStatus"], "SUCCEEDED", "{end:#}");
    let first_run = committed_lines(&output).len();
    assert!(
        first_run > 0 && (first_run as u64) < expected_updates(n).len() as u64,
        "the first run committed {first_run} lines: stopped mid-stream"
    );

    let resumed = Instant::now();
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["-p", "2", "-s", &savepoint])
        .args(conf_args(&checkpoints))
        .arg(&bundle)
        .arg("--")
        .args(&args)
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(
        out.status.success(),
        "yarn-submit -s {savepoint}: {stdout}{stderr}"
    );
    eprintln!(
        "figure: resumed run at parallelism 2 took {:.1} s (first run committed {first_run} \
         lines before the stop)",
        resumed.elapsed().as_secs_f64()
    );
    assert_same(
        committed_lines(&output),
        expected_updates(n),
        "WordCount updates of the stopped and the resumed run",
    );
    Ok(())
}

/// `kill -9` of one worker container's process: the time until the job is RUNNING again.
#[tokio::test]
async fn time_from_a_killed_worker_container_to_running_again() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
    let rm = cluster.rm_web().to_string();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("yskill");
    let checkpoints = format!(
        "{}/{}/checkpoints",
        cluster.hdfs_url(),
        unique("sluice-kill-test")
    );
    let output = tmp.path().join("out");
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["-d", "-p", "4"])
        .args(conf_args(&checkpoints))
        .arg(&bundle)
        .arg("--")
        .args(job_args(200_000, 2000, &output))
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "yarn-submit -d: {stdout}{stderr}");
    let id = application_id(&stdout);
    let result = measure_recovery(&rm, &id).await;
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["--kill", &id])
        .output()?;
    assert!(out.status.success(), "--kill {id}: {:?}", output_text(&out));
    let r = result?;
    eprintln!(
        "figure: kill -9 of a worker container's process to: job RUNNING again {} ms; \
         replacement worker container's process running {} ms; first checkpoint triggered \
         after the kill completed {} ms",
        r.running, r.replacement, r.checkpoint
    );
    Ok(())
}

/// Milliseconds after a worker was killed until: the job, having left RUNNING, is RUNNING
/// again; a replacement worker container's process runs; the first checkpoint triggered after
/// the kill completed (every task runs again and acknowledged it).
struct Recovery {
    running: u128,
    replacement: u128,
    checkpoint: u128,
}

/// Kills one worker of `id` once its job runs and checkpointed, and times its recovery.
async fn measure_recovery(rm: &str, id: &str) -> anyhow::Result<Recovery> {
    let (addr, jid) = wait_for_checkpointed_job(rm, id, Duration::from_secs(120)).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ws = loop {
        let w = workers(id);
        if w.len() >= 2 {
            break w;
        }
        anyhow::ensure!(Instant::now() < deadline, "two workers of {id}: {w:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (victim, cmd) = ws[0].clone();
    eprintln!("killing worker process {victim}: {cmd}");
    let killed = Instant::now();
    let killed_epoch_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let status = Command::new("kill")
        .arg("-9")
        .arg(victim.to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -9 {victim}");
    let url = format!("http://{addr}/v1/jobs/{jid}");
    let mut states: Vec<(u128, String)> = Vec::new();
    let mut left_running = None;
    let running = loop {
        let state = match get_json(&url).await {
            Ok(v) => v["state"].as_str().unwrap_or("?").to_string(),
            Err(e) => format!("error: {e}"),
        };
        let at = killed.elapsed().as_millis();
        if states.last().is_none_or(|(_, s)| *s != state) {
            states.push((at, state.clone()));
        }
        if state != "RUNNING" {
            left_running.get_or_insert(at);
        } else if left_running.is_some() {
            eprintln!("job {jid} states after the kill (ms, state): {states:?}");
            break at;
        }
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(120),
            "job {jid} not RUNNING again 120 s after the kill; states {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let checkpoints = format!("{url}/checkpoints");
    let (mut replacement, mut checkpoint) = (None, None);
    while replacement.is_none() || checkpoint.is_none() {
        let at = killed.elapsed().as_millis();
        let now = workers(id);
        if replacement.is_none() && now.len() == 2 && now.iter().all(|(p, _)| *p != victim) {
            replacement = Some(at);
        }
        if checkpoint.is_none()
            && let Ok(c) = get_json(&checkpoints).await
            && c["latest"]["completed"]["trigger_timestamp"]
                .as_u64()
                .is_some_and(|t| t > killed_epoch_ms)
        {
            checkpoint = Some(at);
        }
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(120),
            "120 s after the kill: replacement worker at {replacement:?} ms, checkpoint at \
             {checkpoint:?} ms; workers {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Recovery {
        running,
        replacement: replacement.unwrap_or_default(),
        checkpoint: checkpoint.unwrap_or_default(),
    })
}

/// The dashboard and the REST API through the ResourceManager's web proxy, as the
/// application's tracking URL leads users there: the page, its assets (relative links) and
/// the REST documents it polls.
#[tokio::test]
async fn the_dashboard_works_through_the_yarn_web_proxy() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
    let rm = cluster.rm_web().to_string();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("ysproxy");
    let base = unique("sluice-proxy-test");
    let checkpoints = format!("{}/{base}/checkpoints", cluster.hdfs_url());
    let out = client_command(&cluster, &bin("yarn-submit"), &user)
        .args(["-d", "-p", "2"])
        .args(conf_args(&checkpoints))
        .arg(&bundle)
        .arg("--")
        .args(job_args(2_000_000, 2000, &tmp.path().join("out")))
        .output()?;
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "yarn-submit -d: {stdout}{stderr}");
    let id = application_id(&stdout);
    let result = through_proxy(&rm, &id, &format!("hdfs:///{base}/savepoints")).await;
    if result.is_err() {
        let _ = client_command(&cluster, &bin("yarn-submit"), &user)
            .args(["--kill", &id])
            .output();
    }
    result
}

async fn through_proxy(rm: &str, id: &str, savepoints: &str) -> anyhow::Result<()> {
    let (_, jid) = wait_for_checkpointed_job(rm, id, Duration::from_secs(120)).await?;
    let report = app_report(rm, id).await?;
    let tracking = report["trackingUrl"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        tracking.contains(&format!("/proxy/{id}")),
        "the tracking URL {tracking} leads through the proxy"
    );
    let proxy = format!("{}/", tracking.trim_end_matches('/'));
    let http = reqwest::Client::new();

    let page = http.get(&proxy).send().await?;
    assert_eq!(page.status(), 200, "GET {proxy}");
    let html = page.text().await?;
    assert!(
        html.contains("<script"),
        "the dashboard page at {proxy}: {html}"
    );
    // Every asset the page names is relative, so it resolves under the proxy's prefix.
    let assets: Vec<String> = ["href=\"", "src=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .filter(|url| !url.contains(':') && !url.starts_with(['/', '#']))
        .map(str::to_string)
        .collect();
    assert!(!assets.is_empty(), "assets in {html}");
    for a in &assets {
        let r = http.get(format!("{proxy}{a}")).send().await?;
        assert_eq!(r.status(), 200, "GET {proxy}{a}");
    }
    let overview: Value = http
        .get(format!("{proxy}v1/jobs/overview"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert!(
        overview["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["jid"] == jid.as_str())),
        "{overview}"
    );

    // The proxy forwards only GET and PUT: the page's POST and PATCH actions are refused
    // there (the page then points to the master's own address), and work at that address.
    let refused = http
        .post(format!("{proxy}v1/jobs/{jid}/savepoints"))
        .json(&serde_json::json!({"target-directory": savepoints}))
        .send()
        .await?;
    assert_eq!(refused.status(), 405, "POST through the proxy");
    let direct = report["amRPCAddress"].as_str().unwrap_or_default();
    let cancel = http
        .patch(format!("http://{direct}/v1/jobs/{jid}?mode=cancel"))
        .send()
        .await?;
    assert_eq!(cancel.status(), 202, "PATCH cancel at {direct}");
    let end = wait_for_app_end(rm, id, Duration::from_secs(60)).await?;
    assert_eq!(end["state"], "FINISHED", "{end:#}");
    Ok(())
}
