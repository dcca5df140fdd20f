//! One TCP connection between two workers: a single locked writer so frames of different
//! channels never interleave, and a failure state that every channel on it reports.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use parking_lot::Mutex;

use super::ChannelId;
use super::channel::OutChannel;
use super::frame::{self, Frame, Kind, MAGIC};

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
    /// Payload vectors of frames already consumed, for the reader to fill again.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Spare payload vectors a connection keeps: enough for a channel's frames in flight.
const SPARE_BUFFERS: usize = 4;
/// A payload vector above this size is freed rather than kept, so one huge record does not
/// pin its memory for the life of the connection.
const SPARE_MAX_BYTES: usize = 4 << 20;

struct Writer {
    stream: TcpStream,
    scratch: Vec<u8>,
}

impl Conn {
    pub(super) fn new(peer: String, stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        Ok(Conn {
            peer,
            writer: Mutex::new(Writer {
                stream: stream.try_clone()?,
                scratch: Vec::new(),
            }),
            socket: stream,
            failure: Mutex::new(None),
            senders: Mutex::new(HashMap::new()),
            spare: Mutex::new(Vec::new()),
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

    /// A vector for the reader to read the next payload into.
    pub(super) fn buffer(&self) -> Vec<u8> {
        self.spare.lock().pop().unwrap_or_default()
    }

    /// Hands a consumed payload back for the reader to reuse.
    pub(super) fn recycle(&self, payload: Vec<u8>) {
        if payload.capacity() <= SPARE_MAX_BYTES {
            let mut spare = self.spare.lock();
            if spare.len() < SPARE_BUFFERS {
                spare.push(payload);
            }
        }
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
