//! The typed ends of remote channels that tasks hold: a producer encodes its events and writes
//! the frames itself ([`NetOutlet`]), a consumer decodes the frames it takes ([`NetInlet`]).
//! No thread sits between a task and the connection, so an event crosses no more thread
//! boundaries than it would on a local channel, and the encoding and decoding of different
//! channels run in parallel on their own tasks' threads.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::Receiver;
use sluice_core::{Result, SluiceError};

use super::{ChannelId, NetReceiver, NetSender, codec};
use crate::data::{Data, Event};
use crate::exchange::BATCH_SIZE;

/// Encode buffer to start with: a full batch of small records, so it rarely has to grow.
const INITIAL_ENCODE_BUFFER: usize = BATCH_SIZE * 128;

fn serialization(ch: &ChannelId, message: String) -> SluiceError {
    SluiceError::Serialization {
        what: format!("an event on {ch}"),
        message,
    }
}

/// A producer's end of a remote channel: one frame per event, written by the producer's own
/// thread once the receiver granted a credit for it.
pub struct NetOutlet {
    tx: NetSender,
    /// One buffer for the life of the channel: encoding allocates nothing per batch.
    buf: Vec<u8>,
    /// Bytes of every frame sent, for the task's metrics.
    bytes: Arc<AtomicU64>,
}

impl NetOutlet {
    pub fn new(tx: NetSender, bytes: Arc<AtomicU64>) -> NetOutlet {
        NetOutlet {
            tx,
            buf: Vec::with_capacity(INITIAL_ENCODE_BUFFER),
            bytes,
        }
    }

    /// Encodes `ev` and sends it as one frame, first waiting for a credit (the time waited is
    /// added to `blocked`, in nanoseconds). Gives up when `cancel` is set, the receiver closed
    /// the channel or the connection to its worker is lost; the error names the channel and
    /// the peer.
    pub fn send<T: Data>(
        &mut self,
        ev: Event<T>,
        cancel: &AtomicBool,
        blocked: &AtomicU64,
    ) -> Result<()> {
        let ch = self.tx.channel();
        self.buf.clear();
        let encoded =
            codec::encode_vectored(&ev, &mut self.buf).map_err(|e| serialization(&ch, e))?;
        let len = match encoded {
            // A batch of `Bytes`: its records are written from where they are (large ones
            // without a copy), so they live until the frame is out.
            Some(records) => {
                self.tx
                    .send_parts_timed(&self.buf, records, cancel, Some(blocked))?;
                self.buf.len() + records.iter().map(Bytes::len).sum::<usize>()
            }
            None => {
                // The records are no longer needed once encoded; free them before waiting.
                drop(ev);
                self.tx
                    .send_parts_timed(&self.buf, &[], cancel, Some(blocked))?;
                self.buf.len()
            }
        };
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The channel this end sends on.
    pub fn channel(&self) -> ChannelId {
        self.tx.channel()
    }
}

/// A consumer's end of a remote channel carrying events of type `T`.
pub struct NetInlet<T> {
    rx: NetReceiver,
    /// Bytes of every frame taken, for the task's metrics.
    bytes: Arc<AtomicU64>,
    _events: PhantomData<fn() -> T>,
}

impl<T: Data> NetInlet<T> {
    pub fn new(rx: NetReceiver, bytes: Arc<AtomicU64>) -> NetInlet<T> {
        NetInlet {
            rx,
            bytes,
            _events: PhantomData,
        }
    }

    /// The next event, or `None` after `timeout` without one. Fails when the channel ended
    /// (see [`NetReceiver::recv_timeout`]) or a frame does not decode.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event<T>>> {
        match self.rx.recv_timeout(timeout)? {
            Some(frame) => self.decode(frame).map(Some),
            None => Ok(None),
        }
    }

    /// [`NetInlet::recv_timeout`] without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Event<T>>> {
        match self.rx.try_recv()? {
            Some(frame) => self.decode(frame).map(Some),
            None => Ok(None),
        }
    }

    /// The queue of frames, to wait on together with other inputs; a frame taken from it goes
    /// to [`NetInlet::taken`], its disconnection to [`NetInlet::ended`].
    pub fn frames(&self) -> &Receiver<Bytes> {
        self.rx.frames()
    }

    /// The event of a frame taken from [`NetInlet::frames`]; returns its credit.
    pub fn taken(&self, frame: Bytes) -> Result<Event<T>> {
        let frame = self.rx.taken(frame)?;
        self.decode(frame)
    }

    /// Why the channel delivers no more frames.
    pub fn ended(&self) -> SluiceError {
        self.rx.ended()
    }

    fn decode(&self, frame: Bytes) -> Result<Event<T>> {
        let len = frame.len() as u64;
        let ev = codec::decode_frame::<T>(frame).map_err(|e| serialization(&self.rx.ch, e))?;
        self.bytes.fetch_add(len, Ordering::Relaxed);
        Ok(ev)
    }
}
