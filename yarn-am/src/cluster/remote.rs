//! The executor of a job on worker processes: it waits for enough slots, places subtask `i`
//! of every task in slot `i` (slot sharing, as Flink does), spreads slots over workers, and
//! speaks to the job's processes over the control plane.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use sluice_core::{JobPlan, Result, SluiceError};
use sluice_hdfs_backend::{CheckpointMetadata, SnapshotDir};
use sluice_worker::control::{Conn, ToWorker};
use sluice_worker::task::TaskCommand;
use sluice_worker::upload::CheckpointEvent;

use super::{Cluster, Route};
use crate::executor::{Attempt, Executor, TaskDone};
use crate::job::restore;
use crate::{ExecutionPlan, build_execution_plan};

/// How long a cancelled attempt's processes get to report their subtasks' end.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct RemoteExecutor {
    cluster: Arc<Cluster>,
    job_id: String,
    plan: JobPlan,
    exec: ExecutionPlan,
    restore: Option<(String, bool)>,
    events: Receiver<CheckpointEvent>,
}

impl RemoteExecutor {
    pub(super) fn new(
        cluster: Arc<Cluster>,
        job_id: String,
        plan: JobPlan,
        events: Receiver<CheckpointEvent>,
    ) -> Result<Self> {
        let exec = build_execution_plan(&plan)?;
        Ok(RemoteExecutor {
            cluster,
            job_id,
            plan,
            exec,
            restore: None,
            events,
        })
    }

    /// Control connections of the job's processes.
    fn processes(&self) -> Vec<Conn> {
        self.cluster
            .state
            .lock()
            .jobs
            .get(&self.job_id)
            .map(|j| j.processes.values().map(|p| p.conn.clone()).collect())
            .unwrap_or_default()
    }

    /// Waits until the job's processes offer `needed` slots; returns (worker id, data address)
    /// per slot, spread over workers.
    fn wait_for_slots(&self, needed: usize) -> Result<Vec<(String, SocketAddr)>> {
        let deadline = Instant::now() + self.cluster.config.slot_request_timeout;
        let mut st = self.cluster.state.lock();
        loop {
            let job = st.jobs.get(&self.job_id).ok_or_else(|| {
                SluiceError::Internal(format!("job {} is not known to the cluster", self.job_id))
            })?;
            let offers: BTreeMap<&String, (usize, SocketAddr)> = job
                .processes
                .iter()
                .filter_map(|(w, p)| st.workers.get(w).map(|we| (w, (we.slots, p.data_addr))))
                .collect();
            let total: usize = offers.values().map(|(s, _)| s).sum();
            if total >= needed {
                let most = offers.values().map(|(s, _)| *s).max().unwrap_or(0);
                let mut slots = Vec::with_capacity(total);
                for k in 0..most {
                    for (w, (s, addr)) in &offers {
                        if k < *s {
                            slots.push(((*w).clone(), *addr));
                        }
                    }
                }
                return Ok(slots);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SluiceError::Job(format!(
                    "job {} needs {needed} slot(s) but its workers offer {total} after waiting \
                     {:?} (slot.request.timeout); start more workers or lower the parallelism",
                    self.job_id, self.cluster.config.slot_request_timeout
                )));
            }
            self.cluster.changed.wait_for(&mut st, deadline - now);
        }
    }
}

impl Executor for RemoteExecutor {
    fn restore_from(
        &mut self,
        path: Option<&str>,
        allow_non_restored: bool,
    ) -> Result<Option<CheckpointMetadata>> {
        let Some(path) = path else {
            self.restore = None;
            return Ok(None);
        };
        let meta = restore::check(path, &self.plan, allow_non_restored)?;
        self.restore = Some((path.to_string(), allow_non_restored));
        Ok(Some(meta))
    }

    fn deploy(&mut self, attempt: u64) -> Result<Box<dyn Attempt>> {
        // A deposed master never deploys (the new leader runs the job).
        self.cluster
            .check_leader(&format!("deploy job {}", self.job_id))?;
        let needed = self
            .exec
            .tasks
            .iter()
            .map(|t| t.parallelism)
            .max()
            .unwrap_or(1);
        let slots = self.wait_for_slots(needed)?;
        let placement: Vec<Vec<SocketAddr>> = self
            .exec
            .tasks
            .iter()
            .map(|t| (0..t.parallelism).map(|s| slots[s].1).collect())
            .collect();
        let mut pending = HashMap::new();
        let mut participants: BTreeMap<String, ()> = BTreeMap::new();
        for t in &self.exec.tasks {
            for (s, (worker, _)) in slots.iter().enumerate().take(t.parallelism) {
                pending.insert((t.id, s), worker.clone());
                participants.insert(worker.clone(), ());
            }
        }
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let conns: Vec<(String, Conn)> = {
            let mut st = self.cluster.state.lock();
            let job = st.jobs.get_mut(&self.job_id).ok_or_else(|| {
                SluiceError::Internal(format!("job {} is not known to the cluster", self.job_id))
            })?;
            job.route = Some(Route {
                attempt,
                done: done_tx,
                pending,
            });
            job.processes
                .iter()
                .filter(|(w, _)| participants.contains_key(*w))
                .map(|(w, p)| (w.clone(), p.conn.clone()))
                .collect()
        };
        let msg = ToWorker::Deploy {
            attempt,
            placement,
            restore: self.restore.clone(),
            epoch: self.cluster.epoch(),
        };
        for (worker, conn) in &conns {
            if let Err(e) = conn.send(&msg) {
                self.cluster.process_lost(
                    &self.job_id,
                    worker,
                    None,
                    &format!("deploying failed: {e}"),
                );
            }
        }
        eprintln!(
            "job {}: attempt {attempt} deployed on {} worker(s)",
            self.job_id,
            conns.len()
        );
        Ok(Box::new(RemoteAttempt {
            cluster: self.cluster.clone(),
            job_id: self.job_id.clone(),
            attempt,
            done: done_rx,
            conns: conns.into_iter().map(|(_, c)| c).collect(),
            subtasks: self.exec.subtasks(),
        }))
    }

    fn checkpoint_events(&self) -> Receiver<CheckpointEvent> {
        self.events.clone()
    }

    fn begin_checkpoint(&self, id: u64, dir: SnapshotDir, inline_threshold: usize) {
        let msg = ToWorker::BeginCheckpoint {
            id,
            dir_url: dir.url().to_string(),
            inline_threshold,
            epoch: self.cluster.epoch(),
        };
        for c in self.processes() {
            let _ = c.send(&msg);
        }
    }

    fn end_checkpoint(&self, id: u64) {
        for c in self.processes() {
            let _ = c.send(&ToWorker::EndCheckpoint {
                id,
                epoch: self.cluster.epoch(),
            });
        }
    }

    fn checkpoint_registry(&self) -> Option<Arc<dyn crate::checkpoint::CheckpointRegistry>> {
        let ha = self.cluster.ha()?;
        Some(Arc::new(
            crate::ha::checkpoints::ZkCheckpointRegistry::new(
                ha.leadership.zk().clone(),
                ha.leadership.config(),
                ha.leadership.latch(),
                &self.job_id,
            )
            .with_guard(ha.leadership.guard().clone()),
        ))
    }

    fn shutdown(&mut self) {
        for c in self.processes() {
            let _ = c.send(&ToWorker::Shutdown);
        }
        let daemons: Vec<Conn> = {
            let mut st = self.cluster.state.lock();
            st.jobs.remove(&self.job_id);
            st.workers.values().map(|w| w.conn.clone()).collect()
        };
        for d in daemons {
            let _ = d.send(&ToWorker::KillJob {
                job_id: self.job_id.clone(),
                epoch: self.cluster.epoch(),
            });
        }
        // The job ended (finished, cancelled or failed): a new leader must not recover it.
        // A master that no longer leads leaves it to the leader.
        if let Some(ha) = self.cluster.ha() {
            if ha.leadership.is_active() {
                if let Err(e) = ha.store.remove(&self.job_id) {
                    eprintln!(
                        "sluice-am: job {} stays in the HA job store: {e}",
                        self.job_id
                    );
                } else if let Err(e) = crate::ha::checkpoints::remove_job(
                    ha.leadership.zk(),
                    ha.leadership.config(),
                    &self.job_id,
                ) {
                    eprintln!(
                        "sluice-am: job {}: its checkpoint pointers stay in ZooKeeper: {e}",
                        self.job_id
                    );
                }
            } else {
                eprintln!(
                    "sluice-am: job {} ended while this master did not lead; it stays in the \
                     HA job store",
                    self.job_id
                );
            }
        }
    }
}

struct RemoteAttempt {
    cluster: Arc<Cluster>,
    job_id: String,
    attempt: u64,
    done: Receiver<TaskDone>,
    conns: Vec<Conn>,
    subtasks: usize,
}

impl RemoteAttempt {
    fn send(&self, msg: &ToWorker) {
        // A process that cannot be reached is found out by its reader thread, which fails
        // its subtasks.
        for c in &self.conns {
            let _ = c.send(msg);
        }
    }
}

impl Attempt for RemoteAttempt {
    fn done(&self) -> &Receiver<TaskDone> {
        &self.done
    }

    fn subtasks(&self) -> usize {
        self.subtasks
    }

    fn send_all(&self, cmd: &TaskCommand) {
        self.send(&ToWorker::Command {
            attempt: self.attempt,
            sources_only: false,
            command: cmd.clone(),
            epoch: self.cluster.epoch(),
        });
    }

    fn send_sources(&self, cmd: &TaskCommand) {
        self.send(&ToWorker::Command {
            attempt: self.attempt,
            sources_only: true,
            command: cmd.clone(),
            epoch: self.cluster.epoch(),
        });
    }

    fn cancel(&self) {
        self.send(&ToWorker::CancelAttempt {
            attempt: self.attempt,
            epoch: self.cluster.epoch(),
        });
    }

    fn stop(self: Box<Self>, mut finished: usize) -> Vec<SluiceError> {
        self.cancel();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut errors = Vec::new();
        while finished < self.subtasks {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok((_, _, r)) => {
                    finished += 1;
                    if let Err(e) = r {
                        errors.push(e);
                    }
                }
                Err(_) => {
                    errors.push(SluiceError::Job(format!(
                        "job {}: {} subtask(s) of attempt {} did not report their end within {:?}",
                        self.job_id,
                        self.subtasks - finished,
                        self.attempt,
                        STOP_TIMEOUT
                    )));
                    break;
                }
            }
        }
        if let Some(job) = self.cluster.state.lock().jobs.get_mut(&self.job_id)
            && job
                .route
                .as_ref()
                .is_some_and(|r| r.attempt == self.attempt)
        {
            job.route = None;
        }
        errors
    }
}
