//! Stateless record-at-a-time transformations, each a tight loop over a batch.

use std::marker::PhantomData;

use crate::context::OperatorContext;
use crate::data::{Batch, Data};
use crate::emit::Collector;
use crate::operator::Operator;
use sluice_core::Result;

pub struct Map<I, O, F> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, F> Map<I, O, F> {
    pub fn new(f: F) -> Self {
        Map {
            f,
            _types: PhantomData,
        }
    }
}

impl<I: Data, O: Data, F: FnMut(I) -> O + 'static> Operator for Map<I, O, F> {
    type In = I;
    type Out = O;

    #[inline]
    fn process_batch(
        &mut self,
        batch: Batch<I>,
        out: &mut Collector<O>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let data: Vec<O> = batch.data.into_iter().map(&mut self.f).collect();
        out.collect_batch(Batch { data, ts: batch.ts });
        Ok(())
    }
}

pub struct Filter<T, F> {
    f: F,
    _types: PhantomData<fn(T)>,
}

impl<T, F> Filter<T, F> {
    pub fn new(f: F) -> Self {
        Filter {
            f,
            _types: PhantomData,
        }
    }
}

impl<T: Data, F: FnMut(&T) -> bool + 'static> Operator for Filter<T, F> {
    type In = T;
    type Out = T;

    #[inline]
    fn process_batch(
        &mut self,
        mut batch: Batch<T>,
        out: &mut Collector<T>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        if batch.ts.is_empty() {
            batch.data.retain(|r| (self.f)(r));
            out.collect_batch(batch);
        } else {
            for (r, t) in batch.into_iter_ts() {
                if (self.f)(&r) {
                    out.collect_with_timestamp(r, t.unwrap_or(crate::MIN_WATERMARK));
                }
            }
        }
        Ok(())
    }
}

/// Flink-style flat map: the function emits zero or more records per input into a collector;
/// outputs inherit the input's timestamp.
pub struct FlatMap<I, O, F> {
    f: F,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O, F> FlatMap<I, O, F> {
    pub fn new(f: F) -> Self {
        FlatMap {
            f,
            _types: PhantomData,
        }
    }
}

impl<I: Data, O: Data, F: FnMut(I, &mut Collector<O>) -> Result<()> + 'static> Operator
    for FlatMap<I, O, F>
{
    type In = I;
    type Out = O;

    #[inline]
    fn process_batch(
        &mut self,
        batch: Batch<I>,
        out: &mut Collector<O>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        if batch.ts.is_empty() {
            out.set_current_timestamp(None);
            for r in batch.data {
                (self.f)(r, out)?;
            }
        } else {
            for (r, t) in batch.into_iter_ts() {
                out.set_current_timestamp(t);
                (self.f)(r, out)?;
            }
        }
        Ok(())
    }
}

/// Passes records through unchanged; the head of a union or a rebalance.
pub struct Identity<T>(PhantomData<fn(T)>);

impl<T> Default for Identity<T> {
    fn default() -> Self {
        Identity(PhantomData)
    }
}

impl<T: Data> Operator for Identity<T> {
    type In = T;
    type Out = T;

    #[inline]
    fn process_batch(
        &mut self,
        batch: Batch<T>,
        out: &mut Collector<T>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        out.collect_batch(batch);
        Ok(())
    }
}
