//! The end of a bounded job with checkpointing, from the driver's side (Flink's final
//! checkpoint, FLIP-147). A source subtask at the end of its input does not end its task: it
//! reports that it ended and keeps taking part in checkpoints. Once every source subtask of
//! the attempt has, the driver triggers a checkpoint at once; when it completes, it covers all
//! output the job will ever produce, sinks commit it, and the sources are told to end their
//! input. Until then no task ends, so every checkpoint holds every subtask's state and a
//! failure anywhere restarts from a point no sink has published past.

use std::collections::HashSet;
use std::time::Instant;

use crate::checkpoint::CheckpointCoordinator;

/// Failed final checkpoints after which the sources end without one. Without a checkpoint that
/// can complete (an unwritable or unreachable checkpoint directory) a bounded job would never
/// end; it ends as it would without checkpointing, and says so.
pub(super) const FINAL_CHECKPOINT_ATTEMPTS: u32 = 3;

/// What to do after a final checkpoint attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Nothing yet: the checkpoint was not the final one, or it failed and is tried again.
    Wait,
    /// Tell the sources to end their input.
    EndInput,
    /// The final checkpoint failed too often: end the input without it.
    GiveUp,
}

/// The sources' end of input within one attempt.
pub(super) struct EndOfInput {
    attempt: u64,
    sources: usize,
    ended: HashSet<(usize, usize)>,
    /// The final checkpoint while it is in flight.
    in_flight: Option<u64>,
    failures: u32,
    /// The sources were told to end their input.
    released: bool,
}

impl EndOfInput {
    /// `sources`: the attempt's source subtasks, all of which must end first.
    pub fn new(attempt: u64, sources: usize) -> Self {
        EndOfInput {
            attempt,
            sources,
            ended: HashSet::new(),
            in_flight: None,
            failures: 0,
            released: false,
        }
    }

    /// A source subtask of `attempt` reached its end; reports of earlier attempts are ignored.
    pub fn source_ended(&mut self, attempt: u64, task: usize, subtask: usize) {
        if attempt == self.attempt {
            self.ended.insert((task, subtask));
        }
    }

    /// Every source ended: periodic checkpoints give way to the final one, and none starts
    /// after it (the sources are ending and would not take part).
    pub fn all_ended(&self) -> bool {
        self.sources > 0 && self.ended.len() >= self.sources
    }

    /// Every source ended and the final checkpoint is still to come.
    pub fn waiting(&self) -> bool {
        !self.released && self.all_ended()
    }

    /// Whether to trigger the final checkpoint now: nothing else is in flight, and it is the
    /// first try (at once) or a retry whose periodic interval has passed.
    pub fn due(&self, coord: &CheckpointCoordinator, now: Instant) -> bool {
        self.waiting()
            && self.in_flight.is_none()
            && coord.counts().in_progress == 0
            && (self.failures == 0 || coord.periodic_due(now))
    }

    /// The final checkpoint was triggered as `id`, or could not even start (`None`).
    pub fn triggered(&mut self, id: Option<u64>) -> Outcome {
        match id {
            Some(id) => {
                self.in_flight = Some(id);
                Outcome::Wait
            }
            None => self.failure(),
        }
    }

    /// Checkpoint `id` completed.
    pub fn completed(&mut self, id: u64) -> Outcome {
        if self.in_flight == Some(id) {
            self.in_flight = None;
            self.released = true;
            Outcome::EndInput
        } else {
            Outcome::Wait
        }
    }

    /// Checkpoint `id` failed or expired.
    pub fn failed(&mut self, id: u64) -> Outcome {
        if self.in_flight == Some(id) {
            self.in_flight = None;
            self.failure()
        } else {
            Outcome::Wait
        }
    }

    fn failure(&mut self) -> Outcome {
        self.failures += 1;
        if self.failures >= FINAL_CHECKPOINT_ATTEMPTS {
            self.released = true;
            Outcome::GiveUp
        } else {
            Outcome::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_checkpoint_waits_for_every_source_of_the_attempt() {
        let mut e = EndOfInput::new(1, 2);
        e.source_ended(0, 0, 0); // a late report of the previous attempt
        e.source_ended(1, 0, 0);
        e.source_ended(1, 0, 0);
        assert!(!e.waiting());
        e.source_ended(1, 0, 1);
        assert!(e.waiting());
        assert_eq!(e.triggered(Some(7)), Outcome::Wait);
        assert_eq!(
            e.completed(6),
            Outcome::Wait,
            "an older checkpoint is not final"
        );
        assert_eq!(e.completed(7), Outcome::EndInput);
        assert!(!e.waiting(), "released once");
        assert!(e.all_ended(), "no periodic checkpoint after the final one");
    }

    #[test]
    fn repeated_failures_end_the_input_without_a_final_checkpoint() {
        let mut e = EndOfInput::new(0, 1);
        e.source_ended(0, 0, 0);
        assert_eq!(e.triggered(None), Outcome::Wait);
        assert_eq!(e.triggered(Some(3)), Outcome::Wait);
        assert_eq!(e.failed(2), Outcome::Wait, "not the final checkpoint");
        assert_eq!(e.failed(3), Outcome::Wait);
        assert!(e.waiting());
        assert_eq!(e.triggered(Some(4)), Outcome::Wait);
        assert_eq!(e.failed(4), Outcome::GiveUp);
        assert_eq!(e.failures, FINAL_CHECKPOINT_ATTEMPTS);
        assert!(!e.waiting());
    }

    #[test]
    fn a_job_without_sources_never_waits() {
        assert!(!EndOfInput::new(0, 0).all_ended());
    }
}
