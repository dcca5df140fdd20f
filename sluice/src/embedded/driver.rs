//! The job driver of the embedded cluster: deploys an attempt, triggers checkpoints and
//! savepoints through the coordinator, answers the client's requests, and on a task failure
//! restarts every task from the latest completed checkpoint as the restart strategy allows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use sluice_am::checkpoint::{CheckpointCoordinator, CheckpointSettings};
use sluice_am::restart::{RestartStrategy, RestartTracker};
use sluice_am::{ExecutionPlan, JobStatus};
use sluice_core::{Config, Result, SluiceError};
use sluice_hdfs_backend::{SnapshotKind, completed_checkpoints};
use sluice_worker::data::{Barrier, BarrierKind};
use sluice_worker::task::{TaskCommand, TaskReport};
use sluice_worker::upload::{CheckpointEvent, CheckpointTargets, spawn_uploaders};

use super::deploy::{Attempt, DeployArgs, deploy};
use super::restore::{self, RestoredStates};
use super::{JobView, MetricsRegistry, Request, root_cause};
use crate::graph::ResolvedGraph;

/// `-s PATH`: where a job restores its state from at start.
pub const RESTORE_PATH_KEY: &str = "execution.state-recovery.path";
/// `-n`: whether state of operators the job no longer has may be dropped.
pub const ALLOW_NON_RESTORED_KEY: &str = "execution.state-recovery.ignore-unclaimed-state";

pub(crate) struct Driver {
    pub resolved: ResolvedGraph,
    pub exec: ExecutionPlan,
    pub job_id: String,
    pub job_name: String,
    pub config: Arc<Config>,
    pub requests: Receiver<Request>,
    pub registry: MetricsRegistry,
    pub view: Arc<parking_lot::Mutex<JobView>>,
}

/// How an attempt ended.
enum Outcome {
    Finished,
    Cancelled,
    Failed(SluiceError),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Errors that a restart cannot cure: fail the job at once.
fn is_permanent(e: &SluiceError) -> bool {
    matches!(
        e,
        SluiceError::State { .. } | SluiceError::Config(_) | SluiceError::InvalidGraph(_)
    )
}

type Reply = Sender<Result<String>>;

impl Driver {
    fn set_status(&self, s: JobStatus) {
        self.view.lock().status = s;
    }

    pub fn run(self) -> Result<(JobStatus, u32)> {
        let plan = &self.resolved.plan;
        let settings = CheckpointSettings::from_config(&self.config);
        let operators = plan
            .nodes
            .iter()
            .map(|n| (n.uid.clone(), n.name.clone(), n.parallelism))
            .collect();
        let mut coord = CheckpointCoordinator::new(
            settings.clone(),
            &self.job_id,
            &self.job_name,
            plan.max_parallelism,
            operators,
            self.exec.subtasks(),
            1,
        );
        let mut restarts = RestartTracker::new(RestartStrategy::from_config(&self.config)?);
        let targets: CheckpointTargets = Arc::default();
        let (report_tx, report_rx) = crossbeam_channel::unbounded::<TaskReport>();
        let (event_tx, event_rx) = crossbeam_channel::unbounded::<CheckpointEvent>();
        let uploaders = spawn_uploaders(report_rx, targets.clone(), event_tx);
        let local_dir = self.local_dir();

        let mut states = match self.config.get_raw(RESTORE_PATH_KEY) {
            Some(path) => {
                let allow = self
                    .config
                    .get_raw(ALLOW_NON_RESTORED_KEY)
                    .is_some_and(|v| v == "true");
                let local = restore::Local {
                    dir: &local_dir,
                    threads: self.config.rocksdb_transfer_threads,
                };
                let (states, meta) = restore::load(path, plan, allow, &local)?;
                // Ids continue after the restored one, so new checkpoints never reuse a name.
                coord = coord_after(coord, meta.checkpoint_id);
                states
            }
            None => restore::empty(plan),
        };

        let mut waiting: HashMap<u64, Reply> = HashMap::new();
        let mut stop: Option<u64> = None;
        let result = loop {
            self.set_status(JobStatus::Running);
            let attempt = deploy(DeployArgs {
                resolved: &self.resolved,
                exec: &self.exec,
                job_name: &self.job_name,
                config: self.config.clone(),
                local_dir: local_dir.clone(),
                restore: &states,
                reports: report_tx.clone(),
                registry: self.registry.clone(),
            })?;
            let (outcome, finished) = self.run_attempt(
                &attempt,
                &mut coord,
                &targets,
                &event_rx,
                &mut waiting,
                &mut stop,
            );
            let mut errors = attempt.stop(finished);
            match outcome {
                Outcome::Finished => {
                    // A stop-with-savepoint ends the tasks before the savepoint's last acks land.
                    self.settle(&mut coord, &targets, &event_rx, &mut waiting, None);
                    break Ok(JobStatus::Finished);
                }
                Outcome::Cancelled => {
                    for f in coord.abort_all("the job was cancelled") {
                        targets.lock().remove(&f.id);
                    }
                    if !settings.retain_on_cancel
                        && let Some(base) = &settings.dir
                    {
                        let _ = sluice_hdfs_backend::enforce_retention(base, &self.job_id, 0, &[]);
                    }
                    break Ok(JobStatus::Canceled);
                }
                Outcome::Failed(e) => {
                    errors.insert(0, e);
                    let root = root_cause(errors).expect("a failure has an error");
                    for f in coord.abort_all(&format!("the job failed: {root}")) {
                        targets.lock().remove(&f.id);
                        if let Some(r) = waiting.remove(&f.id) {
                            let _ = r.send(Err(SluiceError::Job(format!(
                                "savepoint {} failed: {}",
                                f.id, f.reason
                            ))));
                        }
                    }
                    let delay = if is_permanent(&root) {
                        None
                    } else {
                        restarts.on_failure(Instant::now())
                    };
                    let Some(delay) = delay else {
                        self.set_status(JobStatus::Failed);
                        break Err(root);
                    };
                    self.set_status(JobStatus::Restarting);
                    eprintln!(
                        "job {} failed ({root}); restarting in {delay:?} (restart {})",
                        self.job_id,
                        restarts.restarts()
                    );
                    std::thread::sleep(delay);
                    states = match self.latest_restorable(&coord) {
                        Ok(s) => s,
                        Err(e) => {
                            self.set_status(JobStatus::Failed);
                            break Err(e);
                        }
                    };
                }
            }
        };
        for (_, r) in waiting.drain() {
            let _ = r.send(Err(SluiceError::Job(
                "the job ended before the savepoint completed".into(),
            )));
        }
        drop(report_tx);
        for u in uploaders {
            let _ = u.join();
        }
        // Uploads of checkpoints aborted as the job ended may have landed after the abort
        // cleaned up; with every uploader gone, one last retention pass removes them.
        if let Some(base) = &settings.dir {
            let keep = match result {
                Ok(JobStatus::Canceled) if !settings.retain_on_cancel => 0,
                _ => settings.retained,
            };
            let _ = sluice_hdfs_backend::enforce_retention(base, &self.job_id, keep, &[]);
        }
        let _ = std::fs::remove_dir_all(&local_dir);
        result.map(|s| (s, restarts.restarts()))
    }

    /// Where this job's RocksDB instances and restored RocksDB checkpoints live.
    fn local_dir(&self) -> std::path::PathBuf {
        self.config
            .rocksdb_local_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("sluice-job-{}", self.job_id))
    }

    /// The state of the latest completed checkpoint; a corrupt one falls back to the previous
    /// retained checkpoint, saying so.
    fn latest_restorable(&self, coord: &CheckpointCoordinator) -> Result<RestoredStates> {
        let plan = &self.resolved.plan;
        let Some(base) = coord.settings().dir.clone() else {
            return Ok(restore::empty(plan));
        };
        if coord.latest_completed().is_none() {
            return Ok(restore::empty(plan));
        }
        let mut candidates = completed_checkpoints(&base, &self.job_id)
            .map_err(|e| SluiceError::Job(e.to_string()))?;
        candidates.reverse();
        let mut last_error = None;
        let local_dir = self.local_dir();
        let local = restore::Local {
            dir: &local_dir,
            threads: self.config.rocksdb_transfer_threads,
        };
        for (id, dir) in candidates {
            match restore::load(dir.url(), plan, false, &local) {
                Ok((states, _)) => {
                    if let Some(e) = &last_error {
                        eprintln!("restoring from checkpoint {id} instead: {e}");
                    }
                    self.view.lock().restored_checkpoint = Some(id);
                    return Ok(states);
                }
                Err(e) => {
                    eprintln!("checkpoint {id} at {} cannot be restored: {e}", dir.url());
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            SluiceError::Job(format!(
                "no completed checkpoint of job {} under {base}",
                self.job_id
            ))
        }))
    }

    fn run_attempt(
        &self,
        attempt: &Attempt,
        coord: &mut CheckpointCoordinator,
        targets: &CheckpointTargets,
        events: &Receiver<CheckpointEvent>,
        waiting: &mut HashMap<u64, Reply>,
        stop: &mut Option<u64>,
    ) -> (Outcome, usize) {
        let mut finished = 0usize;
        let mut cancelled = false;
        loop {
            let now = Instant::now();
            if stop.is_none() && finished == 0 && coord.periodic_due(now) {
                self.trigger(
                    attempt,
                    coord,
                    targets,
                    SnapshotKind::Checkpoint,
                    None,
                    BarrierKind::Checkpoint,
                    None,
                    waiting,
                );
            }
            for f in coord.expire(now) {
                targets.lock().remove(&f.id);
                if let Some(r) = waiting.remove(&f.id) {
                    let _ = r.send(Err(SluiceError::Job(f.reason.clone())));
                }
                resume_if_stop_failed(attempt, stop, f.id);
            }
            if coord.tolerance_exceeded() {
                return (
                    Outcome::Failed(SluiceError::Job(
                        "exceeded the number of tolerable failed checkpoints".into(),
                    )),
                    finished,
                );
            }
            select! {
                recv(attempt.done) -> msg => {
                    let Ok((_task, _subtask, result)) = msg else { return (Outcome::Finished, finished) };
                    finished += 1;
                    match result {
                        Ok(()) => {}
                        Err(SluiceError::Cancelled { .. }) if cancelled => {}
                        Err(e) if cancelled && matches!(&e, SluiceError::Internal(m) if m.contains("disappeared")) => {}
                        Err(e) => return (Outcome::Failed(e), finished),
                    }
                    if finished == attempt.subtasks {
                        return (if cancelled { Outcome::Cancelled } else { Outcome::Finished }, finished);
                    }
                }
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        let id = match &ev {
                            CheckpointEvent::Acknowledged { checkpoint_id, .. } | CheckpointEvent::Declined { checkpoint_id, .. } => *checkpoint_id,
                        };
                        self.on_event(ev, attempt, coord, targets, waiting);
                        if Some(id) == *stop && coord.target_of(id).is_none() && !coord.history().any(|h| h.id == id && h.status == sluice_am::checkpoint::CheckpointStatus::Completed) {
                            resume_if_stop_failed(attempt, stop, id);
                        }
                    }
                }
                recv(self.requests) -> req => {
                    match req {
                        Ok(Request::Cancel) | Err(_) => {
                            cancelled = true;
                            self.set_status(JobStatus::Cancelling);
                            attempt.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(Request::Savepoint { target, stop: stop_drain, reply }) => {
                            if finished > 0 {
                                let _ = reply.send(Err(SluiceError::Job(format!(
                                    "job {} has tasks that already finished; it cannot take a savepoint",
                                    self.job_id
                                ))));
                                continue;
                            }
                            let kind = match stop_drain {
                                None => BarrierKind::Savepoint,
                                Some(drain) => BarrierKind::StopWithSavepoint { drain },
                            };
                            let id = self.trigger(attempt, coord, targets, SnapshotKind::Savepoint, target.as_deref(), kind, Some(reply), waiting);
                            if stop_drain.is_some() {
                                *stop = id;
                            }
                        }
                        Ok(Request::Checkpoint { reply }) => {
                            if finished > 0 {
                                let _ = reply.send(Err(SluiceError::Job("tasks already finished".into())));
                                continue;
                            }
                            self.trigger(attempt, coord, targets, SnapshotKind::Checkpoint, None, BarrierKind::Checkpoint, Some(reply), waiting);
                        }
                    }
                }
                default(coord.next_wakeup(now)) => {}
            }
            self.publish(coord);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn trigger(
        &self,
        attempt: &Attempt,
        coord: &mut CheckpointCoordinator,
        targets: &CheckpointTargets,
        kind: SnapshotKind,
        target: Option<&str>,
        barrier_kind: BarrierKind,
        reply: Option<Reply>,
        waiting: &mut HashMap<u64, Reply>,
    ) -> Option<u64> {
        let started = match coord.begin(kind, target, Instant::now()) {
            Ok((id, dir)) => {
                targets
                    .lock()
                    .insert(id, (dir, coord.settings().inline_threshold));
                if let Some(r) = reply {
                    waiting.insert(id, r);
                }
                attempt.send_sources(&TaskCommand::TriggerCheckpoint(Barrier {
                    checkpoint_id: id,
                    timestamp_ms: now_ms(),
                    kind: barrier_kind,
                }));
                Some(id)
            }
            Err(e) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(e));
                }
                None
            }
        };
        self.publish(coord);
        started
    }

    fn on_event(
        &self,
        ev: CheckpointEvent,
        attempt: &Attempt,
        coord: &mut CheckpointCoordinator,
        targets: &CheckpointTargets,
        waiting: &mut HashMap<u64, Reply>,
    ) {
        match ev {
            CheckpointEvent::Acknowledged {
                checkpoint_id,
                task,
                subtask,
                states,
            } => match coord.acknowledge(checkpoint_id, (task, subtask), states) {
                Ok(Some(done)) => {
                    targets.lock().remove(&done.id);
                    attempt.send_all(&TaskCommand::CheckpointComplete(done.id));
                    if let Some(r) = waiting.remove(&done.id) {
                        let _ = r.send(Ok(done.location));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    targets.lock().remove(&checkpoint_id);
                    if let Some(r) = waiting.remove(&checkpoint_id) {
                        let _ = r.send(Err(e));
                    }
                }
            },
            CheckpointEvent::Declined {
                checkpoint_id,
                reason,
                ..
            } => {
                targets.lock().remove(&checkpoint_id);
                if let Some(f) = coord.decline(checkpoint_id, &reason)
                    && let Some(r) = waiting.remove(&f.id)
                {
                    let _ = r.send(Err(SluiceError::Job(format!(
                        "checkpoint {} failed: {}",
                        f.id, f.reason
                    ))));
                }
            }
        }
        self.publish(coord);
    }

    /// After the tasks ended: lets in-flight savepoints complete (their acks may still be on
    /// the way from the uploaders), up to the checkpoint timeout.
    fn settle(
        &self,
        coord: &mut CheckpointCoordinator,
        targets: &CheckpointTargets,
        events: &Receiver<CheckpointEvent>,
        waiting: &mut HashMap<u64, Reply>,
        deadline: Option<Instant>,
    ) {
        let deadline = deadline.unwrap_or_else(|| {
            Instant::now() + coord.settings().timeout.min(Duration::from_secs(60))
        });
        // Only savepoints someone waits for (stop-with-savepoint) are worth waiting for; a periodic
        // checkpoint triggered as the sources finished will never be acknowledged by them.
        while waiting.keys().any(|id| coord.target_of(*id).is_some()) && Instant::now() < deadline {
            match events.recv_timeout(Duration::from_millis(50)) {
                Ok(CheckpointEvent::Acknowledged {
                    checkpoint_id,
                    task,
                    subtask,
                    states,
                }) => match coord.acknowledge(checkpoint_id, (task, subtask), states) {
                    Ok(Some(done)) => {
                        targets.lock().remove(&done.id);
                        if let Some(r) = waiting.remove(&done.id) {
                            let _ = r.send(Ok(done.location));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if let Some(r) = waiting.remove(&checkpoint_id) {
                            let _ = r.send(Err(e));
                        }
                    }
                },
                Ok(CheckpointEvent::Declined {
                    checkpoint_id,
                    reason,
                    ..
                }) => {
                    coord.decline(checkpoint_id, &reason);
                    if let Some(r) = waiting.remove(&checkpoint_id) {
                        let _ = r.send(Err(SluiceError::Job(reason)));
                    }
                }
                Err(_) => {}
            }
        }
        // Checkpoints that can no longer complete (tasks finished before acknowledging).
        for f in coord.abort_all("the job finished before the checkpoint completed") {
            targets.lock().remove(&f.id);
            if let Some(r) = waiting.remove(&f.id) {
                let _ = r.send(Err(SluiceError::Job(f.reason)));
            }
        }
        self.publish(coord);
    }

    fn publish(&self, coord: &CheckpointCoordinator) {
        let mut v = self.view.lock();
        v.checkpoints = coord.history().cloned().collect();
        v.checkpoint_counts = coord.counts();
        v.latest_checkpoint = coord.latest_completed().cloned();
    }
}

/// A failed stop-with-savepoint: the sources, which paused after its barrier, go on.
fn resume_if_stop_failed(attempt: &Attempt, stop: &mut Option<u64>, id: u64) {
    if *stop == Some(id) {
        attempt.send_sources(&TaskCommand::AbortStop(id));
        *stop = None;
    }
}

/// A coordinator whose ids continue after `restored_id`.
fn coord_after(coord: CheckpointCoordinator, restored_id: u64) -> CheckpointCoordinator {
    coord.with_next_id(restored_id + 1)
}
