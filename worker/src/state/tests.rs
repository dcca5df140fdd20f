use std::sync::Arc;

use sluice_core::Config;
use sluice_core::config::StateBackendKind;

use super::*;
use crate::blob_pool::BlobPool;
use crate::snapshot::OperatorSnapshot;

fn ctx(
    backend: StateBackendKind,
    parallelism: usize,
    index: usize,
    restored: Option<OperatorSnapshot>,
) -> OperatorContext {
    let mut config = Config::default();
    config.state_backend = backend;
    config.rocksdb_cache_entries = 16; // force cache flushes in tests
    let mut c = OperatorContext::standalone("op", Arc::new(config));
    c.parallelism = parallelism;
    c.subtask = index;
    c.key_groups = KeyGroupRange::for_subtask(c.max_parallelism, parallelism, index);
    c.restored = restored;
    c
}

type Filled = (
    ValueState<String, u64>,
    MapState<String, i64, String>,
    ListState<String, u32>,
);

fn fill(store: &mut KeyedStateStore) -> Result<Filled> {
    let v: ValueState<String, u64> = store.value("count")?;
    let m: MapState<String, i64, String> = store.map("seen")?;
    let l: ListState<String, u32> = store.list("items")?;
    for i in 0..500u64 {
        let k = format!("key{}", i % 100);
        v.merge(&k, 1, |a, b| *a += b)?;
        m.put(&k, (i % 7) as i64, format!("v{i}"))?;
        l.add(&k, i as u32)?;
    }
    Ok((v, m, l))
}

fn check(store: &mut KeyedStateStore, keys: impl Iterator<Item = String>) -> Result<usize> {
    let v: ValueState<String, u64> = store.value("count")?;
    let m: MapState<String, i64, String> = store.map("seen")?;
    let l: ListState<String, u32> = store.list("items")?;
    let mut n = 0;
    for k in keys {
        assert_eq!(v.get(&k)?, Some(5), "{k}");
        assert_eq!(m.entries(&k)?.len(), 5, "{k}");
        assert_eq!(l.get(&k)?.len(), 5, "{k}");
        n += 1;
    }
    Ok(n)
}

#[test]
fn snapshot_restores_across_backends_and_parallelism() -> Result<()> {
    for (from, to) in [
        (StateBackendKind::HashMap, StateBackendKind::RocksDb),
        (StateBackendKind::RocksDb, StateBackendKind::HashMap),
        (StateBackendKind::RocksDb, StateBackendKind::RocksDb),
    ] {
        let mut c = ctx(from, 1, 0, None);
        let mut store = KeyedStateStore::open(&mut c)?;
        fill(&mut store)?;
        let snap = OperatorSnapshot {
            keyed: Some(store.snapshot()?),
            operator_state: vec![],
        };
        drop(store);
        // Restore at parallelism 3: every key lands in exactly one subtask, with its full state.
        let mut total = 0;
        for i in 0..3 {
            let part = OperatorSnapshot::redistribute(std::slice::from_ref(&snap), 128, 3, i);
            let mut c = ctx(to, 3, i, Some(part));
            let range = c.key_groups;
            let mut store = KeyedStateStore::open(&mut c)?;
            let mine = (0..100)
                .map(|i| format!("key{i}"))
                .filter(|k| range.contains(key_group(k, 128)));
            total += check(&mut store, mine)?;
        }
        assert_eq!(total, 100, "{from:?} -> {to:?}");
    }
    Ok(())
}

#[test]
fn state_that_no_longer_decodes_names_operator_and_state() -> Result<()> {
    let mut c = ctx(StateBackendKind::HashMap, 1, 0, None);
    let mut store = KeyedStateStore::open(&mut c)?;
    let v: ValueState<String, String> = store.value("count")?;
    v.put(&"a".to_string(), "not a number".into())?;
    let snap = OperatorSnapshot {
        keyed: Some(store.snapshot()?),
        operator_state: vec![],
    };
    let mut c = ctx(StateBackendKind::HashMap, 1, 0, Some(snap));
    let mut store = KeyedStateStore::open(&mut c)?;
    let err = match store.value::<String, (u64, u64, u64)>("count") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a string restored as u64 must fail"),
    };
    assert!(err.contains("'count'") && err.contains("'op'"), "{err}");
    Ok(())
}

/// Without `state.backend.incremental`, a RocksDB checkpoint is still the database's own files
/// (no key-by-key scan), all of them in the checkpoint directory: nothing shared, SST files
/// linked on a local disk. The copy restores after the database directory is gone, at the same
/// parallelism (opened as it is) and at another (read out per key group).
#[test]
fn full_rocksdb_checkpoints_store_every_native_file_and_restore_at_any_parallelism() -> Result<()> {
    use crate::data::{Barrier, BarrierKind};
    use crate::incremental::{SharedRegistry, fetch_native, read_out_native, store_native};
    use sluice_hdfs_backend::{SnapshotDir, StateHandle};

    let tmp = tempfile::tempdir().expect("temp dir");
    let mut c = ctx(StateBackendKind::RocksDb, 1, 0, None);
    let mut store = KeyedStateStore::open(&mut c)?;
    fill(&mut store)?;
    let barrier = Barrier {
        checkpoint_id: 6,
        timestamp_ms: 0,
        kind: BarrierKind::Checkpoint,
    };
    // Small state is stored canonical (one file or inline, not four or more): the task links
    // the database's files at the barrier, and the uploader reads the entries out of them,
    // exactly as a scan at the barrier finds them; what changes after the barrier is not in it.
    let mut small = store.snapshot_at(&barrier)?;
    assert!(small.native.len() == 1 && small.native[0].canonical);
    let scanned = store.snapshot()?;
    assert!(!scanned.groups.is_empty());
    let big: ValueState<u64, Vec<u8>> = store.value("big")?;
    big.put(&0, vec![1])?;
    store.wait_for_compactions()?;
    let linked = small.native[0].dir.0.clone();
    read_out_native(&mut small, "op")?;
    assert!(small.native.is_empty());
    assert!(!linked.exists(), "{} is left behind", linked.display());
    assert_eq!(small.tables, scanned.tables);
    assert_eq!(small.groups, scanned.groups);
    // 2 MiB that compression cannot shrink.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        (0..128)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect::<Vec<u8>>()
    };
    let last = (0..2048u64)
        .map(|k| {
            let v = noise();
            big.put(&k, v.clone()).map(|()| v)
        })
        .collect::<Result<Vec<_>>>()?
        .pop();
    store.wait_for_compactions()?; // into SST files, where the size estimate looks
    let barrier = Barrier {
        checkpoint_id: 7,
        timestamp_ms: 0,
        kind: BarrierKind::Checkpoint,
    };
    let keyed = store.snapshot_at(&barrier)?;
    assert!(keyed.native.len() == 1 && !keyed.native[0].incremental);
    let snap = OperatorSnapshot {
        keyed: Some(keyed),
        operator_state: vec![],
    };
    let dir = SnapshotDir::checkpoint(tmp.path().to_str().expect("UTF-8"), "job", 7)
        .expect("checkpoint dir");
    let stored =
        store_native(&dir, 7, "op-op-0", snap, &SharedRegistry::default(), 2).expect("stored");
    let StateHandle::Incremental {
        private, shared, ..
    } = &stored.handle
    else {
        panic!("a native handle: {:?}", stored.handle);
    };
    assert!(shared.is_empty(), "{shared:?}");
    assert!(
        private.iter().any(|f| f.name.ends_with(".sst") && f.raw),
        "{private:?}"
    );
    assert!(
        private
            .iter()
            .any(|f| f.name.starts_with("MANIFEST") && !f.raw),
        "{private:?}"
    );
    drop(store); // deletes the database directory

    let restored = fetch_native(&dir, &stored.handle, tmp.path(), 2).expect("fetched");
    let mut c = ctx(StateBackendKind::RocksDb, 1, 0, Some(restored));
    let mut store = KeyedStateStore::open(&mut c)?;
    assert_eq!(check(&mut store, (0..100).map(|i| format!("key{i}")))?, 100);
    let big: ValueState<u64, Vec<u8>> = store.value("big")?;
    assert_eq!(big.get(&2047)?, last);
    drop(store);

    let mut total = 0;
    for i in 0..2 {
        let restored = fetch_native(&dir, &stored.handle, tmp.path(), 2).expect("fetched");
        let part = OperatorSnapshot::redistribute(std::slice::from_ref(&restored), 128, 2, i);
        let mut c = ctx(StateBackendKind::RocksDb, 2, i, Some(part));
        let range = c.key_groups;
        let mut store = KeyedStateStore::open(&mut c)?;
        let mine = (0..100)
            .map(|i| format!("key{i}"))
            .filter(|k| range.contains(key_group(k, 128)));
        total += check(&mut store, mine)?;
    }
    assert_eq!(total, 100);
    Ok(())
}

/// A checkpoint writes the RocksDB cache back and keeps it: values and removals before the
/// first snapshot are in it, changes after it are not, and the next snapshot has them.
#[test]
fn rocksdb_snapshots_write_the_cache_back_and_keep_it() -> Result<()> {
    let roomy = |restored| {
        let mut c = ctx(StateBackendKind::RocksDb, 1, 0, restored);
        let mut config = (*c.config).clone();
        config.rocksdb_cache_entries = 1000; // nothing is evicted: only snapshots write back
        c.config = Arc::new(config);
        c
    };
    let mut c = roomy(None);
    let mut store = KeyedStateStore::open(&mut c)?;
    let v: ValueState<u32, u64> = store.value("v")?;
    for k in 0..50 {
        v.put(&k, u64::from(k))?;
    }
    for k in 0..10 {
        v.remove(&k)?;
    }
    let first = OperatorSnapshot {
        keyed: Some(store.snapshot()?),
        operator_state: vec![],
    };
    for k in 0..20 {
        v.put(&k, 1000)?;
    }
    let second = OperatorSnapshot {
        keyed: Some(store.snapshot()?),
        operator_state: vec![],
    };
    drop(v);
    drop(store);
    let values = |snap: &OperatorSnapshot| -> Result<Vec<Option<u64>>> {
        let mut c = roomy(Some(snap.clone()));
        let mut store = KeyedStateStore::open(&mut c)?;
        let v: ValueState<u32, u64> = store.value("v")?;
        (0..50).map(|k| v.get(&k)).collect()
    };
    let expected_first: Vec<Option<u64>> = (0..50u64).map(|k| (k >= 10).then_some(k)).collect();
    let expected_second: Vec<Option<u64>> = (0..50u64)
        .map(|k| Some(if k < 20 { 1000 } else { k }))
        .collect();
    assert_eq!(values(&first)?, expected_first);
    assert_eq!(values(&second)?, expected_second);
    Ok(())
}

/// Checkpoints of RocksDB value state through the path jobs take (`snapshot_at`): write-backs
/// too large for the memtable path are written by the writer thread while the task goes on,
/// also when the cache evicts; while the database was never written, the caches are copied
/// instead. Each snapshot holds exactly the values at its barrier, and the live state reads
/// every value back, from the cache or from RocksDB.
#[test]
fn rocksdb_checkpoints_hold_the_values_at_their_barrier() -> Result<()> {
    use crate::data::{Barrier, BarrierKind};
    use crate::incremental::read_out_native;

    let with_cache = |entries: usize, restored| {
        let mut c = ctx(StateBackendKind::RocksDb, 1, 0, restored);
        let mut config = (*c.config).clone();
        config.rocksdb_cache_entries = entries;
        c.config = Arc::new(config);
        c
    };
    let barrier = |checkpoint_id| Barrier {
        checkpoint_id,
        timestamp_ms: 0,
        kind: BarrierKind::Checkpoint,
    };
    let taken = |mut keyed: KeyedSnapshot| -> Result<OperatorSnapshot> {
        keyed.encode_frozen(&BlobPool::default())?;
        read_out_native(&mut keyed, "op")?;
        Ok(OperatorSnapshot {
            keyed: Some(keyed),
            operator_state: vec![],
        })
    };
    // (keys, cache entries, whether the database is in use from the start): the memtable
    // path; the writer thread with everything cached; the writer thread with evictions (the
    // cache holds fewer entries than there are keys); copies of the caches, small and large.
    for (n, cache, used) in [
        (50u32, 1000, true),
        (6000, 20_000, true),
        (6000, 5000, false),
        (50, 1000, false),
        (6000, 20_000, false),
    ] {
        let mut c = with_cache(cache, None);
        let mut store = KeyedStateStore::open(&mut c)?;
        let v: ValueState<u32, u64> = store.value("v")?;
        let other: ListState<u32, u32> = store.list("other")?;
        if used {
            other.add(&u32::MAX, 1)?; // list state writes through to the database
        }
        for k in 0..n {
            v.put(&k, u64::from(k))?;
        }
        for k in 0..10 {
            v.remove(&k)?;
        }
        let first = store.snapshot_at(&barrier(1))?;
        for k in 0..n / 2 {
            v.put(&k, 1000)?;
        }
        let second = store.snapshot_at(&barrier(2))?;
        let copied = !used && n < cache as u32;
        for (snap, which) in [(&first, "first"), (&second, "second")] {
            assert_eq!(
                snap.native.is_empty(),
                copied,
                "{n} keys, cache {cache}, database used {used}: {which} snapshot"
            );
            assert_eq!(snap.frozen.len(), usize::from(copied));
        }
        let expected_first: Vec<Option<u64>> =
            (0..u64::from(n)).map(|k| (k >= 10).then_some(k)).collect();
        let expected_second: Vec<Option<u64>> = (0..u64::from(n))
            .map(|k| Some(if k < u64::from(n / 2) { 1000 } else { k }))
            .collect();
        let live: Vec<Option<u64>> = (0..n).map(|k| v.get(&k)).collect::<Result<_>>()?;
        assert_eq!(live, expected_second, "{n} keys, cache {cache}: live");
        let (first, second) = (taken(first)?, taken(second)?);
        // Copying the caches left their entries dirty: written back now, every value is in
        // the database.
        let written = taken(store.snapshot()?)?;
        drop((v, other));
        drop(store);
        for (snap, expected, which) in [
            (&first, &expected_first, "first"),
            (&second, &expected_second, "second"),
            (&written, &expected_second, "written back"),
        ] {
            let mut c = with_cache(cache, Some(snap.clone()));
            let mut store = KeyedStateStore::open(&mut c)?;
            let v: ValueState<u32, u64> = store.value("v")?;
            let other: ListState<u32, u32> = store.list("other")?;
            assert_eq!(other.get(&u32::MAX)?.len(), usize::from(used));
            let got: Vec<Option<u64>> = (0..n).map(|k| v.get(&k)).collect::<Result<_>>()?;
            assert_eq!(&got, expected, "{n} keys, cache {cache}: {which} snapshot");
        }
    }
    Ok(())
}

/// A heap checkpoint freezes the tables at the barrier and the uploader encodes them later:
/// what the task changes in between (a value, a map entry, a list, a new key, a removal) is not
/// in the checkpoint, the encoding equals a synchronous snapshot taken at the barrier, and the
/// live state keeps every change.
#[test]
fn heap_checkpoints_hold_the_state_at_their_barrier() -> Result<()> {
    use crate::data::{Barrier, BarrierKind};

    let mut c = ctx(StateBackendKind::HashMap, 1, 0, None);
    let mut store = KeyedStateStore::open(&mut c)?;
    let (v, m, l) = fill(&mut store)?;
    let at_barrier = store.snapshot()?;
    let barrier = Barrier {
        checkpoint_id: 1,
        timestamp_ms: 0,
        kind: BarrierKind::Checkpoint,
    };
    let mut frozen = store.snapshot_at(&barrier)?;
    assert_eq!(
        frozen.frozen.len(),
        3,
        "value, map and list state are frozen"
    );
    assert!(
        frozen.groups.is_empty(),
        "nothing is encoded at the barrier"
    );
    v.put(&"key1".to_string(), 1000)?;
    v.put(&"new".to_string(), 1)?;
    m.put(&"key2".to_string(), 99, "later".to_string())?;
    l.add(&"key3".to_string(), 7)?;
    v.remove(&"key4".to_string())?;
    frozen.encode_frozen(&BlobPool::default())?;
    assert!(frozen.frozen.is_empty());
    assert_eq!(frozen.tables, at_barrier.tables);
    assert_eq!(frozen.groups, at_barrier.groups);
    assert_eq!(v.get(&"key1".to_string())?, Some(1000));
    assert_eq!(v.get(&"key4".to_string())?, None);
    assert_eq!(m.entries(&"key2".to_string())?.len(), 6);
    assert_eq!(l.get(&"key3".to_string())?.len(), 6);
    let mut c = ctx(
        StateBackendKind::HashMap,
        1,
        0,
        Some(OperatorSnapshot {
            keyed: Some(frozen),
            operator_state: vec![],
        }),
    );
    let mut restored = KeyedStateStore::open(&mut c)?;
    assert_eq!(
        check(&mut restored, (0..100).map(|i| format!("key{i}")))?,
        100
    );
    Ok(())
}

/// A RocksDB value state whose keys fill its cache exactly never empties the cache for a batch
/// whose keys are all cached: the database stays unwritten (checkpoints copy the caches), and
/// every value stays right. A batch with keys that do not fit then makes room, once.
#[test]
fn rocksdb_prefetch_of_cached_keys_keeps_a_full_cache() -> Result<()> {
    use crate::key::OwnedKey;

    let entries = 64usize;
    let mut c = ctx(StateBackendKind::RocksDb, 1, 0, None);
    let mut config = (*c.config).clone();
    config.rocksdb_cache_entries = entries;
    c.config = Arc::new(config);
    let mut store = KeyedStateStore::open(&mut c)?;
    let v: ValueState<u32, u64> = store.value("v")?;
    let selector = OwnedKey(|r: &u32| *r);
    let written = |store: &KeyedStateStore| match &store.backend {
        Backend::Rocks(db) => !db.never_written(),
        Backend::Heap => panic!("a RocksDB store"),
    };
    let count = |batch: &[u32]| -> Result<()> {
        v.prefetch(batch, &selector)?;
        for k in batch {
            v.merge(k, 1, |a, b| *a += b)?;
        }
        Ok(())
    };
    // Three passes over exactly as many keys as the cache holds, in batches of 16.
    let keys: Vec<u32> = (0..entries as u32).collect();
    for _ in 0..3 {
        for batch in keys.chunks(16) {
            count(batch)?;
        }
    }
    assert!(!written(&store), "cached keys made the cache write back");
    for k in &keys {
        assert_eq!(v.get(k)?, Some(3));
    }
    // Keys beyond the cache's size: it is written back and emptied to make room.
    let more: Vec<u32> = (entries as u32..entries as u32 + 16).collect();
    count(&more)?;
    assert!(written(&store), "keys beyond the cache's size made no room");
    for k in keys.iter().chain(&more) {
        let expected = if *k < entries as u32 { 3 } else { 1 };
        assert_eq!(v.get(k)?, Some(expected), "key {k}");
    }
    Ok(())
}

/// A checkpoint copied from RocksDB's caches goes back into the caches on restore when it fits
/// them: the restored database stays unwritten, so the next checkpoint copies the caches again,
/// and holds every value. One that does not fit is loaded into RocksDB. Either way every value
/// reads back, and survives another checkpoint and restore.
#[test]
fn rocksdb_restores_a_state_that_fits_its_cache_into_the_cache() -> Result<()> {
    use crate::data::{Barrier, BarrierKind};
    use crate::incremental::read_out_native;

    let with_cache = |entries: usize, restored| {
        let mut c = ctx(StateBackendKind::RocksDb, 1, 0, restored);
        let mut config = (*c.config).clone();
        config.rocksdb_cache_entries = entries;
        c.config = Arc::new(config);
        c
    };
    let written = |store: &KeyedStateStore| match &store.backend {
        Backend::Rocks(db) => !db.never_written(),
        Backend::Heap => panic!("a RocksDB store"),
    };
    let checkpoint = |store: &KeyedStateStore, id| -> Result<OperatorSnapshot> {
        let mut keyed = store.snapshot_at(&Barrier {
            checkpoint_id: id,
            timestamp_ms: 0,
            kind: BarrierKind::Checkpoint,
        })?;
        keyed.encode_frozen(&BlobPool::default())?;
        read_out_native(&mut keyed, "op")?;
        Ok(OperatorSnapshot {
            keyed: Some(keyed),
            operator_state: vec![],
        })
    };
    let keys = 300u32;
    let mut c = with_cache(1000, None);
    let mut store = KeyedStateStore::open(&mut c)?;
    let v: ValueState<u32, u64> = store.value("v")?;
    for k in 0..keys {
        v.put(&k, u64::from(k) * 3)?;
    }
    assert!(!written(&store));
    let snap = checkpoint(&store, 1)?;
    drop(v);
    drop(store);

    // (cache entries, whether the restored state goes into the database)
    for (cache, into_db) in [(1000, false), (keys as usize, false), (100, true)] {
        let mut c = with_cache(cache, Some(snap.clone()));
        let mut store = KeyedStateStore::open(&mut c)?;
        let v: ValueState<u32, u64> = store.value("v")?;
        assert_eq!(written(&store), into_db, "cache of {cache}");
        for k in 0..keys {
            assert_eq!(
                v.get(&k)?,
                Some(u64::from(k) * 3),
                "cache of {cache}, key {k}"
            );
        }
        v.put(&0, 7)?;
        let again = checkpoint(&store, 2)?;
        drop(v);
        drop(store);
        let mut c = with_cache(1000, Some(again));
        let mut store = KeyedStateStore::open(&mut c)?;
        let v: ValueState<u32, u64> = store.value("v")?;
        for k in 0..keys {
            let expected = if k == 0 { 7 } else { u64::from(k) * 3 };
            assert_eq!(
                v.get(&k)?,
                Some(expected),
                "cache of {cache}, key {k} restored twice"
            );
        }
    }
    Ok(())
}
