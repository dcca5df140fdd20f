use std::path::Path;

use super::*;

pub(crate) fn url_of(p: &Path) -> String {
    format!("file://{}", p.display())
}

pub(crate) fn meta_for(job: &str, id: u64, handle: StateHandle) -> CheckpointMetadata {
    CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: job.to_string(),
        job_name: "test job".to_string(),
        checkpoint_id: id,
        kind: SnapshotKind::Checkpoint,
        timestamp_ms: 1_700_000_000_000,
        max_parallelism: 128,
        operators: vec![OperatorState {
            uid: "op".to_string(),
            name: "Op".to_string(),
            parallelism: 1,
            subtasks: vec![SubtaskState { subtask: 0, handle }],
        }],
    }
}

/// A savepoint with one file handle (`big`) and one inline handle, and its metadata.
fn savepoint(t: &tempfile::TempDir) -> (SnapshotDir, CheckpointMetadata) {
    let dir = SnapshotDir::savepoint(&url_of(t.path()), "abcdef0123456789").unwrap();
    let big = dir.write_state("op-0", &[7u8; 1000], 100).unwrap();
    let small = dir.write_state("op-1", b"tiny", 100).unwrap();
    let mut meta = meta_for("abcdef0123456789", 3, big);
    meta.kind = SnapshotKind::Savepoint;
    meta.operators[0].parallelism = 2;
    meta.operators[0].subtasks.push(SubtaskState {
        subtask: 1,
        handle: small,
    });
    dir.write_metadata(&meta).unwrap();
    (dir, meta)
}

fn file_of(dir: &SnapshotDir, name: &str) -> std::path::PathBuf {
    Path::new(dir.path()).join(name)
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[track_caller]
fn assert_names(e: &StorageError, what: &str) {
    assert!(e.to_string().contains(what), "'{e}' does not name {what}");
}

#[test]
fn inline_below_threshold_file_at_or_above() {
    let t = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::checkpoint(&url_of(t.path()), "job", 1).unwrap();
    assert!(dir.url().ends_with("/job/chk-1") && dir.url().starts_with("file:///"));
    let h = dir.write_state("a", &[1; 9], 10).unwrap();
    assert_eq!(h, StateHandle::Inline { bytes: vec![1; 9] });
    let h = dir.write_state("b", &[2; 10], 10).unwrap();
    assert!(matches!(&h, StateHandle::File { path, len: 10, .. } if path == "b"));
    assert_eq!(dir.read_state(&h).unwrap(), vec![2; 10]);
    assert!(!file_of(&dir, "a").exists());
    assert!(!dir.is_complete().unwrap());
    for bad in ["_metadata", "../x", "/abs", ".hidden", "a//b", ""] {
        let e = dir.write_state(bad, b"x", 0).unwrap_err();
        assert!(matches!(e, StorageError::InvalidPath { .. }), "{bad}: {e}");
    }
    let nested = dir.write_state("op/3", b"nested", 0).unwrap();
    assert_eq!(dir.read_state(&nested).unwrap(), b"nested");
}

#[test]
fn metadata_round_trip_by_dir_file_and_plain_path() {
    let t = tempfile::tempdir().unwrap();
    let (dir, meta) = savepoint(&t);
    let name = Path::new(dir.path()).file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("savepoint-abcdef-") && name.len() == "savepoint-abcdef-".len() + 12);
    assert_eq!(meta.state_size(), 1004);
    let mut paths = vec![dir.url().to_string(), format!("{}/_metadata", dir.url())];
    // A plain path is on the local disk unless the environment names a Hadoop configuration
    // with another fs.defaultFS (as after `eval "$(scripts/testcluster.sh env)"`).
    if crate::hadoop_conf::HadoopConf::load()
        .default_fs()
        .is_none_or(|fs| fs.starts_with("file:"))
    {
        paths.push(dir.path().to_string());
    }
    for p in paths {
        let (loaded_dir, loaded) = load_snapshot(&p).unwrap();
        assert_eq!(loaded, meta);
        assert_eq!(loaded_dir.url(), dir.url());
        verify_snapshot(&loaded_dir, &loaded).unwrap();
    }
    // Atomic: only the two files, no temporary leftovers.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["_metadata", "op-0"]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn relocated_savepoint_restores() {
    let t = tempfile::tempdir().unwrap();
    let (dir, meta) = savepoint(&t);
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("moved");
    copy_dir(Path::new(dir.path()), &copy);
    dir.discard().unwrap();
    assert!(!Path::new(dir.path()).exists());
    let (moved, loaded) = load_snapshot(&url_of(&copy)).unwrap();
    assert_eq!(loaded, meta);
    let subtasks = &loaded.operators[0].subtasks;
    assert_eq!(
        moved.read_state(&subtasks[0].handle).unwrap(),
        vec![7u8; 1000]
    );
    assert_eq!(moved.read_state(&subtasks[1].handle).unwrap(), b"tiny");
}

#[test]
fn truncated_state_file_is_corrupt() {
    let t = tempfile::tempdir().unwrap();
    let (dir, meta) = savepoint(&t);
    let f = file_of(&dir, "op-0");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let e = dir
        .read_state(&meta.operators[0].subtasks[0].handle)
        .unwrap_err();
    assert!(matches!(e, StorageError::Corrupt { .. }), "{e}");
    assert_names(&e, "op-0");
    assert!(!e.is_retryable());
    let e = verify_snapshot(&dir, &meta).unwrap_err();
    assert!(matches!(e, StorageError::Corrupt { .. }), "{e}");
}

#[test]
fn flipped_byte_in_state_file_is_corrupt() {
    let t = tempfile::tempdir().unwrap();
    let (dir, meta) = savepoint(&t);
    flip_byte(&file_of(&dir, "op-0"), 500);
    let e = dir
        .read_state(&meta.operators[0].subtasks[0].handle)
        .unwrap_err();
    assert!(matches!(e, StorageError::Corrupt { .. }), "{e}");
    assert_names(&e, "op-0");
    assert_names(&e, "CRC32");
}

#[test]
fn state_file_replaced_by_another_valid_one_is_corrupt() {
    let t = tempfile::tempdir().unwrap();
    let (dir, meta) = savepoint(&t);
    dir.write_state("op-0", &[8u8; 1000], 0).unwrap();
    let e = verify_snapshot(&dir, &meta).unwrap_err();
    assert!(matches!(e, StorageError::Corrupt { .. }), "{e}");
    assert_names(&e, "op-0");
}

#[test]
fn flipped_byte_in_metadata_is_corrupt() {
    let t = tempfile::tempdir().unwrap();
    let (dir, _) = savepoint(&t);
    let f = file_of(&dir, METADATA_FILE);
    flip_byte(&f, 40);
    let e = load_snapshot(dir.url()).unwrap_err();
    assert!(matches!(e, StorageError::Corrupt { .. }), "{e}");
    assert_names(&e, &format!("{}/_metadata", dir.url()));
}

#[test]
fn metadata_of_another_version_is_unsupported() {
    let t = tempfile::tempdir().unwrap();
    let (dir, meta) = savepoint(&t);
    let f = file_of(&dir, METADATA_FILE);
    let json = serde_json::to_vec(&meta).unwrap();
    std::fs::write(&f, crate::frame::encode(*b"SLMD", 99, &json)).unwrap();
    let e = load_snapshot(dir.url()).unwrap_err();
    assert!(
        matches!(
            e,
            StorageError::UnsupportedVersion {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_names(&e, "_metadata");
    // A current frame around a payload claiming version 99 is just as unreadable.
    let mut v99 = meta.clone();
    v99.format_version = 99;
    let json = serde_json::to_vec(&v99).unwrap();
    std::fs::write(&f, crate::frame::encode(*b"SLMD", FORMAT_VERSION, &json)).unwrap();
    let e = load_snapshot(dir.url()).unwrap_err();
    assert!(
        matches!(e, StorageError::UnsupportedVersion { found: 99, .. }),
        "{e}"
    );
    // And the writer refuses to produce it.
    let e = dir.write_metadata(&v99).unwrap_err();
    assert!(matches!(e, StorageError::Encode { .. }), "{e}");
}

#[test]
fn directory_without_metadata_is_not_found() {
    let t = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::checkpoint(&url_of(t.path()), "job", 5).unwrap();
    dir.write_state("op-0", b"partial", 0).unwrap();
    let e = load_snapshot(dir.url()).unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e}");
    assert_names(&e, &format!("{}/_metadata", dir.url()));
    assert_names(&e, "only once it is complete");
    // Pointing at a state file instead of the directory.
    let e = load_snapshot(&format!("{}/op-0", dir.url())).unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e}");
    // Nothing was changed.
    assert!(file_of(&dir, "op-0").exists());
}

#[test]
fn missing_path_is_not_found() {
    let t = tempfile::tempdir().unwrap();
    let missing = format!("{}/no/such/savepoint", url_of(t.path()));
    for p in [missing.clone(), format!("{missing}/_metadata")] {
        let e = load_snapshot(&p).unwrap_err();
        assert!(matches!(e, StorageError::NotFound { .. }), "{e}");
        assert_names(&e, &missing);
    }
    assert!(matches!(
        SnapshotDir::open(&missing).unwrap_err(),
        StorageError::NotFound { .. }
    ));
    assert!(!Path::new(&t.path().join("no")).exists());
}

#[test]
fn verify_catches_missing_state_file() {
    let t = tempfile::tempdir().unwrap();
    let (dir, meta) = savepoint(&t);
    std::fs::remove_file(file_of(&dir, "op-0")).unwrap();
    load_snapshot(dir.url()).unwrap(); // loading reads only _metadata
    let e = verify_snapshot(&dir, &meta).unwrap_err();
    assert!(matches!(e, StorageError::NotFound { .. }), "{e}");
    assert_names(&e, "op-0");
}

#[test]
fn concurrent_write_state() {
    let t = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::checkpoint(&url_of(t.path()), "job", 1).unwrap();
    let handles: Vec<(usize, StateHandle)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let dir = &dir;
                s.spawn(move || {
                    (0..25)
                        .map(|j| {
                            let bytes = vec![(i * 25 + j) as u8; 100 + j];
                            // Everyone also races on one shared name.
                            dir.write_state("shared", &bytes, 0).unwrap();
                            (
                                i * 25 + j,
                                dir.write_state(&format!("op-{i}-{j}"), &bytes, 50),
                            )
                        })
                        .map(|(k, h)| (k, h.unwrap()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(handles.len(), 100);
    for (k, h) in &handles {
        let bytes = dir.read_state(h).unwrap();
        assert!(bytes.iter().all(|b| *b == *k as u8) && bytes.len() >= 100);
    }
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(
        files, 101,
        "100 state files and 'shared', no temporary files"
    );
}

#[test]
fn metadata_is_inspectable_json() {
    let t = tempfile::tempdir().unwrap();
    let (dir, _) = savepoint(&t);
    let raw = std::fs::read(file_of(&dir, METADATA_FILE)).unwrap();
    let text = String::from_utf8_lossy(&raw[16..raw.len() - 4]).into_owned();
    assert!(text.contains("\"kind\": \"savepoint\""), "{text}");
    assert!(text.contains("\"bytes\": \"74696e79\""), "{text}"); // "tiny" in hex
}
