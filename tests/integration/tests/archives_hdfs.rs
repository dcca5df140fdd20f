//! Job archives on the real HDFS of the test cluster: a job's master writes its archive to an
//! `hdfs://` `jobmanager.archive.fs.dir` when the job ends, and the HistoryServer polls that
//! directory (together with a `file://` one: `historyserver.archive.fs.dir` is a list) and
//! serves the archived documents.
//!
//! Run serially with the cluster up:
//!   scripts/testcluster.sh up hdfs
//!   cargo test --release -p sluice-integration-tests --test archives_hdfs -- --test-threads=1

use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice::JobStatus;
use sluice::prelude::*;
use sluice_historyserver::{HistoryConfig, HistoryServer};
use sluice_integration_tests::{TestCluster, unique};

/// The cluster with HDFS up, and `HADOOP_CONF_DIR` pointing at its configuration.
fn cluster() -> TestCluster {
    let cluster = TestCluster::ensure_up(&["hdfs"]).expect("the test cluster's HDFS must be up");
    static ENV: Once = Once::new();
    let conf = cluster.conf_dir().to_path_buf();
    ENV.call_once(|| {
        // SAFETY: set once, before any HDFS client of this process reads it, and never
        // changed; the tests run with --test-threads=1.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("HADOOP_CONF_DIR", &conf)
        };
    });
    cluster
}

/// (status, body) of `GET path` on `addr` (HTTP/1.0, so the body is not chunked).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|b| b.1).unwrap_or("");
    (status, body.to_string())
}

#[test]
fn archives_on_hdfs_are_written_when_a_job_ends_and_served_by_the_historyserver() {
    let cluster = cluster();
    let dir = format!(
        "{}/sluice-it/{}",
        cluster.hdfs_url().trim_end_matches('/'),
        unique("completed-jobs")
    );
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.set("jobmanager.archive.fs.dir", &dir).unwrap();
    env.from_collection((0..500u64).collect())
        .uid("numbers")
        .map(|i: u64| i * 2)
        .uid("doubled")
        .discard();
    let job = env.execute_async("archived on hdfs").unwrap();
    let id = job.job_id().to_string();
    assert_eq!(job.wait().unwrap().status, JobStatus::Finished);

    let (storage, base) = sluice_hdfs_backend::resolve(&dir).unwrap();
    let path = format!("{base}/{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !storage.exists(&path).unwrap() {
        assert!(
            Instant::now() < deadline,
            "no archive {dir}/{id} after 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let archive: Value = serde_json::from_slice(&storage.read(&path).unwrap()).unwrap();
    let entries = archive["archive"].as_array().unwrap();
    let details: Value = entries
        .iter()
        .find(|e| e["path"] == format!("/jobs/{id}"))
        .map(|e| serde_json::from_str(e["json"].as_str().unwrap()).unwrap())
        .expect("the job's details");
    assert_eq!(details["state"], "FINISHED");
    assert_eq!(details["vertices"][1]["metrics"]["read-records"], 500);
    // Only the archive itself: the temporary file was renamed.
    let names: Vec<String> = storage
        .list(&base)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        names,
        std::slice::from_ref(&id),
        "only the archive, no temporary file"
    );

    // A second, local archive directory in the same comma-separated list.
    let local = tempfile::tempdir().unwrap();
    let other = "0123456789abcdef0123456789abcdef";
    let overview = json!({"jobs": [{"jid": other, "name": "local", "state": "FAILED",
        "start-time": 1, "end-time": 2, "duration": 1, "last-modification": 2}]});
    let local_archive = json!({"archive": [
        {"path": "/jobs/overview", "json": overview.to_string()},
        {"path": format!("/jobs/{other}"), "json": json!({"jid": other, "state": "FAILED"}).to_string()},
    ]});
    std::fs::write(local.path().join(other), local_archive.to_string()).unwrap();

    let o = vec![
        format!(
            "historyserver.archive.fs.dir={dir}, file://{}",
            local.path().display()
        ),
        "historyserver.archive.fs.refresh-interval=200 ms".to_string(),
        "historyserver.web.port=0".to_string(),
        "historyserver.web.address=127.0.0.1".to_string(),
    ];
    let config = sluice_core_config(&o);
    let hs = HistoryServer::start(config).unwrap();
    assert!(
        hs.wait_for_jobs(2, Duration::from_secs(60)),
        "both archives indexed"
    );
    let addr = hs.local_addr();
    let (status, body) = http_get(addr, "/v1/jobs/overview");
    assert_eq!(status, 200);
    let served: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = served["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str(), other], "newest first: {served}");
    let (status, body) = http_get(addr, &format!("/jobs/{id}"));
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), details);
    let (status, _) = http_get(addr, &format!("/jobs/{id}/no-such-document"));
    assert_eq!(status, 404);

    storage.delete(&base, true).unwrap();
}

fn sluice_core_config(overrides: &[String]) -> HistoryConfig {
    let config = sluice::Config::load(None, overrides).unwrap();
    HistoryConfig::from_config(&config).unwrap()
}
