//! `sluice-state-bench`: time to checkpoint and to restore ~1 GiB of RocksDB keyed state to
//! local disk, full (every file of a native RocksDB checkpoint) and incremental (native files
//! shared between checkpoints), and as savepoints, native (the database's files, copied) and
//! canonical (the key-group format), against `cp -r` of the RocksDB directory measured in the
//! same run. Prints each time and its ratio to the copy; a restore is reported once the files
//! are fetched and again once the database is open and answers reads.
//!
//! With `--checkpoint-dir hdfs://...` the checkpoints go to HDFS instead, and the same files are
//! also written and read with plain hdfs-native calls (as many at a time as the checkpoint's
//! transfer threads), so the storage layer's upload and restore can be set against the client
//! library's own throughput in the same run.
//!
//!   sluice-state-bench [--keys 8388608] [--dir /var/tmp] [--checkpoint-dir URL] [--no-savepoint]
//!                      [--no-native-savepoint]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use sluice_core::Config;
use sluice_hdfs_backend::{SnapshotDir, SnapshotKind};
use sluice_worker::data::{Barrier, BarrierKind, SavepointFormat};
use sluice_worker::incremental::{SharedRegistry, fetch_native, read_out_native, store_native};
use sluice_worker::snapshot::OperatorSnapshot;
use sluice_worker::state::testing::{self, check, metadata, open};

#[derive(Parser)]
struct Args {
    /// Keys of 120-byte values (8 M ≈ 1.1 GiB on disk).
    #[arg(long, default_value_t = 8 << 20)]
    keys: u64,
    /// Where the state, the checkpoints and the copy go (removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    dir: std::path::PathBuf,
    /// Where the checkpoints go (default: under --dir); an `hdfs://` URL adds the plain
    /// hdfs-native comparison.
    #[arg(long)]
    checkpoint_dir: Option<String>,
    /// Skip the canonical savepoint and its restore (slow, and another copy of the state).
    #[arg(long)]
    no_savepoint: bool,
    /// Skip the native savepoint and its restore (another copy of the state).
    #[arg(long)]
    no_native_savepoint: bool,
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
    let config = testing::rocksdb_config(&local);
    let (store, state) = open(&config, None)?;
    let t = Instant::now();
    testing::fill(&store, &state, args.keys)?;
    println!("loaded {} keys in {:.1?}", args.keys, t.elapsed());
    let db_dir = std::fs::read_dir(&local)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rocksdb-"))
        })
        .ok_or_else(|| anyhow!("no RocksDB directory under {}", local.display()))?;
    let db_bytes = dir_bytes(&db_dir)?;

    let local_base = chk.to_str().context("checkpoint dir is not UTF-8")?;
    let base_owned = match &args.checkpoint_dir {
        Some(url) => format!(
            "{}/sluice-state-bench-{}",
            url.trim_end_matches('/'),
            std::process::id()
        ),
        None => local_base.to_string(),
    };
    let base = base_owned.as_str();
    // The copy goes where the checkpoints go when that is a local filesystem (another one
    // than the database's: then checkpoints copy instead of linking, and so does `cp -r`).
    let (storage, base_path) = sluice_hdfs_backend::resolve(base)?;
    let local_checkpoints = storage.url(&base_path).starts_with("file:");
    let copy_to = if local_checkpoints {
        Path::new(&base_path).join("copy")
    } else {
        root.join("copy")
    };
    let _cleanup = Cleanup(local_checkpoints.then(|| base_path.clone().into()));
    std::fs::create_dir_all(copy_to.parent().context("copy target has a parent")?)?;

    let t = Instant::now();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(&db_dir)
        .arg(&copy_to)
        .status()?;
    anyhow::ensure!(status.success(), "cp -r {} failed", db_dir.display());
    let copy = t.elapsed();
    report("cp -r of the RocksDB directory", copy, copy, db_bytes);
    // Snapshots sync what they write (a checkpoint must survive a crash), `cp` does not: the
    // copy made durable too, for a like-for-like figure.
    for e in std::fs::read_dir(&copy_to)? {
        std::fs::File::open(e?.path())?.sync_all()?;
    }
    report(
        "cp -r, then fsync of every file",
        t.elapsed(),
        copy,
        db_bytes,
    );
    println!("  (copied to {}, checkpoints to {base})", copy_to.display());
    std::fs::remove_dir_all(&copy_to)?;
    // (plain write, plain read) of the same files, for the throughput comparison.
    let mut plain = Plain::default();
    if base.starts_with("hdfs://") {
        let threads = config.rocksdb_transfer_threads;
        let (write, read, bytes) = plain_hdfs(base, &db_dir, threads)?;
        plain = Plain {
            write: Some((write, bytes)),
            read: Some((read, bytes)),
        };
        report(
            &format!("plain hdfs-native write ({threads} streams)"),
            write,
            copy,
            bytes,
        );
        report(
            &format!("plain hdfs-native read ({threads} streams)"),
            read,
            copy,
            bytes,
        );
    }
    let threads = config.rocksdb_transfer_threads;
    // Full checkpoint: the database's own files (a RocksDB checkpoint), all of them stored.
    let t = Instant::now();
    let mut snap = OperatorSnapshot {
        keyed: Some(store.snapshot_at(&barrier(1))?),
        operator_state: Vec::new(),
    };
    for n in snap.keyed.iter_mut().flat_map(|k| k.native.iter_mut()) {
        n.incremental = false; // as `state.backend.incremental: false` takes it
    }
    let full_dir = SnapshotDir::checkpoint(base, "full", 1)?;
    let stored = store_native(
        &full_dir,
        1,
        "op-big-0",
        snap,
        &SharedRegistry::default(),
        threads,
    )
    .map_err(|e| anyhow!(e))?;
    full_dir.write_metadata(&metadata(
        "full",
        1,
        SnapshotKind::Checkpoint,
        stored.handle.clone(),
    ))?;
    report_vs(
        "full checkpoint",
        t.elapsed(),
        copy,
        stored.written,
        plain.write,
    );
    restore(
        "full",
        &full_dir,
        &stored.handle,
        &config,
        &local,
        copy,
        args.keys,
        &plain,
    )?;

    // Incremental: native RocksDB checkpoint, then another of the unchanged state.
    let registry = SharedRegistry::default();
    let mut last = None;
    for id in 1..=2 {
        let t = Instant::now();
        let snap = OperatorSnapshot {
            keyed: Some(store.snapshot_at(&barrier(id))?),
            operator_state: Vec::new(),
        };
        let dir = SnapshotDir::checkpoint(base, "incremental", id)?;
        let stored =
            store_native(&dir, id, "op-big-0", snap, &registry, threads).map_err(|e| anyhow!(e))?;
        // Only the files of completed checkpoints are reused: complete it.
        dir.write_metadata(&metadata(
            "incremental",
            id,
            SnapshotKind::Checkpoint,
            stored.handle.clone(),
        ))?;
        let what = format!("incremental checkpoint {id}");
        report_vs(&what, t.elapsed(), copy, stored.written, plain.write);
        last = Some((dir, stored.handle));
    }
    let (dir, handle) = last.expect("two checkpoints");
    restore(
        "incremental",
        &dir,
        &handle,
        &config,
        &local,
        copy,
        args.keys,
        &plain,
    )?;

    if !args.no_native_savepoint {
        native_savepoint(&store, base, &config, &local, copy, args.keys, &plain)?;
    }
    if args.no_savepoint {
        return Ok(());
    }
    // Savepoint: scan into the canonical format, serialise, store (restores into any backend
    // and parallelism, and so costs a key-by-key scan and a rebuild).
    let t = Instant::now();
    let b = Barrier {
        checkpoint_id: 4,
        timestamp_ms: 0,
        kind: BarrierKind::Savepoint {
            format: SavepointFormat::Canonical,
        },
    };
    // The task links the database's files; the uploader reads the entries out of them.
    let mut keyed = store.snapshot_at(&b)?;
    read_out_native(&mut keyed, "big")?;
    let snap = OperatorSnapshot {
        keyed: Some(keyed),
        operator_state: Vec::new(),
    };
    let scanned = t.elapsed();
    // As the uploader stores it.
    let bytes = bincode::serialize(&snap)?;
    drop(snap);
    let encoded = t.elapsed();
    let sp_dir = SnapshotDir::savepoint(base, "canonical")?;
    let handle = sp_dir.write_state("op-big-0", &bytes, 0)?;
    let took = t.elapsed();
    report("savepoint (canonical)", took, copy, bytes.len() as u64);
    println!(
        "  scan {:.2} s, encode {:.2} s, write {:.2} s",
        scanned.as_secs_f64(),
        (encoded - scanned).as_secs_f64(),
        (took - encoded).as_secs_f64()
    );
    drop(bytes);
    let t = Instant::now();
    let bytes = sp_dir.read_state(&handle)?;
    let read = t.elapsed();
    let restored: OperatorSnapshot = bincode::deserialize(&bytes)?;
    drop(bytes);
    let decoded = t.elapsed();
    let (_s, v) = open(&config, Some(restored))?;
    check(&v, args.keys)?;
    let took = t.elapsed();
    report("savepoint (canonical) restore", took, copy, handle.len());
    println!(
        "  read {:.2} s, decode {:.2} s, load into RocksDB {:.2} s",
        read.as_secs_f64(),
        (decoded - read).as_secs_f64(),
        (took - decoded).as_secs_f64()
    );
    Ok(())
}

/// A native savepoint: the RocksDB checkpoint's files, all copied into the savepoint (no hard
/// links, nothing shared), then restored like a checkpoint; deleted afterwards to free the disk.
fn native_savepoint(
    store: &sluice_worker::state::KeyedStateStore,
    base: &str,
    config: &Arc<Config>,
    local: &Path,
    copy: Duration,
    keys: u64,
    plain: &Plain,
) -> Result<()> {
    let t = Instant::now();
    let b = Barrier {
        checkpoint_id: 3,
        timestamp_ms: 0,
        kind: BarrierKind::Savepoint {
            format: SavepointFormat::Native,
        },
    };
    let snap = OperatorSnapshot {
        keyed: Some(store.snapshot_at(&b)?),
        operator_state: Vec::new(),
    };
    let dir = SnapshotDir::savepoint(base, "native")?;
    let threads = config.rocksdb_transfer_threads;
    let stored = store_native(
        &dir,
        3,
        "op-big-0",
        snap,
        &SharedRegistry::default(),
        threads,
    )
    .map_err(|e| anyhow!(e))?;
    dir.write_metadata(&metadata(
        "native",
        3,
        SnapshotKind::Savepoint,
        stored.handle.clone(),
    ))?;
    report_vs(
        "savepoint (native)",
        t.elapsed(),
        copy,
        stored.written,
        plain.write,
    );
    let result = restore(
        "native savepoint",
        &dir,
        &stored.handle,
        config,
        local,
        copy,
        keys,
        plain,
    );
    dir.discard()?;
    result
}

/// Deletes a local checkpoint directory outside `--dir` when the run ends.
struct Cleanup(Option<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Plain hdfs-native transfer times of the same files: (time, bytes).
#[derive(Default)]
struct Plain {
    write: Option<(Duration, u64)>,
    read: Option<(Duration, u64)>,
}

fn barrier(id: u64) -> Barrier {
    Barrier {
        checkpoint_id: id,
        timestamp_ms: 0,
        kind: BarrierKind::Checkpoint,
    }
}

#[allow(clippy::too_many_arguments)]
/// Restores a native checkpoint: downloads its files (reported alone), then opens the
/// database and reads keys back (reported as the whole restore).
fn restore(
    what: &str,
    dir: &SnapshotDir,
    handle: &sluice_hdfs_backend::StateHandle,
    config: &Arc<Config>,
    local: &Path,
    copy: Duration,
    keys: u64,
    plain: &Plain,
) -> Result<()> {
    let t = Instant::now();
    let restored = fetch_native(dir, handle, local, config.rocksdb_transfer_threads)
        .map_err(|e| anyhow!(e))?;
    report_vs(
        &format!("{what} restore: files"),
        t.elapsed(),
        copy,
        handle.len(),
        plain.read,
    );
    let (_s, v) = open(config, Some(restored))?;
    check(&v, keys)?;
    report_vs(
        &format!("{what} restore: + open, 3 reads"),
        t.elapsed(),
        copy,
        handle.len(),
        plain.read,
    );
    Ok(())
}

/// Writes every file of `db_dir` under `<base>/plain/` with hdfs-native, `threads` at a time,
/// then reads them all back the same way: (write time, read time, bytes).
fn plain_hdfs(base: &str, db_dir: &Path, threads: usize) -> Result<(Duration, Duration, u64)> {
    let (root, dir) = split_url(base)?;
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(db_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(2))
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Arc::new(hdfs_native::ClientBuilder::new().with_url(&root).build()?);
        let limit = Arc::new(tokio::sync::Semaphore::new(threads.max(1)));
        let bytes: u64 = files
            .iter()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for f in &files {
            let (client, limit, f) = (client.clone(), limit.clone(), f.clone());
            let dst = format!(
                "{dir}/plain/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            set.spawn(async move {
                let _permit = limit.acquire_owned().await?;
                let data = bytes_of(tokio::fs::read(&f).await?);
                let opts = hdfs_native::WriteOptions::default().create_parent(true);
                let mut w = client.create(&dst, opts).await?;
                // In pieces, as the storage layer writes.
                let mut at = 0;
                while at < data.len() {
                    let end = (at + (4 << 20)).min(data.len());
                    w.write_bytes(data.slice(at..end)).await?;
                    at = end;
                }
                w.close().await?;
                anyhow::Ok(dst)
            });
        }
        let mut written = Vec::new();
        while let Some(r) = set.join_next().await {
            written.push(r??);
        }
        let write = t.elapsed();
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for path in written {
            let (client, limit) = (client.clone(), limit.clone());
            set.spawn(async move {
                let _permit = limit.acquire_owned().await?;
                let r = client.read(&path).await?;
                let len = r.file_length();
                anyhow::Ok(r.read_range(0, len).await?.len())
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        let read = t.elapsed();
        let _ = client.delete(&format!("{dir}/plain"), true).await;
        Ok((write, read, bytes))
    })
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

/// `hdfs://host:port/a/b` → (`hdfs://host:port`, `/a/b`).
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("hdfs://")
        .ok_or_else(|| anyhow!("{url} is not an hdfs:// URL"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((format!("hdfs://{authority}"), format!("/{path}")))
}

fn report(what: &str, took: Duration, copy: Duration, bytes: u64) {
    report_vs(what, took, copy, bytes, None);
}

/// Also prints the throughput as a percentage of a plain hdfs-native transfer of `plain.1`
/// bytes in `plain.0`.
fn report_vs(
    what: &str,
    took: Duration,
    copy: Duration,
    bytes: u64,
    plain: Option<(Duration, u64)>,
) {
    // Not for a few kilobytes: their time is NameNode calls, not throughput.
    let vs_plain = plain
        .filter(|_| bytes >= 1 << 20)
        .map_or(String::new(), |(t, b)| {
            let ours = bytes as f64 / took.as_secs_f64().max(1e-9);
            let theirs = b as f64 / t.as_secs_f64().max(1e-9);
            format!("  {:>5.0} % of plain hdfs-native", 100.0 * ours / theirs)
        });
    println!(
        "{what:<40} {:>8.2} s  {:>6.2}x cp -r  {:>14} bytes{vs_plain}",
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
