//! Shared vocabulary of Sluice: configuration, job plans, key groups and errors.

pub mod config;
pub mod error;
pub mod keygroup;
pub mod placement;
pub mod plan;
pub mod size;

pub use config::Config;
pub use error::{ErrorKind, Result, SluiceError};
pub use keygroup::{KeyGroupRange, StableHasher};
pub use plan::{EdgePlan, JobPlan, NodeKind, NodePlan, Partitioning};
