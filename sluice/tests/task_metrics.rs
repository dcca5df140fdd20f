//! What the tasks measure about their own flow, as the REST API and the Prometheus endpoint
//! report it: backpressure (time blocked on a full output channel) and barrier alignment.
//!
//! All tests of this binary share the process's one REST server (`rest.port = 0`).

use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::prelude::*;
use sluice::{Batch, JobClient, Operator, OperatorContext};

mod source_support;
use source_support::Paced;

/// Passes records on, taking about two milliseconds per batch.
struct Slow;

impl Operator for Slow {
    type In = u64;
    type Out = u64;

    fn process_batch(
        &mut self,
        batch: Batch<u64>,
        out: &mut Collector<u64>,
        _ctx: &mut OperatorContext,
    ) -> sluice::Result<()> {
        std::thread::sleep(Duration::from_millis(2));
        out.collect_batch(batch);
        Ok(())
    }
}

/// The slow source's pause before each record: a checkpoint's trigger waits for
/// the poll in progress, so its barrier leaves up to that long after the other sources'. (Not a
/// divisor of the checkpoint interval, which would lock the triggers to the polls' phase.)
const TRICKLE_PAUSE: Duration = Duration::from_millis(23);

fn get(path: &str) -> Value {
    let url = format!(
        "{}{path}",
        sluice::rest::running().expect("REST server running").url()
    );
    let resp = reqwest::blocking::get(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    resp.json().unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn vertex<'a>(job: &'a Value, uid: &str) -> &'a Value {
    job["vertices"]
        .as_array()
        .expect("vertices")
        .iter()
        .find(|v| v["id"] == uid)
        .unwrap_or_else(|| panic!("no vertex {uid} in {job}"))
}

fn cancel(client: JobClient) {
    client.cancel();
    let r = client.wait().unwrap();
    assert_eq!(r.status, sluice::JobStatus::Canceled);
}

#[test]
fn a_slow_consumer_shows_as_backpressure_on_its_producer_only() {
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.generate(None, None, |i| i)
        .uid("fast")
        .rebalance()
        .uid("spread")
        .transform("Slow", || Slow)
        .uid("slow")
        .discard();
    let client = env.execute_async("backpressure metrics").unwrap();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let job = get(&format!("/jobs/{}", client.job_id()));
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let blocked = |uid: &str| {
        vertex(&job, uid)["metrics"]["accumulated-backpressured-time"]
            .as_u64()
            .unwrap_or_else(|| panic!("accumulated-backpressured-time of {uid}: {job}"))
    };
    // The generator can only go as fast as `slow` takes its batches: it spends nearly all
    // of its time waiting for room in the channel.
    let fast = blocked("fast");
    let slow = blocked("slow");
    eprintln!("backpressured: fast {fast} ms, slow {slow} ms, in {elapsed_ms} ms");
    assert!(
        fast * 2 > elapsed_ms,
        "the producer was backpressured {fast} ms of {elapsed_ms} ms"
    );
    // `slow` itself never waits: its chain ends in a sink.
    assert!(
        slow * 20 < elapsed_ms,
        "the slow consumer reports {slow} ms backpressure of {elapsed_ms} ms"
    );

    let text = reqwest::blocking::get(format!(
        "{}/metrics",
        sluice::rest::running().unwrap().url()
    ))
    .unwrap()
    .text()
    .unwrap();
    let scraped: f64 = text
        .lines()
        .find(|l| {
            l.starts_with("sluice_operator_accumulatedBackpressuredTimeMs{")
                && l.contains(&format!("job_id=\"{}\"", client.job_id()))
                && l.contains("operator_id=\"fast\"")
        })
        .unwrap_or_else(|| panic!("no backpressure metric of `fast` in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(scraped >= fast as f64, "{scraped} < {fast}");
    cancel(client);
}

#[test]
fn checkpoints_report_how_long_their_barriers_were_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set("rest.port", "0").unwrap();
    env.set("execution.checkpointing.interval", "100 ms")
        .unwrap();
    env.set("state.checkpoints.dir", dir.path().to_str().unwrap())
        .unwrap();
    // A fast input and one that sleeps between records: the barrier of the slow one arrives
    // later, so the union task waits for it with the fast input blocked.
    let fast = env.generate(None, Some(2_000.0), |i| i).uid("steady");
    let slow = env
        .add_source("Trickle", || Paced::every(TRICKLE_PAUSE))
        .uid("trickle");
    fast.union(&[slow])
        .uid("union")
        .key_by_field(|x: &u64| x)
        .reduce(|a, b| a + b)
        .uid("sum")
        .discard();
    let client = env.execute_async("alignment metrics").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let completed = loop {
        let cps = get(&format!("/jobs/{}/checkpoints", client.job_id()));
        let done: Vec<Value> = cps["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "COMPLETED")
            .cloned()
            .collect();
        if done.len() >= 8 {
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "no 8 completed checkpoints: {cps}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let alignments: Vec<u64> = completed
        .iter()
        .map(|c| {
            c["alignment_duration"]
                .as_u64()
                .unwrap_or_else(|| panic!("a completed checkpoint without alignment: {c}"))
        })
        .collect();
    eprintln!("alignment of completed checkpoints (ms): {alignments:?}");
    // The trickling source's barrier leaves up to 23 ms late: with 8 checkpoints, the chance
    // that every one of them left within the same millisecond is negligible.
    assert!(
        alignments.iter().any(|&a| a > 0),
        "every checkpoint reports 0 ms alignment: {alignments:?}"
    );
    // Alignment is part of the checkpoint: it cannot exceed the checkpoint's duration.
    for c in &completed {
        assert!(
            c["alignment_duration"].as_u64() <= c["end_to_end_duration"].as_u64(),
            "{c}"
        );
    }
    cancel(client);
}
