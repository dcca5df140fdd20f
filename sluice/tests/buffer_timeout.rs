//! `execution.buffer-timeout`: a task that never runs out of input still sends what it buffered
//! for a target within the timeout, instead of waiting until the buffer is full.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, unbounded};
use sluice::prelude::*;

mod source_support;
use source_support::Paced;

/// A record every 2 ms: a batch of 1024 takes two seconds to fill.
const BUSY_PAUSE: Duration = Duration::from_millis(2);

/// Runs the busy source into a task of its own (across a rebalance) that reports every record
/// it gets; returns when the first record arrived there, or `None` within `wait`.
fn first_arrival(config: &[(&str, &str)], wait: Duration) -> Option<Duration> {
    let env = StreamEnv::new();
    for (k, v) in config {
        env.set(k, v).unwrap();
    }
    let (tx, rx) = unbounded::<u64>();
    env.add_source("busy", || Paced::every(BUSY_PAUSE))
        .rebalance()
        .map(move |x: u64| {
            let _ = tx.send(x);
            x
        })
        .discard();
    let client = env.execute_async("buffer timeout").unwrap();
    let started = Instant::now();
    let first = wait_first(&rx, wait).map(|()| started.elapsed());
    client.cancel();
    let _ = client.wait();
    first
}

fn wait_first(rx: &Receiver<u64>, wait: Duration) -> Option<()> {
    rx.recv_timeout(wait).ok().map(|first| assert_eq!(first, 0))
}

#[test]
fn a_busy_tasks_records_go_out_within_the_buffer_timeout() {
    let first = first_arrival(
        &[("execution.buffer-timeout", "50 ms")],
        Duration::from_secs(1),
    );
    let first = first.expect("no record downstream within a second of a 50 ms buffer timeout");
    assert!(first < Duration::from_secs(1), "{first:?}");
}

#[test]
fn without_a_buffer_timeout_a_busy_task_sends_full_batches_only() {
    // The same job with the timeout disabled: nothing arrives before a batch is full (about
    // two seconds), which shows the timeout is what sent the records in the test above.
    let first = first_arrival(
        &[("execution.buffer-timeout.enabled", "false")],
        Duration::from_millis(1000),
    );
    assert_eq!(first, None, "records arrived before their batch was full");
}
