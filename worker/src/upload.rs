//! The asynchronous part of a checkpoint: tasks hand their synchronous snapshots to uploader
//! threads and go back to processing records; an uploader serialises each operator's state,
//! stores it in the checkpoint's directory and acknowledges the checkpoint to the master with
//! the resulting state handles (or declines it, saying why).

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use sluice_hdfs_backend::{SnapshotDir, StateHandle};

use crate::blob_pool::BlobPool;
use crate::incremental::{SharedRegistry, read_out_native, store_native};
use crate::task::TaskReport;

/// Where each in-flight checkpoint's state goes: id → (directory, inline threshold).
pub type CheckpointTargets = Arc<Mutex<HashMap<u64, (SnapshotDir, usize)>>>;

/// What the master hears about a checkpoint from one subtask.
#[derive(Debug)]
pub enum CheckpointEvent {
    Acknowledged {
        checkpoint_id: u64,
        task: usize,
        subtask: usize,
        /// (operator uid, subtask, handle) for each operator of the task's chain.
        states: Vec<(String, usize, StateHandle)>,
        /// The task's barrier alignment time (see [`TaskReport::Acknowledge`]).
        alignment_ms: u64,
    },
    Declined {
        checkpoint_id: u64,
        task: usize,
        subtask: usize,
        reason: String,
    },
    /// A source subtask of attempt `attempt` reached its end ([`TaskReport::SourceEnded`]).
    SourceEnded {
        task: usize,
        subtask: usize,
        attempt: u64,
    },
}

/// Uploader threads per job: enough to overlap two tasks' writes on this machine size.
pub const UPLOAD_THREADS: usize = 2;

/// The name of an operator subtask's state in a checkpoint directory.
pub fn file_name(uid: &str, subtask: usize) -> String {
    let safe: String = uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("op-{safe}-{subtask}")
}

/// Starts the uploader threads; they stop when every sender of `reports` is gone. Each
/// RocksDB checkpoint's new files go up `transfer_threads` at a time
/// (`state.backend.rocksdb.checkpoint.transfer.thread.num`).
pub fn spawn_uploaders(
    reports: Receiver<TaskReport>,
    targets: CheckpointTargets,
    events: Sender<CheckpointEvent>,
    transfer_threads: usize,
) -> Vec<JoinHandle<()>> {
    let registry = Arc::new(SharedRegistry::default());
    let blobs = BlobPool::new();
    (0..UPLOAD_THREADS)
        .map(|i| {
            let (reports, targets, events) = (reports.clone(), targets.clone(), events.clone());
            let (registry, blobs) = (registry.clone(), blobs.clone());
            std::thread::Builder::new()
                .name(format!("checkpoint-upload-{i}"))
                .spawn(move || {
                    for report in reports.iter() {
                        let event = upload(report, &targets, &registry, &blobs, transfer_threads);
                        if events.send(event).is_err() {
                            break;
                        }
                    }
                })
                .expect("uploader threads start")
        })
        .collect()
}

fn upload(
    report: TaskReport,
    targets: &CheckpointTargets,
    registry: &SharedRegistry,
    blobs: &Arc<BlobPool>,
    transfer_threads: usize,
) -> CheckpointEvent {
    let (task, subtask, barrier, snapshots, alignment_ms) = match report {
        TaskReport::Acknowledge {
            task,
            subtask,
            barrier,
            snapshots,
            alignment_ms,
        } => (task, subtask, barrier, snapshots, alignment_ms),
        TaskReport::SourceEnded {
            task,
            subtask,
            attempt,
        } => {
            return CheckpointEvent::SourceEnded {
                task,
                subtask,
                attempt,
            };
        }
    };
    let id = barrier.checkpoint_id;
    let Some((dir, threshold)) = targets.lock().get(&id).cloned() else {
        return CheckpointEvent::Declined {
            checkpoint_id: id,
            task,
            subtask,
            reason: format!("checkpoint {id} is no longer pending"),
        };
    };
    let mut states = Vec::with_capacity(snapshots.len());
    for (uid, mut snap) in snapshots {
        if let Some(Err(e)) = snap.keyed.as_mut().map(|k| k.encode_frozen(blobs)) {
            return CheckpointEvent::Declined {
                checkpoint_id: id,
                task,
                subtask,
                reason: format!(
                    "encoding the state of operator '{uid}' (subtask {subtask}) failed: {e}"
                ),
            };
        }
        if let Some(k) = snap.keyed.as_mut()
            && !k.native.is_empty()
            && k.native.iter().all(|n| n.canonical)
            && let Err(e) = read_out_native(k, &uid)
        {
            return CheckpointEvent::Declined {
                checkpoint_id: id,
                task,
                subtask,
                reason: format!(
                    "reading the state of operator '{uid}' (subtask {subtask}) out of its \
                     RocksDB checkpoint failed: {e}"
                ),
            };
        }
        if snap.keyed.as_ref().is_some_and(|k| !k.native.is_empty()) {
            let name = file_name(&uid, subtask);
            match store_native(&dir, id, &name, snap, registry, transfer_threads) {
                Ok(stored) => states.push((uid, subtask, stored.handle)),
                Err(e) => {
                    return CheckpointEvent::Declined {
                        checkpoint_id: id,
                        task,
                        subtask,
                        reason: format!(
                            "storing the RocksDB checkpoint of operator '{uid}' (subtask \
                             {subtask}) in {} failed: {e}",
                            dir.url()
                        ),
                    };
                }
            }
            continue;
        }
        let bytes = match snap.into_state_buf(blobs) {
            Ok(b) => b,
            Err(e) => {
                return CheckpointEvent::Declined {
                    checkpoint_id: id,
                    task,
                    subtask,
                    reason: format!(
                        "state of operator '{uid}' (subtask {subtask}) does not serialise: {e}"
                    ),
                };
            }
        };
        match dir.write_state_owned(&file_name(&uid, subtask), bytes, threshold) {
            Ok(handle) => states.push((uid, subtask, handle)),
            Err(e) => {
                return CheckpointEvent::Declined {
                    checkpoint_id: id,
                    task,
                    subtask,
                    reason: format!(
                        "storing the state of operator '{uid}' (subtask {subtask}) failed: {e}"
                    ),
                };
            }
        }
    }
    CheckpointEvent::Acknowledged {
        checkpoint_id: id,
        task,
        subtask,
        states,
        alignment_ms,
    }
}
