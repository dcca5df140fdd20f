//! One control connection: length-prefixed bincode frames over TCP, a shared writer (any
//! thread may send) and a reader owned by one thread.

use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_core::{Result, SluiceError};

/// Largest frame accepted; a job bundle travels in one frame.
pub const MAX_FRAME: usize = 1 << 30;

/// The sending half; cheap to clone.
#[derive(Clone)]
pub struct Conn {
    writer: Arc<Mutex<BufWriter<TcpStream>>>,
    peer: SocketAddr,
}

/// The receiving half.
pub struct ConnReader {
    reader: BufReader<TcpStream>,
    peer: SocketAddr,
}

fn io_err(peer: SocketAddr, what: &str, e: std::io::Error) -> SluiceError {
    SluiceError::io(format!("control connection to {peer} ({what})"), e)
}

impl Conn {
    /// Connects to `addr`, giving up after `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<(Conn, ConnReader)> {
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| io_err(addr, "connect", e))?;
        Self::from_stream(stream)
    }

    /// Wraps an accepted or connected stream.
    pub fn from_stream(stream: TcpStream) -> Result<(Conn, ConnReader)> {
        let peer = stream
            .peer_addr()
            .map_err(|e| SluiceError::io("control connection peer".to_string(), e))?;
        let _ = stream.set_nodelay(true);
        let read = stream.try_clone().map_err(|e| io_err(peer, "clone", e))?;
        Ok((
            Conn {
                writer: Arc::new(Mutex::new(BufWriter::new(stream))),
                peer,
            },
            ConnReader {
                reader: BufReader::new(read),
                peer,
            },
        ))
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one message. Fails when the peer is gone.
    pub fn send<M: Serialize>(&self, msg: &M) -> Result<()> {
        let bytes = bincode::serialize(msg).map_err(|e| SluiceError::Serialization {
            what: format!("a control message to {}", self.peer),
            message: e.to_string(),
        })?;
        let mut w = self.writer.lock();
        w.write_all(&(bytes.len() as u32).to_le_bytes())
            .and_then(|_| w.write_all(&bytes))
            .and_then(|_| w.flush())
            .map_err(|e| io_err(self.peer, "send", e))
    }

    /// Closes both directions; the peer's reader sees the end of the stream.
    pub fn close(&self) {
        let _ = self
            .writer
            .lock()
            .get_ref()
            .shutdown(std::net::Shutdown::Both);
    }
}

impl ConnReader {
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// A peer silent for `timeout` makes [`ConnReader::recv`] fail (the heartbeat timeout).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        self.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(|e| io_err(self.peer, "set timeout", e))
    }

    /// The next message; `Ok(None)` when the peer closed the connection.
    pub fn recv<M: DeserializeOwned>(&mut self) -> Result<Option<M>> {
        match self.recv_frame()? {
            Some(frame) => self.decode(&frame).map(Some),
            None => Ok(None),
        }
    }

    /// Decodes a frame [`ConnReader::recv_frame`] returned.
    pub fn decode<M: DeserializeOwned>(&self, frame: &[u8]) -> Result<M> {
        bincode::deserialize(frame).map_err(|e| SluiceError::Serialization {
            what: format!("a control message from {}", self.peer),
            message: e.to_string(),
        })
    }

    /// The next frame's bytes, undecoded: a registration is looked at before it is decoded,
    /// so a peer of another protocol version is told so even when its messages do not decode.
    /// `Ok(None)` when the peer closed the connection.
    pub fn recv_frame(&mut self) -> Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        match self.reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(SluiceError::Job(format!(
                    "{} sent nothing within the heartbeat timeout",
                    self.peer
                )));
            }
            Err(e) => return Err(io_err(self.peer, "receive", e)),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(SluiceError::Internal(format!(
                "{} sent a frame of {len} bytes (at most {MAX_FRAME})",
                self.peer
            )));
        }
        let mut buf = vec![0u8; len];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| io_err(self.peer, "receive", e))?;
        Ok(Some(buf))
    }
}
