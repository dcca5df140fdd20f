//! One attempt of a job: wires the channels of every edge, builds each subtask's chain on its
//! own thread (with the state it restores from) and runs it.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use sluice_am::ExecutionPlan;
use sluice_core::{Config, KeyGroupRange, NodeKind, Result, SluiceError};
use sluice_worker::OperatorContext;
use sluice_worker::metrics::OperatorMetrics;
use sluice_worker::node::{AnySend, EdgeRuntime};
use sluice_worker::snapshot::OperatorSnapshot;
use sluice_worker::task::{TaskCommand, TaskEnv, TaskReport};

use super::MetricsRegistry;
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

/// A running attempt.
pub(crate) struct Attempt {
    pub cancel: Arc<AtomicBool>,
    pub done: Receiver<(usize, usize, Result<()>)>,
    /// Command channel of every subtask: (task, subtask, is source, sender).
    pub commands: Vec<(usize, usize, bool, Sender<TaskCommand>)>,
    pub threads: Vec<JoinHandle<()>>,
    pub subtasks: usize,
}

impl Attempt {
    pub fn send_all(&self, cmd: &TaskCommand) {
        for (_, _, _, tx) in &self.commands {
            // A finished subtask has dropped its receiver; nothing to tell it.
            let _ = tx.send(cmd.clone());
        }
    }

    pub fn send_sources(&self, cmd: &TaskCommand) {
        for (_, _, source, tx) in &self.commands {
            if *source {
                let _ = tx.send(cmd.clone());
            }
        }
    }

    /// Cancels every task and waits for all of them; returns the errors they reported.
    pub fn stop(self, mut finished: usize) -> Vec<SluiceError> {
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
    } = args;
    let plan = &resolved.plan;
    let max = plan.max_parallelism;
    let cancel = Arc::new(AtomicBool::new(false));
    let align = config.checkpoint_mode == sluice_core::config::CheckpointingMode::ExactlyOnce;
    registry.lock().clear();

    let mut outgoing: Vec<Vec<OutgoingEdge>> = (0..plan.nodes.len()).map(|_| Vec::new()).collect();
    let mut incoming: Vec<Vec<Vec<AnySend>>> = plan
        .nodes
        .iter()
        .map(|n| (0..n.parallelism).map(|_| Vec::new()).collect())
        .collect();
    for node in &plan.nodes {
        for (k, e) in node.inputs.iter().enumerate() {
            let rt = resolved.edges[node.id][k].clone();
            let producers = plan.nodes[e.from].parallelism;
            let (senders, receivers) = rt.channels(producers, node.parallelism);
            outgoing[e.from].push((
                rt,
                node.parallelism,
                senders.into_iter().map(Some).collect(),
            ));
            for (j, r) in receivers.into_iter().enumerate() {
                incoming[node.id][j].push(r);
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
            let chain: Vec<(
                usize,
                NodeInfo,
                Arc<OperatorMetrics>,
                Option<OperatorSnapshot>,
            )> = task
                .nodes
                .iter()
                .map(|&n| {
                    let m = OperatorMetrics::new();
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
                            writers.push(rt.writer(senders, s, consumers, max, cancel.clone())?);
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
        commands,
        threads,
        subtasks: exec.subtasks(),
    })
}
