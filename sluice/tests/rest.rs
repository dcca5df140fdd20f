//! The REST API against jobs on the embedded cluster, over real HTTP: Flink's paths, status
//! codes and field names (compared with responses captured from Flink 2.3.0 in
//! `tests/flink-rest/`), savepoints, stop and cancel through it.
//!
//! All tests of this binary share the process's one REST server (`rest.port = 0`).

use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};
use sluice::prelude::*;
use sluice::{JobClient, JobStatus};

fn flink(name: &str) -> Value {
    let path = format!(
        "{}/tests/flink-rest/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// Fields Sluice adds to Flink's documents (documented in docs/rest.md).
const EXTENSIONS: &[&str] = &["alignment_duration"];

/// Same field names as Flink's (besides [`EXTENSIONS`]), object by object. Arrays: every element of ours has the
/// fields all of Flink's elements have, and none that no Flink element has. A null on either
/// side (e.g. no failed checkpoint yet) is not compared further.
fn assert_shape(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            let ok: std::collections::BTreeSet<_> = o
                .keys()
                .filter(|k| !EXTENSIONS.contains(&k.as_str()))
                .collect();
            let tk: std::collections::BTreeSet<_> = t.keys().collect();
            assert_eq!(ok, tk, "field names at {at}");
            for (k, v) in t {
                assert_shape(&o[k], v, &format!("{at}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(t)) if !t.is_empty() => {
            let keys = |v: &Value| -> std::collections::BTreeSet<String> {
                v.as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default()
            };
            let union: std::collections::BTreeSet<String> = t.iter().flat_map(keys).collect();
            let common = t
                .iter()
                .map(keys)
                .reduce(|a, b| &a & &b)
                .unwrap_or_default();
            for (i, item) in o.iter().enumerate() {
                let mut k = keys(item);
                k.retain(|key| !EXTENSIONS.contains(&key.as_str()));
                assert!(
                    common.is_subset(&k) && k.is_subset(&union),
                    "field names at {at}[{i}]: {k:?}, Flink: {union:?}"
                );
                for key in &k {
                    if let Some(t_item) = t.iter().find(|x| x.get(key).is_some()) {
                        assert_shape(&item[key], &t_item[key], &format!("{at}[{i}].{key}"));
                    }
                }
            }
        }
        _ => {}
    }
}

fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// (status, body) of a call to the process's REST server.
fn call(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!(
        "{}{path}",
        sluice::rest::running().expect("REST server running").url()
    );
    let mut req = http().request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.text().unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: {e}: {text}"))
    };
    (status, value)
}

fn get(path: &str) -> Value {
    let (status, v) = call(reqwest::Method::GET, path, None);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// Generated numbers → keyed running sum per `i % 7` (uid `sums`) → discard, at `rate`/s.
fn start_job(name: &str, checkpoints: Option<&std::path::Path>) -> JobClient {
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    if let Some(dir) = checkpoints {
        env.set("execution.checkpointing.interval", "50 ms")
            .unwrap();
        env.set("state.checkpoints.dir", dir.to_str().unwrap())
            .unwrap();
    }
    env.generate(None, Some(2000.0), |i| (i % 7, i))
        .uid("numbers")
        .key_by_field(|r: &(u64, u64)| &r.0)
        .sum()
        .uid("sums")
        .discard();
    env.execute_async(name).unwrap()
}

/// Polls `GET path` until `status.id` is COMPLETED; returns the body.
fn poll_completed(path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get(path);
        match v["status"]["id"].as_str() {
            Some("COMPLETED") => return v,
            Some("IN_PROGRESS") => {
                assert_shape(&v, &flink("savepoint-status-in-progress"), "in progress")
            }
            other => panic!("GET {path}: status {other:?}: {v}"),
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} still IN_PROGRESS after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_running_job_is_described_with_flinks_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let job = start_job("shapes", Some(dir.path()));
    let id = job.job_id().to_string();
    assert!(job.wait_for_checkpoint(Duration::from_secs(20)).is_some());

    for (path, sample) in [
        ("/overview", "overview"),
        ("/v1/config", "config"),
        ("/jobs", "jobs"),
        ("/v1/jobs/overview", "jobs-overview"),
    ] {
        assert_shape(&get(path), &flink(sample), path);
    }
    let jobs = get("/jobs");
    assert!(
        jobs["jobs"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": id, "status": "RUNNING"})),
        "{jobs}"
    );

    let details = get(&format!("/jobs/{id}"));
    assert_shape(&details, &flink("job"), "job");
    assert_eq!(details["jid"], json!(id));
    assert_eq!(details["name"], json!("shapes"));
    assert_eq!(details["state"], json!("RUNNING"));
    assert_eq!(details["end-time"], json!(-1));
    let vertices = details["vertices"].as_array().unwrap();
    let ids: Vec<&str> = vertices.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(&ids[..2], ["numbers", "sums"]);
    let sums = &vertices[1];
    assert_eq!(sums["parallelism"], json!(1));
    assert_eq!(sums["status"], json!("RUNNING"));
    assert!(
        sums["metrics"]["read-records"].as_u64().unwrap() > 0,
        "{sums}"
    );
    assert!(vertices[0]["metrics"]["write-records"].as_u64().unwrap() > 0);

    let cps = get(&format!("/v1/jobs/{id}/checkpoints"));
    assert_shape(&cps, &flink("job-checkpoints"), "checkpoints");
    assert!(cps["counts"]["completed"].as_u64().unwrap() >= 1, "{cps}");
    let latest = &cps["latest"]["completed"];
    assert_eq!(latest["status"], json!("COMPLETED"));
    assert_eq!(latest["is_savepoint"], json!(false));
    let path = latest["external_path"].as_str().unwrap();
    assert!(
        path.starts_with("file://") && path.contains(&format!("/{id}/chk-")),
        "{path}"
    );

    let config = get(&format!("/jobs/{id}/checkpoints/config"));
    assert_shape(
        &config,
        &flink("job-checkpoints-config"),
        "checkpoints/config",
    );
    assert_eq!(config["interval"], json!(50));
    assert_eq!(config["mode"], json!("exactly_once"));
    assert_eq!(
        get(&format!("/jobs/{id}/status")),
        json!({"status": "RUNNING"})
    );

    let (status, body) = call(
        reqwest::Method::PATCH,
        &format!("/v1/jobs/{id}?mode=cancel"),
        Some(json!({})),
    );
    assert_eq!((status, body), (202, json!({})));
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
    let after = get(&format!("/jobs/{id}"));
    assert_eq!(after["state"], json!("CANCELED"));
    assert!(after["end-time"].as_i64().unwrap() >= after["start-time"].as_i64().unwrap());
    assert_eq!(after["vertices"][1]["status"], json!("CANCELED"));
}

#[test]
fn savepoint_checkpoint_and_stop_through_rest() {
    let dir = tempfile::tempdir().unwrap();
    let job = start_job("operations", Some(&dir.path().join("chk")));
    let id = job.job_id().to_string();
    let target = format!("file://{}", dir.path().join("sp").display());

    // Flink's CLI sends formatType and triggerId too; they are accepted.
    let body = json!({"target-directory": target, "cancel-job": false, "formatType": "CANONICAL", "triggerId": null});
    let (status, trigger) = call(
        reqwest::Method::POST,
        &format!("/v1/jobs/{id}/savepoints"),
        Some(body),
    );
    assert_eq!(status, 202, "{trigger}");
    assert_shape(&trigger, &flink("savepoint-trigger"), "savepoint trigger");
    let done = poll_completed(&format!(
        "/v1/jobs/{id}/savepoints/{}",
        trigger["request-id"].as_str().unwrap()
    ));
    assert_shape(
        &done,
        &flink("savepoint-status-completed"),
        "savepoint status",
    );
    let location = done["operation"]["location"].as_str().unwrap();
    assert!(
        location.starts_with(&format!("{target}/savepoint-{}", &id[..6])),
        "{location}"
    );
    assert!(
        std::path::Path::new(location.trim_start_matches("file://"))
            .join("_metadata")
            .is_file()
    );

    let (status, trigger) = call(
        reqwest::Method::POST,
        &format!("/jobs/{id}/checkpoints"),
        Some(json!({})),
    );
    assert_eq!(status, 202, "{trigger}");
    let done = poll_completed(&format!(
        "/jobs/{id}/checkpoints/{}",
        trigger["request-id"].as_str().unwrap()
    ));
    assert!(
        done["operation"]["checkpointId"].as_u64().is_some(),
        "{done}"
    );

    let (status, trigger) = call(
        reqwest::Method::POST,
        &format!("/jobs/{id}/stop"),
        Some(json!({"targetDirectory": target, "drain": false})),
    );
    assert_eq!(status, 202, "{trigger}");
    let done = poll_completed(&format!(
        "/jobs/{id}/savepoints/{}",
        trigger["request-id"].as_str().unwrap()
    ));
    assert!(
        done["operation"]["location"]
            .as_str()
            .unwrap()
            .starts_with(&target),
        "{done}"
    );
    assert_eq!(job.wait().unwrap().status, JobStatus::Finished);
    assert_eq!(get(&format!("/jobs/{id}"))["state"], json!("FINISHED"));
    // A finished job cannot be cancelled any more: Flink's 409.
    let (status, body) = call(
        reqwest::Method::PATCH,
        &format!("/jobs/{id}?mode=cancel"),
        None,
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body["errors"][0].as_str().unwrap().contains("FINISHED"),
        "{body}"
    );
}

#[test]
fn failures_are_reported_in_flinks_error_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let job = start_job("errors", None);
    let id = job.job_id().to_string();
    let unknown = "00000000000000000000000000000000";
    for (method, path) in [
        (reqwest::Method::GET, format!("/jobs/{unknown}")),
        (
            reqwest::Method::GET,
            format!("/v1/jobs/{unknown}/checkpoints"),
        ),
        (
            reqwest::Method::PATCH,
            format!("/v1/jobs/{unknown}?mode=cancel"),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/jobs/{unknown}/savepoints"),
        ),
    ] {
        let (status, body) = call(method.clone(), &path, Some(json!({})));
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_shape(&body, &flink("error-unknown-job"), "error");
        assert!(
            body["errors"][0]
                .as_str()
                .unwrap()
                .contains(&format!("Job {unknown} not found")),
            "{body}"
        );
    }
    let (status, body) = call(
        reqwest::Method::GET,
        &format!("/jobs/{id}/savepoints/{unknown}"),
        None,
    );
    assert_eq!(status, 404);
    assert!(
        body["errors"][0].as_str().unwrap().contains(unknown),
        "{body}"
    );
    let (status, body) = call(
        reqwest::Method::GET,
        &format!("/jobs/{id}/checkpoints/config"),
        None,
    );
    assert_eq!(status, 404, "checkpointing is off: {body}");
    let (status, _) = call(reqwest::Method::GET, "/no/such/path", None);
    assert_eq!(status, 404);

    // No target and no state.savepoints.dir: rejected at once, naming the key.
    let (status, body) = call(
        reqwest::Method::POST,
        &format!("/jobs/{id}/savepoints"),
        Some(json!({"cancel-job": false})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("state.savepoints.dir"),
        "{body}"
    );
    let (status, _) = call(
        reqwest::Method::POST,
        &format!("/jobs/{id}/savepoints"),
        Some(json!("not an object")),
    );
    assert_eq!(status, 400);

    // A target that cannot be a directory: the failure comes back as Flink's failure-cause.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let body = json!({"target-directory": file.to_str().unwrap(), "cancel-job": false});
    let (status, trigger) = call(
        reqwest::Method::POST,
        &format!("/jobs/{id}/savepoints"),
        Some(body),
    );
    assert_eq!(status, 202);
    let done = poll_completed(&format!(
        "/jobs/{id}/savepoints/{}",
        trigger["request-id"].as_str().unwrap()
    ));
    let cause = &done["operation"]["failure-cause"];
    for field in ["class", "stack-trace", "serialized-throwable"] {
        assert!(cause[field].is_string(), "{field} in {done}");
    }
    assert!(
        cause["stack-trace"].as_str().unwrap().contains("a-file"),
        "{done}"
    );
    job.cancel();
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
}

#[test]
fn a_failed_job_reports_its_root_cause_in_exceptions_and_execution_result() {
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.set("restart-strategy.type", "fixed-delay").unwrap();
    env.set("restart-strategy.fixed-delay.attempts", "1")
        .unwrap();
    env.set("restart-strategy.fixed-delay.delay", "10 ms")
        .unwrap();
    env.generate_sequence(0, 100)
        .uid("numbers")
        .try_flat_map(|i: u64, out: &mut sluice::Collector<u64>| {
            if i == 42 {
                return Err(sluice::SluiceError::job("record 42 is not welcome"));
            }
            out.collect(i);
            Ok(())
        })
        .uid("picky")
        .discard();
    let client = env.execute_async("failing").unwrap();
    let id = client.job_id().to_string();
    let handle = client.handle();
    assert!(client.wait().is_err(), "the job fails");
    assert_eq!(handle.view().status, JobStatus::Failed);
    let result = get(&format!("/jobs/{id}/execution-result"));
    assert_eq!(result["status"]["id"], "COMPLETED", "{result}");
    let r = &result["job-execution-result"];
    assert_eq!(r["application-status"], "FAILED", "{result}");
    assert!(
        r["failure-cause"]["stack-trace"]
            .as_str()
            .is_some_and(|s| s.contains("record 42 is not welcome")),
        "{result}"
    );
    let ex = get(&format!("/v1/jobs/{id}/exceptions"));
    assert!(
        ex["root-exception"]
            .as_str()
            .is_some_and(|s| s.contains("record 42 is not welcome")),
        "{ex}"
    );
    assert_eq!(
        ex["exceptionHistory"]["entries"].as_array().map(Vec::len),
        Some(2),
        "one restart, then the failure: {ex}"
    );
}
