//! A rolling file sink: each subtask writes part files `part-<subtask>-<n>` under a directory,
//! as text (one `Display` line per record) or JSON lines. A part is written under a hidden
//! in-progress name and becomes visible by rename when it rolls (size or age) or the input ends,
//! so readers never see half-written parts. A part rolls by age even when no record arrives:
//! the sink asks its task for a wake-up when the open part reaches `rollover_interval`.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::context::{OperatorContext, now_ms};
use crate::data::{Batch, Data};
use crate::emit::Collector;
use crate::operator::Operator;
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

struct OpenPart {
    in_progress: PathBuf,
    visible: PathBuf,
    writer: BufWriter<File>,
    size: u64,
    opened: Instant,
}

pub struct FileSink<T, E> {
    dir: PathBuf,
    policy: RollingPolicy,
    encoder: E,
    subtask: usize,
    counter: u64,
    part: Option<OpenPart>,
    buf: Vec<u8>,
    _t: PhantomData<fn(T)>,
}

impl<T, E> FileSink<T, E> {
    pub fn new(dir: PathBuf, policy: RollingPolicy, encoder: E) -> Self {
        FileSink {
            dir,
            policy,
            encoder,
            subtask: 0,
            counter: 0,
            part: None,
            buf: Vec::new(),
            _t: PhantomData,
        }
    }

    fn io(path: &Path, e: std::io::Error) -> SluiceError {
        SluiceError::io(path.display(), e)
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
            let name = format!("part-{}-{}", self.subtask, self.counter);
            self.counter += 1;
            let visible = self.dir.join(&name);
            if visible.exists() {
                continue; // left by an earlier run into the same directory
            }
            let in_progress = self.dir.join(format!(".{name}.inprogress"));
            let f = File::create(&in_progress).map_err(|e| Self::io(&in_progress, e))?;
            self.part = Some(OpenPart {
                in_progress,
                visible,
                writer: BufWriter::with_capacity(256 * 1024, f),
                size: 0,
                opened: Instant::now(),
            });
            return Ok(());
        }
    }

    fn close_part(&mut self) -> Result<()> {
        if let Some(mut p) = self.part.take() {
            p.writer.flush().map_err(|e| Self::io(&p.in_progress, e))?;
            p.writer
                .get_ref()
                .sync_all()
                .map_err(|e| Self::io(&p.in_progress, e))?;
            std::fs::rename(&p.in_progress, &p.visible).map_err(|e| Self::io(&p.visible, e))?;
        }
        Ok(())
    }
}

impl<T: Data, E: LineEncoder<T>> Operator for FileSink<T, E> {
    type In = T;
    type Out = ();

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        self.subtask = ctx.subtask;
        std::fs::create_dir_all(&self.dir).map_err(|e| Self::io(&self.dir, e))
    }

    fn process_batch(
        &mut self,
        batch: Batch<T>,
        _out: &mut Collector<()>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        for r in &batch.data {
            self.buf.clear();
            self.encoder.encode(r, &mut self.buf)?;
            if self.part.as_ref().is_some_and(|p| {
                p.size > 0
                    && (p.size + self.buf.len() as u64 > self.policy.max_part_size
                        || p.opened.elapsed() >= self.policy.rollover_interval)
            }) {
                self.close_part()?;
            }
            if self.part.is_none() {
                self.open_part()?;
                self.request_roll_wakeup(ctx);
            }
            let p = self.part.as_mut().expect("a part is open");
            p.writer
                .write_all(&self.buf)
                .map_err(|e| SluiceError::io(p.in_progress.display(), e))?;
            p.size += self.buf.len() as u64;
        }
        Ok(())
    }

    fn on_processing_time(
        &mut self,
        _now_ms: i64,
        _out: &mut Collector<()>,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        if self.part_expired() {
            self.close_part()?;
        }
        // Wake-ups are shared by the task's operators and consumed when fired: ask again.
        self.request_roll_wakeup(ctx);
        Ok(())
    }

    fn end_input(&mut self, _out: &mut Collector<()>, _ctx: &mut OperatorContext) -> Result<()> {
        self.close_part()
    }
}
