//! Two-phase commit for exactly-once sinks, as reusable hooks plus the bookkeeping around them.
//!
//! A sink implements [`TwoPhaseCommitSink`]: it writes records somewhere invisible (in-progress
//! files, an open transaction), *pre-commits* at every checkpoint barrier (flushes, makes the
//! written data durable, and hands back committables that describe how to publish it) and later
//! *commits* a committable (publishes it). [`TwoPhaseCommitOperator`] turns such a sink into an
//! [`Operator`] and does the rest:
//!
//! - at a barrier it asks for the checkpoint's committables and keeps every committable not yet
//!   committed as operator state, so a checkpoint holds what it covers but did not publish;
//! - when checkpoint `n` completes it commits, in order, every committable of checkpoints `<= n`;
//! - on restore it commits the restored committables again: their checkpoint completed (that is
//!   why it is restored from), but its notification may have been lost to a crash. `commit`
//!   must therefore be idempotent. Then it lets the sink abort what earlier attempts wrote and
//!   no checkpoint covers ([`TwoPhaseCommitSink::abort_leftovers`]);
//! - at end of input it commits everything. With checkpointing, end of input comes only after
//!   the final checkpoint (`TaskEnv::final_checkpoint`) completed, so there is nothing left
//!   that it does not cover.
//!
//! The committables are union state: after a restore, at any parallelism, every subtask sees all
//! of them, so cleanup knows every file it must keep, and each is committed by exactly one
//! subtask, `subtask that wrote it % new parallelism`, so no two subtasks publish the same one.
//!
//! Without checkpointing the operator is a thin wrapper: the sink is told so in `open` and
//! publishes as it likes (at most once per record, without failure recovery).
//!
//! With `execution.checkpointing.checkpoints-after-tasks-finish: false` the sources end at
//! once, so a failure of another subtask *after* a sink subtask finished restarts from a
//! checkpoint taken before and replays records the finished sink already published (Flink's
//! behaviour before final checkpoints, FLIP-147).

use serde::{Deserialize, Serialize};

use crate::context::OperatorContext;
use crate::data::{Barrier, Batch, Data};
use crate::emit::Collector;
use crate::operator::Operator;
use crate::snapshot::{OperatorSnapshot, Redistribution};
use sluice_core::Result;

/// The operator-state name under which the pending committables are kept.
pub const COMMITTABLES: &str = "two-phase-commit/committables";

/// The hooks of a sink with two-phase commit. All calls come from the subtask's thread.
pub trait TwoPhaseCommitSink: 'static {
    type In: Data;
    /// What publishing needs, kept in checkpoints: it must stay valid across process restarts.
    type Committable: Data + std::fmt::Debug;

    /// Called once before anything else. `exactly_once` is false without checkpointing: then
    /// the sink publishes on its own (and `pre_commit`, `commit` of pending work, and
    /// `abort_leftovers` are not called, except at end of input).
    fn open(&mut self, ctx: &mut OperatorContext, exactly_once: bool) -> Result<()>;

    /// Writes records, not yet visible when `exactly_once`.
    fn write(&mut self, batch: Batch<Self::In>, ctx: &mut OperatorContext) -> Result<()>;

    /// Wall-clock wake-up the sink asked for through `ctx.request_wakeup`.
    fn on_processing_time(&mut self, _now_ms: i64, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }

    /// Barrier of `checkpoint_id`: make everything written so far durable and return what
    /// publishes it. Nothing written before this call may be left out.
    fn pre_commit(
        &mut self,
        checkpoint_id: u64,
        ctx: &mut OperatorContext,
    ) -> Result<Vec<Self::Committable>>;

    /// Publishes `committable`. Idempotent: after a restore it is called again for committables
    /// that may already be published.
    fn commit(&mut self, committable: &Self::Committable, ctx: &mut OperatorContext) -> Result<()>;

    /// After a restore (or a restart without a completed checkpoint, `restored` empty): discard
    /// what earlier attempts wrote that is not in `restored` (the committables of *all* subtasks
    /// of the checkpoint restored from; other subtasks may be committing them concurrently).
    fn abort_leftovers(
        &mut self,
        _restored: &[Self::Committable],
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        Ok(())
    }

    /// End of input: flush and return what remains to publish; it is committed at once.
    fn finish(&mut self, ctx: &mut OperatorContext) -> Result<Vec<Self::Committable>>;

    /// Normal end, cancellation or failure: release resources. Must not publish anything;
    /// may discard written data no committable covers yet.
    fn close(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        Ok(())
    }
}

/// A committable with the checkpoint that pre-committed it and the subtask that wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending<C> {
    checkpoint: u64,
    subtask: usize,
    committable: C,
}

/// Runs a [`TwoPhaseCommitSink`] as a sink operator (see the module documentation).
pub struct TwoPhaseCommitOperator<S: TwoPhaseCommitSink> {
    sink: S,
    exactly_once: bool,
    subtask: usize,
    /// Pre-committed, not yet committed, in checkpoint order.
    pending: Vec<Pending<S::Committable>>,
}

impl<S: TwoPhaseCommitSink> TwoPhaseCommitOperator<S> {
    pub fn for_sink(sink: S) -> Self {
        TwoPhaseCommitOperator {
            sink,
            exactly_once: false,
            subtask: 0,
            pending: Vec::new(),
        }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Commits the pending committables `due` selects, in order; on an error the uncommitted
    /// rest stays pending.
    fn commit_pending(
        &mut self,
        ctx: &mut OperatorContext,
        due: impl Fn(&Pending<S::Committable>) -> bool,
    ) -> Result<()> {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| due(p));
        self.pending = later;
        let mut now = now.into_iter();
        while let Some(p) = now.next() {
            if let Err(e) = self.sink.commit(&p.committable, ctx) {
                let mut rest = vec![p];
                rest.extend(now);
                rest.append(&mut self.pending);
                self.pending = rest;
                return Err(e);
            }
        }
        Ok(())
    }
}

impl<S: TwoPhaseCommitSink> Operator for TwoPhaseCommitOperator<S> {
    type In = S::In;
    type Out = ();

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.exactly_once = ctx.config.checkpoint_interval.is_some();
        self.subtask = ctx.subtask;
        self.sink.open(ctx, self.exactly_once)?;
        if !self.exactly_once {
            return Ok(());
        }
        let mut restored: Vec<Pending<S::Committable>> = Vec::new();
        if let Some(e) = ctx
            .restored
            .as_ref()
            .and_then(|r| r.operator_state(COMMITTABLES))
        {
            for item in &e.items {
                let p = bincode::deserialize(item)
                    .map_err(|e| ctx.error(format!("bad two-phase commit state: {e}")))?;
                restored.push(p);
            }
        }
        // The checkpoint restored from completed: publish what it pre-committed (again).
        let parallelism = ctx.parallelism.max(1);
        for p in &restored {
            if p.subtask % parallelism == ctx.subtask {
                self.sink.commit(&p.committable, ctx)?;
            }
        }
        let all: Vec<S::Committable> = restored.into_iter().map(|p| p.committable).collect();
        self.sink.abort_leftovers(&all, ctx)
    }

    fn process_batch(
        &mut self,
        batch: Batch<S::In>,
        _out: &mut Collector<()>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        self.sink.write(batch, ctx)
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        _out: &mut Collector<()>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        self.sink.on_processing_time(now_ms, ctx)
    }

    fn snapshot_state(
        &mut self,
        barrier: &Barrier,
        ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        if !self.exactly_once {
            return Ok(OperatorSnapshot::default());
        }
        let checkpoint = barrier.checkpoint_id;
        for committable in self.sink.pre_commit(checkpoint, ctx)? {
            self.pending.push(Pending {
                checkpoint,
                subtask: self.subtask,
                committable,
            });
        }
        let mut items = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            items.push(
                bincode::serialize(p)
                    .map_err(|e| ctx.error(format!("cannot serialise a committable: {e}")))?,
            );
        }
        Ok(OperatorSnapshot::default().with_operator_state(
            COMMITTABLES,
            Redistribution::Union,
            items,
        ))
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint_id: u64,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        if !self.exactly_once {
            return Ok(());
        }
        self.commit_pending(ctx, |p| p.checkpoint <= checkpoint_id)
    }

    fn end_input(&mut self, _out: &mut Collector<()>, ctx: &mut OperatorContext) -> Result<()> {
        // The input is complete: publish everything, as a final checkpoint would.
        self.commit_pending(ctx, |_| true)?;
        for c in self.sink.finish(ctx)? {
            self.sink.commit(&c, ctx)?;
        }
        Ok(())
    }

    fn close(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.sink.close(ctx)
    }
}
