//! Files of native (RocksDB) checkpoints moved between a local database directory and a
//! snapshot directory piece by piece, so a 1 GiB state never sits in memory and each byte is
//! read once and hashed once.
//!
//! On the local filesystem an SST file (immutable once RocksDB wrote it) is stored as a hard
//! link instead of a copy: the checkpoint keeps its name, and so its bytes, when RocksDB
//! deletes the file from the database directory. Such a file is `raw` (no frame); its length
//! and CRC32 in `_metadata` are checked on every read like any other state file's. Everything
//! else is copied into the usual checksummed frame.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;

use crate::error::{Result, StorageError};
use sluice_core::placement::{LINE, lead_for};

use crate::frame::{self, Decoder, STATE_MAGIC};
use crate::snapshot::{FORMAT_VERSION, NativeFile, SHARED_DIR, SnapshotDir};
use crate::storage::{ChunkIter, ChunkSource, join};

/// Pieces of local files are read (and written to HDFS) in this size.
const CHUNK: usize = 4 << 20;

impl SnapshotDir {
    /// Stores the local file `local` (named `name` in the database directory) as `path` in the
    /// snapshot directory, for this checkpoint only. `immutable`: nobody will ever change the
    /// file in place (an SST file), so it may be hard-linked.
    pub fn store_private_file(
        &self,
        path: &str,
        name: &str,
        local: &Path,
        immutable: bool,
    ) -> Result<NativeFile> {
        self.check_state_name(path)?;
        self.store_file(&join(self.path(), path), path, name, local, immutable)
    }

    /// Stores the local file `local` as `shared/<unique_name>` in the job directory, for this
    /// and later checkpoints of the job.
    pub fn store_shared_file(
        &self,
        unique_name: &str,
        name: &str,
        local: &Path,
        immutable: bool,
    ) -> Result<NativeFile> {
        let rel = format!("{SHARED_DIR}/{unique_name}");
        self.check_state_name(&rel)?;
        self.store_file(&join(self.job_dir(), &rel), &rel, name, local, immutable)
    }

    fn store_file(
        &self,
        abs: &str,
        rel: &str,
        name: &str,
        local: &Path,
        immutable: bool,
    ) -> Result<NativeFile> {
        let file = |len, crc32, raw| NativeFile {
            name: name.to_string(),
            path: rel.to_string(),
            len,
            crc32,
            raw,
        };
        if immutable && self.storage().link_from_local(abs, local)? {
            let (len, crc) = local_crc(local)?;
            return Ok(file(len, crc, true));
        }
        let len = std::fs::metadata(local)
            .map_err(|e| StorageError::from_io(local.display().to_string(), e))?
            .len();
        let src = FramedFile {
            local,
            len,
            crc: Mutex::new(None),
        };
        self.storage().write_atomic_from(abs, &src)?;
        let crc = src
            .crc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or_else(|| StorageError::from_io(abs, std::io::Error::other("not all written")))?;
        Ok(file(len, crc, false))
    }

    /// Makes the names of files stored by linking durable: the private directory `prefix` of
    /// this snapshot and the job's `shared/` directory (missing ones are skipped).
    pub fn sync_native_dirs(&self, prefix: &str) -> Result<()> {
        for dir in [join(self.path(), prefix), join(self.job_dir(), SHARED_DIR)] {
            match self.storage().sync_dir(&dir) {
                Err(StorageError::NotFound { .. }) => {}
                r => r?,
            }
        }
        Ok(())
    }

    /// Copies a private (`shared == false`) or shared file of a native checkpoint to the new
    /// local file `target` (a hard link where it can), verifying length and CRC32; on
    /// failure `target` may hold part of the file.
    pub fn fetch_native_file(&self, file: &NativeFile, shared: bool, target: &Path) -> Result<()> {
        let abs = self.native_path(file, shared)?;
        let url = self.storage().url(&abs);
        let target_err = |e| StorageError::from_io(target.display().to_string(), e);
        if file.raw && self.storage().link_to_local(&abs, target)? {
            let (len, crc) = local_crc(target)?;
            return check(&url, file, len, crc);
        }
        let mut out = File::create(target).map_err(target_err)?;
        let (len, crc) = self.read_native_to(file, &abs, &url, &mut |piece| {
            out.write_all(piece).map_err(target_err)
        })?;
        check(&url, file, len, crc)
    }

    /// Reads a file of a native checkpoint through, checking length and CRC32.
    pub fn verify_native_file(&self, file: &NativeFile, shared: bool) -> Result<()> {
        let abs = self.native_path(file, shared)?;
        let url = self.storage().url(&abs);
        let (len, crc) = self.read_native_to(file, &abs, &url, &mut |_| Ok(()))?;
        check(&url, file, len, crc)
    }

    /// Passes the bytes of the database file to `out`; returns their length and CRC32.
    fn read_native_to(
        &self,
        file: &NativeFile,
        abs: &str,
        url: &str,
        out: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> Result<(u64, u32)> {
        if file.raw {
            let mut h = crc32fast::Hasher::new();
            let len = self.storage().read_to(abs, &mut |piece| {
                h.update(piece);
                out(piece)
            })?;
            return Ok((len, h.finalize()));
        }
        let mut d = Decoder::new(url, STATE_MAGIC, FORMAT_VERSION);
        self.storage()
            .read_to(abs, &mut |piece| d.feed(piece, &mut *out))?;
        d.finish()
    }

    /// Where a native file is, refusing names that would leave the snapshot or job directory.
    pub(crate) fn native_path(&self, file: &NativeFile, shared: bool) -> Result<String> {
        self.check_state_name(&file.path)?;
        if shared && !file.path.starts_with(&format!("{SHARED_DIR}/")) {
            return Err(StorageError::invalid_path(
                format!("{}/{}", self.job_dir_url(), file.path),
                "a shared file must be under shared/",
            ));
        }
        let base = if shared { self.job_dir() } else { self.path() };
        Ok(join(base, &file.path))
    }
}

/// Length and CRC32 of what was read against what `_metadata` expects.
pub(crate) fn check(url: &str, file: &NativeFile, len: u64, crc: u32) -> Result<()> {
    if len != file.len {
        return Err(StorageError::corrupt(
            url,
            format!("holds {len} bytes of state, _metadata expects {}", file.len),
        ));
    }
    if crc != file.crc32 {
        return Err(StorageError::corrupt(
            url,
            format!(
                "state CRC32 is {crc:08x}, _metadata expects {:08x} (replaced?)",
                file.crc32
            ),
        ));
    }
    Ok(())
}

/// Length and CRC32 of a local file, read in pieces.
fn local_crc(path: &Path) -> Result<(u64, u32)> {
    let io = |e| StorageError::from_io(path.display().to_string(), e);
    let mut f = File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut h) = (0u64, crc32fast::Hasher::new());
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok((len, h.finalize())),
            Ok(n) => {
                h.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
}

/// A local file in the checksummed frame, read piece by piece; records the file's CRC32 when
/// a pass reaches its end.
struct FramedFile<'a> {
    local: &'a Path,
    len: u64,
    crc: Mutex<Option<u32>>,
}

impl ChunkSource for FramedFile<'_> {
    fn len(&self) -> u64 {
        self.len + 20
    }

    fn open(&self) -> Result<Box<dyn ChunkIter + '_>> {
        let file = File::open(self.local)
            .map_err(|e| StorageError::from_io(self.local.display().to_string(), e))?;
        Ok(Box::new(FramedChunks {
            src: self,
            file,
            header: frame::header(STATE_MAGIC, FORMAT_VERSION, self.len),
            stage: 0,
            left: self.len,
            hash: crc32fast::Hasher::new(),
        }))
    }
}

struct FramedChunks<'a> {
    src: &'a FramedFile<'a>,
    file: File,
    header: [u8; 16],
    /// 0: the header is next, 1: the payload, 2: the trailer, 3: done.
    stage: u8,
    left: u64,
    hash: crc32fast::Hasher,
}

impl ChunkIter for FramedChunks<'_> {
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        match self.stage {
            0 => {
                self.stage = 1;
                Ok(Some(bytes::Bytes::copy_from_slice(&self.header)))
            }
            1 if self.left > 0 => {
                let n = usize::try_from(self.left).unwrap_or(CHUNK).min(CHUNK);
                // Chunks go behind the 16-byte header: each is read in at the offset within a
                // line it has in the file, so that the write copies it fast.
                let mut buf = Vec::with_capacity(LINE + n);
                let lead = lead_for(buf.as_ptr(), frame::HEADER);
                buf.resize(lead + n, 0);
                self.file.read_exact(&mut buf[lead..]).map_err(|e| {
                    StorageError::from_io(
                        self.src.local.display().to_string(),
                        std::io::Error::new(
                            e.kind(),
                            format!("{e} (the file shrank while it was being stored?)"),
                        ),
                    )
                })?;
                self.hash.update(&buf[lead..]);
                self.left -= n as u64;
                Ok(Some(bytes::Bytes::from(buf).slice(lead..)))
            }
            1 | 2 => {
                self.stage = 3;
                let trailer = frame::trailer(&self.header, &self.hash);
                *self.src.crc.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(self.hash.clone().finalize());
                Ok(Some(bytes::Bytes::copy_from_slice(&trailer)))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, SnapshotDir) {
        let t = tempfile::tempdir().unwrap();
        let d = SnapshotDir::checkpoint(&format!("file://{}/chk", t.path().display()), "job", 1)
            .unwrap();
        (t, d)
    }

    #[test]
    fn stored_files_come_back_identical_and_damage_is_found() {
        let (t, d) = dir();
        let local = t.path().join("000012.sst");
        let bytes: Vec<u8> = (0..(9u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(&local, &bytes).unwrap();
        let linked = d
            .store_shared_file("i-1-000012.sst", "000012.sst", &local, true)
            .unwrap();
        let framed = d
            .store_private_file("op/MANIFEST", "MANIFEST", &local, false)
            .unwrap();
        assert!(linked.raw && !framed.raw);
        assert_eq!((linked.len, linked.crc32), (framed.len, framed.crc32));
        assert_eq!(framed.crc32, crc32fast::hash(&bytes));
        d.sync_native_dirs("op").unwrap();
        // The linked copy outlives the database's file.
        std::fs::remove_file(&local).unwrap();
        for (f, shared) in [(&linked, true), (&framed, false)] {
            let target = t.path().join(format!("restored-{}", f.raw));
            d.fetch_native_file(f, shared, &target).unwrap();
            assert_eq!(std::fs::read(&target).unwrap(), bytes);
            d.verify_native_file(f, shared).unwrap();
        }
        // A flipped byte, a truncated file: corrupt, naming the file.
        for (f, shared) in [(&linked, true), (&framed, false)] {
            let p = d.native_path(f, shared).unwrap();
            let mut b = std::fs::read(&p).unwrap();
            b[1 << 20] ^= 1;
            std::fs::remove_file(&p).unwrap();
            std::fs::write(&p, &b).unwrap();
            let e = d.verify_native_file(f, shared).unwrap_err();
            assert!(
                matches!(e, StorageError::Corrupt { .. }) && e.to_string().contains(&p),
                "{e}"
            );
            std::fs::write(&p, &b[..b.len() - 3]).unwrap();
            let target = t.path().join("again");
            let e = d.fetch_native_file(f, shared, &target).unwrap_err();
            assert!(
                matches!(e, StorageError::Corrupt { .. }) && e.to_string().contains(&p),
                "{e}"
            );
            let _ = std::fs::remove_file(&target);
        }
    }
}
