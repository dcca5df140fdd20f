//! Where a master registers the checkpoints it completes, beyond their `_metadata`: with
//! ZooKeeper high availability, an id counter and pointers in ZooKeeper that only the leading
//! master can write, so a deposed master can neither reuse an id nor complete a checkpoint.

use sluice_core::Result;

/// The checkpoint id counter and the completed-checkpoint pointers of one job.
pub trait CheckpointRegistry: Send + Sync {
    /// The id of the next checkpoint: at least `at_least` (the coordinator's own next id) and
    /// never handed out before, also not by an earlier leader. Fails when this master no
    /// longer leads: the checkpoint is then not started.
    fn next_id(&self, at_least: u64) -> Result<u64>;

    /// Registers checkpoint `id`, whose `_metadata` is written at `location`, as completed and
    /// keeps the newest `retained` pointers. Fails when this master no longer leads: the
    /// checkpoint then does not complete (and its directory is discarded).
    fn add(&self, id: u64, location: &str, retained: usize) -> Result<()>;

    /// `Err` when this master may not complete a checkpoint now (it does not lead, or its
    /// ZooKeeper connection is suspended); checked before a checkpoint's `_metadata` is
    /// written.
    fn check_leading(&self) -> Result<()> {
        Ok(())
    }
}
