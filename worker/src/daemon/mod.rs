//! The worker daemon (`sluice-worker`): offers task slots to the master, heartbeats, and starts
//! and kills the job processes the master asks for.

mod jobs;
pub mod leader;
pub mod settings;
mod signals;
pub mod unpack;
pub mod zk;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use crossbeam_channel::RecvTimeoutError;
use sluice_core::{Result, SluiceError};

use crate::control::{Conn, ConnReader, EpochFence, PROTOCOL_VERSION, ToMaster, ToWorker};
use jobs::{JobEnv, Jobs};

pub use jobs::{describe, env};
pub use settings::{LOG_DIR_ENV, Settings, keys};
pub use signals::on_termination;
pub use unpack::{Unpack, bare_executable};

/// A daemon registered with its master.
pub struct Daemon {
    settings: Settings,
    conn: Conn,
    reader: ConnReader,
    jobs: Arc<Jobs>,
    fence: Arc<EpochFence>,
}

/// Why [`Daemon::serve`] returned. Either way no job process of the daemon is left running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The master sent `Shutdown`.
    Shutdown,
    /// The master closed the connection, the connection broke, or the master was silent for
    /// `heartbeat.timeout`; `killed` job processes were killed.
    MasterLost { reason: String, killed: usize },
}

/// Stops a daemon's job processes from another thread, e.g. on a signal.
#[derive(Clone)]
pub struct Stopper {
    jobs: Arc<Jobs>,
}

impl Stopper {
    /// Kills every job process of the daemon, makes it start no more, and removes its work
    /// directory; returns how many processes were killed.
    pub fn stop(&self) -> usize {
        self.jobs.kill_all()
    }
}

impl Daemon {
    /// Connects to the master at `settings.master_addr` and registers this daemon's slots.
    /// Fails when the master cannot be reached, refuses the daemon (the error carries its
    /// reason), or closes the connection or stays silent for `heartbeat.timeout` before it
    /// answers. `unpack` turns the bundles of later launches into programs.
    pub fn register(settings: Settings, unpack: Unpack) -> Result<Daemon> {
        Self::register_fenced(settings, unpack, EpochFence::new(0))
    }

    /// [`Daemon::register`] with the worker's `fence`: the newest leadership epoch it has
    /// seen, kept across masters. Messages of an older epoch are refused (see
    /// [`Daemon::serve`]); the daemon's job processes start with the fence's epoch.
    pub fn register_fenced(
        settings: Settings,
        unpack: Unpack,
        fence: Arc<EpochFence>,
    ) -> Result<Daemon> {
        let addr = settings.master_addr;
        let stream = TcpStream::connect_timeout(&addr, settings.heartbeat_timeout)
            .map_err(|e| SluiceError::io(format!("the master at {addr}"), e))?;
        let host = match &settings.host {
            Some(h) => h.clone(),
            None => stream
                .local_addr()
                .map_err(|e| SluiceError::io(format!("the connection to {addr}"), e))?
                .ip()
                .to_string(),
        };
        let (conn, mut reader) = Conn::from_stream(stream)?;
        reader.set_timeout(Some(settings.heartbeat_timeout))?;
        conn.send(&ToMaster::RegisterWorker {
            version: PROTOCOL_VERSION,
            worker_id: settings.worker_id.clone(),
            slots: settings.slots,
            host,
        })?;
        loop {
            match reader.recv::<ToWorker>()? {
                Some(ToWorker::Registered) => break,
                Some(ToWorker::Heartbeat) => {}
                Some(ToWorker::Refused { reason }) => {
                    return Err(SluiceError::Job(format!(
                        "the master at {addr} refused worker {}: {reason}",
                        settings.worker_id
                    )));
                }
                Some(other) => {
                    return Err(SluiceError::Internal(format!(
                        "the master at {addr} answered the registration with {}",
                        other.name()
                    )));
                }
                None => {
                    return Err(SluiceError::Job(format!(
                        "the master at {addr} closed the connection before it answered the \
                         registration of worker {}",
                        settings.worker_id
                    )));
                }
            }
        }
        let jobs = Jobs::new(
            JobEnv {
                worker_id: settings.worker_id.clone(),
                master: addr,
                slots: settings.slots,
                work_dir: settings.work_dir.clone(),
                log_dir: settings.log_dir.clone(),
                unpack,
                fence: fence.clone(),
            },
            conn.clone(),
        );
        Ok(Daemon {
            settings,
            conn,
            reader,
            jobs,
            fence,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The master's control address.
    pub fn master(&self) -> SocketAddr {
        self.conn.peer()
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            jobs: Arc::clone(&self.jobs),
        }
    }

    /// The worker's fence: the newest leadership epoch it has seen.
    pub fn fence(&self) -> &Arc<EpochFence> {
        &self.fence
    }

    /// Heartbeats and carries out the master's messages until the master sends `Shutdown` or
    /// is lost: it closes the connection, the connection breaks, it sends nothing for
    /// `heartbeat.timeout`, or it turns out deposed: a message of it carries a leadership
    /// epoch older than the newest this worker has seen (the message is refused, the master
    /// told so, and the daemon leaves it for the current leader). Before returning, kills
    /// every job process and removes the work directory.
    pub fn serve(mut self) -> Stopped {
        let (stop_heartbeats, stopped) = crossbeam_channel::bounded::<()>(0);
        let conn = self.conn.clone();
        let interval = self.settings.heartbeat_interval;
        let heartbeats = std::thread::Builder::new()
            .name("heartbeat".into())
            .stack_size(256 << 10)
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    if conn.send(&ToMaster::Heartbeat).is_err() {
                        // Wakes the control loop, which reports the loss.
                        conn.close();
                        return;
                    }
                }
            });
        let outcome = match heartbeats {
            Ok(_) => self.control_loop(),
            Err(e) => Err(format!("cannot start sending heartbeats: {e}")),
        };
        drop(stop_heartbeats);
        let killed = self.jobs.kill_all();
        self.conn.close();
        match outcome {
            Ok(()) => Stopped::Shutdown,
            Err(reason) => Stopped::MasterLost { reason, killed },
        }
    }

    /// `Ok` on `Shutdown`; `Err` says how the master was lost.
    fn control_loop(&mut self) -> std::result::Result<(), String> {
        loop {
            let msg = match self.reader.recv::<ToWorker>() {
                Ok(Some(m)) => m,
                Ok(None) => return Err("it closed the connection".into()),
                Err(e) => return Err(e.to_string()),
            };
            let who = format!("sluice-worker {}", self.settings.worker_id);
            if let Err(refusal) = self.fence.admit(&msg, self.conn.peer(), &who) {
                eprintln!("{}", refusal.log);
                let _ = self.conn.send(&refusal.reply);
                return Err(format!("it is deposed ({})", refusal.log));
            }
            match msg {
                ToWorker::Heartbeat | ToWorker::Registered => {}
                ToWorker::LaunchJob {
                    job_id,
                    bundle,
                    args,
                    config,
                    ..
                } => self.jobs.launch(&job_id, bundle, &args, &config),
                ToWorker::KillJob { job_id, .. } => {
                    self.jobs.kill(&job_id);
                }
                ToWorker::Shutdown => return Ok(()),
                ToWorker::Refused { reason } => {
                    return Err(format!("it refused this worker: {reason}"));
                }
                other => eprintln!(
                    "sluice-worker {}: ignoring {} (a message for job processes)",
                    self.settings.worker_id,
                    other.name()
                ),
            }
        }
    }
}
