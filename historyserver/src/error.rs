//! The one error type of the HistoryServer; every message names the key, path or archive it is
//! about.

use sluice_hdfs_backend::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("archive {path} is not a job archive: {reason}")]
    BadArchive { path: String, reason: String },
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl HistoryError {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        HistoryError::Io {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn bad(path: impl Into<String>, reason: impl Into<String>) -> Self {
        HistoryError::BadArchive {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = HistoryError> = std::result::Result<T, E>;
