//! What an operator subtask knows about itself and its surroundings.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use sluice_core::{Config, KeyGroupRange, SluiceError};

use crate::metrics::OperatorMetrics;
use crate::snapshot::OperatorSnapshot;

/// Snapshots taken by the operators of one task for one barrier, in chain order.
pub type SnapshotCollector = Rc<RefCell<Vec<(String, OperatorSnapshot)>>>;

pub struct OperatorContext {
    pub job_name: String,
    pub uid: String,
    pub name: String,
    pub subtask: usize,
    pub parallelism: usize,
    pub max_parallelism: usize,
    /// Key groups this subtask owns (all of them for a non-keyed operator).
    pub key_groups: KeyGroupRange,
    pub config: Arc<Config>,
    pub metrics: Arc<OperatorMetrics>,
    /// State to start from, already redistributed for this subtask.
    pub restored: Option<OperatorSnapshot>,
    /// The last watermark this operator received.
    pub current_watermark: i64,
    /// Directory for this subtask's local state (RocksDB), created on demand.
    pub local_dir: PathBuf,
    /// Earliest processing-time timer of the whole task (ms since epoch; `i64::MAX` for none).
    pub(crate) next_processing_timer: Rc<Cell<i64>>,
    pub(crate) snapshots: SnapshotCollector,
}

impl OperatorContext {
    /// A context for tests and for operators run outside a task.
    pub fn standalone(uid: &str, config: Arc<Config>) -> Self {
        let max = config.max_parallelism;
        OperatorContext {
            job_name: "standalone".into(),
            uid: uid.to_string(),
            name: uid.to_string(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: max,
            key_groups: KeyGroupRange::for_subtask(max, 1, 0),
            config,
            metrics: OperatorMetrics::new(),
            restored: None,
            current_watermark: crate::MIN_WATERMARK,
            local_dir: std::env::temp_dir().join(format!("sluice-{}-{uid}", std::process::id())),
            next_processing_timer: Rc::new(Cell::new(i64::MAX)),
            snapshots: Rc::default(),
        }
    }

    /// Asks the task to call `on_processing_time` no later than `at_ms`.
    pub fn request_wakeup(&self, at_ms: i64) {
        if at_ms < self.next_processing_timer.get() {
            self.next_processing_timer.set(at_ms);
        }
    }

    /// Shares the task-wide timer cell and snapshot collector with this operator.
    pub fn set_task_shared(
        &mut self,
        next_processing_timer: Rc<Cell<i64>>,
        snapshots: SnapshotCollector,
    ) {
        self.next_processing_timer = next_processing_timer;
        self.snapshots = snapshots;
    }

    /// An error from this operator, naming it.
    pub fn error(&self, message: impl std::fmt::Display) -> SluiceError {
        SluiceError::Operator {
            uid: self.uid.clone(),
            subtask: self.subtask,
            message: message.to_string(),
        }
    }
}

/// Milliseconds since the Unix epoch, the clock of processing-time timers.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
