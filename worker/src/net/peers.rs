//! The one connection per pair of workers, whichever dialled it, carrying the channels of both
//! directions: dialling, accepting, the rule that settles two workers dialling each other at
//! once, and the reader that serves every frame of a connection.
//!
//! Two workers may dial each other at the same moment. Both dials reach their peers, and each
//! side answers the hello: a worker refuses a dial from a worker with a higher address while
//! it dials that worker itself or already holds a working connection to it, and accepts
//! everything else. So of two crossing dials the lower address's wins; the refused side waits
//! for it to be set up and dials again if it never is (its peer may still hold a connection
//! the refused side already saw fail).

use std::collections::{HashMap, HashSet};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;
use sluice_core::{Result, SluiceError};

use super::ChannelId;
use super::conn::{Conn, lost, parse_hello, protocol_error};
use super::frame::{self, Frame, FrameReader, Kind, MAGIC};
use super::plane::Shared;
use crate::exchange::CANCEL_POLL;

/// How long getting a connection to a peer may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused dialler waits for its peer's connection before it dials again.
const REDIAL: Duration = Duration::from_millis(100);
/// The channel id of frames that belong to no channel (hello).
const NO_CHANNEL: ChannelId = ChannelId {
    attempt: 0,
    node: 0,
    input: 0,
    producer: 0,
    consumer: 0,
};

/// The connections of a data plane. Lock order: this, then the channel map.
#[derive(Default)]
pub(super) struct Peers {
    /// The connection to each peer, by the peer's data plane address.
    by_peer: HashMap<SocketAddr, Arc<Conn>>,
    /// Peers this plane is dialling now.
    dialing: HashSet<SocketAddr>,
    /// Peers that refused a dial, and until when this plane waits for their own connection
    /// before it dials again.
    refused: HashMap<SocketAddr, Instant>,
    /// Every connection not yet ended, by a number, and whether this plane dialled it.
    live: HashMap<u64, (Arc<Conn>, bool)>,
    next_id: u64,
    /// Connections accepted so far.
    accepted: u64,
}

impl Peers {
    fn add(&mut self, conn: &Arc<Conn>, dialed: bool) -> u64 {
        self.next_id += 1;
        self.live.insert(self.next_id, (conn.clone(), dialed));
        if !dialed {
            self.accepted += 1;
        }
        self.next_id
    }
}

fn hello_from(local: SocketAddr) -> Vec<u8> {
    let mut hello = MAGIC.to_vec();
    hello.extend_from_slice(local.to_string().as_bytes());
    hello
}

impl Shared {
    pub(super) fn live_connections(&self) -> Vec<Arc<Conn>> {
        let peers = self.peers.lock();
        peers.live.values().map(|(c, _)| c.clone()).collect()
    }

    /// Every connection, forgotten: the plane closes.
    pub(super) fn take_connections(&self) -> Vec<Arc<Conn>> {
        let mut peers = self.peers.lock();
        peers.by_peer.clear();
        peers.live.drain().map(|(_, (c, _))| c).collect()
    }

    /// (dialled, accepted) connections alive, and connections accepted so far.
    #[cfg(test)]
    pub(super) fn connection_counts(&self) -> (usize, usize, u64) {
        let peers = self.peers.lock();
        let dialed = peers.live.values().filter(|(_, d)| *d).count();
        (dialed, peers.live.len() - dialed, peers.accepted)
    }

    pub(super) fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        for stream in listener.incoming() {
            if self.is_closed() {
                return;
            }
            match stream {
                Ok(stream) => {
                    let s = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("net-read".into())
                        .spawn(move || s.serve_accepted(stream));
                    if let Err(e) = spawned {
                        log::warn!(
                            "data plane {}: no thread for a connection: {e}",
                            self.local()
                        );
                    }
                }
                Err(e) => {
                    // Out of descriptors or an aborted handshake: keep accepting the others.
                    log::warn!("data plane {}: accept failed: {e}", self.local());
                    std::thread::sleep(CANCEL_POLL);
                }
            }
        }
    }

    /// The connection to `peer`: the existing one, or one set up now (dialled here, or by
    /// the peer when both dial at once).
    pub(super) fn connection(self: &Arc<Self>, peer: SocketAddr) -> Result<Arc<Conn>> {
        let what = format!("data plane of worker {peer}");
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut peers = self.peers.lock();
        loop {
            if self.is_closed() {
                return Err(SluiceError::io(
                    &what,
                    io::Error::new(ErrorKind::NotConnected, "the local data plane is closed"),
                ));
            }
            if let Some(c) = peers.by_peer.get(&peer)
                && c.failure().is_none()
            {
                return Ok(c.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SluiceError::io(
                    &what,
                    io::Error::new(
                        ErrorKind::TimedOut,
                        format!("no connection within {CONNECT_TIMEOUT:?}"),
                    ),
                ));
            }
            let backoff = peers.refused.get(&peer).copied().filter(|t| *t > now);
            if peers.dialing.contains(&peer) || backoff.is_some() {
                // Another thread of this plane dials it, or it refused a dial and dials itself.
                let until = backoff.unwrap_or(now + REDIAL);
                self.peers_changed
                    .wait_until(&mut peers, deadline.min(until));
                continue;
            }
            peers.dialing.insert(peer);
            let dialed = MutexGuard::unlocked(&mut peers, || self.dial(peer, deadline));
            peers.dialing.remove(&peer);
            self.peers_changed.notify_all();
            match dialed {
                Ok(Some((conn, reader))) => return self.install(peers, peer, conn, reader, true),
                Ok(None) => {
                    // The peer keeps the connection it dialled: wait for it to be set up.
                    peers.refused.insert(peer, Instant::now() + REDIAL);
                }
                Err(e) => return Err(SluiceError::io(&what, e)),
            }
        }
    }

    /// Connects to `peer` and says hello; `None` when the peer refused the connection.
    fn dial(
        &self,
        peer: SocketAddr,
        deadline: Instant,
    ) -> io::Result<Option<(Arc<Conn>, FrameReader<TcpStream>)>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = TcpStream::connect_timeout(&peer, left.max(Duration::from_millis(1)))?;
        let conn = Arc::new(Conn::new(format!("worker {peer}"), stream.try_clone()?)?);
        conn.write(Kind::Hello, &NO_CHANNEL, &hello_from(self.local()))
            .map_err(|m| io::Error::new(ErrorKind::ConnectionAborted, m))?;
        stream.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut reader = FrameReader::new(stream);
        let answer = reader.read_frame()?;
        reader.get_ref().set_read_timeout(None)?;
        match (answer.kind, answer.payload.strip_prefix(MAGIC.as_slice())) {
            (Kind::Hello, Some([1])) => Ok(Some((conn, reader))),
            (Kind::Hello, Some([0])) => {
                conn.fail("refused: the peer keeps its own connection".into());
                Ok(None)
            }
            _ => Err(protocol_error(format!(
                "worker {peer} answered the hello with a {:?} frame",
                answer.kind
            ))),
        }
    }

    /// Makes `conn` the connection to `peer` (ending one it replaces) and starts its reader.
    fn install(
        self: &Arc<Self>,
        mut peers: MutexGuard<'_, Peers>,
        peer: SocketAddr,
        conn: Arc<Conn>,
        reader: FrameReader<TcpStream>,
        dialed: bool,
    ) -> Result<Arc<Conn>> {
        if let Some(old) = peers.by_peer.insert(peer, conn.clone())
            && !Arc::ptr_eq(&old, &conn)
        {
            // The peer dials only when it has no working connection: this one is dead to it.
            old.fail(format!("worker {peer} connected again"));
        }
        peers.refused.remove(&peer);
        let id = peers.add(&conn, dialed);
        drop(peers);
        self.peers_changed.notify_all();
        let (s, c) = (self.clone(), conn.clone());
        let spawned = std::thread::Builder::new()
            .name("net-read".into())
            .spawn(move || s.serve(c, reader, id, peer));
        if let Err(e) = spawned {
            let reason = conn.fail(format!("no thread to read the connection: {e}"));
            self.forget(&conn, id, peer, reason);
            return Err(SluiceError::io(format!("data plane of worker {peer}"), e));
        }
        log::debug!("data plane {}: connected with {peer}", self.local());
        Ok(conn)
    }

    /// Answers a dial: accepts it as the pair's connection, or refuses it (see the module).
    fn serve_accepted(self: Arc<Self>, stream: TcpStream) {
        let remote = stream
            .peer_addr()
            .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
        let reader_stream = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("data plane {}: connection from {remote}: {e}", self.local());
                return;
            }
        };
        let mut reader = FrameReader::new(reader_stream);
        let peer = match reader.read_frame().and_then(parse_hello).and_then(|a| {
            a.parse::<SocketAddr>()
                .map_err(|e| protocol_error(format!("hello with address '{a}': {e}")))
        }) {
            Ok(addr) => addr,
            Err(e) => {
                log::warn!("data plane {}: bad hello from {remote}: {e}", self.local());
                return;
            }
        };
        let conn = match Conn::new(format!("worker {peer}"), stream) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                log::warn!("data plane {}: connection from {remote}: {e}", self.local());
                return;
            }
        };
        let peers = self.peers.lock();
        let working = peers
            .by_peer
            .get(&peer)
            .is_some_and(|c| c.failure().is_none());
        let accept = peer < self.local() || !(peers.dialing.contains(&peer) || working);
        let mut answer = MAGIC.to_vec();
        answer.push(u8::from(accept));
        if conn.write(Kind::Hello, &NO_CHANNEL, &answer).is_err() || !accept {
            conn.fail("refused".into());
            return;
        }
        if self.is_closed() {
            conn.fail(format!("data plane {} closed", self.local()));
            return;
        }
        let _ = self.install(peers, peer, conn, reader, false);
    }

    /// Reads every frame of `conn`: the data of channels this worker receives, the credits
    /// and releases of channels it sends on. When the connection ends, every channel on it
    /// fails.
    fn serve(
        self: Arc<Self>,
        conn: Arc<Conn>,
        mut reader: FrameReader<TcpStream>,
        id: u64,
        peer: SocketAddr,
    ) {
        let ended = loop {
            let f = match reader.read_frame() {
                Ok(f) => f,
                Err(e) => break e,
            };
            let handled = match f.kind {
                Kind::Credit | Kind::Release => on_sender_frame(&conn, &f),
                _ => self.on_incoming(&conn, f),
            };
            if let Err(e) = handled {
                break e;
            }
        };
        let reason = conn.fail(lost(&ended));
        self.forget(&conn, id, peer, reason);
    }

    /// Drops an ended connection and fails the channels on it.
    fn forget(&self, conn: &Arc<Conn>, id: u64, peer: SocketAddr, reason: String) {
        {
            let mut peers = self.peers.lock();
            peers.live.remove(&id);
            if peers
                .by_peer
                .get(&peer)
                .is_some_and(|c| Arc::ptr_eq(c, conn))
            {
                peers.by_peer.remove(&peer);
            }
        }
        let senders: Vec<_> = conn.senders.lock().drain().map(|(_, c)| c).collect();
        for c in senders {
            c.close((ErrorKind::ConnectionAborted, reason.clone()));
        }
        let channels: Vec<_> = self.channels.lock().values().cloned().collect();
        for c in channels {
            let on_conn = c
                .state
                .lock()
                .conn
                .as_ref()
                .is_some_and(|x| Arc::ptr_eq(x, conn));
            if on_conn {
                c.fail((ErrorKind::ConnectionAborted, reason.clone()), false);
            }
        }
    }
}

/// A credit or release for a channel this worker sends on.
fn on_sender_frame(conn: &Conn, f: &Frame) -> io::Result<()> {
    let Some(c) = conn.senders.lock().get(&f.ch).cloned() else {
        // Credits and releases for channels already dropped here.
        return Ok(());
    };
    if f.kind == Kind::Credit {
        let n = frame::parse_credit(&f.payload)?;
        c.state.lock().credits += n;
        c.cv.notify_one();
    } else {
        c.close((
            ErrorKind::BrokenPipe,
            "the receiver closed the channel".into(),
        ));
    }
    Ok(())
}
