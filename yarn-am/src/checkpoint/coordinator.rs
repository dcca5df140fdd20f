//! The checkpoint coordinator. It owns no threads and sends nothing itself: the job driver asks
//! it when to trigger, tells it about acknowledgements and declines, and forwards what it
//! decides to the tasks. That keeps the protocol testable and the same for every deployment.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use sluice_core::{Result, SluiceError};
use sluice_hdfs_backend::retention::enforce_retention;
use sluice_hdfs_backend::snapshot::{
    CheckpointMetadata, FORMAT_VERSION, OperatorState, SnapshotDir, SnapshotKind, StateHandle,
    SubtaskState,
};

use super::registry::CheckpointRegistry;
use super::settings::CheckpointSettings;
use super::stats::{CheckpointStats, CheckpointStatus};
use sluice_worker::snapshot::SavepointFormat;

/// (task index, subtask index).
pub type TaskId = (usize, usize);

struct Pending {
    kind: SnapshotKind,
    started: Instant,
    trigger_ms: i64,
    dir: SnapshotDir,
    acked: HashSet<TaskId>,
    states: BTreeMap<String, Vec<SubtaskState>>,
}

/// A checkpoint or savepoint that just completed.
#[derive(Debug, Clone)]
pub struct Completed {
    pub id: u64,
    pub kind: SnapshotKind,
    pub location: String,
    pub state_size: u64,
}

/// A checkpoint or savepoint that was aborted.
#[derive(Debug, Clone)]
pub struct Failed {
    pub id: u64,
    pub kind: SnapshotKind,
    pub reason: String,
}

pub struct CheckpointCoordinator {
    settings: CheckpointSettings,
    job_id: String,
    job_name: String,
    max_parallelism: usize,
    /// (uid, name, parallelism) of every operator, in plan order.
    operators: Vec<(String, String, usize)>,
    expected: usize,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    last_trigger: Option<Instant>,
    last_completion: Option<Instant>,
    consecutive_failures: usize,
    latest: Option<(u64, String)>,
    history: VecDeque<CheckpointStats>,
    counts: Counts,
    /// With HA: the id counter and completed-checkpoint pointers in ZooKeeper.
    registry: Option<std::sync::Arc<dyn CheckpointRegistry>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub restored: u64,
    pub total: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn storage_err(e: sluice_hdfs_backend::StorageError) -> SluiceError {
    SluiceError::Job(e.to_string())
}

impl CheckpointCoordinator {
    /// `operators`: (uid, name, parallelism); `subtasks`: acknowledgements a checkpoint needs.
    pub fn new(
        settings: CheckpointSettings,
        job_id: &str,
        job_name: &str,
        max_parallelism: usize,
        operators: Vec<(String, String, usize)>,
        subtasks: usize,
        first_id: u64,
    ) -> Self {
        CheckpointCoordinator {
            settings,
            job_id: job_id.to_string(),
            job_name: job_name.to_string(),
            max_parallelism,
            operators,
            expected: subtasks,
            next_id: first_id.max(1),
            pending: BTreeMap::new(),
            last_trigger: None,
            last_completion: None,
            consecutive_failures: 0,
            latest: None,
            history: VecDeque::new(),
            counts: Counts::default(),
            registry: None,
        }
    }

    /// Takes ids from `registry` and registers every completed checkpoint there; a checkpoint
    /// the registry refuses does not complete.
    pub fn with_registry(mut self, registry: std::sync::Arc<dyn CheckpointRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Continues ids after a restored checkpoint, so no new checkpoint reuses an old name.
    pub fn with_next_id(mut self, next: u64) -> Self {
        self.next_id = self.next_id.max(next);
        self
    }

    pub fn settings(&self) -> &CheckpointSettings {
        &self.settings
    }

    /// The id the next checkpoint will get (never reused within a job).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The latest completed checkpoint: (id, location).
    pub fn latest_completed(&self) -> Option<&(u64, String)> {
        self.latest.as_ref()
    }

    pub fn set_latest_completed(&mut self, id: u64, location: String) {
        self.latest = Some((id, location));
        self.counts.restored += 1;
    }

    pub fn history(&self) -> impl Iterator<Item = &CheckpointStats> {
        self.history.iter()
    }

    pub fn counts(&self) -> Counts {
        let mut c = self.counts;
        c.in_progress = self.pending.len() as u64;
        c
    }

    /// Whether a periodic checkpoint is due now.
    pub fn periodic_due(&self, now: Instant) -> bool {
        let Some(interval) = self.settings.interval else {
            return false;
        };
        if self.settings.dir.is_none() || self.pending.len() >= self.settings.max_concurrent {
            return false;
        }
        if self
            .last_trigger
            .is_some_and(|t| now.duration_since(t) < interval)
        {
            return false;
        }
        self.last_completion
            .is_none_or(|t| now.duration_since(t) >= self.settings.min_pause)
    }

    /// Starts a checkpoint (into `state.checkpoints.dir`) or a savepoint (into `target`, or
    /// `state.savepoints.dir`). Returns its id and directory.
    pub fn begin(
        &mut self,
        kind: SnapshotKind,
        target: Option<&str>,
        now: Instant,
    ) -> Result<(u64, SnapshotDir)> {
        if let Some(r) = &self.registry {
            match r.next_id(self.next_id) {
                Ok(id) => self.next_id = id,
                Err(e) => {
                    // The next periodic trigger waits its interval, as after any trigger.
                    if kind == SnapshotKind::Checkpoint {
                        self.last_trigger = Some(now);
                    }
                    return Err(e);
                }
            }
        }
        let id = self.next_id;
        let dir = match kind {
            SnapshotKind::Checkpoint => {
                let base = self.settings.dir.as_deref().ok_or_else(|| {
                    SluiceError::Config("checkpoints need state.checkpoints.dir".into())
                })?;
                SnapshotDir::checkpoint(base, &self.job_id, id).map_err(storage_err)
            }
            SnapshotKind::Savepoint => {
                let base = target.or(self.settings.savepoint_dir.as_deref()).ok_or_else(|| {
                    SluiceError::Config(
                        "no savepoint directory: give a target directory or set state.savepoints.dir".into(),
                    )
                })?;
                SnapshotDir::savepoint(base, &self.job_id).map_err(storage_err)
            }
        };
        self.next_id += 1;
        if kind == SnapshotKind::Checkpoint {
            self.last_trigger = Some(now);
        }
        let dir = match dir {
            Ok(d) => d,
            Err(e) => {
                // The attempt counts as a failed checkpoint and shows in the history.
                self.counts.total += 1;
                self.fail(id, kind, now, &e.to_string());
                return Err(e);
            }
        };
        let trigger_ms = now_ms();
        self.pending.insert(
            id,
            Pending {
                kind,
                started: now,
                trigger_ms,
                dir: dir.clone(),
                acked: HashSet::new(),
                states: BTreeMap::new(),
            },
        );
        self.counts.total += 1;
        self.record(
            id,
            kind,
            CheckpointStatus::InProgress,
            trigger_ms,
            0,
            0,
            0,
            None,
            None,
        );
        Ok((id, dir))
    }

    /// Records the format of savepoint `id` in its history entry.
    pub fn set_savepoint_format(&mut self, id: u64, format: SavepointFormat) {
        if let Some(h) = self.history.iter_mut().find(|h| h.id == id) {
            h.savepoint_format = Some(format);
        }
    }

    /// The directory of a pending checkpoint, for the tasks that write its state.
    pub fn target_of(&self, id: u64) -> Option<SnapshotDir> {
        self.pending.get(&id).map(|p| p.dir.clone())
    }

    /// A subtask stored its state for checkpoint `id`. Completes the checkpoint when it was the
    /// last one: writes `_metadata` (last, atomically), then applies retention. `alignment_ms`,
    /// the subtask's barrier alignment time, goes into the checkpoint's history entry.
    pub fn acknowledge(
        &mut self,
        id: u64,
        task: TaskId,
        states: Vec<(String, usize, StateHandle)>,
        alignment_ms: u64,
    ) -> Result<Option<Completed>> {
        let Some(p) = self.pending.get_mut(&id) else {
            return Ok(None); // late ack of an aborted checkpoint
        };
        if !p.acked.insert(task) {
            return Ok(None);
        }
        if let Some(h) = self.history.iter_mut().find(|h| h.id == id) {
            h.alignments.push((task.0, task.1, alignment_ms));
        }
        for (uid, subtask, handle) in states {
            p.states
                .entry(uid)
                .or_default()
                .push(SubtaskState { subtask, handle });
        }
        let acked = p.acked.len();
        self.update_progress(id, acked);
        if acked < self.expected {
            return Ok(None);
        }
        let p = self.pending.remove(&id).expect("pending");
        let mut operators = Vec::new();
        for (uid, name, parallelism) in &self.operators {
            let mut subtasks = p.states.get(uid).cloned().unwrap_or_default();
            subtasks.sort_by_key(|s| s.subtask);
            operators.push(OperatorState {
                uid: uid.clone(),
                name: name.clone(),
                parallelism: *parallelism,
                subtasks,
            });
        }
        let meta = CheckpointMetadata {
            format_version: FORMAT_VERSION,
            job_id: self.job_id.clone(),
            job_name: self.job_name.clone(),
            checkpoint_id: id,
            kind: p.kind,
            timestamp_ms: p.trigger_ms,
            max_parallelism: self.max_parallelism,
            operators,
        };
        if let Some(r) = &self.registry
            && let Err(e) = r.check_leading()
        {
            let reason = format!("checkpoint {id} not completed: {e}");
            let _cleanup = p.dir.discard();
            self.fail(id, p.kind, p.started, &reason);
            return Err(SluiceError::Job(reason));
        }
        if let Err(e) = p.dir.write_metadata(&meta) {
            let reason = format!("writing {}/_metadata failed: {e}", p.dir.url());
            let _cleanup = p.dir.discard();
            self.fail(id, p.kind, p.started, &reason);
            return Err(SluiceError::Job(reason));
        }
        if let Some(r) = &self.registry
            && p.kind == SnapshotKind::Checkpoint
            && let Err(e) = r.add(id, p.dir.url(), self.settings.retained)
        {
            let reason = format!("registering checkpoint {id} ({}) failed: {e}", p.dir.url());
            let _cleanup = p.dir.discard();
            self.fail(id, p.kind, p.started, &reason);
            return Err(SluiceError::Job(reason));
        }
        let size = meta.state_size();
        let location = p.dir.url().to_string();
        let duration = p.started.elapsed();
        self.counts.completed += 1;
        self.consecutive_failures = 0;
        self.record(
            id,
            p.kind,
            CheckpointStatus::Completed,
            p.trigger_ms,
            duration.as_millis() as u64,
            size,
            self.expected,
            Some(location.clone()),
            None,
        );
        if p.kind == SnapshotKind::Checkpoint {
            self.last_completion = Some(Instant::now());
            self.latest = Some((id, location.clone()));
            if let Some(base) = &self.settings.dir {
                let in_progress: Vec<u64> = self.pending.keys().copied().collect();
                // Retention failures must not fail the job; the next completion retries.
                let _ = enforce_retention(base, &self.job_id, self.settings.retained, &in_progress);
            }
        }
        Ok(Some(Completed {
            id,
            kind: p.kind,
            location,
            state_size: size,
        }))
    }

    /// A subtask could not take or store its state: the checkpoint is aborted and cleaned up.
    pub fn decline(&mut self, id: u64, reason: &str) -> Option<Failed> {
        let p = self.pending.remove(&id)?;
        let _cleanup = p.dir.discard();
        self.fail(id, p.kind, p.started, reason);
        Some(Failed {
            id,
            kind: p.kind,
            reason: reason.to_string(),
        })
    }

    /// Aborts checkpoints older than the timeout.
    pub fn expire(&mut self, now: Instant) -> Vec<Failed> {
        let timeout = self.settings.timeout;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.started) > timeout)
            .map(|(id, _)| *id)
            .collect();
        expired
            .into_iter()
            .filter_map(|id| {
                self.decline(
                    id,
                    &format!("checkpoint expired after {timeout:?} before all tasks acknowledged"),
                )
            })
            .collect()
    }

    /// Aborts everything in flight (the job failed or stops).
    pub fn abort_all(&mut self, reason: &str) -> Vec<Failed> {
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        let failed = ids
            .into_iter()
            .filter_map(|id| self.decline(id, reason))
            .collect();
        // A job failure is not a checkpoint failure: it must not use up the tolerance.
        self.consecutive_failures = 0;
        failed
    }

    /// Whether consecutive checkpoint failures exceeded `tolerable-failed-checkpoints`.
    pub fn tolerance_exceeded(&self) -> bool {
        self.settings
            .tolerable_failed
            .is_some_and(|t| self.consecutive_failures > t)
    }

    fn fail(&mut self, id: u64, kind: SnapshotKind, started: Instant, reason: &str) {
        self.counts.failed += 1;
        if kind == SnapshotKind::Checkpoint {
            self.consecutive_failures += 1;
        }
        let trigger = self
            .history
            .iter()
            .find(|h| h.id == id)
            .map(|h| h.trigger_timestamp)
            .unwrap_or_else(now_ms);
        self.record(
            id,
            kind,
            CheckpointStatus::Failed,
            trigger,
            started.elapsed().as_millis() as u64,
            0,
            self.expected,
            None,
            Some(reason.to_string()),
        );
    }

    fn update_progress(&mut self, id: u64, acked: usize) {
        if let Some(h) = self.history.iter_mut().find(|h| h.id == id) {
            h.num_acknowledged_subtasks = acked;
            h.latest_ack_timestamp = now_ms();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        id: u64,
        kind: SnapshotKind,
        status: CheckpointStatus,
        trigger: i64,
        duration_ms: u64,
        size: u64,
        acked: usize,
        path: Option<String>,
        failure: Option<String>,
    ) {
        let entry = CheckpointStats {
            id,
            status,
            is_savepoint: kind == SnapshotKind::Savepoint,
            trigger_timestamp: trigger,
            latest_ack_timestamp: if acked > 0 { now_ms() } else { trigger },
            end_to_end_duration: duration_ms,
            state_size: size,
            num_subtasks: self.expected,
            num_acknowledged_subtasks: acked,
            external_path: path,
            failure_message: failure,
            alignments: Vec::new(),
            savepoint_format: None,
        };
        if let Some(h) = self.history.iter_mut().find(|h| h.id == id) {
            let alignments = std::mem::take(&mut h.alignments);
            *h = CheckpointStats {
                alignments,
                savepoint_format: h.savepoint_format,
                ..entry
            };
        } else {
            self.history.push_front(entry);
            self.history.truncate(self.settings.history);
        }
    }

    /// How long the driver may wait for events before it looks again: until the next
    /// periodic checkpoint is due, at most [`IDLE_WAKEUP`] (expiries are checked then too).
    /// While checkpoints in flight or the minimum pause hold the next one back, it is due when
    /// they let it, not when its interval passed: a wait of zero there would have the driver
    /// spin through a whole slow checkpoint, taking a core from the tasks.
    pub fn next_wakeup(&self, now: Instant) -> Duration {
        let Some(interval) = self.settings.interval else {
            return IDLE_WAKEUP;
        };
        if self.settings.dir.is_none() || self.pending.len() >= self.settings.max_concurrent {
            // An acknowledgement wakes the driver when a checkpoint completes.
            return IDLE_WAKEUP;
        }
        let mut due = self.last_trigger.map_or(now, |t| t + interval);
        if let Some(done) = self.last_completion {
            due = due.max(done + self.settings.min_pause);
        }
        due.saturating_duration_since(now).min(IDLE_WAKEUP)
    }
}

/// The longest the job driver waits for events before it checks the time again.
pub const IDLE_WAKEUP: Duration = Duration::from_millis(50);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::config::Config;

    fn coordinator(dir: &std::path::Path, pause: Duration) -> CheckpointCoordinator {
        let mut config = Config::default();
        config.checkpoint_interval = Some(Duration::from_millis(100));
        config.checkpoint_min_pause = pause;
        let mut settings = CheckpointSettings::from_config(&config);
        settings.dir = Some(format!("file://{}", dir.display()));
        let ops = vec![("op".to_string(), "op".to_string(), 1)];
        CheckpointCoordinator::new(settings, "job-1", "job", 128, ops, 1, 1)
    }

    /// A checkpoint still in flight past the interval, or a minimum pause not yet over, holds
    /// the next one back: the driver then waits instead of looking again at once (which spun a
    /// core through every checkpoint slower than its interval).
    #[test]
    fn the_driver_waits_while_the_next_checkpoint_is_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut coord = coordinator(dir.path(), Duration::ZERO);
        let t0 = Instant::now();
        assert!(coord.periodic_due(t0));
        assert_eq!(
            coord.next_wakeup(t0),
            Duration::ZERO,
            "the first one is due at once"
        );
        coord.begin(SnapshotKind::Checkpoint, None, t0).unwrap();
        assert_eq!(coord.next_wakeup(t0), IDLE_WAKEUP);
        let late = t0 + Duration::from_millis(300);
        assert!(
            !coord.periodic_due(late),
            "one in flight, at most one at a time"
        );
        assert_eq!(coord.next_wakeup(late), IDLE_WAKEUP);

        let mut paused = coordinator(dir.path(), Duration::from_millis(400));
        paused.last_trigger = Some(t0);
        paused.last_completion = Some(t0 + Duration::from_millis(150));
        let at = t0 + Duration::from_millis(200);
        assert!(!paused.periodic_due(at), "the pause runs until 550 ms");
        assert_eq!(paused.next_wakeup(at), IDLE_WAKEUP);
        let near = t0 + Duration::from_millis(530);
        assert_eq!(paused.next_wakeup(near), Duration::from_millis(20));
        assert!(paused.periodic_due(t0 + Duration::from_millis(550)));
    }
}
