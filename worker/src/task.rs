//! The task loops: a source task polls its source; an input task reads its channels, aligns
//! barriers and combines watermarks. Both push batches through the task's operator chain and
//! talk to the checkpoint coordinator over a small control channel.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender};

use crate::context::{OperatorContext, SnapshotCollector, now_ms};
use crate::data::{Barrier, BarrierKind, Data, Event, MAX_WATERMARK, MIN_WATERMARK};
use crate::emit::{Collector, Emit};
use crate::exchange::{BATCH_SIZE, CANCEL_POLL, Gone, Inlet};
use crate::snapshot::OperatorSnapshot;
use crate::source::{Source, SourcePoll};
use sluice_core::{Result, SluiceError};

/// Commands from the master to one task.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum TaskCommand {
    /// Sources only: snapshot the read position and inject this barrier.
    TriggerCheckpoint(Barrier),
    /// Every task: checkpoint `id` completed; commit side effects.
    CheckpointComplete(u64),
    /// Sources only: the stop-with-savepoint `id` failed; go on processing.
    AbortStop(u64),
    /// Sources that reached the end of their input: a checkpoint triggered after every source
    /// of the job had reached its end completed, so it covers all their output; end the input
    /// now (Flink's final checkpoint, FLIP-147).
    EndInput,
}

/// Reports from one task to the master.
#[derive(Debug)]
pub enum TaskReport {
    /// The task passed `barrier` and took these snapshots (operator uid, state), in chain order.
    Acknowledge {
        task: usize,
        subtask: usize,
        barrier: Barrier,
        snapshots: Vec<(String, OperatorSnapshot)>,
        /// Milliseconds from the first to the last input delivering this barrier (0 for
        /// sources and single-input tasks): Flink's alignment duration.
        alignment_ms: u64,
    },
    /// A source subtask of attempt `attempt` reached the end of its input and waits for a
    /// checkpoint to cover its output before it ends ([`TaskEnv::final_checkpoint`]).
    SourceEnded {
        task: usize,
        subtask: usize,
        attempt: u64,
    },
}

/// What a task needs from its surroundings besides its chain.
pub struct TaskEnv {
    /// Index of the task (chain) in the execution plan.
    pub task: usize,
    pub subtask: usize,
    /// "uid (subtask/parallelism)" of the chain head, for messages.
    pub name: String,
    pub cancel: Arc<AtomicBool>,
    pub commands: Option<Receiver<TaskCommand>>,
    pub reports: Option<Sender<TaskReport>>,
    /// Shared with every operator context of the chain.
    pub next_processing_timer: std::rc::Rc<std::cell::Cell<i64>>,
    pub snapshots: SnapshotCollector,
    /// Exactly-once: block channels that delivered a barrier until all did.
    pub align_barriers: bool,
    /// The attempt (0, 1, ... after each restart) this task belongs to.
    pub attempt: u64,
    /// With periodic checkpoints (`execution.checkpointing.checkpoints-after-tasks-finish`):
    /// a source at the end of its input does not end the task at once. It sends a final max
    /// watermark, reports [`TaskReport::SourceEnded`], and keeps taking part in checkpoints
    /// until [`TaskCommand::EndInput`]: so no sink publishes anything at its end of input that
    /// a completed checkpoint does not cover, and a failure after some subtasks ended never
    /// replays output that was already published.
    pub final_checkpoint: bool,
    /// The longest the chain's output may hold records back while the task stays busy
    /// (`execution.buffer-timeout`); `None`: until a buffer is full or the task waits for
    /// input. A task that waits for input, or a source with nothing to read, flushes anyway.
    pub buffer_timeout: Option<Duration>,
    /// When the output was last flushed for [`TaskEnv::buffer_timeout`].
    pub last_flush: Cell<Instant>,
}

impl TaskEnv {
    /// Flushes the chain's output if it has not been for the buffer timeout: records a busy
    /// task buffered for a target (or a remote channel held to fill a frame) never wait on
    /// the next record to that target for longer.
    fn flush_if_due<T>(&self, head: &mut dyn Emit<T>) -> Result<()> {
        let Some(every) = self.buffer_timeout else {
            return Ok(());
        };
        let now = Instant::now();
        if now.duration_since(self.last_flush.get()) >= every {
            head.flush()?;
            self.last_flush.set(now);
        }
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    fn acknowledge(&self, barrier: Barrier, alignment: Duration) -> Result<()> {
        let snapshots = std::mem::take(&mut *self.snapshots.borrow_mut());
        if let Some(r) = &self.reports {
            // A master that went away cancels us anyway; nothing to do if it is gone.
            let _ignored = r.send(TaskReport::Acknowledge {
                task: self.task,
                subtask: self.subtask,
                barrier,
                snapshots,
                alignment_ms: alignment.as_millis() as u64,
            });
        }
        Ok(())
    }

    fn report_source_ended(&self) {
        if let Some(r) = &self.reports {
            // A master that went away cancels us anyway.
            let _ignored = r.send(TaskReport::SourceEnded {
                task: self.task,
                subtask: self.subtask,
                attempt: self.attempt,
            });
        }
    }

    /// Fires processing-time timers that are due.
    fn fire_timers<T>(&self, head: &mut dyn Emit<T>) -> Result<()> {
        let due = self.next_processing_timer.get();
        if due != i64::MAX {
            let now = now_ms();
            if due <= now {
                self.next_processing_timer.set(i64::MAX);
                head.processing_time(now)?;
            }
        }
        Ok(())
    }

    /// How long the task may block waiting for input.
    fn wait_budget(&self) -> Duration {
        let due = self.next_processing_timer.get();
        if due == i64::MAX {
            return CANCEL_POLL;
        }
        let left = (due - now_ms()).max(0) as u64;
        Duration::from_millis(left).min(CANCEL_POLL)
    }

    fn checkpoint_complete<T>(&self, id: u64, head: &mut dyn Emit<T>) -> Result<()> {
        head.checkpoint_complete(id)
    }
}

/// Runs a source task until its source finishes, the job is cancelled or stopped, or an error.
pub fn run_source_task<S: Source>(
    mut source: S,
    mut ctx: OperatorContext,
    mut head: Box<dyn Emit<S::Out>>,
    env: TaskEnv,
) -> Result<()> {
    source.open(&mut ctx)?;
    ctx.restored = None;
    let mut out: Collector<S::Out> = Collector::default();
    // Whether the output is marked idle (the source said it is: see `Source::is_idle`).
    let mut idle_out = false;
    let result = (|| -> Result<()> {
        let mut task = SourceTask {
            source: &mut source,
            ctx: &mut ctx,
            head: head.as_mut(),
            env: &env,
        };
        loop {
            if task.env.cancelled() {
                return Err(SluiceError::Cancelled {
                    job: task.ctx.job_name.clone(),
                });
            }
            if let Some(cmds) = &env.commands {
                while let Ok(cmd) = cmds.try_recv() {
                    if task.on_command(cmd, cmds, false)? == Next::End {
                        return Ok(());
                    }
                }
            }
            env.fire_timers(&mut *task.head)?;
            let poll = task.source.poll_next(&mut out, BATCH_SIZE, task.ctx)?;
            let idle = task.source.is_idle();
            if idle_out && !idle {
                // Active again: say so before the records, as Flink's sources do.
                idle_out = false;
                task.head.idle(false)?;
            }
            if !out.is_empty() {
                let b = out.take();
                task.ctx
                    .metrics
                    .records_out
                    .fetch_add(b.len() as u64, Ordering::Relaxed);
                task.head.batch(b)?;
            }
            env.flush_if_due(&mut *task.head)?;
            if idle && !idle_out {
                idle_out = true;
                task.head.idle(true)?;
                task.head.flush()?;
            }
            match poll {
                SourcePoll::More => {}
                SourcePoll::Idle(d) => {
                    task.head.flush()?;
                    std::thread::sleep(d.min(env.wait_budget()));
                }
                SourcePoll::Finished => {
                    task.head.watermark(MAX_WATERMARK)?;
                    return match &env.commands {
                        Some(cmds) if env.final_checkpoint => task.wait_for_end_input(cmds),
                        _ => task.head.finish(),
                    };
                }
            }
        }
    })();
    source.close(&mut ctx)?;
    result
}

/// Whether a source task goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    /// The task ended its output (`finish` was called): return.
    End,
}

/// The parts of a running source task that commands act on.
struct SourceTask<'a, S: Source> {
    source: &'a mut S,
    ctx: &'a mut OperatorContext,
    head: &'a mut dyn Emit<S::Out>,
    env: &'a TaskEnv,
}

impl<S: Source> SourceTask<'_, S> {
    /// Carries out one command of the master. `ended`: the source reached the end of its
    /// input, and its final max watermark is already out.
    fn on_command(
        &mut self,
        cmd: TaskCommand,
        cmds: &Receiver<TaskCommand>,
        ended: bool,
    ) -> Result<Next> {
        match cmd {
            TaskCommand::TriggerCheckpoint(b) => {
                self.head.flush()?;
                let snap = self.source.snapshot_state(&b, self.ctx)?;
                self.env
                    .snapshots
                    .borrow_mut()
                    .push((self.ctx.uid.clone(), snap));
                if let BarrierKind::StopWithSavepoint { drain: true, .. } = b.kind
                    && !ended
                {
                    self.head.watermark(MAX_WATERMARK)?;
                }
                self.head.barrier(b)?;
                self.env.acknowledge(b, Duration::ZERO)?;
                if !matches!(b.kind, BarrierKind::StopWithSavepoint { .. }) {
                    return Ok(Next::Continue);
                }
                // Nothing after the savepoint is emitted. The job ends once the savepoint
                // completed (so sinks commit what it covers) or goes on if it failed.
                self.head.flush()?;
                if !wait_for_stop(cmds, self.env, b.checkpoint_id)? {
                    return Ok(Next::Continue);
                }
                self.source
                    .notify_checkpoint_complete(b.checkpoint_id, self.ctx)?;
                self.env
                    .checkpoint_complete(b.checkpoint_id, &mut *self.head)?;
                self.head.finish()?;
                Ok(Next::End)
            }
            TaskCommand::CheckpointComplete(id) => {
                self.source.notify_checkpoint_complete(id, self.ctx)?;
                self.env.checkpoint_complete(id, &mut *self.head)?;
                Ok(Next::Continue)
            }
            TaskCommand::AbortStop(_) => Ok(Next::Continue),
            // Only for sources that reached their end; the master sends it to no other.
            TaskCommand::EndInput if !ended => Ok(Next::Continue),
            TaskCommand::EndInput => {
                self.head.finish()?;
                Ok(Next::End)
            }
        }
    }

    /// The source reached the end of its input: report it, then keep taking part in
    /// checkpoints (at the end position) until the master says a checkpoint covering every
    /// source's end completed, and end the input then.
    fn wait_for_end_input(&mut self, cmds: &Receiver<TaskCommand>) -> Result<()> {
        self.head.flush()?;
        self.env.report_source_ended();
        loop {
            if self.env.cancelled() {
                return Err(SluiceError::Cancelled {
                    job: self.ctx.job_name.clone(),
                });
            }
            self.env.fire_timers(&mut *self.head)?;
            self.head.flush()?;
            match cmds.recv_timeout(self.env.wait_budget()) {
                Ok(cmd) => {
                    if self.on_command(cmd, cmds, true)? == Next::End {
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // No coordinator any more: nothing will checkpoint, end as without one.
                Err(RecvTimeoutError::Disconnected) => return self.head.finish(),
            }
        }
    }
}

/// Waits for the outcome of stop-with-savepoint `id`: true when it completed.
fn wait_for_stop(cmds: &Receiver<TaskCommand>, env: &TaskEnv, id: u64) -> Result<bool> {
    loop {
        if env.cancelled() {
            return Err(SluiceError::Cancelled { job: String::new() });
        }
        match cmds.recv_timeout(CANCEL_POLL) {
            Ok(TaskCommand::CheckpointComplete(c)) if c >= id => return Ok(true),
            Ok(TaskCommand::AbortStop(c)) if c == id => return Ok(false),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(false),
        }
    }
}

/// Runs a task that reads channels until every input ended, or cancellation, or an error.
pub fn run_input_task<T: Data>(
    mut inputs: Vec<Inlet<T>>,
    mut head: Box<dyn Emit<T>>,
    env: TaskEnv,
) -> Result<()> {
    let n = inputs.len();
    let mut clock = InputClock::new(n);
    let mut ended = vec![false; n];
    let mut blocked = vec![false; n];
    // The barrier being aligned: how many inputs delivered it, and when the first did.
    let mut pending_barrier: Option<(Barrier, usize, Instant)> = None;
    let mut live = n;

    while live > 0 {
        if env.cancelled() {
            return Err(SluiceError::Cancelled { job: String::new() });
        }
        if let Some(cmds) = &env.commands {
            while let Ok(cmd) = cmds.try_recv() {
                if let TaskCommand::CheckpointComplete(id) = cmd {
                    env.checkpoint_complete(id, head.as_mut())?;
                }
            }
        }
        env.fire_timers(head.as_mut())?;
        let active: Vec<usize> = (0..n).filter(|&i| !ended[i] && !blocked[i]).collect();
        let got = receive(&mut inputs, &active, &mut *head, &env)?;
        let Some((i, event)) = got else { continue };
        env.flush_if_due(head.as_mut())?;
        match event {
            Event::Batch(b) => {
                clock.activate(i, &mut *head)?;
                head.batch(b)?
            }
            Event::Watermark(w) => {
                clock.activate(i, &mut *head)?;
                clock.watermarks[i] = clock.watermarks[i].max(w);
                clock.update(&ended, &mut *head)?;
            }
            Event::Idle(true) => {
                clock.idle[i] = true;
                clock.update(&ended, &mut *head)?;
            }
            Event::Idle(false) => clock.activate(i, &mut *head)?,
            Event::Barrier(b) => {
                let (arrived, since) = match &mut pending_barrier {
                    Some((pb, count, since)) if pb.checkpoint_id == b.checkpoint_id => {
                        *count += 1;
                        (*count, *since)
                    }
                    _ => {
                        let now = Instant::now();
                        pending_barrier = Some((b, 1, now));
                        (1, now)
                    }
                };
                if env.align_barriers {
                    blocked[i] = true;
                }
                if arrived >= live {
                    pending_barrier = None;
                    blocked.iter_mut().for_each(|x| *x = false);
                    head.barrier(b)?;
                    env.acknowledge(b, since.elapsed())?;
                }
            }
            Event::EndOfInput => {
                ended[i] = true;
                blocked[i] = false;
                live -= 1;
                clock.update(&ended, &mut *head)?;
                // A barrier may now be complete because the ended channel no longer counts.
                if let Some((b, count, since)) = pending_barrier
                    && count >= live
                    && live > 0
                {
                    pending_barrier = None;
                    blocked.iter_mut().for_each(|x| *x = false);
                    head.barrier(b)?;
                    env.acknowledge(b, since.elapsed())?;
                }
            }
        }
    }
    // After a stop-with-savepoint the sources end, so the inputs end too and we get here.
    head.finish()
}

/// Combines the watermarks of a task's inputs: the task's watermark is the minimum over the
/// inputs that neither ended nor are idle, and the task is idle itself (and says so
/// downstream) while every input that has not ended is idle.
struct InputClock {
    watermarks: Vec<i64>,
    idle: Vec<bool>,
    emitted: i64,
    idle_out: bool,
}

impl InputClock {
    fn new(n: usize) -> Self {
        InputClock {
            watermarks: vec![MIN_WATERMARK; n],
            idle: vec![false; n],
            emitted: MIN_WATERMARK,
            idle_out: false,
        }
    }

    /// Input `i` has records or a watermark, or said it is active: it counts again. A
    /// watermark behind the task's only holds the task's back until it catches up.
    fn activate<T>(&mut self, i: usize, head: &mut dyn Emit<T>) -> Result<()> {
        self.idle[i] = false;
        if self.idle_out {
            self.idle_out = false;
            head.idle(false)?;
        }
        Ok(())
    }

    /// Emits the task's watermark if it advanced, or the idle status when no input counts.
    fn update<T>(&mut self, ended: &[bool], head: &mut dyn Emit<T>) -> Result<()> {
        let mut open = false;
        let mut min: Option<i64> = None;
        for ((w, idle), ended) in self.watermarks.iter().zip(&self.idle).zip(ended) {
            if *ended {
                continue;
            }
            open = true;
            if !*idle {
                min = Some(min.map_or(*w, |m| m.min(*w)));
            }
        }
        match min {
            Some(min) if min > self.emitted => {
                self.emitted = min;
                head.watermark(min)
            }
            Some(_) => Ok(()),
            // Every input that is still open is idle.
            None if open && !self.idle_out => {
                self.idle_out = true;
                head.idle(true)
            }
            None => Ok(()),
        }
    }
}

/// Takes the next event from one of the `active` inputs; flushes the chain before blocking.
fn receive<T: Data>(
    inputs: &mut [Inlet<T>],
    active: &[usize],
    head: &mut dyn Emit<T>,
    env: &TaskEnv,
) -> Result<Option<(usize, Event<T>)>> {
    if active.is_empty() {
        return Ok(None);
    }
    if let [only] = active {
        let input = &mut inputs[*only];
        if let Some(ev) = input.try_recv().map_err(|g| gone(env, g))? {
            return Ok(Some((*only, ev)));
        }
        head.flush()?;
        let got = input
            .recv_timeout(env.wait_budget())
            .map_err(|g| gone(env, g))?;
        return Ok(got.map(|ev| (*only, ev)));
    }
    let mut sel = Select::new();
    for &i in active {
        inputs[i].select(&mut sel);
    }
    let op = match sel.try_select() {
        Ok(op) => op,
        Err(_) => {
            head.flush()?;
            match sel.select_timeout(env.wait_budget()) {
                Ok(op) => op,
                Err(_) => return Ok(None),
            }
        }
    };
    let idx = active[op.index()];
    let ev = inputs[idx].select_recv(op).map_err(|g| gone(env, g))?;
    Ok(Some((idx, ev)))
}

/// The error of an input that delivers no more events: cancellation if the job is being
/// cancelled; for a producer that went away, an error the master recognises as a consequence
/// ([`SluiceError::NeighbourGone`], with the remote channel's reason); else the input's own
/// failure.
fn gone(env: &TaskEnv, g: Gone) -> SluiceError {
    if env.cancelled() {
        return SluiceError::Cancelled { job: String::new() };
    }
    match g {
        Gone::Upstream(None) => {
            SluiceError::NeighbourGone(format!("an upstream task of {} disappeared", env.name))
        }
        Gone::Upstream(Some(e)) => {
            SluiceError::NeighbourGone(format!("an upstream task of {} disappeared: {e}", env.name))
        }
        Gone::Failed(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Batch;

    /// Records the watermarks and idle statuses a task hands on.
    #[derive(Default)]
    struct Seen(Vec<String>);

    impl Emit<u8> for Seen {
        fn batch(&mut self, _b: Batch<u8>) -> Result<()> {
            Ok(())
        }
        fn watermark(&mut self, w: i64) -> Result<()> {
            self.0.push(format!("wm {w}"));
            Ok(())
        }
        fn barrier(&mut self, _b: Barrier) -> Result<()> {
            Ok(())
        }
        fn processing_time(&mut self, _now: i64) -> Result<()> {
            Ok(())
        }
        fn checkpoint_complete(&mut self, _id: u64) -> Result<()> {
            Ok(())
        }
        fn flush(&mut self) -> Result<()> {
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            Ok(())
        }
        fn idle(&mut self, idle: bool) -> Result<()> {
            self.0.push(format!("idle {idle}"));
            Ok(())
        }
    }

    #[test]
    fn idle_inputs_are_left_out_of_the_minimum() {
        let mut c = InputClock::new(3);
        let mut ended = vec![false; 3];
        let mut out = Seen::default();
        c.watermarks[0] = 100;
        c.watermarks[1] = 50;
        c.update(&ended, &mut out).unwrap();
        assert!(out.0.is_empty(), "input 2 has no watermark yet");
        // Input 2 idle: the minimum of 0 and 1.
        c.idle[2] = true;
        c.update(&ended, &mut out).unwrap();
        // Input 1 idle too: input 0 alone.
        c.idle[1] = true;
        c.update(&ended, &mut out).unwrap();
        assert_eq!(out.0, ["wm 50", "wm 100"]);
        // Input 0 ends: every open input is idle, so the task is.
        ended[0] = true;
        c.update(&ended, &mut out).unwrap();
        assert_eq!(out.0[2..], ["idle true"]);
        // Input 1 comes back behind the task's watermark: active at once, but the watermark
        // waits for it to catch up and never goes back.
        c.activate(1, &mut out).unwrap();
        c.watermarks[1] = 80;
        c.update(&ended, &mut out).unwrap();
        c.watermarks[1] = 120;
        c.update(&ended, &mut out).unwrap();
        assert_eq!(out.0[3..], ["idle false", "wm 120"]);
        // Activating an input of an active task says nothing.
        c.activate(2, &mut out).unwrap();
        assert_eq!(out.0.len(), 5);
    }
}
