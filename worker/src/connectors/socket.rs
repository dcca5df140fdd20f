//! Text lines from a TCP socket (`host:port`), like Flink's `socketTextStream` fed by `nc -lk`.
//! Not replayable: lines read before a failure are not read again. The source ends when the
//! peer closes the connection.

use std::io::{ErrorKind, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::context::OperatorContext;
use crate::emit::Collector;
use crate::source::{Source, SourcePoll};
use sluice_core::{Result, SluiceError};

/// How long one read may block before the task looks at its mailbox again.
const READ_TIMEOUT: Duration = Duration::from_millis(50);
/// Bytes read per system call.
const READ_CHUNK: usize = 64 * 1024;

pub struct SocketSource {
    address: String,
    stream: Option<TcpStream>,
    /// Bytes read but not yet emitted as lines: `pending[start..]`.
    pending: Vec<u8>,
    start: usize,
    /// `pending[start..scanned]` holds no newline (so it is not searched again).
    scanned: usize,
    buf: Vec<u8>,
    eof: bool,
}

impl SocketSource {
    pub fn new(address: &str) -> Self {
        SocketSource {
            address: address.to_string(),
            stream: None,
            pending: Vec::new(),
            start: 0,
            scanned: 0,
            buf: vec![0; READ_CHUNK],
            eof: false,
        }
    }

    /// Drops the bytes of the lines already emitted (once per read, not once per line).
    fn compact(&mut self) {
        if self.start > 0 {
            self.pending.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
    }
}

/// One line without its terminator (`\n`, or `\r\n`); invalid UTF-8 is replaced, not fatal.
fn decode(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

impl Source for SocketSource {
    type Out = String;

    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        let addrs: Vec<_> = self
            .address
            .to_socket_addrs()
            .map_err(|e| SluiceError::io(&self.address, e))?
            .collect();
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
                Ok(s) => {
                    s.set_read_timeout(Some(READ_TIMEOUT))
                        .map_err(|e| SluiceError::io(&self.address, e))?;
                    self.stream = Some(s);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(SluiceError::io(
            &self.address,
            last.unwrap_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address")),
        ))
    }

    fn poll_next(
        &mut self,
        out: &mut Collector<String>,
        max: usize,
        _ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        let mut emitted = 0;
        loop {
            // Emit complete lines already buffered.
            while emitted < max {
                let Some(nl) = self.pending[self.scanned..]
                    .iter()
                    .position(|&b| b == b'\n')
                else {
                    self.scanned = self.pending.len();
                    break;
                };
                let end = self.scanned + nl;
                out.collect(decode(&self.pending[self.start..end]));
                self.start = end + 1;
                self.scanned = self.start;
                emitted += 1;
            }
            if emitted >= max {
                return Ok(SourcePoll::More);
            }
            self.compact();
            if self.eof {
                if !self.pending.is_empty() {
                    // The last line, not terminated by a newline.
                    out.collect(decode(&self.pending));
                    self.pending.clear();
                    self.scanned = 0;
                }
                return Ok(SourcePoll::Finished);
            }
            let stream = self.stream.as_mut().expect("opened");
            match stream.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&self.buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    return Ok(if emitted > 0 {
                        SourcePoll::More
                    } else {
                        SourcePoll::Idle(Duration::ZERO)
                    });
                }
                Err(e) => return Err(SluiceError::io(&self.address, e)),
            }
        }
    }
}
