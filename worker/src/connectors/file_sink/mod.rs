//! A rolling file sink: each subtask writes part files `part-<subtask>-<n>` under a directory,
//! as text (one `Display` line per record) or JSON lines. A part is written under a hidden
//! in-progress name (see [`part`]) and becomes visible by rename, so readers never see
//! half-written parts. A part rolls by size or age; by age even when no record arrives: the sink
//! asks its task for a wake-up when the open part reaches `rollover_interval`.
//!
//! **Without checkpointing** a part becomes visible when it rolls or the input ends.
//!
//! **With checkpointing** the sink is exactly-once, a two-phase commit driven by
//! [`TwoPhaseCommitOperator`]: parts stay in progress until the checkpoint that covers them
//! completes. At a barrier the sink *pre-commits*: it rolls the open part (flush and fsync, as
//! Flink does for bulk formats) and hands over every part closed since the previous barrier as a
//! [`FileCommittable`] `{in-progress path, visible path, valid length}`; the committables not
//! yet published are the sink's state. When the checkpoint completes they are *committed*:
//! truncated to the valid length if longer, renamed, the directory synced. On restore the
//! restored committables are committed again (idempotently: an already published part is
//! skipped) and then leftovers are removed: in-progress parts of earlier attempts that no
//! completed checkpoint covers, whose records the restored sources replay. At end of input
//! everything is published.
//!
//! Why removing leftovers is safe, with parallel subtasks and at another parallelism:
//! - in-progress names carry a token unique to the attempt that writes them and the writer's
//!   subtask index, and an attempt creates, truncates and renames only files with its own
//!   token; the previous attempt's tasks have all stopped before a restart deploys new ones;
//! - subtask `i` removes in-progress files of index `i` only, and does so in `open`, before it
//!   writes: no other live subtask writes files of index `i`. Subtask 0 also removes indices
//!   `>= parallelism`, which no live subtask writes (after scaling down);
//! - no subtask removes a file named by a restored committable: the committables are union
//!   state, so every subtask knows all of them, including those another subtask (their owner,
//!   `writer index % parallelism`) may be committing concurrently;
//! - a restored committable whose writer index is below the new parallelism is committed by
//!   that same subtask in `open`, before it chooses names for new parts, so a new part never
//!   takes the visible name of a part still to be published; new parts skip names that exist.
//!
//! So one directory should be written by one job (and the jobs restored from its checkpoints
//! and savepoints) at a time: a fresh job removes in-progress parts another job left, and a
//! checkpoint of that other job whose notification was lost could then not publish them.

mod commit;
mod part;

use std::fmt::Display;
use std::io::Write;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use self::commit::FileCommittable;
use self::part::{OpenPart, attempt_token, in_progress_name, io_error, visible_name};
use crate::connectors::two_phase::{TwoPhaseCommitOperator, TwoPhaseCommitSink};
use crate::context::{OperatorContext, now_ms};
use crate::data::{Batch, Data};
use sluice_core::{Result, SluiceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One line per record, its `Display` form.
    Text,
    /// One JSON document per line.
    JsonLines,
}

/// When a part file is closed and a new one started.
#[derive(Debug, Clone, Copy)]
pub struct RollingPolicy {
    pub max_part_size: u64,
    pub rollover_interval: Duration,
}

impl Default for RollingPolicy {
    fn default() -> Self {
        RollingPolicy {
            max_part_size: 128 << 20,
            rollover_interval: Duration::from_secs(60),
        }
    }
}

/// Turns a record into a line; chosen by format.
pub trait LineEncoder<T>: Send + Sync + 'static {
    fn encode(&self, record: &T, out: &mut Vec<u8>) -> Result<()>;
}

pub struct TextEncoder;

impl<T: Display> LineEncoder<T> for TextEncoder {
    fn encode(&self, record: &T, out: &mut Vec<u8>) -> Result<()> {
        writeln!(out, "{record}").map_err(|e| SluiceError::Internal(e.to_string()))
    }
}

pub struct JsonEncoder;

impl<T: Serialize> LineEncoder<T> for JsonEncoder {
    fn encode(&self, record: &T, out: &mut Vec<u8>) -> Result<()> {
        serde_json::to_writer(&mut *out, record).map_err(|e| SluiceError::Serialization {
            what: "a record as JSON".into(),
            message: e.to_string(),
        })?;
        out.push(b'\n');
        Ok(())
    }
}

/// The file sink operator: the part writer below under the two-phase commit adapter.
pub type FileSink<T, E> = TwoPhaseCommitOperator<FileSinkWriter<T, E>>;

impl<T: Data, E: LineEncoder<T>> TwoPhaseCommitOperator<FileSinkWriter<T, E>> {
    pub fn new(dir: PathBuf, policy: RollingPolicy, encoder: E) -> Self {
        TwoPhaseCommitOperator::for_sink(FileSinkWriter::new(dir, policy, encoder))
    }
}

/// Writes the parts of one subtask; see the module documentation.
pub struct FileSinkWriter<T, E> {
    dir: PathBuf,
    policy: RollingPolicy,
    encoder: E,
    subtask: usize,
    parallelism: usize,
    exactly_once: bool,
    /// Unique to this attempt of this subtask; part of every in-progress name.
    token: String,
    counter: u64,
    part: Option<OpenPart>,
    /// Exactly-once: parts rolled since the last barrier, to be pre-committed at the next.
    closed: Vec<FileCommittable>,
    buf: Vec<u8>,
    _t: PhantomData<fn(T)>,
}

impl<T, E> FileSinkWriter<T, E> {
    pub fn new(dir: PathBuf, policy: RollingPolicy, encoder: E) -> Self {
        FileSinkWriter {
            dir,
            policy,
            encoder,
            subtask: 0,
            parallelism: 1,
            exactly_once: false,
            token: String::new(),
            counter: 0,
            part: None,
            closed: Vec::new(),
            buf: Vec::new(),
            _t: PhantomData,
        }
    }

    /// Whether the open part has reached its age limit.
    fn part_expired(&self) -> bool {
        self.part
            .as_ref()
            .is_some_and(|p| p.opened.elapsed() >= self.policy.rollover_interval)
    }

    /// Asks for `on_processing_time` when the open part reaches its age limit.
    fn request_roll_wakeup(&self, ctx: &OperatorContext) {
        if let Some(p) = &self.part {
            let left = self
                .policy
                .rollover_interval
                .saturating_sub(p.opened.elapsed());
            let left_ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
            // Rounded up by a millisecond so the wake-up is not a hair early.
            ctx.request_wakeup(now_ms().saturating_add(left_ms).saturating_add(1));
        }
    }

    fn open_part(&mut self) -> Result<()> {
        loop {
            let name = visible_name(self.subtask, self.counter);
            self.counter += 1;
            let visible = self.dir.join(&name);
            if visible.exists() {
                continue; // left by an earlier run into the same directory
            }
            let in_progress = self.dir.join(in_progress_name(&name, &self.token));
            self.part = Some(OpenPart::create(in_progress, visible)?);
            return Ok(());
        }
    }

    /// Closes the open part, if any, durable but not yet visible.
    fn finish_part(&mut self) -> Result<Option<FileCommittable>> {
        let Some(p) = self.part.take() else {
            return Ok(None);
        };
        let (in_progress, visible, valid_length) = p.finish()?;
        Ok(Some(FileCommittable {
            in_progress,
            visible,
            valid_length,
        }))
    }

    /// Rolls the open part: publishes it at once, or (exactly-once) keeps it for the next
    /// pre-commit.
    fn roll(&mut self) -> Result<()> {
        if let Some(c) = self.finish_part()? {
            if self.exactly_once {
                self.closed.push(c);
            } else {
                commit::commit(&c)?;
            }
        }
        Ok(())
    }
}

impl<T: Data, E: LineEncoder<T>> TwoPhaseCommitSink for FileSinkWriter<T, E> {
    type In = T;
    type Committable = FileCommittable;

    fn open(&mut self, ctx: &mut OperatorContext, exactly_once: bool) -> Result<()> {
        self.subtask = ctx.subtask;
        self.parallelism = ctx.parallelism;
        self.exactly_once = exactly_once;
        self.token = attempt_token();
        std::fs::create_dir_all(&self.dir).map_err(|e| io_error(&self.dir, e))
    }

    fn write(&mut self, batch: Batch<T>, ctx: &mut OperatorContext) -> Result<()> {
        for r in &batch.data {
            self.buf.clear();
            self.encoder.encode(r, &mut self.buf)?;
            if self.part.as_ref().is_some_and(|p| {
                p.size > 0
                    && (p.size + self.buf.len() as u64 > self.policy.max_part_size
                        || p.opened.elapsed() >= self.policy.rollover_interval)
            }) {
                self.roll()?;
            }
            if self.part.is_none() {
                self.open_part()?;
                self.request_roll_wakeup(ctx);
            }
            let p = self.part.as_mut().expect("a part is open");
            p.write(&self.buf)?;
        }
        Ok(())
    }

    fn on_processing_time(&mut self, _now_ms: i64, ctx: &mut OperatorContext) -> Result<()> {
        if self.part_expired() {
            self.roll()?;
        }
        // Wake-ups are shared by the task's operators and consumed when fired: ask again.
        self.request_roll_wakeup(ctx);
        Ok(())
    }

    fn pre_commit(
        &mut self,
        _checkpoint_id: u64,
        _ctx: &mut OperatorContext,
    ) -> Result<Vec<FileCommittable>> {
        self.roll()?;
        Ok(std::mem::take(&mut self.closed))
    }

    fn commit(&mut self, c: &FileCommittable, _ctx: &mut OperatorContext) -> Result<()> {
        commit::commit(c)
    }

    fn abort_leftovers(
        &mut self,
        restored: &[FileCommittable],
        _ctx: &mut OperatorContext,
    ) -> Result<()> {
        let removed =
            commit::remove_leftovers(&self.dir, self.subtask, self.parallelism, restored)?;
        if removed > 0 {
            log::info!(
                "file sink subtask {}: removed {removed} in-progress parts of earlier attempts \
                 under {}",
                self.subtask,
                self.dir.display()
            );
        }
        Ok(())
    }

    fn finish(&mut self, _ctx: &mut OperatorContext) -> Result<Vec<FileCommittable>> {
        let mut out = std::mem::take(&mut self.closed);
        out.extend(self.finish_part()?);
        Ok(out)
    }

    fn close(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        if self.exactly_once {
            // Cancelled or failed: what no checkpoint covers yet would only be replayed.
            if let Some(p) = self.part.take() {
                p.discard();
            }
            for c in std::mem::take(&mut self.closed) {
                let _ignored = std::fs::remove_file(&c.in_progress);
            }
        }
        Ok(())
    }
}
