//! A sink that keeps every record in memory, for tests and small results of the embedded cluster.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::context::OperatorContext;
use crate::data::{Batch, Data};
use crate::emit::Collector;
use crate::operator::Operator;
use sluice_core::Result;

/// The records a collecting sink received, readable after (or while) the job runs.
pub struct CollectHandle<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for CollectHandle<T> {
    fn clone(&self) -> Self {
        CollectHandle {
            records: self.records.clone(),
        }
    }
}

impl<T> Default for CollectHandle<T> {
    fn default() -> Self {
        CollectHandle {
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl<T: Clone> CollectHandle<T> {
    /// A copy of everything received so far.
    pub fn get(&self) -> Vec<T> {
        self.records.lock().clone()
    }

    /// Everything received so far, leaving the handle empty.
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.records.lock())
    }

    pub fn len(&self) -> usize {
        self.records.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sink(&self) -> CollectSink<T> {
        CollectSink {
            records: self.records.clone(),
        }
    }
}

pub struct CollectSink<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T: Data> Operator for CollectSink<T> {
    type In = T;
    type Out = ();

    fn process_batch(
        &mut self,
        batch: Batch<T>,
        _out: &mut Collector<()>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        self.records.lock().extend(batch.data);
        Ok(())
    }
}
