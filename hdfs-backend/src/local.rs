//! [`LocalStorage`]: [`Storage`] on the local filesystem with `std::fs`.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Result, StorageError};
use crate::storage::{ChunkSink, ChunkSource, DirEntry, Storage, file_name, parent, random_hex12};

/// Reads go through a buffer of this size.
const READ_CHUNK: usize = 1 << 20;

/// The local filesystem; paths are absolute filesystem paths. Stateless, so one instance
/// serves every directory.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalStorage;

impl Storage for LocalStorage {
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.write_atomic_with(path, &mut |f| f.write_all(bytes))
    }

    fn write_atomic_from(&self, path: &str, src: &dyn ChunkSource) -> Result<()> {
        let mut chunks = src.open()?;
        // A failing source is reported as itself (it names its own file), not as I/O on `path`.
        let mut failed = None;
        let r = self.write_atomic_with(path, &mut |f| {
            loop {
                match chunks.next_chunk() {
                    Ok(Some(c)) => f.write_all(&c)?,
                    Ok(None) => return Ok(()),
                    Err(e) => {
                        let msg = e.to_string();
                        failed = Some(e);
                        return Err(std::io::Error::other(msg));
                    }
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => r,
        }
    }

    fn read_to(&self, path: &str, sink: &mut ChunkSink<'_>) -> Result<u64> {
        let io = |e| StorageError::from_io(path, e);
        let mut f = File::open(path).map_err(io)?;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut total = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            sink(&buf[..n])?;
            total += n as u64;
        }
    }

    fn link_from_local(&self, path: &str, local: &Path) -> Result<bool> {
        let dir = parent(path);
        fs::create_dir_all(dir).map_err(|e| StorageError::from_io(dir, e))?;
        hard_link(local, Path::new(path)).map_err(|e| StorageError::from_io(path, e))
    }

    fn link_to_local(&self, path: &str, local: &Path) -> Result<bool> {
        hard_link(Path::new(path), local)
            .map_err(|e| StorageError::from_io(local.display().to_string(), e))
    }

    fn sync_dir(&self, dir: &str) -> Result<()> {
        sync_dir(dir).map_err(|e| StorageError::from_io(dir, e))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        fs::read(path).map_err(|e| StorageError::from_io(path, e))
    }

    fn exists(&self, path: &str) -> Result<bool> {
        fs::exists(path).map_err(|e| StorageError::from_io(path, e))
    }

    fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        let io = |e| StorageError::from_io(dir, e);
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not ours: everything Sluice writes has a UTF-8 name
            };
            let meta = match entry.metadata() {
                Ok(m) => m,
                // Deleted between read_dir and metadata: it is simply gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::from_io(format!("{dir}/{name}"), e)),
            };
            out.push(DirEntry {
                name,
                is_dir: meta.is_dir(),
                len: if meta.is_dir() { 0 } else { meta.len() },
            });
        }
        Ok(out)
    }

    fn mkdirs(&self, dir: &str) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| StorageError::from_io(dir, e))
    }

    fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::from_io(path, e)),
        };
        let result = if !meta.is_dir() {
            fs::remove_file(path)
        } else if recursive {
            fs::remove_dir_all(path)
        } else {
            fs::remove_dir(path)
        };
        match result {
            // Someone else deleted it meanwhile: the outcome is the same.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| StorageError::from_io(path, e)),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        fs::rename(from, to).map_err(|e| StorageError::from_io(format!("{from} -> {to}"), e))
    }

    fn url(&self, path: &str) -> String {
        format!("file://{path}")
    }
}

impl LocalStorage {
    /// Writes a temp file with `fill`, syncs it and renames it over `path`.
    fn write_atomic_with(
        &self,
        path: &str,
        fill: &mut dyn FnMut(&mut File) -> std::io::Result<()>,
    ) -> Result<()> {
        let dir = parent(path);
        let name = file_name(path);
        if name.is_empty() {
            return Err(StorageError::invalid_path(
                path,
                "names a directory, not a file",
            ));
        }
        fs::create_dir_all(dir).map_err(|e| StorageError::from_io(dir, e))?;
        // Hidden and unique per call, so concurrent writers of one path never share a temp
        // file, and a leftover from a crash is recognizable.
        let tmp = format!("{dir}/.{name}.{}.tmp", random_hex12());
        let written = (|| {
            let mut f = File::create_new(&tmp)?;
            fill(&mut f)?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            sync_dir(dir)
        })();
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StorageError::from_io(path, e)
        })
    }
}

/// Hard-links `from` as `to`; `Ok(false)` when the filesystem cannot (another device, no link
/// support). A leftover `to` of an earlier attempt is replaced.
fn hard_link(from: &Path, to: &Path) -> std::io::Result<bool> {
    use std::io::ErrorKind;
    match fs::hard_link(from, to) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            fs::remove_file(to)?;
            fs::hard_link(from, to).map(|()| true)
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::CrossesDevices | ErrorKind::PermissionDenied | ErrorKind::Unsupported
            ) || e.raw_os_error() == Some(1) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Makes a rename durable. Filesystems that cannot sync a directory say `InvalidInput`; there
/// the rename is as durable as it gets.
fn sync_dir(dir: &str) -> std::io::Result<()> {
    match File::open(dir)?.sync_all() {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::resolve;

    fn temp() -> (tempfile::TempDir, std::sync::Arc<dyn Storage>, String) {
        let t = tempfile::tempdir().unwrap();
        let (s, p) = resolve(&format!("file://{}", t.path().display())).unwrap();
        (t, s, p)
    }

    #[test]
    fn atomic_write_overwrites_and_leaves_no_temp_file() {
        let (_t, s, dir) = temp();
        let f = format!("{dir}/sub/file");
        s.write_atomic(&f, b"first").unwrap();
        s.write_atomic(&f, b"second").unwrap();
        assert_eq!(s.read(&f).unwrap(), b"second");
        let names: Vec<_> = s.list(&format!("{dir}/sub")).unwrap();
        assert_eq!(
            names,
            vec![DirEntry {
                name: "file".into(),
                is_dir: false,
                len: 6
            }]
        );
    }

    #[test]
    fn missing_paths() {
        let (_t, s, dir) = temp();
        let missing = format!("{dir}/nope");
        assert!(!s.exists(&missing).unwrap());
        s.delete(&missing, true).unwrap();
        let e = s.read(&missing).unwrap_err();
        assert!(matches!(e, StorageError::NotFound { .. }) && !e.is_retryable());
        assert!(e.to_string().contains(&missing), "{e}");
        assert!(matches!(
            s.list(&missing).unwrap_err(),
            StorageError::NotFound { .. }
        ));
    }

    #[test]
    fn mkdirs_rename_and_delete() {
        let (_t, s, dir) = temp();
        s.mkdirs(&format!("{dir}/a/b")).unwrap();
        s.write_atomic(&format!("{dir}/a/b/f"), b"x").unwrap();
        assert!(s.delete(&format!("{dir}/a"), false).is_err());
        s.rename(&format!("{dir}/a"), &format!("{dir}/c")).unwrap();
        assert!(s.exists(&format!("{dir}/c/b/f")).unwrap());
        s.delete(&format!("{dir}/c"), true).unwrap();
        assert!(s.list(&dir).unwrap().is_empty());
    }
}
