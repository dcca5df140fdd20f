//! The embedded cluster: master and workers in one process. It schedules the job plan into
//! chained tasks, wires bounded channels between them and runs each subtask on its own thread.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_core::{Config, KeyGroupRange, NodeKind, Result, SluiceError};
use sluice_worker::OperatorContext;
use sluice_worker::metrics::{MetricsSnapshot, OperatorMetrics};
use sluice_worker::node::{AnySend, EdgeRuntime};
use sluice_worker::task::TaskEnv;

use crate::graph::{Graph, ResolvedGraph};
use sluice_am::JobStatus;

/// Live counters of a running job: (operator uid, one subtask's counters).
type MetricsRegistry = Arc<parking_lot::Mutex<Vec<(String, Arc<OperatorMetrics>)>>>;

/// A job running on the embedded cluster in the background.
pub struct JobClient {
    job_id: String,
    cancel: Arc<AtomicBool>,
    user_cancelled: Arc<AtomicBool>,
    metrics: MetricsRegistry,
    thread: std::thread::JoinHandle<Result<JobResult>>,
}

impl JobClient {
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// Asks every task to stop; [`JobClient::wait`] then returns a `Canceled` result.
    pub fn cancel(&self) {
        self.user_cancelled.store(true, Ordering::SeqCst);
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Counters so far, per operator uid, summed over subtasks.
    pub fn metrics(&self) -> BTreeMap<String, MetricsSnapshot> {
        sum_metrics(&self.metrics.lock())
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the job to end.
    pub fn wait(self) -> Result<JobResult> {
        self.thread.join().unwrap_or_else(|_| {
            Err(SluiceError::Internal(
                "the job driver thread panicked".into(),
            ))
        })
    }
}

fn sum_metrics(list: &[(String, Arc<OperatorMetrics>)]) -> BTreeMap<String, MetricsSnapshot> {
    let mut per_uid: BTreeMap<String, MetricsSnapshot> = BTreeMap::new();
    for (uid, m) in list {
        *per_uid.entry(uid.clone()).or_default() += m.snapshot();
    }
    per_uid
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub job_id: String,
    pub job_name: String,
    /// `Finished`, or `Canceled` when cancelled through its [`JobClient`].
    pub status: JobStatus,
    pub duration: Duration,
    /// Counters per operator uid, summed over subtasks.
    pub metrics: BTreeMap<String, MetricsSnapshot>,
}

impl JobResult {
    pub fn metrics(&self, uid: &str) -> Option<MetricsSnapshot> {
        self.metrics.get(uid).copied()
    }

    /// Late records dropped by all window operators.
    pub fn late_records_dropped(&self) -> u64 {
        self.metrics.values().map(|m| m.late_records_dropped).sum()
    }
}

/// A fresh 32-hex-digit job id, like Flink's.
pub(crate) fn new_job_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

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

/// Runs the job in the background; the plan is validated before this returns.
pub(crate) fn submit(graph: &Graph, job_name: &str, config: Config) -> Result<JobClient> {
    let resolved = graph.resolve(job_name, config.parallelism, config.max_parallelism)?;
    sluice_am::build_execution_plan(&resolved.plan)?;
    let job_id = new_job_id();
    let cancel = Arc::new(AtomicBool::new(false));
    let user_cancelled = Arc::new(AtomicBool::new(false));
    let metrics: MetricsRegistry = Arc::default();
    let (c, u, m, id, name) = (
        cancel.clone(),
        user_cancelled.clone(),
        metrics.clone(),
        job_id.clone(),
        job_name.to_string(),
    );
    let thread = std::thread::Builder::new()
        .name(format!("job {job_id}"))
        .spawn(move || run(resolved, &id, &name, config, c, u, m))
        .map_err(|e| SluiceError::Internal(format!("cannot start the job driver thread: {e}")))?;
    Ok(JobClient {
        job_id,
        cancel,
        user_cancelled,
        metrics,
        thread,
    })
}

fn run(
    resolved: ResolvedGraph,
    job_id: &str,
    job_name: &str,
    config: Config,
    cancel: Arc<AtomicBool>,
    user_cancelled: Arc<AtomicBool>,
    registry: MetricsRegistry,
) -> Result<JobResult> {
    let started = Instant::now();
    let exec = sluice_am::build_execution_plan(&resolved.plan)?;
    let plan = &resolved.plan;
    let config = Arc::new(config);
    let local_dir = config
        .rocksdb_local_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("sluice-job-{job_id}"));
    let max = plan.max_parallelism;

    // Channels of every edge into a chain head, by producing node.
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
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<(String, Result<()>)>();
    let mut threads = Vec::new();

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
            let chain: Vec<(usize, NodeInfo, Arc<OperatorMetrics>)> = task
                .nodes
                .iter()
                .map(|&n| {
                    let m = OperatorMetrics::new();
                    registry.lock().push((infos[n].uid.clone(), m.clone()));
                    (n, infos[n].clone(), m)
                })
                .collect();
            let runtimes = resolved.runtimes.clone();
            let cancel = cancel.clone();
            let config = config.clone();
            let job = job_name.to_string();
            let local_dir: PathBuf = local_dir.clone();
            let task_name = format!("{} ({}/{})", task.name, s + 1, task.parallelism);
            let done = done_tx.clone();
            let task_id = task.id;
            let handle = std::thread::Builder::new()
                .name(format!(
                    "{} {}/{}",
                    infos[head].uid,
                    s + 1,
                    task.parallelism
                ))
                .spawn(move || {
                    let name = task_name.clone();
                    let result = catch_unwind(AssertUnwindSafe(|| -> Result<()> {
                        let timer = Rc::new(Cell::new(i64::MAX));
                        let snapshots = Rc::default();
                        let make_ctx = |info: &NodeInfo, m: &Arc<OperatorMetrics>| {
                            let mut c = OperatorContext::standalone(&info.uid, config.clone());
                            c.job_name = job.clone();
                            c.name = info.name.clone();
                            c.subtask = s;
                            c.parallelism = info.parallelism;
                            c.key_groups = KeyGroupRange::for_subtask(max, info.parallelism, s);
                            c.metrics = m.clone();
                            c.local_dir = local_dir.clone();
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
                        for (pos, (n, info, m)) in chain.iter().enumerate().rev() {
                            if pos == 0 && is_source {
                                break;
                            }
                            downstream = runtimes[*n].build_link(make_ctx(info, m), downstream)?;
                        }
                        let env = TaskEnv {
                            task: task_id,
                            subtask: s,
                            name: name.clone(),
                            cancel: cancel.clone(),
                            commands: None,
                            reports: None,
                            next_processing_timer: timer.clone(),
                            snapshots: Rc::clone(&snapshots),
                            align_barriers: true,
                        };
                        let (head_node, head_info, head_m) = &chain[0];
                        if is_source {
                            runtimes[*head_node].run_source(
                                make_ctx(head_info, head_m),
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
                    // The receiver lives until every task reported.
                    let _ = done.send((name, result));
                })
                .map_err(|e| SluiceError::Internal(format!("cannot start a task thread: {e}")))?;
            threads.push(handle);
        }
    }
    drop(done_tx);

    let mut errors: Vec<SluiceError> = Vec::new();
    for (_name, result) in done_rx.iter() {
        if let Err(e) = result {
            cancel.store(true, Ordering::SeqCst);
            errors.push(e);
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let _ = std::fs::remove_dir_all(&local_dir);

    let cancelled_by_user = user_cancelled.load(Ordering::SeqCst);
    if let Some(root) = root_cause(errors) {
        let only_cancellation = matches!(root, SluiceError::Cancelled { .. })
            || matches!(&root, SluiceError::Internal(m) if m.contains("disappeared"));
        if !(cancelled_by_user && only_cancellation) {
            return Err(root);
        }
    }
    Ok(JobResult {
        job_id: job_id.to_string(),
        job_name: job_name.to_string(),
        status: if cancelled_by_user {
            JobStatus::Canceled
        } else {
            JobStatus::Finished
        },
        duration: started.elapsed(),
        metrics: sum_metrics(&registry.lock()),
    })
}

/// Of all task errors, the one that caused the others: not a cancellation, and not a task
/// noticing that its neighbour went away.
fn root_cause(errors: Vec<SluiceError>) -> Option<SluiceError> {
    let secondary = |e: &SluiceError| {
        matches!(e, SluiceError::Cancelled { .. })
            || matches!(e, SluiceError::Internal(m) if m.contains("disappeared"))
    };
    let first_root = errors.iter().position(|e| !secondary(e));
    match first_root {
        Some(i) => errors.into_iter().nth(i),
        None => errors.into_iter().next(),
    }
}
