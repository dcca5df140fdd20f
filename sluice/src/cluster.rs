//! The job binary as one process of a job spread over a cluster: it registers with the master,
//! runs the subtasks the master deploys to it (user code stays in this process), exchanges
//! records with the other processes over its data plane, stores its checkpoint state and
//! reports to the master until the master says the job ended.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use sluice_am::job::restore::{self, RestoredStates};
use sluice_am::{Attempt as _, ExecutionPlan, MetricsRegistry};
use sluice_core::{Config, Result, SluiceError};
use sluice_hdfs_backend::SnapshotDir;
use sluice_worker::control::protocol::encode_states;
use sluice_worker::control::{Conn, EpochFence, PROTOCOL_VERSION, ToMaster, ToWorker, WireError};
use sluice_worker::net::DataPlane;
use sluice_worker::task::TaskReport;
use sluice_worker::upload::{CheckpointEvent, CheckpointTargets, spawn_uploaders};

use crate::embedded::{Attempt, DeployArgs, Placement, deploy};
use crate::graph::ResolvedGraph;

/// Set by the process that starts a job binary: `plan` prints the plan, `worker` runs this
/// module; unset (or `embedded`) runs the job on the embedded cluster.
pub const ROLE_ENV: &str = "SLUICE_ROLE";
/// The master's control address, for `worker`.
pub const MASTER_ENV: &str = "SLUICE_MASTER";
pub const JOB_ID_ENV: &str = "SLUICE_JOB_ID";
pub const WORKER_ID_ENV: &str = "SLUICE_WORKER_ID";
/// When `1`, the process exits as soon as its stdin closes: the worker daemon that started
/// it holds the other end, so a daemon killed with SIGKILL takes its job processes along.
pub const EXIT_ON_STDIN_EOF_ENV: &str = "SLUICE_EXIT_ON_STDIN_EOF";

/// How long registration with the master may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the job binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Embedded,
    /// Print the plan as JSON and exit.
    Plan,
    /// Run subtasks for the master at this address.
    Worker {
        master: String,
    },
}

/// The role from `--plan` / `--worker ADDR` on the command line, else from the environment.
pub fn role() -> Role {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--plan") {
        return Role::Plan;
    }
    if let Some(i) = args.iter().position(|a| a == "--worker")
        && let Some(master) = args.get(i + 1)
    {
        return Role::Worker {
            master: master.clone(),
        };
    }
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("plan") => Role::Plan,
        Ok("worker") => Role::Worker {
            master: std::env::var(MASTER_ENV).unwrap_or_default(),
        },
        _ => Role::Embedded,
    }
}

/// The program's arguments without the role flags, for the job's own argument parser.
pub fn job_args() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--plan" => {}
            "--worker" => {
                args.next();
            }
            _ => out.push(a),
        }
    }
    out
}

fn resolve_master(master: &str) -> Result<SocketAddr> {
    master
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            SluiceError::Config(format!(
                "master address '{master}' (--worker or ${MASTER_ENV}) is not host:port"
            ))
        })
}

/// The local address on the route to `master`, where this process's data plane listens: the
/// interface the master and the other workers reach this machine on. (The master's own address,
/// used before, is not local on any other machine, so a job process on a second host could not
/// bind it.) Connecting a UDP socket sends nothing; it only looks the route up.
fn local_address_towards(master: SocketAddr) -> Result<IpAddr> {
    let what = || format!("the local address on the route to the master at {master}");
    let any: IpAddr = if master.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let probe = UdpSocket::bind(SocketAddr::new(any, 0)).map_err(|e| SluiceError::io(what(), e))?;
    probe
        .connect(master)
        .map_err(|e| SluiceError::io(what(), e))?;
    let local = probe.local_addr().map_err(|e| SluiceError::io(what(), e))?;
    Ok(local.ip())
}

/// The attempt this process runs now.
struct Running {
    attempt: u64,
    inner: Attempt,
    cancel: Arc<AtomicBool>,
    /// Reports each ended subtask to the master.
    forwarder: JoinHandle<()>,
}

/// Runs this process's share of the job until the master ends it.
pub(crate) fn run_job_process(resolved: ResolvedGraph, config: Config, master: &str) -> Result<()> {
    let master = resolve_master(master)?;
    let job_id = std::env::var(JOB_ID_ENV)
        .map_err(|_| SluiceError::Config(format!("{JOB_ID_ENV} is not set: which job is this?")))?;
    let worker_id =
        std::env::var(WORKER_ID_ENV).unwrap_or_else(|_| format!("job-{}", std::process::id()));
    if std::env::var(EXIT_ON_STDIN_EOF_ENV).as_deref() == Ok("1") {
        exit_when_stdin_closes();
    }
    let exec = sluice_am::build_execution_plan(&resolved.plan)?;
    sluice_am::job::install_hdfs_client_keys(&config);
    let plane = DataPlane::bind(SocketAddr::new(local_address_towards(master)?, 0))?;
    let (conn, mut reader) = Conn::connect(master, CONNECT_TIMEOUT)?;
    conn.send(&ToMaster::RegisterJobProcess {
        version: PROTOCOL_VERSION,
        job_id: job_id.clone(),
        worker_id: worker_id.clone(),
        data_addr: plane.local_addr(),
        plan_fingerprint: resolved.plan.fingerprint(),
    })?;
    match reader.recv::<ToWorker>()? {
        Some(ToWorker::Registered) => {}
        Some(ToWorker::Refused { reason }) => {
            return Err(SluiceError::Job(format!(
                "the master at {master} refused this process of job {job_id}: {reason}"
            )));
        }
        other => {
            return Err(SluiceError::Internal(format!(
                "the master at {master} answered the registration with {other:?}"
            )));
        }
    }
    reader.set_timeout(Some(config.cluster.heartbeat_timeout))?;
    eprintln!(
        "job process of {job_id} on {worker_id} registered with {master} (data on {})",
        plane.local_addr()
    );

    let config = Arc::new(config);
    let registry = MetricsRegistry::default();
    let targets: CheckpointTargets = Arc::default();
    let (report_tx, report_rx) = crossbeam_channel::unbounded::<TaskReport>();
    let (event_tx, event_rx) = crossbeam_channel::unbounded::<CheckpointEvent>();
    let uploaders = spawn_uploaders(
        report_rx,
        targets.clone(),
        event_tx,
        config.rocksdb_transfer_threads,
    );
    let events_conn = conn.clone();
    let event_forwarder = std::thread::spawn(move || {
        for ev in event_rx.iter() {
            let msg = match ev {
                CheckpointEvent::Acknowledged {
                    checkpoint_id,
                    task,
                    subtask,
                    states,
                    alignment_ms,
                } => ToMaster::CheckpointAcknowledged {
                    checkpoint_id,
                    task,
                    subtask,
                    states: encode_states(&states),
                    alignment_ms,
                },
                CheckpointEvent::Declined {
                    checkpoint_id,
                    task,
                    subtask,
                    reason,
                } => ToMaster::CheckpointDeclined {
                    checkpoint_id,
                    task,
                    subtask,
                    reason,
                },
                CheckpointEvent::SourceEnded {
                    task,
                    subtask,
                    attempt,
                } => ToMaster::SourceEnded {
                    attempt,
                    task,
                    subtask,
                },
            };
            if events_conn.send(&msg).is_err() {
                break;
            }
        }
    });
    let stop_heartbeat = Arc::new(AtomicBool::new(false));
    let current_attempt = Arc::new(Mutex::new(None::<u64>));
    let heartbeat = spawn_heartbeat(
        conn.clone(),
        config.cluster.heartbeat_interval,
        registry.clone(),
        current_attempt.clone(),
        stop_heartbeat.clone(),
    );
    let local_dir = config
        .rocksdb_local_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("sluice-job-{job_id}-{worker_id}"));

    let mut running: Option<Running> = None;
    // The newest leadership epoch seen (its daemon's, then the master's messages'): a message
    // of a deposed master is refused, and the master told so.
    let fence = EpochFence::from_env();
    let who = format!("job process of {job_id} on {worker_id}");
    let outcome = loop {
        let msg = match reader.recv::<ToWorker>() {
            Ok(Some(m)) => m,
            Ok(None) => {
                break Err(SluiceError::Job(format!(
                    "the master at {master} closed the connection"
                )));
            }
            Err(e) => break Err(e),
        };
        if let Err(refusal) = fence.admit(&msg, master, &who) {
            eprintln!("{}", refusal.log);
            let _ = conn.send(&refusal.reply);
            continue;
        }
        match msg {
            ToWorker::Deploy {
                attempt,
                placement,
                restore,
                ..
            } => {
                stop_running(&mut running);
                plane.close_attempts_before(attempt);
                *current_attempt.lock() = Some(attempt);
                let deployed =
                    restore_states(&resolved, &config, &local_dir, restore).and_then(|states| {
                        deploy_attempt(
                            &resolved, &exec, &config, &local_dir, &states, &report_tx, &registry,
                            &plane, attempt, &placement,
                        )
                    });
                match deployed {
                    Ok(inner) => {
                        let cancel = inner.cancel_flag();
                        let done = inner.done().clone();
                        let conn = conn.clone();
                        let forwarder = std::thread::spawn(move || {
                            for (task, subtask, result) in done.iter() {
                                let error = result.as_ref().err().map(WireError::from);
                                let msg = ToMaster::TaskDone {
                                    attempt,
                                    task,
                                    subtask,
                                    error,
                                };
                                if conn.send(&msg).is_err() {
                                    break;
                                }
                            }
                        });
                        running = Some(Running {
                            attempt,
                            inner,
                            cancel,
                            forwarder,
                        });
                    }
                    Err(e) => {
                        // Every subtask this process should have run fails with the reason.
                        let wire = WireError::from(&e);
                        for (task, row) in placement.iter().enumerate() {
                            for (subtask, addr) in row.iter().enumerate() {
                                if *addr == plane.local_addr() {
                                    let _ = conn.send(&ToMaster::TaskDone {
                                        attempt,
                                        task,
                                        subtask,
                                        error: Some(wire.clone()),
                                    });
                                }
                            }
                        }
                    }
                }
            }
            ToWorker::Command {
                attempt,
                sources_only,
                command,
                ..
            } => {
                if let Some(r) = running.as_ref().filter(|r| r.attempt == attempt) {
                    if sources_only {
                        r.inner.send_sources(&command);
                    } else {
                        r.inner.send_all(&command);
                    }
                }
            }
            ToWorker::BeginCheckpoint {
                id,
                dir_url,
                inline_threshold,
                ..
            } => match SnapshotDir::open(&dir_url) {
                Ok(dir) => {
                    targets.lock().insert(id, (dir, inline_threshold));
                }
                Err(e) => eprintln!("checkpoint {id}: cannot open {dir_url}: {e}"),
            },
            ToWorker::EndCheckpoint { id, .. } => {
                targets.lock().remove(&id);
            }
            ToWorker::CancelAttempt { attempt, .. } => {
                if let Some(r) = running.as_ref().filter(|r| r.attempt == attempt) {
                    r.cancel.store(true, Ordering::SeqCst);
                }
            }
            ToWorker::Shutdown => break Ok(()),
            // The master declared this process or its worker lost: stop without a commit.
            ToWorker::Refused { reason } => {
                break Err(SluiceError::Job(format!(
                    "the master at {master} refused job {job_id}: {reason}"
                )));
            }
            ToWorker::Heartbeat | ToWorker::Registered => {}
            other => eprintln!("a job process ignores {other:?}"),
        }
    };
    stop_running(&mut running);
    stop_heartbeat.store(true, Ordering::SeqCst);
    drop(report_tx);
    for u in uploaders {
        let _ = u.join();
    }
    let _ = event_forwarder.join();
    let _ = heartbeat.join();
    conn.close();
    let _ = std::fs::remove_dir_all(&local_dir);
    outcome
}

fn stop_running(running: &mut Option<Running>) {
    if let Some(r) = running.take() {
        // The forwarder reports each subtask's end to the master; it finishes once every
        // task thread has ended.
        r.inner.join();
        let _ = r.forwarder.join();
    }
}

fn restore_states(
    resolved: &ResolvedGraph,
    config: &Config,
    local_dir: &std::path::Path,
    restore: Option<(String, bool)>,
) -> Result<RestoredStates> {
    match restore {
        None => Ok(restore::empty(&resolved.plan)),
        Some((path, allow)) => {
            let local = restore::Local {
                dir: local_dir,
                threads: config.rocksdb_transfer_threads,
            };
            restore::load(&path, &resolved.plan, allow, &local).map(|(states, _)| states)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn deploy_attempt(
    resolved: &ResolvedGraph,
    exec: &ExecutionPlan,
    config: &Arc<Config>,
    local_dir: &std::path::Path,
    states: &RestoredStates,
    reports: &Sender<TaskReport>,
    registry: &MetricsRegistry,
    plane: &DataPlane,
    attempt: u64,
    placement: &[Vec<SocketAddr>],
) -> Result<Attempt> {
    if placement.len() != exec.tasks.len()
        || placement
            .iter()
            .zip(&exec.tasks)
            .any(|(row, t)| row.len() != t.parallelism)
    {
        return Err(SluiceError::Internal(format!(
            "attempt {attempt}: the master's placement does not match this job's tasks"
        )));
    }
    deploy(DeployArgs {
        resolved,
        exec,
        job_name: &resolved.plan.name,
        config: config.clone(),
        local_dir: local_dir.to_path_buf(),
        restore: states,
        reports: reports.clone(),
        registry: registry.clone(),
        attempt,
        placement: Some(Placement {
            plane,
            attempt,
            addrs: placement,
        }),
    })
}

fn spawn_heartbeat(
    conn: Conn,
    interval: Duration,
    registry: MetricsRegistry,
    attempt: Arc<Mutex<Option<u64>>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if conn.send(&ToMaster::Heartbeat).is_err() {
                return;
            }
            if let Some(attempt) = *attempt.lock() {
                let mut per_uid: HashMap<String, sluice_worker::metrics::MetricsSnapshot> =
                    HashMap::new();
                for (uid, m) in registry.lock().iter() {
                    *per_uid.entry(uid.clone()).or_default() += m.snapshot();
                }
                let _ = conn.send(&ToMaster::Metrics {
                    attempt,
                    metrics: per_uid.into_iter().collect(),
                });
            }
            let mut slept = Duration::ZERO;
            while slept < interval && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                slept += Duration::from_millis(50);
            }
        }
    })
}

fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    eprintln!("the worker daemon that started this job process is gone; exiting");
                    std::process::exit(1);
                }
                Ok(_) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A master on loopback is reached from loopback; the address is one this machine can
    /// bind, unlike a master's address on another host.
    #[test]
    fn the_data_plane_listens_on_the_route_to_the_master() -> Result<()> {
        for master in ["127.0.0.1:9", "127.0.0.2:9"] {
            let ip = local_address_towards(master.parse().expect("an address"))?;
            assert!(ip.is_loopback(), "{master}: {ip}");
            DataPlane::bind(SocketAddr::new(ip, 0))?;
        }
        Ok(())
    }
}
