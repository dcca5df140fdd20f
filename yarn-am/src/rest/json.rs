//! The response bodies, field for field as Flink 2.x writes them (see the captured samples of
//! `GET /jobs/:id`, `/jobs/overview`, `/jobs/:id/checkpoints`), so dashboards and scripts
//! written against Flink read them unchanged. Fields Sluice has no counterpart for keep
//! Flink's neutral values (0, `{}`, `"Default"`).

use crate::JobStatus;
use crate::checkpoint::{CheckpointStats, CheckpointStatus};
use serde_json::{Value, json};
use sluice_core::config::{CheckpointingMode, StateBackendKind};

use super::dispatcher::{JobEntry, Operation};
use crate::job::JobView;

/// Flink's execution states, in the order its responses list them.
const TASK_STATES: [&str; 10] = [
    "SCHEDULED",
    "DEPLOYING",
    "INITIALIZING",
    "CREATED",
    "RECONCILING",
    "FINISHED",
    "FAILED",
    "RUNNING",
    "CANCELING",
    "CANCELED",
];

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn status_name(s: JobStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The state every task of a job in status `s` is in (Sluice runs all tasks of a job
/// together, so they share one state).
fn task_state(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Running => "RUNNING",
        JobStatus::Finished => "FINISHED",
        JobStatus::Failed | JobStatus::Failing => "FAILED",
        JobStatus::Cancelling => "CANCELING",
        JobStatus::Canceled => "CANCELED",
        JobStatus::Initializing => "INITIALIZING",
        JobStatus::Created | JobStatus::Restarting | JobStatus::Suspended => "CREATED",
    }
}

/// (start, end, duration) as Flink reports them: end -1 while running.
fn times(v: &JobView) -> (i64, i64, i64) {
    let end = v.end_time_ms.unwrap_or(-1);
    let until = v.end_time_ms.unwrap_or_else(now_ms);
    (v.start_time_ms, end, (until - v.start_time_ms).max(0))
}

fn counts(state: &str, n: usize, lower: bool) -> Value {
    let mut m = serde_json::Map::new();
    for s in TASK_STATES {
        let key = if lower {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        };
        m.insert(key, json!(if s == state { n } else { 0 }));
    }
    Value::Object(m)
}

/// One entry of `GET /jobs/overview`.
pub fn job_overview(job: &JobEntry) -> Value {
    let v = job.handle.view();
    let (start, end, duration) = times(&v);
    let subtasks: usize = job.plan.nodes.iter().map(|n| n.parallelism).sum();
    let mut tasks = counts(task_state(v.status), subtasks, true);
    tasks["total"] = json!(subtasks);
    json!({
        "jid": job.id,
        "name": job.name,
        "jobType": "STREAMING",
        "schedulerType": "Default",
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "state": status_name(v.status),
        "last-modification": v.end_time_ms.unwrap_or(start),
        "tasks": tasks,
        "pending-operators": 0,
    })
}

/// `GET /jobs/:id`: one vertex per operator (id = its uid), with its record counters.
pub fn job_details(job: &JobEntry) -> Value {
    let v = job.handle.view();
    let (start, end, duration) = times(&v);
    let state = task_state(v.status);
    let metrics = job.handle.metrics();
    let max_p = job.plan.max_parallelism;
    let vertices: Vec<Value> = job
        .plan
        .nodes
        .iter()
        .map(|n| {
            let m = metrics.get(&n.uid).copied().unwrap_or_default();
            json!({
                "id": n.uid,
                "slotSharingGroupId": "default",
                "name": n.name,
                "maxParallelism": max_p,
                "parallelism": n.parallelism,
                "status": state,
                "start-time": start,
                "end-time": end,
                "duration": duration,
                "tasks": counts(state, n.parallelism, false),
                "metrics": {
                    "read-bytes": m.bytes_in,
                    "read-bytes-complete": true,
                    "write-bytes": m.bytes_out,
                    "write-bytes-complete": true,
                    "read-records": m.records_in,
                    "read-records-complete": true,
                    "write-records": m.records_out,
                    "write-records-complete": true,
                    "accumulated-backpressured-time": m.backpressured_ms,
                    "accumulated-idle-time": 0,
                    "accumulated-busy-time": 0.0,
                },
            })
        })
        .collect();
    let nodes: Vec<Value> = job
        .plan
        .nodes
        .iter()
        .map(|n| {
            let mut node = json!({
                "id": n.uid,
                "operator": "",
                "parallelism": n.parallelism,
                "operator_strategy": "",
                "description": n.name,
                "optimizer_properties": {},
            });
            if !n.inputs.is_empty() {
                let inputs: Vec<Value> = n
                    .inputs
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        json!({
                            "id": job.plan.nodes[e.from].uid,
                            "num": i,
                            "exchange": "pipelined_bounded",
                            "ship_strategy": serde_json::to_value(e.partitioning).unwrap_or(Value::Null),
                        })
                    })
                    .collect();
                node["inputs"] = json!(inputs);
            }
            node
        })
        .collect();
    let mut timestamps = serde_json::Map::new();
    for s in [
        "FAILED",
        "CANCELLING",
        "SUSPENDED",
        "CANCELED",
        "FINISHED",
        "INITIALIZING",
        "RUNNING",
        "RESTARTING",
        "FAILING",
        "CREATED",
        "RECONCILING",
    ] {
        let t = match s {
            "INITIALIZING" | "CREATED" | "RUNNING" => start,
            _ if status_name(v.status) == s => end.max(0),
            _ => 0,
        };
        timestamps.insert(s.to_string(), json!(t));
    }
    json!({
        "jid": job.id,
        "application-id": job.id,
        "name": job.name,
        "isStoppable": false,
        "state": status_name(v.status),
        "job-type": "STREAMING",
        "schedulerType": "Default",
        "start-time": start,
        "end-time": end,
        "duration": duration,
        "maxParallelism": max_p,
        "now": now_ms(),
        "timestamps": timestamps,
        "vertices": vertices,
        "status-counts": counts(state, job.plan.nodes.len(), false),
        "plan": { "jid": job.id, "name": job.name, "type": "STREAMING", "nodes": nodes },
        "pending-operators": 0,
    })
}

/// One entry of the checkpoint history. `discarded`: a checkpoint that retention deleted.
fn checkpoint(c: &CheckpointStats, discarded: bool) -> Value {
    let class = match c.status {
        CheckpointStatus::InProgress => "in_progress",
        CheckpointStatus::Completed => "completed",
        CheckpointStatus::Failed => "failed",
    };
    let mut out = json!({
        "className": class,
        "id": c.id,
        "status": c.status,
        "is_savepoint": c.is_savepoint,
        "savepointFormat": if c.is_savepoint {
            json!(c.savepoint_format.unwrap_or_default().as_str())
        } else {
            Value::Null
        },
        "trigger_timestamp": c.trigger_timestamp,
        "latest_ack_timestamp": c.latest_ack_timestamp,
        "checkpointed_size": c.state_size,
        "state_size": c.state_size,
        "end_to_end_duration": c.end_to_end_duration,
        // Not in Flink's history entries (it has it per subtask only): the longest barrier
        // alignment of any subtask, so the history can be plotted from one document.
        "alignment_duration": c.alignments.iter().map(|a| a.2).max(),
        "alignment_buffered": 0,
        "processed_data": 0,
        "persisted_data": 0,
        "num_subtasks": c.num_subtasks,
        "num_acknowledged_subtasks": c.num_acknowledged_subtasks,
        "checkpoint_type": if c.is_savepoint { "SAVEPOINT" } else { "CHECKPOINT" },
        "tasks": {},
    });
    match c.status {
        CheckpointStatus::Completed => {
            out["external_path"] = json!(c.external_path);
            out["discarded"] = json!(discarded);
        }
        CheckpointStatus::Failed => {
            out["failure_timestamp"] = json!(c.latest_ack_timestamp);
            out["failure_message"] = json!(c.failure_message);
        }
        CheckpointStatus::InProgress => {}
    }
    out
}

/// min/max/avg and percentiles of `values`, as in Flink's checkpoint `summary`.
fn summary(mut values: Vec<u64>) -> Value {
    if values.is_empty() {
        return json!({"min": 0, "max": 0, "avg": 0, "p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0, "p999": 0.0});
    }
    values.sort_unstable();
    let pct = |p: f64| {
        let i = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
        values[i] as f64
    };
    json!({
        "min": values[0],
        "max": values[values.len() - 1],
        "avg": values.iter().sum::<u64>() / values.len() as u64,
        "p50": pct(0.5), "p90": pct(0.9), "p95": pct(0.95), "p99": pct(0.99), "p999": pct(0.999),
    })
}

/// `GET /jobs/:id/checkpoints`.
pub fn checkpoints(job: &JobEntry) -> Value {
    let v = job.handle.view();
    let retained = job.settings.retained;
    // Only the newest `retained` completed checkpoints are kept; savepoints are never deleted.
    let mut kept = 0usize;
    let history: Vec<Value> = v
        .checkpoints
        .iter()
        .map(|c| {
            let discarded = c.status == CheckpointStatus::Completed
                && !c.is_savepoint
                && ({
                    kept += 1;
                    kept
                } > retained);
            checkpoint(c, discarded)
        })
        .collect();
    let completed: Vec<&CheckpointStats> = v
        .checkpoints
        .iter()
        .filter(|c| c.status == CheckpointStatus::Completed)
        .collect();
    let latest = |pred: &dyn Fn(&CheckpointStats) -> bool| {
        v.checkpoints
            .iter()
            .position(pred)
            .map(|i| history[i].clone())
            .unwrap_or(Value::Null)
    };
    let restored = match v.restored_checkpoint {
        Some(id) => json!({
            "id": id,
            "restore_timestamp": Value::Null,
            "is_savepoint": false,
            "external_path": v.latest_checkpoint.as_ref().filter(|c| c.0 == id).map(|c| c.1.clone()),
        }),
        None => Value::Null,
    };
    let sizes: Vec<u64> = completed.iter().map(|c| c.state_size).collect();
    let zeros = vec![0; completed.len()];
    json!({
        "counts": v.checkpoint_counts,
        "summary": {
            "checkpointed_size": summary(sizes.clone()),
            "state_size": summary(sizes),
            "end_to_end_duration": summary(completed.iter().map(|c| c.end_to_end_duration).collect()),
            "alignment_buffered": summary(zeros.clone()),
            "processed_data": summary(zeros.clone()),
            "persisted_data": summary(zeros),
        },
        "latest": {
            "completed": latest(&|c| c.status == CheckpointStatus::Completed && !c.is_savepoint),
            "savepoint": latest(&|c| c.status == CheckpointStatus::Completed && c.is_savepoint),
            "failed": latest(&|c| c.status == CheckpointStatus::Failed),
            "restored": restored,
        },
        "history": history,
    })
}

/// `GET /jobs/:id/checkpoints/config`; `None` when checkpointing is off (Flink answers 404).
pub fn checkpoint_config(job: &JobEntry) -> Option<Value> {
    let s = &job.settings;
    let interval = s.interval?;
    Some(json!({
        "mode": match s.mode {
            CheckpointingMode::ExactlyOnce => "exactly_once",
            CheckpointingMode::AtLeastOnce => "at_least_once",
        },
        "interval": interval.as_millis() as u64,
        "timeout": s.timeout.as_millis() as u64,
        "min_pause": s.min_pause.as_millis() as u64,
        "max_concurrent": s.max_concurrent,
        "externalization": {
            "enabled": s.dir.is_some(),
            "delete_on_cancellation": !s.retain_on_cancel,
        },
        "state_backend": match job.backend {
            StateBackendKind::HashMap => "HashMapStateBackend",
            StateBackendKind::RocksDb => "EmbeddedRocksDBStateBackend",
        },
        "checkpoint_storage": if s.dir.is_some() { "FileSystemCheckpointStorage" } else { "JobManagerCheckpointStorage" },
        "unaligned_checkpoints": false,
        "tolerable_failed_checkpoints": s.tolerable_failed.unwrap_or(0),
        "aligned_checkpoint_timeout": 0,
        "checkpoints_after_tasks_finish": s.after_tasks_finish,
        "state_changelog_enabled": false,
        "changelog_periodic_materialization_interval": 600000,
        "changelog_storage": "memory",
    }))
}

/// A `failure-cause` in Flink's `SerializedThrowable` shape; there is no Java class, so the
/// class names the kind of failure and the message stands in for the stack trace.
fn failure_cause(message: &str) -> Value {
    json!({
        "class": "org.apache.flink.util.SerializedThrowable",
        "stack-trace": message,
        "serialized-throwable": message,
    })
}

/// `GET /jobs/:id/savepoints/:trigger-id` (also for stop-with-savepoint).
pub fn savepoint_status(op: &Operation) -> Value {
    match op {
        Operation::InProgress => json!({"status": {"id": "IN_PROGRESS"}, "operation": null}),
        Operation::Completed(location) => {
            json!({"status": {"id": "COMPLETED"}, "operation": {"location": location}})
        }
        Operation::Failed(message) => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"failure-cause": failure_cause(message)},
        }),
    }
}

/// `GET /jobs/:id/checkpoints/:trigger-id` (Flink 1.19+): the checkpoint id on success.
pub fn checkpoint_status(op: &Operation) -> Value {
    match op {
        Operation::InProgress => json!({"status": {"id": "IN_PROGRESS"}, "operation": null}),
        Operation::Completed(location) => {
            let id = location
                .rsplit('/')
                .next()
                .and_then(|n| n.strip_prefix("chk-"))
                .and_then(|n| n.parse::<u64>().ok());
            json!({"status": {"id": "COMPLETED"}, "operation": {"checkpointId": id}})
        }
        Operation::Failed(message) => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"failureCause": failure_cause(message)},
        }),
    }
}
