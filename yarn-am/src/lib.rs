//! The master: turns a job plan into scheduled, chained tasks and drives their lifecycle —
//! checkpoints, restarts, savepoints — behind Flink's REST API.

pub mod archive;
pub mod chaining;
pub mod checkpoint;
pub mod cluster;
pub mod executor;
pub mod ha;
pub mod job;
pub mod job_status;
pub mod prometheus;
pub mod rest;
pub mod restart;
pub mod yarn;

pub use chaining::{ExecutionPlan, TaskPlan, build_execution_plan};
pub use executor::{Attempt, Executor, TaskDone};
pub use job::{
    ALLOW_NON_RESTORED_KEY, JobClient, JobHandle, JobResult, JobView, MetricsRegistry,
    RESTORE_PATH_KEY,
};
pub use job_status::JobStatus;
