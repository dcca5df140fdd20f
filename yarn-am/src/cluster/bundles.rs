//! Job bundles kept by the master on disk, not in memory: a bundle is read from its file only
//! while a job process is being started, so the master's memory does not grow with the number
//! or size of the bundles submitted to it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_core::{Result, SluiceError};

use sluice_core::config::keys::UPLOAD_DIR as UPLOAD_DIR_KEY;

/// One bundle on disk. The file is removed when the last reference goes away.
#[derive(Debug)]
pub struct StoredBundle {
    path: PathBuf,
    len: u64,
}

impl StoredBundle {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bundle's bytes, for a `LaunchJob` message or the HA job store.
    pub fn read(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path)
            .map_err(|e| SluiceError::io(format!("reading the bundle {}", self.path.display()), e))
    }
}

impl Drop for StoredBundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The directory of the master's bundles: `web.upload.dir`, or a fresh temporary directory
/// removed when the master ends normally.
pub struct BundleDir {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    next: AtomicU64,
}

/// A bundle being written; [`BundleWriter::finish`] makes it a [`StoredBundle`], dropping it
/// unfinished removes the partial file.
pub struct BundleWriter {
    file: std::io::BufWriter<std::fs::File>,
    bundle: StoredBundle,
}

impl BundleWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.bundle.len += bytes.len() as u64;
        self.file.write_all(bytes).map_err(|e| {
            SluiceError::io(
                format!("writing the bundle {}", self.bundle.path.display()),
                e,
            )
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.bundle.len
    }

    pub fn is_empty(&self) -> bool {
        self.bundle.len == 0
    }

    pub fn finish(mut self) -> Result<Arc<StoredBundle>> {
        self.file.flush().map_err(|e| {
            SluiceError::io(
                format!("writing the bundle {}", self.bundle.path.display()),
                e,
            )
        })?;
        let len = self.bundle.len;
        let path = std::mem::take(&mut self.bundle.path);
        // `self.bundle` now has an empty path: its drop removes nothing.
        Ok(Arc::new(StoredBundle { path, len }))
    }
}

/// Temporary bundle directories are named `<prefix><pid>-<random>`: the pid tells a later
/// master whether the directory's owner still runs.
const TEMP_PREFIX: &str = "sluice-am-bundles-";

/// Removes the temporary bundle directories of masters that no longer run. A master removes
/// its own when it exits, but not when it is killed, and uploaded bundles are large.
fn remove_orphaned_temp_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Best effort: another master may be removing it at the same time.
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl BundleDir {
    /// Opens `dir` (created if missing), or a temporary directory when `None`.
    pub fn open(dir: Option<&str>) -> Result<BundleDir> {
        let (dir, temp) = match dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| SluiceError::io(format!("{UPLOAD_DIR_KEY}: creating {d}"), e))?;
                (PathBuf::from(d), None)
            }
            None => {
                remove_orphaned_temp_dirs(&std::env::temp_dir());
                let t = tempfile::Builder::new()
                    .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
                    .tempdir()
                    .map_err(|e| SluiceError::io("a temporary bundle directory".to_string(), e))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        Ok(BundleDir {
            dir,
            _temp: temp,
            next: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a new bundle file named after `id`.
    pub fn create(&self, id: &str) -> Result<BundleWriter> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{n}-{id}"));
        let file = std::fs::File::create(&path)
            .map_err(|e| SluiceError::io(format!("creating the bundle {}", path.display()), e))?;
        Ok(BundleWriter {
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            bundle: StoredBundle { path, len: 0 },
        })
    }

    /// Stores `bytes` as the bundle `id`.
    pub fn store(&self, id: &str, bytes: &[u8]) -> Result<Arc<StoredBundle>> {
        let mut w = self.create(id)?;
        w.write(bytes)?;
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_lives_on_disk_until_its_last_reference_goes() {
        let dir = BundleDir::open(None).expect("a bundle dir");
        let b = dir
            .store("job.bundle", b"bytes of a bundle")
            .expect("stored");
        assert_eq!(b.len(), 17);
        assert_eq!(b.read().expect("read back"), b"bytes of a bundle");
        let path = b.path().to_path_buf();
        let other = b.clone();
        drop(b);
        assert!(path.is_file(), "still referenced");
        drop(other);
        assert!(!path.exists(), "removed with its last reference");
    }

    #[test]
    fn an_unfinished_bundle_leaves_no_file() {
        let dir = BundleDir::open(None).expect("a bundle dir");
        let mut w = dir.create("partial").expect("created");
        w.write(b"half").expect("written");
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.dir()).expect("listed").count(),
            0,
            "the partial file was removed"
        );
    }

    #[test]
    fn temporary_directories_of_masters_that_are_gone_are_removed() {
        let tmp = tempfile::tempdir().expect("a temp dir");
        // No process has pid u32::MAX - 1 (pid_max is at most 2^22); this process runs.
        let gone = tmp
            .path()
            .join(format!("{TEMP_PREFIX}{}-abc", u32::MAX - 1));
        let mine = tmp
            .path()
            .join(format!("{TEMP_PREFIX}{}-def", std::process::id()));
        let other = tmp.path().join("sluice-am-bundles-unparsable");
        for d in [&gone, &mine, &other] {
            std::fs::create_dir_all(d).expect("created");
            std::fs::write(d.join("1-job"), b"bundle").expect("written");
        }
        remove_orphaned_temp_dirs(tmp.path());
        assert!(!gone.exists(), "the dead master's directory is removed");
        assert!(mine.join("1-job").is_file(), "a running master's stays");
        assert!(other.exists(), "a directory not named by a master stays");
    }

    #[test]
    fn a_configured_directory_is_created() {
        let t = tempfile::tempdir().expect("a temp dir");
        let d = t.path().join("uploads");
        let dir = BundleDir::open(Some(d.to_str().expect("utf-8"))).expect("opened");
        let b = dir.store("x", b"1").expect("stored");
        assert!(b.path().starts_with(&d));
    }
}
