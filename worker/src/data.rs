//! What flows through channels: batches of records with optional event timestamps, and the
//! in-band control events (watermarks, checkpoint barriers, end of input) that travel with them.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use crate::snapshot::SavepointFormat;

/// Anything a stream can carry. Records are serde types so they can cross process boundaries
/// and live in state; `Clone` lets one stream feed several consumers.
pub trait Data: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + Serialize + DeserializeOwned + 'static> Data for T {}

/// The watermark that says "no more records": fires every pending event-time timer.
pub const MAX_WATERMARK: i64 = i64::MAX;
/// No event time seen yet.
pub const MIN_WATERMARK: i64 = i64::MIN;

/// Records move in batches: one channel send, one virtual call per batch, not per record.
/// `ts` is either empty (records carry no event time) or holds one timestamp per record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch<T> {
    pub data: Vec<T>,
    pub ts: Vec<i64>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            data: Vec::new(),
            ts: Vec::new(),
        }
    }
}

impl<T> Batch<T> {
    pub fn with_capacity(n: usize) -> Self {
        Batch {
            data: Vec::with_capacity(n),
            ts: Vec::new(),
        }
    }

    pub fn from_vec(data: Vec<T>) -> Self {
        Batch {
            data,
            ts: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn has_timestamps(&self) -> bool {
        !self.ts.is_empty()
    }

    /// Timestamp of record `i`, if records carry event time.
    #[inline]
    pub fn timestamp(&self, i: usize) -> Option<i64> {
        self.ts.get(i).copied()
    }

    #[inline]
    pub fn push(&mut self, record: T, ts: Option<i64>) {
        if let Some(t) = ts {
            if self.ts.len() < self.data.len() {
                // Earlier records had no timestamp: give them the minimum so lengths agree.
                self.ts.resize(self.data.len(), MIN_WATERMARK);
            }
            self.ts.push(t);
        } else if !self.ts.is_empty() {
            self.ts.push(MIN_WATERMARK);
        }
        self.data.push(record);
    }

    /// Iterates `(record, timestamp)` pairs, consuming the batch.
    pub fn into_iter_ts(self) -> impl Iterator<Item = (T, Option<i64>)> {
        let has = !self.ts.is_empty();
        let mut ts = self.ts.into_iter();
        self.data
            .into_iter()
            .map(move |r| (r, if has { ts.next() } else { None }))
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.ts.clear();
    }
}

/// A checkpoint barrier: everything before it belongs to checkpoint `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Barrier {
    pub checkpoint_id: u64,
    pub timestamp_ms: i64,
    /// Savepoints are taken in the same stream of barriers; `stop` ends the job after it.
    pub kind: BarrierKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarrierKind {
    Checkpoint,
    Savepoint {
        format: SavepointFormat,
    },
    /// Savepoint after which the job stops; with `drain`, a max watermark precedes it.
    StopWithSavepoint {
        drain: bool,
        format: SavepointFormat,
    },
}

impl BarrierKind {
    /// The format of a savepoint; `None` for a checkpoint.
    pub fn savepoint_format(&self) -> Option<SavepointFormat> {
        match self {
            BarrierKind::Checkpoint => None,
            BarrierKind::Savepoint { format } | BarrierKind::StopWithSavepoint { format, .. } => {
                Some(*format)
            }
        }
    }
}

/// One element of a channel between tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event<T> {
    Batch(Batch<T>),
    Watermark(i64),
    Barrier(Barrier),
    /// The sending subtask has finished; it will send nothing more.
    EndOfInput,
    /// Watermark status (Flink's `WatermarkStatus`): `Idle(true)` says the sender has nothing
    /// to send for a while, so its watermark must not hold back the consumer's; `Idle(false)`,
    /// or any record or watermark from it, makes it count again.
    Idle(bool),
}
