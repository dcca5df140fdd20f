//! The blocking ZooKeeper session handle the HA code uses; it lives in the worker crate, whose
//! daemons open the same kind of session to find the leader.

pub use sluice_worker::daemon::zk::{SessionState, Zk, ZkError, zk_err};
