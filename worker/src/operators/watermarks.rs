//! Event time: assigns each record a timestamp and generates bounded-out-of-orderness
//! watermarks (`max timestamp seen - bound - 1`), emitted after each batch when they advance.

use std::marker::PhantomData;
use std::time::Duration;

use crate::context::OperatorContext;
use crate::data::{Batch, Data, MIN_WATERMARK};
use crate::emit::Collector;
use crate::operator::Operator;
use sluice_core::Result;

pub struct BoundedOutOfOrderness<T, F> {
    extract: F,
    bound_ms: i64,
    max_ts: i64,
    emitted: i64,
    _types: PhantomData<fn(T)>,
}

impl<T, F> BoundedOutOfOrderness<T, F> {
    pub fn new(bound: Duration, extract: F) -> Self {
        BoundedOutOfOrderness {
            extract,
            bound_ms: bound.as_millis() as i64,
            max_ts: MIN_WATERMARK,
            emitted: MIN_WATERMARK,
            _types: PhantomData,
        }
    }
}

impl<T: Data, F: Fn(&T) -> i64 + 'static> Operator for BoundedOutOfOrderness<T, F> {
    type In = T;
    type Out = T;

    fn process_batch(
        &mut self,
        batch: Batch<T>,
        out: &mut Collector<T>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let mut ts = Vec::with_capacity(batch.len());
        for r in &batch.data {
            let t = (self.extract)(r);
            self.max_ts = self.max_ts.max(t);
            ts.push(t);
        }
        out.collect_batch(Batch {
            data: batch.data,
            ts,
        });
        if self.max_ts != MIN_WATERMARK {
            let wm = self.max_ts.saturating_sub(self.bound_ms).saturating_sub(1);
            if wm > self.emitted {
                self.emitted = wm;
                out.emit_watermark(wm);
            }
        }
        Ok(())
    }

    fn forwards_watermarks(&self) -> bool {
        false
    }
}
