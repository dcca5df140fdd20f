//! `yarn-submit` against the real YARN and HDFS of the test cluster: bad input is refused with
//! a clear error before anything is uploaded; a detached submission stages the bundle, the
//! binaries, the configuration and the site files on HDFS with their sizes, the RM accepts it
//! as a `Sluice` application, `--status`/`--list` show it and `--kill` kills it and removes
//! the staging directory. With the real master (`sluice-am --yarn`), WordCount runs to the end
//! attached, `sluice list --yarn-app` reaches it and the containers' logs are aggregated to
//! HDFS. Also measures how long a submission takes to reach RUNNING compared with a trivial
//! application submitted straight through the RM REST API.
//!
//! Needs the workspace's binaries: `cargo build --release -p sluice-yarn-submit -p sluice-cli
//! -p sluice-examples -p sluice-am -p sluice-worker`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hdfs_native::{Client, ClientBuilder};
use serde_json::{Value, json};
use sluice_examples::wordcount::expected_updates;
use sluice_integration_tests::{TestCluster, unique};
use sluice_testcluster::yarn::{
    app_report, application_id, client_command, output_text, wait_for_app,
};
use sluice_testkit::{committed_lines, release_bin as bin, stripped_bundle};

/// `yarn-submit` with the cluster's configuration (unless `env` overrides it) as `user`.
fn yarn_submit(cluster: &TestCluster, user: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = client_command(cluster, &bin("yarn-submit"), user);
    for (k, v) in env {
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.args(args).output().expect("yarn-submit runs")
}

/// `sluice list --yarn-app <id>`.
fn sluice_yarn_app(cluster: &TestCluster, user: &str, id: &str) -> Output {
    let out = client_command(cluster, &bin("sluice"), user)
        .args(["list", "--yarn-app", id])
        .output()
        .expect("sluice runs");
    assert!(!out.status.success(), "{:?}", output_text(&out));
    out
}

fn hdfs(cluster: &TestCluster) -> Client {
    ClientBuilder::new()
        .with_url(cluster.hdfs_url())
        .with_config_dir(cluster.conf_dir().to_string_lossy())
        .build()
        .expect("an HDFS client")
}

/// Entries under a directory; none if it does not exist.
async fn list(hdfs: &Client, dir: &str) -> Vec<(String, u64)> {
    match hdfs.list_status(dir, false).await {
        Ok(files) => files
            .into_iter()
            .map(|f| {
                let name = f.path.rsplit('/').next().unwrap_or_default().to_string();
                (name, f.length as u64)
            })
            .collect(),
        Err(hdfs_native::HdfsError::FileNotFound(_)) => Vec::new(),
        Err(e) => panic!("listing {dir}: {e}"),
    }
}

/// How often the application report is polled.
const POLL: Duration = Duration::from_millis(50);

/// A directory of binaries for yarn-submit: the real `sluice-worker` and, as `sluice-am`, a
/// script running `am` (the contract's AM is replaced where a test needs a known behaviour).
fn bin_dir_with_am(dir: &Path, am: &str) -> PathBuf {
    let bins = dir.join(unique("bins"));
    std::fs::create_dir_all(&bins).unwrap();
    std::os::unix::fs::symlink(bin("sluice-worker"), bins.join("sluice-worker")).unwrap();
    let script = bins.join("sluice-am");
    std::fs::write(&script, format!("#!/bin/sh\n{am}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bins
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_uploaded() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let bundle = bundle.to_str().unwrap();
    let user = unique("ysbad");
    let hdfs = hdfs(&cluster);
    let user_dir = format!("/user/{user}");

    // A copy of the configuration whose ResourceManager address is a closed loopback port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bad_conf = tmp.path().join("conf");
    std::fs::create_dir_all(&bad_conf)?;
    for f in ["core-site.xml", "hdfs-site.xml", "yarn-site.xml"] {
        let mut text = std::fs::read_to_string(cluster.conf_dir().join(f))?;
        if f == "yarn-site.xml" {
            let rm = cluster.rm_web().trim_start_matches("http://");
            assert!(text.contains(rm), "yarn-site.xml names the RM web app {rm}");
            text = text.replace(rm, &format!("127.0.0.1:{closed}"));
        }
        std::fs::write(bad_conf.join(f), text)?;
    }
    let bad_conf = bad_conf.to_str().unwrap();

    // (what, environment, arguments, what the error must say)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            "no HADOOP_CONF_DIR",
            vec![("HADOOP_CONF_DIR", "")],
            vec![bundle],
            vec!["HADOOP_CONF_DIR".into()],
        ),
        (
            "a ResourceManager that is not there",
            vec![("HADOOP_CONF_DIR", bad_conf)],
            vec![bundle],
            vec![
                "cannot reach the ResourceManager".into(),
                format!("127.0.0.1:{closed}"),
            ],
        ),
        (
            "a queue that does not exist",
            vec![],
            vec!["--queue", "nosuch", bundle],
            vec!["queue 'nosuch' does not exist".into()],
        ),
        (
            "a master larger than the largest container",
            vec![],
            vec!["-D", "jobmanager.memory.process.size=100g", bundle],
            vec![
                "102400 MB".into(),
                "2048 MB".into(),
                "jobmanager.memory.process.size".into(),
            ],
        ),
    ];
    for (what, env, args, expected) in cases {
        let started = Instant::now();
        let out = yarn_submit(&cluster, &user, &env, &args);
        let (stdout, stderr) = output_text(&out);
        assert!(!out.status.success(), "{what}: succeeded: {stdout}{stderr}");
        for e in &expected {
            assert!(stderr.contains(e.as_str()), "{what}: no `{e}` in: {stderr}");
        }
        assert!(
            !stderr.contains("Uploading"),
            "{what}: an upload started: {stderr}"
        );
        assert!(
            list(&hdfs, &user_dir).await.is_empty(),
            "{what}: something was staged under {user_dir}"
        );
        eprintln!(
            "{what}: refused in {:.2} s: {}",
            started.elapsed().as_secs_f64(),
            stderr.trim()
        );
    }
    Ok(())
}

#[tokio::test]
async fn detached_submission_is_staged_accepted_and_killed() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
    let rm = cluster.rm_web();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("yssub");
    let hdfs = hdfs(&cluster);
    // An AM that never registers keeps the application ACCEPTED until it is killed.
    let bins = bin_dir_with_am(tmp.path(), "exec sleep 600");
    let bins = bins.to_str().unwrap();

    let out = yarn_submit(
        &cluster,
        &user,
        &[("SLUICE_BIN_DIR", bins)],
        &[
            "-d",
            "-p",
            "3",
            "--name",
            "wc-on-yarn",
            bundle.to_str().unwrap(),
            "--",
            "--generate",
            "100",
        ],
    );
    let (stdout, stderr) = output_text(&out);
    assert!(
        out.status.success(),
        "yarn-submit -d failed: {stdout}{stderr}"
    );
    let id = application_id(&stdout);
    assert!(stdout.contains("Tracking URL: http://"), "{stdout}");

    let staging = format!("/user/{user}/.sluice/{id}");
    let mut staged = list(&hdfs, &staging).await;
    staged.sort();
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let conf = cluster.conf_dir();
    let mut expected = vec![
        (
            "core-site.xml".to_string(),
            size(&conf.join("core-site.xml")),
        ),
        (
            "hdfs-site.xml".to_string(),
            size(&conf.join("hdfs-site.xml")),
        ),
        ("job.bundle".to_string(), size(&bundle)),
        (
            "sluice-am".to_string(),
            size(&Path::new(bins).join("sluice-am")),
        ),
        // Binaries are shipped without their debug information.
        (
            "sluice-worker".to_string(),
            stripped_size(&bin("sluice-worker")),
        ),
        (
            "yarn-site.xml".to_string(),
            size(&conf.join("yarn-site.xml")),
        ),
    ];
    let conf_yaml = staged
        .iter()
        .find(|(n, _)| n == "sluice-conf.yaml")
        .cloned()
        .unwrap_or_else(|| panic!("no sluice-conf.yaml in {staged:?}"));
    expected.push(conf_yaml);
    expected.sort();
    assert_eq!(staged, expected, "the staging directory {staging}");
    let mut reader = hdfs.read(&format!("{staging}/sluice-conf.yaml")).await?;
    let yaml = String::from_utf8(reader.read_bytes(reader.file_length()).await?.to_vec())?;
    assert!(yaml.contains("parallelism.default: 3\n"), "{yaml}");
    assert!(yaml.contains("pipeline.name: wc-on-yarn\n"), "{yaml}");

    let app = app_report(rm, &id).await.expect("the application report");
    assert_eq!(app["applicationType"], "Sluice", "{app:#}");
    assert_eq!(app["name"], "wc-on-yarn", "{app:#}");
    assert_eq!(app["user"], user.as_str(), "{app:#}");
    assert!(
        matches!(app["state"].as_str(), Some("ACCEPTED" | "SUBMITTED")),
        "{app:#}"
    );

    let (status, _) = output_text(&yarn_submit(&cluster, &user, &[], &["--status", &id]));
    assert!(
        status.contains(&format!("Application-Id : {id}")),
        "{status}"
    );
    assert!(status.contains("Application-Type : Sluice"), "{status}");
    let (listed, _) = output_text(&yarn_submit(&cluster, &user, &[], &["--list"]));
    assert!(listed.contains(&id), "--list: {listed}");

    // `sluice <verb> --yarn-app` finds the master through the RM; this one never registers.
    let (_, stderr) = output_text(&sluice_yarn_app(&cluster, &user, &id));
    assert!(stderr.contains("has not registered yet"), "{stderr}");

    let out = yarn_submit(&cluster, &user, &[], &["--kill", &id]);
    let (stdout, stderr) = output_text(&out);
    assert!(out.status.success(), "--kill: {stdout}{stderr}");
    let (_, stderr) = output_text(&sluice_yarn_app(&cluster, &user, &id));
    assert!(stderr.contains("has ended (KILLED"), "{stderr}");
    assert!(stdout.contains("KILLED"), "{stdout}");
    assert_eq!(
        app_report(rm, &id).await.expect("the application report")["state"],
        "KILLED"
    );
    assert!(
        list(&hdfs, &staging).await.is_empty(),
        "the staging directory {staging} is still there"
    );
    let (listed, _) = output_text(&yarn_submit(&cluster, &user, &[], &["--list", "--all"]));
    assert!(
        listed
            .lines()
            .any(|l| l.contains(&id) && l.contains("KILLED")),
        "--list --all: {listed}"
    );
    let (listed, _) = output_text(&yarn_submit(&cluster, &user, &[], &["--list"]));
    assert!(
        !listed.contains(&id),
        "a killed application is not active: {listed}"
    );
    Ok(())
}

/// Time to RUNNING (the AM registered) of a trivial application submitted straight through
/// the RM REST API, and of the same AM submitted by `yarn-submit` (which checks the cluster,
/// uploads the bundle and the binaries first).
#[tokio::test]
async fn time_to_running_compared_with_a_trivial_application() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
    let rm = cluster.rm_web();
    let (java, classpath) = cluster.java_command();
    let smoke = format!(
        "exec {java} -Xmx64m -XX:TieredStopAtLevel=1 -cp '{classpath}' \
         io.sluice.minicluster.SmokeAppMaster"
    );
    // The smoke AM registers and unregisters at once: FINISHED/SUCCEEDED means it was RUNNING.
    let registered = |a: &Value| a["state"] == "FINISHED" || a["state"] == "FAILED";

    let http = reqwest::Client::new();
    let started = Instant::now();
    let new_app: Value = http
        .post(format!("{rm}/ws/v1/cluster/apps/new-application"))
        .send()
        .await?
        .json()
        .await?;
    let id = new_app["application-id"].as_str().unwrap().to_string();
    let submission = json!({
        "application-id": id, "application-name": "trivial", "application-type": "SMOKE",
        "queue": "default", "max-app-attempts": 1, "resource": {"memory": 256, "vCores": 1},
        "am-container-spec": {"commands": {"command":
            format!("{smoke} 1><LOG_DIR>/stdout 2><LOG_DIR>/stderr")}},
    });
    let r = http
        .post(format!("{rm}/ws/v1/cluster/apps"))
        .json(&submission)
        .send()
        .await?;
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);
    let app = wait_for_app(rm, &id, Duration::from_secs(120), POLL, registered)
        .await
        .expect("the application registers");
    assert_eq!(app["finalStatus"], "SUCCEEDED", "{app:#}");
    let trivial = started.elapsed();

    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("ysspeed");
    let bins = bin_dir_with_am(tmp.path(), &smoke);
    let started = Instant::now();
    let out = yarn_submit(
        &cluster,
        &user,
        &[("SLUICE_BIN_DIR", bins.to_str().unwrap())],
        &["-d", bundle.to_str().unwrap()],
    );
    let submitted = started.elapsed();
    let (stdout, stderr) = output_text(&out);
    assert!(
        out.status.success(),
        "yarn-submit -d failed: {stdout}{stderr}"
    );
    let id = application_id(&stdout);
    let app = wait_for_app(rm, &id, Duration::from_secs(120), POLL, registered)
        .await
        .expect("the application registers");
    assert_eq!(app["finalStatus"], "SUCCEEDED", "{app:#}");
    let via_submit = started.elapsed();
    let staged: u64 = [bundle.clone(), bin("sluice-worker")]
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    eprintln!(
        "time to RUNNING: trivial application via RM REST {:.2} s; yarn-submit {:.2} s \
         (of which checks + upload of {} MiB + submission {:.2} s)",
        trivial.as_secs_f64(),
        via_submit.as_secs_f64(),
        staged >> 20,
        submitted.as_secs_f64()
    );
    // The smoke AM does not remove the staging directory; --kill of an ended application does.
    let out = yarn_submit(&cluster, &user, &[], &["--kill", &id]);
    assert!(out.status.success(), "{:?}", output_text(&out));
    assert!(
        list(&hdfs(&cluster), &format!("/user/{user}/.sluice/{id}"))
            .await
            .is_empty()
    );
    Ok(())
}

/// The whole path with the real master: `yarn-submit` (attached) runs WordCount at
/// parallelism 4 on YARN, prints the job id, follows it to the end and exits 0; `sluice list
/// --yarn-app` reaches the master through the RM; the output is exactly a failure-free run's
/// and the staging directory is gone. Prints the time from `yarn-submit`'s start to the
/// application RUNNING and to the job id.
#[tokio::test]
async fn wordcount_runs_on_yarn_attached() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
    let rm = cluster.rm_web().to_string();
    let tmp = tempfile::tempdir()?;
    let bundle = stripped_bundle("wordcount", tmp.path());
    let user = unique("yswc");
    let output = tmp.path().join("out");
    let started = Instant::now();
    let mut child = client_command(&cluster, &bin("yarn-submit"), &user)
        // Two workers with two slots each; containers small enough for the test cluster's
        // two 2 GiB NodeManagers (the memory is not enforced there).
        .args(["-p", "4", "-D", "dfs.blocksize=128m"])
        .args(["-D", "jobmanager.memory.process.size=512m"])
        .args(["-D", "taskmanager.memory.process.size=512m"])
        .args(["-D", "taskmanager.numberOfTaskSlots=2"])
        .arg(&bundle)
        .args(["--", "--generate", "20000", "--rate", "5000", "--output"])
        .arg(&output)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<(String, Duration)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((line, started.elapsed()));
        }
    });
    let (mut app_id, mut running, mut job) = (None::<String>, None, None);
    let (mut jids, mut listed) = (Vec::<String>::new(), None::<String>);
    let mut lines = Vec::new();
    let status = loop {
        while let Ok((line, at)) = rx.try_recv() {
            // `Application <id>` first; `Application <id> finished (...)` at the end.
            if app_id.is_none()
                && let Some(id) = line.strip_prefix("Application ")
            {
                app_id = id.split_whitespace().next().map(str::to_string);
            }
            if let Some(jid) = line.strip_prefix("Job has been submitted with JobID ") {
                job.get_or_insert(at);
                jids.push(jid.trim().to_string());
            }
            lines.push(line);
        }
        if running.is_none()
            && let Some(id) = &app_id
            && app_report(&rm, id).await.expect("the application report")["state"] == "RUNNING"
        {
            running = Some(started.elapsed());
        }
        if listed.is_none()
            && let (Some(id), Some(jid)) = (&app_id, jids.first())
        {
            let out = Command::new(bin("sluice"))
                .args(["list", "-a", "--yarn-app", id])
                .env("HADOOP_CONF_DIR", cluster.conf_dir())
                .output()?;
            let (stdout, stderr) = output_text(&out);
            assert!(out.status.success(), "sluice list --yarn-app: {stderr}");
            assert!(stdout.contains(jid.as_str()), "{stdout}");
            listed = Some(stdout);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "yarn-submit still runs after 5 min: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while let Ok((line, _)) = rx.recv_timeout(Duration::from_secs(1)) {
        lines.push(line);
    }
    eprintln!(
        "WordCount on YARN: application RUNNING after {:.2} s, job id after {:.2} s, ended after \
         {:.2} s (from yarn-submit's start)",
        running.map_or(f64::NAN, |d| d.as_secs_f64()),
        job.map_or(f64::NAN, |d| d.as_secs_f64()),
        started.elapsed().as_secs_f64()
    );
    assert!(status.success(), "yarn-submit: {status}; stdout {lines:#?}");
    let id = app_id.expect("an application id");
    assert!(job.is_some(), "no JobID line in {lines:#?}");
    assert!(listed.is_some(), "sluice list --yarn-app never ran");
    let mut got = committed_lines(&output);
    got.sort();
    let mut want = expected_updates(20000);
    want.sort();
    assert!(got == want, "{} lines, {} expected", got.len(), want.len());
    assert!(
        list(&hdfs(&cluster), &format!("/user/{user}/.sluice/{id}"))
            .await
            .is_empty(),
        "the staging directory of {id} is still there"
    );
    // Log aggregation: once the application ended, the NodeManagers upload its containers'
    // logs to the remote app-log dir on HDFS (what `yarn logs -applicationId` reads); the
    // ApplicationMaster's and the workers' lines are there.
    // (In the TFile a log's first line follows the file's name and length.)
    let logs = aggregated_logs(&hdfs(&cluster), &user, &id, |logs| {
        logs.contains("sluice-am: registered with the ResourceManager")
            && logs
                .lines()
                .any(|l| l.contains("sluice-worker container_") && l.contains(" registered with "))
    })
    .await;
    for file in ["jobmanager.err", "taskmanager.out"] {
        assert!(logs.contains(file), "{file} of {id} is aggregated: {logs}");
    }
    Ok(())
}

/// The aggregated logs of application `id` (every NodeManager's file under the remote app-log
/// dir `/tmp/logs/<user>/`, uncompressed TFiles, read as text), polled until `complete` holds
/// for them (the NodeManagers upload after the application ended); panics after 90 s.
async fn aggregated_logs(
    hdfs: &Client,
    user: &str,
    id: &str,
    complete: impl Fn(&str) -> bool,
) -> String {
    let root = format!("/tmp/logs/{user}");
    let start = Instant::now();
    loop {
        let mut text = String::new();
        let mut files = Vec::new();
        if let Ok(entries) = hdfs.list_status(&root, true).await {
            for f in entries {
                // The NodeManager writes `<node>.tmp` and renames it when complete.
                if !f.isdir && f.path.contains(&format!("/{id}/")) && !f.path.ends_with(".tmp") {
                    files.push(f.path);
                }
            }
        }
        for path in &files {
            if let Ok(mut r) = hdfs.read(path).await {
                let len = r.file_length();
                if let Ok(bytes) = r.read_bytes(len).await {
                    text.push_str(&String::from_utf8_lossy(&bytes));
                    text.push('\n');
                }
            }
        }
        if !files.is_empty() && complete(&text) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the aggregated logs of {id} under {root} lack the expected lines after 90 s; files \
             {files:?}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The size of `path` after `objcopy --strip-debug`, as `yarn-submit` ships binaries.
fn stripped_size(path: &Path) -> u64 {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = dir.path().join("stripped");
    let ok = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(path)
        .arg(&out)
        .status()
        .expect("objcopy runs")
        .success();
    assert!(ok, "objcopy --strip-debug {}", path.display());
    std::fs::metadata(&out).expect("the stripped copy").len()
}
