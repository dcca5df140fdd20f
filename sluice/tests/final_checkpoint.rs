//! The final checkpoint at the end of bounded input (Flink's FLIP-147): a source that reaches
//! its end waits for a checkpoint covering all output before the job's tasks end, so a failure
//! elsewhere after one pipeline ended never replays what that pipeline's sink published.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice::prelude::*;
use sluice::{CheckpointStatus, Collector, JobStatus, SluiceError};
use sluice_testkit::assert_same;

mod sink_support;
use sink_support::*;

const SHORT: u64 = 500;
const LONG: u64 = 3000;
const FAIL_AT: u64 = 1500;

/// Whether a visible part in `dir` holds `wanted`.
fn published(dir: &Path, wanted: &str) -> bool {
    read_sink_dir(dir)
        .visible
        .values()
        .any(|c| c.lines().any(|l| l == wanted))
}

/// Two pipelines in one job. The short one (`SHORT` lines at 5,000/s) ends early. The long one
/// (`LONG` lines at 5,000/s) fails once at `FAIL_AT`, but only after the short pipeline's sink
/// has published its last line, so the failure always strikes after the short pipeline's end.
fn short_and_long_job(env: &StreamEnv, short_out: &Path, long_out: &Path) {
    env.generate(Some(SHORT), Some(5000.0), line)
        .uid("short-lines")
        .set_parallelism(1)
        .write_text_files(short_out, small_parts())
        .uid("short-sink");
    let fired = Arc::new(AtomicBool::new(false));
    let short_dir: PathBuf = short_out.to_path_buf();
    env.generate(Some(LONG), Some(5000.0), |i| i)
        .uid("numbers")
        .set_parallelism(1)
        .try_flat_map(move |x: u64, out: &mut Collector<String>| {
            if x == FAIL_AT && !fired.swap(true, Ordering::SeqCst) {
                let last = line(SHORT - 1);
                let deadline = Instant::now() + Duration::from_secs(20);
                while !published(&short_dir, &last) {
                    if Instant::now() > deadline {
                        return Err(SluiceError::job(format!(
                            "the short pipeline did not publish {last:?} within 20 s"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Err(SluiceError::job(format!("injected failure at {x}")));
            }
            out.collect(line(x));
            Ok(())
        })
        .uid("maybe-fail")
        .set_parallelism(1)
        .write_text_files(long_out, small_parts())
        .uid("long-sink");
}

fn run(after_tasks_finish: bool) -> (Vec<String>, Vec<String>, sluice::JobResult) {
    let ck = tempfile::tempdir().unwrap();
    let short = tempfile::tempdir().unwrap();
    let long = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    checkpointing(&env, ck.path(), "30 ms");
    env.set(
        "execution.checkpointing.checkpoints-after-tasks-finish",
        if after_tasks_finish { "true" } else { "false" },
    )
    .unwrap();
    short_and_long_job(&env, short.path(), long.path());
    let r = env.execute("short and long").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(r.restarts, 1, "the injected failure restarts the job once");
    let (s, l) = (read_sink_dir(short.path()), read_sink_dir(long.path()));
    assert!(s.in_progress.is_empty(), "left: {:?}", s.in_progress);
    assert!(l.in_progress.is_empty(), "left: {:?}", l.in_progress);
    (lines_of(&s.visible), lines_of(&l.visible), r)
}

#[test]
fn a_failure_after_one_pipeline_ended_replays_nothing_it_published() {
    let (short, long, r) = run(true);
    assert_same(short, expected_lines(SHORT), "the short pipeline");
    assert_same(long, expected_lines(LONG), "the long pipeline");
    // The job ended on its final checkpoint: the last history entry is a completed checkpoint.
    let last = r
        .checkpoints
        .iter()
        .max_by_key(|c| c.id)
        .expect("checkpoints");
    assert_eq!(
        last.status,
        CheckpointStatus::Completed,
        "{:?}",
        r.checkpoints
    );
}

/// The same job without final checkpoints shows what they prevent: the short pipeline's sink
/// publishes everything at its end of input, the failure restarts the job from a checkpoint
/// taken before that end, and the replay publishes the short pipeline's tail again.
#[test]
fn without_final_checkpoints_that_failure_publishes_lines_twice() {
    let (short, long, _) = run(false);
    assert!(
        short.len() > SHORT as usize,
        "expected duplicates, got {} lines",
        short.len()
    );
    let mut unique = short.clone();
    unique.sort();
    unique.dedup();
    assert_same(
        unique,
        expected_lines(SHORT),
        "the short pipeline, deduplicated",
    );
    assert_same(long, expected_lines(LONG), "the long pipeline");
}
