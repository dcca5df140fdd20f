//! Incremental RocksDB checkpoints (`state.backend.incremental`): exactly-once recovery,
//! retention of shared files, restore at another parallelism, and that a checkpoint of
//! unchanged state stores almost nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice::JobStatus;
use sluice::prelude::*;
use sluice_hdfs_backend::{SnapshotDir, SnapshotKind, StateHandle, load_snapshot, verify_snapshot};
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
    use sluice_worker::data::{Barrier, BarrierKind};
    use sluice_worker::incremental::{SharedRegistry, fetch_native, store_native};
    use sluice_worker::snapshot::OperatorSnapshot;
    use sluice_worker::state::testing;

    let keys: u64 = std::env::var("SLUICE_INCR_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8 << 20);
    let local = tempfile::tempdir().unwrap();
    let ck = tempfile::tempdir().unwrap();
    let config = testing::rocksdb_config(local.path());
    let (store, state) = testing::open(&config, None).unwrap();
    let t = Instant::now();
    // Unchanged state: RocksDB finishes flushing and compacting what was just written.
    testing::fill(&store, &state, keys).unwrap();
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
        let meta = testing::metadata("job", id, SnapshotKind::Checkpoint, stored.handle.clone());
        dir.write_metadata(&meta).unwrap();
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
    let (_store, state) = testing::open(&config, Some(restored)).unwrap();
    println!("restored in {:?}", t.elapsed());
    testing::check(&state, keys).unwrap();
}
