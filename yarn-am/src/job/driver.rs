//! The job driver: deploys an attempt through its executor, triggers checkpoints and
//! savepoints through the coordinator, answers the client's requests, and on a task failure
//! restarts every task from the latest completed checkpoint as the restart strategy allows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};
use sluice_core::{Config, JobPlan, Result, SluiceError};
use sluice_hdfs_backend::{SnapshotKind, completed_checkpoints};
use sluice_worker::data::{Barrier, BarrierKind};
use sluice_worker::task::TaskCommand;
use sluice_worker::upload::CheckpointEvent;

use super::end_of_input::{self, EndOfInput, FINAL_CHECKPOINT_ATTEMPTS};
use super::{JobView, Request, root_cause};
use crate::checkpoint::{CheckpointCoordinator, CheckpointSettings, IDLE_WAKEUP};
use crate::executor::{Attempt, Executor};
use crate::restart::{RestartStrategy, RestartTracker};
use crate::{ExecutionPlan, JobStatus};

/// `-s PATH`: where a job restores its state from at start.
pub const RESTORE_PATH_KEY: &str = "execution.state-recovery.path";
/// `-n`: whether state of operators the job no longer has may be dropped.
pub const ALLOW_NON_RESTORED_KEY: &str = "execution.state-recovery.ignore-unclaimed-state";

pub(crate) struct Driver {
    pub plan: JobPlan,
    pub exec: ExecutionPlan,
    pub executor: Box<dyn Executor>,
    pub job_id: String,
    pub job_name: String,
    pub config: Arc<Config>,
    pub requests: Receiver<Request>,
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

    pub fn run(mut self) -> Result<(JobStatus, u32)> {
        let settings = CheckpointSettings::from_config(&self.config);
        let operators = self
            .plan
            .nodes
            .iter()
            .map(|n| (n.uid.clone(), n.name.clone(), n.parallelism))
            .collect();
        let mut coord = CheckpointCoordinator::new(
            settings.clone(),
            &self.job_id,
            &self.job_name,
            self.plan.max_parallelism,
            operators,
            self.exec.subtasks(),
            1,
        );
        if let Some(registry) = self.executor.checkpoint_registry() {
            coord = coord.with_registry(registry);
        }
        let mut restarts = RestartTracker::new(RestartStrategy::from_config(&self.config)?);
        let event_rx = self.executor.checkpoint_events();

        if let Some(path) = self.config.get_raw(RESTORE_PATH_KEY).map(str::to_string) {
            let allow = self
                .config
                .get_raw(ALLOW_NON_RESTORED_KEY)
                .is_some_and(|v| v == "true");
            if let Some(meta) = self.executor.restore_from(Some(&path), allow)? {
                // Ids continue after the restored one, so new checkpoints never reuse a name.
                coord = coord_after(coord, meta.checkpoint_id);
                // A job's own checkpoint: a new leader recovering it (`latest.restored`).
                if meta.kind == SnapshotKind::Checkpoint && meta.job_id == self.job_id {
                    self.view.lock().restored_checkpoint = Some(meta.checkpoint_id);
                }
            }
        }

        let mut waiting: HashMap<u64, Reply> = HashMap::new();
        let mut stop: Option<u64> = None;
        let mut attempt_no = 0u64;
        let result = loop {
            self.set_status(JobStatus::Running);
            let attempt = match self.executor.deploy(attempt_no) {
                Ok(a) => a,
                Err(e) => {
                    self.set_status(JobStatus::Failed);
                    break Err(e);
                }
            };
            let mut end = EndOfInput::new(attempt_no, self.source_subtasks());
            attempt_no += 1;
            let (outcome, finished) = self.run_attempt(
                &*attempt,
                &mut coord,
                &event_rx,
                &mut waiting,
                &mut stop,
                &mut end,
            );
            let mut errors = attempt.stop(finished);
            match outcome {
                Outcome::Finished => {
                    // A stop-with-savepoint ends the tasks before the savepoint's last acks land.
                    self.settle(&mut coord, &event_rx, &mut waiting, None);
                    break Ok(JobStatus::Finished);
                }
                Outcome::Cancelled => {
                    for f in coord.abort_all("the job was cancelled") {
                        self.executor.end_checkpoint(f.id);
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
                        self.executor.end_checkpoint(f.id);
                        if let Some(r) = waiting.remove(&f.id) {
                            let _ = r.send(Err(SluiceError::Job(format!(
                                "savepoint {} failed: {}",
                                f.id, f.reason
                            ))));
                        }
                    }
                    self.view
                        .lock()
                        .exceptions
                        .push((now_ms(), root.to_string()));
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
                    if let Err(e) = self.restore_latest(&coord) {
                        self.set_status(JobStatus::Failed);
                        break Err(e);
                    }
                }
            }
        };
        for (_, r) in waiting.drain() {
            let _ = r.send(Err(SluiceError::Job(
                "the job ended before the savepoint completed".into(),
            )));
        }
        self.executor.shutdown();
        // Uploads of checkpoints aborted as the job ended may have landed after the abort
        // cleaned up; with every uploader gone, one last retention pass removes them.
        if let Some(base) = &settings.dir {
            let keep = match result {
                Ok(JobStatus::Canceled) if !settings.retain_on_cancel => 0,
                _ => settings.retained,
            };
            let _ = sluice_hdfs_backend::enforce_retention(base, &self.job_id, keep, &[]);
        }
        result.map(|s| (s, restarts.restarts()))
    }

    /// Makes the next attempt start from the latest completed checkpoint; a corrupt one falls
    /// back to the previous retained checkpoint, saying so.
    ///
    /// Without a checkpoint completed in this run, the job starts again from what it started
    /// from: the savepoint or checkpoint of `-s` (or of a recovering master), else empty state.
    fn restore_latest(&mut self, coord: &CheckpointCoordinator) -> Result<()> {
        let base = coord.settings().dir.clone();
        let Some(base) = base.filter(|_| coord.latest_completed().is_some()) else {
            let initial = self.config.get_raw(RESTORE_PATH_KEY).map(str::to_string);
            let allow = self
                .config
                .get_raw(ALLOW_NON_RESTORED_KEY)
                .is_some_and(|v| v == "true");
            return self
                .executor
                .restore_from(initial.as_deref(), allow)
                .map(|_| ());
        };
        let mut candidates = completed_checkpoints(&base, &self.job_id)
            .map_err(|e| SluiceError::Job(e.to_string()))?;
        candidates.reverse();
        let mut last_error = None;
        for (id, dir) in candidates {
            match self.executor.restore_from(Some(dir.url()), false) {
                Ok(_) => {
                    if let Some(e) = &last_error {
                        eprintln!("restoring from checkpoint {id} instead: {e}");
                    }
                    self.view.lock().restored_checkpoint = Some(id);
                    return Ok(());
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

    /// Source subtasks of the job: all of them end their input together (see
    /// [`EndOfInput`]).
    fn source_subtasks(&self) -> usize {
        self.plan
            .nodes
            .iter()
            .filter(|n| n.kind == sluice_core::plan::NodeKind::Source)
            .map(|n| n.parallelism)
            .sum()
    }

    fn run_attempt(
        &self,
        attempt: &dyn Attempt,
        coord: &mut CheckpointCoordinator,
        events: &Receiver<CheckpointEvent>,
        waiting: &mut HashMap<u64, Reply>,
        stop: &mut Option<u64>,
        end: &mut EndOfInput,
    ) -> (Outcome, usize) {
        let mut finished = 0usize;
        let mut cancelled = false;
        loop {
            let now = Instant::now();
            let may_trigger = stop.is_none() && finished == 0;
            let final_due = may_trigger && end.due(coord, now);
            if final_due || (may_trigger && !end.all_ended() && coord.periodic_due(now)) {
                let id = self.trigger(
                    attempt,
                    coord,
                    SnapshotKind::Checkpoint,
                    None,
                    BarrierKind::Checkpoint,
                    None,
                    waiting,
                );
                if final_due {
                    if let Some(id) = id {
                        eprintln!(
                            "job {}: every source reached the end of its input; final checkpoint {id}",
                            self.job_id
                        );
                    }
                    let outcome = end.triggered(id);
                    self.after_final_checkpoint(attempt, coord, outcome);
                }
            }
            for f in coord.expire(now) {
                self.executor.end_checkpoint(f.id);
                let outcome = end.failed(f.id);
                self.after_final_checkpoint(attempt, coord, outcome);
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
            // A wait of zero means a checkpoint is due that this attempt does not take
            // (a stop in progress, tasks finished): waiting for events then avoids a spin.
            let wakeup = match coord.next_wakeup(now) {
                d if d.is_zero() => IDLE_WAKEUP,
                d => d,
            };
            select! {
                recv(attempt.done()) -> msg => {
                    let Ok((_task, _subtask, result)) = msg else { return (Outcome::Finished, finished) };
                    finished += 1;
                    match result {
                        Ok(()) => {}
                        Err(SluiceError::Cancelled { .. }) if cancelled => {}
                        Err(SluiceError::NeighbourGone(_)) if cancelled => {}
                        Err(e) => return (Outcome::Failed(e), finished),
                    }
                    if finished == attempt.subtasks() {
                        return (if cancelled { Outcome::Cancelled } else { Outcome::Finished }, finished);
                    }
                }
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        let id = match &ev {
                            CheckpointEvent::Acknowledged { checkpoint_id, .. } | CheckpointEvent::Declined { checkpoint_id, .. } => *checkpoint_id,
                            CheckpointEvent::SourceEnded { task, subtask, attempt: a } => {
                                end.source_ended(*a, *task, *subtask);
                                continue;
                            }
                        };
                        let outcome = match self.on_event(ev, attempt, coord, waiting) {
                            Some(Ok(done)) => end.completed(done),
                            Some(Err(failed)) => end.failed(failed),
                            None => end_of_input::Outcome::Wait,
                        };
                        self.after_final_checkpoint(attempt, coord, outcome);
                        if Some(id) == *stop && coord.target_of(id).is_none() && !coord.history().any(|h| h.id == id && h.status == crate::checkpoint::CheckpointStatus::Completed) {
                            resume_if_stop_failed(attempt, stop, id);
                        }
                    }
                }
                recv(self.requests) -> req => {
                    match req {
                        Ok(Request::Cancel) | Err(_) => {
                            cancelled = true;
                            self.set_status(JobStatus::Cancelling);
                            attempt.cancel();
                        }
                        Ok(Request::Savepoint { target, stop: stop_drain, format, reply }) => {
                            if finished > 0 {
                                let _ = reply.send(Err(SluiceError::Job(format!(
                                    "job {} has tasks that already finished; it cannot take a savepoint",
                                    self.job_id
                                ))));
                                continue;
                            }
                            let kind = match stop_drain {
                                None => BarrierKind::Savepoint { format },
                                Some(drain) => BarrierKind::StopWithSavepoint { drain, format },
                            };
                            let id = self.trigger(attempt, coord, SnapshotKind::Savepoint, target.as_deref(), kind, Some(reply), waiting);
                            if stop_drain.is_some() {
                                *stop = id;
                            }
                        }
                        Ok(Request::Checkpoint { reply }) => {
                            if finished > 0 {
                                let _ = reply.send(Err(SluiceError::Job("tasks already finished".into())));
                                continue;
                            }
                            self.trigger(attempt, coord, SnapshotKind::Checkpoint, None, BarrierKind::Checkpoint, Some(reply), waiting);
                        }
                    }
                }
                default(wakeup) => {}
            }
            self.publish(coord);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn trigger(
        &self,
        attempt: &dyn Attempt,
        coord: &mut CheckpointCoordinator,
        kind: SnapshotKind,
        target: Option<&str>,
        barrier_kind: BarrierKind,
        reply: Option<Reply>,
        waiting: &mut HashMap<u64, Reply>,
    ) -> Option<u64> {
        let started = match coord.begin(kind, target, Instant::now()) {
            Ok((id, dir)) => {
                if let Some(format) = barrier_kind.savepoint_format() {
                    coord.set_savepoint_format(id, format);
                }
                self.executor
                    .begin_checkpoint(id, dir, coord.settings().inline_threshold);
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

    /// Tells the sources to end their input once the final checkpoint completed, or without
    /// one after it failed too often.
    fn after_final_checkpoint(
        &self,
        attempt: &dyn Attempt,
        coord: &CheckpointCoordinator,
        outcome: end_of_input::Outcome,
    ) {
        match outcome {
            end_of_input::Outcome::Wait => return,
            end_of_input::Outcome::EndInput => {}
            end_of_input::Outcome::GiveUp => {
                let why = coord
                    .history()
                    .find(|h| h.failure_message.is_some())
                    .and_then(|h| h.failure_message.clone())
                    .unwrap_or_default();
                eprintln!(
                    "job {}: the final checkpoint failed {FINAL_CHECKPOINT_ATTEMPTS} times (last: \
                     {why}); the sources end their input without it, so output published at \
                     the end is covered by no checkpoint",
                    self.job_id
                );
            }
        }
        attempt.send_sources(&TaskCommand::EndInput);
    }

    /// Applies a checkpoint event. Returns the checkpoint that completed (`Ok`) or failed
    /// (`Err`) because of it, if any.
    fn on_event(
        &self,
        ev: CheckpointEvent,
        attempt: &dyn Attempt,
        coord: &mut CheckpointCoordinator,
        waiting: &mut HashMap<u64, Reply>,
    ) -> Option<std::result::Result<u64, u64>> {
        let outcome = match ev {
            CheckpointEvent::Acknowledged {
                checkpoint_id,
                task,
                subtask,
                states,
                alignment_ms,
            } => match coord.acknowledge(checkpoint_id, (task, subtask), states, alignment_ms) {
                Ok(Some(done)) => {
                    self.executor.end_checkpoint(done.id);
                    attempt.send_all(&TaskCommand::CheckpointComplete(done.id));
                    if let Some(r) = waiting.remove(&done.id) {
                        let _ = r.send(Ok(done.location));
                    }
                    Some(Ok(done.id))
                }
                Ok(None) => None,
                Err(e) => {
                    self.executor.end_checkpoint(checkpoint_id);
                    if let Some(r) = waiting.remove(&checkpoint_id) {
                        let _ = r.send(Err(e));
                    }
                    Some(Err(checkpoint_id))
                }
            },
            CheckpointEvent::Declined {
                checkpoint_id,
                reason,
                ..
            } => {
                self.executor.end_checkpoint(checkpoint_id);
                let failed = coord.decline(checkpoint_id, &reason);
                if let Some(f) = &failed
                    && let Some(r) = waiting.remove(&f.id)
                {
                    let _ = r.send(Err(SluiceError::Job(format!(
                        "checkpoint {} failed: {}",
                        f.id, f.reason
                    ))));
                }
                failed.map(|f| Err(f.id))
            }
            // Handled by the attempt's loop.
            CheckpointEvent::SourceEnded { .. } => None,
        };
        self.publish(coord);
        outcome
    }

    /// After the tasks ended: lets in-flight savepoints complete (their acks may still be on
    /// the way from the uploaders), up to the checkpoint timeout.
    fn settle(
        &self,
        coord: &mut CheckpointCoordinator,
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
                    alignment_ms,
                }) => match coord.acknowledge(checkpoint_id, (task, subtask), states, alignment_ms)
                {
                    Ok(Some(done)) => {
                        self.executor.end_checkpoint(done.id);
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
                Ok(CheckpointEvent::SourceEnded { .. }) | Err(_) => {}
            }
        }
        // Checkpoints that can no longer complete (tasks finished before acknowledging).
        for f in coord.abort_all("the job finished before the checkpoint completed") {
            self.executor.end_checkpoint(f.id);
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
fn resume_if_stop_failed(attempt: &dyn Attempt, stop: &mut Option<u64>, id: u64) {
    if *stop == Some(id) {
        attempt.send_sources(&TaskCommand::AbortStop(id));
        *stop = None;
    }
}

/// A coordinator whose ids continue after `restored_id`.
fn coord_after(coord: CheckpointCoordinator, restored_id: u64) -> CheckpointCoordinator {
    coord.with_next_id(restored_id + 1)
}
