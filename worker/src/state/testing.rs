//! A large RocksDB keyed state, built the same way by the state benchmark and the tests that
//! measure checkpoints and savepoints of ~1 GiB: one operator `big` with a value state `v` of
//! `u64` keys and 120-byte values that LZ4 cannot shrink much (8 M keys ≈ 1.1 GiB on disk).

use std::path::Path;
use std::sync::Arc;

use sluice_core::config::StateBackendKind;
use sluice_core::{Config, Result, SluiceError};
use sluice_hdfs_backend::{
    CheckpointMetadata, FORMAT_VERSION, OperatorState, SnapshotKind, StateHandle, SubtaskState,
};

use super::{KeyedStateStore, ValueState};
use crate::context::OperatorContext;
use crate::snapshot::OperatorSnapshot;

/// The uid of the operator whose state this is.
pub const UID: &str = "big";

/// RocksDB, incremental checkpoints, databases under `local`, 64 MiB write buffers.
pub fn rocksdb_config(local: &Path) -> Arc<Config> {
    let mut config = Config::default();
    config.state_backend = StateBackendKind::RocksDb;
    config.incremental = true;
    config.rocksdb_local_dir = Some(local.to_path_buf());
    config.rocksdb_write_buffer_bytes = 64 << 20;
    Arc::new(config)
}

/// Opens the store of subtask 0 of [`UID`] (from `restored`, if given) and registers `v`.
pub fn open(
    config: &Arc<Config>,
    restored: Option<OperatorSnapshot>,
) -> Result<(KeyedStateStore, ValueState<u64, Vec<u8>>)> {
    let mut ctx = OperatorContext::standalone(UID, config.clone());
    ctx.restored = restored;
    let mut store = KeyedStateStore::open(&mut ctx)?;
    let state = store.value::<u64, Vec<u8>>("v")?;
    Ok((store, state))
}

/// Writes keys `0..keys`, then waits until RocksDB has flushed and compacted them, so the
/// state's files stop changing.
pub fn fill(store: &KeyedStateStore, state: &ValueState<u64, Vec<u8>>, keys: u64) -> Result<()> {
    for k in 0..keys {
        state.put(&k, value_of(k))?;
    }
    store.wait_for_compactions()
}

/// Checks a few keys of a restored state (first, middle, last, one past the end).
pub fn check(state: &ValueState<u64, Vec<u8>>, keys: u64) -> Result<()> {
    for k in [0, keys / 2, keys - 1] {
        if state.get(&k)? != Some(value_of(k)) {
            return Err(SluiceError::Internal(format!("key {k} restored wrong")));
        }
    }
    if state.get(&keys)?.is_some() {
        return Err(SluiceError::Internal(format!(
            "key {keys} should not exist"
        )));
    }
    Ok(())
}

/// 120 bytes that LZ4 cannot shrink much, so the state really is ~1 GiB on disk.
pub fn value_of(k: u64) -> Vec<u8> {
    let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..15)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// `_metadata` of a snapshot holding only `handle`, subtask 0 of [`UID`] at parallelism 1.
pub fn metadata(
    job_id: &str,
    id: u64,
    kind: SnapshotKind,
    handle: StateHandle,
) -> CheckpointMetadata {
    CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: job_id.into(),
        job_name: UID.into(),
        checkpoint_id: id,
        kind,
        timestamp_ms: 0,
        max_parallelism: 128,
        operators: vec![OperatorState {
            uid: UID.into(),
            name: UID.into(),
            parallelism: 1,
            subtasks: vec![SubtaskState { subtask: 0, handle }],
        }],
    }
}
