//! The master's view of its cluster: worker daemons and their slots, the job processes they
//! started, and the routes by which task and checkpoint reports reach each job's driver.

pub mod bundles;
mod remote;
mod server;
mod submit;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use sluice_core::config::ClusterConfig;
use sluice_core::{Result, SluiceError};
use sluice_worker::control::Conn;
use sluice_worker::metrics::MetricsSnapshot;
use sluice_worker::upload::CheckpointEvent;

use crate::executor::TaskDone;

pub use bundles::{BundleDir, BundleWriter, StoredBundle};
pub use remote::RemoteExecutor;
pub use submit::RunRequest;

/// A registered worker daemon.
struct WorkerEntry {
    conn: Conn,
    slots: usize,
    host: String,
}

/// A job process registered by the daemon `worker_id`.
struct ProcessEntry {
    conn: Conn,
    data_addr: SocketAddr,
    /// Tells this registration from an earlier or later process of the same job and worker.
    serial: u64,
}

/// Where the reports of a job's current attempt go.
struct Route {
    attempt: u64,
    done: Sender<TaskDone>,
    /// Subtasks that have not reported their end: (task, subtask) → worker id.
    pending: HashMap<(usize, usize), String>,
}

impl JobEntry {
    /// Publishes the sums of the workers' latest counters, per operator uid.
    fn publish_metrics(&self) {
        let mut sums: BTreeMap<&str, MetricsSnapshot> = BTreeMap::new();
        for list in self.metrics.values() {
            for (uid, m) in list {
                *sums.entry(uid.as_str()).or_default() += *m;
            }
        }
        let mut registry = self.registry.lock();
        for (uid, m) in sums {
            let slot = match registry.iter().find(|(u, _)| u == uid) {
                Some((_, slot)) => slot.clone(),
                None => {
                    let slot = sluice_worker::metrics::OperatorMetrics::new();
                    registry.push((uid.to_string(), slot.clone()));
                    slot
                }
            };
            slot.set(m);
        }
    }
}

/// A registered worker, as `GET /taskmanagers` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSummary {
    pub id: String,
    pub host: String,
    pub slots: usize,
    /// Slots no running subtask occupies.
    pub free_slots: usize,
}

/// What the master needs to (re)start a job's processes, and to route their reports.
struct JobEntry {
    fingerprint: u64,
    bundle: Arc<StoredBundle>,
    args: Vec<String>,
    config_lines: Vec<String>,
    processes: BTreeMap<String, ProcessEntry>,
    route: Option<Route>,
    events: Sender<CheckpointEvent>,
    /// Latest counters per worker id.
    metrics: HashMap<String, Vec<(String, MetricsSnapshot)>>,
    /// Their sums per operator uid, where the job's driver and REST API read them.
    registry: crate::MetricsRegistry,
    /// How often each worker's process was started, to stop relaunching a process that
    /// keeps dying.
    launches: HashMap<String, u32>,
    /// The leadership epoch its launches carry.
    epoch: i64,
}

#[derive(Default)]
struct State {
    workers: BTreeMap<String, WorkerEntry>,
    jobs: HashMap<String, JobEntry>,
    /// The last [`ProcessEntry::serial`] handed out.
    serials: u64,
}

/// The master's cluster: shared by the connection threads, the executors and the REST API.
pub struct Cluster {
    config: ClusterConfig,
    addr: SocketAddr,
    state: Mutex<State>,
    /// Signalled whenever a process registers or goes away.
    changed: Condvar,
    /// Uploaded bundles by id (`POST /jars/upload`), on disk in `bundles`.
    uploads: Mutex<HashMap<String, Arc<StoredBundle>>>,
    bundles: BundleDir,
    /// With ZooKeeper high availability: this master's leadership and the job store.
    ha: std::sync::OnceLock<Arc<crate::ha::Ha>>,
}

/// Tells a fenced job process why (in the message every version reads, for its log) and
/// closes its connection. On a thread of its own: a stopped process's full socket buffer
/// would block the send, and the caller may hold up a job's restart.
fn fence(conn: Conn, reason: String) {
    let on_error = conn.clone();
    let send = move || {
        let _ = conn.send(&sluice_worker::control::ToWorker::Refused { reason });
        conn.close();
    };
    let spawned = std::thread::Builder::new()
        .name("control-fence".into())
        .stack_size(256 << 10)
        .spawn(send);
    if let Err(e) = spawned {
        eprintln!("cannot start a thread to tell a fenced job process why: {e}");
        on_error.close();
    }
}

/// How often a job process is started on one worker before the master gives up on it.
const MAX_LAUNCHES_PER_WORKER: u32 = 3;

impl Cluster {
    /// Binds the control address (`jobmanager.rpc.address`:`port`; port 0 picks one) and
    /// starts accepting workers and the heartbeat.
    pub fn start(config: ClusterConfig) -> Result<Arc<Cluster>> {
        let bind = format!("{}:{}", config.rpc_address, config.rpc_port);
        let listener = std::net::TcpListener::bind(&bind)
            .map_err(|e| SluiceError::io(format!("master control address {bind}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| SluiceError::io(format!("master control address {bind}"), e))?;
        let bundles = BundleDir::open(config.upload_dir.as_deref())?;
        let cluster = Arc::new(Cluster {
            config,
            addr,
            state: Mutex::default(),
            changed: Condvar::new(),
            uploads: Mutex::default(),
            bundles,
            ha: std::sync::OnceLock::new(),
        });
        server::spawn_accept(cluster.clone(), listener);
        server::spawn_heartbeat(cluster.clone());
        Ok(cluster)
    }

    /// Makes this master keep submitted jobs in the HA job store and check its leadership
    /// before it deploys a job or completes a checkpoint. Set once, before any job runs.
    pub fn enable_ha(&self, ha: Arc<crate::ha::Ha>) {
        let _ = self.ha.set(ha);
    }

    pub(crate) fn ha(&self) -> Option<&Arc<crate::ha::Ha>> {
        self.ha.get()
    }

    /// `Err` when HA is on and this master may not act as leader now.
    pub(crate) fn check_leader(&self, what: &str) -> Result<()> {
        match self.ha() {
            Some(ha) => ha.leadership.check(what),
            None => Ok(()),
        }
    }

    /// The leadership epoch every fenced message to workers carries: the leader's latch
    /// sequence with HA, 0 without.
    pub(crate) fn epoch(&self) -> i64 {
        self.ha().map_or(0, |ha| ha.leadership.epoch())
    }

    /// A worker refused `what` from this master as carrying a stale epoch: a newer leader
    /// exists, so this master is deposed (with HA, leadership is lost: `on_lost` runs).
    fn stale_epoch(&self, by: &str, what: &str, epoch: i64, highest: i64) -> String {
        let reason = format!(
            "{by} refused {what}: this master's leadership epoch {epoch} is older than epoch \
             {highest}, which the worker has seen"
        );
        eprintln!("sluice-am: {reason}");
        if let Some(ha) = self.ha() {
            ha.leadership.depose(&reason);
        }
        reason
    }

    /// The control-plane address workers connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// (registered workers, total slots).
    pub fn capacity(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.workers.len(), st.workers.values().map(|w| w.slots).sum())
    }

    /// (worker id, host, slots) of every registered worker.
    pub fn workers(&self) -> Vec<WorkerSummary> {
        let st = self.state.lock();
        // Slot sharing: subtask `s` of every task runs in slot `s`, so a worker's used slots
        // are the distinct subtask indexes it runs.
        let mut used: HashMap<&str, std::collections::HashSet<usize>> = HashMap::new();
        for route in st.jobs.values().filter_map(|j| j.route.as_ref()) {
            for ((_, s), w) in &route.pending {
                used.entry(w.as_str()).or_default().insert(*s);
            }
        }
        st.workers
            .iter()
            .map(|(id, w)| WorkerSummary {
                id: id.clone(),
                host: w.host.clone(),
                slots: w.slots,
                free_slots: w
                    .slots
                    .saturating_sub(used.get(id.as_str()).map_or(0, |u| u.len())),
            })
            .collect()
    }

    /// Whether registration `serial` is still the job's process on `worker_id` (it was not
    /// fenced).
    fn is_registered(&self, job_id: &str, worker_id: &str, serial: u64) -> bool {
        self.state
            .lock()
            .jobs
            .get(job_id)
            .and_then(|j| j.processes.get(worker_id))
            .is_some_and(|p| p.serial == serial)
    }

    /// A job process is gone, or its worker is: subtasks it had not finished fail, naming the
    /// worker. The process is fenced: its control connection is closed, which makes a process
    /// that still runs (its worker was only silent) cancel its subtasks and exit, and nothing
    /// it sent after counts. `serial` names one registration; when that one was fenced or
    /// replaced already, nothing happens.
    fn process_lost(&self, job_id: &str, worker_id: &str, serial: Option<u64>, reason: &str) {
        let mut st = self.state.lock();
        let Some(job) = st.jobs.get_mut(job_id) else {
            return;
        };
        if let Some(serial) = serial
            && job
                .processes
                .get(worker_id)
                .is_none_or(|p| p.serial != serial)
        {
            return;
        }
        let fenced = job.processes.remove(worker_id);
        job.metrics.remove(worker_id);
        if let Some(route) = &mut job.route {
            let lost: Vec<(usize, usize)> = route
                .pending
                .iter()
                .filter(|(_, w)| w.as_str() == worker_id)
                .map(|(k, _)| *k)
                .collect();
            for (task, subtask) in lost {
                route.pending.remove(&(task, subtask));
                let _ = route.done.send((
                    task,
                    subtask,
                    Err(SluiceError::Job(format!(
                        "worker {worker_id} was lost: {reason}"
                    ))),
                ));
            }
        }
        drop(st);
        if let Some(p) = fenced {
            fence(
                p.conn,
                format!("its process on worker {worker_id} was fenced: {reason}"),
            );
        }
        self.changed.notify_all();
    }

    /// A worker daemon is gone, and with it every job process it started.
    fn worker_lost(&self, worker_id: &str, reason: &str) {
        let jobs: Vec<String> = {
            let mut st = self.state.lock();
            st.workers.remove(worker_id);
            st.jobs
                .iter()
                .filter(|(_, j)| j.processes.contains_key(worker_id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        eprintln!("worker {worker_id} lost: {reason}");
        for job in jobs {
            self.process_lost(&job, worker_id, None, reason);
        }
        self.changed.notify_all();
    }
}
