//! Keyed event-time windows (tumbling and sliding) with incremental aggregation. A window's
//! accumulator lives in keyed map state (key → window start → accumulator) and fires on an
//! event-time timer at `end - 1`, like Flink. Records whose every window has already fired are
//! late: dropped and counted in `late_records_dropped`.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::context::OperatorContext;
use crate::data::{Barrier, Batch, Data};
use crate::emit::Collector;
use crate::key::{Key, KeySelector};
use crate::operator::Operator;
use crate::snapshot::OperatorSnapshot;
use crate::state::{KeyedStateStore, MapState, TimerService};
use sluice_core::Result;

/// Which windows a timestamp belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowAssigner {
    Tumbling { size_ms: i64 },
    Sliding { size_ms: i64, slide_ms: i64 },
}

impl WindowAssigner {
    pub fn tumbling(size: Duration) -> Self {
        WindowAssigner::Tumbling {
            size_ms: size.as_millis() as i64,
        }
    }

    pub fn sliding(size: Duration, slide: Duration) -> Self {
        WindowAssigner::Sliding {
            size_ms: size.as_millis() as i64,
            slide_ms: slide.as_millis() as i64,
        }
    }

    pub fn size_ms(&self) -> i64 {
        match *self {
            WindowAssigner::Tumbling { size_ms } | WindowAssigner::Sliding { size_ms, .. } => {
                size_ms
            }
        }
    }

    /// Calls `f(start)` for every window containing `ts`.
    #[inline]
    pub fn for_each_window(&self, ts: i64, mut f: impl FnMut(i64)) {
        match *self {
            WindowAssigner::Tumbling { size_ms } => f(ts - ts.rem_euclid(size_ms)),
            WindowAssigner::Sliding { size_ms, slide_ms } => {
                let last = ts - ts.rem_euclid(slide_ms);
                let mut start = last;
                while start > ts - size_ms {
                    f(start);
                    start -= slide_ms;
                }
            }
        }
    }

    pub fn describe(&self) -> String {
        match *self {
            WindowAssigner::Tumbling { size_ms } => {
                format!("TumblingEventTimeWindows({size_ms} ms)")
            }
            WindowAssigner::Sliding { size_ms, slide_ms } => {
                format!("SlidingEventTimeWindows({size_ms} ms, {slide_ms} ms)")
            }
        }
    }
}

/// Incremental aggregation of a window's records (Flink's `AggregateFunction`).
pub trait AggregateFunction<In>: Clone + Send + Sync + 'static {
    type Acc: Data;
    type Out: Data;
    fn create_accumulator(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, value: &In);
    fn get_result(&self, acc: Self::Acc) -> Self::Out;
}

/// One fired window: its key, bounds (`[start, end)`) and aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Windowed<K, V> {
    pub key: K,
    pub start: i64,
    pub end: i64,
    pub value: V,
}

impl<K: fmt::Display, V: fmt::Display> fmt::Display for Windowed<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "({},{},{},{})",
            self.key, self.start, self.end, self.value
        )
    }
}

pub struct WindowOperator<T, S: KeySelector<T>, A: AggregateFunction<T>> {
    selector: S,
    assigner: WindowAssigner,
    agg: A,
    store: Option<KeyedStateStore>,
    windows: Option<MapState<S::Key, i64, A::Acc>>,
    timers: Option<TimerService<S::Key>>,
    _types: PhantomData<fn(T)>,
}

impl<T, S: KeySelector<T>, A: AggregateFunction<T>> WindowOperator<T, S, A> {
    pub fn new(selector: S, assigner: WindowAssigner, agg: A) -> Self {
        WindowOperator {
            selector,
            assigner,
            agg,
            store: None,
            windows: None,
            timers: None,
            _types: PhantomData,
        }
    }
}

impl<T: Data, S: KeySelector<T>, A: AggregateFunction<T>> Operator for WindowOperator<T, S, A>
where
    S::Key: Key,
{
    type In = T;
    type Out = Windowed<S::Key, A::Out>;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let mut store = KeyedStateStore::open(ctx)?;
        self.windows = Some(store.map("windows")?);
        self.timers = Some(store.timers("event-timers")?);
        self.store = Some(store);
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: Batch<T>,
        _out: &mut Collector<Self::Out>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let windows = self.windows.as_ref().expect("opened");
        let timers = self.timers.as_ref().expect("opened");
        let watermark = ctx.current_watermark;
        let size = self.assigner.size_ms();
        let mut late = 0u64;
        for (r, ts) in batch.into_iter_ts() {
            let Some(ts) = ts else {
                return Err(ctx.error(
                    "records have no event timestamp; call assign_timestamps_and_watermarks before an event-time window",
                ));
            };
            let key = self.selector.key_of(&r);
            let mut any = false;
            let mut result = Ok(());
            self.assigner.for_each_window(ts, |start| {
                if result.is_err() || start + size - 1 <= watermark {
                    return;
                }
                any = true;
                result = (|| {
                    let mut acc = match windows.get(&key, &start)? {
                        Some(a) => a,
                        None => {
                            timers.register(&key, start + size - 1)?;
                            self.agg.create_accumulator()
                        }
                    };
                    self.agg.add(&mut acc, &r);
                    windows.put(&key, start, acc)
                })();
            });
            result?;
            if !any {
                late += 1;
            }
        }
        if late > 0 {
            ctx.metrics
                .late_records_dropped
                .fetch_add(late, Ordering::Relaxed);
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: i64,
        out: &mut Collector<Self::Out>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let windows = self.windows.as_ref().expect("opened");
        let timers = self.timers.as_ref().expect("opened");
        let size = self.assigner.size_ms();
        while let Some((t, key)) = timers.pop_due(watermark)? {
            let start = t + 1 - size;
            if let Some(acc) = windows.get(&key, &start)? {
                windows.remove(&key, &start)?;
                let value = self.agg.get_result(acc);
                out.collect_with_timestamp(
                    Windowed {
                        key,
                        start,
                        end: start + size,
                        value,
                    },
                    t,
                );
            }
        }
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        b: &Barrier,
        _ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot {
            keyed: Some(self.store.as_ref().expect("opened").snapshot_at(b)?),
            operator_state: Vec::new(),
        })
    }
}

/// Counts the records of a window.
#[derive(Clone, Copy, Default)]
pub struct CountAggregate;

impl<T> AggregateFunction<T> for CountAggregate {
    type Acc = u64;
    type Out = u64;
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, acc: &mut u64, _v: &T) {
        *acc += 1;
    }
    fn get_result(&self, acc: u64) -> u64 {
        acc
    }
}

/// Sums a field of a window's records.
#[derive(Clone)]
pub struct SumAggregate<F>(pub F);

impl<T, N, F> AggregateFunction<T> for SumAggregate<F>
where
    N: Data + Default + std::ops::AddAssign,
    F: Fn(&T) -> N + Clone + Send + Sync + 'static,
{
    type Acc = N;
    type Out = N;
    fn create_accumulator(&self) -> N {
        N::default()
    }
    fn add(&self, acc: &mut N, v: &T) {
        *acc += (self.0)(v);
    }
    fn get_result(&self, acc: N) -> N {
        acc
    }
}

/// Reduces a window's records with a function (the window's output is the reduced record).
#[derive(Clone)]
pub struct ReduceAggregate<F>(pub F);

impl<T: Data, F> AggregateFunction<T> for ReduceAggregate<F>
where
    F: Fn(&T, &T) -> T + Clone + Send + Sync + 'static,
{
    type Acc = Option<T>;
    type Out = T;
    fn create_accumulator(&self) -> Option<T> {
        None
    }
    fn add(&self, acc: &mut Option<T>, v: &T) {
        *acc = Some(match acc.take() {
            None => v.clone(),
            Some(a) => (self.0)(&a, v),
        });
    }
    fn get_result(&self, acc: Option<T>) -> T {
        acc.expect("a fired window has at least one record")
    }
}
