//! The two ends of a remote channel: credits on the sending side, a queue bounded by those
//! credits on the receiving side, and the handles tasks use.

use std::cell::Cell;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError, bounded};
use parking_lot::{Condvar, Mutex};
use sluice_core::{Result, SluiceError};

use super::conn::Conn;
use super::frame::{self, Kind};
use super::plane::Shared;
use super::{ChannelId, INITIAL_CREDITS, cancelled, channel_error};
use crate::exchange::CANCEL_POLL;

/// Credits a receiver returns in one frame: half the window, so the sender keeps frames in
/// flight while credit frames (a system call here, a read and a wakeup there) are halved.
/// Holding credits back never strands a sender, as long as a batch is no larger than the
/// window: a sender out of credits spent them all on frames that are queued, on their way or
/// taken with their credits owed, and taking those brings what is owed up to a batch.
/// (Returning every credit as soon as the queue ran empty cost a credit frame per data frame
/// whenever the consumer kept up.)
const CREDIT_BATCH: u32 = if INITIAL_CREDITS >= 2 {
    INITIAL_CREDITS / 2
} else {
    1
};
const _: () = assert!(CREDIT_BATCH >= 1 && CREDIT_BATCH <= INITIAL_CREDITS);

/// Why a channel cannot go on: the kind of the error to raise and its message.
pub(super) type Closed = (ErrorKind, String);

/// Sending side of one channel: the credits the receiver granted and not yet spent.
pub(super) struct OutChannel {
    pub(super) state: Mutex<OutState>,
    pub(super) cv: Condvar,
}

pub(super) struct OutState {
    pub(super) credits: u32,
    pub(super) closed: Option<Closed>,
}

impl OutChannel {
    pub(super) fn new() -> Arc<OutChannel> {
        Arc::new(OutChannel {
            state: Mutex::new(OutState {
                credits: 0,
                closed: None,
            }),
            cv: Condvar::new(),
        })
    }

    pub(super) fn close(&self, why: Closed) {
        self.state.lock().closed.get_or_insert(why);
        self.cv.notify_all();
    }
}

/// Receiving side of one channel. Exists from whichever comes first, the sender's open frame
/// or the local registration; credits flow once both happened.
pub(super) struct InChannel {
    pub(super) state: Mutex<InState>,
    /// The consuming end of the queue, which the receiver takes frames from without a lock.
    frames: Receiver<Bytes>,
    /// Set when the channel was closed here: frames still queued are not delivered.
    discarded: AtomicBool,
}

pub(super) struct InState {
    /// Feeds the queue of frames received and not yet taken, which never holds more than the
    /// credits granted. Dropped when the channel fails or its sender closes it, so the
    /// receiver sees the end after the frames that arrived before it.
    pub(super) queue: Option<Sender<Bytes>>,
    /// The connection the sender opened the channel on.
    pub(super) conn: Option<Arc<Conn>>,
    pub(super) registered: bool,
    pub(super) granted: bool,
    /// Data frames the sender may still send: credits granted minus frames received.
    pub(super) outstanding: u32,
    pub(super) sender_closed: bool,
    pub(super) failed: Option<Closed>,
    pub(super) max_queued: usize,
}

impl InState {
    /// Grants the initial credits if the sender opened and the receiver registered; returns
    /// the connection to send them on.
    pub(super) fn grant_if_ready(&mut self) -> Option<Arc<Conn>> {
        if self.granted || !self.registered || self.failed.is_some() {
            return None;
        }
        let conn = self.conn.clone()?;
        self.granted = true;
        self.outstanding = INITIAL_CREDITS;
        Some(conn)
    }

    pub(super) fn peer(&self) -> String {
        self.conn.as_ref().map_or_else(
            || "a sender that has not opened it yet".to_string(),
            |c| c.peer.clone(),
        )
    }

    /// Queues a data frame the sender spent a credit on. Never waits: the queue holds as many
    /// frames as credits exist, so a full queue means the sender broke the protocol.
    pub(super) fn push(&mut self, frame: Bytes) -> std::result::Result<(), String> {
        if self.outstanding == 0 {
            return Err("data without credit".into());
        }
        self.outstanding -= 1;
        let Some(queue) = &self.queue else {
            return Ok(()); // closed: the frame is dropped
        };
        match queue.try_send(frame) {
            Ok(()) => {
                self.max_queued = self.max_queued.max(queue.len());
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err("more data than credits".into()),
            // The receiver went away; the frame is dropped.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }

    /// The sender closed the channel: no more frames.
    pub(super) fn sender_closed(&mut self) {
        self.sender_closed = true;
        self.queue = None;
    }
}

impl InChannel {
    pub(super) fn new() -> Arc<InChannel> {
        let (tx, rx) = bounded(INITIAL_CREDITS as usize);
        Arc::new(InChannel {
            state: Mutex::new(InState {
                queue: Some(tx),
                conn: None,
                registered: false,
                granted: false,
                outstanding: 0,
                sender_closed: false,
                failed: None,
                max_queued: 0,
            }),
            frames: rx,
            discarded: AtomicBool::new(false),
        })
    }

    /// Makes the channel fail once its queue is empty; `discard` fails it now (the channel
    /// was closed here), otherwise what arrived before a lost connection is still delivered.
    pub(super) fn fail(&self, why: Closed, discard: bool) {
        let mut st = self.state.lock();
        st.failed.get_or_insert(why);
        st.queue = None;
        if discard {
            self.discarded.store(true, Ordering::SeqCst);
        }
    }
}

/// The sending end of a remote channel.
pub struct NetSender {
    pub(super) conn: Arc<Conn>,
    pub(super) chan: Arc<OutChannel>,
    pub(super) ch: ChannelId,
}

impl NetSender {
    /// Sends one frame's payload, first waiting for a credit. Gives up when `cancel` is set,
    /// the receiver closed the channel or the connection to its worker is lost.
    pub fn send(&mut self, payload: &[u8], cancel: &AtomicBool) -> Result<()> {
        self.send_parts(payload, &[], cancel)
    }

    /// [`NetSender::send`] of the payload `head` followed by the bytes of `tail`, written
    /// without copying `tail` first.
    pub fn send_parts(&mut self, head: &[u8], tail: &[Bytes], cancel: &AtomicBool) -> Result<()> {
        self.send_parts_timed(head, tail, cancel, None)
    }

    /// [`NetSender::send_parts`] that adds the time spent waiting for a credit to `blocked`
    /// (in nanoseconds): the producer's backpressure. With a credit at hand it reads no clock.
    pub fn send_parts_timed(
        &mut self,
        head: &[u8],
        tail: &[Bytes],
        cancel: &AtomicBool,
        blocked: Option<&AtomicU64>,
    ) -> Result<()> {
        self.wait_for_credit(cancel, blocked)?;
        self.write_credited(head, tail)
    }

    /// Takes a credit if one is at hand, without waiting: `false` if the receiver granted none.
    /// The frame it pays for must follow through [`NetSender::write_credited`]. Fails if the
    /// receiver closed the channel or the connection is lost.
    pub fn try_credit(&mut self) -> Result<bool> {
        let mut st = self.chan.state.lock();
        if let Some((kind, msg)) = &st.closed {
            return Err(self.error(*kind, msg));
        }
        if st.credits == 0 {
            return Ok(false);
        }
        st.credits -= 1;
        Ok(true)
    }

    /// Gives back a credit taken with [`NetSender::try_credit`] for a frame that will not be
    /// written (its event failed to encode). Only this sender waits for the channel's credits,
    /// so no one needs waking.
    pub(super) fn return_credit(&mut self) {
        self.chan.state.lock().credits += 1;
    }

    /// Waits for a credit and takes it (the time waited is added to `blocked`, in
    /// nanoseconds); gives up like [`NetSender::send`].
    pub(super) fn wait_for_credit(
        &mut self,
        cancel: &AtomicBool,
        blocked: Option<&AtomicU64>,
    ) -> Result<()> {
        let mut st = self.chan.state.lock();
        let mut waiting_since = None;
        loop {
            if let Some((kind, msg)) = &st.closed {
                return Err(self.error(*kind, msg));
            }
            if st.credits > 0 {
                st.credits -= 1;
                break;
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            waiting_since.get_or_insert_with(Instant::now);
            self.chan.cv.wait_for(&mut st, CANCEL_POLL);
        }
        if let (Some(since), Some(blocked)) = (waiting_since, blocked) {
            blocked.fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes one data frame, `head` followed by the bytes of `tail`, paid for by a credit
    /// already taken ([`NetSender::try_credit`]).
    pub fn write_credited(&mut self, head: &[u8], tail: &[Bytes]) -> Result<()> {
        self.conn
            .write_parts(Kind::Data, &self.ch, head, tail)
            .map_err(|m| self.error(ErrorKind::ConnectionAborted, m))
    }

    /// Fails if the channel can no longer send (receiver closed it, connection lost), so an
    /// idle sender learns of it without waiting for its next frame.
    pub fn check(&self) -> Result<()> {
        match &self.chan.state.lock().closed {
            Some((kind, msg)) => Err(self.error(*kind, msg)),
            None => Ok(()),
        }
    }

    /// The channel this end sends on.
    pub fn channel(&self) -> ChannelId {
        self.ch
    }

    pub(super) fn error(&self, kind: ErrorKind, message: impl std::fmt::Display) -> SluiceError {
        channel_error(&self.ch, &self.conn.peer, kind, message)
    }
}

impl Drop for NetSender {
    fn drop(&mut self) {
        let mut senders = self.conn.senders.lock();
        if senders
            .get(&self.ch)
            .is_some_and(|c| Arc::ptr_eq(c, &self.chan))
        {
            senders.remove(&self.ch);
        }
        drop(senders);
        if self.chan.state.lock().closed.is_none() {
            // Best effort: if the connection is gone, the receiver learns that from it.
            let _ignored = self.conn.write(Kind::Close, &self.ch, &[]);
        }
    }
}

/// The receiving end of a remote channel.
pub struct NetReceiver {
    pub(super) shared: Arc<Shared>,
    pub(super) chan: Arc<InChannel>,
    pub(super) ch: ChannelId,
    /// Frames taken out whose credits have not been returned yet (see [`CREDIT_BATCH`]). A
    /// `Cell`, so a frame can be accounted for through the shared borrow a `Select` over the
    /// task's inputs holds.
    owed: Cell<u32>,
}

impl NetReceiver {
    pub(super) fn new(shared: Arc<Shared>, chan: Arc<InChannel>, ch: ChannelId) -> NetReceiver {
        NetReceiver {
            shared,
            chan,
            ch,
            owed: Cell::new(0),
        }
    }

    /// The next frame's payload, or `None` after `timeout` without one. Taking a frame returns
    /// its credit to the sender. Fails once the queue is empty and the sender's connection was
    /// lost, the sender closed the channel, or its attempt was closed.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Bytes>> {
        match self.chan.frames.recv_timeout(timeout) {
            Ok(frame) => self.taken(frame).map(Some),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(self.ended()),
        }
    }

    /// [`NetReceiver::recv_timeout`] without waiting.
    pub fn try_recv(&self) -> Result<Option<Bytes>> {
        match self.chan.frames.try_recv() {
            Ok(frame) => self.taken(frame).map(Some),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(self.ended()),
        }
    }

    /// The queue of received frames, to wait on together with other channels; every frame
    /// taken from it must go through [`NetReceiver::taken`], and its disconnection through
    /// [`NetReceiver::ended`].
    pub fn frames(&self) -> &Receiver<Bytes> {
        &self.chan.frames
    }

    /// Accounts for a frame taken from [`NetReceiver::frames`]: returns its credit to the
    /// sender, in batches of [`CREDIT_BATCH`]. Fails if the channel was closed here meanwhile.
    pub fn taken(&self, frame: Bytes) -> Result<Bytes> {
        if self.chan.discarded.load(Ordering::Relaxed) {
            return Err(self.ended());
        }
        let owed = self.owed.get() + 1;
        self.owed.set(owed);
        if owed >= CREDIT_BATCH {
            let credits = self.owed.take();
            let mut st = self.chan.state.lock();
            st.outstanding += credits;
            let conn = st.conn.clone();
            drop(st);
            if let Some(conn) = conn {
                // A failed write fails the connection, which the next call reports.
                let _ignored = conn.write(Kind::Credit, &self.ch, &frame::credit_payload(credits));
            }
        }
        Ok(frame)
    }

    /// Why the channel delivers no more frames: its sender's connection was lost, the sender
    /// closed the channel, or its attempt was closed.
    pub fn ended(&self) -> SluiceError {
        let st = self.chan.state.lock();
        let (kind, msg) = match (&st.failed, st.sender_closed) {
            (Some((kind, msg)), _) => (*kind, msg.as_str()),
            (None, true) => (ErrorKind::BrokenPipe, "the sender closed the channel"),
            (None, false) => (ErrorKind::Other, "the channel ended"),
        };
        channel_error(&self.ch, &st.peer(), kind, msg)
    }

    /// The channel this end receives on.
    pub fn channel(&self) -> ChannelId {
        self.ch
    }

    /// The most frames ever queued on this channel at once; never above [`INITIAL_CREDITS`].
    pub fn max_queued(&self) -> usize {
        self.chan.state.lock().max_queued
    }
}

impl Drop for NetReceiver {
    fn drop(&mut self) {
        let mut channels = self.shared.channels.lock();
        if channels
            .get(&self.ch)
            .is_some_and(|c| Arc::ptr_eq(c, &self.chan))
        {
            channels.remove(&self.ch);
        }
        drop(channels);
        let mut st = self.chan.state.lock();
        st.queue = None;
        let tell = st
            .conn
            .clone()
            .filter(|_| !st.sender_closed && st.failed.is_none());
        drop(st);
        if let Some(conn) = tell {
            let _ignored = conn.write(Kind::Release, &self.ch, &[]);
        }
    }
}
