//! An exactly-once sink of `(hour directory, line)` records into part files on HDFS or a local
//! disk, through the storage layer checkpoints use (`sluice_hdfs_backend::resolve`).
//!
//! Two-phase commit ([`TwoPhaseCommitSink`]): between barriers a subtask keeps its lines per
//! hour directory in memory; at a barrier it writes each hour's lines to a staged file
//! `<output>/_staging/<subtask>/<attempt>-<n>.csv` (written atomically) and hands over
//! `{staged, visible}` as the committable; when the checkpoint completes the staged file is
//! renamed to `<output>/<hour directory>/part-<attempt>-<subtask>-<n>.csv`. Committing again
//! (after a restore whose notification was lost) finds the visible file and does nothing.
//! After a restore a subtask deletes the staged files of its index that no restored
//! committable names: they hold lines of a checkpoint that never completed, which the Kafka
//! source reads again from the restored offsets. Subtask 0 also cleans the indices at or above
//! the parallelism (after scaling down), which no live subtask writes.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice::{Batch, OperatorContext, Result, SluiceError};
use sluice_hdfs_backend::{Storage, resolve};
use sluice_worker::connectors::two_phase::{TwoPhaseCommitOperator, TwoPhaseCommitSink};

const STAGING: &str = "_staging";

/// The sink's configuration; [`HourFiles::operator`] makes one sink per subtask.
pub struct HourFiles {
    url: String,
}

impl HourFiles {
    /// Checks that `url` names a storage (`hdfs://`, `viewfs://`, `file://` or a path).
    pub fn new(url: &str) -> Result<Self> {
        resolve(url).map_err(|e| SluiceError::Config(format!("--output {url}: {e}")))?;
        Ok(HourFiles {
            url: url.to_string(),
        })
    }

    pub fn operator(&self) -> TwoPhaseCommitOperator<HourFilesSink> {
        TwoPhaseCommitOperator::for_sink(HourFilesSink {
            url: self.url.clone(),
            storage: None,
            base: String::new(),
            attempt: attempt_token(),
            subtask: 0,
            next: 0,
            hours: BTreeMap::new(),
        })
    }
}

/// What publishes one staged file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StagedPart {
    staged: String,
    visible: String,
}

pub struct HourFilesSink {
    url: String,
    storage: Option<Arc<dyn Storage>>,
    /// The output directory within the storage.
    base: String,
    /// Unique to this attempt of this subtask, so names never collide across attempts.
    attempt: String,
    subtask: usize,
    /// Number of the next staged file.
    next: u64,
    /// Lines since the last barrier, per hour directory.
    hours: BTreeMap<String, Vec<u8>>,
}

impl HourFilesSink {
    fn storage(&self) -> Result<&Arc<dyn Storage>> {
        self.storage
            .as_ref()
            .ok_or_else(|| SluiceError::Internal(format!("{}: sink not open", self.url)))
    }

    fn staging_dir(&self, subtask: usize) -> String {
        format!("{}/{STAGING}/{subtask}", self.base)
    }

    /// Writes the buffered lines to staged files and returns their committables.
    fn stage(&mut self, ctx: &OperatorContext) -> Result<Vec<StagedPart>> {
        let storage = self.storage()?.clone();
        let mut parts = Vec::new();
        for (hour, bytes) in std::mem::take(&mut self.hours) {
            let n = self.next;
            self.next += 1;
            let staged = format!(
                "{}/{}-{n}.csv",
                self.staging_dir(self.subtask),
                self.attempt
            );
            let visible = format!(
                "{}/{hour}/part-{}-{}-{n}.csv",
                self.base, self.attempt, self.subtask
            );
            storage
                .write_atomic(&staged, &bytes)
                .map_err(|e| ctx.error(format!("writing {}: {e}", storage.url(&staged))))?;
            parts.push(StagedPart { staged, visible });
        }
        Ok(parts)
    }
}

impl TwoPhaseCommitSink for HourFilesSink {
    type In = (String, String);
    type Committable = StagedPart;

    fn open(&mut self, ctx: &mut OperatorContext, _exactly_once: bool) -> Result<()> {
        let (storage, base) =
            resolve(&self.url).map_err(|e| ctx.error(format!("output {}: {e}", self.url)))?;
        self.storage = Some(storage);
        self.base = base.trim_end_matches('/').to_string();
        self.subtask = ctx.subtask;
        Ok(())
    }

    fn write(&mut self, batch: Batch<(String, String)>, _ctx: &mut OperatorContext) -> Result<()> {
        for (hour, line) in batch.data {
            self.hours
                .entry(hour)
                .or_default()
                .extend_from_slice(line.as_bytes());
        }
        Ok(())
    }

    fn pre_commit(
        &mut self,
        _checkpoint_id: u64,
        ctx: &mut OperatorContext,
    ) -> Result<Vec<StagedPart>> {
        self.stage(ctx)
    }

    fn commit(&mut self, part: &StagedPart, ctx: &mut OperatorContext) -> Result<()> {
        let storage = self.storage()?;
        let err = |what: &str, path: &str, e: &dyn std::fmt::Display| {
            ctx.error(format!("{what} {}: {e}", storage.url(path)))
        };
        if storage
            .exists(&part.visible)
            .map_err(|e| err("checking", &part.visible, &e))?
        {
            return Ok(());
        }
        let dir = part.visible.rsplit_once('/').map_or("", |(d, _)| d);
        storage.mkdirs(dir).map_err(|e| err("creating", dir, &e))?;
        storage
            .rename(&part.staged, &part.visible)
            .map_err(|e| err("publishing", &part.staged, &e))
    }

    fn abort_leftovers(
        &mut self,
        restored: &[StagedPart],
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let storage = self.storage()?.clone();
        let keep: std::collections::BTreeSet<&str> =
            restored.iter().map(|p| p.staged.as_str()).collect();
        let mut dirs = vec![self.staging_dir(self.subtask)];
        if self.subtask == 0 {
            let root = format!("{}/{STAGING}", self.base);
            for e in storage.list(&root).unwrap_or_default() {
                if e.name.parse::<usize>().is_ok_and(|i| i >= ctx.parallelism) {
                    dirs.push(format!("{root}/{}", e.name));
                }
            }
        }
        for dir in dirs {
            for e in storage.list(&dir).unwrap_or_default() {
                let path = format!("{dir}/{}", e.name);
                if !e.is_dir && !keep.contains(path.as_str()) {
                    storage.delete(&path, false).map_err(|err| {
                        ctx.error(format!("removing {}: {err}", storage.url(&path)))
                    })?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &mut OperatorContext) -> Result<Vec<StagedPart>> {
        self.stage(ctx)
    }
}

/// The directory of an event time: `dt=YYYY-MM-DD/hour=HH` in UTC.
pub fn hour_dir(ts_ms: i64) -> String {
    let days = ts_ms.div_euclid(86_400_000);
    let hour = ts_ms.rem_euclid(86_400_000) / 3_600_000;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("dt={year:04}-{month:02}-{day:02}/hour={hour:02}")
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// 12 hex digits unique to this sink instance.
fn attempt_token() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xFFFF_FFFF_FFFF)
}
