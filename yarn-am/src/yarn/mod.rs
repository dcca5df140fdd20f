//! Sluice on YARN, the ApplicationMaster side: a Hadoop RPC client (framing, SASL
//! DIGEST-MD5 with YARN's tokens), the ApplicationMaster and ContainerManagement protocols,
//! and `sluice-am --yarn`, which runs one job and keeps its worker containers alive.
//!
//! YARN authenticates an ApplicationMaster with tokens even on a cluster without Kerberos:
//! the ResourceManager with the AMRMToken of the container's token file, every NodeManager
//! with the NMToken the ResourceManager handed out for it.

pub mod am;
pub mod amrm;
pub mod conf;
pub mod credentials;
pub mod ha;
pub mod ids;
pub mod nm;
pub mod result;
pub mod rpc;
pub mod sasl;
pub mod staging;
pub mod workers;

mod error;
#[cfg(test)]
mod rpc_tests;

pub use error::{Result, YarnError};

/// Messages generated from `proto/` (Hadoop's public protocol definitions, reduced to what
/// the ApplicationMaster uses).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    pub mod hadoop {
        pub mod common {
            include!(concat!(env!("OUT_DIR"), "/hadoop.common.rs"));
        }
        pub mod yarn {
            include!(concat!(env!("OUT_DIR"), "/hadoop.yarn.rs"));
        }
    }
    pub use hadoop::common;
    pub use hadoop::yarn;
}
