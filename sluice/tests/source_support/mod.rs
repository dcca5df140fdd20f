//! What tests of a task's timing share: an unbounded source that counts up from 0 at its own
//! pace, one record per poll.

use std::time::Duration;

use sluice::prelude::*;
use sluice::{OperatorContext, Source, SourcePoll};

/// Emits 0, 1, 2, … forever, sleeping `pause` before each record. Every poll yields a record,
/// so the source's task is never idle and never waits for input: only a full batch, the
/// buffer timeout or a barrier makes it send what it collected.
pub struct Paced {
    next: u64,
    pause: Duration,
}

impl Paced {
    pub fn every(pause: Duration) -> Paced {
        Paced { next: 0, pause }
    }
}

impl Source for Paced {
    type Out = u64;

    fn poll_next(
        &mut self,
        out: &mut Collector<u64>,
        _max_records: usize,
        _ctx: &mut OperatorContext,
    ) -> sluice::Result<SourcePoll> {
        std::thread::sleep(self.pause);
        out.collect(self.next);
        self.next += 1;
        Ok(SourcePoll::More)
    }
}
