//! Keyed process functions: user code with keyed state (value, map, list) and event- and
//! processing-time timers, Flink's `KeyedProcessFunction`.

use std::cell::Cell;
use std::marker::PhantomData;
use std::rc::Rc;

use crate::context::{OperatorContext, now_ms};
use crate::data::{Barrier, Batch, Data};
use crate::emit::Collector;
use crate::key::{Key, KeySelector};
use crate::operator::Operator;
use crate::snapshot::OperatorSnapshot;
use crate::state::{KeyedStateStore, ListState, MapState, TimerService, ValueState};
use sluice_core::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// User logic per key. One instance per subtask, made by the factory given to the job on the
/// subtask's thread, so it may hold state handles (which are not `Send`).
pub trait KeyedProcessFunction<K: Key, I: Data, O: Data>: 'static {
    /// Register state here (`ctx.value_state("name")`), once per subtask.
    fn open(&mut self, _ctx: &mut ProcessContext<K>) -> Result<()> {
        Ok(())
    }

    fn process_element(
        &mut self,
        key: &K,
        value: I,
        ctx: &mut ProcessContext<K>,
        out: &mut Collector<O>,
    ) -> Result<()>;

    /// A timer registered for `key` fired. Outputs carry the timer's time as timestamp.
    fn on_timer(
        &mut self,
        _key: &K,
        _timestamp: i64,
        _domain: TimeDomain,
        _ctx: &mut ProcessContext<K>,
        _out: &mut Collector<O>,
    ) -> Result<()> {
        Ok(())
    }
}

/// State, timers and time, as seen by a keyed process function.
pub struct ProcessContext<K: Key> {
    store: KeyedStateStore,
    event_timers: TimerService<K>,
    processing_timers: TimerService<K>,
    wakeup: Rc<Cell<i64>>,
    watermark: i64,
    timestamp: Option<i64>,
}

impl<K: Key> ProcessContext<K> {
    pub fn value_state<V: Data>(&mut self, name: &str) -> Result<ValueState<K, V>> {
        self.store.value(name)
    }

    pub fn map_state<UK: Key, UV: Data>(&mut self, name: &str) -> Result<MapState<K, UK, UV>> {
        self.store.map(name)
    }

    pub fn list_state<V: Data>(&mut self, name: &str) -> Result<ListState<K, V>> {
        self.store.list(name)
    }

    /// The event timestamp of the record being processed (or of the firing timer).
    pub fn timestamp(&self) -> Option<i64> {
        self.timestamp
    }

    pub fn current_watermark(&self) -> i64 {
        self.watermark
    }

    pub fn current_processing_time(&self) -> i64 {
        now_ms()
    }

    pub fn register_event_time_timer(&mut self, key: &K, ts: i64) -> Result<()> {
        self.event_timers.register(key, ts)
    }

    pub fn delete_event_time_timer(&mut self, key: &K, ts: i64) -> Result<()> {
        self.event_timers.delete(key, ts)
    }

    pub fn register_processing_time_timer(&mut self, key: &K, ts: i64) -> Result<()> {
        self.processing_timers.register(key, ts)?;
        if ts < self.wakeup.get() {
            self.wakeup.set(ts);
        }
        Ok(())
    }

    pub fn delete_processing_time_timer(&mut self, key: &K, ts: i64) -> Result<()> {
        self.processing_timers.delete(key, ts)
    }
}

pub struct KeyedProcessOperator<I, O, S: KeySelector<I>, F> {
    selector: S,
    function: F,
    ctx: Option<ProcessContext<S::Key>>,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, S: KeySelector<I>, F> KeyedProcessOperator<I, O, S, F> {
    pub fn new(selector: S, function: F) -> Self {
        KeyedProcessOperator {
            selector,
            function,
            ctx: None,
            _types: PhantomData,
        }
    }
}

impl<I: Data, O: Data, S: KeySelector<I>, F: KeyedProcessFunction<S::Key, I, O>> Operator
    for KeyedProcessOperator<I, O, S, F>
{
    type In = I;
    type Out = O;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let mut store = KeyedStateStore::open(ctx)?;
        let event_timers = store.timers("event-timers")?;
        let processing_timers = store.timers("processing-timers")?;
        if let Some(t) = processing_timers.earliest() {
            ctx.request_wakeup(t);
        }
        let mut pctx = ProcessContext {
            store,
            event_timers,
            processing_timers,
            wakeup: ctx.next_processing_timer.clone(),
            watermark: ctx.current_watermark,
            timestamp: None,
        };
        self.function.open(&mut pctx)?;
        self.ctx = Some(pctx);
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: Batch<I>,
        out: &mut Collector<O>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let pctx = self.ctx.as_mut().expect("opened");
        for (r, ts) in batch.into_iter_ts() {
            let key = self.selector.key_of(&r);
            pctx.timestamp = ts;
            out.set_current_timestamp(ts);
            self.function.process_element(&key, r, pctx, out)?;
        }
        Ok(())
    }

    fn on_watermark(
        &mut self,
        watermark: i64,
        out: &mut Collector<O>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let pctx = self.ctx.as_mut().expect("opened");
        pctx.watermark = watermark;
        while let Some((ts, key)) = pctx.event_timers.pop_due(watermark)? {
            pctx.timestamp = Some(ts);
            out.set_current_timestamp(Some(ts));
            self.function
                .on_timer(&key, ts, TimeDomain::EventTime, pctx, out)?;
        }
        Ok(())
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        out: &mut Collector<O>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let pctx = self.ctx.as_mut().expect("opened");
        while let Some((ts, key)) = pctx.processing_timers.pop_due(now_ms)? {
            pctx.timestamp = None;
            out.set_current_timestamp(None);
            self.function
                .on_timer(&key, ts, TimeDomain::ProcessingTime, pctx, out)?;
        }
        if let Some(t) = pctx.processing_timers.earliest() {
            ctx.request_wakeup(t);
        }
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        b: &Barrier,
        _ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot {
            keyed: Some(self.ctx.as_ref().expect("opened").store.snapshot_at(b)?),
            operator_state: Vec::new(),
        })
    }
}
