//! The master's end of the control connections: registration (versions and job fingerprints
//! checked), reports routed to the job they belong to, heartbeats both ways, and a peer
//! silent past `heartbeat.timeout` or disconnected declared lost.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use sluice_worker::control::protocol::{decode_states, registration_version};
use sluice_worker::control::{Conn, ConnReader, PROTOCOL_VERSION, ToMaster, ToWorker};
use sluice_worker::upload::CheckpointEvent;

use super::{Cluster, ProcessEntry, WorkerEntry};

pub(super) fn spawn_accept(cluster: Arc<Cluster>, listener: TcpListener) {
    std::thread::Builder::new()
        .name("control-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let cluster = cluster.clone();
                let _ = std::thread::Builder::new()
                    .name("control-conn".into())
                    .spawn(move || {
                        if let Ok((conn, reader)) = Conn::from_stream(stream) {
                            serve(&cluster, conn, reader);
                        }
                    });
            }
        })
        .expect("the control accept thread starts");
}

/// Sends a heartbeat to every peer each `heartbeat.interval`.
pub(super) fn spawn_heartbeat(cluster: Arc<Cluster>) {
    std::thread::Builder::new()
        .name("control-heartbeat".into())
        .spawn(move || {
            loop {
                std::thread::sleep(cluster.config.heartbeat_interval);
                let conns: Vec<Conn> = {
                    let st = cluster.state.lock();
                    st.workers
                        .values()
                        .map(|w| w.conn.clone())
                        .chain(
                            st.jobs
                                .values()
                                .flat_map(|j| j.processes.values().map(|p| p.conn.clone())),
                        )
                        .collect()
                };
                // A peer that cannot be written to is found out by its reader thread.
                for c in conns {
                    let _ = c.send(&ToWorker::Heartbeat);
                }
            }
        })
        .expect("the heartbeat thread starts");
}

fn refuse(conn: &Conn, reason: String) {
    eprintln!("refused {}: {reason}", conn.peer());
    let _ = conn.send(&ToWorker::Refused { reason });
    conn.close();
}

fn serve(cluster: &Arc<Cluster>, conn: Conn, mut reader: ConnReader) {
    let timeout: Duration = cluster.config.heartbeat_timeout;
    if reader.set_timeout(Some(timeout)).is_err() {
        return;
    }
    let frame = match reader.recv_frame() {
        Ok(Some(frame)) => frame,
        Ok(None) | Err(_) => return,
    };
    let msg = match reader.decode::<ToMaster>(&frame) {
        Ok(msg) => msg,
        // A peer of another version may not even encode its registration as this master
        // decodes it; its version is still where every version puts it.
        Err(e) => {
            let reason = match registration_version(&frame) {
                Some(v) if v != PROTOCOL_VERSION => format!(
                    "{} speaks control protocol version {v}; this master speaks version \
                     {PROTOCOL_VERSION}",
                    conn.peer()
                ),
                _ => format!("its registration does not decode: {e}"),
            };
            return refuse(&conn, reason);
        }
    };
    match msg {
        ToMaster::RegisterWorker {
            version,
            worker_id,
            slots,
            host,
        } => {
            if version != PROTOCOL_VERSION {
                return refuse(
                    &conn,
                    format!(
                        "worker {worker_id} at {host} speaks control protocol version \
                         {version}; this master speaks version {PROTOCOL_VERSION}"
                    ),
                );
            }
            serve_worker(cluster, conn, reader, worker_id, slots, host)
        }
        ToMaster::RegisterJobProcess {
            version,
            job_id,
            worker_id,
            data_addr,
            plan_fingerprint,
        } => {
            if version != PROTOCOL_VERSION {
                return refuse(
                    &conn,
                    format!(
                        "the process of job {job_id} on worker {worker_id} speaks control \
                         protocol version {version}; this master speaks version \
                         {PROTOCOL_VERSION}"
                    ),
                );
            }
            // A process still registered for this job and worker is an earlier one: its
            // subtasks fail and it is fenced before this one takes its place.
            let earlier = cluster
                .state
                .lock()
                .jobs
                .get(&job_id)
                .and_then(|j| j.processes.get(&worker_id))
                .map(|p| p.serial);
            if let Some(earlier) = earlier {
                cluster.process_lost(
                    &job_id,
                    &worker_id,
                    Some(earlier),
                    "a new process of the job registered on its worker",
                );
            }
            let serial;
            {
                let mut st = cluster.state.lock();
                let Some(job) = st.jobs.get_mut(&job_id) else {
                    drop(st);
                    return refuse(&conn, format!("job {job_id} is not running on this master"));
                };
                if job.fingerprint != plan_fingerprint {
                    drop(st);
                    return refuse(
                        &conn,
                        format!(
                            "the process on {worker_id} built a different job graph than the \
                             plan job {job_id} was submitted with (was the binary changed?)"
                        ),
                    );
                }
                st.serials += 1;
                serial = st.serials;
                let job = st.jobs.get_mut(&job_id).expect("looked up above");
                if let Some(old) = job.processes.insert(
                    worker_id.clone(),
                    ProcessEntry {
                        conn: conn.clone(),
                        data_addr,
                        serial,
                    },
                ) {
                    // Registered in the moment since the check above.
                    old.conn.close();
                }
            }
            if conn.send(&ToWorker::Registered).is_err() {
                cluster.process_lost(
                    &job_id,
                    &worker_id,
                    Some(serial),
                    "it went away while registering",
                );
                return;
            }
            cluster.changed.notify_all();
            serve_process(cluster, reader, job_id, worker_id, serial)
        }
        other => refuse(&conn, format!("expected a registration, got {other:?}")),
    }
}

fn serve_worker(
    cluster: &Arc<Cluster>,
    conn: Conn,
    mut reader: ConnReader,
    worker_id: String,
    slots: usize,
    host: String,
) {
    // A master that does not lead (now) starts no job process; the worker looks for the
    // leader again.
    if let Err(e) = cluster.check_leader(&format!("register worker {worker_id}")) {
        return refuse(&conn, e.to_string());
    }
    let launches: Vec<super::submit::Launch> = {
        let mut st = cluster.state.lock();
        if st.workers.contains_key(&worker_id) {
            drop(st);
            return refuse(
                &conn,
                format!("a worker with id {worker_id} is already registered"),
            );
        }
        st.workers.insert(
            worker_id.clone(),
            WorkerEntry {
                conn: conn.clone(),
                slots,
                host: host.clone(),
            },
        );
        // A worker joining a running cluster starts a process for every running job, so a
        // job waiting for slots after a loss can use it.
        st.jobs
            .iter_mut()
            .map(|(id, j)| {
                *j.launches.entry(worker_id.clone()).or_default() += 1;
                j.launch(id)
            })
            .collect()
    };
    if conn.send(&ToWorker::Registered).is_err() {
        cluster.worker_lost(&worker_id, "it went away while registering");
        return;
    }
    eprintln!("worker {worker_id} at {host} registered with {slots} slot(s)");
    for launch in launches {
        if let Err(e) = launch.send(&conn) {
            eprintln!("worker {worker_id}: starting a job process: {e}");
        }
    }
    cluster.changed.notify_all();
    let reason = loop {
        match reader.recv::<ToMaster>() {
            Ok(Some(ToMaster::Heartbeat)) => {}
            Ok(Some(ToMaster::JobProcessExited { job_id, reason })) => {
                cluster.process_lost(
                    &job_id,
                    &worker_id,
                    None,
                    &format!("its process exited ({reason})"),
                );
                relaunch(cluster, &conn, &job_id, &worker_id);
            }
            Ok(Some(ToMaster::StaleEpoch {
                what,
                epoch,
                highest,
            })) => {
                break cluster.stale_epoch(&format!("worker {worker_id}"), &what, epoch, highest);
            }
            Ok(Some(other)) => eprintln!("worker {worker_id} sent an unexpected {other:?}"),
            Ok(None) => break "its connection closed".to_string(),
            Err(e) => break e.to_string(),
        }
    };
    conn.close();
    cluster.worker_lost(&worker_id, &reason);
}

/// Starts the job's process on a worker again, unless it keeps dying.
fn relaunch(cluster: &Cluster, conn: &Conn, job_id: &str, worker_id: &str) {
    let msg = {
        let mut st = cluster.state.lock();
        let Some(job) = st.jobs.get_mut(job_id) else {
            return;
        };
        let n = job.launches.entry(worker_id.to_string()).or_default();
        if *n >= super::MAX_LAUNCHES_PER_WORKER {
            eprintln!("job {job_id}: not starting its process on {worker_id} again ({n} starts)");
            return;
        }
        *n += 1;
        job.launch(job_id)
    };
    if let Err(e) = msg.send(conn) {
        eprintln!("job {job_id}: starting its process on {worker_id} again: {e}");
    }
}

fn serve_process(
    cluster: &Arc<Cluster>,
    mut reader: ConnReader,
    job_id: String,
    worker_id: String,
    serial: u64,
) {
    let reason = loop {
        let msg = match reader.recv::<ToMaster>() {
            Ok(Some(m)) => m,
            Ok(None) => break "its connection closed".to_string(),
            Err(e) => break e.to_string(),
        };
        // A fenced process (its worker was lost) may have sent more before it saw its
        // connection close; none of that counts.
        if !cluster.is_registered(&job_id, &worker_id, serial) {
            return;
        }
        match msg {
            ToMaster::Heartbeat => {}
            ToMaster::TaskDone {
                attempt,
                task,
                subtask,
                error,
            } => {
                let mut st = cluster.state.lock();
                if let Some(route) = st
                    .jobs
                    .get_mut(&job_id)
                    .and_then(|j| j.route.as_mut())
                    .filter(|r| r.attempt == attempt)
                    && route.pending.remove(&(task, subtask)).is_some()
                {
                    let result = match error {
                        None => Ok(()),
                        Some(e) => Err(e.into()),
                    };
                    let _ = route.done.send((task, subtask, result));
                }
            }
            ToMaster::CheckpointAcknowledged {
                checkpoint_id,
                task,
                subtask,
                states,
                alignment_ms,
            } => {
                let ev = match decode_states(&states) {
                    Ok(states) => CheckpointEvent::Acknowledged {
                        checkpoint_id,
                        task,
                        subtask,
                        states,
                        alignment_ms,
                    },
                    Err(reason) => CheckpointEvent::Declined {
                        checkpoint_id,
                        task,
                        subtask,
                        reason,
                    },
                };
                send_event(cluster, &job_id, ev)
            }
            ToMaster::CheckpointDeclined {
                checkpoint_id,
                task,
                subtask,
                reason,
            } => send_event(
                cluster,
                &job_id,
                CheckpointEvent::Declined {
                    checkpoint_id,
                    task,
                    subtask,
                    reason,
                },
            ),
            ToMaster::SourceEnded {
                attempt,
                task,
                subtask,
            } => send_event(
                cluster,
                &job_id,
                CheckpointEvent::SourceEnded {
                    task,
                    subtask,
                    attempt,
                },
            ),
            ToMaster::Metrics { metrics, .. } => {
                if let Some(job) = cluster.state.lock().jobs.get_mut(&job_id) {
                    job.metrics.insert(worker_id.clone(), metrics);
                    job.publish_metrics();
                }
            }
            ToMaster::StaleEpoch {
                what,
                epoch,
                highest,
            } => {
                break cluster.stale_epoch(
                    &format!("the process of job {job_id} on {worker_id}"),
                    &what,
                    epoch,
                    highest,
                );
            }
            other => eprintln!("the process of job {job_id} on {worker_id} sent {other:?}"),
        }
    };
    cluster.process_lost(&job_id, &worker_id, Some(serial), &reason);
}

fn send_event(cluster: &Cluster, job_id: &str, ev: CheckpointEvent) {
    // Fencing: a master that does not lead (or lost its ZooKeeper connection) takes no
    // acknowledgement: it turns into a decline, so no checkpoint completes on it.
    let ev = match ev {
        CheckpointEvent::Acknowledged {
            checkpoint_id,
            task,
            subtask,
            ..
        } if cluster.check_leader("complete a checkpoint").is_err() => {
            let reason = cluster
                .check_leader("complete a checkpoint")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            eprintln!("job {job_id}: checkpoint {checkpoint_id}: {reason}");
            CheckpointEvent::Declined {
                checkpoint_id,
                task,
                subtask,
                reason,
            }
        }
        ev => ev,
    };
    if let Some(job) = cluster.state.lock().jobs.get(job_id) {
        let _ = job.events.send(ev);
    }
}
