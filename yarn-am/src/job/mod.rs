//! A job as the master runs it: a driver thread per job deploys the plan's chained tasks
//! through an [`Executor`], checkpoints, restarts on failure, and answers the [`JobClient`]'s
//! requests; observers read a [`JobView`].

mod driver;
mod end_of_input;
pub mod restore;
mod restore_progress;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use sluice_core::{Config, JobPlan, Result, SluiceError};
use sluice_worker::metrics::{MetricsSnapshot, OperatorMetrics};
pub use sluice_worker::snapshot::SavepointFormat;

use crate::JobStatus;
use crate::checkpoint::{CheckpointStats, Counts};
use crate::executor::Executor;

pub use driver::{ALLOW_NON_RESTORED_KEY, RESTORE_PATH_KEY};

/// Live counters of a running job: (operator uid, one subtask's counters).
pub type MetricsRegistry = Arc<Mutex<Vec<(String, Arc<OperatorMetrics>)>>>;

/// What the client may ask a running job.
pub(crate) enum Request {
    Cancel,
    /// A savepoint into `target` (or `state.savepoints.dir`); with `stop`, the job ends after
    /// it (`Some(true)`: drain first, firing all event-time timers).
    Savepoint {
        target: Option<String>,
        stop: Option<bool>,
        format: SavepointFormat,
        reply: Sender<Result<String>>,
    },
    /// A checkpoint now, outside the periodic schedule.
    Checkpoint {
        reply: Sender<Result<String>>,
    },
}

/// What the driver publishes about a job while it runs.
#[derive(Debug, Clone, Default)]
pub struct JobView {
    pub status: JobStatus,
    /// Newest first.
    pub checkpoints: Vec<CheckpointStats>,
    pub checkpoint_counts: Counts,
    /// (id, location) of the latest completed checkpoint.
    pub latest_checkpoint: Option<(u64, String)>,
    /// The checkpoint the current attempt restored from after a failure.
    pub restored_checkpoint: Option<u64>,
    /// When the job was submitted and when it reached a terminal status (ms since the epoch).
    pub start_time_ms: i64,
    pub end_time_ms: Option<i64>,
    /// Why the job failed, once its status is `Failed`.
    pub failure: Option<String>,
    /// Root causes of the failures so far, oldest first: (ms since the epoch, message).
    pub exceptions: Vec<(i64, String)>,
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub job_id: String,
    pub job_name: String,
    /// `Finished` (also after stop-with-savepoint), or `Canceled`.
    pub status: JobStatus,
    pub duration: Duration,
    /// How often the job restarted after failures.
    pub restarts: u32,
    /// Counters per operator uid, summed over subtasks (of the last attempt).
    pub metrics: BTreeMap<String, MetricsSnapshot>,
    pub checkpoints: Vec<CheckpointStats>,
    /// The checkpoint the last restart restored from.
    pub restored_checkpoint: Option<u64>,
}

impl JobResult {
    pub fn metrics(&self, uid: &str) -> Option<MetricsSnapshot> {
        self.metrics.get(uid).copied()
    }

    /// Late records dropped by all window operators.
    pub fn late_records_dropped(&self) -> u64 {
        self.metrics.values().map(|m| m.late_records_dropped).sum()
    }
}

/// A job running on the embedded cluster in the background.
pub struct JobClient {
    handle: JobHandle,
    thread: std::thread::JoinHandle<Result<JobResult>>,
}

/// A second, cloneable handle on a job for observers other than the owner of its
/// [`JobClient`] (the REST API): everything but waiting for the result. Calls on a job that
/// ended fail (savepoints) or do nothing (cancel); [`JobView::status`] says it ended.
#[derive(Clone)]
pub struct JobHandle {
    job_id: String,
    requests: Sender<Request>,
    metrics: MetricsRegistry,
    view: Arc<Mutex<JobView>>,
}

impl std::ops::Deref for JobClient {
    type Target = JobHandle;
    fn deref(&self) -> &JobHandle {
        &self.handle
    }
}

impl JobHandle {
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Asks every task to stop; [`JobClient::wait`] then returns a `Canceled` result.
    pub fn cancel(&self) {
        // A job that already ended has dropped the receiver: nothing left to cancel.
        let _ = self.requests.send(Request::Cancel);
    }

    /// Takes a savepoint while the job keeps running; returns its location.
    pub fn trigger_savepoint(&self, target_dir: Option<&str>) -> Result<String> {
        self.trigger_savepoint_as(target_dir, SavepointFormat::Canonical)
    }

    /// [`Self::trigger_savepoint`] in the given format (Flink's `--type`).
    pub fn trigger_savepoint_as(
        &self,
        target_dir: Option<&str>,
        format: SavepointFormat,
    ) -> Result<String> {
        self.ask(|reply| Request::Savepoint {
            target: target_dir.map(str::to_string),
            stop: None,
            format,
            reply,
        })
    }

    /// Takes a savepoint and ends the job after it (`drain`: fire all event-time timers
    /// first); returns its location.
    pub fn stop_with_savepoint(&self, target_dir: Option<&str>, drain: bool) -> Result<String> {
        self.stop_with_savepoint_as(target_dir, drain, SavepointFormat::Canonical)
    }

    /// [`Self::stop_with_savepoint`] in the given format (Flink's `--type`).
    pub fn stop_with_savepoint_as(
        &self,
        target_dir: Option<&str>,
        drain: bool,
        format: SavepointFormat,
    ) -> Result<String> {
        self.ask(|reply| Request::Savepoint {
            target: target_dir.map(str::to_string),
            stop: Some(drain),
            format,
            reply,
        })
    }

    /// Takes a checkpoint now; returns its location.
    pub fn trigger_checkpoint(&self) -> Result<String> {
        self.ask(|reply| Request::Checkpoint { reply })
    }

    fn ask(&self, make: impl FnOnce(Sender<Result<String>>) -> Request) -> Result<String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.requests
            .send(make(tx))
            .map_err(|_| SluiceError::Job(format!("job {} is no longer running", self.job_id)))?;
        rx.recv()
            .map_err(|_| SluiceError::Job(format!("job {} ended before answering", self.job_id)))?
    }

    /// Counters so far, per operator uid, summed over subtasks.
    pub fn metrics(&self) -> BTreeMap<String, MetricsSnapshot> {
        sum_metrics(&self.metrics.lock())
    }

    /// Status and checkpoint history as of now.
    pub fn view(&self) -> JobView {
        self.view.lock().clone()
    }
}

impl JobClient {
    /// A cloneable handle for observers (e.g. the REST API) that outlives this client.
    pub fn handle(&self) -> JobHandle {
        self.handle.clone()
    }

    /// Waits until a checkpoint completed after this call (returns its id), or the timeout.
    pub fn wait_for_checkpoint(&self, timeout: Duration) -> Option<u64> {
        let before = self.view.lock().latest_checkpoint.as_ref().map(|c| c.0);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !self.thread.is_finished() {
            let now = self.view.lock().latest_checkpoint.as_ref().map(|c| c.0);
            if now.is_some() && now != before {
                return now;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the job to end.
    pub fn wait(self) -> Result<JobResult> {
        self.thread.join().unwrap_or_else(|_| {
            Err(SluiceError::Internal(
                "the job driver thread panicked".into(),
            ))
        })
    }
}

fn sum_metrics(list: &[(String, Arc<OperatorMetrics>)]) -> BTreeMap<String, MetricsSnapshot> {
    let mut per_uid: BTreeMap<String, MetricsSnapshot> = BTreeMap::new();
    for (uid, m) in list {
        *per_uid.entry(uid.clone()).or_default() += m.snapshot();
    }
    per_uid
}

/// A fresh 32-hex-digit job id, like Flink's.
pub fn new_job_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Runs the job described by `plan` in the background on `executor`; the plan and the
/// restart strategy are checked first. `metrics` is where the executor publishes counters.
pub fn submit(
    plan: JobPlan,
    job_id: String,
    config: Config,
    executor: Box<dyn Executor>,
    metrics: MetricsRegistry,
) -> Result<JobClient> {
    let job_name = plan.name.clone();
    let exec = crate::build_execution_plan(&plan)?;
    install_hdfs_client_keys(&config);
    crate::restart::RestartStrategy::from_config(&config)?;
    let (req_tx, req_rx) = crossbeam_channel::unbounded();
    let view = Arc::new(Mutex::new(JobView {
        status: JobStatus::Created,
        start_time_ms: epoch_ms(),
        ..Default::default()
    }));
    let driver = driver::Driver {
        plan,
        exec,
        executor,
        job_id: job_id.clone(),
        job_name: job_name.clone(),
        config: Arc::new(config),
        requests: req_rx,
        view: view.clone(),
    };
    let (m, v, id, name) = (metrics.clone(), view.clone(), job_id.clone(), job_name);
    let thread = std::thread::Builder::new()
        .name(format!("job {job_id}"))
        .spawn(move || {
            let started = Instant::now();
            let outcome = driver.run();
            // Observers holding only a `JobHandle` learn from the view that the job ended.
            let view = {
                let mut view = v.lock();
                view.status = match &outcome {
                    Ok((status, _)) => *status,
                    Err(_) => JobStatus::Failed,
                };
                view.failure = outcome.as_ref().err().map(|e| e.to_string());
                view.end_time_ms = Some(epoch_ms());
                view.clone()
            };
            let (status, restarts) = outcome?;
            Ok(JobResult {
                job_id: id,
                job_name: name,
                status,
                duration: started.elapsed(),
                restarts,
                metrics: sum_metrics(&m.lock()),
                checkpoints: view.checkpoints,
                restored_checkpoint: view.restored_checkpoint,
            })
        })
        .map_err(|e| SluiceError::Internal(format!("cannot start the job driver thread: {e}")))?;
    Ok(JobClient {
        handle: JobHandle {
            job_id,
            requests: req_tx,
            metrics,
            view,
        },
        thread,
    })
}

/// The job's Hadoop client keys (`dfs.client.*`, `ipc.client.*`) for the HDFS clients this
/// process creates from now on; a job without any leaves the clients as they are.
pub fn install_hdfs_client_keys(config: &Config) {
    let options = sluice_hdfs_backend::HdfsOptions::from_config(config);
    if !options.config.is_empty() {
        sluice_hdfs_backend::hdfs::configure(options);
    }
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Of all task errors, the one that caused the others: not a cancellation, and not a task
/// noticing that its neighbour went away.
pub(crate) fn root_cause(errors: Vec<SluiceError>) -> Option<SluiceError> {
    let secondary = |e: &SluiceError| {
        matches!(
            e,
            SluiceError::Cancelled { .. } | SluiceError::NeighbourGone(_)
        )
    };
    let first_root = errors.iter().position(|e| !secondary(e));
    match first_root {
        Some(i) => errors.into_iter().nth(i),
        None => errors.into_iter().next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_cause_is_the_first_error_that_is_not_a_consequence() {
        let gone = || SluiceError::NeighbourGone("an upstream task of sink disappeared".into());
        let cancelled = || SluiceError::Cancelled { job: "j".into() };
        let root = root_cause(vec![
            gone(),
            cancelled(),
            SluiceError::job("bad record 17"),
            SluiceError::Internal("later".into()),
        ]);
        assert!(matches!(root, Some(SluiceError::Job(m)) if m == "bad record 17"));
        // An internal error that mentions a disappearance is still a cause.
        let root = root_cause(vec![
            gone(),
            SluiceError::Internal("the spill file disappeared".into()),
        ]);
        assert!(matches!(root, Some(SluiceError::Internal(_))), "{root:?}");
        // Only consequences: the first one stands for them.
        assert!(matches!(
            root_cause(vec![gone(), cancelled()]),
            Some(SluiceError::NeighbourGone(_))
        ));
        assert!(root_cause(Vec::new()).is_none());
    }
}
