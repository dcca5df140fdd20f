//! Following a submitted application: its state from the ResourceManager, its job from the
//! master's REST API (`http://<amRPCAddress>/v1/jobs/overview`), with Flink's wording for the
//! job id. On a terminal, progress is one line rewritten in place on stderr; otherwise each
//! change is a line of its own.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::rm::{AppReport, RmClient};
use crate::staging::Staging;

/// How often the ResourceManager and the master are asked.
const POLL: Duration = Duration::from_millis(250);

/// The job as the master's `/v1/jobs/overview` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    pub state: String,
}

/// The first job of the master at `address`, if it answers and has one.
pub async fn job_of(http: &reqwest::Client, address: &str) -> Option<JobInfo> {
    let url = format!("http://{address}/v1/jobs/overview");
    let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
    let job = v["jobs"].as_array()?.first()?;
    Some(JobInfo {
        id: job["jid"].as_str()?.to_string(),
        state: job["state"].as_str().unwrap_or("?").to_string(),
    })
}

/// Waits until the application has been accepted (or ended) and returns its report.
pub async fn until_accepted(rm: &RmClient, app_id: &str) -> Result<AppReport> {
    loop {
        let r = rm.app(app_id).await?;
        if !matches!(r.state.as_str(), "NEW" | "NEW_SAVING" | "SUBMITTED") {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows the application until it ends: prints the job id once the master answers, shows
/// progress, removes the staging directory if the master did not, and returns an error with
/// the diagnostics unless the application succeeded.
pub async fn follow(rm: &RmClient, app_id: &str, staging: &Staging) -> Result<AppReport> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Config(format!("cannot create an HTTP client: {e}")))?;
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut job: Option<JobInfo> = None;
    let mut last_line = String::new();
    let report = loop {
        let report = rm.app(app_id).await?;
        if let Some(address) = report.am_address().filter(|_| !report.is_terminal())
            && let Some(j) = job_of(&http, address).await
        {
            if job.as_ref().map(|k| &k.id) != Some(&j.id) {
                clear(terminal);
                println!("Job has been submitted with JobID {}", j.id);
            }
            job = Some(j);
        }
        if report.is_terminal() {
            break report;
        }
        let line = match &job {
            Some(j) => format!(
                "application {} {}, job {}",
                report.id, report.state, j.state
            ),
            None => format!("application {} {}", report.id, report.state),
        };
        if terminal {
            eprint!("\r\x1b[2K{line} ({:.0} s)", started.elapsed().as_secs_f64());
            let _ = std::io::stderr().flush();
        } else if line != last_line {
            eprintln!("{line}");
        }
        last_line = line;
        tokio::time::sleep(POLL).await;
    };
    clear(terminal);
    // The master removes the staging directory when it ends the application; when it was
    // killed or never started, nobody else will.
    if let Err(e) = staging.remove().await {
        eprintln!("warning: {e}");
    }
    if report.state == "FINISHED" && report.final_status == "SUCCEEDED" {
        if let Some(j) = &job {
            println!("Job with JobID {} has finished.", j.id);
        }
        println!(
            "Application {} finished ({:.1} s).",
            report.id,
            started.elapsed().as_secs_f64()
        );
        Ok(report)
    } else {
        Err(Error::AppFailed {
            app: report.id.clone(),
            state: report.state.clone(),
            final_status: report.final_status.clone(),
            diagnostics: report.diagnostics.trim().to_string(),
        })
    }
}

fn clear(terminal: bool) {
    if terminal {
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
}
