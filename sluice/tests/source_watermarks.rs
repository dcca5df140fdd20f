//! Watermarks a source emits itself (`Collector::emit_watermark` in `poll_next`) travel
//! downstream after the records of the same poll: an event-time window fires while the
//! source is still running, not only at the final watermark when it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice::prelude::*;
use sluice::{OperatorContext, Result, Source, SourcePoll};

/// Emits `(key, ts)` records at ts 0..1000 and 1000..1100 with a watermark of 1500 in one
/// poll, then waits (idle) until `fired` is set or 20 s passed, and ends.
struct WatermarkingSource {
    emitted: bool,
    fired: Arc<AtomicBool>,
    started: Option<Instant>,
}

impl Source for WatermarkingSource {
    type Out = (String, i64);

    fn poll_next(
        &mut self,
        out: &mut Collector<(String, i64)>,
        _max: usize,
        _ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        let started = *self.started.get_or_insert_with(Instant::now);
        if !self.emitted {
            self.emitted = true;
            for ts in (0..1100).step_by(100) {
                out.collect_with_timestamp(("k".to_string(), ts), ts);
            }
            out.emit_watermark(1500);
            return Ok(SourcePoll::Idle(Duration::from_millis(10)));
        }
        if self.fired.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(20) {
            return Ok(SourcePoll::Finished);
        }
        Ok(SourcePoll::Idle(Duration::from_millis(10)))
    }
}

#[test]
fn a_window_fires_on_the_watermark_of_a_running_source() {
    let fired = Arc::new(AtomicBool::new(false));
    // Set by the window's output while the source runs: it ends as soon as it sees it.
    let fired_ = fired.clone();
    let source_fired = fired.clone();
    let env = StreamEnv::new();
    env.set_parallelism(1);
    let (out, _sink) = env
        .add_non_parallel_source("watermarking", move || WatermarkingSource {
            emitted: false,
            fired: source_fired.clone(),
            started: None,
        })
        .key_by(|r: &(String, i64)| r.0.clone())
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .count()
        .map(move |w: Windowed<String, u64>| {
            fired_.store(true, Ordering::SeqCst);
            (w.start, w.value)
        })
        .collect();
    let started = Instant::now();
    env.execute("source watermarks").unwrap();
    // Before the end, only the window [0, 1000) is complete (watermark 1500); the final
    // watermark then fires [1000, 2000).
    assert_eq!(out.get(), vec![(0, 10), (1000, 1)]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the window fired only when the source ended"
    );
}

/// Subtask 0 emits `(key, ts)` records at ts 0..1000 and 1000..1100 with a watermark of 1500;
/// subtask 1 emits nothing and says it is idle (a Kafka subtask without partitions) until
/// `fired` is set, then emits one record at ts 1200 and ends. Subtask 0 ends only once subtask
/// 1 has ended and its channel has had time to drain: ending earlier, its final watermark could
/// reach the window before subtask 1's return from idleness, and the window would rightly treat
/// the record at 1200 as late.
struct HalfIdleSource {
    subtask: usize,
    emitted: bool,
    fired: Arc<AtomicBool>,
    /// When subtask 1 ended.
    other_ended: Arc<std::sync::Mutex<Option<Instant>>>,
    started: Option<Instant>,
}

impl Source for HalfIdleSource {
    type Out = (String, i64);

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.subtask = ctx.subtask;
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Collector<(String, i64)>,
        _max: usize,
        _ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let fired = self.fired.load(Ordering::SeqCst);
        if !self.emitted && (self.subtask == 0 || fired) {
            self.emitted = true;
            if self.subtask == 0 {
                for ts in (0..1100).step_by(100) {
                    out.collect_with_timestamp(("k".to_string(), ts), ts);
                }
                out.emit_watermark(1500);
            } else {
                out.collect_with_timestamp(("k".to_string(), 1200), 1200);
            }
            return Ok(SourcePoll::Idle(Duration::from_millis(10)));
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Ok(SourcePoll::Finished);
        }
        if fired {
            let mut other_ended = self.other_ended.lock().unwrap();
            if self.subtask == 1 {
                *other_ended = Some(Instant::now());
                return Ok(SourcePoll::Finished);
            }
            if other_ended.is_some_and(|t| t.elapsed() > Duration::from_millis(300)) {
                return Ok(SourcePoll::Finished);
            }
        }
        Ok(SourcePoll::Idle(Duration::from_millis(10)))
    }

    fn is_idle(&self) -> bool {
        self.subtask == 1 && !self.fired.load(Ordering::SeqCst)
    }
}

#[test]
fn an_idle_source_subtask_does_not_hold_back_the_window() {
    let fired = Arc::new(AtomicBool::new(false));
    let fired_ = fired.clone();
    let source_fired = fired.clone();
    let other_ended = Arc::new(std::sync::Mutex::new(None));
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let (out, _sink) = env
        .add_source("half idle", move || HalfIdleSource {
            subtask: 0,
            emitted: false,
            fired: source_fired.clone(),
            other_ended: other_ended.clone(),
            started: None,
        })
        .key_by(|r: &(String, i64)| r.0.clone())
        .window(WindowAssigner::tumbling(Duration::from_secs(1)))
        .count()
        .map(move |w: Windowed<String, u64>| {
            fired_.store(true, Ordering::SeqCst);
            (w.start, w.value)
        })
        .collect();
    let started = Instant::now();
    env.execute("idle source subtask").unwrap();
    // Subtask 1 was idle, so the watermark 1500 of subtask 0 alone closed [0, 1000) while both
    // ran; then subtask 1 became active again with a record that still counts in [1000, 2000).
    let mut got = out.get();
    got.sort();
    assert_eq!(got, vec![(0, 10), (1000, 2)]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the idle subtask held the window back until the sources ended"
    );
}
