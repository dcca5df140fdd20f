//! A parallel sequence generator: records `f(0), f(1), ...` up to `count` (or forever), at most
//! `rate` records per second over all subtasks. Subtask `i` of `p` produces the indices
//! `i, i + p, i + 2p, ...`. Its position is state, kept so that a restore at another parallelism
//! neither repeats nor skips an index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::context::OperatorContext;
use crate::data::{Barrier, Data};
use crate::emit::Collector;
use crate::snapshot::{OperatorSnapshot, Redistribution};
use crate::source::{Source, SourcePoll};
use sluice_core::Result;

const POSITIONS: &str = "positions";

/// How far one subtask of an earlier run got: it emitted `index + k * parallelism` for all `k < next`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Progress {
    index: u64,
    parallelism: u64,
    next: u64,
}

pub struct GeneratorSource<T, F> {
    f: Arc<F>,
    count: Option<u64>,
    rate: Option<f64>,
    index: u64,
    parallelism: u64,
    /// Next candidate index this subtask may emit.
    cursor: u64,
    /// Local ordinal of `cursor` (cursor = index + ordinal * parallelism).
    ordinal: u64,
    /// Progress of the run we restored from, to skip what it already emitted.
    restored: Vec<Progress>,
    started: Option<Instant>,
    emitted: u64,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> GeneratorSource<T, F> {
    pub fn new(f: Arc<F>, count: Option<u64>, rate: Option<f64>) -> Self {
        GeneratorSource {
            f,
            count,
            rate,
            index: 0,
            parallelism: 1,
            cursor: 0,
            ordinal: 0,
            restored: Vec::new(),
            started: None,
            emitted: 0,
            _t: std::marker::PhantomData,
        }
    }

    fn already_emitted(&self, x: u64) -> bool {
        self.restored
            .iter()
            .any(|p| x % p.parallelism == p.index && x < p.index + p.next * p.parallelism)
    }
}

impl<T: Data, F: Fn(u64) -> T + Send + Sync + 'static> Source for GeneratorSource<T, F> {
    type Out = T;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.index = ctx.subtask as u64;
        self.parallelism = ctx.parallelism as u64;
        self.cursor = self.index;
        if let Some(e) = ctx
            .restored
            .as_ref()
            .and_then(|r| r.operator_state(POSITIONS))
        {
            for item in &e.items {
                let p: Progress = bincode::deserialize(item)
                    .map_err(|e| ctx.error(format!("bad generator state: {e}")))?;
                self.restored.push(p);
            }
            // Same layout as before: continue right where this subtask stopped.
            if let Some(p) = self
                .restored
                .iter()
                .find(|p| p.index == self.index && p.parallelism == self.parallelism)
            {
                self.ordinal = p.next;
                self.cursor = self.index + p.next * self.parallelism;
            }
        }
        Ok(())
    }

    fn poll_next(
        &mut self,
        out: &mut Collector<T>,
        max: usize,
        _ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        let mut budget = max as u64;
        if let Some(rate) = self.rate {
            let started = *self.started.get_or_insert_with(Instant::now);
            let per_subtask = rate / self.parallelism as f64;
            let allowed = (started.elapsed().as_secs_f64() * per_subtask) as u64 + 1;
            if allowed <= self.emitted {
                let wait =
                    (self.emitted + 1) as f64 / per_subtask - started.elapsed().as_secs_f64();
                return Ok(SourcePoll::Idle(Duration::from_secs_f64(
                    wait.clamp(0.0005, 0.1),
                )));
            }
            budget = budget.min(allowed - self.emitted);
        }
        let count = self.count.unwrap_or(u64::MAX);
        let check_restored = !self.restored.is_empty();
        while budget > 0 && self.cursor < count {
            let x = self.cursor;
            self.cursor += self.parallelism;
            self.ordinal += 1;
            if check_restored && self.already_emitted(x) {
                continue;
            }
            out.collect((self.f)(x));
            budget -= 1;
            self.emitted += 1;
        }
        Ok(if self.cursor >= count {
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
        // Everything below our cursor in our residue class is done; earlier runs' progress is
        // kept too, since with another parallelism our class does not cover theirs.
        let mut items = vec![
            bincode::serialize(&Progress {
                index: self.index,
                parallelism: self.parallelism,
                next: self.ordinal,
            })
            .expect("progress serialises"),
        ];
        for p in &self.restored {
            if p.parallelism != self.parallelism {
                items.push(bincode::serialize(p).expect("progress serialises"));
            }
        }
        Ok(
            OperatorSnapshot::default().with_operator_state(
                POSITIONS,
                Redistribution::Union,
                items,
            ),
        )
    }
}
