//! The master: turns a job plan into scheduled, chained tasks and drives their lifecycle.

pub mod chaining;
pub mod checkpoint;
pub mod job_status;
pub mod restart;

pub use chaining::{ExecutionPlan, TaskPlan, build_execution_plan};
pub use job_status::JobStatus;
