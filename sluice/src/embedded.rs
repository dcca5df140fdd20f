//! The embedded cluster: an executor that runs every subtask of a job on a thread of this
//! process, wiring the channels of every edge in memory, with the state it restores from.

use std::cell::Cell;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use sluice_am::job::restore::{self, RestoredStates};
use sluice_am::{ExecutionPlan, MetricsRegistry, TaskDone};
use sluice_core::{Config, KeyGroupRange, NodeKind, Result, SluiceError};
use sluice_hdfs_backend::{CheckpointMetadata, SnapshotDir};
use sluice_worker::OperatorContext;
use sluice_worker::metrics::OperatorMetrics;
use sluice_worker::net::DataPlane;
use sluice_worker::node::{AnySend, EdgePlacement, EdgeRuntime};
use sluice_worker::snapshot::OperatorSnapshot;
use sluice_worker::task::{TaskCommand, TaskEnv, TaskReport};
use sluice_worker::upload::{CheckpointEvent, CheckpointTargets, spawn_uploaders};

use crate::graph::ResolvedGraph;

/// An edge leaving a node: its runtime, the consumer's parallelism, and each producer
/// subtask's senders (taken by that subtask's thread).
type OutgoingEdge = (Arc<dyn EdgeRuntime>, usize, Vec<Option<AnySend>>);

/// What a subtask thread needs to build one operator context (all `Send`).
#[derive(Clone)]
struct NodeInfo {
    uid: String,
    name: String,
    parallelism: usize,
}

/// Runs a job's subtasks on threads of this process.
pub(crate) struct EmbeddedExecutor {
    resolved: ResolvedGraph,
    exec: ExecutionPlan,
    config: Arc<Config>,
    /// Where RocksDB instances and downloaded RocksDB checkpoints live.
    local_dir: PathBuf,
    registry: MetricsRegistry,
    /// The state the next attempt starts from.
    states: RestoredStates,
    targets: CheckpointTargets,
    reports: Option<Sender<TaskReport>>,
    events: Receiver<CheckpointEvent>,
    uploaders: Vec<JoinHandle<()>>,
}

impl EmbeddedExecutor {
    pub fn new(
        resolved: ResolvedGraph,
        job_id: &str,
        config: Config,
        registry: MetricsRegistry,
    ) -> Result<Self> {
        let exec = sluice_am::build_execution_plan(&resolved.plan)?;
        let targets: CheckpointTargets = Arc::default();
        let (report_tx, report_rx) = crossbeam_channel::unbounded::<TaskReport>();
        let (event_tx, event_rx) = crossbeam_channel::unbounded::<CheckpointEvent>();
        let uploaders = spawn_uploaders(
            report_rx,
            targets.clone(),
            event_tx,
            config.rocksdb_transfer_threads,
        );
        let local_dir = config
            .rocksdb_local_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("sluice-job-{job_id}"));
        Ok(EmbeddedExecutor {
            states: restore::empty(&resolved.plan),
            resolved,
            exec,
            config: Arc::new(config),
            local_dir,
            registry,
            targets,
            reports: Some(report_tx),
            events: event_rx,
            uploaders,
        })
    }
}

impl sluice_am::Executor for EmbeddedExecutor {
    fn restore_from(
        &mut self,
        path: Option<&str>,
        allow_non_restored: bool,
    ) -> Result<Option<CheckpointMetadata>> {
        let Some(path) = path else {
            self.states = restore::empty(&self.resolved.plan);
            return Ok(None);
        };
        let local = restore::Local {
            dir: &self.local_dir,
            threads: self.config.rocksdb_transfer_threads,
        };
        let (states, meta) = restore::load(path, &self.resolved.plan, allow_non_restored, &local)?;
        self.states = states;
        Ok(Some(meta))
    }

    fn deploy(&mut self, attempt: u64) -> Result<Box<dyn sluice_am::Attempt>> {
        let reports = self
            .reports
            .clone()
            .ok_or_else(|| SluiceError::Internal("the embedded executor was shut down".into()))?;
        let attempt = deploy(DeployArgs {
            resolved: &self.resolved,
            exec: &self.exec,
            job_name: &self.resolved.plan.name,
            config: self.config.clone(),
            local_dir: self.local_dir.clone(),
            restore: &self.states,
            reports,
            registry: self.registry.clone(),
            attempt,
            placement: None,
        })?;
        Ok(Box::new(attempt))
    }

    fn checkpoint_events(&self) -> Receiver<CheckpointEvent> {
        self.events.clone()
    }

    fn begin_checkpoint(&self, id: u64, dir: SnapshotDir, inline_threshold: usize) {
        self.targets.lock().insert(id, (dir, inline_threshold));
    }

    fn end_checkpoint(&self, id: u64) {
        self.targets.lock().remove(&id);
    }

    fn shutdown(&mut self) {
        self.reports = None;
        for u in self.uploaders.drain(..) {
            let _ = u.join();
        }
        let _ = std::fs::remove_dir_all(&self.local_dir);
    }
}

/// A running attempt.
pub(crate) struct Attempt {
    cancel: Arc<AtomicBool>,
    done: Receiver<TaskDone>,
    /// Command channel of every subtask: (task, subtask, is source, sender).
    commands: Vec<(usize, usize, bool, Sender<TaskCommand>)>,
    threads: Vec<JoinHandle<()>>,
    subtasks: usize,
}

impl Attempt {
    /// The flag that cancels every subtask of this attempt.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Cancels every subtask and waits for their threads, leaving their reports on
    /// [`sluice_am::Attempt::done`] to whoever reads it.
    pub fn join(self) {
        self.cancel.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

impl sluice_am::Attempt for Attempt {
    fn done(&self) -> &Receiver<TaskDone> {
        &self.done
    }

    fn subtasks(&self) -> usize {
        self.subtasks
    }

    fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    fn send_all(&self, cmd: &TaskCommand) {
        for (_, _, _, tx) in &self.commands {
            // A finished subtask has dropped its receiver; nothing to tell it.
            let _ = tx.send(cmd.clone());
        }
    }

    fn send_sources(&self, cmd: &TaskCommand) {
        for (_, _, source, tx) in &self.commands {
            if *source {
                let _ = tx.send(cmd.clone());
            }
        }
    }

    /// Cancels every task and waits for all of them; returns the errors they reported.
    fn stop(self: Box<Self>, mut finished: usize) -> Vec<SluiceError> {
        self.cancel.store(true, Ordering::SeqCst);
        let mut errors = Vec::new();
        while finished < self.subtasks {
            match self.done.recv() {
                Ok((_, _, r)) => {
                    finished += 1;
                    if let Err(e) = r {
                        errors.push(e);
                    }
                }
                Err(_) => break,
            }
        }
        for t in self.threads {
            let _ = t.join();
        }
        errors
    }
}

/// Where each subtask runs when a job spans processes.
pub(crate) struct Placement<'a> {
    pub plane: &'a DataPlane,
    pub attempt: u64,
    /// `addrs[task][subtask]`: data address of the process running that subtask.
    pub addrs: &'a [Vec<SocketAddr>],
}

impl Placement<'_> {
    fn is_local(&self, task: usize, subtask: usize) -> bool {
        self.addrs[task][subtask] == self.plane.local_addr()
    }
}

pub(crate) struct DeployArgs<'a> {
    pub resolved: &'a ResolvedGraph,
    pub exec: &'a ExecutionPlan,
    pub job_name: &'a str,
    pub config: Arc<Config>,
    pub local_dir: PathBuf,
    /// Per node: the snapshots of the run restored from (one per old subtask), if any.
    pub restore: &'a [Option<Vec<OperatorSnapshot>>],
    pub reports: Sender<TaskReport>,
    pub registry: MetricsRegistry,
    /// The attempt's number: 0, then 1, ... after each restart.
    pub attempt: u64,
    /// `None`: every subtask runs here.
    pub placement: Option<Placement<'a>>,
}

pub(crate) fn deploy(args: DeployArgs<'_>) -> Result<Attempt> {
    let DeployArgs {
        resolved,
        exec,
        job_name,
        config,
        local_dir,
        restore,
        reports,
        registry,
        attempt,
        placement,
    } = args;
    let plan = &resolved.plan;
    let max = plan.max_parallelism;
    let cancel = Arc::new(AtomicBool::new(false));
    let align = config.checkpoint_mode == sluice_core::config::CheckpointingMode::ExactlyOnce;
    let buffer_timeout = config
        .buffer_timeout_enabled
        .then_some(config.buffer_timeout);
    let final_checkpoint = config.checkpoints_after_tasks_finish
        && config.checkpoint_interval.is_some()
        && config.checkpoints_dir.is_some();
    registry.lock().clear();

    let mut outgoing: Vec<Vec<OutgoingEdge>> = (0..plan.nodes.len()).map(|_| Vec::new()).collect();
    let mut incoming: Vec<Vec<Vec<AnySend>>> = plan
        .nodes
        .iter()
        .map(|n| (0..n.parallelism).map(|_| Vec::new()).collect())
        .collect();
    // Per node and subtask: bytes exchanged with other processes (remote outlets and inlets add
    // to them; in-process exchanges pass records without encoding them).
    let counters = || -> Vec<Vec<Arc<AtomicU64>>> {
        plan.nodes
            .iter()
            .map(|n| (0..n.parallelism).map(|_| Arc::default()).collect())
            .collect()
    };
    let (bytes_in, bytes_out) = (counters(), counters());
    let mut task_of = vec![0usize; plan.nodes.len()];
    for t in &exec.tasks {
        for &n in &t.nodes {
            task_of[n] = t.id;
        }
    }
    for node in &plan.nodes {
        for (k, e) in node.inputs.iter().enumerate() {
            let rt = resolved.edges[node.id][k].clone();
            let producers = plan.nodes[e.from].parallelism;
            let (senders, receivers) = match &placement {
                None => {
                    let (s, r) = rt.channels(producers, node.parallelism);
                    (
                        s.into_iter().map(Some).collect(),
                        r.into_iter().map(Some).collect(),
                    )
                }
                Some(pl) => rt.placed_channels(&EdgePlacement {
                    plane: pl.plane,
                    attempt: pl.attempt,
                    node: node.id as u32,
                    input: k as u16,
                    producers: &pl.addrs[task_of[e.from]],
                    consumers: &pl.addrs[task_of[node.id]],
                    bytes_out: &bytes_out[e.from],
                    bytes_in: &bytes_in[node.id],
                })?,
            };
            outgoing[e.from].push((rt, node.parallelism, senders));
            for (j, r) in receivers.into_iter().enumerate() {
                if let Some(r) = r {
                    incoming[node.id][j].push(r);
                }
            }
        }
    }
    let infos: Vec<NodeInfo> = plan
        .nodes
        .iter()
        .map(|n| NodeInfo {
            uid: n.uid.clone(),
            name: n.name.clone(),
            parallelism: n.parallelism,
        })
        .collect();

    let (done_tx, done_rx) = crossbeam_channel::unbounded();
    let mut threads = Vec::new();
    let mut commands = Vec::new();
    for task in &exec.tasks {
        let head = task.nodes[0];
        let tail = *task.nodes.last().expect("a task has nodes");
        let is_source = plan.nodes[head].kind == NodeKind::Source;
        for s in 0..task.parallelism {
            if placement.as_ref().is_some_and(|p| !p.is_local(task.id, s)) {
                continue;
            }
            let outs: Vec<(Arc<dyn EdgeRuntime>, usize, AnySend)> = outgoing[tail]
                .iter_mut()
                .map(|(rt, consumers, senders)| {
                    (
                        rt.clone(),
                        *consumers,
                        senders[s].take().expect("senders taken once"),
                    )
                })
                .collect();
            let receivers = std::mem::take(&mut incoming[head][s]);
            // Time this subtask's writers wait for room downstream, shared by its chain.
            let blocked = Arc::new(AtomicU64::new(0));
            let chain: Vec<(
                usize,
                NodeInfo,
                Arc<OperatorMetrics>,
                Option<OperatorSnapshot>,
            )> = task
                .nodes
                .iter()
                .map(|&n| {
                    let m = OperatorMetrics::in_task(
                        blocked.clone(),
                        bytes_in[n][s].clone(),
                        bytes_out[n][s].clone(),
                    );
                    registry.lock().push((infos[n].uid.clone(), m.clone()));
                    let restored = restore[n].as_ref().map(|old| {
                        OperatorSnapshot::redistribute(old, max, infos[n].parallelism, s)
                    });
                    (n, infos[n].clone(), m, restored)
                })
                .collect();
            let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
            commands.push((task.id, s, is_source, cmd_tx));
            let runtimes = resolved.runtimes.clone();
            let cancel = cancel.clone();
            let config = config.clone();
            let job = job_name.to_string();
            let local_dir = local_dir.clone();
            let name = format!("{} ({}/{})", task.name, s + 1, task.parallelism);
            let done = done_tx.clone();
            let reports = reports.clone();
            let task_id = task.id;
            let handle = std::thread::Builder::new()
                .name(format!(
                    "{} {}/{}",
                    infos[head].uid,
                    s + 1,
                    task.parallelism
                ))
                .spawn(move || {
                    let result = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
                        let timer = Rc::new(Cell::new(i64::MAX));
                        let snapshots = Rc::default();
                        let make_ctx =
                            |info: &NodeInfo,
                             m: &Arc<OperatorMetrics>,
                             restored: Option<OperatorSnapshot>| {
                                let mut c = OperatorContext::standalone(&info.uid, config.clone());
                                c.job_name = job.clone();
                                c.name = info.name.clone();
                                c.subtask = s;
                                c.parallelism = info.parallelism;
                                c.key_groups = KeyGroupRange::for_subtask(max, info.parallelism, s);
                                c.metrics = m.clone();
                                c.local_dir = local_dir.clone();
                                c.restored = restored;
                                c.set_task_shared(timer.clone(), Rc::clone(&snapshots));
                                c
                            };
                        let tail_rt = &runtimes[chain.last().expect("a chain has nodes").0];
                        let mut writers = Vec::new();
                        for (rt, consumers, senders) in outs {
                            let (cancel, blocked) = (cancel.clone(), blocked.clone());
                            writers.push(rt.writer(senders, s, consumers, max, cancel, blocked)?);
                        }
                        let mut downstream = if writers.is_empty() {
                            tail_rt.terminal()
                        } else {
                            tail_rt.fanout(writers)?
                        };
                        // Restored state moves into its operator: no copy of (possibly large) state.
                        let mut chain = chain;
                        for (pos, (n, info, m, restored)) in chain.iter_mut().enumerate().rev() {
                            if pos == 0 && is_source {
                                break;
                            }
                            let ctx = make_ctx(info, m, restored.take());
                            downstream = runtimes[*n].build_link(ctx, downstream)?;
                        }
                        let env = TaskEnv {
                            task: task_id,
                            subtask: s,
                            name: name.clone(),
                            cancel: cancel.clone(),
                            commands: Some(cmd_rx),
                            reports: Some(reports),
                            next_processing_timer: timer.clone(),
                            snapshots: Rc::clone(&snapshots),
                            align_barriers: align,
                            attempt,
                            final_checkpoint,
                            buffer_timeout,
                            last_flush: std::cell::Cell::new(std::time::Instant::now()),
                        };
                        let (head_node, head_info, head_m, head_restored) = &mut chain[0];
                        if is_source {
                            runtimes[*head_node].run_source(
                                make_ctx(head_info, head_m, head_restored.take()),
                                downstream,
                                env,
                            )
                        } else {
                            runtimes[*head_node].run_input(receivers, downstream, env)
                        }
                    }));
                    let result = match result {
                        Ok(r) => r,
                        Err(panic) => {
                            let msg = panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_else(|| "unknown panic".into());
                            Err(SluiceError::Job(format!("task {name} panicked: {msg}")))
                        }
                    };
                    if result.is_err() {
                        cancel.store(true, Ordering::SeqCst);
                    }
                    // The driver drains this channel until every subtask reported.
                    let _ = done.send((task_id, s, result));
                })
                .map_err(|e| SluiceError::Internal(format!("cannot start a task thread: {e}")))?;
            threads.push(handle);
        }
    }
    Ok(Attempt {
        cancel,
        done: done_rx,
        subtasks: commands.len(),
        commands,
        threads,
    })
}
