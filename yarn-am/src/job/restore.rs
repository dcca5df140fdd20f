//! Turning a stored checkpoint or savepoint into the state each operator of this job starts
//! from: state is matched to operators by uid; operators the snapshot does not know start
//! empty; state of an operator this job lacks fails the restore unless it may be dropped.

use std::collections::HashSet;
use std::path::Path;

use sluice_core::{JobPlan, Result, SluiceError};
use sluice_hdfs_backend::{
    CheckpointMetadata, SnapshotDir, StateHandle, load_snapshot, verify_snapshot,
};
use sluice_worker::incremental::{fetch_native_counted, native_bytes};

use super::restore_progress::RestoreProgress;
use sluice_worker::snapshot::OperatorSnapshot;

/// Per plan node: the old subtasks' snapshots, if the node has state to restore.
pub type RestoredStates = Vec<Option<Vec<OperatorSnapshot>>>;

pub fn empty(plan: &JobPlan) -> RestoredStates {
    vec![None; plan.nodes.len()]
}

/// Where and how restored files of incremental RocksDB checkpoints are downloaded.
pub struct Local<'a> {
    pub dir: &'a Path,
    pub threads: usize,
}

/// Loads and decodes the snapshot at `path` for `plan`. Reads everything before returning, so
/// a corrupt file fails here, before any task starts, naming the file. The files of an
/// incremental checkpoint are downloaded under `local.dir`.
pub fn load(
    path: &str,
    plan: &JobPlan,
    allow_non_restored: bool,
    local: &Local<'_>,
) -> Result<(RestoredStates, CheckpointMetadata)> {
    let (dir, meta) = load_snapshot(path)
        .map_err(|e| SluiceError::Job(format!("cannot restore from {path}: {e}")))?;
    let states = decode(&dir, &meta, plan, allow_non_restored, local)?;
    Ok((states, meta))
}

/// Checks, without decoding any state, that the snapshot at `path` can be restored by `plan`:
/// its metadata and every state file it references are intact (checksums verified) and its
/// state matches the job's operators. What a master does before its workers restore.
pub fn check(path: &str, plan: &JobPlan, allow_non_restored: bool) -> Result<CheckpointMetadata> {
    let (dir, meta) = load_snapshot(path)
        .map_err(|e| SluiceError::Job(format!("cannot restore from {path}: {e}")))?;
    check_compatible(&dir, &meta, plan, allow_non_restored)?;
    verify_snapshot(&dir, &meta)
        .map_err(|e| SluiceError::Job(format!("cannot restore from {path}: {e}")))?;
    Ok(meta)
}

fn check_compatible(
    dir: &SnapshotDir,
    meta: &CheckpointMetadata,
    plan: &JobPlan,
    allow_non_restored: bool,
) -> Result<()> {
    let path = dir.url();
    let known: HashSet<&str> = plan.nodes.iter().map(|n| n.uid.as_str()).collect();
    let with_state: Vec<&str> = meta
        .operators
        .iter()
        .filter(|o| !o.subtasks.is_empty())
        .map(|o| o.uid.as_str())
        .collect();
    let unmatched: Vec<&str> = with_state
        .iter()
        .copied()
        .filter(|u| !known.contains(u))
        .collect();
    if !unmatched.is_empty() && !allow_non_restored {
        let all_unmatched = unmatched.len() == with_state.len();
        return Err(SluiceError::Job(format!(
            "cannot restore from {path}: it has state for operator(s) {} that this job does not have{}; \
             give them the same uid, or pass --allow-non-restored-state (-n) to drop that state",
            unmatched
                .iter()
                .map(|u| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(", "),
            if all_unmatched {
                " (no operator matches: is this a savepoint of another job?)"
            } else {
                ""
            }
        )));
    }
    if !with_state.is_empty() && meta.max_parallelism != plan.max_parallelism {
        return Err(SluiceError::Job(format!(
            "cannot restore from {path}: it was taken with max parallelism {} but the job has {} \
             (pipeline.max-parallelism must stay the same for the lifetime of the state)",
            meta.max_parallelism, plan.max_parallelism
        )));
    }
    Ok(())
}

fn decode(
    dir: &SnapshotDir,
    meta: &CheckpointMetadata,
    plan: &JobPlan,
    allow_non_restored: bool,
    local: &Local<'_>,
) -> Result<RestoredStates> {
    check_compatible(dir, meta, plan, allow_non_restored)?;
    let path = dir.url();
    let mut out = empty(plan);
    let download: u64 = meta
        .operators
        .iter()
        .filter(|op| plan.nodes.iter().any(|n| n.uid == op.uid))
        .flat_map(|op| &op.subtasks)
        .map(|st| native_bytes(&st.handle))
        .sum();
    let progress = (download > 0).then(|| RestoreProgress::start(path, download));
    for op in &meta.operators {
        let Some(node) = plan.nodes.iter().find(|n| n.uid == op.uid) else {
            continue;
        };
        if op.subtasks.is_empty() {
            continue;
        }
        let mut snaps = Vec::with_capacity(op.subtasks.len());
        for st in &op.subtasks {
            if let StateHandle::Incremental { .. } = &st.handle {
                let fetched = progress.as_ref().map(|p| p.fetched());
                let unused = std::sync::atomic::AtomicU64::new(0);
                let counter = fetched.unwrap_or(&unused);
                let snap = fetch_native_counted(dir, &st.handle, local.dir, local.threads, counter)
                    .map_err(|e| SluiceError::State {
                        uid: op.uid.clone(),
                        state: format!("subtask {}", st.subtask),
                        message: format!("the RocksDB checkpoint in {path} cannot be fetched: {e}"),
                    })?;
                snaps.push(snap);
                continue;
            }
            let bytes = dir
                .read_state(&st.handle)
                .map_err(|e| SluiceError::Job(format!("cannot restore from {path}: {e}")))?;
            let snap: OperatorSnapshot =
                bincode::deserialize(&bytes).map_err(|e| SluiceError::State {
                    uid: op.uid.clone(),
                    state: format!("subtask {}", st.subtask),
                    message: format!("the state in {path} does not decode: {e}"),
                })?;
            snaps.push(snap);
        }
        out[node.id] = Some(snaps);
    }
    Ok(out)
}
