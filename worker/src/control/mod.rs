//! The control plane between the master and its workers: typed, versioned messages over TCP.

pub mod conn;
pub mod fence;
pub mod protocol;

pub use conn::{Conn, ConnReader};
pub use fence::{EpochFence, Refusal};
pub use protocol::{PROTOCOL_VERSION, ToMaster, ToWorker, WireError};
