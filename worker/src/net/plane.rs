//! One data plane per worker process: it accepts connections from other workers, keeps one
//! outgoing connection per peer it sends to, and multiplexes every channel over them with
//! per-channel queues and credits, so no channel can stall another or grow without bound.

use std::collections::HashMap;
use std::io::{self, BufReader, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_core::{Result, SluiceError};

use super::channel::{InChannel, NetReceiver, NetSender, OutChannel};
use super::conn::{Conn, lost, parse_hello, protocol_error};
use super::frame::{self, Frame, Kind, MAGIC};
use super::{ChannelId, INITIAL_CREDITS, channel_error};
use crate::exchange::CANCEL_POLL;

/// Read buffer of a connection: many small frames (credits, watermarks) per system call, yet
/// small enough that most of a big frame is read straight into its own vector, not copied.
const READ_BUFFER: usize = 16 << 10;
/// How long opening a connection to a peer may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The channel id of frames that belong to no channel (hello).
const NO_CHANNEL: ChannelId = ChannelId {
    attempt: 0,
    node: 0,
    input: 0,
    producer: 0,
    consumer: 0,
};

/// State of a data plane shared by its handles, channels and threads.
pub(super) struct Shared {
    local: SocketAddr,
    closed: AtomicBool,
    /// Channels of attempts below this are gone; their frames are dropped on arrival.
    min_attempt: AtomicU64,
    outgoing: Mutex<HashMap<SocketAddr, Arc<Conn>>>,
    incoming: Mutex<HashMap<u64, Arc<Conn>>>,
    next_incoming: AtomicU64,
    /// Receiving channels. Lock order: this map, then a channel's state.
    pub(super) channels: Mutex<HashMap<ChannelId, Arc<InChannel>>>,
}

/// The network endpoint of one worker process. Cheap to clone; the listener and every
/// connection close when the last clone is dropped, which peers see as a lost connection.
#[derive(Clone)]
pub struct DataPlane {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl DataPlane {
    /// Listens on `addr` (port 0 picks a free one) and accepts other workers' connections on
    /// a thread of its own.
    pub fn bind(addr: SocketAddr) -> Result<DataPlane> {
        let what = format!("data plane address {addr}");
        let listener = TcpListener::bind(addr).map_err(|e| SluiceError::io(&what, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| SluiceError::io(&what, e))?;
        let shared = Arc::new(Shared {
            local,
            closed: AtomicBool::new(false),
            min_attempt: AtomicU64::new(0),
            outgoing: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
            next_incoming: AtomicU64::new(0),
            channels: Mutex::new(HashMap::new()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("net-listen".into())
            .spawn(move || s.accept_loop(listener))
            .map_err(|e| SluiceError::io("data plane listener thread", e))?;
        Ok(DataPlane {
            handle: Arc::new(Handle {
                shared,
                listener: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.shared.local
    }

    /// Opens the sending end of `ch` towards the worker whose data plane listens on `peer`,
    /// connecting to it first if this is the first channel to it. The receiver may register
    /// the channel later; sends wait for its credits.
    pub fn open_sender(&self, peer: SocketAddr, ch: ChannelId) -> Result<NetSender> {
        let shared = &self.handle.shared;
        let conn = shared.connection(peer)?;
        let chan = OutChannel::new();
        {
            let mut senders = conn.senders.lock();
            if senders.contains_key(&ch) {
                return Err(channel_error(
                    &ch,
                    &conn.peer,
                    ErrorKind::AlreadyExists,
                    "the channel is already open",
                ));
            }
            senders.insert(ch, chan.clone());
        }
        let sender = NetSender { conn, chan, ch };
        // Checked after the insertion: a concurrent close_attempts_before either sees the
        // channel or has raised the minimum this reads.
        if ch.attempt < shared.min_attempt.load(Ordering::SeqCst) {
            return Err(sender.error(ErrorKind::Interrupted, "its attempt was closed"));
        }
        sender
            .conn
            .write(Kind::Open, &ch, &[])
            .map_err(|m| sender.error(ErrorKind::ConnectionAborted, m))?;
        Ok(sender)
    }

    /// Registers the receiving end of `ch`; its sender may open before or after.
    pub fn open_receiver(&self, ch: ChannelId) -> Result<NetReceiver> {
        let shared = &self.handle.shared;
        let here = format!("data plane {}", shared.local);
        if shared.closed.load(Ordering::SeqCst) {
            return Err(channel_error(&ch, &here, ErrorKind::NotConnected, "closed"));
        }
        let mut channels = shared.channels.lock();
        if ch.attempt < shared.min_attempt.load(Ordering::SeqCst) {
            return Err(channel_error(
                &ch,
                &here,
                ErrorKind::Interrupted,
                "its attempt was closed",
            ));
        }
        let chan = channels.entry(ch).or_insert_with(InChannel::new).clone();
        let mut st = chan.state.lock();
        if st.registered {
            return Err(channel_error(
                &ch,
                &here,
                ErrorKind::AlreadyExists,
                "the channel is already registered",
            ));
        }
        st.registered = true;
        let grant = st.grant_if_ready();
        drop(st);
        drop(channels);
        if let Some(conn) = grant {
            // A failed write fails the connection, which the receiver then reports.
            let _ignored = conn.write(Kind::Credit, &ch, &frame::credit_payload(INITIAL_CREDITS));
        }
        Ok(NetReceiver {
            shared: shared.clone(),
            chan,
            ch,
        })
    }

    /// Drops every channel of attempts below `attempt` (a restarted job): their senders and
    /// receivers fail, and frames still arriving for them are discarded.
    pub fn close_attempts_before(&self, attempt: u64) {
        let shared = &self.handle.shared;
        let why = || {
            (
                ErrorKind::Interrupted,
                format!("attempts before {attempt} were closed"),
            )
        };
        let mut dropped = Vec::new();
        {
            let mut channels = shared.channels.lock();
            shared.min_attempt.fetch_max(attempt, Ordering::SeqCst);
            channels.retain(|ch, c| {
                let keep = ch.attempt >= attempt;
                if !keep {
                    dropped.push((*ch, c.clone()));
                }
                keep
            });
        }
        for (ch, c) in dropped {
            c.fail(why(), true);
            if let Some(conn) = c.state.lock().conn.clone() {
                let _ignored = conn.write(Kind::Close, &ch, &[]);
            }
        }
        let conns: Vec<_> = shared.outgoing.lock().values().cloned().collect();
        for conn in conns {
            let mut gone = Vec::new();
            conn.senders.lock().retain(|ch, c| {
                let keep = ch.attempt >= attempt;
                if !keep {
                    gone.push((*ch, c.clone()));
                }
                keep
            });
            for (ch, c) in gone {
                c.close(why());
                let _ignored = conn.write(Kind::Close, &ch, &[]);
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::SeqCst);
        let reason = format!("data plane {} closed", shared.local);
        let conns: Vec<_> = (shared.outgoing.lock().drain())
            .map(|(_, c)| c)
            .chain(shared.incoming.lock().drain().map(|(_, c)| c))
            .collect();
        // Their readers see the shutdown and fail the senders and receivers on them.
        for c in conns {
            c.fail(reason.clone());
        }
        let channels: Vec<_> = shared.channels.lock().drain().map(|(_, c)| c).collect();
        for c in channels {
            c.fail((ErrorKind::NotConnected, reason.clone()), true);
        }
        // Wake the listener blocked in accept; if that fails it stays parked, harmlessly.
        let mut wake = shared.local;
        if wake.ip().is_unspecified() {
            wake.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok()
            && let Some(t) = self.listener.lock().take()
        {
            let _ignored = t.join();
        }
    }
}

impl Shared {
    fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            match stream {
                Ok(stream) => {
                    let s = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("net-read-in".into())
                        .spawn(move || s.serve_incoming(stream));
                    if let Err(e) = spawned {
                        log::warn!("data plane {}: no thread for a connection: {e}", self.local);
                    }
                }
                Err(e) => {
                    // Out of descriptors or an aborted handshake: keep accepting the others.
                    log::warn!("data plane {}: accept failed: {e}", self.local);
                    std::thread::sleep(CANCEL_POLL);
                }
            }
        }
    }

    /// The connection to `peer`, opened now if there is none or the last one failed.
    fn connection(self: &Arc<Self>, peer: SocketAddr) -> Result<Arc<Conn>> {
        let what = format!("data plane of worker {peer}");
        if self.closed.load(Ordering::SeqCst) {
            return Err(SluiceError::io(
                &what,
                io::Error::new(ErrorKind::NotConnected, "the local data plane is closed"),
            ));
        }
        let mut outgoing = self.outgoing.lock();
        if let Some(c) = outgoing.get(&peer)
            && c.failure().is_none()
        {
            return Ok(c.clone());
        }
        let io_err = |e| SluiceError::io(&what, e);
        let stream = TcpStream::connect_timeout(&peer, CONNECT_TIMEOUT).map_err(io_err)?;
        let conn = Arc::new(
            Conn::new(
                format!("worker {peer}"),
                stream.try_clone().map_err(io_err)?,
            )
            .map_err(io_err)?,
        );
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(self.local.to_string().as_bytes());
        conn.write(Kind::Hello, &NO_CHANNEL, &hello)
            .map_err(|m| io_err(io::Error::new(ErrorKind::ConnectionAborted, m)))?;
        let (s, c) = (self.clone(), conn.clone());
        std::thread::Builder::new()
            .name("net-read-out".into())
            .spawn(move || s.serve_outgoing(c, stream))
            .map_err(io_err)?;
        outgoing.insert(peer, conn.clone());
        log::debug!("data plane {}: connected to {peer}", self.local);
        Ok(conn)
    }

    /// Reads credits and closes for the channels this worker sends on over `conn`.
    fn serve_outgoing(self: Arc<Self>, conn: Arc<Conn>, stream: TcpStream) {
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        let ended = loop {
            let f = match frame::read_frame(&mut reader) {
                Ok(f) => f,
                Err(e) => break e,
            };
            let chan = conn.senders.lock().get(&f.ch).cloned();
            match (f.kind, chan) {
                (Kind::Credit, Some(c)) => match frame::parse_credit(&f.payload) {
                    Ok(n) => {
                        c.state.lock().credits += n;
                        c.cv.notify_one();
                    }
                    Err(e) => break e,
                },
                (Kind::Close, Some(c)) => c.close((
                    ErrorKind::BrokenPipe,
                    "the receiver closed the channel".into(),
                )),
                // Credits and closes for channels already dropped here.
                (Kind::Credit | Kind::Close, None) => {}
                (k, _) => break protocol_error(format!("unexpected {k:?} frame from a receiver")),
            }
        };
        let reason = conn.fail(lost(&ended));
        let senders: Vec<_> = conn.senders.lock().drain().map(|(_, c)| c).collect();
        for c in senders {
            c.close((ErrorKind::ConnectionAborted, reason.clone()));
        }
        let mut outgoing = self.outgoing.lock();
        outgoing.retain(|_, c| !Arc::ptr_eq(c, &conn));
    }

    /// Serves a connection another worker opened: its hello, then its channels' frames.
    fn serve_incoming(self: Arc<Self>, stream: TcpStream) {
        let remote = stream
            .peer_addr()
            .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
        let reader_stream = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("data plane {}: connection from {remote}: {e}", self.local);
                return;
            }
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, reader_stream);
        let peer = match frame::read_frame(&mut reader).and_then(parse_hello) {
            Ok(addr) => format!("worker {addr}"),
            Err(e) => {
                log::warn!("data plane {}: bad hello from {remote}: {e}", self.local);
                return;
            }
        };
        let conn = match Conn::new(peer, stream) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                log::warn!("data plane {}: connection from {remote}: {e}", self.local);
                return;
            }
        };
        let id = self.next_incoming.fetch_add(1, Ordering::Relaxed);
        self.incoming.lock().insert(id, conn.clone());
        if self.closed.load(Ordering::SeqCst) {
            conn.fail(format!("data plane {} closed", self.local));
        }
        let ended = loop {
            let f = match frame::read_frame(&mut reader) {
                Ok(f) => f,
                Err(e) => break e,
            };
            if let Err(e) = self.on_incoming(&conn, f) {
                break e;
            }
        };
        let reason = conn.fail(lost(&ended));
        self.incoming.lock().remove(&id);
        let channels: Vec<_> = self.channels.lock().values().cloned().collect();
        for c in channels {
            let on_conn = c
                .state
                .lock()
                .conn
                .as_ref()
                .is_some_and(|x| Arc::ptr_eq(x, &conn));
            if on_conn {
                c.fail((ErrorKind::ConnectionAborted, reason.clone()), false);
            }
        }
    }

    /// Handles one frame from a sending worker. Never blocks on a channel: a data frame always
    /// fits its queue because the sender spent a credit on it.
    fn on_incoming(&self, conn: &Arc<Conn>, f: Frame) -> io::Result<()> {
        let chan = {
            let mut channels = self.channels.lock();
            if f.ch.attempt < self.min_attempt.load(Ordering::SeqCst) {
                return Ok(()); // a late frame of a closed attempt
            }
            match (f.kind, channels.get(&f.ch)) {
                (Kind::Open, None) => channels.entry(f.ch).or_insert_with(InChannel::new).clone(),
                (_, Some(c)) => c.clone(),
                // Frames of a channel whose receiver went away.
                (Kind::Data | Kind::Close, None) => return Ok(()),
                (k, None) => return Err(protocol_error(format!("unexpected {k:?} frame"))),
            }
        };
        let mut st = chan.state.lock();
        match f.kind {
            Kind::Open => {
                if st.conn.is_some() {
                    return Err(protocol_error(format!("{} opened twice", f.ch)));
                }
                st.conn = Some(conn.clone());
                if let Some(conn) = st.grant_if_ready() {
                    drop(st);
                    let credits = frame::credit_payload(INITIAL_CREDITS);
                    let _ignored = conn.write(Kind::Credit, &f.ch, &credits);
                }
            }
            Kind::Data => {
                if st.failed.is_some() {
                    return Ok(());
                }
                if st.outstanding == 0 {
                    return Err(protocol_error(format!("data without credit on {}", f.ch)));
                }
                st.outstanding -= 1;
                st.queue.push_back(f.payload);
                st.max_queued = st.max_queued.max(st.queue.len());
                drop(st);
                chan.cv.notify_one();
            }
            Kind::Close => {
                st.sender_closed = true;
                drop(st);
                chan.cv.notify_all();
            }
            Kind::Hello | Kind::Credit => {
                return Err(protocol_error(format!("unexpected {:?} frame", f.kind)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
impl DataPlane {
    /// Live outgoing and incoming connections, and incoming ones accepted so far, for tests.
    pub(crate) fn connection_counts(&self) -> (usize, usize, u64) {
        let s = &self.handle.shared;
        let accepted = s.next_incoming.load(Ordering::SeqCst);
        (s.outgoing.lock().len(), s.incoming.lock().len(), accepted)
    }
}
