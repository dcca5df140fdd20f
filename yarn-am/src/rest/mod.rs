//! The REST API of a job process, with Flink's paths, JSON field names and status codes (under
//! both `/` and `/v1/`), so the tools and habits of Flink users, and `sluice list`, `savepoint`,
//! `stop`, `cancel` and `checkpoints`, work against it.
//!
//! `StreamEnv::execute` and `execute_async` start it when `rest.port` is configured (0 picks a
//! free port) or `SLUICE_REST_PORT` is set (it wins, as it comes from `sluice run`). It listens
//! on `rest.bind-address` (default: `rest.address`, default `127.0.0.1`), prints
//! `REST API at http://<rest.address>:<port>` to stderr, and serves every job of the process
//! until the process exits; `execute` waits `SLUICE_REST_LINGER_MS` after the job ended, so a
//! client can still read the final state (unset: until clients read the outcome of the
//! savepoints they triggered, at most 10 s). One server per process: jobs started later are
//! registered with the first server, whatever their own `rest.port`.
//!
//! A job registered here is held through a [`JobHandle`](crate::JobHandle), so dropping its `JobClient` no
//! longer cancels it: cancel it explicitly (or through `PATCH /jobs/:id?mode=cancel`).

pub mod conf;
pub(crate) mod dispatcher;
pub(crate) mod handlers;
mod json;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_core::{Config, JobPlan, Result, SluiceError};

pub use dispatcher::{Dispatcher, Operation};

use crate::job::JobHandle;

pub const REST_PORT_KEY: &str = "rest.port";
pub const REST_ADDRESS_KEY: &str = "rest.address";
pub const REST_BIND_ADDRESS_KEY: &str = "rest.bind-address";
/// Port for the REST API, set by `sluice run --rest-port`; overrides `rest.port`.
pub const REST_PORT_ENV: &str = "SLUICE_REST_PORT";
/// How long `StreamEnv::execute` keeps serving after the job ended, in milliseconds.
pub const REST_LINGER_ENV: &str = "SLUICE_REST_LINGER_MS";
/// A file to which every registered job appends `<job id> <REST URL>`: how `sluice run`
/// learns the job id and the port (possibly a free one picked by the system) of its child.
pub const REST_ANNOUNCE_ENV: &str = "SLUICE_REST_ANNOUNCE";

/// The process's REST server, once started.
static SERVER: Mutex<Option<Arc<RestServer>>> = Mutex::new(None);

/// A running REST server and the dispatcher behind it.
pub struct RestServer {
    local_addr: SocketAddr,
    url: String,
    dispatcher: Arc<Dispatcher>,
}

impl RestServer {
    /// Binds `bind_host:port` (port 0: any free one) and serves `dispatcher` on a thread of
    /// its own; `advertised_host` is the host clients are told to use.
    pub fn start(
        dispatcher: Arc<Dispatcher>,
        bind_host: &str,
        port: u16,
        advertised_host: &str,
    ) -> Result<RestServer> {
        let listener = std::net::TcpListener::bind((bind_host, port))
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| SluiceError::io(format!("REST API address {bind_host}:{port}"), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| SluiceError::io(format!("REST API address {bind_host}:{port}"), e))?;
        let router = handlers::router(dispatcher.clone());
        // A runtime of its own: the job threads are plain threads, and the handlers never
        // block (savepoints run on threads of their own), so one thread serves everything.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SluiceError::Internal(format!("cannot start the REST runtime: {e}")))?;
        std::thread::Builder::new()
            .name("rest-api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            if let Err(e) = axum::serve(l, router).await {
                                eprintln!("REST API at {local_addr} stopped: {e}");
                            }
                        }
                        Err(e) => eprintln!("REST API at {local_addr} cannot listen: {e}"),
                    }
                })
            })
            .map_err(|e| SluiceError::Internal(format!("cannot start the REST thread: {e}")))?;
        Ok(RestServer {
            local_addr,
            url: format!("http://{advertised_host}:{}", local_addr.port()),
            dispatcher,
        })
    }

    /// The address the server is bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<rest.address>:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Makes a just-submitted job visible over REST and announces it to `sluice run`.
    pub fn register(&self, job: JobHandle, plan: JobPlan, config: &Config) -> Result<()> {
        let job_id = job.job_id().to_string();
        let job_name = plan.name.clone();
        self.dispatcher.add_job(job, &job_name, plan, config);
        if let Some(path) = std::env::var_os(REST_ANNOUNCE_ENV) {
            let line = format!("{job_id} {}\n", self.url);
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(line.as_bytes()))
                .map_err(|e| {
                    SluiceError::io(format!("{REST_ANNOUNCE_ENV} file {}", path.display()), e)
                })?;
        }
        Ok(())
    }
}

/// The REST server of this process, if one was started.
pub fn running() -> Option<Arc<RestServer>> {
    SERVER.lock().clone()
}

/// The port asked for: `SLUICE_REST_PORT`, else `rest.port`, else none (no REST API).
fn configured_port(config: &Config) -> Result<Option<u16>> {
    let (source, value) = match std::env::var(REST_PORT_ENV) {
        Ok(v) if !v.trim().is_empty() => (REST_PORT_ENV, v),
        _ => match config.get_raw(REST_PORT_KEY) {
            Some(v) => (REST_PORT_KEY, v.to_string()),
            None => return Ok(None),
        },
    };
    value.trim().parse::<u16>().map(Some).map_err(|_| {
        SluiceError::Config(format!(
            "{source}: '{value}' is not a port number (0-65535)"
        ))
    })
}

/// Starts the process's REST server if the configuration asks for one (once; later calls
/// return the running server).
pub fn start_if_configured(config: &Config) -> Result<Option<Arc<RestServer>>> {
    let mut server = SERVER.lock();
    if let Some(s) = server.as_ref() {
        return Ok(Some(s.clone()));
    }
    let Some(port) = configured_port(config)? else {
        return Ok(None);
    };
    let advertised = config.get_raw(REST_ADDRESS_KEY).unwrap_or("127.0.0.1");
    let bind = config.get_raw(REST_BIND_ADDRESS_KEY).unwrap_or(advertised);
    let s = Arc::new(RestServer::start(
        Arc::new(Dispatcher::default()),
        bind,
        port,
        advertised,
    )?);
    eprintln!("REST API at {}", s.url());
    *server = Some(s.clone());
    Ok(Some(s))
}

/// After a job ended, before the process exits: waits `SLUICE_REST_LINGER_MS` if set, so a
/// client can read the final state; else only until every triggered savepoint's outcome was
/// read (at most [`UNREAD_WAIT`]), so a plain job exits at once but `sluice stop` still
/// learns where its savepoint went.
pub fn linger() {
    let Some(server) = running() else {
        return;
    };
    if let Some(ms) = std::env::var(REST_LINGER_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms));
        return;
    }
    let deadline = std::time::Instant::now() + UNREAD_WAIT;
    while server.dispatcher.has_unread_operations() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The longest a process waits for clients to read the outcome of their operations.
pub const UNREAD_WAIT: Duration = Duration::from_secs(10);
