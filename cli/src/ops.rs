//! `list`, `savepoint`, `stop`, `cancel`, `checkpoint` and `checkpoints`: REST calls, with
//! Flink's output lines where Flink has the command.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use crate::args::{Address, JobArgs, ListArgs, SavepointArgs, StopArgs};
use crate::client::RestClient;
use crate::conf;
use crate::progress::Spinner;

fn client(address: &Address) -> Result<RestClient> {
    if let Some(app) = &address.yarn_app {
        return RestClient::new(&sluice_yarn_submit::master_address_blocking(app)?);
    }
    RestClient::new(&conf::rest_address(address.jobmanager.as_deref())?)
}

/// Job ids are 32 hex digits; anything else cannot name a job, so say so before asking.
fn check_job_id(id: &str) -> Result<()> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("'{id}' is not a job id (32 hexadecimal digits; see `sluice list`)");
    }
    Ok(())
}

pub fn list(a: ListArgs) -> Result<()> {
    let client = client(&a.address)?;
    println!("Waiting for response...");
    let overview = client.get("/jobs/overview")?;
    let jobs = overview["jobs"].as_array().cloned().unwrap_or_default();
    let line = |j: &Value| {
        format!(
            "{} : {} : {} ({})",
            format_time(j["start-time"].as_i64().unwrap_or(0)),
            j["jid"].as_str().unwrap_or("?"),
            j["name"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
        )
    };
    let terminal = |j: &&Value| {
        matches!(
            j["state"].as_str(),
            Some("FINISHED" | "CANCELED" | "FAILED")
        )
    };
    let running: Vec<&Value> = jobs.iter().filter(|j| !terminal(j)).collect();
    if running.is_empty() {
        println!("No running jobs.");
    } else {
        println!("------------------ Running/Restarting Jobs -------------------");
        running.iter().for_each(|j| println!("{}", line(j)));
        println!("--------------------------------------------------------------");
    }
    println!("No scheduled jobs.");
    if a.all {
        let ended: Vec<&Value> = jobs.iter().filter(terminal).collect();
        if ended.is_empty() {
            println!("No terminated jobs.");
        } else {
            println!("---------------------- Terminated Jobs -----------------------");
            for j in ended {
                println!("{}", line(j));
                // A failed job says why, so nobody has to search the logs for it.
                if j["state"].as_str() == Some("FAILED")
                    && let Some(id) = j["jid"].as_str()
                    && let Ok(ex) = client.get(&format!("/jobs/{id}/exceptions"))
                    && let Some(root) = ex["root-exception"].as_str()
                {
                    println!("    Root cause: {root}");
                }
            }
            println!("--------------------------------------------------------------");
        }
    }
    Ok(())
}

pub fn savepoint(a: SavepointArgs) -> Result<()> {
    if let Some(path) = &a.dispose {
        let url = crate::dispose::dispose_savepoint(path)?;
        println!("Savepoint '{url}' disposed.");
        return Ok(());
    }
    let job_id = a.job_id.as_deref().unwrap_or_default();
    check_job_id(job_id)?;
    let client = client(&a.address)?;
    println!("Triggering savepoint for job {job_id}.");
    let body = json!({
        "target-directory": a.target_dir,
        "cancel-job": false,
        "formatType": a.format.rest_name(),
        "triggerId": null,
    });
    let trigger = client.post(&format!("/jobs/{job_id}/savepoints"), body)?;
    println!("Waiting for response...");
    let location = wait_for_savepoint(&client, job_id, &trigger, "savepoint")?;
    println!("Savepoint completed. Path: {location}");
    println!("You can resume your program from this savepoint with the run command.");
    Ok(())
}

pub fn stop(a: StopArgs) -> Result<()> {
    check_job_id(&a.job_id)?;
    let client = client(&a.address)?;
    println!("Triggering stop-with-savepoint for job {}.", a.job_id);
    let body = json!({
        "targetDirectory": a.savepoint_path,
        "drain": a.drain,
        "formatType": a.format.rest_name(),
        "triggerId": null,
    });
    let trigger = client.post(&format!("/jobs/{}/stop", a.job_id), body)?;
    println!("Waiting for response...");
    let location = wait_for_savepoint(&client, &a.job_id, &trigger, "stop-with-savepoint")?;
    println!("Savepoint completed. Path: {location}");
    Ok(())
}

/// Polls `GET /jobs/:id/savepoints/:trigger` until the operation completed; its location, or
/// the failure as an error.
fn wait_for_savepoint(
    client: &RestClient,
    job: &str,
    trigger: &Value,
    what: &str,
) -> Result<String> {
    let (op, started) = wait_for_operation(client, job, "savepoints", trigger, what)?;
    if let Some(location) = op["location"].as_str() {
        return Ok(location.to_string());
    }
    Err(operation_failed(&op["failure-cause"], job, what, started))
}

pub fn checkpoint(a: JobArgs) -> Result<()> {
    check_job_id(&a.job_id)?;
    let client = client(&a.address)?;
    println!("Triggering checkpoint for job {}.", a.job_id);
    let job = a.job_id.as_str();
    let trigger = client.post(
        &format!("/jobs/{job}/checkpoints"),
        json!({"checkpointType": "CONFIGURED"}),
    )?;
    println!("Waiting for response...");
    let (op, started) = wait_for_operation(&client, job, "checkpoints", &trigger, "checkpoint")?;
    match op["checkpointId"].as_u64() {
        Some(id) => {
            println!("Checkpoint({id}) for job {job} completed.");
            Ok(())
        }
        None => Err(operation_failed(
            &op["failureCause"],
            job,
            "checkpoint",
            started,
        )),
    }
}

fn operation_failed(cause: &Value, job: &str, what: &str, started: Instant) -> anyhow::Error {
    let message = cause["stack-trace"]
        .as_str()
        .or(cause["serialized-throwable"].as_str())
        .unwrap_or("no reason given");
    anyhow!(
        "the {what} of job {job} failed after {:.1?}: {message}",
        started.elapsed()
    )
}

/// Polls `GET /jobs/:id/<kind>/:trigger` (kind `savepoints` or `checkpoints`) until the
/// operation completed; its `operation` document and when the wait started.
fn wait_for_operation(
    client: &RestClient,
    job: &str,
    kind: &str,
    trigger: &Value,
    what: &str,
) -> Result<(Value, Instant)> {
    let trigger = trigger["request-id"].as_str().ok_or_else(|| {
        anyhow!("the REST API answered the {what} request without a request-id: {trigger}")
    })?;
    let path = format!("/jobs/{job}/{kind}/{trigger}");
    let _spinner = Spinner::start(&format!("waiting for the {what} of job {job}"));
    let started = Instant::now();
    let mut delay = Duration::from_millis(20);
    let status = loop {
        let status = client.get(&path).map_err(|e| {
            anyhow!("{e:#}\nthe {what} of job {job} (trigger {trigger}) was accepted, but its outcome is unknown; the job's process may have ended")
        })?;
        match status["status"]["id"].as_str() {
            Some("COMPLETED") => break status,
            Some("IN_PROGRESS") => {}
            other => bail!("unexpected {what} status {other:?} for job {job}: {status}"),
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(500));
    };
    Ok((status["operation"].clone(), started))
}

pub fn cancel(a: JobArgs) -> Result<()> {
    check_job_id(&a.job_id)?;
    let client = client(&a.address)?;
    println!("Cancelling job {}.", a.job_id);
    client.patch(&format!("/jobs/{}?mode=cancel", a.job_id))?;
    println!("Cancelled job {}.", a.job_id);
    Ok(())
}

pub fn checkpoints(a: JobArgs) -> Result<()> {
    check_job_id(&a.job_id)?;
    let client = client(&a.address)?;
    let v = client.get(&format!("/jobs/{}/checkpoints", a.job_id))?;
    let c = &v["counts"];
    println!(
        "Checkpoints of job {}: {} completed, {} in progress, {} failed, {} restored",
        a.job_id, c["completed"], c["in_progress"], c["failed"], c["restored"]
    );
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if history.is_empty() {
        println!("No checkpoints yet.");
        return Ok(());
    }
    let rows: Vec<[String; 6]> = history
        .iter()
        .map(|h| {
            let path = h["external_path"]
                .as_str()
                .or(h["failure_message"].as_str())
                .unwrap_or("-");
            [
                h["id"].to_string(),
                h["checkpoint_type"].as_str().unwrap_or("?").to_string(),
                h["status"].as_str().unwrap_or("?").to_string(),
                sluice_core::size::human(h["state_size"].as_u64().unwrap_or(0)),
                format!("{} ms", h["end_to_end_duration"].as_u64().unwrap_or(0)),
                path.to_string(),
            ]
        })
        .collect();
    let header = ["ID", "TYPE", "STATUS", "SIZE", "DURATION", "PATH"].map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 5 {
                    cell.clone()
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        println!("{}", cells.join("  "));
    }
    Ok(())
}

/// `dd.MM.yyyy HH:mm:ss` (Flink's `list` format), in UTC.
fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}.{month:02}.{year} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `sluice checkpoints gc <dir> [--delete]`.
pub fn gc(a: crate::args::GcArgs) -> Result<()> {
    let files = sluice_hdfs_backend::collect_garbage(&a.dir, a.delete)
        .map_err(|e| anyhow::anyhow!("cannot clean {}: {e}", a.dir))?;
    let verb = if a.delete { "deleted" } else { "would delete" };
    for f in &files {
        println!("{verb} {f}");
    }
    if files.is_empty() {
        println!("nothing to delete under {}", a.dir);
    } else if !a.delete {
        println!(
            "{} entries; run again with --delete to remove them",
            files.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_like_flink_list() {
        // The start time of the job in the captured `flink list` output.
        assert_eq!(format_time(1_795_633_605_734), "25.11.2026 19:06:45");
        assert_eq!(format_time(0), "01.01.1970 00:00:00");
    }

    #[test]
    fn rejects_what_cannot_be_a_job_id() {
        assert!(check_job_id("00000000000000000000000000000000").is_ok());
        let e = check_job_id("nope").unwrap_err().to_string();
        assert!(e.contains("'nope'"), "{e}");
    }
}
