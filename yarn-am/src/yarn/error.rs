//! The errors of the YARN module; each names the address, file, container or application it
//! is about.

/// What went wrong talking to YARN or running the ApplicationMaster.
#[derive(Debug, thiserror::Error)]
pub enum YarnError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The server answered a call with an exception.
    #[error("{method} at {addr} failed: {class}: {message}")]
    Remote {
        addr: String,
        method: String,
        class: String,
        message: String,
    },
    /// Authentication with a token failed.
    #[error("SASL authentication with {addr} failed: {message}")]
    Sasl { addr: String, message: String },
    /// The server's bytes are not what the protocol says.
    #[error("Hadoop RPC with {addr}: {message}")]
    Protocol { addr: String, message: String },
    #[error("no answer from {addr} to {what} within {secs} s")]
    Timeout {
        addr: String,
        what: String,
        secs: u64,
    },
    #[error("token file {path}: {message}")]
    Credentials { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("configuration {key}: {message}")]
    Config { key: String, message: String },
    #[error("HDFS {path}: {message}")]
    Hdfs { path: String, message: String },
    #[error("container {container}: {message}")]
    Container { container: String, message: String },
    #[error("application {app}: {message}")]
    App { app: String, message: String },
}

pub type Result<T> = std::result::Result<T, YarnError>;

impl YarnError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> YarnError {
        YarnError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn protocol(addr: &str, message: impl Into<String>) -> YarnError {
        YarnError::Protocol {
            addr: addr.to_string(),
            message: message.into(),
        }
    }
}
