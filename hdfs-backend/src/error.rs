//! The one error type of this crate. Every message names the path or URL it is about, because
//! a storage error without its path is useless to whoever has to fix the disk or the config.

use sluice_core::error::SluiceError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path} does not exist{}", not_found_hint(.path))]
    NotFound { path: String },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path} has format version {found}, but this build reads only version {supported}")]
    UnsupportedVersion {
        path: String,
        found: u32,
        supported: u32,
    },
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{url}: unsupported storage scheme (supported: file://, hdfs://, viewfs:// URLs and plain paths)"
    )]
    UnsupportedScheme { url: String },
    #[error("invalid path {path}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// Something could not be written because it cannot be represented in the format.
    #[error("cannot write {path}: {reason}")]
    Encode { path: String, reason: String },
}

/// A missing `_metadata` almost always means an incomplete snapshot, not a typo; say so.
fn not_found_hint(path: &str) -> &'static str {
    if path.ends_with(crate::snapshot::METADATA_FILE) {
        " (a checkpoint or savepoint directory holds _metadata only once it is complete)"
    } else {
        ""
    }
}

impl StorageError {
    /// Whether repeating the same call may succeed: only I/O failures are transient.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Io { .. })
    }

    /// Classifies an I/O error on `path`; a missing file is a `NotFound`, never retryable
    /// (also when a parent of `path` is a file: then `path` does not exist either).
    pub fn from_io(path: impl Into<String>, source: std::io::Error) -> Self {
        use std::io::ErrorKind;
        let path = path.into();
        if matches!(
            source.kind(),
            ErrorKind::NotFound | ErrorKind::NotADirectory
        ) {
            StorageError::NotFound { path }
        } else {
            StorageError::Io { path, source }
        }
    }

    pub fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Self {
        StorageError::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn invalid_path(path: impl Into<String>, reason: impl Into<String>) -> Self {
        StorageError::InvalidPath {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// I/O stays external (retryable); everything else is about a path or snapshot the user
/// configured or named, so it is a configuration error; encoding failures are our bug.
impl From<StorageError> for SluiceError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Io { path, source } => SluiceError::Io { path, source },
            StorageError::Encode { .. } => SluiceError::Internal(e.to_string()),
            other => SluiceError::Config(other.to_string()),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
