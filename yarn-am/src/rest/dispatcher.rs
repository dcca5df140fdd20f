//! The jobs of this process as the REST API sees them, and the asynchronous operations
//! (savepoints, stop-with-savepoint, checkpoints) triggered through it, keyed by trigger id
//! like Flink's dispatcher. The `JobClient` calls block until the snapshot completes, so each
//! operation runs on a thread of its own and the handlers only poll its state.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::checkpoint::CheckpointSettings;
use parking_lot::Mutex;
use sluice_core::config::StateBackendKind;
use sluice_core::{Config, JobPlan};

use crate::cluster::Cluster;
use crate::job::{JobHandle, SavepointFormat, new_job_id};

/// One job, running or ended.
pub struct JobEntry {
    pub id: String,
    pub name: String,
    pub handle: JobHandle,
    pub plan: JobPlan,
    pub settings: CheckpointSettings,
    pub backend: StateBackendKind,
}

/// The state of a triggered operation, as `GET .../savepoints/:trigger-id` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    InProgress,
    /// The snapshot's location.
    Completed(String),
    /// The error message.
    Failed(String),
}

/// What an operation does.
#[derive(Debug, Clone)]
pub enum OperationKind {
    Savepoint {
        target: Option<String>,
        cancel_job: bool,
        format: SavepointFormat,
    },
    Stop {
        target: Option<String>,
        drain: bool,
        format: SavepointFormat,
    },
    Checkpoint,
}

#[derive(Default)]
pub struct Dispatcher {
    jobs: Mutex<Vec<Arc<JobEntry>>>,
    /// (job id, trigger id) → state.
    operations: Mutex<HashMap<(String, String), Operation>>,
    /// Operations whose outcome no client has read yet; the process waits for those before
    /// it exits (see [`super::linger`]), else `sluice stop` could never learn its savepoint.
    unread: Mutex<HashSet<(String, String)>>,
    /// On a master: its cluster (to run submitted bundles) and base configuration.
    cluster: Mutex<Option<(Arc<Cluster>, Config)>>,
}

impl Dispatcher {
    /// Makes this dispatcher accept job bundles (`POST /jars/upload`, `/jars/:id/run`) and
    /// run them on `cluster` with `config` as the base configuration.
    pub fn set_cluster(&self, cluster: Arc<Cluster>, config: Config) {
        *self.cluster.lock() = Some((cluster, config));
    }

    pub fn cluster(&self) -> Option<(Arc<Cluster>, Config)> {
        self.cluster.lock().clone()
    }

    /// Registers a job just submitted.
    pub fn add_job(
        self: &Arc<Self>,
        handle: JobHandle,
        name: &str,
        plan: JobPlan,
        config: &Config,
    ) {
        let entry = Arc::new(JobEntry {
            id: handle.job_id().to_string(),
            name: name.to_string(),
            handle,
            plan,
            settings: CheckpointSettings::from_config(config),
            backend: config.state_backend,
        });
        self.jobs.lock().push(entry.clone());
        if let Some(dir) = config.get_raw(crate::archive::ARCHIVE_DIR_KEY) {
            // Until the archive is written the process must not exit (see `linger`).
            let key = (entry.id.clone(), "archive".to_string());
            self.unread.lock().insert(key.clone());
            let me = self.clone();
            crate::archive::archive_when_ended(entry, dir.to_string(), move || {
                me.unread.lock().remove(&key);
            });
        }
    }

    /// A dispatcher that knows only `job` (to render that job's documents for its archive).
    pub(crate) fn with_job(job: Arc<JobEntry>) -> Dispatcher {
        Dispatcher {
            jobs: Mutex::new(vec![job]),
            ..Default::default()
        }
    }

    pub fn job(&self, id: &str) -> Option<Arc<JobEntry>> {
        self.jobs.lock().iter().find(|j| j.id == id).cloned()
    }

    /// All jobs, in the order they were submitted.
    pub fn jobs(&self) -> Vec<Arc<JobEntry>> {
        self.jobs.lock().clone()
    }

    /// Starts `kind` on `job` in the background; returns the trigger id to poll.
    pub fn trigger(self: &Arc<Self>, job: &Arc<JobEntry>, kind: OperationKind) -> String {
        let trigger = new_job_id();
        let key = (job.id.clone(), trigger.clone());
        self.operations
            .lock()
            .insert(key.clone(), Operation::InProgress);
        self.unread.lock().insert(key.clone());
        let (me, entry) = (self.clone(), job.clone());
        let run = move || {
            let h = &entry.handle;
            let result = match kind {
                OperationKind::Savepoint {
                    target,
                    cancel_job,
                    format,
                } => {
                    let r = h.trigger_savepoint_as(target.as_deref(), format);
                    // Flink's cancel-with-savepoint: the savepoint first, the cancel only if
                    // it succeeded, so a failed savepoint never loses the job's state.
                    if cancel_job && r.is_ok() {
                        h.cancel();
                    }
                    r
                }
                OperationKind::Stop {
                    target,
                    drain,
                    format,
                } => h.stop_with_savepoint_as(target.as_deref(), drain, format),
                OperationKind::Checkpoint => h.trigger_checkpoint(),
            };
            let state = match result {
                Ok(location) => Operation::Completed(location),
                Err(e) => Operation::Failed(e.to_string()),
            };
            me.operations.lock().insert(key, state);
        };
        let spawned = std::thread::Builder::new()
            .name(format!("rest-op {trigger}"))
            .spawn(run);
        if let Err(e) = spawned {
            self.operations.lock().insert(
                (job.id.clone(), trigger.clone()),
                Operation::Failed(format!("cannot start a thread for the operation: {e}")),
            );
        }
        trigger
    }

    /// The state of an operation; reading a final state marks it as read.
    pub fn operation(&self, job_id: &str, trigger: &str) -> Option<Operation> {
        let key = (job_id.to_string(), trigger.to_string());
        let op = self.operations.lock().get(&key).cloned();
        if op.as_ref().is_some_and(|o| *o != Operation::InProgress) {
            self.unread.lock().remove(&key);
        }
        op
    }

    /// Whether an operation is running or its outcome was not read yet.
    pub fn has_unread_operations(&self) -> bool {
        !self.unread.lock().is_empty()
    }
}
