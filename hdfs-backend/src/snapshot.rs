//! Format and layout of checkpoints and savepoints.
//!
//! A checkpoint is a directory `<base>/<job-id>/chk-<n>`, a savepoint a directory
//! `<target>/savepoint-<first 6 of job id>-<12 random hex>`. Each holds one file per subtask
//! whose state is too large to inline, and `_metadata`, written last: a directory without
//! `_metadata` is an incomplete snapshot. State handles name files relative to the directory,
//! so a savepoint can be copied or moved anywhere and still restores.
//!
//! Every file is wrapped in the checksummed frame of `frame.rs` (magic `SLST` for state,
//! `SLMD` for `_metadata`). The `_metadata` payload is pretty-printed JSON (inline state as
//! hex), so an operator can inspect a snapshot with `tail -c +17 _metadata`; it is small next to
//! the state files, so the size of JSON does not matter.

use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Result, StorageError};
use crate::frame::{self, METADATA_MAGIC, STATE_MAGIC};
use crate::state_buf::StateBuf;
use crate::storage::{Storage, file_name, join, parent, random_hex12, resolve};

pub const METADATA_FILE: &str = "_metadata";
/// The version of the frame and of the metadata layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Where one subtask's state is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StateHandle {
    /// Small state, kept in `_metadata` itself to save a file per subtask.
    Inline {
        #[serde(with = "hex_bytes")]
        bytes: Vec<u8>,
    },
    /// A state file; `path` is relative to the snapshot directory, `len` and `crc32` are of the
    /// state bytes (not of the frame).
    File { path: String, len: u64, crc32: u32 },
    /// A native RocksDB checkpoint: `meta` (the operator snapshot with the native part
    /// described, opaque here), the files private to this checkpoint (paths relative to the
    /// snapshot directory; all of them in a full checkpoint) and, in an incremental one, the
    /// immutable SST files shared between the job's checkpoints (paths relative to the job
    /// directory, `shared/<name>`). Retention reads `shared` to know which shared files are
    /// still referenced.
    Incremental {
        #[serde(with = "hex_bytes")]
        meta: Vec<u8>,
        private: Vec<NativeFile>,
        shared: Vec<NativeFile>,
    },
}

/// One file of a native (RocksDB) checkpoint: `name` is the file's name in the database
/// directory; `len` and `crc32` are of the file's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeFile {
    pub name: String,
    pub path: String,
    pub len: u64,
    pub crc32: u32,
    /// The stored file is the database file itself, without the checksummed frame (a hard
    /// link of an SST file on the same local disk); `len` and `crc32` here still guard it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
}

/// Where the job's shared files are, relative to the job directory.
pub const SHARED_DIR: &str = "shared";

impl StateHandle {
    /// The number of state bytes behind this handle.
    pub fn len(&self) -> u64 {
        match self {
            StateHandle::Inline { bytes } => bytes.len() as u64,
            StateHandle::File { len, .. } => *len,
            StateHandle::Incremental {
                meta,
                private,
                shared,
            } => meta.len() as u64 + private.iter().chain(shared).map(|f| f.len).sum::<u64>(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskState {
    pub subtask: usize,
    pub handle: StateHandle,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    pub uid: String,
    pub name: String,
    pub parallelism: usize,
    pub subtasks: Vec<SubtaskState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    Checkpoint,
    Savepoint,
}

/// The contents of `_metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    pub format_version: u32,
    pub job_id: String,
    pub job_name: String,
    pub checkpoint_id: u64,
    pub kind: SnapshotKind,
    pub timestamp_ms: i64,
    pub max_parallelism: usize,
    pub operators: Vec<OperatorState>,
}

impl CheckpointMetadata {
    /// The sum of inline and file state lengths.
    pub fn state_size(&self) -> u64 {
        self.operators
            .iter()
            .flat_map(|op| &op.subtasks)
            .map(|s| s.handle.len())
            .sum()
    }
}

/// One checkpoint (`<base>/<job-id>/chk-<n>`) or savepoint
/// (`<target>/savepoint-<first 6 of job id>-<12 random hex>`) directory.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    storage: Arc<dyn Storage>,
    path: String,
    url: String,
}

impl SnapshotDir {
    pub(crate) fn new(storage: Arc<dyn Storage>, path: String) -> Self {
        let url = storage.url(&path);
        SnapshotDir { storage, path, url }
    }

    /// Creates (if needed) and returns the directory of checkpoint `checkpoint_id`.
    pub fn checkpoint(base: &str, job_id: &str, checkpoint_id: u64) -> Result<Self> {
        let (storage, base) = resolve(base)?;
        check_job_id(&base, job_id)?;
        let path = join(&join(&base, job_id), &format!("chk-{checkpoint_id}"));
        storage.mkdirs(&path)?;
        Ok(Self::new(storage, path))
    }

    /// Creates a new, uniquely named savepoint directory under `target_dir`.
    pub fn savepoint(target_dir: &str, job_id: &str) -> Result<Self> {
        let (storage, target) = resolve(target_dir)?;
        check_job_id(&target, job_id)?;
        let prefix: String = job_id.chars().take(6).collect();
        // 48 random bits make a collision practically impossible; the check and the retries
        // only keep two savepoints from ever sharing a directory if one happens anyway.
        for _ in 0..4 {
            let path = join(&target, &format!("savepoint-{prefix}-{}", random_hex12()));
            if !storage.exists(&path)? {
                storage.mkdirs(&path)?;
                return Ok(Self::new(storage, path));
            }
        }
        Err(StorageError::invalid_path(
            storage.url(&target),
            "could not find an unused savepoint directory name",
        ))
    }

    /// An existing snapshot directory (complete or not).
    pub fn open(url: &str) -> Result<Self> {
        let (storage, path) = resolve(url)?;
        if !storage.exists(&path)? {
            return Err(StorageError::NotFound {
                path: storage.url(&path),
            });
        }
        Ok(Self::new(storage, path))
    }

    /// The directory as the user should see it (a URL they can pass back to Sluice).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory's path within its storage.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// Whether `_metadata` exists, i.e. whether the snapshot is complete.
    pub fn is_complete(&self) -> Result<bool> {
        self.storage.exists(&join(&self.path, METADATA_FILE))
    }

    /// Stores one subtask's state: inline (in the metadata) when `bytes.len() <
    /// inline_threshold`, else a file `<name>` in the directory, written atomically with a
    /// checksummed frame. `name` is a relative path of plain components; names starting with
    /// `.` and `_metadata` are reserved. Safe to call from many threads at once.
    pub fn write_state(
        &self,
        name: &str,
        bytes: &[u8],
        inline_threshold: usize,
    ) -> Result<StateHandle> {
        if bytes.len() < inline_threshold {
            return Ok(StateHandle::Inline {
                bytes: bytes.to_vec(),
            });
        }
        let mut state = StateBuf::with_capacity(bytes.len());
        state
            .write_all(bytes)
            .expect("writing to memory does not fail");
        self.write_state_owned(name, state, inline_threshold)
    }

    /// [`SnapshotDir::write_state`] of bytes it may keep: a state file is written from them
    /// as they are, never copied into its frame.
    ///
    /// The file is written as [`Storage::write_atomic_from`] writes (a temporary name, then a
    /// rename): an error, a lost NameNode connection included, leaves no partial state file
    /// under `name`.
    pub fn write_state_owned(
        &self,
        name: &str,
        bytes: StateBuf,
        inline_threshold: usize,
    ) -> Result<StateHandle> {
        if bytes.len() < inline_threshold {
            return Ok(StateHandle::Inline {
                bytes: bytes.into_vec(),
            });
        }
        self.check_state_name(name)?;
        let len = bytes.len() as u64;
        let framed = frame::Framed::new(STATE_MAGIC, FORMAT_VERSION, bytes.into_parts());
        self.storage
            .write_atomic_from(&join(&self.path, name), &framed)?;
        Ok(StateHandle::File {
            path: name.to_string(),
            len,
            crc32: framed.payload_crc,
        })
    }

    /// Returns the state bytes, verifying length and CRC32; a truncated file or a flipped byte
    /// => `Corrupt` naming the file.
    pub fn read_state(&self, handle: &StateHandle) -> Result<Vec<u8>> {
        let (name, len, crc32) = match handle {
            StateHandle::Inline { bytes } => return Ok(bytes.clone()),
            StateHandle::Incremental { meta, .. } => return Ok(meta.clone()),
            StateHandle::File { path, len, crc32 } => (path, *len, *crc32),
        };
        self.check_state_name(name)?;
        self.read_checked(&join(&self.path, name), len, crc32)
    }

    /// Reads a framed file and checks its length and CRC32 against what `_metadata` expects.
    pub(crate) fn read_checked(&self, path: &str, len: u64, crc32: u32) -> Result<Vec<u8>> {
        let url = self.storage.url(path);
        let file = self.storage.read(path)?;
        let bytes = frame::decode_owned(&url, STATE_MAGIC, FORMAT_VERSION, file)?;
        if bytes.len() as u64 != len {
            return Err(StorageError::corrupt(
                url,
                format!(
                    "holds {} bytes of state, _metadata expects {len}",
                    bytes.len()
                ),
            ));
        }
        let actual = crc32fast::hash(&bytes);
        if actual != crc32 {
            return Err(StorageError::corrupt(
                url,
                format!("state CRC32 is {actual:08x}, _metadata expects {crc32:08x} (replaced?)"),
            ));
        }
        Ok(bytes)
    }

    /// The job directory (`<base>/<job-id>`) of a checkpoint directory.
    pub(crate) fn job_dir(&self) -> &str {
        parent(&self.path)
    }

    /// The job directory as a URL: shared files may only be reused by checkpoints of the job
    /// directory that holds them.
    pub fn job_dir_url(&self) -> String {
        self.storage.url(self.job_dir())
    }

    /// Whether checkpoint `checkpoint_id` of the same job directory has completed (has
    /// `_metadata`): only then may later checkpoints reuse its shared files.
    pub fn checkpoint_complete(&self, checkpoint_id: u64) -> Result<bool> {
        let chk = join(self.job_dir(), &format!("chk-{checkpoint_id}"));
        self.storage.exists(&join(&chk, METADATA_FILE))
    }

    /// Stores a file of a native checkpoint that only this checkpoint uses, as `path` in the
    /// snapshot directory (checksummed frame, atomic); `file_name` is its name in the database
    /// directory.
    pub fn write_private_file(
        &self,
        path: &str,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<NativeFile> {
        self.check_state_name(path)?;
        let framed = frame::encode_placed(STATE_MAGIC, FORMAT_VERSION, bytes);
        self.storage
            .write_atomic(&join(&self.path, path), &framed)?;
        Ok(native_file(file_name, path.to_string(), bytes))
    }

    /// Stores an immutable file shared between checkpoints as `shared/<unique_name>` in the
    /// job directory; `file_name` is its name in the database directory.
    pub fn write_shared_file(
        &self,
        unique_name: &str,
        file_name: &str,
        bytes: &[u8],
    ) -> Result<NativeFile> {
        let rel = format!("{SHARED_DIR}/{unique_name}");
        self.check_state_name(&rel)?;
        let framed = frame::encode_placed(STATE_MAGIC, FORMAT_VERSION, bytes);
        self.storage
            .write_atomic(&join(self.job_dir(), &rel), &framed)?;
        Ok(native_file(file_name, rel, bytes))
    }

    /// Reads a private (`shared == false`) or shared file of a native checkpoint, verifying
    /// length and CRC32.
    pub fn read_native_file(&self, file: &NativeFile, shared: bool) -> Result<Vec<u8>> {
        let path = self.native_path(file, shared)?;
        if !file.raw {
            return self.read_checked(&path, file.len, file.crc32);
        }
        let bytes = self.storage.read(&path)?;
        let crc = crc32fast::hash(&bytes);
        crate::native::check(&self.storage.url(&path), file, bytes.len() as u64, crc)?;
        Ok(bytes)
    }

    /// Writes `_metadata`, atomically (temp name + rename) and framed with magic, version and
    /// CRC32. Call it last: its presence is what makes the snapshot complete.
    pub fn write_metadata(&self, meta: &CheckpointMetadata) -> Result<()> {
        let path = join(&self.path, METADATA_FILE);
        let encode_err = |reason: String| StorageError::Encode {
            path: self.storage.url(&path),
            reason,
        };
        if meta.format_version != FORMAT_VERSION {
            return Err(encode_err(format!(
                "format_version is {}, but this build writes only version {FORMAT_VERSION}",
                meta.format_version
            )));
        }
        let json = serde_json::to_vec_pretty(meta).map_err(|e| encode_err(e.to_string()))?;
        let framed = frame::encode(METADATA_MAGIC, FORMAT_VERSION, &json);
        self.storage.write_atomic(&path, &framed)
    }

    /// Deletes the directory and everything in it; a missing directory is fine.
    pub fn discard(&self) -> Result<()> {
        self.storage.delete(&self.path, true)
    }

    /// State names come from operators and, on restore, from a file someone may have edited;
    /// neither may escape the directory or clobber `_metadata` and temp files.
    pub(crate) fn check_state_name(&self, name: &str) -> Result<()> {
        let bad = |reason: &str| {
            StorageError::invalid_path(
                format!("{}/{name}", self.url),
                format!("not a valid state file name: {reason}"),
            )
        };
        if name == METADATA_FILE {
            return Err(bad("_metadata is reserved"));
        }
        for part in name.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(bad(
                    "must be relative, without empty, '.' or '..' components",
                ));
            }
            if part.starts_with('.') {
                return Err(bad(
                    "names starting with '.' are reserved for temporary files",
                ));
            }
        }
        Ok(())
    }
}

/// A job id names one directory; anything else could make us write or delete elsewhere.
pub(crate) fn check_job_id(base: &str, job_id: &str) -> Result<()> {
    if job_id.is_empty() || job_id.contains('/') || job_id.starts_with('.') {
        return Err(StorageError::invalid_path(
            join(base, job_id),
            format!("job id '{job_id}' is not a single directory name"),
        ));
    }
    Ok(())
}

/// Loads a snapshot for restore from `path`: a savepoint/checkpoint directory or its
/// `_metadata` file (URL or plain path). Reads nothing but `_metadata` and changes nothing.
pub fn load_snapshot(path: &str) -> Result<(SnapshotDir, CheckpointMetadata)> {
    let (storage, p) = resolve(path)?;
    let (dir, meta_path) = if file_name(&p) == METADATA_FILE {
        (parent(&p).to_string(), p)
    } else {
        let meta = join(&p, METADATA_FILE);
        (p, meta)
    };
    if !storage.exists(&dir)? {
        return Err(StorageError::NotFound {
            path: storage.url(&dir),
        });
    }
    let meta_url = storage.url(&meta_path);
    let bytes = match storage.read(&meta_path) {
        Err(StorageError::NotFound { .. }) => {
            return Err(StorageError::NotFound { path: meta_url });
        }
        r => r?,
    };
    let meta = decode_metadata(&meta_url, &bytes)?;
    Ok((SnapshotDir::new(storage, dir), meta))
}

fn decode_metadata(url: &str, bytes: &[u8]) -> Result<CheckpointMetadata> {
    let json = frame::decode(url, METADATA_MAGIC, FORMAT_VERSION, bytes)?;
    let meta: CheckpointMetadata = serde_json::from_slice(json)
        .map_err(|e| StorageError::corrupt(url, format!("invalid metadata JSON: {e}")))?;
    if meta.format_version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: url.to_string(),
            found: meta.format_version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(meta)
}

/// Verifies every state file a snapshot references (exists, length, CRC) without decoding the
/// state; returns the first problem.
pub fn verify_snapshot(dir: &SnapshotDir, meta: &CheckpointMetadata) -> Result<()> {
    for op in &meta.operators {
        for st in &op.subtasks {
            match &st.handle {
                StateHandle::Inline { .. } => {}
                StateHandle::File { .. } => {
                    dir.read_state(&st.handle)?;
                }
                StateHandle::Incremental {
                    private, shared, ..
                } => {
                    for f in private {
                        dir.verify_native_file(f, false)?;
                    }
                    for f in shared {
                        dir.verify_native_file(f, true)?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn native_file(name: &str, path: String, bytes: &[u8]) -> NativeFile {
    NativeFile {
        name: name.to_string(),
        path,
        len: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
        raw: false,
    }
}

/// Inline state as a hex string: readable in `_metadata`, half the size of a JSON number array.
mod hex_bytes {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let hex: String = bytes
            .iter()
            .flat_map(|b| [DIGITS[(b >> 4) as usize], DIGITS[(b & 15) as usize]])
            .map(char::from)
            .collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let hex = String::deserialize(d)?;
        if hex.len() % 2 != 0 {
            return Err(D::Error::custom("hex state has an odd number of digits"));
        }
        let digit = |c: u8| {
            (c as char)
                .to_digit(16)
                .map(|d| d as u8)
                .ok_or_else(|| D::Error::custom(format!("'{}' is not a hex digit", c as char)))
        };
        hex.as_bytes()
            .chunks(2)
            .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect()
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
pub(crate) mod tests;
