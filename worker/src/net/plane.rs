//! One data plane per worker process: it keeps one connection per peer worker, dialled by
//! either side (see [`super::peers`]), and multiplexes every channel of both directions over
//! it with per-channel queues and credits, so no channel can stall another or grow without
//! bound.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use sluice_core::{Result, SluiceError};

use super::channel::{InChannel, NetReceiver, NetSender, OutChannel};
use super::conn::{Conn, protocol_error};
use super::frame::{self, Frame, Kind};
use super::peers::Peers;
use super::{ChannelId, INITIAL_CREDITS, channel_error};

/// State of a data plane shared by its handles, channels and threads.
pub(super) struct Shared {
    local: SocketAddr,
    closed: AtomicBool,
    /// Channels of attempts below this are gone; their frames are dropped on arrival.
    min_attempt: AtomicU64,
    /// The connections to other workers, one per pair, and the dials under way.
    pub(super) peers: Mutex<Peers>,
    /// Signalled when a dial ends or a connection to a peer is set up.
    pub(super) peers_changed: Condvar,
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
            peers: Mutex::new(Peers::default()),
            peers_changed: Condvar::new(),
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
        Ok(NetReceiver::new(shared.clone(), chan, ch))
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
                let _ignored = conn.write(Kind::Release, &ch, &[]);
            }
        }
        let conns = shared.live_connections();
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
        let conns = shared.take_connections();
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
    pub(super) fn local(&self) -> SocketAddr {
        self.local
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Handles one frame from a sending worker. Never blocks on a channel: a data frame always
    /// fits its queue because the sender spent a credit on it.
    pub(super) fn on_incoming(&self, conn: &Arc<Conn>, f: Frame) -> io::Result<()> {
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
                st.push(f.payload)
                    .map_err(|e| protocol_error(format!("{e} on {}", f.ch)))?;
            }
            Kind::Close => st.sender_closed(),
            Kind::Hello | Kind::Credit | Kind::Release => {
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
        self.handle.shared.connection_counts()
    }
}
