//! One TCP connection between two workers: a single locked writer so frames of different
//! channels never interleave, and a failure state that every channel on it reports.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::ChannelId;
use super::channel::OutChannel;
use super::frame::{self, Frame, Kind, MAGIC};

/// How long one write may wait for the peer to take bytes. The peer's reader never waits on a
/// channel, so a peer that takes nothing for this long is stuck (stopped, or its machine is):
/// the write fails the connection, which frees the tasks writing to it (a producer's data, a
/// consumer's credits) to see their job cancelled and restarted.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// One TCP connection to another worker, in either direction.
pub(super) struct Conn {
    /// "worker <address>", for messages.
    pub(super) peer: String,
    /// A handle kept only to shut the socket down, which wakes a reader blocked on it.
    socket: TcpStream,
    /// The single writer; frames are written whole under the lock so they never interleave.
    writer: Mutex<Writer>,
    /// Set once, when the connection failed or was closed; later writes fail fast.
    failure: Mutex<Option<String>>,
    /// The channels this worker sends on over the connection, which credits go to.
    pub(super) senders: Mutex<HashMap<ChannelId, Arc<OutChannel>>>,
}

struct Writer {
    stream: TcpStream,
    scratch: Vec<u8>,
}

impl Conn {
    pub(super) fn new(peer: String, stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Conn {
            peer,
            writer: Mutex::new(Writer {
                stream: stream.try_clone()?,
                scratch: Vec::new(),
            }),
            socket: stream,
            failure: Mutex::new(None),
            senders: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }

    /// Marks the connection failed (the first reason wins, and is returned) and shuts the
    /// socket down so its reader and any blocked writer return at once.
    pub(super) fn fail(&self, reason: String) -> String {
        let reason = self.failure.lock().get_or_insert(reason).clone();
        let _ignored = self.socket.shutdown(Shutdown::Both);
        reason
    }

    pub(super) fn write(&self, kind: Kind, ch: &ChannelId, payload: &[u8]) -> Result<(), String> {
        let mut w = self.writer.lock();
        if let Some(f) = self.failure() {
            return Err(f);
        }
        let Writer { stream, scratch } = &mut *w;
        frame::write_frame(stream, scratch, kind, ch, payload)
            .map_err(|e| self.fail(format!("connection lost: {e}")))
    }

    /// Writes a frame of `head` followed by the bytes of `tail` (see
    /// [`frame::write_frame_parts`]).
    pub(super) fn write_parts(
        &self,
        kind: Kind,
        ch: &ChannelId,
        head: &[u8],
        tail: &[Bytes],
    ) -> Result<(), String> {
        let mut w = self.writer.lock();
        if let Some(f) = self.failure() {
            return Err(f);
        }
        let Writer { stream, scratch } = &mut *w;
        frame::write_frame_parts(stream, scratch, kind, ch, head, tail)
            .map_err(|e| self.fail(format!("connection lost: {e}")))
    }
}

pub(super) fn protocol_error(message: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("protocol error: {message}"))
}

/// Why the connection ended, as its channels report it (their errors name the peer).
pub(super) fn lost(e: &io::Error) -> String {
    if e.kind() == ErrorKind::UnexpectedEof {
        "connection lost: closed by the peer".to_string()
    } else {
        format!("connection lost: {e}")
    }
}

pub(super) fn parse_hello(f: Frame) -> io::Result<String> {
    match (f.kind, f.payload.strip_prefix(MAGIC.as_slice())) {
        (Kind::Hello, Some(addr)) => Ok(String::from_utf8_lossy(addr).into_owned()),
        _ => Err(protocol_error("not a Sluice data plane".into())),
    }
}
