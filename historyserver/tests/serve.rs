//! The HistoryServer against `file://` archive directories: it serves what archives hold under
//! Flink's paths, picks up new archives, keeps at most `retained-jobs`, links logs, and never
//! serves anything outside its cache (path traversal is a 404).

mod common;

use std::time::Duration;

use common::{get_json, get_raw, job_id, put_archive, synthetic_archive};
use sluice_core::Config;
use sluice_historyserver::{HistoryConfig, HistoryServer};

fn start(dir: &std::path::Path, cache: &std::path::Path, extra: &[&str]) -> HistoryServer {
    let mut o = vec![
        format!("historyserver.archive.fs.dir=file://{}", dir.display()),
        "historyserver.archive.fs.refresh-interval=100 ms".to_string(),
        "historyserver.web.port=0".to_string(),
        "historyserver.web.address=127.0.0.1".to_string(),
        format!("historyserver.web.tmpdir={}", cache.display()),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    let config = HistoryConfig::from_config(&Config::load(None, &o).unwrap()).unwrap();
    HistoryServer::start(config).unwrap()
}

#[test]
fn serves_archived_documents_and_picks_up_new_archives() {
    let root = tempfile::tempdir().unwrap();
    let (dir, cache) = (root.path().join("archive"), root.path().join("cache"));
    let (a, b) = (job_id(1), job_id(2));
    put_archive(&dir, &a, &synthetic_archive(&a, 1_000_000, "FINISHED"));
    // Not archives: a temporary file being written and a file that is not JSON.
    std::fs::write(dir.join(format!(".{b}.inprogress")), b"{").unwrap();
    std::fs::write(dir.join("garbage"), b"not json").unwrap();
    let hs = start(
        &dir,
        &cache,
        &[
            "historyserver.log.jobmanager.url-pattern=http://nm:8042/logs/<jobid>/jobmanager",
            "historyserver.log.taskmanager.url-pattern=http://nm:8042/logs/<jobid>/<tmid>",
        ],
    );
    assert!(hs.wait_for_jobs(1, Duration::from_secs(10)));
    let addr = hs.local_addr();

    let overview = get_json(addr, "/jobs/overview");
    let jobs = overview["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{overview}");
    assert_eq!(jobs[0]["jid"], a.as_str());
    assert_eq!(jobs[0]["state"], "FINISHED");
    let details = get_json(addr, &format!("/v1/jobs/{a}"));
    assert_eq!(details["jid"], a.as_str());
    assert_eq!(
        get_json(addr, &format!("/jobs/{a}/checkpoints"))["counts"]["completed"],
        3
    );
    assert_eq!(get_json(addr, "/overview")["jobs-finished"], 1);
    assert_eq!(get_json(addr, "/config")["features"]["web-history"], true);
    assert_eq!(
        get_json(addr, &format!("/jobs/{a}/jobmanager/log-url"))["url"],
        format!("http://nm:8042/logs/{a}/jobmanager")
    );
    assert_eq!(
        get_json(addr, &format!("/v1/jobs/{a}/taskmanagers/worker-1/log-url"))["url"],
        format!("http://nm:8042/logs/{a}/worker-1")
    );

    // Unknown jobs and paths: Flink's 404.
    for path in [
        format!("/jobs/{b}"),
        format!("/jobs/{a}/vertices/x"),
        "/jobs/nope/checkpoints".to_string(),
        "/v1/nothing".to_string(),
    ] {
        let (status, body) = get_raw(addr, &path);
        assert_eq!(status, 404, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["errors"][0].as_str().unwrap().contains("Not found"),
            "{body}"
        );
    }
    // Writes are refused.
    let client = reqwest::blocking::Client::new();
    let r = client
        .patch(format!("http://{addr}/jobs/{a}?mode=cancel"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // A new archive appears within a refresh interval or two.
    put_archive(&dir, &b, &synthetic_archive(&b, 2_000_000, "CANCELED"));
    assert!(hs.wait_for_jobs(2, Duration::from_secs(10)));
    let overview = get_json(addr, "/v1/jobs/overview");
    let ids: Vec<&str> = overview["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b.as_str(), a.as_str()], "newest first");
    assert_eq!(get_json(addr, &format!("/jobs/{b}"))["state"], "CANCELED");
    // The dashboard is served for non-API paths.
    let (status, body) = get_raw(addr, "/");
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");
}

#[test]
fn path_traversal_is_a_404_and_archives_cannot_escape_the_cache() {
    let root = tempfile::tempdir().unwrap();
    let (dir, cache) = (root.path().join("archive"), root.path().join("cache"));
    let a = job_id(7);
    put_archive(&dir, &a, &synthetic_archive(&a, 1_000_000, "FAILED"));
    // Files next to the cache, under names a traversal would reach.
    std::fs::write(root.path().join("secret.json"), b"{\"secret\":1}").unwrap();
    std::fs::write(
        cache.parent().unwrap().join("escaped.json"),
        b"{\"secret\":2}",
    )
    .unwrap();
    let hs = start(&dir, &cache, &[]);
    assert!(hs.wait_for_jobs(1, Duration::from_secs(10)));
    let addr = hs.local_addr();
    let abs = root.path().join("secret").display().to_string();
    for path in [
        format!("/jobs/{a}/../../../secret"),
        format!("/jobs/{a}/../../secret"),
        "/jobs/../secret".to_string(),
        "/jobs/%2e%2e/%2e%2e/secret".to_string(),
        format!("/jobs/{a}/%2e%2e%2f%2e%2e%2fsecret"),
        format!("/v1/jobs/{a}/..%2F..%2F..%2Fsecret"),
        format!("/jobs/{a}/../../../escaped"),
        format!("/jobs/{a}/escaped"),
        format!("/jobs/{abs}"),
        format!("/jobs/{a}/{abs}"),
        format!("//{abs}"),
        "/../../../../etc/passwd".to_string(),
        "/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/jobs/..".to_string(),
        format!("/jobs/{a}/."),
        format!("/jobs/{a}.json"),
    ] {
        let (status, body) = get_raw(addr, &path);
        assert_eq!(status, 404, "{path}: {body}");
        // Flink's error document (which names the path), never a file's content.
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["errors"][0].is_string(), "{path}: {body}");
        assert!(
            !body.contains("\"secret\":") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
    // The hostile archive entry was not written anywhere.
    assert!(!cache.join("escaped.json").exists());
    assert!(!root.path().join("escaped").exists());
    let found: Vec<_> = walk(root.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("escaped") && !p.ends_with("escaped.json"))
        .collect();
    assert!(found.is_empty(), "{found:?}");
    // The legitimate document is still there.
    assert_eq!(get_json(addr, &format!("/jobs/{a}"))["state"], "FAILED");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn keeps_only_the_newest_retained_jobs() {
    let root = tempfile::tempdir().unwrap();
    let (dir, cache) = (root.path().join("archive"), root.path().join("cache"));
    for n in 0..5u64 {
        let id = job_id(100 + n);
        put_archive(
            &dir,
            &id,
            &synthetic_archive(&id, 1_000_000 + n as i64, "FINISHED"),
        );
    }
    let hs = start(&dir, &cache, &["historyserver.archive.retained-jobs=2"]);
    let addr = hs.local_addr();
    // Retention applies at the end of each poll.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hs.cache().refreshes() < 1 {
        assert!(std::time::Instant::now() < deadline, "no poll completed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let ids: Vec<String> = get_json(addr, "/jobs/overview")["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [job_id(104), job_id(103)]);
    // The dropped jobs are gone from the cache and stay gone after more polls.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(hs.cache().len(), 2);
    let (status, _) = get_raw(addr, &format!("/jobs/{}", job_id(100)));
    assert_eq!(status, 404);
    assert!(
        !cache
            .join("jobs")
            .join(format!("{}.json", job_id(100)))
            .exists()
    );
    assert!(
        cache
            .join("jobs")
            .join(format!("{}.json", job_id(104)))
            .exists()
    );
    // Their archives are deleted from the archive directory, as Flink does.
    assert!(!dir.join(job_id(100)).exists());
    assert!(!dir.join(job_id(102)).exists());
    assert!(dir.join(job_id(103)).exists());
    // A newer archive pushes out the oldest retained one.
    let newest = job_id(200);
    put_archive(
        &dir,
        &newest,
        &synthetic_archive(&newest, 9_000_000, "FINISHED"),
    );
    let polls = hs.cache().refreshes();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !(hs.cache().contains(&newest) && hs.cache().refreshes() > polls) {
        assert!(
            std::time::Instant::now() < deadline,
            "{newest} not picked up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ids: Vec<String> = get_json(addr, "/jobs/overview")["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, [newest, job_id(104)]);
}
