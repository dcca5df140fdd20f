//! The HistoryServer's footprint with 1,000 archived jobs: a real archive (of a job that took
//! checkpoints, then was cancelled) is copied under 1,000 new job ids, the
//! `sluice-historyserver` binary indexes them, and the test prints its resident memory (from
//! `/proc/<pid>/status`), the time to index, and the time to serve `/jobs/overview`.
//!
//!   cargo test --release -p sluice-historyserver --test memory -- --nocapture

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{get_json, get_raw, job_id, put_archive};
use sluice::JobStatus;
use sluice::prelude::*;

const JOBS: usize = 1000;

/// (VmRSS, VmHWM) of `pid` in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The archive of a real job: keyed sums with checkpoints every 20 ms, cancelled after 10.
fn real_archive(dir: &std::path::Path) -> (String, Vec<u8>) {
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    let url = format!("file://{}", dir.join("src").display());
    env.set("jobmanager.archive.fs.dir", &url).unwrap();
    env.set("execution.checkpointing.interval", "20 ms")
        .unwrap();
    let ckpt = dir.join("ckpt");
    env.set("state.checkpoints.dir", ckpt.to_str().unwrap())
        .unwrap();
    env.generate(None, Some(5000.0), |i| (i % 7, i))
        .uid("numbers")
        .key_by_field(|r: &(u64, u64)| &r.0)
        .sum()
        .uid("sums")
        .map(|r: (u64, u64)| r.1)
        .uid("values")
        .discard();
    let job = env.execute_async("memory-probe").unwrap();
    let id = job.job_id().to_string();
    for _ in 0..10 {
        assert!(job.wait_for_checkpoint(Duration::from_secs(20)).is_some());
    }
    job.cancel();
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
    let file = dir.join("src").join(&id);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(Instant::now() < deadline, "no archive {}", file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    (id, std::fs::read(&file).unwrap())
}

#[test]
fn memory_and_overview_latency_with_1000_archived_jobs() {
    let root = tempfile::tempdir().unwrap();
    let (id, archive) = real_archive(root.path());
    let text = String::from_utf8(archive.clone()).unwrap();
    let dir = root.path().join("archive");
    for n in 0..JOBS {
        let new_id = job_id(n as u64);
        put_archive(&dir, &new_id, text.replace(&id, &new_id).as_bytes());
    }
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-historyserver"))
        .args([
            "-D",
            &format!("historyserver.archive.fs.dir=file://{}", dir.display()),
        ])
        .args([
            "-D",
            "historyserver.web.port=0",
            "-D",
            "historyserver.web.address=127.0.0.1",
        ])
        .args([
            "-D",
            &format!(
                "historyserver.web.tmpdir={}",
                root.path().join("cache").display()
            ),
        ])
        .args(["-D", "historyserver.archive.fs.refresh-interval=200 ms"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines
            .next()
            .expect("the HistoryServer printed its address")
            .unwrap();
        if let Some(rest) = line.split("serving archived jobs at http://").nth(1) {
            break rest.split(',').next().unwrap().parse().unwrap();
        }
    };
    // Keep reading its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = get_json(addr, "/jobs/overview")["jobs"]
            .as_array()
            .unwrap()
            .len();
        if n == JOBS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} of {JOBS} jobs indexed after 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let indexed_in = started.elapsed();
    let (rss, hwm) = rss_kib(pid);
    let rounds = 50;
    let t = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        let (status, body) = get_raw(addr, "/jobs/overview");
        assert_eq!(status, 200);
        bytes = body.len();
    }
    let per_overview = t.elapsed() / rounds;
    let t = Instant::now();
    for n in 0..rounds {
        let path = format!("/jobs/{}/checkpoints", job_id(n as u64 * 7));
        assert_eq!(get_raw(addr, &path).0, 200, "{path}");
    }
    let per_document = t.elapsed() / rounds;
    let (rss_after, _) = rss_kib(pid);
    println!(
        "historyserver with {JOBS} archived jobs (archive {} bytes each): RSS {:.1} MiB \
         (peak {:.1} MiB, {:.1} MiB after {rounds}+{rounds} requests); indexed in {indexed_in:?}; \
         GET /jobs/overview ({bytes} bytes) {per_overview:?}; GET /jobs/<id>/checkpoints {per_document:?}",
        archive.len(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The index holds only the overview entries: far below what 1,000 parsed archives take.
    assert!(rss < 64 * 1024, "RSS {rss} KiB with {JOBS} jobs");
    assert!(
        per_overview < Duration::from_millis(500),
        "{per_overview:?}"
    );
}
