//! The source trait: a task's head that produces records instead of receiving them.

use std::time::Duration;

use crate::context::OperatorContext;
use crate::data::{Barrier, Batch, Data};
use crate::emit::{Collector, Emit};
use crate::snapshot::OperatorSnapshot;
use sluice_core::Result;

/// What a poll of a source produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourcePoll {
    /// Records may be available right away; poll again.
    More,
    /// Nothing to read now; poll again after at most this long.
    Idle(Duration),
    /// The source is exhausted (bounded input); the task ends after a final max watermark.
    Finished,
}

pub trait Source: 'static {
    type Out: Data;

    /// Called once on the task's thread; restore the read position from `ctx.restored`.
    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Emit up to `max_records` records into `out`, and a watermark with
    /// [`Collector::emit_watermark`] when the source tracks event time itself; the watermark
    /// follows the poll's records downstream.
    fn poll_next(
        &mut self,
        out: &mut Collector<Self::Out>,
        max_records: usize,
        ctx: &mut OperatorContext,
    ) -> Result<SourcePoll>;

    /// Whether the source has nothing to read for a while (for Kafka: every partition it reads
    /// is idle, or it has none). Asked after every poll; while it says so the task marks its
    /// output idle, so downstream operators leave this subtask out of their watermark (Flink's
    /// `WatermarkStatus.IDLE`); records or a watermark make the output active again.
    fn is_idle(&self) -> bool {
        false
    }

    /// The read position as of now (called between polls, so it matches what was emitted).
    fn snapshot_state(
        &mut self,
        _barrier: &Barrier,
        _ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }

    fn notify_checkpoint_complete(
        &mut self,
        _checkpoint_id: u64,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        Ok(())
    }

    fn close(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }
}

/// The watermark a source emitted ([`Collector::emit_watermark`]) and not yet handed on.
type Pending = std::rc::Rc<std::cell::Cell<Option<i64>>>;

/// Wraps a source and its downstream so that the watermarks the source emits reach the
/// downstream after the records of the same poll. The task loop hands on only the records of
/// a poll; the wrapped source parks the poll's watermark and the wrapped downstream sends it
/// after the poll's batch, or when the loop flushes (it does before it sleeps or checkpoints).
pub fn forward_source_watermarks<S: Source>(
    source: S,
    downstream: Box<dyn Emit<S::Out>>,
) -> (WatermarkingSource<S>, Box<dyn Emit<S::Out>>) {
    let pending = Pending::default();
    let forwarder = WatermarkForwarder {
        next: downstream,
        pending: pending.clone(),
    };
    (
        WatermarkingSource {
            inner: source,
            pending,
        },
        Box::new(forwarder),
    )
}

/// A source whose emitted watermarks are parked for [`WatermarkForwarder`].
pub struct WatermarkingSource<S> {
    inner: S,
    pending: Pending,
}

impl<S: Source> Source for WatermarkingSource<S> {
    type Out = S::Out;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.inner.open(ctx)
    }

    fn poll_next(
        &mut self,
        out: &mut Collector<Self::Out>,
        max_records: usize,
        ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        let poll = self.inner.poll_next(out, max_records, ctx)?;
        if let Some(w) = out.watermark.take() {
            self.pending
                .set(Some(self.pending.get().map_or(w, |p| p.max(w))));
        }
        Ok(poll)
    }

    fn is_idle(&self) -> bool {
        self.inner.is_idle()
    }

    fn snapshot_state(
        &mut self,
        barrier: &Barrier,
        ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        self.inner.snapshot_state(barrier, ctx)
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint_id: u64,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        self.inner.notify_checkpoint_complete(checkpoint_id, ctx)
    }

    fn close(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.inner.close(ctx)
    }
}

/// The downstream of a [`WatermarkingSource`]: sends its parked watermark after each batch.
struct WatermarkForwarder<T> {
    next: Box<dyn Emit<T>>,
    pending: Pending,
}

impl<T> WatermarkForwarder<T> {
    fn send_pending(&mut self) -> Result<()> {
        match self.pending.take() {
            Some(w) => self.next.watermark(w),
            None => Ok(()),
        }
    }
}

impl<T> Emit<T> for WatermarkForwarder<T> {
    fn batch(&mut self, batch: Batch<T>) -> Result<()> {
        self.next.batch(batch)?;
        self.send_pending()
    }
    fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.send_pending()?;
        self.next.watermark(watermark)
    }
    fn barrier(&mut self, barrier: Barrier) -> Result<()> {
        self.send_pending()?;
        self.next.barrier(barrier)
    }
    fn processing_time(&mut self, now_ms: i64) -> Result<()> {
        self.next.processing_time(now_ms)
    }
    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.next.checkpoint_complete(checkpoint_id)
    }
    fn flush(&mut self) -> Result<()> {
        self.send_pending()?;
        self.next.flush()
    }
    fn finish(&mut self) -> Result<()> {
        self.send_pending()?;
        self.next.finish()
    }
    fn idle(&mut self, idle: bool) -> Result<()> {
        self.send_pending()?;
        self.next.idle(idle)
    }
}
