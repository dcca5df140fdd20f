//! Publishing pre-committed parts, idempotently, and removing in-progress parts no checkpoint
//! covers.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_core::{Result, SluiceError};

use super::part::{in_progress_subtask, io_error};

/// A part that is complete and durable under its in-progress name, to be published by rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCommittable {
    pub in_progress: PathBuf,
    pub visible: PathBuf,
    /// The part's bytes are its first `valid_length` bytes; anything after is discarded.
    pub valid_length: u64,
}

/// Publishes `c`: truncates the in-progress file to the valid length if it is longer, renames
/// it to the visible name and syncs the directory. Publishing again is a no-op: the rename is
/// atomic, so either the in-progress file still exists (not published yet) or the visible one
/// does (published). Neither existing means the data is gone: an error, never a silent loss.
pub fn commit(c: &FileCommittable) -> Result<()> {
    match std::fs::metadata(&c.in_progress) {
        Ok(meta) => {
            let len = meta.len();
            if len < c.valid_length {
                return Err(SluiceError::Internal(format!(
                    "cannot publish {}: {} has {len} bytes, the checkpoint covers {}",
                    c.visible.display(),
                    c.in_progress.display(),
                    c.valid_length
                )));
            }
            if len > c.valid_length {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&c.in_progress)
                    .map_err(|e| io_error(&c.in_progress, e))?;
                f.set_len(c.valid_length)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| io_error(&c.in_progress, e))?;
            }
            std::fs::rename(&c.in_progress, &c.visible).map_err(|e| io_error(&c.visible, e))?;
            if let Some(dir) = c.visible.parent() {
                sync_dir(dir)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::metadata(&c.visible) {
            Ok(meta) => {
                if meta.len() != c.valid_length {
                    log::warn!(
                        "{} was published with {} bytes but has {} now",
                        c.visible.display(),
                        c.valid_length,
                        meta.len()
                    );
                }
                Ok(())
            }
            Err(e) => Err(SluiceError::Internal(format!(
                "cannot publish {}: neither it nor {} exists ({e})",
                c.visible.display(),
                c.in_progress.display()
            ))),
        },
        Err(e) => Err(io_error(&c.in_progress, e)),
    }
}

/// Makes renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Removes in-progress parts in `dir` that subtask `subtask` of `parallelism` is responsible
/// for (its own index; subtask 0 also every index `>= parallelism`) and that `keep` does not
/// name. Returns how many it removed. Call it before the subtask writes anything.
pub fn remove_leftovers(
    dir: &Path,
    subtask: usize,
    parallelism: usize,
    keep: &[FileCommittable],
) -> Result<usize> {
    let keep: HashSet<OsString> = keep
        .iter()
        .filter_map(|c| c.in_progress.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name();
        let Some(index) = name.to_str().and_then(in_progress_subtask) else {
            continue;
        };
        let mine = index == subtask || (subtask == 0 && index >= parallelism);
        if !mine || keep.contains(&name) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&entry.path(), e)),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committable(dir: &Path, name: &str, content: &[u8], valid: u64) -> FileCommittable {
        let in_progress = dir.join(format!(".{name}.t1.inprogress"));
        std::fs::write(&in_progress, content).unwrap();
        FileCommittable {
            in_progress,
            visible: dir.join(name),
            valid_length: valid,
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sluice-file-commit-{tag}-{}-{}",
            std::process::id(),
            super::super::part::attempt_token()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn commit_truncates_to_the_valid_length_and_is_idempotent() {
        let dir = scratch("commit");
        let c = committable(&dir, "part-0-0", b"one\ntwo\nhalf", 8);
        commit(&c).unwrap();
        assert_eq!(std::fs::read(&c.visible).unwrap(), b"one\ntwo\n");
        assert!(!c.in_progress.exists());
        commit(&c).unwrap(); // again, as after a restore
        assert_eq!(std::fs::read(&c.visible).unwrap(), b"one\ntwo\n");

        let short = committable(&dir, "part-0-1", b"on", 4);
        assert!(commit(&short).unwrap_err().to_string().contains("bytes"));
        std::fs::remove_file(&short.in_progress).unwrap();
        let gone = commit(&short).unwrap_err().to_string();
        assert!(gone.contains("neither"), "{gone}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leftovers_are_removed_by_their_subtask_or_by_subtask_zero_above_the_parallelism() {
        let dir = scratch("leftovers");
        for s in 0..4 {
            std::fs::write(dir.join(format!(".part-{s}-0.t0.inprogress")), b"x").unwrap();
        }
        let kept = committable(&dir, "part-1-1", b"y\n", 2);
        std::fs::write(dir.join("part-1-0"), b"published\n").unwrap();
        // Subtask 1 of 2: only its own, and not what a checkpoint covers.
        assert_eq!(
            remove_leftovers(&dir, 1, 2, std::slice::from_ref(&kept)).unwrap(),
            1
        );
        assert!(kept.in_progress.exists());
        assert!(dir.join(".part-0-0.t0.inprogress").exists());
        // Subtask 0 of 2: its own and those of indices 2 and 3.
        assert_eq!(remove_leftovers(&dir, 0, 2, &[]).unwrap(), 3);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, vec![".part-1-1.t1.inprogress", "part-1-0"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
