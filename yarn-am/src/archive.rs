//! Job archives for the HistoryServer. When a job reaches a globally terminal state (FINISHED,
//! FAILED, CANCELED) and `jobmanager.archive.fs.dir` is set, the REST documents of that job are
//! written to `<dir>/<job-id>` in Flink's archive format,
//! `{"archive":[{"path":"/jobs/<id>","json":"<document as a string>"}, ...]}`.
//!
//! The documents are produced by the REST router itself (on a dispatcher holding only that
//! job), so an archive holds exactly what `GET <path>` answered when the job ended: the
//! HistoryServer then serves the same bytes under the same paths. The file is written through
//! the storage layer (`file://`, `hdfs://`, or a plain path on `fs.defaultFS`) under a
//! temporary name and renamed, so a poller never reads half an archive.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sluice_core::{Result, SluiceError};
use tower::ServiceExt;

use crate::rest::dispatcher::{Dispatcher, JobEntry};

/// Where the master writes job archives (Flink's key).
pub const ARCHIVE_DIR_KEY: &str = "jobmanager.archive.fs.dir";

/// How often a watcher looks whether its job ended.
const POLL: Duration = Duration::from_millis(100);

/// The REST paths archived for job `id`, relative to the API root. Paths the router answers
/// with an error (e.g. `/checkpoints/config` of a job without checkpointing) are left out, as
/// the HistoryServer then answers 404 for them like the master did.
fn archived_paths(id: &str) -> Vec<String> {
    let mut paths = vec!["/jobs/overview".to_string()];
    for suffix in [
        "",
        "/status",
        "/checkpoints",
        "/checkpoints/config",
        "/exceptions",
        "/execution-result",
    ] {
        paths.push(format!("/jobs/{id}{suffix}"));
    }
    paths
}

/// The archived documents of `job` as (path, JSON text): every path of [`archived_paths`] the
/// REST router answers with 200, plus `/jobs/<id>/config`.
pub(crate) fn documents(job: &Arc<JobEntry>) -> Result<Vec<(String, String)>> {
    let router = crate::rest::handlers::router(Arc::new(Dispatcher::with_job(job.clone())));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| SluiceError::Internal(format!("cannot start a runtime to archive: {e}")))?;
    let mut out = Vec::new();
    for path in archived_paths(&job.id) {
        let request = Request::get(path.as_str())
            .body(Body::empty())
            .map_err(|e| SluiceError::Internal(format!("archive request {path}: {e}")))?;
        let response = runtime
            .block_on(router.clone().oneshot(request))
            .map_err(|e| SluiceError::Internal(format!("archive request {path}: {e}")))?;
        if response.status() != StatusCode::OK {
            continue;
        }
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), 64 << 20))
            .map_err(|e| SluiceError::Internal(format!("archive response {path}: {e}")))?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| SluiceError::Internal(format!("archive response {path} is not UTF-8")))?;
        out.push((path, text));
    }
    out.push((
        format!("/jobs/{}/config", job.id),
        job_config(job).to_string(),
    ));
    Ok(out)
}

/// `GET /jobs/:id/config` in Flink's shape, from what the master knows of the job.
fn job_config(job: &JobEntry) -> Value {
    let parallelism = job.plan.nodes.iter().map(|n| n.parallelism).max();
    json!({
        "jid": job.id,
        "name": job.name,
        "execution-config": {
            "execution-mode": "PIPELINED",
            "restart-strategy": "Cluster level default restart strategy",
            "job-parallelism": parallelism.unwrap_or(1),
            "object-reuse-mode": false,
            "user-config": {},
        },
    })
}

/// The archive file's content in Flink's format.
pub fn encode(documents: &[(String, String)]) -> Vec<u8> {
    let entries: Vec<Value> = documents
        .iter()
        .map(|(path, text)| json!({ "path": path, "json": text }))
        .collect();
    json!({ "archive": entries }).to_string().into_bytes()
}

/// Writes the archive of `job` to `<dir>/<job-id>`; returns the file's URL.
pub(crate) fn write(dir: &str, job: &Arc<JobEntry>) -> Result<String> {
    let bytes = encode(&documents(job)?);
    let (storage, base) = sluice_hdfs_backend::resolve(dir)?;
    let path = format!("{}/{}", base.trim_end_matches('/'), job.id);
    storage.write_atomic(&path, &bytes)?;
    Ok(storage.url(&path))
}

/// Starts a thread that waits until `job` ended for good, writes its archive to `dir`, then
/// calls `done` (also when writing failed; the error is printed, naming the job and the
/// directory, as a missing archive must not fail the job).
pub(crate) fn archive_when_ended(
    job: Arc<JobEntry>,
    dir: String,
    done: impl FnOnce() + Send + 'static,
) {
    let name = format!("archive {}", job.id);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        loop {
            let view = job.handle.view();
            // The end time is set together with the final status; the status alone may be
            // FAILED a moment earlier, before the view is complete.
            if view.status.is_globally_terminal() && view.end_time_ms.is_some() {
                break;
            }
            std::thread::sleep(POLL);
        }
        match write(&dir, &job) {
            Ok(url) => eprintln!("job {} archived to {url}", job.id),
            Err(e) => eprintln!("cannot archive job {} into {dir}: {e}", job.id),
        }
        done();
    });
    if let Err(e) = spawned {
        eprintln!("cannot start the archiving thread of a job: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_flinks_archive_format() {
        let docs = vec![
            ("/jobs/overview".to_string(), r#"{"jobs":[]}"#.to_string()),
            ("/jobs/abc".to_string(), r#"{"jid":"abc"}"#.to_string()),
        ];
        let v: Value = serde_json::from_slice(&encode(&docs)).unwrap();
        let entries = v["archive"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1]["path"], "/jobs/abc");
        // The document is a string holding JSON, as Flink's FsJobArchivist writes it.
        let inner: Value = serde_json::from_str(entries[1]["json"].as_str().unwrap()).unwrap();
        assert_eq!(inner["jid"], "abc");
        assert!(archived_paths("abc").contains(&"/jobs/abc/checkpoints".to_string()));
    }
}
