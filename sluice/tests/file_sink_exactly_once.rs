//! The rolling file sink with checkpointing: parts become visible when the checkpoint covering
//! them completes, so after failures, restarts, a lost commit notification, or a stop with a
//! savepoint and a restore at another parallelism, the visible parts hold every record exactly
//! once and no in-progress part is left behind.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice::Collector;
use sluice::prelude::*;
use sluice::{Batch, CheckpointStatus, JobStatus, Operator, OperatorContext, SluiceError};
use sluice_testkit::assert_same;
use sluice_worker::data::Barrier;
use sluice_worker::snapshot::OperatorSnapshot;

mod sink_support;
use sink_support::*;

/// In-progress parts as a crashed process would leave them (its sink never closed): of
/// subtask 1, and of subtask 5 (above any parallelism here, so subtask 0 removes it).
fn plant_leftovers(dir: &Path) {
    for name in [
        ".part-1-40.0123abcd.inprogress",
        ".part-5-0.0123abcd.inprogress",
    ] {
        std::fs::write(dir.join(name), "record 999999\n").unwrap();
    }
}

/// Generated numbers (one source subtask) → a flat map that fails once at each of `fail_at`
/// → lines, rebalanced → the file sink at the env's parallelism.
fn failing_job(env: &StreamEnv, out: &Path, count: u64, rate: f64, fail_at: Vec<u64>) {
    let flags: Arc<Vec<(u64, AtomicBool)>> = Arc::new(
        fail_at
            .into_iter()
            .map(|v| (v, AtomicBool::new(false)))
            .collect(),
    );
    env.generate(Some(count), Some(rate), |i| i)
        .uid("numbers")
        .set_parallelism(1)
        .try_flat_map(move |x: u64, out: &mut Collector<String>| {
            for (v, fired) in flags.iter() {
                if *v == x && !fired.swap(true, Ordering::SeqCst) {
                    return Err(SluiceError::job(format!("injected failure at {x}")));
                }
            }
            out.collect(line(x));
            Ok(())
        })
        .uid("maybe-fail")
        .set_parallelism(1)
        .rebalance()
        .write_text_files(out, small_parts())
        .uid("sink");
}

#[test]
fn injected_failures_publish_every_line_exactly_once() {
    let ck = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let count = 6000;
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, ck.path(), "30 ms");
    plant_leftovers(out.path());
    failing_job(&env, out.path(), count, 12_000.0, vec![1500, 3100, 4700]);
    let r = env.execute("file sink exactly-once").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    assert_eq!(r.restarts, 3);
    assert!(
        r.checkpoints
            .iter()
            .any(|c| c.status == CheckpointStatus::Completed),
        "{:?}",
        r.checkpoints
    );
    let d = read_sink_dir(out.path());
    assert!(d.in_progress.is_empty(), "left: {:?}", d.in_progress);
    assert!(
        d.visible.keys().any(|n| n.starts_with("part-0-"))
            && d.visible.keys().any(|n| n.starts_with("part-1-")),
        "{:?}",
        d.visible.keys()
    );
    assert_same(
        lines_of(&d.visible),
        expected_lines(count),
        "after 3 failures",
    );

    // The same job without failures writes the same lines.
    let ck = tempfile::tempdir().unwrap();
    let clean = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, ck.path(), "30 ms");
    failing_job(&env, clean.path(), count, 50_000.0, vec![]);
    assert_eq!(env.execute("failure-free").unwrap().restarts, 0);
    let c = read_sink_dir(clean.path());
    assert!(c.in_progress.is_empty(), "left: {:?}", c.in_progress);
    assert_same(
        lines_of(&d.visible),
        lines_of(&c.visible),
        "against failure-free",
    );
}

/// Generated lines → the file sink, all at the env's parallelism (chained into the source task).
fn stoppable_job(env: &StreamEnv, out: &Path, count: u64, rate: Option<f64>) {
    env.generate(Some(count), rate, line)
        .uid("lines")
        .write_text_files(out, small_parts())
        .uid("sink");
}

#[test]
fn stop_with_savepoint_then_restore_at_parallelism_three_into_the_same_directory() {
    let sp = tempfile::tempdir().unwrap();
    let ck = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let total = 8000;
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, ck.path(), "1 h"); // savepoints only
    stoppable_job(&env, out.path(), total, Some(8000.0));
    let client = env.execute_async("before").unwrap();
    while !client.is_finished() {
        if client
            .metrics()
            .get("sink")
            .is_some_and(|m| m.records_in > 2000)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let location = client
        .stop_with_savepoint(Some(sp.path().to_str().unwrap()), false)
        .unwrap();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    let first = read_sink_dir(out.path());
    assert!(
        first.in_progress.is_empty(),
        "left: {:?}",
        first.in_progress
    );
    let before = lines_of(&first.visible).len();
    assert!(
        before > 0 && before < total as usize,
        "{before} lines before the stop"
    );

    let env = StreamEnv::new();
    env.set_parallelism(3);
    // Savepoints only, and a throttled source so the first checkpoint (taken at the start)
    // completes before the source finishes.
    checkpointing(&env, ck.path(), "1 h");
    env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
    plant_leftovers(out.path());
    stoppable_job(&env, out.path(), total, Some(20_000.0));
    let r = env.execute("after").unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    let second = read_sink_dir(out.path());
    assert!(
        second.in_progress.is_empty(),
        "left: {:?}",
        second.in_progress
    );
    for (name, content) in &first.visible {
        assert_eq!(
            second.visible.get(name),
            Some(content),
            "{name} of the first run changed"
        );
    }
    assert!(
        second.visible.keys().any(|n| n.starts_with("part-2-")),
        "the third subtask wrote nothing: {:?}",
        second.visible.keys()
    );
    assert_same(
        lines_of(&second.visible),
        expected_lines(total),
        "stop, then restore at parallelism 3",
    );
}

/// Passes records on; fails (once over all subtasks) in the notification of the first completed
/// checkpoint whose barrier came after some records. Chained in front of the sink, it keeps the
/// notification from the sink: the checkpoint completed, its parts are not published.
struct FailOnCommitNotification {
    fired: Arc<AtomicBool>,
    /// Only this subtask fails, if set.
    only_subtask: Option<usize>,
    seen: u64,
    seen_at_barrier: HashMap<u64, u64>,
}

impl Operator for FailOnCommitNotification {
    type In = String;
    type Out = String;

    fn process_batch(
        &mut self,
        batch: Batch<String>,
        out: &mut Collector<String>,
        _ctx: &mut OperatorContext,
    ) -> sluice::Result<()> {
        self.seen += batch.len() as u64;
        for r in batch.data {
            out.collect(r);
        }
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        barrier: &Barrier,
        _ctx: &mut OperatorContext,
    ) -> sluice::Result<OperatorSnapshot> {
        self.seen_at_barrier
            .insert(barrier.checkpoint_id, self.seen);
        Ok(OperatorSnapshot::default())
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint_id: u64,
        ctx: &mut OperatorContext,
    ) -> sluice::Result<()> {
        let covered = self
            .seen_at_barrier
            .get(&checkpoint_id)
            .is_some_and(|n| *n > 0);
        let chosen = self.only_subtask.is_none_or(|s| s == ctx.subtask);
        if covered && chosen && !self.fired.swap(true, Ordering::SeqCst) {
            return Err(SluiceError::job(format!(
                "injected failure before the sink heard that checkpoint {checkpoint_id} completed"
            )));
        }
        Ok(())
    }
}

/// Generated lines (one source subtask), rebalanced → [`FailOnCommitNotification`] → the sink.
fn lost_notification_job(
    env: &StreamEnv,
    out: &Path,
    count: u64,
    rate: f64,
    fired: &Arc<AtomicBool>,
    only_subtask: Option<usize>,
) {
    let f = fired.clone();
    env.generate(Some(count), Some(rate), line)
        .uid("lines")
        .set_parallelism(1)
        .rebalance()
        .transform("fail-on-notify", move || FailOnCommitNotification {
            fired: f.clone(),
            only_subtask,
            seen: 0,
            seen_at_barrier: HashMap::new(),
        })
        .uid("fail-on-notify")
        .write_text_files(out, small_parts())
        .uid("sink");
}

#[test]
fn a_crash_between_checkpoint_completion_and_commit_still_publishes_exactly_once() {
    let ck = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let count = 5000;
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, ck.path(), "30 ms");
    let fired = Arc::new(AtomicBool::new(false));
    lost_notification_job(&env, out.path(), count, 10_000.0, &fired, None);
    let r = env.execute("lost notification").unwrap();
    assert!(fired.load(Ordering::SeqCst));
    assert_eq!(r.restarts, 1);
    assert!(
        r.restored_checkpoint.is_some(),
        "the restart restored no checkpoint"
    );
    let d = read_sink_dir(out.path());
    assert!(d.in_progress.is_empty(), "left: {:?}", d.in_progress);
    assert_same(
        lines_of(&d.visible),
        expected_lines(count),
        "after a lost notification",
    );
}

#[test]
fn without_checkpointing_parts_are_published_when_they_roll() {
    let out = tempfile::tempdir().unwrap();
    let env = StreamEnv::new();
    env.set_parallelism(2);
    let expected = expected_lines(3000);
    env.from_collection(expected.clone())
        .rebalance()
        .write_text_files(out.path(), small_parts())
        .uid("sink");
    env.execute("no checkpoints").unwrap();
    let d = read_sink_dir(out.path());
    assert!(d.in_progress.is_empty(), "left: {:?}", d.in_progress);
    assert!(d.visible.len() > 2, "{:?}", d.visible.keys());
    assert_same(lines_of(&d.visible), expected, "without checkpoints");
}

/// Subtask 2 of 3 crashes after a checkpoint completed, before it published; the job fails (no
/// restart strategy). Restoring its latest checkpoint at parallelism 2 must publish subtask 2's
/// parts (now owned by subtask 0) and remove what no checkpoint covers.
#[test]
fn a_lost_notification_is_published_by_a_restore_at_a_lower_parallelism() {
    let ck = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let count = 5000;
    let env = StreamEnv::new();
    env.set_parallelism(3);
    env.set("execution.checkpointing.interval", "30 ms")
        .unwrap();
    env.set("state.checkpoints.dir", ck.path().to_str().unwrap())
        .unwrap();
    env.set("restart-strategy.type", "none").unwrap();
    short_checkpoint_timeout(&env);
    let fired = Arc::new(AtomicBool::new(false));
    lost_notification_job(&env, out.path(), count, 10_000.0, &fired, Some(2));
    let client = env.execute_async("crashes").unwrap();
    let job_id = client.job_id().to_string();
    let e = client.wait().unwrap_err().to_string();
    assert!(e.contains("injected failure"), "{e}");
    let crashed = read_sink_dir(out.path());
    assert!(
        crashed
            .in_progress
            .iter()
            .any(|n| n.starts_with(".part-2-")),
        "subtask 2 left nothing to publish: {:?}",
        crashed.in_progress
    );
    let latest = std::fs::read_dir(ck.path().join(&job_id))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("_metadata").exists())
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("chk-")?
                .parse::<u64>()
                .ok()?;
            Some((n, p))
        })
        .max()
        .expect("a completed checkpoint")
        .1;

    let env = StreamEnv::new();
    env.set_parallelism(2);
    env.set("execution.checkpointing.interval", "1 h").unwrap();
    env.set("state.checkpoints.dir", ck.path().to_str().unwrap())
        .unwrap();
    env.set(sluice::RESTORE_PATH_KEY, latest.to_str().unwrap())
        .unwrap();
    short_checkpoint_timeout(&env);
    lost_notification_job(&env, out.path(), count, 20_000.0, &fired, None);
    env.execute("restored").unwrap();
    let d = read_sink_dir(out.path());
    assert!(d.in_progress.is_empty(), "left: {:?}", d.in_progress);
    assert_same(
        lines_of(&d.visible),
        expected_lines(count),
        "restored at parallelism 2",
    );
}
