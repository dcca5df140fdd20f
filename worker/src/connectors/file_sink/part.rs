//! Part files: their names, and the open part a subtask is writing.
//!
//! A part is published as `part-<subtask>-<n>` and written before that under the hidden name
//! `.part-<subtask>-<n>.<token>.inprogress`, where `<token>` is unique per opening of a sink
//! subtask (an attempt), so an attempt never writes to, truncates or renames a file another
//! attempt wrote, and the subtask index in the name says which subtask cleans it up.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sluice_core::{Result, SluiceError};

pub(super) const IN_PROGRESS_SUFFIX: &str = ".inprogress";

/// A token unique to this opening of a sink subtask, among processes and over time.
pub(super) fn attempt_token() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}{:x}{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

pub(super) fn visible_name(subtask: usize, n: u64) -> String {
    format!("part-{subtask}-{n}")
}

pub(super) fn in_progress_name(visible: &str, token: &str) -> String {
    format!(".{visible}.{token}{IN_PROGRESS_SUFFIX}")
}

/// The subtask index of an in-progress file name (`.part-<s>-<n>[.<token>].inprogress`).
pub(super) fn in_progress_subtask(name: &str) -> Option<usize> {
    let rest = name
        .strip_prefix(".part-")?
        .strip_suffix(IN_PROGRESS_SUFFIX)?;
    let visible = rest.split('.').next()?;
    let (subtask, n) = visible.split_once('-')?;
    n.parse::<u64>().ok()?;
    subtask.parse().ok()
}

pub(super) fn io_error(path: &Path, e: std::io::Error) -> SluiceError {
    SluiceError::io(path.display(), e)
}

/// The part being written.
pub(super) struct OpenPart {
    pub in_progress: PathBuf,
    pub visible: PathBuf,
    writer: BufWriter<File>,
    pub size: u64,
    pub opened: Instant,
}

impl OpenPart {
    pub fn create(in_progress: PathBuf, visible: PathBuf) -> Result<Self> {
        let f = File::create(&in_progress).map_err(|e| io_error(&in_progress, e))?;
        Ok(OpenPart {
            in_progress,
            visible,
            writer: BufWriter::with_capacity(256 * 1024, f),
            size: 0,
            opened: Instant::now(),
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| io_error(&self.in_progress, e))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs the part; it is complete and durable at `size` bytes.
    pub fn finish(mut self) -> Result<(PathBuf, PathBuf, u64)> {
        self.writer
            .flush()
            .map_err(|e| io_error(&self.in_progress, e))?;
        self.writer
            .get_ref()
            .sync_all()
            .map_err(|e| io_error(&self.in_progress, e))?;
        Ok((self.in_progress, self.visible, self.size))
    }

    /// Drops the part without publishing it.
    pub fn discard(self) {
        let OpenPart {
            in_progress,
            writer,
            ..
        } = self;
        drop(writer.into_parts());
        // Best effort: a leftover is cleaned up by the next attempt of this subtask.
        let _ignored = std::fs::remove_file(&in_progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_progress_names_carry_the_subtask() {
        let v = visible_name(12, 7);
        assert_eq!(v, "part-12-7");
        let n = in_progress_name(&v, &attempt_token());
        assert_eq!(in_progress_subtask(&n), Some(12));
        // The format of earlier versions, without a token.
        assert_eq!(in_progress_subtask(".part-3-0.inprogress"), Some(3));
        assert_eq!(in_progress_subtask("part-3-0"), None);
        assert_eq!(in_progress_subtask(".part-x-0.inprogress"), None);
        assert_eq!(in_progress_subtask(".other.inprogress"), None);
        assert_ne!(attempt_token(), attempt_token());
    }
}
