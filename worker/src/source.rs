//! The source trait: a task's head that produces records instead of receiving them.

use std::time::Duration;

use crate::context::OperatorContext;
use crate::data::{Barrier, Data};
use crate::emit::Collector;
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

    /// Emit up to `max_records` records into `out`.
    fn poll_next(
        &mut self,
        out: &mut Collector<Self::Out>,
        max_records: usize,
        ctx: &mut OperatorContext,
    ) -> Result<SourcePoll>;

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
