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
    pending: Vec<u8>,
    buf: Vec<u8>,
    eof: bool,
}

impl SocketSource {
    pub fn new(address: &str) -> Self {
        SocketSource {
            address: address.to_string(),
            stream: None,
            pending: Vec::new(),
            buf: vec![0; READ_CHUNK],
            eof: false,
        }
    }
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
                    s.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| SluiceError::io(&self.address, e))?;
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

    fn poll_next(&mut self, out: &mut Collector<String>, max: usize, _ctx: &mut OperatorContext) -> Result<SourcePoll> {
        let mut emitted = 0;
        loop {
            // Emit complete lines already buffered.
            while emitted < max {
                let Some(nl) = self.pending.iter().position(|&b| b == b'\n') else { break };
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                out.collect(text.trim_end_matches('\r').to_string());
                emitted += 1;
            }
            if emitted >= max {
                return Ok(SourcePoll::More);
            }
            if self.eof {
                if !self.pending.is_empty() {
                    let rest = std::mem::take(&mut self.pending);
                    out.collect(String::from_utf8_lossy(&rest).to_string());
                }
                return Ok(SourcePoll::Finished);
            }
            let stream = self.stream.as_mut().expect("opened");
            match stream.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&self.buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    return Ok(if emitted > 0 { SourcePoll::More } else { SourcePoll::Idle(Duration::ZERO) });
                }
                Err(e) => return Err(SluiceError::io(&self.address, e)),
            }
        }
    }
}
