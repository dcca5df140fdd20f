//! Built-in sources and sinks.

pub mod collect;
pub mod collection;
pub mod file_sink;
pub mod files;
pub mod generator;
pub mod print;
pub mod socket;
pub mod two_phase;
