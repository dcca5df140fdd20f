//! `sluice savepoint -d PATH` (Flink's `--dispose`): deletes a savepoint, on any storage
//! (`file://`, `hdfs://`, a plain path), once `_metadata` proves it is one.

use anyhow::{Result, anyhow, bail};
use sluice_hdfs_backend::{METADATA_FILE, SnapshotKind, load_snapshot};

/// Deletes the savepoint at `path` (its directory or its `_metadata`) and returns its URL.
/// Refuses, changing nothing, anything whose `_metadata` is missing, corrupt, of another format
/// version, or describes a checkpoint (retention owns those, and an incremental one shares
/// files with others).
pub fn dispose_savepoint(path: &str) -> Result<String> {
    let (dir, meta) = load_snapshot(path)
        .map_err(|e| anyhow!("{path} is not a savepoint, nothing was deleted: {e}"))?;
    if meta.kind != SnapshotKind::Savepoint {
        bail!(
            "{} is checkpoint {} of job {}, not a savepoint; nothing was deleted (retention \
             deletes checkpoints)",
            dir.url(),
            meta.checkpoint_id,
            meta.job_id
        );
    }
    // `_metadata` first: a deletion cut short leaves a directory nobody takes for a savepoint.
    let storage = dir.storage();
    let metadata = format!("{}/{METADATA_FILE}", dir.path().trim_end_matches('/'));
    storage
        .delete(&metadata, false)
        .map_err(|e| anyhow!("deleting {}: {e}", storage.url(&metadata)))?;
    dir.discard()
        .map_err(|e| anyhow!("deleting {}: {e}", dir.url()))?;
    Ok(dir.url().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_hdfs_backend::{CheckpointMetadata, FORMAT_VERSION, SnapshotDir};

    fn meta(kind: SnapshotKind) -> CheckpointMetadata {
        CheckpointMetadata {
            format_version: FORMAT_VERSION,
            job_id: "0123456789abcdef0123456789abcdef".into(),
            job_name: "job".into(),
            checkpoint_id: 3,
            kind,
            timestamp_ms: 0,
            max_parallelism: 128,
            operators: Vec::new(),
        }
    }

    #[test]
    fn disposes_a_savepoint_and_refuses_what_is_not_one() {
        let t = tempfile::tempdir().unwrap();
        let base = format!("file://{}", t.path().display());
        let sp = SnapshotDir::savepoint(&base, "0123456789abcdef0123456789abcdef").unwrap();
        sp.write_state("op-a-0", &[7u8; 4096], 0).unwrap();
        sp.write_metadata(&meta(SnapshotKind::Savepoint)).unwrap();
        let sp_path = std::path::PathBuf::from(sp.path());

        // Not a savepoint: a missing path, a directory without `_metadata`, a corrupt
        // `_metadata`, a checkpoint. Each error names the path; nothing is deleted.
        let plain = t.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        std::fs::write(plain.join("keep"), b"x").unwrap();
        let missing = t.path().join("missing");
        let corrupt = t.path().join("corrupt");
        std::fs::create_dir(&corrupt).unwrap();
        std::fs::write(corrupt.join(METADATA_FILE), b"SLMDgarbage").unwrap();
        let chk = SnapshotDir::checkpoint(&base, "job", 3).unwrap();
        chk.write_metadata(&meta(SnapshotKind::Checkpoint)).unwrap();
        let chk_path = chk.path().to_string();
        for bad in [
            missing.to_str().unwrap(),
            plain.to_str().unwrap(),
            corrupt.to_str().unwrap(),
            chk_path.as_str(),
        ] {
            let e = dispose_savepoint(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
            assert!(e.contains("not a savepoint"), "{e}");
        }
        assert!(plain.join("keep").exists());
        assert!(corrupt.join(METADATA_FILE).exists());
        assert!(std::path::Path::new(&chk_path).join(METADATA_FILE).exists());

        // A savepoint, named by its `_metadata` file as a URL: gone, with all its files.
        let by_metadata = format!("file://{}/{METADATA_FILE}", sp_path.display());
        let url = dispose_savepoint(&by_metadata).unwrap();
        assert_eq!(url, format!("file://{}", sp_path.display()));
        assert!(!sp_path.exists());
        // Disposing it again is an error naming it, like any other non-savepoint.
        let e = dispose_savepoint(sp_path.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains(sp_path.to_str().unwrap()), "{e}");
    }
}
