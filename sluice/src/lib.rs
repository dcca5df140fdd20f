//! The job API: what a Sluice streaming program imports to build, plan and run a job.
//!
//! ```no_run
//! use sluice::prelude::*;
//!
//! fn main() -> sluice::Result<()> {
//!     let env = StreamEnv::new();
//!     env.from_collection(vec!["to be or not to be".to_string()])
//!         .flat_map(|line: String| line.split(' ').map(|w| (w.to_string(), 1u64)).collect::<Vec<_>>())
//!         .key_by_field(|r: &(String, u64)| &r.0)
//!         .sum()
//!         .map(|(word, count)| format!("({word},{count})"))
//!         .print();
//!     env.execute("word count")?;
//!     Ok(())
//! }
//! ```

mod cluster;
mod embedded;
mod env;
mod graph;
mod stream;

pub use cluster::{Role, job_args, role};
pub use env::StreamEnv;
pub use sluice_am::checkpoint::{CheckpointStats, CheckpointStatus};
pub use sluice_am::rest::{self, Dispatcher, RestServer};
pub use sluice_am::{
    ALLOW_NON_RESTORED_KEY, JobClient, JobHandle, JobResult, JobStatus, JobView, RESTORE_PATH_KEY,
};
pub use stream::{DataStream, KeyedStream, SinkHandle, WindowedStream};

pub use sluice_core::config::{self, Config, StateBackendKind};
pub use sluice_core::{Result, SluiceError};
pub use sluice_worker::connectors::collect::CollectHandle;
pub use sluice_worker::connectors::file_sink::RollingPolicy;
pub use sluice_worker::operators::process::{KeyedProcessFunction, ProcessContext, TimeDomain};
pub use sluice_worker::operators::window::{
    AggregateFunction, CountAggregate, ReduceAggregate, SumAggregate, WindowAssigner, Windowed,
};
pub use sluice_worker::state::{ListState, MapState, ValueState};
pub use sluice_worker::{
    Batch, Collector, Data, Key, Operator, OperatorContext, Source, SourcePoll,
};

/// Everything a job usually needs.
pub mod prelude {
    pub use crate::{
        AggregateFunction, Collector, DataStream, KeyedProcessFunction, KeyedStream,
        ProcessContext, StreamEnv, TimeDomain, WindowAssigner, Windowed,
    };
    pub use std::time::Duration;
}
