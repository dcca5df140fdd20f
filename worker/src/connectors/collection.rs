//! A bounded source over an in-memory collection (non-parallel), replayable: its position is state.

use std::sync::Arc;

use crate::context::OperatorContext;
use crate::data::{Barrier, Data};
use crate::emit::Collector;
use crate::snapshot::{OperatorSnapshot, Redistribution};
use crate::source::{Source, SourcePoll};
use sluice_core::Result;

const POSITION: &str = "position";

pub struct CollectionSource<T> {
    items: Arc<Vec<T>>,
    next: usize,
}

impl<T> CollectionSource<T> {
    pub fn new(items: Arc<Vec<T>>) -> Self {
        CollectionSource { items, next: 0 }
    }
}

impl<T: Data> Source for CollectionSource<T> {
    type Out = T;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        if let Some(e) = ctx
            .restored
            .as_ref()
            .and_then(|r| r.operator_state(POSITION))
            && let Some(bytes) = e.items.first()
        {
            self.next = bincode::deserialize::<u64>(bytes)
                .map_err(|e| ctx.error(format!("bad position state: {e}")))?
                as usize;
        }
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Collector<T>,
        max: usize,
        _ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        let end = (self.next + max).min(self.items.len());
        for r in &self.items[self.next..end] {
            out.collect(r.clone());
        }
        self.next = end;
        Ok(if self.next >= self.items.len() {
            SourcePoll::Finished
        } else {
            SourcePoll::More
        })
    }

    fn snapshot_state(
        &mut self,
        _b: &Barrier,
        _ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        let pos = bincode::serialize(&(self.next as u64)).expect("u64 serialises");
        Ok(OperatorSnapshot::default().with_operator_state(
            POSITION,
            Redistribution::Union,
            vec![pos],
        ))
    }
}
