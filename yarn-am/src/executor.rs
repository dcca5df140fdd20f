//! Where a job's subtasks run, behind one trait: in this process (the embedded cluster) or in
//! worker processes (a standalone or YARN cluster). The job driver only speaks to this trait.

use crossbeam_channel::Receiver;
use sluice_core::{Result, SluiceError};
use sluice_hdfs_backend::{CheckpointMetadata, SnapshotDir};
use sluice_worker::task::TaskCommand;
use sluice_worker::upload::CheckpointEvent;

/// What a subtask reports when it ends: (task, subtask, outcome).
pub type TaskDone = (usize, usize, Result<()>);

/// Runs the attempts of one job.
pub trait Executor: Send {
    /// Chooses the state the next attempts start from: the snapshot at `path` (read and
    /// verified before this returns, so a corrupt file fails here, naming the file), or empty
    /// state for `None`. Returns the snapshot's metadata.
    fn restore_from(
        &mut self,
        path: Option<&str>,
        allow_non_restored: bool,
    ) -> Result<Option<CheckpointMetadata>>;

    /// Starts every subtask of attempt number `attempt` (0, 1, ... after each restart).
    fn deploy(&mut self, attempt: u64) -> Result<Box<dyn Attempt>>;

    /// Acknowledgements and declines of checkpoints, from every attempt.
    fn checkpoint_events(&self) -> Receiver<CheckpointEvent>;

    /// Checkpoint `id` is pending and its state goes to `dir` (states smaller than
    /// `inline_threshold` bytes are inlined into its metadata); must be called before its
    /// barrier is injected.
    fn begin_checkpoint(&self, id: u64, dir: SnapshotDir, inline_threshold: usize);

    /// Checkpoint `id` completed or was aborted: late state for it is declined.
    fn end_checkpoint(&self, id: u64);

    /// The job ended: waits for in-flight uploads and releases the executor's resources.
    fn shutdown(&mut self);

    /// Where this job's checkpoint ids come from and completed checkpoints are registered
    /// (ZooKeeper, with high availability); `None`: the coordinator alone.
    fn checkpoint_registry(
        &self,
    ) -> Option<std::sync::Arc<dyn crate::checkpoint::CheckpointRegistry>> {
        None
    }
}

/// One running attempt of a job.
pub trait Attempt: Send {
    /// Every subtask reports here once when it ends.
    fn done(&self) -> &Receiver<TaskDone>;
    /// Number of subtasks.
    fn subtasks(&self) -> usize;
    /// Sends a command to every subtask; finished subtasks are skipped.
    fn send_all(&self, cmd: &TaskCommand);
    /// Sends a command to every source subtask.
    fn send_sources(&self, cmd: &TaskCommand);
    /// Asks every subtask to stop at once.
    fn cancel(&self);
    /// Cancels what still runs and waits for it; `finished` subtasks already reported on
    /// [`Attempt::done`]. Returns the errors the others reported.
    fn stop(self: Box<Self>, finished: usize) -> Vec<SluiceError>;
}
