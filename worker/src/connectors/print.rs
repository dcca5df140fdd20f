//! Prints records to stdout like Flink's print sink: `N> record`, with the 1-based subtask
//! index as prefix when the sink runs in parallel.

use std::fmt::Display;
use std::io::Write;
use std::marker::PhantomData;

use crate::context::OperatorContext;
use crate::data::{Batch, Data};
use crate::emit::Collector;
use crate::operator::Operator;
use sluice_core::{Result, SluiceError};

pub struct PrintSink<T> {
    prefix: String,
    _t: PhantomData<fn(T)>,
}

impl<T> Default for PrintSink<T> {
    fn default() -> Self {
        PrintSink {
            prefix: String::new(),
            _t: PhantomData,
        }
    }
}

impl<T: Data + Display> Operator for PrintSink<T> {
    type In = T;
    type Out = ();

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        if ctx.parallelism > 1 {
            self.prefix = format!("{}> ", ctx.subtask + 1);
        }
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: Batch<T>,
        _out: &mut Collector<()>,
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let mut buf = Vec::with_capacity(batch.len() * 16);
        for r in &batch.data {
            // Writing to a Vec cannot fail.
            let _ = writeln!(buf, "{}{r}", self.prefix);
        }
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        lock.write_all(&buf)
            .and_then(|_| lock.flush())
            .map_err(|e| SluiceError::io("stdout", e))
    }
}
