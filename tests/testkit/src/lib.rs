//! The jobs and checks that Sluice's exactly-once tests share: a job whose output is known
//! exactly, injected failures, and a multiset comparison that reports what differs.

pub mod processes;

pub use processes::{committed_lines, release_bin, stripped_bundle, stripped_copy};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice::{CollectHandle, Collector, SluiceError, StreamEnv};

pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Asserts two multisets are equal, reporting counts and examples of what is extra and what
/// is missing (never whole vectors).
pub fn assert_same<T: Ord + std::fmt::Debug>(got: Vec<T>, expected: Vec<T>, what: &str) {
    let mut counts: BTreeMap<&T, i64> = BTreeMap::new();
    for r in &got {
        *counts.entry(r).or_default() += 1;
    }
    for r in &expected {
        *counts.entry(r).or_default() -= 1;
    }
    let extra: Vec<_> = counts.iter().filter(|(_, c)| **c > 0).take(5).collect();
    let missing: Vec<_> = counts.iter().filter(|(_, c)| **c < 0).take(5).collect();
    let n_extra: i64 = counts.values().filter(|c| **c > 0).sum();
    let n_missing: i64 = -counts.values().filter(|c| **c < 0).sum::<i64>();
    assert!(
        n_extra == 0 && n_missing == 0,
        "{what}: got {} records, expected {}; {n_extra} extra (e.g. {extra:?}), {n_missing} missing (e.g. {missing:?})",
        got.len(),
        expected.len()
    );
}

/// Periodic checkpoints into `dir` and fixed-delay restarts (10 ms).
pub fn checkpointing(env: &StreamEnv, dir: &str, interval: &str) {
    for (k, v) in [
        ("execution.checkpointing.interval", interval),
        ("state.checkpoints.dir", dir),
        ("restart-strategy.type", "fixed-delay"),
        ("restart-strategy.fixed-delay.delay", "10 ms"),
    ] {
        env.set(k, v).unwrap();
    }
}

/// Generated numbers `0..count` → a flat map failing once at each value of `fail_at` → keyed
/// running sums over 17 keys → collected into `out`. Source and map run with parallelism 1 so
/// each key's records arrive in one order and the running sums are deterministic; the sums run
/// with the environment's parallelism.
pub fn sums_job_into(
    env: &StreamEnv,
    count: u64,
    rate: Option<f64>,
    fail_at: Vec<u64>,
    out: &CollectHandle<(u64, u64)>,
) {
    let flags: Arc<Vec<(u64, AtomicBool)>> = Arc::new(
        fail_at
            .into_iter()
            .map(|v| (v, AtomicBool::new(false)))
            .collect(),
    );
    let fail = move |x: u64| {
        flags
            .iter()
            .any(|(v, fired)| *v == x && !fired.swap(true, Ordering::SeqCst))
    };
    sums_job_failing_when(env, count, rate, fail, out);
}

/// The sums job of [`sums_job_into`], failing whenever `fail(record)` says so.
pub fn sums_job_failing_when<F>(
    env: &StreamEnv,
    count: u64,
    rate: Option<f64>,
    fail: F,
    out: &CollectHandle<(u64, u64)>,
) where
    F: Fn(u64) -> bool + Clone + Send + Sync + 'static,
{
    env.generate(Some(count), rate, |i| i)
        .uid("numbers")
        .set_parallelism(1)
        .try_flat_map(move |x: u64, out: &mut Collector<(u64, u64)>| {
            if fail(x) {
                return Err(SluiceError::job(format!("injected failure at {x}")));
            }
            out.collect((x % 17, x));
            Ok(())
        })
        .uid("maybe-fail")
        .set_parallelism(1)
        .key_by_field(|r: &(u64, u64)| &r.0)
        .sum()
        .uid("sums")
        .collect_into(out);
}

/// Like [`sums_job_into`], into a fresh handle.
pub fn sums_job(
    env: &StreamEnv,
    count: u64,
    rate: Option<f64>,
    fail_at: Vec<u64>,
) -> CollectHandle<(u64, u64)> {
    let out = CollectHandle::default();
    sums_job_into(env, count, rate, fail_at, &out);
    out
}

/// The output of a failure-free run of the sums job: every running sum, sorted.
pub fn expected_sums(count: u64) -> Vec<(u64, u64)> {
    let mut acc: BTreeMap<u64, u64> = BTreeMap::new();
    sorted(
        (0..count)
            .map(|x| {
                let s = acc.entry(x % 17).or_insert(0);
                *s += x;
                (x % 17, *s)
            })
            .collect(),
    )
}
