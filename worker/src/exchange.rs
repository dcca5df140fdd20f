//! Exchanges between tasks: bounded channels (a full channel blocks the sender, so a slow
//! consumer slows its producers and memory stays flat), local or to another worker, and the
//! writers that partition records into per-target batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvTimeoutError, Select, SelectedOperation, SendTimeoutError, Sender, TryRecvError,
    TrySendError, bounded,
};

use crate::data::{Barrier, Batch, Data, Event};
use crate::emit::Emit;
use crate::key::KeySelector;
use crate::net::{NetInlet, NetOutlet};
use sluice_core::keygroup::{key_group_for_hash, subtask_for_key_group};
use sluice_core::{Partitioning, Result, SluiceError};

/// Records per batch sent on an exchange.
pub const BATCH_SIZE: usize = 1024;
/// Batches in flight per channel (sender to receiver pair); together with [`BATCH_SIZE`] this
/// bounds the memory of every exchange.
pub const CHANNEL_CAPACITY: usize = 4;
/// How often a blocked sender or receiver looks at the cancellation flag.
pub const CANCEL_POLL: Duration = Duration::from_millis(50);

/// The channels of one edge: `senders[i]` are producer subtask i's `(target, outlet)` pairs,
/// `receivers[j]` consumer subtask j's inlets.
pub struct EdgeChannels<T> {
    pub senders: Vec<Vec<(usize, Outlet<T>)>>,
    pub receivers: Vec<Vec<Inlet<T>>>,
}

pub fn edge_channels<T>(
    producers: usize,
    consumers: usize,
    partitioning: Partitioning,
) -> EdgeChannels<T> {
    let mut senders: Vec<Vec<_>> = (0..producers).map(|_| Vec::new()).collect();
    let mut receivers: Vec<Vec<_>> = (0..consumers).map(|_| Vec::new()).collect();
    for (i, s) in senders.iter_mut().enumerate() {
        for (j, r) in receivers.iter_mut().enumerate() {
            if partitioning == Partitioning::Forward && i != j {
                continue;
            }
            let (tx, rx) = bounded(CHANNEL_CAPACITY);
            s.push((j, Outlet::Local(tx)));
            r.push(Inlet::Local(rx));
        }
    }
    EdgeChannels { senders, receivers }
}

/// Where a producer sends the events for one consumer subtask.
pub enum Outlet<T> {
    /// A channel to a task in this process.
    Local(Sender<Event<T>>),
    /// A remote channel to a task on another worker, written by the producer itself.
    Remote(NetOutlet<T>),
}

impl<T: Data> Outlet<T> {
    /// Sends `ev`, waiting while the consumer has no room for it (the time waited is added to
    /// `blocked`, in nanoseconds); gives up on cancellation or when the consumer is gone.
    pub fn send(&mut self, ev: Event<T>, cancel: &AtomicBool, blocked: &AtomicU64) -> Result<()> {
        match self {
            Outlet::Local(tx) => send_event_timed(tx, ev, cancel, blocked),
            Outlet::Remote(net) => net.send(ev, cancel, blocked),
        }
    }

    /// Sends what the outlet holds back: records of a remote channel that found no credit
    /// (see [`NetOutlet::send`]). A local channel holds nothing back.
    pub fn flush(&mut self, cancel: &AtomicBool, blocked: &AtomicU64) -> Result<()> {
        match self {
            Outlet::Local(_) => Ok(()),
            Outlet::Remote(net) => net.flush(cancel, blocked),
        }
    }
}

/// Where a consumer takes the events of one producer subtask from.
pub enum Inlet<T> {
    /// A channel from a task in this process.
    Local(Receiver<Event<T>>),
    /// A remote channel from a task on another worker, decoded by the consumer itself.
    Remote(NetInlet<T>),
}

/// Why an inlet delivers no more events.
#[derive(Debug)]
pub enum Gone {
    /// The producer's end went away: a local producer task ended (`None`; the caller names
    /// its task), or a remote channel ended, with the reason (the sender closed it, its
    /// connection was lost, its attempt was closed). A consequence of another failure, which
    /// the master tells apart from the failure that caused it.
    Upstream(Option<SluiceError>),
    /// An event arrived that could not be read (it did not decode): a failure of its own.
    Failed(SluiceError),
}

impl From<SluiceError> for Gone {
    fn from(e: SluiceError) -> Self {
        match e {
            SluiceError::Serialization { .. } => Gone::Failed(e),
            other => Gone::Upstream(Some(other)),
        }
    }
}

impl<T: Data> Inlet<T> {
    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> std::result::Result<Option<Event<T>>, Gone> {
        match self {
            Inlet::Local(rx) => match rx.try_recv() {
                Ok(ev) => Ok(Some(ev)),
                Err(TryRecvError::Empty) => Ok(None),
                Err(TryRecvError::Disconnected) => Err(Gone::Upstream(None)),
            },
            Inlet::Remote(net) => Ok(net.try_recv()?),
        }
    }

    /// The next event, or `None` after `timeout` without one.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<Option<Event<T>>, Gone> {
        match self {
            Inlet::Local(rx) => match rx.recv_timeout(timeout) {
                Ok(ev) => Ok(Some(ev)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Disconnected) => Err(Gone::Upstream(None)),
            },
            Inlet::Remote(net) => Ok(net.recv_timeout(timeout)?),
        }
    }

    /// Adds this inlet's queue to `sel`, returning its index there.
    pub fn select<'a>(&'a self, sel: &mut Select<'a>) -> usize {
        match self {
            Inlet::Local(rx) => sel.recv(rx),
            Inlet::Remote(net) => sel.recv(net.frames()),
        }
    }

    /// Completes an operation `sel` selected for this inlet: the event it took (a remote
    /// frame decoded, its credit returned).
    pub fn select_recv(&self, op: SelectedOperation<'_>) -> std::result::Result<Event<T>, Gone> {
        match self {
            Inlet::Local(rx) => op.recv(rx).map_err(|_| Gone::Upstream(None)),
            Inlet::Remote(net) => match op.recv(net.frames()) {
                Ok(frame) => Ok(net.taken(frame)?),
                Err(_) => Err(Gone::Upstream(Some(net.ended()))),
            },
        }
    }
}

/// Chooses the target of each record among `n` consumer subtasks.
pub trait Partitioner<T>: 'static {
    fn target(&mut self, record: &T, n: usize) -> usize;
}

pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    pub fn starting_at(subtask: usize) -> Self {
        RoundRobin { next: subtask }
    }
}

impl<T> Partitioner<T> for RoundRobin {
    #[inline]
    fn target(&mut self, _r: &T, n: usize) -> usize {
        self.next += 1;
        if self.next >= n {
            self.next = 0;
        }
        self.next
    }
}

/// Routes by the key group of the record's key, to the subtask owning that key group.
pub struct ByKey<S> {
    pub selector: S,
    pub max_parallelism: usize,
}

impl<T, S: KeySelector<T>> Partitioner<T> for ByKey<S> {
    #[inline]
    fn target(&mut self, record: &T, n: usize) -> usize {
        let kg = key_group_for_hash(self.selector.hash_of(record), self.max_parallelism);
        subtask_for_key_group(self.max_parallelism, n, kg)
    }
}

/// Sends every record to every target.
pub struct Broadcast;

impl<T> Partitioner<T> for Broadcast {
    fn target(&mut self, _r: &T, _n: usize) -> usize {
        usize::MAX
    }
}

/// Sends a channel event, waiting while the channel is full and giving up on cancellation.
pub fn send_event<T>(tx: &Sender<Event<T>>, mut ev: Event<T>, cancel: &AtomicBool) -> Result<()> {
    loop {
        match tx.send_timeout(ev, CANCEL_POLL) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(back)) => {
                if cancel.load(Ordering::Relaxed) {
                    return Err(SluiceError::Cancelled { job: String::new() });
                }
                ev = back;
            }
            Err(SendTimeoutError::Disconnected(_)) => {
                return Err(if cancel.load(Ordering::Relaxed) {
                    SluiceError::Cancelled { job: String::new() }
                } else {
                    SluiceError::NeighbourGone("a downstream task disappeared".into())
                });
            }
        }
    }
}

/// [`send_event`] that adds the time spent waiting for room in the channel to `blocked` (in
/// nanoseconds): the task's backpressure. The common case, a channel with room, costs one
/// `try_send` and no clock read.
pub fn send_event_timed<T>(
    tx: &Sender<Event<T>>,
    ev: Event<T>,
    cancel: &AtomicBool,
    blocked: &AtomicU64,
) -> Result<()> {
    match tx.try_send(ev) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(ev)) => {
            let start = Instant::now();
            let sent = send_event(tx, ev, cancel);
            blocked.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            sent
        }
        Err(TrySendError::Disconnected(ev)) => send_event(tx, ev, cancel),
    }
}

/// The producer side of an edge for one subtask: buffers records per target and sends full
/// batches; control events flush the buffers first so they keep their place in the stream.
pub struct ExchangeWriter<T, P> {
    targets: Vec<Outlet<T>>,
    /// Total consumer subtasks (targets are indexed by consumer subtask for keyed routing).
    consumers: usize,
    target_index: Vec<usize>,
    buffers: Vec<Batch<T>>,
    partitioner: P,
    broadcast: bool,
    cancel: Arc<AtomicBool>,
    /// The task's time blocked on output, in nanoseconds (see [`send_event_timed`]).
    blocked: Arc<AtomicU64>,
}

impl<T: Data, P: Partitioner<T>> ExchangeWriter<T, P> {
    pub fn new(
        senders: Vec<(usize, Outlet<T>)>,
        consumers: usize,
        partitioner: P,
        cancel: Arc<AtomicBool>,
        blocked: Arc<AtomicU64>,
    ) -> Self {
        let broadcast = std::any::TypeId::of::<P>() == std::any::TypeId::of::<Broadcast>();
        let mut target_index = vec![usize::MAX; consumers];
        let mut targets = Vec::with_capacity(senders.len());
        for (slot, (consumer, tx)) in senders.into_iter().enumerate() {
            target_index[consumer] = slot;
            targets.push(tx);
        }
        let buffers = (0..targets.len())
            .map(|_| Batch::with_capacity(BATCH_SIZE))
            .collect();
        ExchangeWriter {
            targets,
            consumers,
            target_index,
            buffers,
            partitioner,
            broadcast,
            cancel,
            blocked,
        }
    }

    fn send_buffer(&mut self, slot: usize) -> Result<()> {
        if self.buffers[slot].is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.buffers[slot], Batch::with_capacity(BATCH_SIZE));
        self.send(slot, Event::Batch(full))
    }

    fn send(&mut self, slot: usize, ev: Event<T>) -> Result<()> {
        self.targets[slot].send(ev, &self.cancel, &self.blocked)
    }

    fn flush_all(&mut self) -> Result<()> {
        (0..self.targets.len()).try_for_each(|s| self.send_buffer(s))?;
        for target in &mut self.targets {
            target.flush(&self.cancel, &self.blocked)?;
        }
        Ok(())
    }

    fn send_all(&mut self, ev: Event<T>) -> Result<()> {
        self.flush_all()?;
        for slot in 0..self.targets.len() {
            self.send(slot, ev.clone())?;
        }
        Ok(())
    }
}

impl<T: Data, P: Partitioner<T>> Emit<T> for ExchangeWriter<T, P> {
    fn batch(&mut self, batch: Batch<T>) -> Result<()> {
        if self.targets.len() == 1 && !self.broadcast {
            // One target (forward, or a single consumer): pass big batches through untouched.
            if self.buffers[0].is_empty() && batch.len() >= BATCH_SIZE / 2 {
                return self.send(0, Event::Batch(batch));
            }
            let buf = &mut self.buffers[0];
            if batch.has_timestamps() || buf.has_timestamps() {
                for (r, t) in batch.into_iter_ts() {
                    buf.push(r, t);
                }
            } else {
                let mut data = batch.data;
                buf.data.append(&mut data);
            }
            if self.buffers[0].len() >= BATCH_SIZE {
                self.send_buffer(0)?;
            }
            return Ok(());
        }
        if self.broadcast {
            for slot in 0..self.targets.len() {
                for (i, r) in batch.data.iter().enumerate() {
                    self.buffers[slot].push(r.clone(), batch.timestamp(i));
                }
                if self.buffers[slot].len() >= BATCH_SIZE {
                    self.send_buffer(slot)?;
                }
            }
            return Ok(());
        }
        let has_ts = batch.has_timestamps();
        let mut ts = batch.ts.into_iter();
        for r in batch.data {
            let t = if has_ts { ts.next() } else { None };
            let consumer = self.partitioner.target(&r, self.consumers);
            let slot = self.target_index[consumer];
            let buf = &mut self.buffers[slot];
            buf.push(r, t);
            if buf.len() >= BATCH_SIZE {
                self.send_buffer(slot)?;
            }
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: i64) -> Result<()> {
        self.send_all(Event::Watermark(watermark))
    }

    fn barrier(&mut self, barrier: Barrier) -> Result<()> {
        self.send_all(Event::Barrier(barrier))
    }

    fn processing_time(&mut self, _now_ms: i64) -> Result<()> {
        Ok(())
    }

    fn checkpoint_complete(&mut self, _checkpoint_id: u64) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_all()
    }

    fn finish(&mut self) -> Result<()> {
        self.send_all(Event::EndOfInput)
    }

    fn idle(&mut self, idle: bool) -> Result<()> {
        self.send_all(Event::Idle(idle))
    }
}
