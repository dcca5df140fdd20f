//! Backpressure: a fast unbounded source feeding a slow sink is slowed down to the sink's pace.
//! The exchanges are bounded, so memory stays flat and the records in flight between the two
//! never exceed what the channels and the writers' buffers hold.
//!
//! This file holds a single test: it measures the resident memory of the whole test process.

use std::time::Instant;

use sluice::prelude::*;
use sluice::{Batch, Operator, OperatorContext};
use sluice_worker::exchange::{BATCH_SIZE, CHANNEL_CAPACITY};

/// A sink that takes about a millisecond per batch.
struct SlowSink;

impl Operator for SlowSink {
    type In = Vec<u8>;
    type Out = ();

    fn process_batch(
        &mut self,
        batch: Batch<Vec<u8>>,
        _out: &mut Collector<()>,
        _ctx: &mut OperatorContext,
    ) -> sluice::Result<()> {
        assert!(batch.data.iter().all(|r| r.len() == 100));
        std::thread::sleep(Duration::from_millis(1));
        Ok(())
    }
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kb: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in kB");
    kb * 1024
}

#[test]
fn a_slow_sink_slows_an_unbounded_source_without_memory_growth() {
    const SOURCES: usize = 2;
    const SINKS: usize = 2;
    let env = StreamEnv::new();
    env.generate(None, None, |i| vec![i as u8; 100])
        .uid("gen")
        .set_parallelism(SOURCES)
        .rebalance()
        .uid("rebalance")
        .set_parallelism(SINKS)
        .add_sink("Slow", || SlowSink)
        .uid("slow-sink")
        .set_parallelism(SINKS);
    let client = env.execute_async("backpressure").unwrap();

    // Records between the generator's output counter and the sink's input counter: in the
    // channels (producers × consumers, CHANNEL_CAPACITY batches each), in each writer's
    // per-target buffers (just under a batch each), one batch per producer blocked in a send
    // and one source poll (a batch) per producer counted before it is handed on; plus one
    // batch per producer of slack, as the two counters are not read at the same instant.
    let channels = SOURCES * SINKS;
    let bound = (channels * CHANNEL_CAPACITY * BATCH_SIZE
        + channels * BATCH_SIZE
        + 3 * SOURCES * BATCH_SIZE) as u64;

    let started = Instant::now();
    let warm_up = Duration::from_millis(500);
    let mut baseline: Option<u64> = None;
    let mut peak_growth = 0u64;
    let mut max_in_flight = 0u64;
    let mut samples = 0;
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !client.is_finished(),
            "the job ended early: {:?}",
            client.wait()
        );
        let m = client.metrics();
        let emitted = m.get("gen").map(|m| m.records_out).unwrap_or(0);
        let received = m.get("slow-sink").map(|m| m.records_in).unwrap_or(0);
        let in_flight = emitted.saturating_sub(received);
        max_in_flight = max_in_flight.max(in_flight);
        assert!(
            in_flight <= bound,
            "{in_flight} records in flight (emitted {emitted}, received {received}), bound {bound}"
        );
        let rss = rss_bytes();
        if started.elapsed() >= warm_up {
            let base = *baseline.get_or_insert(rss);
            peak_growth = peak_growth.max(rss.saturating_sub(base));
            samples += 1;
        }
    }
    let m = client.metrics();
    let received = m["slow-sink"].records_in;
    client.cancel();
    let r = client.wait().unwrap();
    assert_eq!(r.status, sluice::JobStatus::Canceled);

    assert!(samples >= 10, "only {samples} memory samples");
    assert!(received > 0, "the sink received nothing");
    assert!(
        peak_growth < 64 << 20,
        "memory grew by {} MiB after warm-up (max in flight {max_in_flight})",
        peak_growth >> 20
    );
}
