//! The application's result, recorded in ZooKeeper before its job leaves the HA job store.
//!
//! The master removes a job from the HA job store as the job ends. Were the result recorded
//! only after that, an ApplicationMaster dying in between would leave neither the job nor
//! the result, and the next attempt would submit the staged job again. So the AM hooks the
//! store's removal ([`crate::ha::store::JobStore::before_remove`]): the result of the job the
//! application follows is written first, and a failed write keeps the job stored (the next
//! attempt then recovers it and it ends again).
//!
//! When the removal runs, the job's final status is not published yet, so the result is
//! read from what its view says at that point: `Failed` (with its latest root cause),
//! `Cancelling` (cancelled), otherwise finished. When the AM itself ends the job (too many
//! failed containers, the ResourceManager's shutdown) it sets the verdict before cancelling,
//! and that wins.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use sluice_core::{Config, SluiceError};

use super::ha::{AppResult, record_result};
use super::proto::yarn::FinalApplicationStatusProto;
use crate::ha::Ha;
use crate::job::{JobHandle, JobView};
use crate::job_status::JobStatus;

/// How long a removal waits for the AM to say which job it follows: a job may end while the
/// AM is still between submitting it and registering its handle.
const FOLLOW_WAIT: Duration = Duration::from_secs(10);

enum Followed {
    /// Not known yet.
    Unknown,
    Job(JobHandle),
    /// The AM runs no job (it could not start one).
    Nothing,
}

/// Which job the application follows and, once the AM decided it, the application's verdict.
pub struct ResultRecorder {
    followed: Mutex<Followed>,
    known: Condvar,
    verdict: Mutex<Option<AppResult>>,
}

impl Default for ResultRecorder {
    fn default() -> Self {
        ResultRecorder {
            followed: Mutex::new(Followed::Unknown),
            known: Condvar::new(),
            verdict: Mutex::new(None),
        }
    }
}

impl ResultRecorder {
    /// The application's result is the result of `job`.
    pub fn follow(&self, job: JobHandle) {
        self.set_followed(Followed::Job(job));
    }

    /// The application runs no job: no removal records a result.
    pub fn follow_nothing(&self) {
        self.set_followed(Followed::Nothing);
    }

    fn set_followed(&self, f: Followed) {
        *self.followed.lock().unwrap_or_else(|e| e.into_inner()) = f;
        self.known.notify_all();
    }

    /// The application ends with `result` whatever the job's own status says (the AM cancels
    /// the job because of something outside it).
    pub fn set_verdict(&self, result: AppResult) {
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    }

    /// The result to record as `job_id` leaves the store: `None` for a job the application
    /// does not follow.
    pub fn result_for(&self, job_id: &str) -> Option<AppResult> {
        let deadline = Instant::now() + FOLLOW_WAIT;
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        while matches!(*followed, Followed::Unknown) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                eprintln!(
                    "sluice-am: job {job_id} ended before the application followed a job; its \
                     result is recorded when the application ends"
                );
                return None;
            }
            followed = self
                .known
                .wait_timeout(followed, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let Followed::Job(job) = &*followed else {
            return None;
        };
        if job.job_id() != job_id {
            return None;
        }
        let verdict = self
            .verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(resolve(verdict, job_id, &job.view()))
    }

    /// Records the followed job's result before the job leaves `ha`'s store.
    pub fn install(self: &Arc<Self>, ha: &Arc<Ha>, config: &Config) {
        let (recorder, ha_ref, config) = (self.clone(), Arc::downgrade(ha), config.clone());
        ha.store.before_remove(Box::new(move |job_id| {
            let Some(result) = recorder.result_for(job_id) else {
                return Ok(());
            };
            let ha = Weak::upgrade(&ha_ref)
                .ok_or_else(|| SluiceError::Job("the ApplicationMaster is ending".into()))?;
            record_result(&ha, &config, &result).map_err(|e| {
                SluiceError::Job(format!(
                    "the application's result could not be recorded, so job {job_id} stays \
                     stored: {e}"
                ))
            })?;
            eprintln!(
                "sluice-am: recorded the application's result ({:?}) before job {job_id} left \
                 the HA job store",
                result.status()
            );
            Ok(())
        }));
    }
}

/// The AM's verdict if it set one, else the result of the job's view.
fn resolve(verdict: Option<AppResult>, job_id: &str, view: &JobView) -> AppResult {
    verdict.unwrap_or_else(|| result_of(job_id, view))
}

/// The application's result for a job ending with `view` (see the module documentation).
pub fn result_of(job_id: &str, view: &JobView) -> AppResult {
    use FinalApplicationStatusProto::*;
    let (status, diagnostics) = match view.status {
        JobStatus::Failed => {
            let cause = view
                .failure
                .clone()
                .or_else(|| view.exceptions.last().map(|(_, e)| e.clone()));
            let diagnostics = match cause {
                Some(c) => format!("the job {job_id} failed: {c}"),
                None => format!("the job {job_id} ended as Failed"),
            };
            (AppFailed, diagnostics)
        }
        JobStatus::Cancelling | JobStatus::Canceled => {
            (AppKilled, format!("the job {job_id} was cancelled"))
        }
        _ => (AppSucceeded, String::new()),
    };
    AppResult {
        status: status as i32,
        diagnostics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: JobStatus, exceptions: &[&str]) -> JobView {
        JobView {
            status,
            exceptions: exceptions.iter().map(|e| (1, e.to_string())).collect(),
            ..JobView::default()
        }
    }

    #[test]
    fn the_result_follows_the_status_the_job_ends_with() {
        use FinalApplicationStatusProto::*;
        let r = result_of("j1", &view(JobStatus::Running, &[]));
        assert_eq!((r.status(), r.diagnostics.as_str()), (AppSucceeded, ""));
        let r = result_of("j1", &view(JobStatus::Cancelling, &[]));
        assert_eq!(r.status(), AppKilled);
        assert!(r.diagnostics.contains("j1 was cancelled"), "{r:?}");
        let r = result_of("j1", &view(JobStatus::Failed, &["first", "disk full"]));
        assert_eq!(r.status(), AppFailed);
        assert_eq!(r.diagnostics, "the job j1 failed: disk full");
        let r = result_of("j1", &view(JobStatus::Failed, &[]));
        assert_eq!(r.diagnostics, "the job j1 ended as Failed");
    }

    #[test]
    fn nothing_is_recorded_for_a_job_the_application_does_not_follow() {
        let recorder = Arc::new(ResultRecorder::default());
        let r2 = recorder.clone();
        // A removal waits until the AM says what it follows.
        let waiting = std::thread::spawn(move || r2.result_for("some-job"));
        std::thread::sleep(Duration::from_millis(50));
        recorder.follow_nothing();
        assert_eq!(waiting.join().unwrap(), None);
    }

    #[test]
    fn the_ams_verdict_wins_over_the_jobs_status() {
        let verdict = AppResult {
            status: FinalApplicationStatusProto::AppFailed as i32,
            diagnostics: "too many failed containers".into(),
        };
        // The AM cancels the job: its view says Cancelling, the application failed.
        let cancelled = view(JobStatus::Cancelling, &[]);
        assert_eq!(resolve(Some(verdict.clone()), "j", &cancelled), verdict);
        assert_eq!(
            resolve(None, "j", &cancelled).status(),
            FinalApplicationStatusProto::AppKilled
        );
    }
}
