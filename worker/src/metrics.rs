//! Per-operator counters, shared between the task thread that bumps them and whoever reports them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records that arrived after the watermark had passed all their windows.
    pub late_records_dropped: AtomicU64,
    /// Nanoseconds the operator's task spent blocked on a full output channel. Shared by every
    /// operator of a chain: when the chain's output is full, all of them wait.
    pub backpressured: Arc<AtomicU64>,
    /// Bytes of records received from / sent to other processes (in-process exchanges do not
    /// encode records, so they count nothing here).
    pub bytes_in: Arc<AtomicU64>,
    pub bytes_out: Arc<AtomicU64>,
}

impl OperatorMetrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Metrics whose backpressure counter is the task's (`blocked`, shared with its writers)
    /// and whose byte counters are the ones its remote outlets and inlets add to.
    pub fn in_task(
        blocked: Arc<AtomicU64>,
        bytes_in: Arc<AtomicU64>,
        bytes_out: Arc<AtomicU64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            backpressured: blocked,
            bytes_in,
            bytes_out,
            ..Self::default()
        })
    }

    /// Sets every counter (counters summed elsewhere, such as the master's view of a job's
    /// processes).
    pub fn set(&self, m: MetricsSnapshot) {
        self.records_in.store(m.records_in, Ordering::Relaxed);
        self.records_out.store(m.records_out, Ordering::Relaxed);
        self.late_records_dropped
            .store(m.late_records_dropped, Ordering::Relaxed);
        self.backpressured.store(
            m.backpressured_ms.saturating_mul(1_000_000),
            Ordering::Relaxed,
        );
        self.bytes_in.store(m.bytes_in, Ordering::Relaxed);
        self.bytes_out.store(m.bytes_out, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late_records_dropped: self.late_records_dropped.load(Ordering::Relaxed),
            backpressured_ms: self.backpressured.load(Ordering::Relaxed) / 1_000_000,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetricsSnapshot {
    pub records_in: u64,
    pub records_out: u64,
    pub late_records_dropped: u64,
    /// Milliseconds blocked on output, summed over the operator's subtasks (Flink's
    /// `accumulated-backpressured-time`).
    pub backpressured_ms: u64,
    /// Bytes received from / sent to other processes (Flink's `read-bytes`/`write-bytes`).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl std::ops::AddAssign for MetricsSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.late_records_dropped += o.late_records_dropped;
        self.backpressured_ms += o.backpressured_ms;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}
