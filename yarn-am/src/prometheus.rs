//! `GET /metrics` on the master's REST port: Prometheus text exposition format 0.0.4 with the
//! master's, each job's and each operator's figures, and the process's RSS and CPU time.
//! The names (prefix `sluice_`, Flink's metric names after it) are documented in
//! `docs/metrics.md`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sluice_worker::prometheus::{Exposition, process_metrics};

use crate::JobStatus;
use crate::checkpoint::CheckpointStatus;
use crate::rest::dispatcher::Dispatcher;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn handler(State(d): State<Arc<Dispatcher>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&d)).into_response()
}

/// How often a job restarted: every failure but a final one led to a restart.
fn restarts(status: JobStatus, failures: usize) -> usize {
    if status == JobStatus::Failed {
        failures.saturating_sub(1)
    } else {
        failures
    }
}

pub(crate) fn render(d: &Dispatcher) -> String {
    let mut e = Exposition::new();
    let jobs = d.jobs();
    let running = jobs
        .iter()
        .filter(|j| !j.handle.view().status.is_globally_terminal())
        .count();
    e.gauge(
        "sluice_jobmanager_numRunningJobs",
        "Jobs that have not ended.",
        &[],
        running as f64,
    );
    if let Some((cluster, _)) = d.cluster() {
        let (workers, slots) = cluster.capacity();
        e.gauge(
            "sluice_jobmanager_numRegisteredTaskManagers",
            "Registered worker daemons.",
            &[],
            workers as f64,
        );
        e.gauge(
            "sluice_jobmanager_taskSlotsTotal",
            "Task slots of all registered workers.",
            &[],
            slots as f64,
        );
    }
    for job in &jobs {
        let v = job.handle.view();
        let l = [("job_id", job.id.as_str()), ("job_name", job.name.as_str())];
        let status = serde_json::to_value(v.status)
            .ok()
            .and_then(|s| s.as_str().map(str::to_string))
            .unwrap_or_default();
        e.gauge(
            "sluice_job_status",
            "1 for the job's current status.",
            &[
                ("job_id", job.id.as_str()),
                ("job_name", job.name.as_str()),
                ("status", status.as_str()),
            ],
            1.0,
        );
        let end = v.end_time_ms.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        e.gauge(
            "sluice_job_uptime",
            "Milliseconds since the job was submitted (until it ended).",
            &l,
            (end - v.start_time_ms).max(0) as f64,
        );
        e.counter(
            "sluice_job_numRestarts",
            "Restarts after failures.",
            &l,
            restarts(v.status, v.exceptions.len()) as f64,
        );
        let c = &v.checkpoint_counts;
        for (name, help, n) in [
            (
                "sluice_job_numberOfCompletedCheckpoints",
                "Completed checkpoints.",
                c.completed,
            ),
            (
                "sluice_job_numberOfFailedCheckpoints",
                "Failed checkpoints.",
                c.failed,
            ),
            (
                "sluice_job_totalNumberOfCheckpoints",
                "Triggered checkpoints.",
                c.total,
            ),
        ] {
            e.counter(name, help, &l, n as f64);
        }
        e.gauge(
            "sluice_job_numberOfInProgressCheckpoints",
            "Checkpoints in progress.",
            &l,
            c.in_progress as f64,
        );
        // Newest first: the first completed one is the last checkpoint.
        if let Some(last) = v
            .checkpoints
            .iter()
            .find(|c| c.status == CheckpointStatus::Completed)
        {
            e.gauge(
                "sluice_job_lastCheckpointDuration",
                "End-to-end duration of the last completed checkpoint, in milliseconds.",
                &l,
                last.end_to_end_duration as f64,
            );
            if let Some(ms) = last.alignments.iter().map(|a| a.2).max() {
                e.gauge(
                    "sluice_job_lastCheckpointAlignmentDuration",
                    "Longest barrier alignment of any subtask in the last completed checkpoint, \
                     in milliseconds.",
                    &l,
                    ms as f64,
                );
            }
            e.gauge(
                "sluice_job_lastCheckpointSize",
                "Bytes written by the last completed checkpoint.",
                &l,
                last.state_size as f64,
            );
            e.gauge(
                "sluice_job_lastCheckpointStateSize",
                "Total state size of the last completed checkpoint, in bytes.",
                &l,
                last.state_size as f64,
            );
        }
        for (uid, m) in job.handle.metrics() {
            let ol = [
                ("job_id", job.id.as_str()),
                ("job_name", job.name.as_str()),
                ("operator_id", uid.as_str()),
            ];
            e.counter(
                "sluice_operator_numRecordsIn",
                "Records the operator received (all subtasks).",
                &ol,
                m.records_in as f64,
            );
            e.counter(
                "sluice_operator_numRecordsOut",
                "Records the operator emitted (all subtasks).",
                &ol,
                m.records_out as f64,
            );
            e.counter(
                "sluice_operator_numLateRecordsDropped",
                "Records dropped for arriving after the watermark passed their windows.",
                &ol,
                m.late_records_dropped as f64,
            );
            e.counter(
                "sluice_operator_numBytesIn",
                "Bytes the operator received from other processes (all subtasks).",
                &ol,
                m.bytes_in as f64,
            );
            e.counter(
                "sluice_operator_numBytesOut",
                "Bytes the operator sent to other processes (all subtasks).",
                &ol,
                m.bytes_out as f64,
            );
            e.counter(
                "sluice_operator_accumulatedBackpressuredTimeMs",
                "Milliseconds the operator's subtasks waited for room downstream (summed).",
                &ol,
                m.backpressured_ms as f64,
            );
        }
    }
    process_metrics(&mut e);
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_failure_is_no_restart() {
        assert_eq!(restarts(JobStatus::Running, 2), 2);
        assert_eq!(restarts(JobStatus::Failed, 3), 2);
        assert_eq!(restarts(JobStatus::Failed, 0), 0);
        let text = render(&Dispatcher::default());
        assert!(
            text.contains("sluice_jobmanager_numRunningJobs 0\n"),
            "{text}"
        );
        assert!(text.contains("sluice_process_rss_bytes "), "{text}");
    }
}
