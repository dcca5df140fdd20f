//! The downstream side of an operator: the next operator of the chain, an exchange to other
//! tasks, or several of those. Calls are per batch, so the virtual call is paid once per batch.

use crate::data::{Barrier, Batch, MIN_WATERMARK};
use sluice_core::Result;

pub trait Emit<T> {
    fn batch(&mut self, batch: Batch<T>) -> Result<()>;
    fn watermark(&mut self, watermark: i64) -> Result<()>;
    /// Called after every operator before this point snapshotted its state for the barrier.
    fn barrier(&mut self, barrier: Barrier) -> Result<()>;
    /// Fires due processing-time timers along the chain.
    fn processing_time(&mut self, now_ms: i64) -> Result<()>;
    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()>;
    /// Pushes buffered records downstream (the task calls it before it waits for input).
    fn flush(&mut self) -> Result<()>;
    /// No more input: operators emit what they still hold, then the end travels downstream.
    fn finish(&mut self) -> Result<()>;
    /// The stream became idle (`true`) or active again (`false`); see [`crate::Event::Idle`].
    /// Only ends of a chain (a sink's terminal) may drop it; every link passes it on.
    fn idle(&mut self, _idle: bool) -> Result<()> {
        Ok(())
    }
}

/// Where an operator puts its output records. Records inherit the timestamp of the input record
/// being processed unless given one explicitly.
pub struct Collector<T> {
    pub(crate) batch: Batch<T>,
    pub(crate) current_ts: Option<i64>,
    /// A watermark the operator generated, sent after the records collected before it.
    pub(crate) watermark: Option<i64>,
}

impl<T> Default for Collector<T> {
    fn default() -> Self {
        Collector {
            batch: Batch::default(),
            current_ts: None,
            watermark: None,
        }
    }
}

impl<T> Collector<T> {
    /// Emits a record with the timestamp of the record being processed.
    #[inline]
    pub fn collect(&mut self, record: T) {
        self.batch.push(record, self.current_ts);
    }

    /// Emits a record with an explicit event timestamp.
    #[inline]
    pub fn collect_with_timestamp(&mut self, record: T, ts: i64) {
        self.batch.push(record, Some(ts));
    }

    /// Sets the timestamp that [`Collector::collect`] attaches.
    #[inline]
    pub fn set_current_timestamp(&mut self, ts: Option<i64>) {
        self.current_ts = ts;
    }

    pub fn current_timestamp(&self) -> Option<i64> {
        self.current_ts
    }

    /// Emits a whole batch (its timestamps included) at once.
    pub fn collect_batch(&mut self, mut b: Batch<T>) {
        if self.batch.is_empty() {
            self.batch = b;
        } else if b.ts.is_empty() && self.batch.ts.is_empty() {
            self.batch.data.append(&mut b.data);
        } else {
            for (r, t) in b.into_iter_ts() {
                self.batch.push(r, t.or(Some(MIN_WATERMARK)));
            }
        }
    }

    /// Emits a watermark (operators that generate watermarks, such as timestamp assigners).
    pub fn emit_watermark(&mut self, watermark: i64) {
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    pub(crate) fn take(&mut self) -> Batch<T> {
        std::mem::take(&mut self.batch)
    }
}

/// The downstream of a sink: accepts control events, never records.
pub struct Terminal;

impl<T> Emit<T> for Terminal {
    fn batch(&mut self, _batch: Batch<T>) -> Result<()> {
        Ok(())
    }
    fn watermark(&mut self, _w: i64) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self, _b: Barrier) -> Result<()> {
        Ok(())
    }
    fn processing_time(&mut self, _now: i64) -> Result<()> {
        Ok(())
    }
    fn checkpoint_complete(&mut self, _id: u64) -> Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// One output feeding several consumers: each gets a copy of every batch.
pub struct Fanout<T> {
    pub outputs: Vec<Box<dyn Emit<T>>>,
}

impl<T: Clone> Emit<T> for Fanout<T> {
    fn batch(&mut self, batch: Batch<T>) -> Result<()> {
        let (last, rest) = self.outputs.split_last_mut().expect("fanout has outputs");
        for o in rest {
            o.batch(batch.clone())?;
        }
        last.batch(batch)
    }
    fn watermark(&mut self, w: i64) -> Result<()> {
        self.outputs.iter_mut().try_for_each(|o| o.watermark(w))
    }
    fn barrier(&mut self, b: Barrier) -> Result<()> {
        self.outputs.iter_mut().try_for_each(|o| o.barrier(b))
    }
    fn processing_time(&mut self, now: i64) -> Result<()> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.processing_time(now))
    }
    fn checkpoint_complete(&mut self, id: u64) -> Result<()> {
        self.outputs
            .iter_mut()
            .try_for_each(|o| o.checkpoint_complete(id))
    }
    fn flush(&mut self) -> Result<()> {
        self.outputs.iter_mut().try_for_each(|o| o.flush())
    }
    fn finish(&mut self) -> Result<()> {
        self.outputs.iter_mut().try_for_each(|o| o.finish())
    }
    fn idle(&mut self, idle: bool) -> Result<()> {
        self.outputs.iter_mut().try_for_each(|o| o.idle(idle))
    }
}
