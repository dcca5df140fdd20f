//! `sluice-state-bench`: time to checkpoint and to restore ~1 GiB of RocksDB keyed state to
//! local disk, full (the canonical key-group format, as savepoints are) and incremental (native
//! RocksDB files, shared between checkpoints), against `cp -r` of the RocksDB directory
//! measured in the same run. Prints each time and its ratio to the copy.
//!
//!   sluice-state-bench [--keys 8388608] [--dir /var/tmp]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use sluice_core::Config;
use sluice_core::config::StateBackendKind;
use sluice_hdfs_backend::SnapshotDir;
use sluice_worker::context::OperatorContext;
use sluice_worker::data::{Barrier, BarrierKind};
use sluice_worker::incremental::{SharedRegistry, fetch_native, store_native};
use sluice_worker::snapshot::OperatorSnapshot;
use sluice_worker::state::{KeyedStateStore, ValueState};

#[derive(Parser)]
struct Args {
    /// Keys of 120-byte values (8 M ≈ 1.1 GiB on disk).
    #[arg(long, default_value_t = 8 << 20)]
    keys: u64,
    /// Where the state, the checkpoints and the copy go (removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: std::path::PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = args
        .dir
        .join(format!("sluice-state-bench-{}", std::process::id()));
    let result = run(&args, &root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn run(args: &Args, root: &Path) -> Result<()> {
    let local = root.join("local");
    let chk = root.join("checkpoints");
    std::fs::create_dir_all(&local)?;
    let mut config = Config::default();
    config.state_backend = StateBackendKind::RocksDb;
    config.incremental = true;
    config.rocksdb_local_dir = Some(local.clone());
    config.rocksdb_write_buffer_bytes = 64 << 20;
    let config = Arc::new(config);
    let (store, state) = open(&config, None)?;
    let t = Instant::now();
    for k in 0..args.keys {
        state.put(&k, value_of(k))?;
    }
    store.wait_for_compactions()?;
    println!("loaded {} keys in {:.1?}", args.keys, t.elapsed());
    let db_dir = std::fs::read_dir(&local)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rocksdb-"))
        })
        .ok_or_else(|| anyhow!("no RocksDB directory under {}", local.display()))?;
    let db_bytes = dir_bytes(&db_dir)?;

    let t = Instant::now();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&db_dir)
        .arg(root.join("copy"))
        .status()?;
    anyhow::ensure!(status.success(), "cp -r {} failed", db_dir.display());
    let copy = t.elapsed();
    report("cp -r of the RocksDB directory", copy, copy, db_bytes);

    let base = chk.to_str().context("checkpoint dir is not UTF-8")?;
    // Full: scan into the canonical format, serialise, store (what a savepoint does).
    let t = Instant::now();
    let snap = OperatorSnapshot {
        keyed: Some(store.snapshot()?),
        operator_state: Vec::new(),
    };
    let bytes = bincode::serialize(&snap)?;
    drop(snap);
    let full_dir = SnapshotDir::checkpoint(base, "full", 1)?;
    let handle = full_dir.write_state("op-big-0", &bytes, 0)?;
    report("full checkpoint", t.elapsed(), copy, bytes.len() as u64);
    drop(bytes);
    let t = Instant::now();
    let restored: OperatorSnapshot = bincode::deserialize(&full_dir.read_state(&handle)?)?;
    let (_s, v) = open(&config, Some(restored))?;
    check(&v, args.keys)?;
    report("full restore", t.elapsed(), copy, handle.len());

    // Incremental: native RocksDB checkpoint, then another of the unchanged state.
    let registry = SharedRegistry::default();
    let mut last = None;
    for id in 1..=2 {
        let t = Instant::now();
        let barrier = Barrier {
            checkpoint_id: id,
            timestamp_ms: 0,
            kind: BarrierKind::Checkpoint,
        };
        let snap = OperatorSnapshot {
            keyed: Some(store.snapshot_at(&barrier)?),
            operator_state: Vec::new(),
        };
        let dir = SnapshotDir::checkpoint(base, "incremental", id)?;
        let stored = store_native(&dir, id, "op-big-0", snap, &registry).map_err(|e| anyhow!(e))?;
        // Only the files of completed checkpoints are reused: complete it.
        dir.write_metadata(&metadata(id, stored.handle.clone()))?;
        let what = format!("incremental checkpoint {id}");
        report(&what, t.elapsed(), copy, stored.written);
        last = Some((dir, stored.handle));
    }
    let (dir, handle) = last.expect("two checkpoints");
    let t = Instant::now();
    let restored = fetch_native(&dir, &handle, &local, config.rocksdb_transfer_threads)
        .map_err(|e| anyhow!(e))?;
    let (_s, v) = open(&config, Some(restored))?;
    check(&v, args.keys)?;
    report("incremental restore", t.elapsed(), copy, handle.len());
    Ok(())
}

fn open(
    config: &Arc<Config>,
    restored: Option<OperatorSnapshot>,
) -> Result<(KeyedStateStore, ValueState<u64, Vec<u8>>)> {
    let mut ctx = OperatorContext::standalone("big", config.clone());
    ctx.restored = restored;
    let mut store = KeyedStateStore::open(&mut ctx)?;
    let state = store.value::<u64, Vec<u8>>("v")?;
    Ok((store, state))
}

fn check(state: &ValueState<u64, Vec<u8>>, keys: u64) -> Result<()> {
    for k in [0, keys / 2, keys - 1] {
        anyhow::ensure!(
            state.get(&k)? == Some(value_of(k)),
            "key {k} restored wrong"
        );
    }
    Ok(())
}

fn report(what: &str, took: Duration, copy: Duration, bytes: u64) {
    println!(
        "{what:<34} {:>8.2} s  {:>6.2}x cp -r  {:>14} bytes",
        took.as_secs_f64(),
        took.as_secs_f64() / copy.as_secs_f64().max(1e-9),
        bytes
    );
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        n += e?.metadata()?.len();
    }
    Ok(n)
}

/// 120 bytes that LZ4 cannot shrink much.
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

fn metadata(
    id: u64,
    handle: sluice_hdfs_backend::StateHandle,
) -> sluice_hdfs_backend::CheckpointMetadata {
    use sluice_hdfs_backend::{
        CheckpointMetadata, FORMAT_VERSION, OperatorState, SnapshotKind, SubtaskState,
    };
    CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: "incremental".into(),
        job_name: "state-bench".into(),
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
