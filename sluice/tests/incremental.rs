//! Incremental RocksDB checkpoints (`state.backend.incremental`): exactly-once recovery,
//! retention of shared files, restore at another parallelism, and that a checkpoint of
//! unchanged state stores almost nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::JobStatus;
use sluice::prelude::*;
use sluice_hdfs_backend::{
    CheckpointMetadata, FORMAT_VERSION, OperatorState, SnapshotDir, SnapshotKind, StateHandle,
    SubtaskState, load_snapshot, verify_snapshot,
};
use sluice_testkit::{assert_same, expected_sums, sums_job_into};

fn incremental(env: &StreamEnv, dir: &std::path::Path, interval: &str) {
    for (k, v) in [
        ("state.backend.type", "rocksdb"),
        ("state.backend.incremental", "true"),
        ("execution.checkpointing.interval", interval),
        ("state.checkpoints.dir", dir.to_str().unwrap()),
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.delay", "10 ms"),
    ] {
        env.set(k, v).unwrap();
    }
}

/// The shared files `_metadata` of a checkpoint references, as paths relative to the job dir.
fn shared_refs(chk: &str) -> BTreeSet<String> {
    let (dir, meta) = load_snapshot(chk).unwrap();
    verify_snapshot(&dir, &meta).unwrap();
    meta.operators
        .iter()
        .flat_map(|o| &o.subtasks)
        .filter_map(|s| match &s.handle {
            StateHandle::Incremental { shared, .. } => Some(shared),
            _ => None,
        })
        .flatten()
        .map(|f| f.path.clone())
        .collect()
}

#[test]
fn injected_failures_recover_exactly_once_from_incremental_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    incremental(&env, dir.path(), "30 ms");
    let out = sluice::CollectHandle::default();
    sums_job_into(&env, 6000, Some(12_000.0), vec![1500, 3100, 4700], &out);
    let client = env.execute_async("incremental-exactly-once").unwrap();
    let job_id = client.job_id().to_string();
    let r = client.wait().unwrap();
    assert_eq!(r.restarts, 3);
    let completed: Vec<_> = r
        .checkpoints
        .iter()
        .filter(|c| c.status == sluice::CheckpointStatus::Completed)
        .collect();
    assert!(!completed.is_empty());
    assert_same(out.get(), expected_sums(6000), "incremental rocksdb");
    let latest = completed.iter().map(|c| c.id).max().unwrap();
    let chk = dir.path().join(&job_id).join(format!("chk-{latest}"));
    assert!(
        !shared_refs(chk.to_str().unwrap()).is_empty(),
        "the sums' state is in shared SST files"
    );
}

#[test]
fn retention_of_one_keeps_exactly_the_referenced_shared_files() {
    let dir = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    incremental(&env, dir.path(), "15 ms");
    env.set("state.checkpoints.num-retained", "1").unwrap();
    let out = sluice::CollectHandle::default();
    sums_job_into(&env, 8000, Some(8000.0), vec![], &out);
    let client = env.execute_async("incremental-retention").unwrap();
    let job_id = client.job_id().to_string();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    let completed: Vec<u64> = r
        .checkpoints
        .iter()
        .filter(|c| c.status == sluice::CheckpointStatus::Completed)
        .map(|c| c.id)
        .collect();
    assert!(completed.len() >= 5, "{completed:?}");
    let latest = *completed.iter().max().unwrap();
    let job_dir = dir.path().join(&job_id);
    let chk: Vec<String> = std::fs::read_dir(&job_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chk-"))
        .collect();
    assert_eq!(chk, [format!("chk-{latest}")]);
    let referenced = shared_refs(job_dir.join(&chk[0]).to_str().unwrap());
    let present: BTreeSet<String> = std::fs::read_dir(job_dir.join("shared"))
        .unwrap()
        .map(|e| format!("shared/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    assert!(
        referenced.is_subset(&present),
        "{referenced:?} ⊄ {present:?}"
    );
    // Everything else was deleted, except uploads of checkpoints aborted when the job ended
    // (`shared/<instance>-<checkpoint>-<file>`), which the next retention run deletes.
    for extra in present.difference(&referenced) {
        let by: u64 = extra.split('-').nth(1).unwrap().parse().unwrap();
        assert!(
            by > latest,
            "{extra} is referenced by no retained checkpoint"
        );
    }
    println!(
        "{} completed checkpoints; shared/ holds {} files, {} referenced by chk-{latest}",
        completed.len(),
        present.len(),
        referenced.len()
    );
}

#[test]
fn restore_from_an_incremental_checkpoint_at_another_parallelism() {
    let ck = tempfile::tempdir().unwrap();
    let total = 8000;
    let env = StreamEnv::new();
    env.set_parallelism(2);
    incremental(&env, ck.path(), "1 h"); // only the checkpoint triggered below
    let out = sluice::CollectHandle::default();
    sums_job_into(&env, total, Some(8000.0), vec![], &out);
    let client = env.execute_async("before").unwrap();
    while client
        .metrics()
        .get("sums")
        .is_none_or(|m| m.records_in < 2000)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let location = client.trigger_checkpoint().unwrap();
    client.cancel();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Canceled);
    assert!(!shared_refs(&location).is_empty(), "{location}");
    // The cancel may come before the sink heard that the checkpoint completed: what it
    // pre-committed is published by the restore below.
    assert!(out.len() < total as usize, "{}", out.len());

    // Same job at parallelism 3: every new subtask reads its key groups out of the two old
    // databases. The same sink (an external system would be the same too): the restore
    // re-publishes what the checkpoint pre-committed, idempotently.
    let env = StreamEnv::new();
    env.set_parallelism(3);
    env.set("state.backend.type", "rocksdb").unwrap();
    env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
    sums_job_into(&env, total, None, vec![], &out);
    env.execute("after").unwrap();
    assert_same(out.get(), expected_sums(total), "parallelism 3");
}

/// ~1 GiB of RocksDB state (8 M keys × 128-byte values; `SLUICE_INCR_KEYS` overrides the key
/// count) checkpointed twice without changes: the second stores < 1% of the first.
#[test]
fn second_checkpoint_of_unchanged_state_stores_almost_nothing() {
    use sluice_core::Config;
    use sluice_worker::context::OperatorContext;
    use sluice_worker::data::{Barrier, BarrierKind};
    use sluice_worker::incremental::{SharedRegistry, fetch_native, store_native};
    use sluice_worker::snapshot::OperatorSnapshot;
    use sluice_worker::state::KeyedStateStore;

    let keys: u64 = std::env::var("SLUICE_INCR_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8 << 20);
    let local = tempfile::tempdir().unwrap();
    let ck = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.state_backend = sluice_core::config::StateBackendKind::RocksDb;
    config.incremental = true;
    config.rocksdb_local_dir = Some(local.path().to_path_buf());
    config.rocksdb_write_buffer_bytes = 64 << 20;
    let config = Arc::new(config);
    let mut ctx = OperatorContext::standalone("big", config.clone());
    let mut store = KeyedStateStore::open(&mut ctx).unwrap();
    let state = store.value::<u64, Vec<u8>>("v").unwrap();
    let t = Instant::now();
    for k in 0..keys {
        state.put(&k, value_of(k)).unwrap();
    }
    // Unchanged state: let RocksDB finish flushing and compacting what was just written.
    store.wait_for_compactions().unwrap();
    println!("wrote and compacted {keys} keys in {:?}", t.elapsed());

    let registry = SharedRegistry::default();
    let base = ck.path().to_str().unwrap();
    let mut written = Vec::new();
    let mut last = None;
    for id in 1..=2u64 {
        let t = Instant::now();
        let barrier = Barrier {
            checkpoint_id: id,
            timestamp_ms: 0,
            kind: BarrierKind::Checkpoint,
        };
        let snap = OperatorSnapshot {
            keyed: Some(store.snapshot_at(&barrier).unwrap()),
            operator_state: Vec::new(),
        };
        let dir = SnapshotDir::checkpoint(base, "job", id).unwrap();
        let stored = store_native(&dir, id, "op-big-0", snap, &registry, 4).unwrap();
        dir.write_metadata(&metadata(id, stored.handle.clone()))
            .unwrap();
        println!(
            "checkpoint {id}: stored {} bytes of {} referenced, in {:?}",
            stored.written,
            stored.handle.len(),
            t.elapsed()
        );
        written.push(stored.written);
        last = Some((dir, stored.handle));
    }
    assert!(written[0] > (keys * 100), "{written:?}");
    assert!(
        written[1] * 100 < written[0],
        "checkpoint 2 stored {} bytes, checkpoint 1 {}",
        written[1],
        written[0]
    );

    // Restores natively: the downloaded database opens as this subtask's state.
    let (dir, handle) = last.unwrap();
    let t = Instant::now();
    let restored = fetch_native(&dir, &handle, local.path(), 4).unwrap();
    let mut ctx = OperatorContext::standalone("big", config);
    ctx.restored = Some(restored);
    let mut store = KeyedStateStore::open(&mut ctx).unwrap();
    let state = store.value::<u64, Vec<u8>>("v").unwrap();
    println!("restored in {:?}", t.elapsed());
    for k in [0, 1, keys / 2, keys - 1] {
        assert_eq!(state.get(&k).unwrap(), Some(value_of(k)), "key {k}");
    }
    assert_eq!(state.get(&keys).unwrap(), None);
}

/// 120 bytes that LZ4 cannot shrink much, so the state really is ~1 GiB on disk.
fn value_of(k: u64) -> Vec<u8> {
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

fn metadata(id: u64, handle: StateHandle) -> CheckpointMetadata {
    CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: "job".into(),
        job_name: "big".into(),
        checkpoint_id: id,
        kind: SnapshotKind::Checkpoint,
        timestamp_ms: 0,
        max_parallelism: 128,
        operators: vec![OperatorState {
            uid: "big".into(),
            name: "big".into(),
            parallelism: 1,
            subtasks: vec![SubtaskState { subtask: 0, handle }],
        }],
    }
}
