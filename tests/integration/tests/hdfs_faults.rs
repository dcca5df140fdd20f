//! Checkpoints on the real HDFS of the test cluster while it fails: the NameNode killed and
//! restarted, the NameNode stopped (accepting connections, answering nothing), a DataNode
//! killed during uploads, and a state file deleted from a retained checkpoint. Every job's
//! output is checked exactly against a failure-free run.
//!
//! Run serially with the cluster up (the tests kill and restart its processes, and bring them
//! back even when they fail):
//!   scripts/testcluster.sh up hdfs
//!   cargo test --release -p sluice-integration-tests --test hdfs_faults -- --test-threads=1

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    LongJob, Raw, Revive, cluster, counter_delta, failed_after, hdfs_dir, nn_counters, path_of,
    summary,
};
use sluice::JobStatus;
use sluice::prelude::*;
use sluice_hdfs_backend::hdfs::{HdfsOptions, HdfsStorage, configure, keys};
use sluice_hdfs_backend::{StorageError, load_snapshot, resolve, verify_snapshot};
use sluice_testkit::{checkpointing, sums_job_failing_when, sums_job_into};

/// The job configuration of the fault tests: checkpoints every `interval` into `dir`, every
/// state in a file of its own (so uploads are under way most of the time), two retained.
fn env_for(dir: &str, interval: &str) -> StreamEnv {
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &format!("{dir}/checkpoints"), interval);
    env.set("state.checkpoints.num-retained", "2").unwrap();
    env.set("state.storage.fs.memory-threshold", "0").unwrap();
    env
}

/// Installs the job's Hadoop client keys, as the runtime does for a job.
fn install_client_keys(env: &StreamEnv) {
    configure(HdfsOptions::from_config(&env.config()));
}

/// `host:port` of the cluster's NameNode.
fn namenode(cluster: &sluice_integration_tests::TestCluster) -> String {
    cluster.hdfs_url().trim_start_matches("hdfs://").to_string()
}

// (a) The NameNode process dies while checkpoints run: they fail, within seconds each with
// Sluice's default client keys, and the job keeps running; once the NameNode is restarted
// (with the namespace it had), checkpoints complete again and a job failure restores from one.
#[test]
fn a_dead_namenode_fails_checkpoints_until_it_is_restarted() {
    let mut cluster = cluster();
    let dir = hdfs_dir(&cluster, "namenode-down");
    let nn = namenode(&cluster);
    let env = env_for(&dir, "100 ms");
    install_client_keys(&env); // none set: Sluice's defaults
    let job = LongJob::start(&env, "namenode-down", 400_000, 2000.0);
    let first = job.completed_after(0, Duration::from_secs(60));

    let _revive = Revive("namenode");
    cluster.kill("namenode").unwrap();
    // A storage call against the dead NameNode: retryable, naming it.
    let (s, p) = resolve(&dir).unwrap();
    let t = Instant::now();
    let e = s.exists(&p).unwrap_err();
    eprintln!(
        "exists() with the NameNode dead failed after {:?}: {e}",
        t.elapsed()
    );
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains(&nn), "{e}");

    let v = job.wait_until(
        "a checkpoint failing on the dead NameNode",
        Duration::from_secs(60),
        |v| {
            failed_after(v, first)
                .iter()
                .any(|c| c.failure_message.as_deref().unwrap_or("").contains(&nn))
        },
    );
    assert_eq!(v.status, JobStatus::Running);
    assert_eq!(
        v.restored_checkpoint, None,
        "no restart: only checkpoints fail"
    );
    let failed = failed_after(&v, first);
    eprintln!("checkpoints with the NameNode dead: {:?}", summary(&failed));

    cluster.restart("namenode").unwrap();
    let back = job.last_checkpoint_id();
    let after = job.completed_after(back, Duration::from_secs(60));
    let v = job.client.view();
    assert_eq!(v.restored_checkpoint, None, "still no restart");
    assert!(v.checkpoints.len() > 3, "{:?}", summary(&v.checkpoints));
    // A checkpoint taken after the restart restores.
    job.fail_and_recover(after);
    let r = job.finish_exactly(
        &format!("{dir}/savepoints"),
        "NameNode killed and restarted",
    );
    assert_eq!(r.restarts, 1);
    Raw::new(&cluster).delete(&path_of(&dir), true);
}

// (a') The NameNode stops answering (SIGSTOP, like a long GC pause) but keeps its sockets
// open: without a bound, hdfs-native would wait forever. `ipc.client.rpc-timeout.ms`, set in
// the job configuration, ends each NameNode call; an upload under way, which may be waiting
// for a new block from the NameNode, fails once it made no progress for that plus
// `dfs.client.socket-timeout` (also from the job configuration here; Hadoop's 60 s default
// would keep the checkpoint in flight for a minute). Checkpoints fail meanwhile, the job keeps
// running, and checkpoints complete again once the NameNode continues.
#[test]
fn a_namenode_that_stops_answering_times_out_per_the_job_config() {
    let mut cluster = cluster();
    let dir = hdfs_dir(&cluster, "namenode-paused");
    let nn = namenode(&cluster);
    let env = env_for(&dir, "100 ms");
    env.set(keys::RPC_TIMEOUT_MS, "1500").unwrap();
    env.set(keys::SOCKET_TIMEOUT, "5000").unwrap();
    install_client_keys(&env);
    let hdfs = HdfsStorage::for_authority("hdfs", &nn).unwrap();
    assert_eq!(hdfs.setting(keys::RPC_TIMEOUT_MS), Some("1500"));
    assert_eq!(hdfs.setting(keys::SOCKET_TIMEOUT), Some("5000"));
    assert_eq!(hdfs.setting(keys::FAILOVER_MAX_ATTEMPTS), Some("3"));

    let job = LongJob::start(&env, "namenode-paused", 400_000, 2000.0);
    let first = job.completed_after(0, Duration::from_secs(60));
    let (s, p) = resolve(&dir).unwrap();
    assert!(s.exists(&p).unwrap(), "connected before the pause");

    let _revive = Revive("namenode");
    cluster.pause("namenode").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let t = Instant::now();
        let _ = tx.send((s.list(&p), t.elapsed()));
    });
    // Far longer than the timeout: without it the call would never return.
    let (listed, took) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the call against the stopped NameNode returned");
    let e = match listed {
        Err(e) => e,
        Ok(entries) => panic!(
            "list({dir}) answered after {took:?} with every NameNode thread stopped: {entries:?}"
        ),
    };
    eprintln!("list() with the NameNode stopped failed after {took:?}: {e}");
    assert!(e.is_retryable(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(keys::RPC_TIMEOUT_MS) && msg.contains(&nn),
        "{msg}"
    );
    let v = job.wait_until(
        "a checkpoint failing on the stopped NameNode",
        Duration::from_secs(60),
        |v| !failed_after(v, first).is_empty(),
    );
    assert_eq!(v.status, JobStatus::Running);
    eprintln!(
        "checkpoints with the NameNode stopped: {:?}",
        summary(&failed_after(&v, first))
    );

    cluster.resume("namenode").unwrap();
    let back = job.last_checkpoint_id();
    let after = job.completed_after(back, Duration::from_secs(120));
    assert_eq!(job.client.view().restored_checkpoint, None, "no restart");
    job.fail_and_recover(after);
    let r = job.finish_exactly(
        &format!("{dir}/savepoints"),
        "NameNode stopped and continued",
    );
    assert_eq!(r.restarts, 1);
    Raw::new(&cluster).delete(&path_of(&dir), true);
}

// (b) A DataNode killed while a large file is being written: the write completes on the
// remaining replica, or fails cleanly (retryable, nothing under the final name); writes go
// through again once the NameNode stops handing out the dead DataNode.
#[test]
fn a_datanode_killed_during_a_large_write() {
    let mut cluster = cluster();
    let dir = hdfs_dir(&cluster, "datanode-write");
    let raw = Raw::new(&cluster);
    let (s, p) = resolve(&dir).unwrap();
    let earlier: Vec<u8> = (0..8u32 << 20).map(|i| (i % 241) as u8).collect();
    s.write_atomic(&format!("{p}/earlier"), &earlier).unwrap();
    let data: Arc<Vec<u8>> = Arc::new((0..256u32 << 20).map(|i| (i % 251) as u8).collect());
    let target = format!("{p}/big");
    let writer = {
        let (s, data, target) = (s.clone(), data.clone(), target.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            (s.write_atomic(&target, &data), t.elapsed())
        })
    };
    // The upload is under way once its temp file exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(raw.exists(&p) && raw.names(&p).iter().any(|n| n.ends_with(".tmp"))) {
        assert!(Instant::now() < deadline, "the write did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !writer.is_finished(),
        "the write ended before the DataNode was killed: make it larger"
    );
    let _revive = Revive("datanode1");
    cluster.kill("datanode1").unwrap();
    let (written, took) = writer.join().unwrap();
    match written {
        Ok(()) => {
            eprintln!("the 256 MiB write completed on the remaining DataNode after {took:?}");
            let back = s.read(&target).unwrap();
            assert!(
                back == *data,
                "read back {} bytes, not the data",
                back.len()
            );
        }
        Err(e) => {
            eprintln!("the 256 MiB write failed after {took:?}: {e}");
            assert!(e.is_retryable(), "{e:?}");
            assert!(!raw.exists(&target), "nothing under the final name");
        }
    }
    // A file written before, with a replica on each DataNode, is read from the live one.
    assert!(
        s.read(&format!("{p}/earlier")).unwrap() == earlier,
        "the earlier file read back"
    );
    // Until the NameNode declares the DataNode dead (about 20 s here), a new file's pipeline
    // may still include it (here always: two DataNodes, two replicas). hdfs-native cannot ask
    // for another, so Sluice writes the file again under a new name, up to
    // dfs.client.block.write.retries (3) times, and then fails the write.
    let small = format!("{p}/small");
    let before = nn_counters(&cluster);
    let e = s
        .write_atomic(&small, b"right after the kill")
        .expect_err("the pipeline includes the dead DataNode");
    let ops = counter_delta(&before, &nn_counters(&cluster));
    eprintln!("a write right after the kill: {e}; NameNode operations {ops:?}");
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        e.to_string()
            .contains(&format!("written 4 times ({}", keys::BLOCK_WRITE_RETRIES)),
        "{e}"
    );
    assert_eq!(ops["CreateFileOps"], 4, "one create per attempt");
    assert!(!raw.exists(&small), "nothing under the final name");
    let t = Instant::now();
    let mut failures = Vec::new();
    loop {
        match s.write_atomic(&small, b"after the kill") {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_retryable(), "{e:?}");
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "writes keep failing: {e}"
                );
                failures.push(e.to_string());
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    eprintln!(
        "a new file was written {:?} after the kill, after {} failed attempts{}",
        t.elapsed(),
        failures.len(),
        failures
            .first()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
    assert_eq!(s.read(&small).unwrap(), b"after the kill");
    cluster.restart("datanode1").unwrap();
    raw.delete(&p, true);
}

// (b') A DataNode killed while a job checkpoints (an upload is almost always under way): the
// checkpoints in flight complete or fail, later ones complete, and a job failure restores from
// one written with the DataNode dead. Until the NameNode declares the DataNode dead, writes
// fail now and then (a pipeline with the dead DataNode, or no DataNode left to choose:
// "could only be written to 0 of the 1 minReplication nodes"); the job is finished (with a
// savepoint) once it did.
#[test]
fn a_datanode_killed_while_checkpoints_upload() {
    let mut cluster = cluster();
    let dir = hdfs_dir(&cluster, "datanode-checkpoints");
    let env = env_for(&dir, "200 ms");
    install_client_keys(&env);
    let job = LongJob::start(&env, "datanode-down", 400_000, 2000.0);
    let first = job.completed_after(0, Duration::from_secs(60));
    job.completed_after(first, Duration::from_secs(60));

    let _revive = Revive("datanode1");
    let at_kill = job.last_checkpoint_id();
    cluster.kill("datanode1").unwrap();
    let killed = Instant::now();
    let after = job.completed_after(at_kill, Duration::from_secs(120));
    let v = job.client.view();
    let between: Vec<_> = v
        .checkpoints
        .iter()
        .filter(|c| c.id >= at_kill && c.id < after)
        .cloned()
        .collect();
    let failed = failed_after(&v, at_kill.saturating_sub(1));
    eprintln!(
        "checkpoint {after} completed {:?} after the DataNode was killed; of the {} before it \
         (from {at_kill}, in flight at the kill), {} failed, e.g. {:?}",
        killed.elapsed(),
        between.len(),
        failed.len(),
        summary(&failed[..failed.len().min(1)])
    );
    assert!(
        between
            .iter()
            .all(|c| c.status != sluice::CheckpointStatus::InProgress),
        "every checkpoint before {after} ended: {:?}",
        summary(&between)
    );
    assert_eq!(v.restored_checkpoint, None, "no restart");
    let t = Instant::now();
    while cluster.namenode_metrics("FSNamesystemState").unwrap()["NumDeadDataNodes"] != 1 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the DataNode is never declared dead"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let steady = job.completed_after(job.last_checkpoint_id(), Duration::from_secs(60));
    eprintln!(
        "the NameNode declared the DataNode dead {:?} after the kill; checkpoint {steady} completed",
        killed.elapsed()
    );
    job.fail_and_recover(steady);
    let r = job.finish_exactly(&format!("{dir}/savepoints"), "DataNode killed");
    assert_eq!(r.restarts, 1);
    cluster.restart("datanode1").unwrap();
    Raw::new(&cluster).delete(&path_of(&dir), true);
}

// (c) A state file of the latest retained checkpoint is deleted on HDFS: the storage names
// the missing file, a restore from that checkpoint fails naming it, and the job's automatic
// recovery falls back to the previous retained checkpoint.
#[test]
fn a_deleted_state_file_falls_back_to_the_previous_checkpoint() {
    let cluster = cluster();
    let dir = hdfs_dir(&cluster, "deleted-state");
    let env = env_for(&dir, "1 h"); // checkpoints only when the test asks
    let armed = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicBool::new(false));
    let (a, f) = (armed.clone(), fired.clone());
    let fail = move |_x: u64| a.load(Ordering::SeqCst) && !f.swap(true, Ordering::SeqCst);
    let out = sluice::CollectHandle::<(u64, u64)>::default();
    let total = 6000;
    // 4 s of input: the checkpoints, the deletion and its check must all happen before the
    // job ends, also on a loaded machine.
    sums_job_failing_when(&env, total, Some(1500.0), fail, &out);
    let client = env.execute_async("deleted-state").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let first = client.trigger_checkpoint().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let second = client.trigger_checkpoint().unwrap();
    assert_ne!(first, second);

    let raw = Raw::new(&cluster);
    let state_files: Vec<String> = raw
        .files_under(&path_of(&second))
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| !f.ends_with("/_metadata"))
        .collect();
    assert!(!state_files.is_empty(), "no state files in {second}");
    let victim = &state_files[0];
    raw.delete(victim, false);
    let victim_url = format!("{}{victim}", cluster.hdfs_url().trim_end_matches('/'));

    let (snapshot, meta) = load_snapshot(&second).unwrap();
    let e = verify_snapshot(&snapshot, &meta).unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains(&victim_url), "{e}");

    // Let the second checkpoint's output be published before the failure.
    std::thread::sleep(Duration::from_millis(300));
    armed.store(true, Ordering::SeqCst);
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(r.restarts, 1);
    let first_id: u64 = first.rsplit("chk-").next().unwrap().parse().unwrap();
    assert_eq!(
        r.restored_checkpoint,
        Some(first_id),
        "fell back to {first}"
    );
    let replayed = assert_exact_but_for_one_replayed_window(out.get(), total);
    eprintln!(
        "fell back from {second} to {first}: {replayed} records between them were published \
         twice (by the second checkpoint, then by the replay)"
    );

    // Asked to restore from the damaged checkpoint, a job refuses, naming the file.
    let env = StreamEnv::new();
    env.set(sluice::RESTORE_PATH_KEY, &second).unwrap();
    sums_job_into(&env, total, None, vec![], &sluice::CollectHandle::default());
    let e = env.execute("restore-damaged").unwrap_err().to_string();
    eprintln!("restoring from {second}: {e}");
    assert!(e.contains(&victim_url), "{e}");
    raw.delete(&path_of(&dir), true);
}

/// Checks the output of the sums job after a fallback past a completed checkpoint: every
/// running sum of a failure-free run is there (nothing lost), nothing else is, and the only
/// duplicates are the records of one contiguous stretch of the input, each published exactly
/// twice: those between the checkpoint restored from and the damaged one, published when the
/// damaged one completed and again by the replay. Returns how many there were.
fn assert_exact_but_for_one_replayed_window(got: Vec<(u64, u64)>, total: u64) -> usize {
    let mut record_of: HashMap<(u64, u64), u64> = HashMap::new();
    let mut sums = [0u64; 17];
    for x in 0..total {
        let k = x % 17;
        sums[k as usize] += x;
        record_of.insert((k, sums[k as usize]), x);
    }
    let mut seen = vec![0usize; total as usize];
    for r in &got {
        let x = record_of
            .get(r)
            .unwrap_or_else(|| panic!("{r:?} is no output of a failure-free run"));
        seen[*x as usize] += 1;
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|&x| seen[x] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let more: Vec<usize> = (0..seen.len()).filter(|&x| seen[x] > 2).collect();
    assert!(more.is_empty(), "published more than twice: {more:?}");
    let twice: Vec<usize> = (0..seen.len()).filter(|&x| seen[x] == 2).collect();
    if let (Some(&lo), Some(&hi)) = (twice.first(), twice.last()) {
        assert_eq!(
            twice.len(),
            hi - lo + 1,
            "the duplicates are not one stretch of the input: {lo}..={hi} has gaps"
        );
    }
    twice.len()
}
