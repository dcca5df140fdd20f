//! Event time: watermarks, tumbling and sliding windows, late records, keyed process functions
//! with state and timers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice::prelude::*;
use sluice::{ListState, MapState, ValueState};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Ev {
    key: String,
    ts: i64,
    v: u64,
}

fn ev(key: &str, ts: i64, v: u64) -> Ev {
    Ev {
        key: key.into(),
        ts,
        v,
    }
}

/// Emits one record per poll, so the watermark generated after each batch follows each record
/// (as with Flink's periodic watermarks on a slow source): lateness is deterministic.
struct OneByOne<T> {
    items: Vec<T>,
    next: usize,
}

impl<T: sluice::Data> sluice::Source for OneByOne<T> {
    type Out = T;
    fn poll_next(
        &mut self,
        out: &mut Collector<T>,
        _max: usize,
        _ctx: &mut sluice::OperatorContext,
    ) -> sluice::Result<sluice::SourcePoll> {
        if let Some(r) = self.items.get(self.next) {
            out.collect(r.clone());
            self.next += 1;
        }
        Ok(if self.next < self.items.len() {
            sluice::SourcePoll::More
        } else {
            sluice::SourcePoll::Finished
        })
    }
}

fn one_by_one<T: sluice::Data>(env: &StreamEnv, items: Vec<T>) -> DataStream<T> {
    env.add_non_parallel_source("OneByOne", move || OneByOne {
        items: items.clone(),
        next: 0,
    })
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

#[test]
fn tumbling_windows_fire_exactly_and_drop_late_records() {
    for backend in ["hashmap", "rocksdb"] {
        let env = StreamEnv::new();
        env.set("state.backend.type", backend).unwrap();
        env.set_parallelism(2);
        // Bound 1 s. The record at ts 500 after ts 12_000 is late (window [0,10s) fired at wm 10_999).
        let events = vec![
            ev("a", 1000, 1),
            ev("b", 2000, 2),
            ev("a", 9999, 3),
            ev("a", 10_000, 4),
            ev("a", 8000, 5), // out of order but within bound: counts in window 0
            ev("b", 12_000, 6),
            ev("a", 500, 7), // late
            ev("b", 25_000, 8),
        ];
        let src = one_by_one(&env, events);
        let (sums, _) = src
            .assign_timestamps_and_watermarks(Duration::from_millis(1000), |e: &Ev| e.ts)
            .set_parallelism(1) // chained to the source: one watermark per record
            .key_by_field(|e: &Ev| &e.key)
            .window(WindowAssigner::tumbling(Duration::from_secs(10)))
            .sum(|e: &Ev| e.v)
            .uid("sums")
            .collect();
        let r = env.execute("tumbling").unwrap();
        let got: Vec<(String, i64, i64, u64)> = sums
            .get()
            .into_iter()
            .map(|w| (w.key, w.start, w.end, w.value))
            .collect();
        assert_eq!(
            sorted(got),
            sorted(vec![
                ("a".to_string(), 0, 10_000, 1 + 3 + 5),
                ("b".to_string(), 0, 10_000, 2),
                ("a".to_string(), 10_000, 20_000, 4),
                ("b".to_string(), 10_000, 20_000, 6),
                ("b".to_string(), 20_000, 30_000, 8),
            ]),
            "{backend}"
        );
        assert_eq!(r.late_records_dropped(), 1, "{backend}");
        assert_eq!(r.metrics("sums").unwrap().late_records_dropped, 1);
    }
}

#[test]
fn sliding_windows_count_each_record_in_every_window() {
    let env = StreamEnv::new();
    let events: Vec<Ev> = (0..20).map(|i| ev("k", i * 1000, 1)).collect();
    let (counts, _) = env
        .from_collection(events)
        .assign_timestamps_and_watermarks(Duration::ZERO, |e: &Ev| e.ts)
        .key_by_field(|e: &Ev| &e.key)
        .window(WindowAssigner::sliding(
            Duration::from_secs(10),
            Duration::from_secs(5),
        ))
        .count()
        .collect();
    env.execute("sliding").unwrap();
    let got: BTreeMap<i64, u64> = counts
        .get()
        .into_iter()
        .map(|w| (w.start, w.value))
        .collect();
    // Windows of 10 s every 5 s over timestamps 0..19 s.
    let expected: BTreeMap<i64, u64> = [(-5000, 5), (0, 10), (5000, 10), (10_000, 10), (15_000, 5)]
        .into_iter()
        .collect();
    assert_eq!(got, expected);
}

/// Emits, per key, the sum of values seen when an event-time timer 5 s after the first
/// record fires; keeps a map of distinct values and a list of all values.
struct SessionSum {
    sum: Option<ValueState<String, u64>>,
    distinct: Option<MapState<String, u64, u32>>,
    all: Option<ListState<String, u64>>,
}

impl KeyedProcessFunction<String, Ev, (String, u64, usize, usize)> for SessionSum {
    fn open(&mut self, ctx: &mut ProcessContext<String>) -> sluice::Result<()> {
        self.sum = Some(ctx.value_state("sum")?);
        self.distinct = Some(ctx.map_state("distinct")?);
        self.all = Some(ctx.list_state("all")?);
        Ok(())
    }

    fn process_element(
        &mut self,
        key: &String,
        e: Ev,
        ctx: &mut ProcessContext<String>,
        _out: &mut Collector<(String, u64, usize, usize)>,
    ) -> sluice::Result<()> {
        let sum = self.sum.as_ref().unwrap();
        if sum.get(key)?.is_none() {
            ctx.register_event_time_timer(key, ctx.timestamp().unwrap() + 5000)?;
        }
        sum.merge(key, e.v, |a, b| *a += b)?;
        let d = self.distinct.as_ref().unwrap();
        let seen = d.get(key, &e.v)?.unwrap_or(0);
        d.put(key, e.v, seen + 1)?;
        self.all.as_ref().unwrap().add(key, e.v)?;
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: &String,
        ts: i64,
        domain: TimeDomain,
        _ctx: &mut ProcessContext<String>,
        out: &mut Collector<(String, u64, usize, usize)>,
    ) -> sluice::Result<()> {
        assert_eq!(domain, TimeDomain::EventTime);
        let sum = self.sum.as_ref().unwrap();
        let total = sum.get(key)?.unwrap_or(0);
        let distinct = self.distinct.as_ref().unwrap().entries(key)?.len();
        let all = self.all.as_ref().unwrap().get(key)?.len();
        out.collect_with_timestamp((key.clone(), total, distinct, all), ts);
        sum.remove(key)?;
        self.distinct.as_ref().unwrap().clear(key)?;
        self.all.as_ref().unwrap().clear(key)?;
        Ok(())
    }
}

#[test]
fn keyed_process_function_with_state_and_event_timers() {
    for backend in ["hashmap", "rocksdb"] {
        let env = StreamEnv::new();
        env.set("state.backend.type", backend).unwrap();
        env.set_parallelism(3);
        let events = vec![
            ev("x", 0, 1),
            ev("y", 100, 10),
            ev("x", 1000, 1),
            ev("x", 4000, 2),
            ev("y", 4900, 10),
            ev("x", 6000, 5), // arrives before watermark 5999 fires x's timer at 5000: still in it
            ev("y", 20_000, 1),
        ];
        let (out, _) = one_by_one(&env, events)
            .assign_timestamps_and_watermarks(Duration::ZERO, |e: &Ev| e.ts)
            .set_parallelism(1)
            .key_by_field(|e: &Ev| &e.key)
            .process(|| SessionSum {
                sum: None,
                distinct: None,
                all: None,
            })
            .collect();
        env.execute("process").unwrap();
        assert_eq!(
            sorted(out.get()),
            sorted(vec![
                ("x".to_string(), 9, 3, 4),
                ("y".to_string(), 20, 1, 2),
                ("y".to_string(), 1, 1, 1),
            ]),
            "{backend}"
        );
    }
}

#[derive(Clone)]
struct Heartbeat;

impl KeyedProcessFunction<u64, u64, (u64, String)> for Heartbeat {
    fn process_element(
        &mut self,
        key: &u64,
        _v: u64,
        ctx: &mut ProcessContext<u64>,
        out: &mut Collector<(u64, String)>,
    ) -> sluice::Result<()> {
        out.collect((*key, "seen".to_string()));
        let at = ctx.current_processing_time() + 50;
        ctx.register_processing_time_timer(key, at)
    }

    fn on_timer(
        &mut self,
        key: &u64,
        _ts: i64,
        domain: TimeDomain,
        _ctx: &mut ProcessContext<u64>,
        out: &mut Collector<(u64, String)>,
    ) -> sluice::Result<()> {
        assert_eq!(domain, TimeDomain::ProcessingTime);
        out.collect((*key, "timer".to_string()));
        Ok(())
    }
}

#[test]
fn processing_time_timers_fire_while_input_is_idle() {
    let env = StreamEnv::new();
    // A slow source keeps the job alive long enough for the timers (50 ms) to fire.
    let src = env.generate(Some(4), Some(10.0), |i| i);
    let (out, _) = src.key_by(|x: &u64| *x).process(|| Heartbeat).collect();
    env.execute("proc-time").unwrap();
    let got = sorted(out.get());
    let timers = got.iter().filter(|(_, s)| *s == "timer").count();
    assert_eq!(got.iter().filter(|(_, s)| *s == "seen").count(), 4);
    // Every key but possibly the last (the job may end before its timer) fired its timer.
    assert!(timers >= 3, "{got:?}");
}
