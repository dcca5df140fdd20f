//! Which checkpoints of a job are complete, and deleting the ones no longer needed.
//!
//! Only `chk-<n>` directories and the `shared/` directory of the job are ever looked at;
//! savepoints belong to the user and are never deleted by the system. Files in `shared/` are
//! immutable files of incremental checkpoints, referenced from the `_metadata` of every
//! checkpoint that uses them: one is deleted once no retained checkpoint references it and the
//! checkpoint that uploaded it (named in the file name) is not in progress.

use std::collections::HashSet;

use crate::error::Result;
use crate::snapshot::{METADATA_FILE, SHARED_DIR, SnapshotDir, StateHandle, check_job_id};
use crate::storage::{join, resolve};

/// The name of a shared file: `<instance>-<checkpoint id>-<file name>`. `instance` (the
/// database instance the file comes from; no `-`) keeps two databases' `000012.sst` apart, the
/// id of the uploading checkpoint lets retention spare the uploads of pending checkpoints.
pub fn shared_file_name(instance: &str, checkpoint_id: u64, file: &str) -> String {
    debug_assert!(
        !instance.contains('-'),
        "instance ids have no '-': {instance}"
    );
    format!("{instance}-{checkpoint_id}-{file}")
}

/// The checkpoint that uploaded a shared file, from its name.
fn uploaded_by(name: &str) -> Option<u64> {
    name.split('-').nth(1)?.parse().ok()
}

/// A `chk-<n>` directory of a job, complete or not.
struct ChkDir {
    id: u64,
    dir: SnapshotDir,
    complete: bool,
}

/// Every `chk-<n>` directory under `<base>/<job_id>`, ascending by id; none if the job
/// directory does not exist yet.
fn checkpoint_dirs(base: &str, job_id: &str) -> Result<Vec<ChkDir>> {
    let (storage, base_path) = resolve(base)?;
    check_job_id(&base_path, job_id)?;
    let job_dir = join(&base_path, job_id);
    if !storage.exists(&job_dir)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in storage.list(&job_dir)? {
        let Some(id) = parse_chk(&entry.name) else {
            continue;
        };
        if !entry.is_dir {
            continue;
        }
        let dir = SnapshotDir::new(storage.clone(), join(&job_dir, &entry.name));
        let complete = dir.is_complete()?;
        out.push(ChkDir { id, dir, complete });
    }
    out.sort_by_key(|c| c.id);
    Ok(out)
}

/// `chk-<n>` exactly as Sluice names it (no sign, no leading zeros), so a hand-made
/// `chk-007` or `chk-1.bak` is never taken for a checkpoint and deleted.
fn parse_chk(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("chk-")?;
    let id: u64 = digits.parse().ok()?;
    (id.to_string() == digits).then_some(id)
}

/// Completed checkpoints of a job (directories `chk-<n>` that have `_metadata`), ascending by
/// id, as (id, SnapshotDir).
pub fn completed_checkpoints(base: &str, job_id: &str) -> Result<Vec<(u64, SnapshotDir)>> {
    Ok(checkpoint_dirs(base, job_id)?
        .into_iter()
        .filter(|c| c.complete)
        .map(|c| (c.id, c.dir))
        .collect())
}

/// Keeps the newest `retain` completed checkpoints; deletes older completed ones and every
/// partial `chk-<n>` directory (no `_metadata`) whose id is not in `in_progress`. Never touches
/// anything but `chk-*` directories of that job. Returns the URLs of what it deleted.
pub fn enforce_retention(
    base: &str,
    job_id: &str,
    retain: usize,
    in_progress: &[u64],
) -> Result<Vec<String>> {
    let dirs = checkpoint_dirs(base, job_id)?;
    let completed = dirs.iter().filter(|c| c.complete).count();
    let mut to_drop = completed.saturating_sub(retain);
    let mut deleted = Vec::new();
    for c in &dirs {
        let drop = if c.complete {
            let d = to_drop > 0; // ascending, so the first ones are the oldest
            to_drop -= usize::from(d);
            d
        } else {
            !in_progress.contains(&c.id)
        };
        if !drop {
            continue;
        }
        if c.complete {
            // `_metadata` first: a crash halfway then leaves a partial directory (cleaned up
            // next time), never a "complete" checkpoint with missing state files.
            c.dir
                .storage()
                .delete(&join(c.dir.path(), METADATA_FILE), false)?;
        }
        c.dir.discard()?;
        deleted.push(c.dir.url().to_string());
    }
    let kept: Vec<&ChkDir> = dirs
        .iter()
        .filter(|c| !deleted.iter().any(|d| d == c.dir.url()))
        .collect();
    deleted.extend(collect_shared(base, job_id, &kept, in_progress)?);
    Ok(deleted)
}

/// `sluice checkpoints gc`: under a checkpoint base directory (`state.checkpoints.dir`), for
/// every job, the partial `chk-<n>` directories (no `_metadata`) and the files of `shared/` that
/// no complete checkpoint references, including temporary files of interrupted uploads.
/// Completed checkpoints and savepoints are never touched. With `delete` they are removed,
/// otherwise only listed. Meant for the checkpoints of jobs that are not running: a running
/// job's checkpoint in progress looks exactly like garbage.
pub fn collect_garbage(base: &str, delete: bool) -> Result<Vec<String>> {
    let (storage, base_path) = resolve(base)?;
    if !storage.exists(&base_path)? {
        return Err(crate::StorageError::NotFound {
            path: storage.url(&base_path),
        });
    }
    let mut garbage = Vec::new();
    for entry in storage.list(&base_path)? {
        if !entry.is_dir || check_job_id(&base_path, &entry.name).is_err() {
            continue;
        }
        let dirs = checkpoint_dirs(base, &entry.name)?;
        for c in dirs.iter().filter(|c| !c.complete) {
            if delete {
                c.dir.discard()?;
            }
            garbage.push(c.dir.url().to_string());
        }
        let kept: Vec<&ChkDir> = dirs.iter().filter(|c| c.complete).collect();
        garbage.extend(shared_garbage(base, &entry.name, &kept, &[], delete, true)?);
    }
    Ok(garbage)
}

/// Deletes the shared files no kept complete checkpoint references, sparing uploads of the
/// checkpoints in `in_progress` (their references are not written yet) and temporary files.
/// If a kept checkpoint's `_metadata` cannot be read, its references are unknown: nothing is
/// deleted then.
fn collect_shared(
    base: &str,
    job_id: &str,
    kept: &[&ChkDir],
    in_progress: &[u64],
) -> Result<Vec<String>> {
    shared_garbage(base, job_id, kept, in_progress, true, false)
}

/// The shared files of a job that no complete checkpoint in `kept` references (deleted when
/// `delete`); temporary files count only with `temporary` (a running job may be writing them).
fn shared_garbage(
    base: &str,
    job_id: &str,
    kept: &[&ChkDir],
    in_progress: &[u64],
    delete: bool,
    temporary: bool,
) -> Result<Vec<String>> {
    let (storage, base_path) = resolve(base)?;
    let shared_dir = join(&join(&base_path, job_id), SHARED_DIR);
    if !storage.exists(&shared_dir)? {
        return Ok(Vec::new());
    }
    let mut referenced = HashSet::new();
    for c in kept.iter().filter(|c| c.complete) {
        let Ok((_, meta)) = crate::snapshot::load_snapshot(c.dir.url()) else {
            return Ok(Vec::new());
        };
        for st in meta.operators.iter().flat_map(|o| &o.subtasks) {
            if let StateHandle::Incremental { shared, .. } = &st.handle {
                referenced.extend(shared.iter().map(|f| f.path.clone()));
            }
        }
    }
    let mut deleted = Vec::new();
    for entry in storage.list(&shared_dir)? {
        let rel = format!("{SHARED_DIR}/{}", entry.name);
        let pending = uploaded_by(&entry.name).is_some_and(|id| in_progress.contains(&id));
        let spared_temp = entry.name.starts_with('.') && !temporary;
        if entry.is_dir || spared_temp || pending || referenced.contains(&rel) {
            continue;
        }
        let path = join(&shared_dir, &entry.name);
        if delete {
            storage.delete(&path, false)?;
        }
        deleted.push(storage.url(&path));
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::{meta_for, url_of};

    #[test]
    fn garbage_collection_lists_then_deletes_only_unreferenced_files() {
        let (t, base) = layout();
        let job = t.path().join("job1");
        std::fs::create_dir_all(job.join("shared")).unwrap();
        std::fs::write(job.join("shared").join("abc-9-000001.sst"), b"orphan").unwrap();
        std::fs::write(job.join("shared").join(".abc-9-000002.sst.1.tmp"), b"half").unwrap();
        let listed = collect_garbage(&base, false).unwrap();
        // Partial chk-5 and chk-6, the unreferenced shared file and the temporary file.
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(job.join("chk-5").exists() && job.join("shared/abc-9-000001.sst").exists());
        let deleted = collect_garbage(&base, true).unwrap();
        assert_eq!(deleted, listed);
        assert!(!job.join("chk-5").exists() && !job.join("shared/abc-9-000001.sst").exists());
        for id in 1..=4 {
            assert!(
                job.join(format!("chk-{id}")).join(METADATA_FILE).exists(),
                "chk-{id}"
            );
        }
        assert!(collect_garbage(&base, false).unwrap().is_empty());
        let missing = collect_garbage(&format!("{base}/nope"), false).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn parses_only_canonical_names() {
        assert_eq!(parse_chk("chk-0"), Some(0));
        assert_eq!(parse_chk("chk-42"), Some(42));
        for bad in [
            "chk-",
            "chk-007",
            "chk-+1",
            "chk-1.bak",
            "chk--1",
            "savepoint-abc",
        ] {
            assert_eq!(parse_chk(bad), None, "{bad}");
        }
    }

    /// Checkpoints 1..=4 complete, 5 and 6 partial, a savepoint and another job alongside.
    fn layout() -> (tempfile::TempDir, String) {
        let t = tempfile::tempdir().unwrap();
        let base = url_of(t.path());
        for id in 1..=6 {
            let dir = SnapshotDir::checkpoint(&base, "job1", id).unwrap();
            let h = dir.write_state("op-0", &[id as u8; 64], 16).unwrap();
            if id <= 4 {
                dir.write_metadata(&meta_for("job1", id, h)).unwrap();
            }
        }
        let other = SnapshotDir::checkpoint(&base, "job2", 1).unwrap();
        other
            .write_metadata(&meta_for(
                "job2",
                1,
                crate::StateHandle::Inline { bytes: vec![] },
            ))
            .unwrap();
        let sp = SnapshotDir::savepoint(&format!("{base}/job1"), "job1").unwrap();
        sp.write_metadata(&meta_for(
            "job1",
            9,
            crate::StateHandle::Inline { bytes: vec![] },
        ))
        .unwrap();
        std::fs::create_dir(t.path().join("job1/chk-007")).unwrap();
        (t, base)
    }

    fn ids(base: &str, job: &str) -> Vec<u64> {
        completed_checkpoints(base, job)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    fn names(t: &tempfile::TempDir, job: &str) -> Vec<String> {
        let mut v: Vec<_> = std::fs::read_dir(t.path().join(job))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn retain_two_keeps_in_progress_partials() {
        let (t, base) = layout();
        assert_eq!(ids(&base, "job1"), vec![1, 2, 3, 4]);
        let deleted = enforce_retention(&base, "job1", 2, &[6]).unwrap();
        let want: Vec<_> = ["chk-1", "chk-2", "chk-5"]
            .iter()
            .map(|n| format!("{}/job1/{n}", url_of(t.path())))
            .collect();
        assert_eq!(deleted, want);
        assert_eq!(ids(&base, "job1"), vec![3, 4]);
        let left = names(&t, "job1");
        assert_eq!(&left[..4], ["chk-007", "chk-3", "chk-4", "chk-6"]);
        assert!(left[4].starts_with("savepoint-job1-"), "{left:?}");
        assert_eq!(ids(&base, "job2"), vec![1]);
        // Idempotent.
        assert!(
            enforce_retention(&base, "job1", 2, &[6])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn retain_one_deletes_all_other_partials() {
        let (t, base) = layout();
        let deleted = enforce_retention(&base, "job1", 1, &[]).unwrap();
        assert_eq!(deleted.len(), 5, "{deleted:?}");
        assert_eq!(ids(&base, "job1"), vec![4]);
        let left = names(&t, "job1");
        assert_eq!(&left[..2], ["chk-007", "chk-4"]);
        assert_eq!(left.len(), 3);
        assert_eq!(names(&t, "job2"), ["chk-1"]);
    }

    /// Three incremental checkpoints sharing files: with one retained, only the files the
    /// newest references survive, plus the upload of a pending checkpoint.
    #[test]
    fn retention_deletes_unreferenced_shared_files() {
        let t = tempfile::tempdir().unwrap();
        let base = url_of(t.path());
        let mut uploaded = std::collections::HashMap::new();
        // chk-1: a, b; chk-2: b, c; chk-3: c, d (compaction replaced a and b).
        for (id, files) in [(1u64, ["a", "b"]), (2, ["b", "c"]), (3, ["c", "d"])] {
            let dir = SnapshotDir::checkpoint(&base, "job1", id).unwrap();
            let shared = files
                .iter()
                .map(|f| {
                    uploaded
                        .entry(*f)
                        .or_insert_with(|| {
                            let name = shared_file_name("i0", id, &format!("{f}.sst"));
                            dir.write_shared_file(&name, &format!("{f}.sst"), f.as_bytes())
                                .unwrap()
                        })
                        .clone()
                })
                .collect();
            let private = vec![
                dir.write_private_file("op/MANIFEST-1", "MANIFEST-1", b"m")
                    .unwrap(),
            ];
            let h = crate::StateHandle::Incremental {
                meta: vec![1],
                private,
                shared,
            };
            dir.write_metadata(&meta_for("job1", id, h)).unwrap();
        }
        // A pending checkpoint 4 has uploaded e but written no `_metadata` yet.
        let pending = SnapshotDir::checkpoint(&base, "job1", 4).unwrap();
        pending
            .write_shared_file(&shared_file_name("i0", 4, "e.sst"), "e.sst", b"e")
            .unwrap();
        let shared = |t: &tempfile::TempDir| {
            let mut v: Vec<String> = std::fs::read_dir(t.path().join("job1/shared"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(shared(&t).len(), 5);
        let deleted = enforce_retention(&base, "job1", 1, &[4]).unwrap();
        assert_eq!(deleted.len(), 4, "chk-1, chk-2, a and b: {deleted:?}");
        assert_eq!(shared(&t), ["i0-2-c.sst", "i0-3-d.sst", "i0-4-e.sst"]);
        let (dir, meta) = crate::load_snapshot(&format!("{base}/job1/chk-3")).unwrap();
        crate::verify_snapshot(&dir, &meta).unwrap();
        assert_eq!(meta.state_size(), 1 + 1 + 1 + 1);
        // Checkpoint 4 aborted: its upload goes too; nothing once no checkpoint is retained.
        enforce_retention(&base, "job1", 1, &[]).unwrap();
        assert_eq!(shared(&t), ["i0-2-c.sst", "i0-3-d.sst"]);
        enforce_retention(&base, "job1", 0, &[]).unwrap();
        assert!(shared(&t).is_empty());
    }

    #[test]
    fn missing_job_dir_is_empty() {
        let t = tempfile::tempdir().unwrap();
        let base = url_of(t.path());
        assert!(completed_checkpoints(&base, "nojob").unwrap().is_empty());
        assert!(
            enforce_retention(&base, "nojob", 1, &[])
                .unwrap()
                .is_empty()
        );
    }
}
