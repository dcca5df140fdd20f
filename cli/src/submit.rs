//! `sluice run -m HOST:PORT job.bundle`: submits a bundle to a running master. The CLI asks the
//! bundle's binary for its plan (`--plan`), uploads the bundle (`POST /jars/upload`) and runs
//! it (`POST /jars/:id/run` with the plan), then follows the job until it ends unless `-d`.

use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sluice::rest::conf::{CONF_DIR_ENV, DYNAMIC_PROPERTIES_ENV};

use crate::args::RunArgs;
use crate::bundle::{self, RunDir};
use crate::client::RestClient;

pub fn submit(a: &RunArgs, master: &str) -> Result<ExitCode> {
    if !bundle::is_bundle(&a.job) {
        bail!(
            "a cluster runs job bundles: write one with `sluice bundle {} -o job.bundle` and \
             submit that",
            a.job.display()
        );
    }
    let run_dir = RunDir::prepare(&a.job)?;
    let props = crate::run::dynamic_properties(a);
    let mut cmd = Command::new(run_dir.entry());
    cmd.arg("--plan")
        .args(run_dir.job_args(&a.job_args))
        .env(DYNAMIC_PROPERTIES_ENV, props.join("\n"))
        .env(bundle::BUNDLE_DIR_ENV, run_dir.dir())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(dir) = run_dir.conf_dir() {
        cmd.env(CONF_DIR_ENV, dir);
    }
    let out = cmd
        .output()
        .with_context(|| format!("asking {} for its plan", run_dir.entry().display()))?;
    if !out.status.success() {
        bail!(
            "{} --plan failed ({}); the job cannot be submitted",
            run_dir.entry().display(),
            out.status
        );
    }
    let plan: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{} --plan did not print a plan (is it a Sluice job binary?)",
            run_dir.entry().display()
        )
    })?;
    let client = RestClient::new(master)?;
    let bytes =
        std::fs::read(&a.job).with_context(|| format!("reading the bundle {}", a.job.display()))?;
    eprintln!(
        "Uploading {} ({:.1} MiB) to {master}",
        a.job.display(),
        bytes.len() as f64 / (1 << 20) as f64
    );
    let uploaded = client.post_bytes("/jars/upload", bytes)?;
    let Some(jar) = uploaded["filename"].as_str() else {
        bail!("the master at {master} did not name the uploaded bundle: {uploaded}");
    };
    let config: serde_json::Map<String, Value> = props
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), Value::String(v.trim().to_string())))
        .collect();
    let run = client.post(
        &format!("/jars/{jar}/run"),
        json!({
            "plan": plan,
            "programArgsList": a.job_args,
            "parallelism": a.parallelism,
            "savepointPath": a.from_savepoint,
            "allowNonRestoredState": a.allow_non_restored,
            "flinkConfiguration": config,
        }),
    )?;
    let Some(job_id) = run["jobid"].as_str() else {
        bail!("the master at {master} did not return a job id: {run}");
    };
    println!("Job has been submitted with JobID {job_id}");
    if a.detached {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let job = client.get(&format!("/jobs/{job_id}"))?;
        let state = job["state"].as_str().unwrap_or("UNKNOWN").to_string();
        match state.as_str() {
            "FINISHED" => {
                eprintln!("Job {job_id} finished");
                return Ok(ExitCode::SUCCESS);
            }
            "CANCELED" => {
                eprintln!("Job {job_id} was cancelled");
                return Ok(ExitCode::FAILURE);
            }
            "FAILED" => {
                let ex = client.get(&format!("/jobs/{job_id}/exceptions")).ok();
                let why = ex
                    .as_ref()
                    .and_then(|e| e["root-exception"].as_str())
                    .unwrap_or("see the master's log");
                eprintln!("Job {job_id} failed: {why}");
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
}
