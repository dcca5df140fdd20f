//! Per-operator counters, shared between the task thread that bumps them and whoever reports them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records that arrived after the watermark had passed all their windows.
    pub late_records_dropped: AtomicU64,
}

impl OperatorMetrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets every counter (counters summed elsewhere, such as the master's view of a job's
    /// processes).
    pub fn set(&self, m: MetricsSnapshot) {
        self.records_in.store(m.records_in, Ordering::Relaxed);
        self.records_out.store(m.records_out, Ordering::Relaxed);
        self.late_records_dropped
            .store(m.late_records_dropped, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            late_records_dropped: self.late_records_dropped.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetricsSnapshot {
    pub records_in: u64,
    pub records_out: u64,
    pub late_records_dropped: u64,
}

impl std::ops::AddAssign for MetricsSnapshot {
    fn add_assign(&mut self, o: Self) {
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.late_records_dropped += o.late_records_dropped;
    }
}
