//! Rolling keyed aggregations (reduce, sum, min, max, count): one value per key, updated and
//! emitted per record, like Flink's keyed `reduce`/`sum`.

use std::marker::PhantomData;

use crate::context::OperatorContext;
use crate::data::Barrier;
use crate::data::{Batch, Data};
use crate::emit::Collector;
use crate::key::KeySelector;
use crate::operator::Operator;
use crate::snapshot::OperatorSnapshot;
use crate::state::{KeyedStateStore, ValueState};
use sluice_core::Result;

/// For each record: `lift` it to an accumulator value, `merge` that into the key's stored value,
/// and emit `emit(record, merged)`.
pub struct KeyedMerge<T, S: KeySelector<T>, V, O, L, M, E> {
    selector: S,
    lift: L,
    merge: M,
    emit: E,
    store: Option<KeyedStateStore>,
    state: Option<ValueState<S::Key, V>>,
    _types: PhantomData<fn(T) -> O>,
}

impl<T, S: KeySelector<T>, V, O, L, M, E> KeyedMerge<T, S, V, O, L, M, E> {
    pub fn new(selector: S, lift: L, merge: M, emit: E) -> Self {
        KeyedMerge {
            selector,
            lift,
            merge,
            emit,
            store: None,
            state: None,
            _types: PhantomData,
        }
    }
}

impl<T, S, V, O, L, M, E> Operator for KeyedMerge<T, S, V, O, L, M, E>
where
    T: Data,
    S: KeySelector<T>,
    V: Data,
    O: Data,
    L: Fn(&T) -> V + 'static,
    M: Fn(&mut V, V) + 'static,
    E: Fn(T, V) -> O + 'static,
{
    type In = T;
    type Out = O;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        let mut store = KeyedStateStore::open(ctx)?;
        self.state = Some(store.value("value")?);
        self.store = Some(store);
        Ok(())
    }

    #[inline]
    fn process_batch(
        &mut self,
        batch: Batch<T>,
        out: &mut Collector<O>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let state = self.state.as_ref().expect("opened");
        state.prefetch(&batch.data, &self.selector)?;
        let has_ts = batch.has_timestamps();
        let mut ts = batch.ts.into_iter();
        out.batch.data.reserve(batch.data.len());
        for r in batch.data {
            let v = (self.lift)(&r);
            let merged = self
                .selector
                .with_key(&r, |k| state.merge(k, v, &self.merge))?;
            let o = (self.emit)(r, merged);
            if has_ts {
                out.collect_with_timestamp(o, ts.next().unwrap_or(crate::MIN_WATERMARK));
            } else {
                out.batch.data.push(o);
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
