//! The operator trait (one required method: process a batch; default hooks for watermarks,
//! timers, checkpoints and end of input) and the chain link that drives it.

use std::sync::atomic::Ordering;

use crate::context::OperatorContext;
use crate::data::{Barrier, Batch, Data};
use crate::emit::{Collector, Emit};
use crate::snapshot::OperatorSnapshot;
use sluice_core::Result;

pub trait Operator: 'static {
    type In: Data;
    type Out: Data;

    /// Called once before the first record, on the task's thread; restore state from
    /// `ctx.restored` and register state here.
    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: Batch<Self::In>,
        out: &mut Collector<Self::Out>,
        ctx: &mut OperatorContext,
    ) -> Result<()>;

    /// The event-time clock advanced to `watermark` (the chain forwards it afterwards).
    fn on_watermark(
        &mut self,
        _watermark: i64,
        _out: &mut Collector<Self::Out>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        Ok(())
    }

    /// Whether watermarks from upstream pass through this operator. Operators that generate
    /// their own (timestamp assigners) return false; the final max watermark always passes.
    fn forwards_watermarks(&self) -> bool {
        true
    }

    /// Wall-clock time reached `now_ms`; fire due processing-time timers.
    fn on_processing_time(
        &mut self,
        _now_ms: i64,
        _out: &mut Collector<Self::Out>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        Ok(())
    }

    /// Synchronous part of a checkpoint: capture state as of the barrier. Keep it cheap.
    fn snapshot_state(
        &mut self,
        _barrier: &Barrier,
        _ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        Ok(OperatorSnapshot::default())
    }

    /// Checkpoint `checkpoint_id` is complete everywhere: commit side effects (two-phase sinks).
    fn notify_checkpoint_complete(
        &mut self,
        _checkpoint_id: u64,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        Ok(())
    }

    /// All input has arrived; emit what is still buffered.
    fn end_input(
        &mut self,
        _out: &mut Collector<Self::Out>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        Ok(())
    }

    /// Release resources; called on normal end and on cancellation.
    fn close(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }
}

/// One link of a chain: an operator, its context, its output buffer and what follows it.
pub struct OperatorNode<Op: Operator> {
    op: Op,
    ctx: OperatorContext,
    out: Collector<Op::Out>,
    next: Box<dyn Emit<Op::Out>>,
    closed: bool,
}

impl<Op: Operator> OperatorNode<Op> {
    pub fn open(
        mut op: Op,
        mut ctx: OperatorContext,
        next: Box<dyn Emit<Op::Out>>,
    ) -> Result<Self> {
        op.open(&mut ctx)?;
        ctx.restored = None;
        Ok(OperatorNode {
            op,
            ctx,
            out: Collector::default(),
            next,
            closed: false,
        })
    }

    #[inline]
    fn push_out(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            let b = self.out.take();
            self.ctx
                .metrics
                .records_out
                .fetch_add(b.len() as u64, Ordering::Relaxed);
            self.next.batch(b)?;
        }
        if let Some(w) = self.out.watermark.take() {
            self.next.watermark(w)?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        if !self.closed {
            self.closed = true;
            self.op.close(&mut self.ctx)?;
        }
        Ok(())
    }
}

impl<Op: Operator> Drop for OperatorNode<Op> {
    fn drop(&mut self) {
        // Cancellation or failure: release resources; errors here have nowhere to go.
        let _ignored = self.close();
    }
}

impl<Op: Operator> Emit<Op::In> for OperatorNode<Op> {
    #[inline]
    fn batch(&mut self, batch: Batch<Op::In>) -> Result<()> {
        self.ctx
            .metrics
            .records_in
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // A user function's error names the operator that raised it.
        let processed = self.op.process_batch(batch, &mut self.out, &mut self.ctx);
        processed.map_err(|e| match e {
            sluice_core::SluiceError::Job(message) => self.ctx.error(message),
            e => e,
        })?;
        self.push_out()
    }

    fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.ctx.current_watermark = watermark;
        self.out.set_current_timestamp(None);
        self.op
            .on_watermark(watermark, &mut self.out, &mut self.ctx)?;
        self.push_out()?;
        if watermark == crate::MAX_WATERMARK || self.op.forwards_watermarks() {
            self.next.watermark(watermark)?;
        }
        Ok(())
    }

    fn barrier(&mut self, barrier: Barrier) -> Result<()> {
        // Output produced before the barrier belongs before it downstream.
        self.push_out()?;
        let snap = self.op.snapshot_state(&barrier, &mut self.ctx)?;
        self.ctx
            .snapshots
            .borrow_mut()
            .push((self.ctx.uid.clone(), snap));
        self.next.barrier(barrier)
    }

    fn processing_time(&mut self, now_ms: i64) -> Result<()> {
        self.op
            .on_processing_time(now_ms, &mut self.out, &mut self.ctx)?;
        self.push_out()?;
        self.next.processing_time(now_ms)
    }

    fn checkpoint_complete(&mut self, checkpoint_id: u64) -> Result<()> {
        self.op
            .notify_checkpoint_complete(checkpoint_id, &mut self.ctx)?;
        self.next.checkpoint_complete(checkpoint_id)
    }

    fn flush(&mut self) -> Result<()> {
        self.push_out()?;
        self.next.flush()
    }

    fn finish(&mut self) -> Result<()> {
        self.op.end_input(&mut self.out, &mut self.ctx)?;
        self.push_out()?;
        self.next.finish()?;
        self.close()
    }

    fn idle(&mut self, idle: bool) -> Result<()> {
        // Output already produced goes before the status, as it would before a watermark.
        self.push_out()?;
        self.next.idle(idle)
    }
}
