//! Checkpoint settings, read from the configuration once per job.

use std::time::Duration;

use sluice_core::Config;
use sluice_core::config::CheckpointingMode;

#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    pub interval: Option<Duration>,
    pub mode: CheckpointingMode,
    pub timeout: Duration,
    pub min_pause: Duration,
    pub max_concurrent: usize,
    /// Consecutive failed checkpoints tolerated before the job fails; `None` tolerates any.
    pub tolerable_failed: Option<usize>,
    pub retained: usize,
    /// `state.checkpoints.dir`; periodic checkpoints need it.
    pub dir: Option<String>,
    /// `state.savepoints.dir`, the default target of savepoints.
    pub savepoint_dir: Option<String>,
    /// State smaller than this goes into `_metadata` instead of a file of its own.
    pub inline_threshold: usize,
    /// `RETAIN_ON_CANCELLATION` (true) or `DELETE_ON_CANCELLATION`.
    pub retain_on_cancel: bool,
    /// `web.checkpoints.history`: how many checkpoints the history (REST, dashboard) keeps.
    pub history: usize,
    /// `execution.checkpointing.checkpoints-after-tasks-finish`: bounded sources wait for a
    /// final checkpoint before the job ends.
    pub after_tasks_finish: bool,
}

pub const INLINE_THRESHOLD_KEY: &str = "state.storage.fs.memory-threshold";
pub const RETENTION_KEY: &str = "execution.checkpointing.externalized-checkpoint-retention";
pub const TOLERABLE_KEY: &str = "execution.checkpointing.tolerable-failed-checkpoints";
pub const HISTORY_KEY: &str = "web.checkpoints.history";
/// Entries the checkpoint history keeps unless `web.checkpoints.history` says otherwise.
pub const DEFAULT_HISTORY: usize = 64;

impl CheckpointSettings {
    pub fn from_config(config: &Config) -> Self {
        let inline_threshold = config
            .get_raw(INLINE_THRESHOLD_KEY)
            .and_then(sluice_core::config::parse_memory)
            .unwrap_or(20 << 10) as usize;
        let retain_on_cancel = !config
            .get_raw(RETENTION_KEY)
            .is_some_and(|v| v.eq_ignore_ascii_case("DELETE_ON_CANCELLATION"));
        CheckpointSettings {
            interval: config.checkpoint_interval,
            mode: config.checkpoint_mode,
            timeout: config.checkpoint_timeout,
            min_pause: config.checkpoint_min_pause,
            max_concurrent: config.max_concurrent_checkpoints.max(1),
            tolerable_failed: config
                .get_raw(TOLERABLE_KEY)
                .map(|_| config.tolerable_failed_checkpoints),
            retained: config.checkpoints_retained.max(1),
            dir: config.checkpoints_dir.clone(),
            savepoint_dir: config.savepoints_dir.clone(),
            inline_threshold,
            retain_on_cancel,
            history: config
                .get_raw(HISTORY_KEY)
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(DEFAULT_HISTORY)
                .max(1),
            after_tasks_finish: config.checkpoints_after_tasks_finish,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_length_is_configurable() {
        let load = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            CheckpointSettings::from_config(&Config::load(None, &o).expect("a config")).history
        };
        assert_eq!(load(&[]), DEFAULT_HISTORY);
        assert_eq!(load(&["web.checkpoints.history=1000"]), 1000);
        assert_eq!(
            load(&["web.checkpoints.history=0"]),
            1,
            "at least the latest is kept"
        );
    }
}
