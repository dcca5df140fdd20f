//! Checkpoints and savepoints on the real HDFS of the test cluster (`hdfs://`): the storage
//! contract, exactly-once recovery, retention, incremental RocksDB checkpoints, savepoints
//! moved between HDFS and local disk, an unreachable NameNode, and paths without a scheme on
//! `fs.defaultFS`.
//!
//! Run serially with the cluster up:
//!   scripts/testcluster.sh up hdfs
//!   cargo test --release -p sluice-integration-tests --test checkpoints_hdfs -- --test-threads=1

use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

use hdfs_native::{Client, ClientBuilder, WriteOptions};
use sluice::prelude::*;
use sluice::{CheckpointStatus, JobStatus};
use sluice_hdfs_backend::{
    HdfsOptions, StateHandle, StorageError, load_snapshot, resolve, verify_snapshot,
};
use sluice_integration_tests::{TestCluster, unique};
use sluice_testkit::{assert_same, checkpointing, expected_sums, sums_job_into};

/// The cluster with HDFS up, and `HADOOP_CONF_DIR` pointing at its configuration (as Hadoop
/// tools expect), so `hdfs://` URLs resolve like they do in production.
fn cluster() -> TestCluster {
    let cluster = TestCluster::ensure_up(&["hdfs"]).expect("the test cluster's HDFS must be up");
    static ENV: Once = Once::new();
    let conf = cluster.conf_dir().to_path_buf();
    ENV.call_once(|| {
        // SAFETY: set once, before any HDFS client of this process reads it, and never
        // changed; the tests run with --test-threads=1.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("HADOOP_CONF_DIR", &conf)
        };
    });
    assert_eq!(
        std::env::var_os("HADOOP_CONF_DIR").as_deref(),
        Some(conf.as_os_str())
    );
    cluster
}

/// A fresh directory URL on the cluster's HDFS.
fn hdfs_dir(cluster: &TestCluster, what: &str) -> String {
    format!(
        "{}/sluice-it/{}",
        cluster.hdfs_url().trim_end_matches('/'),
        unique(what)
    )
}

/// A raw hdfs-native client (independent of the storage under test) and a runtime for it.
fn raw_client(cluster: &TestCluster) -> (tokio::runtime::Runtime, Client) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = ClientBuilder::new()
        .with_url(cluster.hdfs_url())
        .with_config_dir(cluster.conf_dir().to_string_lossy())
        .with_io_runtime(rt.handle().clone())
        .build()
        .unwrap();
    (rt, client)
}

/// The path part of an `hdfs://authority/path` URL.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest[rest.find('/').unwrap_or(rest.len())..].to_string()
}

/// Names directly under an HDFS directory, sorted.
fn hdfs_names(rt: &tokio::runtime::Runtime, c: &Client, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = rt
        .block_on(c.list_status(dir, false))
        .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
        .into_iter()
        .map(|s| s.path.rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// Copies an HDFS directory tree to local disk with hdfs-native; returns the number of files.
fn copy_hdfs_to_local(rt: &tokio::runtime::Runtime, c: &Client, src: &str, dst: &Path) -> usize {
    let statuses = rt.block_on(c.list_status(src, true)).unwrap();
    let mut files = 0;
    std::fs::create_dir_all(dst).unwrap();
    for s in statuses {
        let rel = s.path.strip_prefix(src).unwrap().trim_start_matches('/');
        let target = dst.join(rel);
        if s.isdir {
            std::fs::create_dir_all(&target).unwrap();
            continue;
        }
        let bytes = rt
            .block_on(async {
                let r = c.read(&s.path).await?;
                r.read_range(0, r.file_length()).await
            })
            .unwrap();
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, &bytes).unwrap();
        files += 1;
    }
    files
}

/// Copies a local directory tree to HDFS with hdfs-native; returns the number of files.
fn copy_local_to_hdfs(rt: &tokio::runtime::Runtime, c: &Client, src: &Path, dst: &str) -> usize {
    rt.block_on(c.mkdirs(dst, 0o755, true)).unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let target = format!("{dst}/{name}");
        if entry.file_type().unwrap().is_dir() {
            files += copy_local_to_hdfs(rt, c, &entry.path(), &target);
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            rt.block_on(async {
                let mut w = c.create(&target, WriteOptions::default()).await?;
                w.write_bytes(bytes.into()).await?;
                w.close().await
            })
            .unwrap();
            files += 1;
        }
    }
    files
}

/// A local directory as a `file://` URL.
fn file_url(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn completed(r: &[sluice::CheckpointStats]) -> Vec<u64> {
    r.iter()
        .filter(|c| c.status == CheckpointStatus::Completed)
        .map(|c| c.id)
        .collect()
}

// (a) The storage contract on hdfs://.
#[test]
fn storage_contract_on_hdfs() {
    let cluster = cluster();
    let base = hdfs_dir(&cluster, "contract");
    let (s, dir) = resolve(&base).unwrap();
    assert_eq!(s.url(&dir), base, "url() gives back the URL");

    let f = format!("{dir}/sub/file");
    s.write_atomic(&f, b"first").unwrap();
    s.write_atomic(&f, b"second, longer").unwrap();
    assert_eq!(s.read(&f).unwrap(), b"second, longer");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    s.write_atomic(&format!("{dir}/sub/big"), &big).unwrap();
    assert_eq!(s.read(&format!("{dir}/sub/big")).unwrap(), big);

    let mut entries = s.list(&format!("{dir}/sub")).unwrap();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let got: Vec<_> = entries
        .iter()
        .map(|e| (e.name.as_str(), e.is_dir, e.len))
        .collect();
    assert_eq!(
        got,
        [("big", false, big.len() as u64), ("file", false, 14)],
        "names relative to the directory, no temp files left"
    );
    let top = s.list(&dir).unwrap();
    assert_eq!(top.len(), 1);
    assert!(top[0].is_dir && top[0].name == "sub" && top[0].len == 0);

    assert!(s.exists(&f).unwrap());
    assert!(s.exists(&format!("{dir}/sub")).unwrap());
    s.mkdirs(&format!("{dir}/a/b/c")).unwrap();
    s.mkdirs(&format!("{dir}/a/b/c")).unwrap(); // existing is fine
    s.rename(&format!("{dir}/sub"), &format!("{dir}/a/b/c/moved"))
        .unwrap();
    assert!(!s.exists(&f).unwrap());
    assert_eq!(
        s.read(&format!("{dir}/a/b/c/moved/file")).unwrap(),
        b"second, longer"
    );
    let e = s
        .delete(&format!("{dir}/a"), false)
        .expect_err("non-recursive delete of a non-empty directory");
    assert!(e.to_string().contains(&format!("{base}/a")), "{e}");
    s.delete(&format!("{dir}/a"), true).unwrap();
    assert!(!s.exists(&format!("{dir}/a")).unwrap());

    // Missing paths.
    let missing = format!("{dir}/nope");
    let missing_url = format!("{base}/nope");
    assert!(!s.exists(&missing).unwrap());
    s.delete(&missing, true).unwrap();
    s.delete(&missing, false).unwrap();
    let e = s.read(&missing).unwrap_err();
    assert!(
        matches!(e, StorageError::NotFound { .. }) && !e.is_retryable(),
        "{e:?}"
    );
    assert!(e.to_string().contains(&missing_url), "{e}");
    let e = s.list(&missing).unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e:?}");
    assert!(s.rename(&missing, &format!("{dir}/x")).is_err());

    // A figure for the report: small atomic writes (create, write, close, rename).
    let t = Instant::now();
    for i in 0..10 {
        s.write_atomic(&format!("{dir}/timing/{i}"), &[7u8; 4096])
            .unwrap();
    }
    eprintln!("hdfs write_atomic of 4 KiB: {:?} each", t.elapsed() / 10);

    // `hdfs:///path` is on fs.defaultFS of HADOOP_CONF_DIR (the cluster's NameNode).
    let (d, p) = resolve(&format!("hdfs://{dir}")).unwrap();
    assert_eq!(p, dir);
    assert!(
        d.exists(&f.replace("/sub/", "/timing/").replace("file", "0"))
            .unwrap()
    );
    let default_fs = std::fs::read_to_string(cluster.conf_dir().join("core-site.xml")).unwrap();
    assert!(default_fs.contains(cluster.hdfs_url()), "{default_fs}");

    // The same client serves every URL of the authority.
    let (s2, _) = resolve(&format!("{base}/other")).unwrap();
    assert!(s2.exists(&dir).unwrap());
    s.delete(&dir, true).unwrap();
    assert!(!s.exists(&dir).unwrap());
}

// (b) Exactly-once with injected failures, checkpoints and retention on HDFS.
#[test]
fn exactly_once_with_checkpoints_on_hdfs() {
    let cluster = cluster();
    let base = format!("{}/checkpoints", hdfs_dir(&cluster, "exactly-once"));
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &base, "30 ms");
    env.set("state.checkpoints.num-retained", "1").unwrap();
    let out = sluice::CollectHandle::default();
    sums_job_into(&env, 6000, Some(12_000.0), vec![1500, 3100, 4700], &out);
    let started = Instant::now();
    let client = env.execute_async("hdfs-exactly-once").unwrap();
    let job_id = client.job_id().to_string();
    let r = client.wait().unwrap();
    eprintln!(
        "hdfs exactly-once: {:?}, {} restarts, checkpoints {:?}",
        started.elapsed(),
        r.restarts,
        r.checkpoints
            .iter()
            .map(|c| (c.id, c.status))
            .collect::<Vec<_>>()
    );
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(r.restarts, 3);
    let done = completed(&r.checkpoints);
    assert!(!done.is_empty(), "{:?}", r.checkpoints);
    assert_same(out.get(), expected_sums(6000), "hashmap on hdfs");

    let (rt, c) = raw_client(&cluster);
    let job_dir = format!("{}/{job_id}", path_of(&base));
    let chk: Vec<String> = hdfs_names(&rt, &c, &job_dir)
        .into_iter()
        .filter(|n| n.starts_with("chk-"))
        .collect();
    let latest = *done.iter().max().unwrap();
    assert_eq!(chk, [format!("chk-{latest}")], "num-retained=1");
    let names = hdfs_names(&rt, &c, &format!("{job_dir}/chk-{latest}"));
    assert!(names.iter().any(|n| n == "_metadata"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let (dir, meta) = load_snapshot(&format!("{base}/{job_id}/chk-{latest}")).unwrap();
    verify_snapshot(&dir, &meta).unwrap();
    assert!(dir.url().starts_with("hdfs://"), "{}", dir.url());
    rt.block_on(c.delete(&path_of(&base), true)).unwrap();
}

/// Runs the sums job to a savepoint in `target`, returning its location and the sink.
fn run_to_savepoint(
    ck: &str,
    target: &str,
    total: u64,
) -> (String, sluice::CollectHandle<(u64, u64)>) {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, ck, "1 h"); // savepoints only
    let out = sluice::CollectHandle::default();
    sums_job_into(&env, total, Some(8000.0), vec![], &out);
    let client = env.execute_async("before").unwrap();
    while !client.is_finished() {
        if client
            .metrics()
            .get("sums")
            .is_some_and(|m| m.records_in > 2000)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let location = client.stop_with_savepoint(Some(target), false).unwrap();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    let before = out.len();
    assert!(before > 0 && before < total as usize, "{before} records");
    (location, out)
}

fn restore_and_finish(location: &str, total: u64, out: &sluice::CollectHandle<(u64, u64)>) {
    let env = StreamEnv::new();
    env.set_parallelism(3);
    env.set(sluice::RESTORE_PATH_KEY, location).unwrap();
    sums_job_into(&env, total, None, vec![], out);
    env.execute("after").unwrap();
    assert_same(out.get(), expected_sums(total), location);
}

// (c) Savepoints are portable between HDFS and local disk.
#[test]
fn savepoints_move_between_hdfs_and_local_disk() {
    let cluster = cluster();
    let (rt, c) = raw_client(&cluster);
    let base = hdfs_dir(&cluster, "savepoints");
    let total = 8000;

    // HDFS → local.
    let (location, out) = run_to_savepoint(
        &format!("{base}/checkpoints"),
        &format!("{base}/savepoints"),
        total,
    );
    assert!(
        location.starts_with(&format!("{base}/savepoints/savepoint-")),
        "{location}"
    );
    let local = tempfile::tempdir().unwrap();
    let copy = local.path().join("copied-savepoint");
    let files = copy_hdfs_to_local(&rt, &c, &path_of(&location), &copy);
    assert!(files >= 1, "{files} files");
    assert!(copy.join("_metadata").exists());
    // With HADOOP_CONF_DIR set, a path without a scheme is on HDFS (fs.defaultFS): local
    // paths are file:// URLs.
    restore_and_finish(&file_url(&copy), total, &out);

    // `sluice savepoint -d` on HDFS: refuses a directory that is not a savepoint, naming it,
    // and deletes the savepoint.
    let not_savepoint = format!("{base}/checkpoints");
    let e = sluice_cli::dispose::dispose_savepoint(&not_savepoint)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&not_savepoint) && e.contains("not a savepoint"),
        "{e}"
    );
    assert_eq!(
        sluice_cli::dispose::dispose_savepoint(&location).unwrap(),
        location
    );
    assert!(
        rt.block_on(c.get_file_info(&path_of(&location))).is_err(),
        "{location} is still there"
    );

    // Local → HDFS.
    let sp = tempfile::tempdir().unwrap();
    let ck = tempfile::tempdir().unwrap();
    let (location, out) = run_to_savepoint(&file_url(ck.path()), &file_url(sp.path()), total);
    let local_dir = location.strip_prefix("file://").unwrap_or(&location);
    let target = format!("{base}/copied-from-local");
    let files = copy_local_to_hdfs(&rt, &c, Path::new(local_dir), &path_of(&target));
    assert!(files >= 1, "{files} files");
    std::fs::remove_dir_all(local_dir).unwrap(); // restore must not touch the original
    restore_and_finish(&target, total, &out);
    rt.block_on(c.delete(&path_of(&base), true)).unwrap();
}

// (d) Incremental RocksDB checkpoints on HDFS.
#[test]
fn incremental_rocksdb_checkpoints_on_hdfs() {
    let cluster = cluster();
    let base = format!("{}/checkpoints", hdfs_dir(&cluster, "incremental"));
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &base, "30 ms");
    env.set("state.backend.type", "rocksdb").unwrap();
    env.set("state.backend.incremental", "true").unwrap();
    env.set("state.checkpoints.num-retained", "1").unwrap();
    let out = sluice::CollectHandle::default();
    // Slower than the local-disk test: an incremental checkpoint uploads each new SST file as
    // its own HDFS file (create, write, close, rename), some 100+ ms per checkpoint here, and
    // a checkpoint needs to complete between two injected failures.
    sums_job_into(&env, 6000, Some(3_000.0), vec![1500, 3100, 4700], &out);
    let started = Instant::now();
    let client = env.execute_async("hdfs-incremental").unwrap();
    let job_id = client.job_id().to_string();
    let r = client.wait().unwrap();
    let done = completed(&r.checkpoints);
    eprintln!(
        "hdfs incremental: {:?}, {} restarts, {} of {} checkpoints completed, durations (ms) {:?}",
        started.elapsed(),
        r.restarts,
        done.len(),
        r.checkpoints.len(),
        r.checkpoints
            .iter()
            .filter(|c| c.status == CheckpointStatus::Completed)
            .map(|c| c.end_to_end_duration)
            .collect::<Vec<_>>()
    );
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(r.restarts, 3);
    assert!(!done.is_empty(), "{:?}", r.checkpoints);
    assert_same(
        out.get(),
        expected_sums(6000),
        "incremental rocksdb on hdfs",
    );

    let (rt, c) = raw_client(&cluster);
    let job_dir = format!("{}/{job_id}", path_of(&base));
    let names = hdfs_names(&rt, &c, &job_dir);
    assert!(names.iter().any(|n| n == "shared"), "{names:?}");
    let latest = *done.iter().max().unwrap();
    let chk: Vec<_> = names.iter().filter(|n| n.starts_with("chk-")).collect();
    assert_eq!(chk, [&format!("chk-{latest}")], "num-retained=1");
    let (dir, meta) = load_snapshot(&format!("{base}/{job_id}/chk-{latest}")).unwrap();
    verify_snapshot(&dir, &meta).unwrap();
    let referenced: Vec<String> = meta
        .operators
        .iter()
        .flat_map(|o| &o.subtasks)
        .filter_map(|s| match &s.handle {
            StateHandle::Incremental { shared, .. } => Some(shared),
            _ => None,
        })
        .flatten()
        .map(|f| f.path.clone())
        .collect();
    assert!(!referenced.is_empty(), "the sums' state is in shared files");
    let shared: Vec<String> = hdfs_names(&rt, &c, &format!("{job_dir}/shared"))
        .into_iter()
        .map(|n| format!("shared/{n}"))
        .collect();
    for f in &referenced {
        assert!(shared.contains(f), "{f} missing from {shared:?}");
    }
    // Retention deleted shared files no retained checkpoint references, except uploads of
    // checkpoints aborted when the job ended (`shared/<instance>-<checkpoint>-<file>`).
    for extra in shared.iter().filter(|f| !referenced.contains(f)) {
        let by: u64 = extra.split('-').nth(1).unwrap().parse().unwrap();
        assert!(
            by > latest,
            "{extra} is referenced by no retained checkpoint"
        );
    }
    rt.block_on(c.delete(&path_of(&base), true)).unwrap();
}

// (e) An unreachable NameNode fails checkpoints, not the job. Sluice's defaults for the
// Hadoop client keys (`sluice_hdfs_backend::hdfs::CLIENT_DEFAULTS`: 3 reconnects, backoff up
// to 1 s) make each call against a dead NameNode fail within seconds; with hdfs-native's own
// (15 attempts, backoff up to 15 s) it took about three minutes.
#[test]
fn unreachable_namenode_fails_checkpoints_not_the_job() {
    let _cluster = cluster();
    sluice_hdfs_backend::hdfs::configure(HdfsOptions::default());
    let dead = "hdfs://127.0.0.1:1/x";
    let env = StreamEnv::new();
    checkpointing(&env, dead, "20 ms");
    let out = sluice::CollectHandle::default();
    sums_job_into(&env, 2000, Some(10_000.0), vec![], &out);
    let r = env.execute("dead-namenode").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_same(out.get(), expected_sums(2000), "dead namenode");
    let failed: Vec<_> = r
        .checkpoints
        .iter()
        .filter(|c| c.status == CheckpointStatus::Failed)
        .collect();
    assert!(!failed.is_empty(), "{:?}", r.checkpoints);
    let why = failed[0].failure_message.clone().unwrap_or_default();
    eprintln!("checkpoint failure: {why}");
    assert!(why.contains("127.0.0.1:1"), "{why}");

    let t = Instant::now();
    let e = load_snapshot(dead).unwrap_err();
    let elapsed = t.elapsed();
    eprintln!("load_snapshot({dead}) failed in {elapsed:?}: {e}");
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        e.to_string().contains(dead) && e.to_string().contains("NameNode 127.0.0.1:1"),
        "{e}"
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
}

// (f) With a Hadoop configuration (HADOOP_CONF_DIR), a checkpoint directory without a scheme
// is on fs.defaultFS, as in Hadoop: `/sluice/...` is on the cluster's HDFS, not local disk.
#[test]
fn a_checkpoint_dir_without_a_scheme_is_on_the_default_fs() {
    let cluster = cluster();
    let dir = format!("/sluice/{}", unique("default-fs"));
    let base = format!("{dir}/checkpoints");
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &base, "30 ms");
    env.set("state.checkpoints.num-retained", "2").unwrap();
    let out = sluice::CollectHandle::default();
    sums_job_into(&env, 5000, Some(12_000.0), vec![1500, 3500], &out);
    let client = env.execute_async("default-fs").unwrap();
    let job_id = client.job_id().to_string();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(r.restarts, 2);
    assert_same(
        out.get(),
        expected_sums(5000),
        "checkpoints on fs.defaultFS",
    );
    let done = completed(&r.checkpoints);
    assert!(!done.is_empty(), "{:?}", r.checkpoints);
    let qualified = format!("{}{base}", cluster.hdfs_url().trim_end_matches('/'));
    for c in r
        .checkpoints
        .iter()
        .filter(|c| c.status == CheckpointStatus::Completed)
    {
        let at = c.external_path.as_deref().unwrap_or_default();
        assert!(
            at.starts_with(&format!("{qualified}/{job_id}/chk-")),
            "checkpoint {} at {at}, expected under {qualified}",
            c.id
        );
    }
    assert!(!Path::new(&dir).exists(), "nothing on local disk");

    // On HDFS, as the raw client sees it, and loadable by the same plain path.
    let (rt, c) = raw_client(&cluster);
    let latest = *done.iter().max().unwrap();
    let names = hdfs_names(&rt, &c, &format!("{base}/{job_id}/chk-{latest}"));
    assert!(names.iter().any(|n| n == "_metadata"), "{names:?}");
    let (snapshot, meta) = load_snapshot(&format!("{base}/{job_id}/chk-{latest}")).unwrap();
    assert_eq!(snapshot.url(), format!("{qualified}/{job_id}/chk-{latest}"));
    verify_snapshot(&snapshot, &meta).unwrap();

    // A relative path is relative to the HDFS home directory, as in Hadoop.
    let rel = unique("relative");
    let (s, p) = resolve(&format!("{rel}/x")).unwrap();
    s.write_atomic(&p, b"home").unwrap();
    let user = rt
        .block_on(c.list_status("/user", false))
        .unwrap()
        .into_iter()
        .find(|st| {
            rt.block_on(c.get_file_info(&format!("{}/{rel}/x", st.path)))
                .is_ok()
        })
        .map(|st| st.path)
        .expect("the file is under /user/<user>");
    assert_eq!(s.url(&p), format!("{}{user}/{rel}/x", cluster.hdfs_url()));
    rt.block_on(c.delete(&format!("{user}/{rel}"), true))
        .unwrap();
    rt.block_on(c.delete(&dir, true)).unwrap();
}
