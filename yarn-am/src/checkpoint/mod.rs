//! Checkpointing as the master sees it: when to trigger, which acknowledgements are missing,
//! when a checkpoint is complete (its `_metadata` written last), which to retain, and the
//! history that the CLI and the REST API show.

mod coordinator;
mod registry;
mod settings;
mod stats;

pub use coordinator::{CheckpointCoordinator, Completed, Counts, Failed, IDLE_WAKEUP, TaskId};
pub use registry::CheckpointRegistry;
pub use settings::CheckpointSettings;
pub use stats::{CheckpointStats, CheckpointStatus};
