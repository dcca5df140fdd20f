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
use crate::data::{Batch, Data, Event};
use crate::exchange::BATCH_SIZE;

/// Encode buffer to start with: a full batch of small records, so it rarely has to grow.
const INITIAL_ENCODE_BUFFER: usize = BATCH_SIZE * 128;

fn serialization(ch: &ChannelId, message: String) -> SluiceError {
    SluiceError::Serialization {
        what: format!("an event on {ch}"),
        message,
    }
}

/// Bytes a frame of batches is filled to before it goes out (see [`NetOutlet::send`]). A frame
/// costs the same few wakeups and system calls at any size (a write, the consumer's wakeup, a
/// share of a credit frame: about 13 µs on a virtual machine's loopback, measured with
/// `sluice-net-bench --only frames`), so frames of a few hundred KiB spend a few percent of
/// the raw copy on them where frames of one batch of small records spent a third. The
/// receiver's queue, bounded by its credits, then holds up to a MiB per channel.
pub const FRAME_TARGET_BYTES: usize = 256 << 10;

/// Most records one frame gathers, whatever their size: a few full batches.
pub const COALESCED_RECORDS_MAX: usize = 4 * BATCH_SIZE;

/// Records a frame of batches gathers when a record takes `bytes_per_record` bytes encoded:
/// enough for [`FRAME_TARGET_BYTES`], at most [`COALESCED_RECORDS_MAX`].
pub fn records_per_frame(bytes_per_record: usize) -> usize {
    FRAME_TARGET_BYTES
        .div_ceil(bytes_per_record.max(1))
        .clamp(1, COALESCED_RECORDS_MAX)
}

/// Whether a frame's credit was taken before it was encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Credit {
    /// Taken with [`NetSender::try_credit`]: the frame goes without waiting.
    Taken,
    /// Still to be waited for, once the frame is encoded.
    ToWait,
}

/// A producer's end of a remote channel carrying events of type `T`: one frame per event,
/// written by the producer's own thread once the receiver granted a credit for it.
pub struct NetOutlet<T> {
    tx: NetSender,
    /// One buffer for the life of the channel: encoding allocates nothing per batch.
    buf: Vec<u8>,
    /// Bytes of every frame sent, for the task's metrics.
    bytes: Arc<AtomicU64>,
    /// Records held to fill a frame, or for want of a credit: they go out with the batches
    /// after them, at the latest at the next [`NetOutlet::flush`] or event that is not a batch.
    held: Option<Batch<T>>,
    /// Encoded bytes per record of the last frame of a batch; 0 before the first.
    bytes_per_record: usize,
}

impl<T: Data> NetOutlet<T> {
    pub fn new(tx: NetSender, bytes: Arc<AtomicU64>) -> NetOutlet<T> {
        NetOutlet {
            tx,
            buf: Vec::with_capacity(INITIAL_ENCODE_BUFFER),
            bytes,
            held: None,
            bytes_per_record: 0,
        }
    }

    /// Sends `ev` in a frame, waiting for a credit where it must (the time waited is added to
    /// `blocked`, in nanoseconds). Batches are held and joined until their records fill a
    /// frame ([`records_per_frame`], from the size of the frames before; the first batch goes
    /// alone), and while no credit is at hand, up to [`COALESCED_RECORDS_MAX`] records: only
    /// a frame of that many waits for a credit. Under backpressure the frames grow rather than
    /// the waits multiply. Held records keep their place: any other event, and
    /// [`NetOutlet::flush`] (which a task calls before it waits for input, and at its buffer
    /// timeout), sends them first. Gives up when `cancel` is set, the receiver closed the
    /// channel or the connection to its worker is lost; the error names the channel and the
    /// peer.
    pub fn send(&mut self, ev: Event<T>, cancel: &AtomicBool, blocked: &AtomicU64) -> Result<()> {
        let batch = match ev {
            Event::Batch(b) => b,
            other => {
                self.flush(cancel, blocked)?;
                return self.write(other, Credit::ToWait, cancel, blocked);
            }
        };
        let batch = match self.held.take() {
            None => batch,
            Some(mut held) if held.has_timestamps() == batch.has_timestamps() => {
                let Batch { mut data, mut ts } = batch;
                held.data.append(&mut data);
                held.ts.append(&mut ts);
                held
            }
            Some(held) => {
                self.write(Event::Batch(held), Credit::ToWait, cancel, blocked)?;
                batch
            }
        };
        if batch.len() >= COALESCED_RECORDS_MAX {
            return self.write(Event::Batch(batch), Credit::ToWait, cancel, blocked);
        }
        let fill = match self.bytes_per_record {
            0 => 1,
            n => records_per_frame(n),
        };
        if batch.len() >= fill && self.tx.try_credit()? {
            return self.write(Event::Batch(batch), Credit::Taken, cancel, blocked);
        }
        self.held = Some(batch);
        Ok(())
    }

    /// Sends the records held back, waiting for a credit. A task calls this before it waits
    /// for input and at its buffer timeout, so held records never wait long on the producer's
    /// next batch.
    pub fn flush(&mut self, cancel: &AtomicBool, blocked: &AtomicU64) -> Result<()> {
        match self.held.take() {
            Some(held) => self.write(Event::Batch(held), Credit::ToWait, cancel, blocked),
            None => Ok(()),
        }
    }

    /// Encodes `ev` and writes it as one frame, on the credit already taken or after waiting
    /// for one. An event that fails to encode gives its credit back: the channel keeps its
    /// window, and the error names the channel.
    fn write(
        &mut self,
        ev: Event<T>,
        credit: Credit,
        cancel: &AtomicBool,
        blocked: &AtomicU64,
    ) -> Result<()> {
        let ch = self.tx.channel();
        self.buf.clear();
        let encoded = match codec::encode_vectored(&ev, &mut self.buf) {
            Ok(encoded) => encoded,
            Err(e) => {
                if credit == Credit::Taken {
                    self.tx.return_credit();
                }
                return Err(serialization(&ch, e));
            }
        };
        let waited = (credit == Credit::ToWait).then_some(blocked);
        let records = match &ev {
            Event::Batch(b) => b.len(),
            _ => 0,
        };
        let len = match encoded {
            // A batch of `Bytes`: its records are written from where they are (large ones
            // without a copy), so they live until the frame is out.
            Some(records) => self.write_frame(records, waited, cancel)?,
            None => {
                // The records are no longer needed once encoded; free them before waiting.
                drop(ev);
                self.write_frame(&[], waited, cancel)?
            }
        };
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        if let Some(per_record) = len.checked_div(records) {
            self.bytes_per_record = per_record.max(1);
        }
        Ok(())
    }

    /// Writes the encoded head in `buf` and `tail` as one frame, first waiting for a credit
    /// unless `waited` is `None` (one was taken); returns the frame's payload length.
    fn write_frame(
        &mut self,
        tail: &[Bytes],
        waited: Option<&AtomicU64>,
        cancel: &AtomicBool,
    ) -> Result<usize> {
        if waited.is_some() {
            self.tx.wait_for_credit(cancel, waited)?;
        }
        self.tx.write_credited(&self.buf, tail)?;
        Ok(self.buf.len() + tail.iter().map(Bytes::len).sum::<usize>())
    }

    /// The channel this end sends on.
    pub fn channel(&self) -> ChannelId {
        self.tx.channel()
    }

    #[cfg(test)]
    pub(super) fn sender(&self) -> &NetSender {
        &self.tx
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
