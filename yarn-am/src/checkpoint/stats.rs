//! One entry of the checkpoint history, with the field names of Flink's REST API.

use serde::{Deserialize, Serialize};
use sluice_worker::snapshot::SavepointFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckpointStatus {
    InProgress,
    Completed,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStats {
    pub id: u64,
    pub status: CheckpointStatus,
    pub is_savepoint: bool,
    pub trigger_timestamp: i64,
    pub latest_ack_timestamp: i64,
    /// Milliseconds from trigger to completion (or failure).
    pub end_to_end_duration: u64,
    pub state_size: u64,
    pub num_subtasks: usize,
    pub num_acknowledged_subtasks: usize,
    pub external_path: Option<String>,
    pub failure_message: Option<String>,
    /// Barrier alignment of each acknowledged subtask: `(task, subtask, milliseconds)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alignments: Vec<(usize, usize, u64)>,
    /// A savepoint's format (`savepointFormat` in Flink's history); `None` for checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_format: Option<SavepointFormat>,
}

impl CheckpointStats {
    /// The longest alignment of any subtask of `task`, if one acknowledged.
    pub fn max_alignment_of(&self, task: usize) -> Option<u64> {
        self.alignments
            .iter()
            .filter(|(t, _, _)| *t == task)
            .map(|(_, _, ms)| *ms)
            .max()
    }
}
