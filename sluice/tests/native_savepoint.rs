//! Savepoints in RocksDB's native format (Flink's `--type native`): the database's own files,
//! copied into the savepoint directory, so it is self-contained and relocatable, and restores
//! at the same and at another parallelism with nothing lost or duplicated.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use sluice::prelude::*;
use sluice::{CheckpointStatus, JobStatus};
use sluice_hdfs_backend::{StateHandle, load_snapshot, verify_snapshot};
use sluice_testkit::{assert_same, expected_sums, sums_job_into};
use sluice_worker::snapshot::SavepointFormat;

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Checks that `location` is a native savepoint owning all its files: the keyed operator's
/// state is the database's files, all private copies (no shared file, no hard link).
fn assert_self_contained_native(location: &str) {
    let (dir, meta) = load_snapshot(location).unwrap();
    verify_snapshot(&dir, &meta).unwrap();
    let sums = meta.operators.iter().find(|o| o.uid == "sums").unwrap();
    for st in &sums.subtasks {
        let StateHandle::Incremental {
            private, shared, ..
        } = &st.handle
        else {
            panic!(
                "subtask {} of sums is not native: {:?}",
                st.subtask, st.handle
            );
        };
        assert!(shared.is_empty(), "{shared:?}");
        assert!(
            private.iter().any(|f| f.name.ends_with(".sst")),
            "{private:?}"
        );
        assert!(private.iter().all(|f| !f.raw), "{private:?}");
    }
    let root = Path::new(location.trim_start_matches("file://"));
    for f in files_under(root) {
        let links = std::fs::metadata(&f).unwrap().nlink();
        assert_eq!(
            links,
            1,
            "{} shares its bytes with another file",
            f.display()
        );
    }
}

fn rocksdb_job(env: &StreamEnv, ck: &Path, total: u64, out: &sluice::CollectHandle<(u64, u64)>) {
    env.set("state.backend.type", "rocksdb").unwrap();
    env.set("state.backend.incremental", "true").unwrap();
    sluice_testkit::checkpointing(env, ck.to_str().unwrap(), "1 h"); // savepoints only
    sums_job_into(env, total, Some(8000.0), vec![], out);
}

#[test]
fn native_savepoint_is_relocatable_and_restores_at_the_same_and_another_parallelism() {
    for parallelism in [2, 3] {
        let sp = tempfile::tempdir().unwrap();
        let ck = tempfile::tempdir().unwrap();
        let total = 8000;
        let env = StreamEnv::new();
        env.set_parallelism(2);
        let out = sluice::CollectHandle::default();
        rocksdb_job(&env, ck.path(), total, &out);
        let client = env.execute_async("before").unwrap();
        while client
            .metrics()
            .get("sums")
            .is_none_or(|m| m.records_in < 2000)
        {
            assert!(!client.is_finished());
            std::thread::sleep(Duration::from_millis(5));
        }
        let target = sp.path().to_str().unwrap();
        let running = client
            .trigger_savepoint_as(Some(target), SavepointFormat::Native)
            .unwrap();
        assert_self_contained_native(&running);
        let location = client
            .stop_with_savepoint_as(Some(target), false, SavepointFormat::Native)
            .unwrap();
        let r = client.wait().unwrap();
        assert_eq!(r.status, JobStatus::Finished);
        let savepoints: Vec<_> = r
            .checkpoints
            .iter()
            .filter(|c| c.is_savepoint && c.status == CheckpointStatus::Completed)
            .collect();
        assert_eq!(savepoints.len(), 2);
        assert!(
            savepoints
                .iter()
                .all(|c| c.savepoint_format == Some(SavepointFormat::Native))
        );
        assert_self_contained_native(&location);
        // Nothing of a savepoint goes to the job's shared files
        // (`shared/<instance>-<checkpoint id>-<file>`).
        for f in files_under(ck.path()) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            for c in &savepoints {
                assert!(!name.contains(&format!("-{}-", c.id)), "{}", f.display());
            }
        }
        let before = out.len();
        assert!(before > 0 && before < total as usize, "{before}");

        // Moved elsewhere (the original is gone), then restored.
        let moved = tempfile::tempdir().unwrap();
        let name = Path::new(&location).file_name().unwrap().to_owned();
        let new_home = moved.path().join(&name);
        std::fs::rename(Path::new(location.trim_start_matches("file://")), &new_home).unwrap();
        let env = StreamEnv::new();
        env.set_parallelism(parallelism);
        env.set("state.backend.type", "rocksdb").unwrap();
        env.set(sluice::RESTORE_PATH_KEY, new_home.to_str().unwrap())
            .unwrap();
        sums_job_into(&env, total, None, vec![], &out);
        env.execute("after").unwrap();
        assert_same(
            out.get(),
            expected_sums(total),
            &format!("native savepoint restored at parallelism {parallelism}"),
        );
        // Restoring did not change the savepoint.
        assert_self_contained_native(new_home.to_str().unwrap());
    }
}

#[test]
fn a_canonical_savepoint_stays_canonical_on_rocksdb() {
    let sp = tempfile::tempdir().unwrap();
    let ck = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let out = sluice::CollectHandle::default();
    rocksdb_job(&env, ck.path(), 4000, &out);
    let client = env.execute_async("canonical").unwrap();
    while client
        .metrics()
        .get("sums")
        .is_none_or(|m| m.records_in < 1000)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let location = client
        .stop_with_savepoint(Some(sp.path().to_str().unwrap()), false)
        .unwrap();
    client.wait().unwrap();
    let (_, meta) = load_snapshot(&location).unwrap();
    let sums = meta.operators.iter().find(|o| o.uid == "sums").unwrap();
    assert!(
        sums.subtasks
            .iter()
            .all(|s| !matches!(s.handle, StateHandle::Incremental { .. })),
        "{:?}",
        sums.subtasks
    );
}
