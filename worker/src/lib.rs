//! Task runtime: operators, chains, channels, timers and state backends that execute a job's subtasks.

pub mod blob_pool;
pub mod connectors;
pub mod context;
pub mod control;
pub mod daemon;
pub mod data;
pub mod emit;
pub mod exchange;
pub mod incremental;
pub mod key;
pub mod metrics;
pub mod net;
pub mod node;
pub mod operator;
pub mod operators;
pub mod prometheus;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod task;
pub mod upload;

pub use context::OperatorContext;
pub use data::{Batch, Data, Event, MAX_WATERMARK, MIN_WATERMARK};
pub use emit::{Collector, Emit};
pub use key::{FieldKey, Key, KeySelector, OwnedKey};
pub use operator::{Operator, OperatorNode};
pub use sluice_core::{Result, SluiceError};
pub use source::{Source, SourcePoll};
