//! `sluice-am --yarn` on the real YARN: an application submitted through the ResourceManager's
//! REST API, staged on HDFS as the submitting client stages it, runs WordCount at parallelism
//! 4 on two worker containers of two slots each and writes exactly the updates of a
//! failure-free run; a worker container killed with SIGKILL mid-stream is replaced and the
//! output is still exact, unless no lost container is tolerated, when the application fails
//! naming it; a worker whose NodeManager is stopped is replaced on the other NodeManager and
//! the output is still exact; a job binary that fails at start fails the application with its
//! error in the diagnostics. The test cluster's ResourceManager rolls its AMRMToken master key
//! every 125 s: the AM takes the rolled token, and a worker killed after that is still
//! replaced (the AM allocates with the new token) and the output is exact.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hdfs_native::{Client, ClientBuilder, WriteOptions};
use serde_json::{Value, json};
use sluice_examples::wordcount::expected_updates;
use sluice_integration_tests::{TestCluster, unique};
use sluice_testcluster::yarn::{am_address, app_ended, app_report};
use sluice_testkit::{assert_same, committed_lines, stripped_bundle, stripped_copy};

/// The user the staging directory belongs to, as the submitting client names it.
fn user() -> String {
    std::env::var("HADOOP_USER_NAME")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "sluice".into())
}

/// `v` escaped for the double-quoted shell string the NodeManager writes each environment
/// value into (`export K="v"` in launch_container.sh, unescaped).
fn shell_escaped(v: &str) -> String {
    let mut out = String::new();
    for c in v.chars() {
        if matches!(c, '\\' | '"' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

struct Yarn {
    cluster: TestCluster,
    http: reqwest::Client,
    hdfs: Client,
}

/// A submitted application.
struct App {
    id: String,
    staging: String,
    submitted: Instant,
}

impl Yarn {
    fn new() -> anyhow::Result<Yarn> {
        let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
        let hdfs = ClientBuilder::new()
            .with_url(cluster.hdfs_url())
            .with_config_dir(cluster.conf_dir().to_string_lossy())
            .build()?;
        Ok(Yarn {
            cluster,
            http: reqwest::Client::new(),
            hdfs,
        })
    }

    fn rm(&self) -> &str {
        self.cluster.rm_web()
    }

    async fn report(&self, id: &str) -> anyhow::Result<Value> {
        Ok(app_report(self.rm(), id).await?)
    }

    /// Stages the files as `yarn-submit` does and submits `sluice-am --yarn` as the AM.
    async fn submit(
        &self,
        bundle: &Path,
        conf: &[(&str, String)],
        job_args: &[String],
        bins: &Path,
    ) -> anyhow::Result<App> {
        let new_app: Value = self
            .http
            .post(format!("{}/ws/v1/cluster/apps/new-application", self.rm()))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = new_app["application-id"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no application-id in {new_app}"))?
            .to_string();
        let user = user();
        let dir = format!("/user/{user}/.sluice/{id}");
        let staging = format!("{}{dir}", self.cluster.hdfs_url());
        let yaml: String = conf
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", Value::from(v.as_str())))
            .collect();
        let mut files: Vec<(&str, Vec<u8>)> = vec![
            ("sluice-am", std::fs::read(bins.join("sluice-am"))?),
            ("sluice-worker", std::fs::read(bins.join("sluice-worker"))?),
            ("job.bundle", std::fs::read(bundle)?),
            ("sluice-conf.yaml", yaml.into_bytes()),
        ];
        for site in ["core-site.xml", "hdfs-site.xml", "yarn-site.xml"] {
            let p = self.cluster.conf_dir().join(site);
            if p.is_file() {
                files.push((site, std::fs::read(p)?));
            }
        }
        let mut resources = Vec::new();
        for (name, bytes) in files {
            let path = format!("{dir}/{name}");
            let mut w = self
                .hdfs
                .create(&path, WriteOptions::default().create_parent(true))
                .await?;
            w.write_bytes(bytes.into()).await?;
            w.close().await?;
            let st = self.hdfs.get_file_info(&path).await?;
            resources.push(json!({
                "key": name,
                "value": {
                    "resource": format!("{staging}/{name}"),
                    "type": "FILE",
                    "visibility": "APPLICATION",
                    "size": st.length,
                    "timestamp": st.modification_time,
                }
            }));
        }
        // As `yarn-submit` starts it (`sluice_yarn_submit::spec::am_command`).
        let command = "MALLOC_MMAP_THRESHOLD_=262144 HADOOP_CONF_DIR=\"$PWD\" exec ./sluice-am --yarn -c sluice-conf.yaml \
                       1><LOG_DIR>/jobmanager.out 2><LOG_DIR>/jobmanager.err";
        let submission = json!({
            "application-id": id,
            "application-name": "sluice-am-test",
            "application-type": "Sluice",
            "queue": "default",
            "max-app-attempts": 1,
            "resource": {"memory": 256, "vCores": 1},
            "am-container-spec": {
                "local-resources": {"entry": resources},
                "environment": {"entry": [
                    {"key": "SLUICE_STAGING_DIR", "value": staging},
                    {"key": "SLUICE_JOB_ARGS", "value": shell_escaped(&serde_json::to_string(job_args)?)},
                    {"key": "HADOOP_USER_NAME", "value": user},
                ]},
                "commands": {"command": command},
            },
        });
        let submitted = Instant::now();
        let resp = self
            .http
            .post(format!("{}/ws/v1/cluster/apps", self.rm()))
            .json(&submission)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == reqwest::StatusCode::ACCEPTED,
            "submission answered {}: {}",
            resp.status(),
            resp.text().await?
        );
        Ok(App {
            id,
            staging: dir,
            submitted,
        })
    }

    /// Waits until the AM deleted the staging directory (right after unregistering).
    async fn wait_for_staging_deleted(&self, app: &App) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.hdfs.get_file_info(&app.staging).await.is_ok() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the staging directory {} was not deleted",
                app.staging
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Waits for the application's end; returns its report.
    async fn wait_for_end(&self, app: &App, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.report(&app.id).await?;
            if app_ended(&r) {
                return Ok(r);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for {} to end: {r:#}",
                app.id
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until the AM's REST API lists a RUNNING job; returns its address.
    async fn wait_for_running_job(&self, app: &App, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.report(&app.id).await?;
            anyhow::ensure!(
                !app_ended(&r),
                "the application ended before its job ran: {r:#}"
            );
            if let Some(addr) = am_address(&r)
                && let Ok(resp) = self
                    .http
                    .get(format!("http://{addr}/v1/jobs/overview"))
                    .send()
                    .await
                && let Ok(v) = resp.json::<Value>().await
                && v["jobs"]
                    .as_array()
                    .is_some_and(|j| j.iter().any(|j| j["state"] == "RUNNING"))
            {
                return Ok(addr.to_string());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "timed out waiting for the job of {} to run: {r:#}",
                app.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Pids of this application's processes named `name` (`sluice-am`, `sluice-worker`), with
/// their command lines.
fn processes(app_id: &str, name: &str) -> Vec<(u32, String)> {
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
        let environ = std::fs::read(e.path().join("environ")).unwrap_or_default();
        let environ = String::from_utf8_lossy(&environ);
        let first = cmd.split_whitespace().next().unwrap_or_default();
        if first.ends_with(name) && (cmd.contains(key) || environ.contains(key)) {
            out.push((pid, cmd));
        }
    }
    out
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn wordcount_conf(checkpoints: String) -> Vec<(&'static str, String)> {
    vec![
        ("parallelism.default", "4".into()),
        ("taskmanager.numberOfTaskSlots", "2".into()),
        ("taskmanager.memory.process.size", "512m".into()),
        ("execution.checkpointing.interval", "300ms".into()),
        ("state.checkpoints.dir", checkpoints),
        ("restart-strategy.type", "fixed-delay".into()),
        ("restart-strategy.fixed-delay.delay", "200ms".into()),
        ("heartbeat.interval", "200ms".into()),
        ("heartbeat.timeout", "2s".into()),
    ]
}

/// Kills `app` through the ResourceManager's REST API and waits for its end.
async fn kill_app(yarn: &Yarn, app: &App) {
    let url = format!("{}/ws/v1/cluster/apps/{}/state", yarn.rm(), app.id);
    let _ = yarn
        .http
        .put(url)
        .json(&json!({ "state": "KILLED" }))
        .send()
        .await;
    let _ = yarn.wait_for_end(app, Duration::from_secs(60)).await;
}

/// What a WordCount run on YARN goes through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Undisturbed,
    /// One worker container's process is killed mid-stream.
    WorkerKilled,
    /// The same with `yarn.maximum-failed-containers: 0`: the application fails.
    WorkerKilledNoneTolerated,
    /// The NodeManager of a worker container (not the ApplicationMaster's) is stopped.
    NodeManagerStopped,
    /// One worker container's process is killed once the AM took a rolled AMRMToken.
    WorkerKilledAfterTokenRoll,
}

/// The longest wait for a roll: the test cluster's rolling interval (125 s) and a heartbeat,
/// with slack.
const TOKEN_ROLL_WAIT: Duration = Duration::from_secs(140);
/// What the AM logs when an `allocate` answer carries a new AMRMToken.
const TOKEN_ROLLED: &str = "the ResourceManager rolled the AMRMToken";

/// Waits until the AM (`am_pid`, its stderr a file in the container's log dir) took a rolled
/// AMRMToken; returns how long that took.
async fn wait_for_token_roll(am_pid: u32) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(format!("/proc/{am_pid}/fd/2"))?;
        if log.contains(TOKEN_ROLLED) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < TOKEN_ROLL_WAIT,
            "the AM took no rolled AMRMToken in {TOKEN_ROLL_WAIT:?}: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Why a run could not test what it should; the test submits again.
#[derive(Debug)]
struct NoWorkerOffTheAmNode(String);

impl std::fmt::Display for NoWorkerOffTheAmNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "every worker container runs on the ApplicationMaster's NodeManager: {}",
            self.0
        )
    }
}

impl std::error::Error for NoWorkerOffTheAmNode {}

/// The test cluster's NodeManager (`nodemanager2`) whose container runs `pid`: containers
/// work in `<cluster dir>/data/<nodemanager>/local/...`.
fn node_manager_of(pid: u32) -> Option<String> {
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    cwd.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .find(|c| c.starts_with("nodemanager"))
}

/// Restarts a stopped process of the test cluster when dropped, also when the test fails.
struct RestartOnDrop(String);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        match TestCluster::open().and_then(|mut c| c.restart(&self.0)) {
            Ok(()) => eprintln!("{} runs again", self.0),
            Err(e) => eprintln!("cannot restart {}: {e}", self.0),
        }
    }
}

async fn wordcount_run(scenario: Scenario) -> anyhow::Result<()> {
    let kill_a_worker = scenario != Scenario::Undisturbed;
    let yarn = Yarn::new()?;
    let work = tempfile::tempdir()?;
    let bins = work.path().join("bin");
    std::fs::create_dir_all(&bins)?;
    stripped_copy("sluice-am", &bins);
    stripped_copy("sluice-worker", &bins);
    let bundle = stripped_bundle("wordcount", work.path());
    let out = work.path().join("out");
    let checkpoints = format!(
        "{}/{}/checkpoints",
        yarn.cluster.hdfs_url(),
        unique("sluice-am-test")
    );
    // With the token roll, the input lasts ~180 s: up to 125 s until the roll, then the kill
    // and the replacement.
    let (n, rate): (u64, u64) = match scenario {
        Scenario::Undisturbed => (20_000, 6000),
        Scenario::WorkerKilledAfterTokenRoll => (540_000, 3000),
        _ => (60_000, 6000),
    };
    let args: Vec<String> = [
        "--generate",
        &n.to_string(),
        "--rate",
        &rate.to_string(),
        "--output",
        out.to_str().expect("a UTF-8 path"),
    ]
    .map(String::from)
    .to_vec();
    let mut conf = wordcount_conf(checkpoints);
    if scenario == Scenario::WorkerKilledNoneTolerated {
        conf.push(("yarn.maximum-failed-containers", "0".into()));
    }
    let app = yarn.submit(&bundle, &conf, &args, &bins).await?;
    let am_addr = yarn
        .wait_for_running_job(&app, Duration::from_secs(120))
        .await?;
    let running_at = app.submitted.elapsed().as_secs_f64();
    let r = yarn.report(&app.id).await?;
    // The ResourceManager's own times (ms since the epoch): when it accepted the application
    // and when it launched the AM container; the wait between is the queue's, not the AM's.
    let queued = (r["launchTime"].as_i64().unwrap_or(0) - r["startedTime"].as_i64().unwrap_or(0))
        as f64
        / 1000.0;
    eprintln!(
        "figure: submission to job RUNNING took {running_at:.1} s ({}), of which {queued:.1} s \
         waiting for the AM container to be launched",
        app.id
    );
    let ams = processes(&app.id, "sluice-am");
    anyhow::ensure!(ams.len() == 1, "one sluice-am of {}: {ams:?}", app.id);
    let am_pid = ams[0].0;
    let deadline = Instant::now() + Duration::from_secs(90);
    let workers = loop {
        let w = processes(&app.id, "sluice-worker");
        if w.len() >= 2 {
            break w;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "two worker containers (parallelism 4, 2 slots each) within 90 s: {w:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    anyhow::ensure!(
        workers.len() == 2,
        "two worker containers (parallelism 4, 2 slots each), no surplus: {workers:?}"
    );
    eprintln!(
        "figure: submission to both worker containers running took {:.1} s",
        app.submitted.elapsed().as_secs_f64()
    );
    let mut peak = rss_kib(am_pid).unwrap_or_default();
    if kill_a_worker {
        // Some output committed, then one worker dies as a whole.
        let deadline = Instant::now() + Duration::from_secs(60);
        while committed_lines(&out).is_empty() {
            anyhow::ensure!(Instant::now() < deadline, "no output committed in 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let am_node = node_manager_of(am_pid);
        let (victim, cmd) = if scenario == Scenario::NodeManagerStopped {
            let off_am = workers
                .iter()
                .find(|(p, _)| node_manager_of(*p).is_some_and(|n| Some(&n) != am_node.as_ref()));
            match off_am {
                Some(w) => w.clone(),
                None => {
                    let placement = format!("{am_node:?}, workers {workers:?}");
                    kill_app(&yarn, &app).await;
                    return Err(NoWorkerOffTheAmNode(placement).into());
                }
            }
        } else {
            workers[0].clone()
        };
        if scenario == Scenario::WorkerKilledAfterTokenRoll {
            let waited = wait_for_token_roll(am_pid).await?;
            eprintln!(
                "figure: the AM took a rolled AMRMToken {:.1} s after both workers ran",
                waited.as_secs_f64()
            );
            let r = yarn.report(&app.id).await?;
            anyhow::ensure!(
                r["state"] == "RUNNING",
                "the application runs on after the roll: {r:#}"
            );
        }
        anyhow::ensure!(
            cmd.contains("taskmanager.resource-id=container_"),
            "a worker container's process: {cmd}"
        );
        let container = cmd
            .split("taskmanager.resource-id=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("?")
            .to_string();
        let mut stopped = None;
        if scenario == Scenario::NodeManagerStopped {
            let nm = node_manager_of(victim).expect("the victim's NodeManager");
            eprintln!("stopping {nm} (SIGTERM), which runs worker {victim}: {cmd}");
            stopped = Some(RestartOnDrop(nm.clone()));
            TestCluster::open()?.stop(&nm)?;
        } else {
            eprintln!("killing worker process {victim}: {cmd}");
            let status = Command::new("kill")
                .arg("-9")
                .arg(victim.to_string())
                .status()?;
            anyhow::ensure!(status.success(), "kill -9 {victim}");
        }
        if scenario == Scenario::WorkerKilledNoneTolerated {
            let end = yarn.wait_for_end(&app, Duration::from_secs(120)).await?;
            assert_eq!(end["finalStatus"], "FAILED", "application report: {end:#}");
            let diagnostics = end["diagnostics"].as_str().unwrap_or_default();
            assert!(
                diagnostics.contains("yarn.maximum-failed-containers=0")
                    && diagnostics.contains(&container),
                "the diagnostics name the limit and the lost container {container}: {diagnostics}"
            );
            eprintln!("diagnostics of {}: {diagnostics}", app.id);
            return yarn.wait_for_staging_deleted(&app).await;
        }
        // A replacement container registers.
        let deadline = Instant::now() + Duration::from_secs(90);
        let now = loop {
            let now = processes(&app.id, "sluice-worker");
            if now.len() == 2 && now.iter().all(|(p, _)| *p != victim) {
                break now;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no replacement worker container within 90 s: {now:?}"
            );
            peak = peak.max(rss_kib(am_pid).unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if let Some(stopped) = stopped {
            // The ResourceManager reported the container of the stopped NodeManager as
            // completed; the replacement runs on the NodeManager left, the AM's.
            for (p, _) in &now {
                assert_eq!(
                    node_manager_of(*p),
                    am_node,
                    "the replacement worker {p} runs on the NodeManager left"
                );
            }
            let am_log = std::fs::read_to_string(format!("/proc/{am_pid}/fd/2"))?;
            for line in am_log.lines().filter(|l| l.contains(&container)) {
                eprintln!("AM: {line}");
            }
            assert!(
                am_log.contains(&format!("container {container} on "))
                    && am_log.contains("requesting a replacement"),
                "the AM was told that {container} ended: {am_log}"
            );
            // Back for the other tests as soon as the replacement runs.
            drop(stopped);
        }
        if scenario == Scenario::WorkerKilledAfterTokenRoll {
            // The replacement was allocated over the connection authenticated with the rolled
            // token; a rejected token would have failed heartbeats.
            let am_log = std::fs::read_to_string(format!("/proc/{am_pid}/fd/2"))?;
            let failed: Vec<&str> = am_log
                .lines()
                .filter(|l| l.starts_with("sluice-am: heartbeat ") && l.contains(" failed"))
                .collect();
            assert!(failed.is_empty(), "heartbeats failed: {failed:#?}");
        }
    }
    let end = loop {
        peak = peak.max(rss_kib(am_pid).unwrap_or_default());
        let r = yarn.report(&app.id).await?;
        if app_ended(&r) {
            break r;
        }
        anyhow::ensure!(
            app.submitted.elapsed() < Duration::from_secs(420),
            "the application did not end in 420 s: {r:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "figure: sluice-am peak VmRSS while the job ran: {:.1} MB ({} KiB)",
        peak as f64 / 1024.0,
        peak
    );
    eprintln!("AM REST was at {am_addr}");
    assert_eq!(end["state"], "FINISHED", "application report: {end:#}");
    assert_eq!(
        end["finalStatus"], "SUCCEEDED",
        "application report: {end:#}"
    );
    assert_same(
        committed_lines(&out),
        expected_updates(n),
        "WordCount updates of the YARN application",
    );
    yarn.wait_for_staging_deleted(&app).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordcount_runs_on_yarn_worker_containers_with_exact_output() -> anyhow::Result<()> {
    wordcount_run(Scenario::Undisturbed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_container_is_replaced_and_the_output_stays_exact() -> anyhow::Result<()> {
    wordcount_run(Scenario::WorkerKilled).await
}

/// A worker's NodeManager stopped (SIGTERM: it stops its containers and unregisters): the
/// AM learns from `allocate` that the container completed, gets a replacement on the other
/// NodeManager, and the output is exact. Runs only when a worker runs off the AM's
/// NodeManager, so the application is submitted again (at most 4 times) until one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_node_manager_stopped_is_replaced_and_the_output_stays_exact()
-> anyhow::Result<()> {
    let mut placements = Vec::new();
    for _ in 0..4 {
        match wordcount_run(Scenario::NodeManagerStopped).await {
            Err(e) if e.is::<NoWorkerOffTheAmNode>() => {
                eprintln!("{e}; submitting again");
                placements.push(e.to_string());
            }
            other => return other,
        }
    }
    anyhow::bail!("no run placed a worker off the ApplicationMaster's NodeManager: {placements:#?}")
}

/// The AM keeps heartbeating with the rolled AMRMToken: a worker killed after the roll is
/// replaced and the output is exact; no heartbeat failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_the_amrm_token_rolled_is_replaced_and_the_output_stays_exact()
-> anyhow::Result<()> {
    wordcount_run(Scenario::WorkerKilledAfterTokenRoll).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_container_beyond_the_tolerated_failures_fails_the_application()
-> anyhow::Result<()> {
    wordcount_run(Scenario::WorkerKilledNoneTolerated).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_binary_failing_at_start_fails_the_application_with_its_error() -> anyhow::Result<()>
{
    let yarn = Yarn::new()?;
    let work = tempfile::tempdir()?;
    let bins = work.path().join("bin");
    std::fs::create_dir_all(&bins)?;
    stripped_copy("sluice-am", &bins);
    stripped_copy("sluice-worker", &bins);
    let bundle = stripped_bundle("wordcount", work.path());
    // `--continuous` without `--input`: the binary refuses its arguments at start.
    let app = yarn
        .submit(
            &bundle,
            &[("parallelism.default", "2".into())],
            &["--continuous".to_string()],
            &bins,
        )
        .await?;
    let end = yarn.wait_for_end(&app, Duration::from_secs(120)).await?;
    assert_eq!(end["finalStatus"], "FAILED", "application report: {end:#}");
    let diagnostics = end["diagnostics"].as_str().unwrap_or_default();
    assert!(
        diagnostics.contains("failed to start") && diagnostics.contains("--input"),
        "the diagnostics carry the binary's error: {diagnostics}"
    );
    eprintln!("diagnostics of {}: {diagnostics}", app.id);
    yarn.wait_for_staging_deleted(&app).await
}
