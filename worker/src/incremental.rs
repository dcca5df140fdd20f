//! Native RocksDB checkpoints, the uploader's and the restorer's part.
//!
//! Without `state.backend.incremental` every file of the checkpoint is stored under
//! `<prefix>/` in the checkpoint directory (a full checkpoint, still the database's own files:
//! no key-by-key scan); so is a native savepoint, whose files are always copies (never links
//! to the live database's files, never in `shared/`). With it:
//! A native checkpoint is a directory of RocksDB files. SST files never change once written, so
//! each is stored once, as `shared/<instance>-<checkpoint>-<name>` in the job directory, and
//! every later checkpoint of the same database only references it; the other files (MANIFEST,
//! CURRENT, OPTIONS) are small and stored per checkpoint. A job-wide [`SharedRegistry`]
//! remembers what is already stored. An upload is only reused once the checkpoint that made it
//! has completed: the files of an aborted checkpoint are deleted by retention.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;
use sluice_core::SluiceError;
use sluice_hdfs_backend::{NativeFile, SnapshotDir, StateHandle, shared_file_name};

use crate::snapshot::{IncrementalMeta, KeyedSnapshot, LocalDir, NativeState, OperatorSnapshot};

struct Uploaded {
    file: NativeFile,
    by: u64,
    confirmed: bool,
}

/// Which local SST file of which database instance is stored where; shared by the uploader
/// threads of a job.
#[derive(Default)]
pub struct SharedRegistry {
    files: Mutex<HashMap<(String, String), Uploaded>>,
}

/// The handle of a stored snapshot and the bytes this store actually wrote.
pub struct Stored {
    pub handle: StateHandle,
    pub written: u64,
}

/// Stores the native part of `snap` (checkpoint `checkpoint_id`, files of this subtask named
/// `<prefix>/<file>` in the checkpoint directory) and returns its `Incremental` handle.
pub fn store_native(
    dir: &SnapshotDir,
    checkpoint_id: u64,
    prefix: &str,
    mut snap: OperatorSnapshot,
    registry: &SharedRegistry,
    threads: usize,
) -> Result<Stored, String> {
    let keyed = snap.keyed.as_mut().ok_or("no keyed state")?;
    if keyed.native.len() != 1 {
        return Err(format!(
            "{} native databases in one snapshot",
            keyed.native.len()
        ));
    }
    let native = keyed.native.pop().expect("one");
    native.wait_ready()?;
    let local = &native.dir.0;
    let mut names: Vec<String> = std::fs::read_dir(local)
        .and_then(|d| {
            d.map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .map_err(|e| format!("listing {}: {e}", local.display()))?;
    names.sort();
    let job_dir = dir.job_dir_url();
    let inherited: HashMap<&str, &NativeFile> = match &native.inherited {
        Some((from, files)) if *from == job_dir => {
            files.iter().map(|f| (f.name.as_str(), f)).collect()
        }
        _ => HashMap::new(),
    };
    let sharing = native.incremental && !native.savepoint;
    let (mut private, mut shared, mut written) = (Vec::new(), Vec::new(), 0u64);
    // The files to store: (private?, position in `private`/`shared`, registry key, name).
    let mut to_store = Vec::new();
    for name in &names {
        let is_sst = name.ends_with(".sst");
        if !(sharing && is_sst) {
            // Without `state.backend.incremental` every file is this checkpoint's own.
            to_store.push((true, private.len(), None, name.as_str()));
            private.push(NativeFile::default());
            continue;
        }
        let key = (native.instance.clone(), name.clone());
        if let Some(f) = reusable(dir, registry, &key, checkpoint_id)? {
            shared.push(f);
            continue;
        }
        if let Some(f) = inherited.get(name.as_str()) {
            shared.push((*f).clone());
            continue;
        }
        to_store.push((false, shared.len(), Some(key), name.as_str()));
        shared.push(NativeFile::default());
    }
    // Files go up `threads` at a time (`state.backend.rocksdb.checkpoint.transfer.thread.num`),
    // each streamed in pieces; SST files never change, so on a local disk they are linked.
    // A native savepoint copies even SST files: a link would share the bytes (and the inode)
    // with the live database, and the savepoint must be the user's own, movable copy.
    let link = !native.savepoint;
    let stored = upload_parallel(&to_store, threads, |&(is_private, _, _, name)| {
        let path = local.join(name);
        let immutable = link && name.ends_with(".sst");
        let r = if is_private {
            dir.store_private_file(&format!("{prefix}/{name}"), name, &path, immutable)
        } else {
            let unique = shared_file_name(&native.instance, checkpoint_id, name);
            dir.store_shared_file(&unique, name, &path, immutable)
        };
        r.map_err(|e| format!("storing {}: {e}", path.display()))
    })?;
    for ((is_private, slot, key, _), f) in to_store.into_iter().zip(stored) {
        written += f.len;
        if is_private {
            private[slot] = f;
            continue;
        }
        if let Some(key) = key {
            registry.files.lock().insert(
                key,
                Uploaded {
                    file: f.clone(),
                    by: checkpoint_id,
                    confirmed: false,
                },
            );
        }
        shared[slot] = f;
    }
    dir.sync_native_dirs(prefix).map_err(|e| e.to_string())?;
    // SST files RocksDB deleted never come back under the same name: forget them.
    registry
        .files
        .lock()
        .retain(|(inst, name), _| *inst != native.instance || names.contains(name));
    let meta = IncrementalMeta {
        snapshot: snap,
        instance: native.instance.clone(),
        range: native.range,
    };
    let meta = bincode::serialize(&meta).map_err(|e| format!("does not serialise: {e}"))?;
    written += meta.len() as u64;
    Ok(Stored {
        handle: StateHandle::Incremental {
            meta,
            private,
            shared,
        },
        written,
    })
}

/// Runs `f` on every item with up to `threads` threads; the results in item order, or the
/// first error.
fn upload_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<R, String> + Sync,
) -> Result<Vec<R>, String> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<parking_lot::Mutex<Option<Result<R, String>>>> = items
        .iter()
        .map(|_| parking_lot::Mutex::new(None))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    let r = f(item);
                    let failed = r.is_err();
                    *results[i].lock() = Some(r);
                    if failed {
                        // Stop the others early: no later file is needed any more.
                        next.store(items.len(), std::sync::atomic::Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for (i, r) in results.into_iter().enumerate() {
        match r.into_inner() {
            Some(r) => out.push(r?),
            None => {
                return Err(format!(
                    "transfer {i} was abandoned after another transfer failed"
                ));
            }
        }
    }
    Ok(out)
}

/// The stored copy of a file, if the checkpoint that stored it has completed.
fn reusable(
    dir: &SnapshotDir,
    registry: &SharedRegistry,
    key: &(String, String),
    checkpoint_id: u64,
) -> Result<Option<NativeFile>, String> {
    let (file, by) = match registry.files.lock().get(key) {
        None => return Ok(None),
        Some(u) if u.confirmed => return Ok(Some(u.file.clone())),
        Some(u) => (u.file.clone(), u.by),
    };
    if by >= checkpoint_id || !dir.checkpoint_complete(by).map_err(|e| e.to_string())? {
        return Ok(None);
    }
    if let Some(u) = registry.files.lock().get_mut(key) {
        u.confirmed = true;
    }
    Ok(Some(file))
}

/// Downloads the files of an incremental handle into a new directory under `local_base`
/// (`threads` at a time) and returns the snapshot with the database attached as native state.
pub fn fetch_native(
    dir: &SnapshotDir,
    handle: &StateHandle,
    local_base: &Path,
    threads: usize,
) -> Result<OperatorSnapshot, String> {
    fetch_native_counted(dir, handle, local_base, threads, &AtomicU64::new(0))
}

/// Bytes of database files an incremental handle refers to (0 for other handles): what
/// [`fetch_native`] downloads.
pub fn native_bytes(handle: &StateHandle) -> u64 {
    match handle {
        StateHandle::Incremental {
            private, shared, ..
        } => private.iter().chain(shared).map(|f| f.len).sum(),
        _ => 0,
    }
}

/// [`fetch_native`] that adds the length of every file to `fetched` once it is in place, for
/// progress reports.
pub fn fetch_native_counted(
    dir: &SnapshotDir,
    handle: &StateHandle,
    local_base: &Path,
    threads: usize,
    fetched: &AtomicU64,
) -> Result<OperatorSnapshot, String> {
    let StateHandle::Incremental {
        meta,
        private,
        shared,
    } = handle
    else {
        return Err("not an incremental state handle".into());
    };
    let meta: IncrementalMeta =
        bincode::deserialize(meta).map_err(|e| format!("its description does not decode: {e}"))?;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let target = local_base.join(format!(
        "restore-{}-{}-{n}",
        meta.instance,
        std::process::id()
    ));
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let local = Arc::new(LocalDir(target));
    let files: Vec<(&NativeFile, bool)> = private
        .iter()
        .map(|f| (f, false))
        .chain(shared.iter().map(|f| (f, true)))
        .collect();
    upload_parallel(&files, threads, |&(f, is_shared)| {
        fetch_one(dir, f, is_shared, &local.0)?;
        fetched.fetch_add(f.len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })?;
    let mut snap = meta.snapshot;
    let keyed = snap.keyed.get_or_insert_with(KeyedSnapshot::default);
    keyed.native.push(NativeState {
        dir: local,
        instance: meta.instance,
        range: meta.range,
        tables: keyed.tables.clone(),
        inherited: Some((dir.job_dir_url(), shared.clone())),
        // Decided again by the store the database is opened into.
        incremental: true,
        savepoint: false,
        canonical: false,
        ready: None,
    });
    Ok(snap)
}

fn fetch_one(dir: &SnapshotDir, f: &NativeFile, shared: bool, local: &Path) -> Result<(), String> {
    // The name comes from `_metadata`: it must stay a plain file name inside `local`.
    if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
        return Err(format!("'{}' is not a database file name", f.name));
    }
    dir.fetch_native_file(f, shared, &local.join(&f.name))
        .map_err(|e| e.to_string())
}

/// Any state handle in the canonical form (key-group blobs indexed by `tables`): incremental
/// handles are downloaded under `local_base` and read out of their RocksDB files. For tools
/// such as `sluice inspect`, which show state without running the job.
pub fn read_canonical(
    dir: &SnapshotDir,
    handle: &StateHandle,
    local_base: &Path,
) -> Result<OperatorSnapshot, String> {
    if !matches!(handle, StateHandle::Incremental { .. }) {
        let bytes = dir.read_state(handle).map_err(|e| e.to_string())?;
        return bincode::deserialize(&bytes).map_err(|e| format!("the state does not decode: {e}"));
    }
    let mut snap = fetch_native(dir, handle, local_base, 4)?;
    if let Some(k) = snap.keyed.as_mut() {
        read_out_native(k, "inspect").map_err(|e| e.to_string())?;
    }
    Ok(snap)
}

/// Reads every entry of the native databases of `keyed` into its key-group blobs (the
/// canonical form) and drops the databases; `uid` names the operator in errors.
pub fn read_out_native(keyed: &mut KeyedSnapshot, uid: &str) -> sluice_core::Result<()> {
    for n in std::mem::take(&mut keyed.native) {
        n.wait_ready().map_err(|e| SluiceError::State {
            uid: uid.to_string(),
            state: "rocksdb".into(),
            message: e,
        })?;
        let groups = crate::state::scan_native(&n, n.range, uid)?;
        keyed.merge_groups(&n.tables, groups);
    }
    keyed.groups.retain(|_, b| !b.is_empty());
    Ok(())
}
