//! `GET /metrics` of the REST API: Prometheus text format 0.0.4 that parses line by line, and
//! numbers that move (records, checkpoint size and duration, restarts after failures).
//!
//! All tests of this binary share the process's one REST server (`rest.port = 0`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice::JobStatus;
use sluice::prelude::*;

/// Samples by `name{labels}`, after checking every line against the text format: `# HELP` and
/// `# TYPE` (once per name, before its samples), or `name{k="v",...} value`.
fn scrape() -> BTreeMap<String, f64> {
    let url = format!(
        "{}/metrics",
        sluice::rest::running().expect("REST server").url()
    );
    let resp = reqwest::blocking::get(&url).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().unwrap();
    let mut samples = BTreeMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "counter" | "gauge"), "{line}");
            assert!(typed.insert(name.to_string()), "TYPE twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.starts_with("sluice_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        let labels = &series[name.len()..];
        if !labels.is_empty() {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
            let inner = inner.unwrap_or_else(|| panic!("labels of {line}"));
            for pair in inner.split("\",") {
                let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(!v.trim_end_matches('"').contains('"'), "{line}");
            }
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

/// The value of `name` for job `id` (any other labels).
fn job_value(samples: &BTreeMap<String, f64>, name: &str, id: &str, extra: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(k, _)| {
            k.starts_with(&format!("{name}{{"))
                && k.contains(&format!("job_id=\"{id}\""))
                && k.contains(extra)
        })
        .map(|(_, v)| *v)
}

#[test]
fn metrics_parse_and_move() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.set("execution.checkpointing.interval", "50 ms")
        .unwrap();
    env.set("state.checkpoints.dir", dir.path().to_str().unwrap())
        .unwrap();
    env.generate(None, Some(2000.0), |i| (i % 7, i))
        .uid("numbers")
        .key_by_field(|r: &(u64, u64)| &r.0)
        .sum()
        .uid("sums")
        .discard();
    let job = env.execute_async("scraped").unwrap();
    let id = job.job_id().to_string();
    assert!(job.wait_for_checkpoint(Duration::from_secs(20)).is_some());
    let first = scrape();
    assert!(
        first["sluice_jobmanager_numRunningJobs"] >= 1.0,
        "{first:?}"
    );
    assert!(first["sluice_process_rss_bytes"] > 1e6);
    let size = job_value(&first, "sluice_job_lastCheckpointSize", &id, "").unwrap();
    assert!(size > 0.0, "checkpoint size {size}");
    assert!(job_value(&first, "sluice_job_lastCheckpointDuration", &id, "").is_some());
    let completed = job_value(&first, "sluice_job_numberOfCompletedCheckpoints", &id, "").unwrap();
    assert!(completed >= 1.0);
    assert_eq!(
        job_value(&first, "sluice_job_numRestarts", &id, ""),
        Some(0.0)
    );
    let records = |s: &BTreeMap<String, f64>| {
        job_value(
            s,
            "sluice_operator_numRecordsIn",
            &id,
            "operator_id=\"sums\"",
        )
        .unwrap()
    };
    let before = records(&first);
    std::thread::sleep(Duration::from_millis(300));
    job.wait_for_checkpoint(Duration::from_secs(20));
    let second = scrape();
    assert!(
        records(&second) > before,
        "records in move: {before} → {}",
        records(&second)
    );
    assert!(
        job_value(&second, "sluice_job_numberOfCompletedCheckpoints", &id, "").unwrap() > completed
    );
    assert!(
        second["sluice_process_cpu_seconds_total"] >= first["sluice_process_cpu_seconds_total"]
    );
    job.cancel();
    assert_eq!(job.wait().unwrap().status, JobStatus::Canceled);
    assert_eq!(
        job_value(&scrape(), "sluice_job_status", &id, "status=\"CANCELED\""),
        Some(1.0)
    );
}

#[test]
fn restarts_are_counted() {
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.set("restart-strategy.type", "fixed-delay").unwrap();
    env.set("restart-strategy.fixed-delay.attempts", "3")
        .unwrap();
    env.set("restart-strategy.fixed-delay.delay", "100 ms")
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
    let client = env.execute_async("restarting").unwrap();
    let id = client.job_id().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    // While it runs the count grows; after three restarts the fourth failure is final.
    let mut seen = Vec::new();
    while !client.is_finished() && Instant::now() < deadline {
        if let Some(v) = job_value(&scrape(), "sluice_job_numRestarts", &id, "") {
            seen.push(v);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(client.wait().is_err(), "the job fails in the end");
    let last = scrape();
    assert_eq!(
        job_value(&last, "sluice_job_numRestarts", &id, ""),
        Some(3.0),
        "{seen:?}"
    );
    assert_eq!(
        job_value(&last, "sluice_job_status", &id, "status=\"FAILED\""),
        Some(1.0)
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "never decreases: {seen:?}"
    );
}
