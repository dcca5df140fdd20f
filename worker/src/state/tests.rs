use std::sync::Arc;

use sluice_core::Config;
use sluice_core::config::StateBackendKind;

use super::*;
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

fn fill(store: &mut KeyedStateStore) -> Result<()> {
    let v: ValueState<String, u64> = store.value("count")?;
    let m: MapState<String, i64, String> = store.map("seen")?;
    let l: ListState<String, u32> = store.list("items")?;
    for i in 0..500u64 {
        let k = format!("key{}", i % 100);
        v.merge(&k, 1, |a, b| *a += b)?;
        m.put(&k, (i % 7) as i64, format!("v{i}"))?;
        l.add(&k, i as u32)?;
    }
    Ok(())
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
