//! YARN is real: an application submitted through the ResourceManager's REST API runs a shell
//! command in a container, reaches FINISHED, and its log is aggregated to HDFS.

use std::time::{Duration, Instant};

use hdfs_native::ClientBuilder;
use serde_json::{Value, json};
use sluice_integration_tests::{TestCluster, unique};

/// The application's report, `GET /ws/v1/cluster/apps/{id}`.
async fn app_report(http: &reqwest::Client, rm: &str, id: &str) -> anyhow::Result<Value> {
    let v: Value = http
        .get(format!("{rm}/ws/v1/cluster/apps/{id}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(v["app"].clone())
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<Value>>,
) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn rest_submitted_application_finishes_and_its_log_is_aggregated() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs", "yarn"])?;
    let rm = cluster.rm_web();
    let http = reqwest::Client::new();

    let new_app: Value = http
        .post(format!("{rm}/ws/v1/cluster/apps/new-application"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = new_app["application-id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no application-id in {new_app}"))?
        .to_string();

    // The shell command writes a marker into the container's log dir, then runs the smallest
    // application master (register + unregister), because YARN fails an attempt whose AM exits
    // without unregistering.
    let marker = unique("sluice-smoke-marker");
    let (java, classpath) = cluster.java_command();
    let command = format!(
        "echo {marker} > <LOG_DIR>/marker.txt && exec {java} -Xmx64m -XX:TieredStopAtLevel=1 \
         -cp '{classpath}' io.sluice.minicluster.SmokeAppMaster \
         1><LOG_DIR>/stdout 2><LOG_DIR>/stderr"
    );
    let submission = json!({
        "application-id": id,
        "application-name": "sluice-smoke",
        "application-type": "SLUICE-SMOKE",
        "queue": "default",
        "max-app-attempts": 1,
        "resource": {"memory": 256, "vCores": 1},
        "am-container-spec": {"commands": {"command": command}},
    });
    let resp = http
        .post(format!("{rm}/ws/v1/cluster/apps"))
        .json(&submission)
        .send()
        .await?;
    anyhow::ensure!(
        resp.status() == reqwest::StatusCode::ACCEPTED,
        "submission answered {}: {}",
        resp.status(),
        resp.text().await?
    );

    let app = wait_for(
        "the application to end",
        Duration::from_secs(120),
        async || {
            let app = app_report(&http, rm, &id).await?;
            let ended = matches!(
                app["state"].as_str(),
                Some("FINISHED" | "FAILED" | "KILLED")
            );
            Ok(ended.then_some(app))
        },
    )
    .await?;
    assert_eq!(app["state"], "FINISHED", "application report: {app:#}");
    assert_eq!(
        app["finalStatus"], "SUCCEEDED",
        "application report: {app:#}"
    );

    wait_for("log aggregation", Duration::from_secs(60), async || {
        let app = app_report(&http, rm, &id).await?;
        let status = app["logAggregationStatus"].as_str().unwrap_or_default();
        anyhow::ensure!(status != "FAILED", "log aggregation failed: {app:#}");
        Ok((status == "SUCCEEDED").then_some(app))
    })
    .await?;

    // Aggregated logs: <remote-app-log-dir>/<user>/<bucketed suffix>/.../<app id>/<node file>;
    // the container's files are stored uncompressed, so the marker appears verbatim.
    let hdfs = ClientBuilder::new()
        .with_url(cluster.hdfs_url())
        .with_config_dir(cluster.conf_dir().to_string_lossy())
        .build()?;
    let files: Vec<_> = hdfs
        .list_status("/tmp/logs", true)
        .await?
        .into_iter()
        .filter(|f| !f.isdir && f.path.contains(&id))
        .collect();
    anyhow::ensure!(
        !files.is_empty(),
        "no aggregated log of {id} under /tmp/logs"
    );
    let mut found = false;
    for f in &files {
        let mut reader = hdfs.read(&f.path).await?;
        let bytes = reader.read_bytes(reader.file_length()).await?;
        let text = String::from_utf8_lossy(&bytes);
        found |= text.contains(&marker) && text.contains("smoke application master registered");
    }
    assert!(found, "marker and AM output not found in {files:?}");
    Ok(())
}
