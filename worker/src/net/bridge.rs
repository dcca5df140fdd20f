//! Typed bridges between local exchange channels and remote channels, so tasks read and write
//! the same bounded `Event` channels whether their peer runs in this process or another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use sluice_core::{Result, SluiceError};

use super::{ChannelId, NetReceiver, NetSender, cancelled, codec};
use crate::data::{Data, Event};
use crate::exchange::{BATCH_SIZE, CANCEL_POLL, send_event};

/// Encode buffer to start with: a full batch of small records, so it rarely has to grow.
const INITIAL_ENCODE_BUFFER: usize = BATCH_SIZE * 128;

fn serialization(ch: &ChannelId, message: String) -> SluiceError {
    SluiceError::Serialization {
        what: format!("an event on {ch}"),
        message,
    }
}

/// Drains the local channel `rx` of a producer into the remote channel `tx`, one frame per
/// event, on a thread of its own. Ends after forwarding `EndOfInput`, on cancellation or on
/// an error (a lost connection is noticed even while the producer is idle); either way it
/// drops `rx`, so a producer still sending fails rather than hangs. Errors other than
/// cancellation are also logged, for callers that detach the thread.
///
/// Panics if the thread cannot be spawned, as `std::thread::spawn` does.
pub fn bridge_out<T: Data>(
    rx: Receiver<Event<T>>,
    tx: NetSender,
    cancel: Arc<AtomicBool>,
) -> JoinHandle<Result<()>> {
    bridge_out_counted(rx, tx, cancel, Arc::default())
}

/// [`bridge_out`] that adds the bytes of every frame it sends to `bytes`.
pub fn bridge_out_counted<T: Data>(
    rx: Receiver<Event<T>>,
    tx: NetSender,
    cancel: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
) -> JoinHandle<Result<()>> {
    let ch = tx.channel();
    std::thread::Builder::new()
        .name(format!("net-tx-{}-{}", ch.node, ch.producer))
        .spawn(move || logged(&ch, forward_out(rx, tx, &cancel, &bytes)))
        .expect("spawning a bridge thread")
}

fn forward_out<T: Data>(
    rx: Receiver<Event<T>>,
    mut tx: NetSender,
    cancel: &AtomicBool,
    bytes: &AtomicU64,
) -> Result<()> {
    let ch = tx.channel();
    // One buffer for the life of the channel: encoding allocates nothing per batch.
    let mut buf = Vec::with_capacity(INITIAL_ENCODE_BUFFER);
    loop {
        let ev = match rx.recv_timeout(CANCEL_POLL) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => {
                if cancel.load(Ordering::Relaxed) {
                    return Err(cancelled());
                }
                tx.check()?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(SluiceError::Internal(format!(
                    "the producer of {ch} went away before the end of its input"
                )));
            }
        };
        let end = matches!(ev, Event::EndOfInput);
        buf.clear();
        let encoded = codec::encode_vectored(&ev, &mut buf).map_err(|e| serialization(&ch, e))?;
        let len = match encoded {
            // A batch of `Bytes`: its records are written from where they are (large ones
            // without a copy), so they live until the frame is out.
            Some(records) => {
                tx.send_parts(&buf, records, cancel)?;
                buf.len() + records.iter().map(Bytes::len).sum::<usize>()
            }
            None => {
                // The records are no longer needed once encoded; free them before waiting.
                drop(ev);
                tx.send(&buf, cancel)?;
                buf.len()
            }
        };
        bytes.fetch_add(len as u64, Ordering::Relaxed);
        if end {
            return Ok(());
        }
    }
}

/// Feeds the remote channel `rx` into the local channel `tx` of a consumer, on a thread of its
/// own. Ends after delivering `EndOfInput`, on cancellation or on an error; either way it drops
/// `tx`, so a consumer waiting for more input fails rather than hangs. Errors other than
/// cancellation are also logged, for callers that detach the thread.
///
/// Panics if the thread cannot be spawned, as `std::thread::spawn` does.
pub fn bridge_in<T: Data>(
    rx: NetReceiver,
    tx: Sender<Event<T>>,
    cancel: Arc<AtomicBool>,
) -> JoinHandle<Result<()>> {
    bridge_in_counted(rx, tx, cancel, Arc::default())
}

/// [`bridge_in`] that adds the bytes of every frame it receives to `bytes`.
pub fn bridge_in_counted<T: Data>(
    rx: NetReceiver,
    tx: Sender<Event<T>>,
    cancel: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
) -> JoinHandle<Result<()>> {
    let ch = rx.channel();
    std::thread::Builder::new()
        .name(format!("net-rx-{}-{}", ch.node, ch.consumer))
        .spawn(move || logged(&ch, forward_in(rx, tx, &cancel, &bytes)))
        .expect("spawning a bridge thread")
}

fn forward_in<T: Data>(
    rx: NetReceiver,
    tx: Sender<Event<T>>,
    cancel: &AtomicBool,
    bytes: &AtomicU64,
) -> Result<()> {
    let ch = rx.channel();
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
        let Some(frame) = rx.recv_timeout(CANCEL_POLL)? else {
            continue;
        };
        let len = frame.len() as u64;
        let ev = codec::decode_frame::<T>(frame).map_err(|e| serialization(&ch, e))?;
        bytes.fetch_add(len, Ordering::Relaxed);
        let end = matches!(ev, Event::EndOfInput);
        send_event(&tx, ev, cancel)?;
        if end {
            return Ok(());
        }
    }
}

/// The task on the other end reports only that its channel disconnected; the cause is here.
fn logged(ch: &ChannelId, result: Result<()>) -> Result<()> {
    if let Err(e) = &result
        && !matches!(e, SluiceError::Cancelled { .. })
    {
        log::warn!("bridge of {ch} failed: {e}");
    }
    result
}
