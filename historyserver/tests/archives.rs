//! Archives written by a real job's master (the embedded cluster with its REST API) when the
//! job ends, in Flink's format, and served by the HistoryServer under the same paths with the
//! same documents.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::get_json;
use serde_json::Value;
use sluice::JobStatus;
use sluice::prelude::*;
use sluice_core::Config;
use sluice_historyserver::{HistoryConfig, HistoryServer};

/// Waits for `<dir>/<id>` and parses it.
fn wait_for_archive(dir: &Path, id: &str) -> Value {
    let file = dir.join(id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "no archive {} after 30 s",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

fn doc(archive: &Value, path: &str) -> Option<Value> {
    archive["archive"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .map(|e| serde_json::from_str(e["json"].as_str().unwrap()).unwrap())
}

#[test]
fn ended_jobs_are_archived_and_served_by_the_historyserver() {
    let root = tempfile::tempdir().unwrap();
    let archive_dir = root.path().join("completed-jobs");
    let archive_url = format!("file://{}", archive_dir.display());

    // A job that is cancelled after a checkpoint.
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.set("jobmanager.archive.fs.dir", &archive_url).unwrap();
    env.set("execution.checkpointing.interval", "50 ms")
        .unwrap();
    let ckpt = root.path().join("ckpt");
    env.set("state.checkpoints.dir", ckpt.to_str().unwrap())
        .unwrap();
    env.generate(None, Some(2000.0), |i| (i % 7, i))
        .uid("numbers")
        .key_by_field(|r: &(u64, u64)| &r.0)
        .sum()
        .uid("sums")
        .discard();
    let cancelled = env.execute_async("cancelled").unwrap();
    let c_id = cancelled.job_id().to_string();
    assert!(
        cancelled
            .wait_for_checkpoint(Duration::from_secs(20))
            .is_some()
    );
    // Not archived while it runs.
    assert!(!archive_dir.join(&c_id).exists());
    cancelled.cancel();
    assert_eq!(cancelled.wait().unwrap().status, JobStatus::Canceled);

    // A job that finishes.
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.set("jobmanager.archive.fs.dir", &archive_url).unwrap();
    env.from_collection((0..100u64).collect())
        .uid("numbers")
        .discard();
    let finished = env.execute_async("finished").unwrap();
    let f_id = finished.job_id().to_string();
    assert_eq!(finished.wait().unwrap().status, JobStatus::Finished);

    let a = wait_for_archive(&archive_dir, &c_id);
    let overview = doc(&a, "/jobs/overview").expect("/jobs/overview");
    let jobs = overview["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "only this job: {overview}");
    assert_eq!(jobs[0]["jid"], c_id.as_str());
    assert_eq!(jobs[0]["state"], "CANCELED");
    let details = doc(&a, &format!("/jobs/{c_id}")).unwrap();
    assert_eq!(details["state"], "CANCELED");
    let vertices: Vec<&str> = details["vertices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(&vertices[..2], ["numbers", "sums"], "{details}");
    let cps = doc(&a, &format!("/jobs/{c_id}/checkpoints")).unwrap();
    assert!(cps["counts"]["completed"].as_u64().unwrap() >= 1, "{cps}");
    assert!(doc(&a, &format!("/jobs/{c_id}/checkpoints/config")).is_some());
    assert!(doc(&a, &format!("/jobs/{c_id}/exceptions")).is_some());
    let result = doc(&a, &format!("/jobs/{c_id}/execution-result")).unwrap();
    assert_eq!(
        result["job-execution-result"]["application-status"],
        "CANCELED"
    );
    assert_eq!(
        doc(&a, &format!("/jobs/{c_id}/config")).unwrap()["jid"],
        c_id.as_str()
    );

    let b = wait_for_archive(&archive_dir, &f_id);
    assert_eq!(
        doc(&b, &format!("/jobs/{f_id}")).unwrap()["state"],
        "FINISHED"
    );
    // No checkpointing: no checkpoint configuration, as the master answered 404 for it.
    assert!(doc(&b, &format!("/jobs/{f_id}/checkpoints/config")).is_none());
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&archive_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");

    let o = vec![
        format!("historyserver.archive.fs.dir={archive_url}"),
        "historyserver.archive.fs.refresh-interval=100 ms".to_string(),
        "historyserver.web.port=0".to_string(),
        "historyserver.web.address=127.0.0.1".to_string(),
    ];
    let hs =
        HistoryServer::start(HistoryConfig::from_config(&Config::load(None, &o).unwrap()).unwrap())
            .unwrap();
    assert!(hs.wait_for_jobs(2, Duration::from_secs(10)));
    let addr = hs.local_addr();
    let served = get_json(addr, "/jobs/overview");
    let ids: Vec<&str> = served["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jid"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{served}");
    assert!(
        ids.contains(&c_id.as_str()) && ids.contains(&f_id.as_str()),
        "{served}"
    );
    // Every archived document is served as archived, with and without /v1.
    for entry in a["archive"].as_array().unwrap() {
        let path = entry["path"].as_str().unwrap();
        if path == "/jobs/overview" {
            continue;
        }
        let archived: Value = serde_json::from_str(entry["json"].as_str().unwrap()).unwrap();
        assert_eq!(get_json(addr, path), archived, "{path}");
        assert_eq!(get_json(addr, &format!("/v1{path}")), archived, "/v1{path}");
    }
}
