//! One error type for the shared crates, classified so callers can decide whether to retry
//! and whom to blame.

use std::fmt;

/// Who caused an error, and so what a caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The job, its configuration or its input is wrong; retrying will not help.
    User,
    /// Something outside the process failed (disk, network, a server); retrying may help.
    External,
    /// A bug or broken invariant in Sluice itself.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::User => "user error",
            ErrorKind::External => "external error",
            ErrorKind::Internal => "internal error",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SluiceError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid job graph: {0}")]
    InvalidGraph(String),
    #[error("operator '{uid}' (subtask {subtask}): {message}")]
    Operator {
        uid: String,
        subtask: usize,
        message: String,
    },
    #[error("state '{state}' of operator '{uid}': {message}")]
    State {
        uid: String,
        state: String,
        message: String,
    },
    #[error("serialization of {what} failed: {message}")]
    Serialization { what: String, message: String },
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("job {job} was cancelled")]
    Cancelled { job: String },
    /// An error raised by user code in a job (a process function, a source, a sink).
    #[error("{0}")]
    Job(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A task found that a task it exchanges records with went away: a consequence of a
    /// failure elsewhere (or of a cancellation), never the cause of a job's failure.
    #[error("{0}")]
    NeighbourGone(String),
}

impl SluiceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SluiceError::Config(_)
            | SluiceError::InvalidGraph(_)
            | SluiceError::Operator { .. }
            | SluiceError::State { .. }
            | SluiceError::Serialization { .. }
            | SluiceError::Job(_)
            | SluiceError::Cancelled { .. } => ErrorKind::User,
            SluiceError::Io { .. } => ErrorKind::External,
            SluiceError::Internal(_) | SluiceError::NeighbourGone(_) => ErrorKind::Internal,
        }
    }

    /// Whether repeating the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::External
    }

    /// An error raised by user code.
    pub fn job(message: impl fmt::Display) -> Self {
        SluiceError::Job(message.to_string())
    }

    pub fn io(path: impl fmt::Display, source: std::io::Error) -> Self {
        SluiceError::Io {
            path: path.to_string(),
            source,
        }
    }
}

pub type Result<T, E = SluiceError> = std::result::Result<T, E>;
