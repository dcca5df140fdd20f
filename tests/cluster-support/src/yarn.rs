//! Helpers of the YARN integration tests: client commands with the cluster's configuration,
//! the application id they print, and the ResourceManager's application reports.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Error, Result, TestCluster};

/// A client binary (`yarn-submit`, `sluice`) run with the cluster's Hadoop configuration as
/// `user`, with no other configuration of the environment.
pub fn client_command(cluster: &TestCluster, binary: &Path, user: &str) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env_remove("YARN_CONF_DIR")
        .env_remove("HADOOP_HOME")
        .env_remove("SLUICE_CONF_DIR")
        .env("HADOOP_CONF_DIR", cluster.conf_dir())
        .env("HADOOP_USER_NAME", user)
        .current_dir(std::env::temp_dir());
    cmd
}

/// A command's stdout and stderr as text.
pub fn output_text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The id of the first `Application <id>` line `yarn-submit` prints; panics without one.
pub fn application_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Application "))
        .and_then(|s| s.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no `Application <id>` line in {stdout}"))
}

/// `GET url` as JSON.
pub async fn get_json(url: &str) -> Result<Value> {
    let err = |e: reqwest::Error| Error::Json {
        url: url.to_string(),
        message: e.to_string(),
    };
    reqwest::get(url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(err)?
        .json::<Value>()
        .await
        .map_err(err)
}

/// The ResourceManager's report of application `id` (`rm`: its web address).
pub async fn app_report(rm: &str, id: &str) -> Result<Value> {
    Ok(get_json(&format!("{rm}/ws/v1/cluster/apps/{id}")).await?["app"].clone())
}

/// Whether a report says the application ended.
pub fn app_ended(report: &Value) -> bool {
    matches!(
        report["state"].as_str(),
        Some("FINISHED" | "FAILED" | "KILLED")
    )
}

/// The registered ApplicationMaster's address (`amRPCAddress`, the master's REST address),
/// once one registered.
pub fn am_address(report: &Value) -> Option<String> {
    report["amRPCAddress"]
        .as_str()
        .filter(|a| !a.ends_with(":0") && a.contains(':'))
        .map(str::to_string)
}

/// Polls the report every `every` until `done` holds for it.
pub async fn wait_for_app(
    rm: &str,
    id: &str,
    timeout: Duration,
    every: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = app_report(rm, id).await?;
        if done(&r) {
            return Ok(r);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "application {id} after {timeout:?}; last report {r:#}"
            )));
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls the report until the application ended.
pub async fn wait_for_app_end(rm: &str, id: &str, timeout: Duration) -> Result<Value> {
    wait_for_app(rm, id, timeout, Duration::from_millis(100), app_ended).await
}

/// Waits until the master's REST API lists a RUNNING job with at least one completed
/// checkpoint; returns the master's address and the job id. An application that ends first
/// is an error.
pub async fn wait_for_checkpointed_job(
    rm: &str,
    id: &str,
    timeout: Duration,
) -> Result<(String, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = app_report(rm, id).await?;
        if app_ended(&r) {
            return Err(Error::Timeout(format!(
                "a checkpointed job of {id}, but the application ended before its job ran: {r:#}"
            )));
        }
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
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "a checkpointed RUNNING job of {id}: {r:#}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
