//! Example Sluice jobs: word count and windowed aggregation, as library functions (so tests run
//! exactly the jobs the binaries run) plus thin binaries around them.

pub mod kafka_events;
pub mod windowed;
pub mod wordcount;
