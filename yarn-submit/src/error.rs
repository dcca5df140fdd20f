//! The one error type of the crate; every variant names the address, path or id it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Hadoop configuration: set HADOOP_CONF_DIR (or YARN_CONF_DIR, or HADOOP_HOME) to the \
         directory holding core-site.xml and yarn-site.xml"
    )]
    NoHadoopConf,
    #[error("reading {path}: {why}")]
    ConfFile { path: PathBuf, why: String },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Usage(String),
    #[error(
        "cannot reach the ResourceManager at {address} ({why}); check \
         yarn.resourcemanager.webapp.address in {conf}"
    )]
    RmUnreachable {
        address: String,
        conf: String,
        why: String,
    },
    #[error("ResourceManager at {address}: {method} {path} answered {status}: {message}")]
    Rm {
        address: String,
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("the ResourceManager knows no application {0}")]
    NoSuchApplication(String),
    #[error("the queue '{queue}' does not exist (the ResourceManager's leaf queues: {known})")]
    NoSuchQueue { queue: String, known: String },
    #[error(
        "{what} asks for {requested} but the cluster's largest container is {maximum} \
         (yarn.scheduler.maximum-allocation-mb / -vcores); lower {key}"
    )]
    TooLarge {
        what: String,
        requested: String,
        maximum: String,
        key: String,
    },
    #[error("HDFS {url}: {why}")]
    Hdfs { url: String, why: String },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Bundle(String),
    #[error("the application master of {app} at {address}: {why}")]
    Am {
        app: String,
        address: String,
        why: String,
    },
    #[error("application {app} ended {state} ({final_status}): {diagnostics}")]
    AppFailed {
        app: String,
        state: String,
        final_status: String,
        diagnostics: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
