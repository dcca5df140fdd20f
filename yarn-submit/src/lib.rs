//! `yarn-submit`: runs a Sluice job bundle as a YARN application (staging on HDFS, submission
//! through the ResourceManager's REST API) and lists, shows and kills such applications.

pub mod args;
pub mod cleanup;
pub mod commands;
pub mod error;
pub mod follow;
pub mod hadoop_conf;
pub mod rm;
pub mod spec;
pub mod staging;
pub mod submit;

pub use commands::{master_address, master_address_blocking};
pub use error::{Error, Result};
pub use hadoop_conf::HadoopConf;
pub use rm::{AppReport, RmClient};
pub use submit::{SubmitOptions, Submitted, submit};
