//! The bundle crate's one error type: every message names the bundle, file or directory it is
//! about.

use std::fmt::Display;

/// Why writing or opening a bundle failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The inputs or the bundle itself are unusable: a damaged, tampered or foreign bundle, a
    /// missing resource, a bad configuration. The user's to fix; retrying cannot help.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a file failed for a reason outside the bundle (permissions, a full
    /// disk); the same call may succeed once that is fixed.
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
}

impl BundleError {
    /// Whether the same call may succeed later without the user changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(self, BundleError::Io { .. })
    }
}

pub type Result<T, E = BundleError> = std::result::Result<T, E>;

/// `Invalid` with a formatted message.
macro_rules! invalid {
    ($($arg:tt)*) => {
        $crate::error::BundleError::Invalid(format!($($arg)*))
    };
}
pub(crate) use invalid;

/// Names the file an I/O error is about.
pub(crate) trait IoContext<T> {
    fn io_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|error| BundleError::Io {
            what: what().to_string(),
            error,
        })
    }
}
