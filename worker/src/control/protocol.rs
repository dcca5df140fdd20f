//! The messages of the control plane. Every connection starts with a registration that
//! carries [`PROTOCOL_VERSION`]; the master refuses a peer of another version.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sluice_core::SluiceError;
use sluice_hdfs_backend::StateHandle;

/// The state handles of an acknowledgement, as [`ToMaster::CheckpointAcknowledged`] carries them.
pub fn encode_states(states: &[(String, usize, StateHandle)]) -> String {
    serde_json::to_string(states).expect("state handles always serialise")
}

pub fn decode_states(json: &str) -> Result<Vec<(String, usize, StateHandle)>, String> {
    serde_json::from_str(json).map_err(|e| format!("state handles that do not decode: {e}"))
}

use crate::metrics::MetricsSnapshot;
use crate::task::TaskCommand;

/// Bumped whenever a message changes shape.
pub const PROTOCOL_VERSION: u32 = 6;

/// The protocol version a registration frame (an encoded [`ToMaster::RegisterWorker`] or
/// [`ToMaster::RegisterJobProcess`]) announces, read without decoding the rest of it, so a
/// peer whose messages have another shape is still told which versions differ. `None` for
/// any other frame.
///
/// This is why the two registrations stay the first two variants of [`ToMaster`] with
/// `version` as their first field, and [`ToWorker::Refused`] the second variant of
/// [`ToWorker`] with only its reason, in every version: a frame is the variant's index as a
/// little-endian `u32` followed by its fields.
pub fn registration_version(frame: &[u8]) -> Option<u32> {
    let variant = u32::from_le_bytes(frame.get(0..4)?.try_into().ok()?);
    if variant > 1 {
        return None;
    }
    Some(u32::from_le_bytes(frame.get(4..8)?.try_into().ok()?))
}

/// From a worker (daemon or job process) to the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToMaster {
    /// A worker daemon offers its slots. Stays variant 0, `version` first (see
    /// [`registration_version`]).
    RegisterWorker {
        version: u32,
        worker_id: String,
        slots: usize,
        host: String,
    },
    /// A job process started by daemon `worker_id` for `job_id`; it exchanges records on
    /// `data_addr`. `plan_fingerprint` proves it runs the job the master planned. Stays
    /// variant 1, `version` first.
    RegisterJobProcess {
        version: u32,
        job_id: String,
        worker_id: String,
        data_addr: SocketAddr,
        plan_fingerprint: u64,
    },
    Heartbeat,
    /// A job process of this daemon exited (or could not start).
    JobProcessExited {
        job_id: String,
        reason: String,
    },
    /// A subtask of `attempt` ended; `error` is `None` when it finished normally.
    TaskDone {
        attempt: u64,
        task: usize,
        subtask: usize,
        error: Option<WireError>,
    },
    CheckpointAcknowledged {
        checkpoint_id: u64,
        task: usize,
        subtask: usize,
        /// `(operator uid, subtask, handle)` as JSON: state handles use serde features
        /// (self-describing formats only) that the binary frame encoding lacks.
        states: String,
        /// Barrier alignment time of the task, in milliseconds.
        alignment_ms: u64,
    },
    CheckpointDeclined {
        checkpoint_id: u64,
        task: usize,
        subtask: usize,
        reason: String,
    },
    /// Counters of this process's subtasks of `attempt`, per operator uid.
    Metrics {
        attempt: u64,
        metrics: Vec<(String, MetricsSnapshot)>,
    },
    /// The worker refused message `what` because it carried leadership epoch `epoch`, older
    /// than `highest`, the newest epoch the worker has seen: the master was deposed.
    StaleEpoch {
        what: String,
        epoch: i64,
        highest: i64,
    },
    /// A source subtask of `attempt` reached the end of its input and waits for the final
    /// checkpoint (see `TaskEnv::final_checkpoint`).
    SourceEnded {
        attempt: u64,
        task: usize,
        subtask: usize,
    },
}

/// From the master to a worker daemon or job process. Every message that deploys, starts or
/// kills a process, triggers or ends a checkpoint, or cancels carries the sender's leadership
/// `epoch` (0 without high availability); a worker refuses one older than the newest epoch it
/// has seen (see [`super::fence`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToWorker {
    Registered,
    /// Stays variant 1 with only its reason: peers of every version read it.
    Refused {
        reason: String,
    },
    Heartbeat,
    /// Daemons: start a process of this job from the bundle's bytes.
    LaunchJob {
        job_id: String,
        bundle: Vec<u8>,
        args: Vec<String>,
        /// `key=value` configuration handed to the job process.
        config: Vec<String>,
        epoch: i64,
    },
    /// Daemons: stop this job's process.
    KillJob {
        job_id: String,
        epoch: i64,
    },
    /// Job processes: run these subtasks as `attempt`. `placement[task][subtask]` is the
    /// data address of the process that runs each subtask of the job.
    Deploy {
        attempt: u64,
        placement: Vec<Vec<SocketAddr>>,
        /// A checkpoint or savepoint to restore from, and whether unclaimed state may be dropped.
        restore: Option<(String, bool)>,
        epoch: i64,
    },
    /// Job processes: a command for the subtasks of `attempt` (only sources with `sources_only`).
    Command {
        attempt: u64,
        sources_only: bool,
        command: TaskCommand,
        epoch: i64,
    },
    /// Job processes: checkpoint `id` is pending; its state goes to the directory `dir_url`.
    BeginCheckpoint {
        id: u64,
        dir_url: String,
        inline_threshold: usize,
        epoch: i64,
    },
    EndCheckpoint {
        id: u64,
        epoch: i64,
    },
    /// Job processes: stop every subtask of `attempt`.
    CancelAttempt {
        attempt: u64,
        epoch: i64,
    },
    /// The job ended (job processes) or the cluster stops (daemons): exit.
    Shutdown,
}

impl ToWorker {
    /// The leadership epoch of a message that must come from the current leader; `None` for
    /// the others (registration answers, heartbeats, shutdown).
    pub fn epoch(&self) -> Option<i64> {
        match self {
            ToWorker::LaunchJob { epoch, .. }
            | ToWorker::KillJob { epoch, .. }
            | ToWorker::Deploy { epoch, .. }
            | ToWorker::Command { epoch, .. }
            | ToWorker::BeginCheckpoint { epoch, .. }
            | ToWorker::EndCheckpoint { epoch, .. }
            | ToWorker::CancelAttempt { epoch, .. } => Some(*epoch),
            ToWorker::Registered
            | ToWorker::Refused { .. }
            | ToWorker::Heartbeat
            | ToWorker::Shutdown => None,
        }
    }

    /// The message's variant, without its (possibly large) contents.
    pub fn name(&self) -> &'static str {
        match self {
            ToWorker::Registered => "Registered",
            ToWorker::Refused { .. } => "Refused",
            ToWorker::Heartbeat => "Heartbeat",
            ToWorker::LaunchJob { .. } => "LaunchJob",
            ToWorker::KillJob { .. } => "KillJob",
            ToWorker::Deploy { .. } => "Deploy",
            ToWorker::Command { .. } => "Command",
            ToWorker::BeginCheckpoint { .. } => "BeginCheckpoint",
            ToWorker::EndCheckpoint { .. } => "EndCheckpoint",
            ToWorker::CancelAttempt { .. } => "CancelAttempt",
            ToWorker::Shutdown => "Shutdown",
        }
    }
}

/// A task error as it crosses the wire, keeping what the master's restart decisions need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireError {
    State {
        uid: String,
        state: String,
        message: String,
    },
    Config(String),
    InvalidGraph(String),
    Cancelled,
    Internal(String),
    /// Kept apart because the master tells a task noticing its neighbour's failure from the
    /// failure that caused it.
    NeighbourGone(String),
    Other(String),
}

impl From<&SluiceError> for WireError {
    fn from(e: &SluiceError) -> Self {
        match e {
            SluiceError::State {
                uid,
                state,
                message,
            } => WireError::State {
                uid: uid.clone(),
                state: state.clone(),
                message: message.clone(),
            },
            SluiceError::Config(m) => WireError::Config(m.clone()),
            SluiceError::InvalidGraph(m) => WireError::InvalidGraph(m.clone()),
            SluiceError::Cancelled { .. } => WireError::Cancelled,
            SluiceError::Internal(m) => WireError::Internal(m.clone()),
            SluiceError::NeighbourGone(m) => WireError::NeighbourGone(m.clone()),
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for SluiceError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::State {
                uid,
                state,
                message,
            } => SluiceError::State {
                uid,
                state,
                message,
            },
            WireError::Config(m) => SluiceError::Config(m),
            WireError::InvalidGraph(m) => SluiceError::InvalidGraph(m),
            WireError::Cancelled => SluiceError::Cancelled { job: String::new() },
            WireError::Internal(m) => SluiceError::Internal(m),
            WireError::NeighbourGone(m) => SluiceError::NeighbourGone(m),
            WireError::Other(m) => SluiceError::Job(m),
        }
    }
}

/// What the leading master publishes at `<root>/<cluster-id>/leader/connection_info` in
/// ZooKeeper (JSON): where workers and clients find it, and its leadership epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The control address workers register at.
    pub address: SocketAddr,
    /// The REST API's base URL.
    pub rest: String,
    /// The leadership term: the sequence number of the leader's latch node, which grows with
    /// every term and is never reused.
    pub epoch: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_announce_their_version_before_anything_else() {
        let worker = ToMaster::RegisterWorker {
            version: 7,
            worker_id: "w".into(),
            slots: 1,
            host: "h".into(),
        };
        let process = ToMaster::RegisterJobProcess {
            version: 9,
            job_id: "j".into(),
            worker_id: "w".into(),
            data_addr: "127.0.0.1:1".parse().expect("an address"),
            plan_fingerprint: 1,
        };
        let frame = |m: &ToMaster| bincode::serialize(m).expect("encodes");
        assert_eq!(registration_version(&frame(&worker)), Some(7));
        assert_eq!(registration_version(&frame(&process)), Some(9));
        assert_eq!(registration_version(&frame(&ToMaster::Heartbeat)), None);
        assert_eq!(registration_version(&[0, 0, 0]), None);
        // A peer of an older release still reads the refusal.
        let refused =
            bincode::serialize(&ToWorker::Refused { reason: "r".into() }).expect("encodes");
        assert_eq!(&refused[0..4], &1u32.to_le_bytes());
    }

    /// The master ranks a task's errors by variant, so each must cross the wire as itself.
    #[test]
    fn task_errors_keep_their_variant_across_the_wire() {
        let across = |e: SluiceError| -> SluiceError {
            let wire: WireError = (&e).into();
            let bytes = bincode::serialize(&wire).expect("encodes");
            bincode::deserialize::<WireError>(&bytes)
                .expect("decodes")
                .into()
        };
        let gone = across(SluiceError::NeighbourGone(
            "an upstream task of count (2/4) disappeared: worker w2 lost".into(),
        ));
        assert!(
            matches!(&gone, SluiceError::NeighbourGone(m) if m.ends_with("worker w2 lost")),
            "{gone:?}"
        );
        assert!(matches!(
            across(SluiceError::Internal("a bug".into())),
            SluiceError::Internal(m) if m == "a bug"
        ));
        assert!(matches!(
            across(SluiceError::Cancelled { job: "j".into() }),
            SluiceError::Cancelled { .. }
        ));
    }
}
