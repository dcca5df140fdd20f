//! Flink's `formatType` over REST (`POST /jobs/:id/savepoints` and `/stop`): `NATIVE` takes
//! the RocksDB files, `CANONICAL` (also the default) the key-group format; the checkpoint
//! history reports each savepoint's format; an unknown format is a 400.

use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};
use sluice::JobStatus;
use sluice::prelude::*;
use sluice_hdfs_backend::{StateHandle, load_snapshot};

fn call(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!(
        "{}{path}",
        sluice::rest::running().expect("REST server running").url()
    );
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value)
}

/// Triggers `POST path` with `body` and polls the savepoint until it completed; its location.
fn savepoint(id: &str, path: &str, body: Value) -> String {
    let (status, trigger) = call(reqwest::Method::POST, path, Some(body));
    assert_eq!(status, 202, "{trigger}");
    let poll = format!(
        "/jobs/{id}/savepoints/{}",
        trigger["request-id"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = call(reqwest::Method::GET, &poll, None);
        if v["status"]["id"] == "COMPLETED" {
            return v["operation"]["location"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_string();
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the keyed operator `sums` is stored natively (RocksDB files) in the snapshot.
fn native(location: &str) -> bool {
    let (_, meta) = load_snapshot(location).unwrap();
    let sums = meta.operators.iter().find(|o| o.uid == "sums").unwrap();
    sums.subtasks
        .iter()
        .all(|s| matches!(s.handle, StateHandle::Incremental { .. }))
}

#[test]
fn format_type_over_rest() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.set("state.backend.type", "rocksdb").unwrap();
    env.set_parallelism(2);
    env.generate(None, Some(2000.0), |i| (i % 97, i))
        .uid("numbers")
        .key_by_field(|r: &(u64, u64)| &r.0)
        .sum()
        .uid("sums")
        .discard();
    let job = env.execute_async("format-type").unwrap();
    let id = job.job_id().to_string();
    let target = format!("file://{}", dir.path().display());

    let (status, body) = call(
        reqwest::Method::POST,
        &format!("/jobs/{id}/savepoints"),
        Some(json!({"target-directory": target, "formatType": "PORTABLE"})),
    );
    assert_eq!(status, 400, "{body}");

    let path = format!("/jobs/{id}/savepoints");
    let native_sp = savepoint(
        &id,
        &path,
        json!({"target-directory": target, "cancel-job": false, "formatType": "NATIVE", "triggerId": null}),
    );
    assert!(native(&native_sp), "{native_sp}");
    let default_sp = savepoint(&id, &path, json!({"target-directory": target}));
    assert!(!native(&default_sp), "{default_sp}");

    let stopped = savepoint(
        &id,
        &format!("/jobs/{id}/stop"),
        json!({"targetDirectory": target, "drain": false, "formatType": "NATIVE"}),
    );
    assert!(native(&stopped), "{stopped}");
    assert_eq!(job.wait().unwrap().status, JobStatus::Finished);

    let (_, history) = call(
        reqwest::Method::GET,
        &format!("/jobs/{id}/checkpoints"),
        None,
    );
    let formats: Vec<(String, Value)> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["external_path"].as_str().unwrap_or_default().to_string(),
                c["savepointFormat"].clone(),
            )
        })
        .collect();
    for (location, format) in [
        (&native_sp, "NATIVE"),
        (&default_sp, "CANONICAL"),
        (&stopped, "NATIVE"),
    ] {
        assert!(
            formats.contains(&(location.clone(), json!(format))),
            "{location} {format}: {formats:?}"
        );
    }
}
