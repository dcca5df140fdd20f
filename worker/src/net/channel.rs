//! The two ends of a remote channel: credits on the sending side, a queue bounded by those
//! credits on the receiving side, and the handles the bridges use.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use sluice_core::{Result, SluiceError};

use super::conn::Conn;
use super::frame::{self, Kind};
use super::plane::Shared;
use super::{ChannelId, INITIAL_CREDITS, cancelled, channel_error};
use crate::exchange::CANCEL_POLL;

/// Credits a receiver returns in one frame while its queue still holds frames: half the
/// window, so the sender keeps frames in flight while credit frames (a system call here, a
/// wakeup of the sender's reader there) are halved. A receiver that empties its queue returns
/// what it owes at once, so a sender never waits on credits a waiting receiver holds back.
const CREDIT_BATCH: u32 = if INITIAL_CREDITS >= 2 {
    INITIAL_CREDITS / 2
} else {
    1
};

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
    pub(super) cv: Condvar,
}

#[derive(Default)]
pub(super) struct InState {
    /// Frames received and not yet taken; never longer than the credits granted.
    pub(super) queue: VecDeque<Bytes>,
    /// The connection the sender opened the channel on.
    pub(super) conn: Option<Arc<Conn>>,
    pub(super) registered: bool,
    pub(super) granted: bool,
    /// Data frames the sender may still send: credits granted minus frames received.
    pub(super) outstanding: u32,
    /// Frames taken out whose credits have not been returned yet (see [`CREDIT_BATCH`]).
    pub(super) owed: u32,
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
}

impl InChannel {
    pub(super) fn new() -> Arc<InChannel> {
        Arc::new(InChannel {
            state: Mutex::new(InState::default()),
            cv: Condvar::new(),
        })
    }

    /// Makes the channel fail once its queue is empty; `discard` empties it now (the channel
    /// was closed here), otherwise what arrived before a lost connection is still delivered.
    pub(super) fn fail(&self, why: Closed, discard: bool) {
        let mut st = self.state.lock();
        st.failed.get_or_insert(why);
        if discard {
            st.queue.clear();
        }
        drop(st);
        self.cv.notify_all();
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
        {
            let mut st = self.chan.state.lock();
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
                self.chan.cv.wait_for(&mut st, CANCEL_POLL);
            }
        }
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
}

impl NetReceiver {
    /// The next frame's payload, or `None` after `timeout` without one. Taking a frame returns
    /// its credit to the sender. Fails once the queue is empty and the sender's connection was
    /// lost, the sender closed the channel, or its attempt was closed.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Bytes>> {
        let deadline = Instant::now() + timeout;
        let mut st = self.chan.state.lock();
        let mut timed_out = false;
        loop {
            if let Some(frame) = st.queue.pop_front() {
                st.owed += 1;
                if st.owed < CREDIT_BATCH && !st.queue.is_empty() {
                    return Ok(Some(frame));
                }
                let credits = std::mem::take(&mut st.owed);
                st.outstanding += credits;
                let conn = st.conn.clone();
                drop(st);
                if let Some(conn) = conn {
                    // A failed write fails the connection, which the next call reports.
                    let _ignored =
                        conn.write(Kind::Credit, &self.ch, &frame::credit_payload(credits));
                }
                return Ok(Some(frame));
            }
            if let Some((kind, msg)) = &st.failed {
                return Err(channel_error(&self.ch, &st.peer(), *kind, msg));
            }
            if st.sender_closed {
                return Err(channel_error(
                    &self.ch,
                    &st.peer(),
                    ErrorKind::BrokenPipe,
                    "the sender closed the channel",
                ));
            }
            if timed_out {
                return Ok(None);
            }
            timed_out = self.chan.cv.wait_until(&mut st, deadline).timed_out();
        }
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
        st.queue.clear();
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
