//! A sink that keeps records in memory, for tests and small results of the embedded cluster.
//!
//! Without checkpointing, records are visible as they arrive. With checkpointing it is
//! exactly-once, a two-phase commit: records become visible only when the checkpoint that
//! covers them completes (`notify_checkpoint_complete`); records pre-committed at a barrier are
//! part of the checkpoint's state, so a restore publishes those whose notification was lost.
//! Publishing is idempotent per (checkpoint, subtask), so nothing is published twice.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::context::OperatorContext;
use crate::data::{Barrier, Batch, Data};
use crate::emit::Collector;
use crate::operator::Operator;
use crate::snapshot::{OperatorSnapshot, Redistribution};
use sluice_core::Result;

const STAGED: &str = "staged";

struct Shared<T> {
    records: Vec<T>,
    /// (checkpoint id, subtask) already published.
    published: HashSet<(u64, usize)>,
}

/// The records a collecting sink published, readable after (or while) the job runs.
pub struct CollectHandle<T> {
    shared: Arc<Mutex<Shared<T>>>,
}

impl<T> Clone for CollectHandle<T> {
    fn clone(&self) -> Self {
        CollectHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Default for CollectHandle<T> {
    fn default() -> Self {
        CollectHandle {
            shared: Arc::new(Mutex::new(Shared {
                records: Vec::new(),
                published: HashSet::new(),
            })),
        }
    }
}

impl<T: Clone> CollectHandle<T> {
    /// A copy of everything published so far.
    pub fn get(&self) -> Vec<T> {
        self.shared.lock().records.clone()
    }

    /// Everything published so far, leaving the handle empty.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut self.shared.lock().records)
    }

    pub fn len(&self) -> usize {
        self.shared.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sink(&self) -> CollectSink<T> {
        CollectSink {
            shared: self.shared.clone(),
            transactional: false,
            subtask: 0,
            pending: Vec::new(),
            staged: Vec::new(),
        }
    }

    fn publish(&self, checkpoint: u64, subtask: usize, records: Vec<T>) {
        let mut s = self.shared.lock();
        if s.published.insert((checkpoint, subtask)) {
            s.records.extend(records);
        }
    }
}

/// Records pre-committed for one checkpoint by one subtask.
#[derive(Serialize, Deserialize)]
struct Staged<T> {
    checkpoint: u64,
    subtask: usize,
    records: Vec<T>,
}

pub struct CollectSink<T> {
    shared: Arc<Mutex<Shared<T>>>,
    transactional: bool,
    subtask: usize,
    pending: Vec<T>,
    staged: Vec<Staged<T>>,
}

impl<T: Data> CollectSink<T> {
    fn handle(&self) -> CollectHandle<T> {
        CollectHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Data> Operator for CollectSink<T> {
    type In = T;
    type Out = ();

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.transactional = ctx.config.checkpoint_interval.is_some();
        self.subtask = ctx.subtask;
        if let Some(e) = ctx.restored.as_ref().and_then(|r| r.operator_state(STAGED)) {
            for item in &e.items {
                let s: Staged<T> = bincode::deserialize(item)
                    .map_err(|e| ctx.error(format!("bad collect sink state: {e}")))?;
                // Its checkpoint completed (we restore from it or a later one): publish it.
                self.handle().publish(s.checkpoint, s.subtask, s.records);
            }
        }
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: Batch<T>,
        _out: &mut Collector<()>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        if self.transactional {
            self.pending.extend(batch.data);
        } else {
            self.shared.lock().records.extend(batch.data);
        }
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        barrier: &Barrier,
        _ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        if !self.transactional {
            return Ok(OperatorSnapshot::default());
        }
        self.staged.push(Staged {
            checkpoint: barrier.checkpoint_id,
            subtask: self.subtask,
            records: std::mem::take(&mut self.pending),
        });
        let items = self
            .staged
            .iter()
            .map(|s| bincode::serialize(s).expect("staged records serialise"))
            .collect();
        Ok(OperatorSnapshot::default().with_operator_state(STAGED, Redistribution::Split, items))
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint_id: u64,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.staged)
            .into_iter()
            .partition(|s| s.checkpoint <= checkpoint_id);
        self.staged = keep;
        for s in done {
            self.handle().publish(s.checkpoint, s.subtask, s.records);
        }
        Ok(())
    }

    fn end_input(&mut self, _out: &mut Collector<()>, _ctx: &mut OperatorContext) -> Result<()> {
        // The input is complete: publish everything, as a final checkpoint would.
        for s in std::mem::take(&mut self.staged) {
            self.handle().publish(s.checkpoint, s.subtask, s.records);
        }
        let rest = std::mem::take(&mut self.pending);
        self.shared.lock().records.extend(rest);
        Ok(())
    }
}
