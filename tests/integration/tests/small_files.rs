//! Small files on HDFS: a checkpoint of a job with 100 stateful operators writes one file
//! (`_metadata`) plus one per state at or above `state.storage.fs.memory-threshold` (20 KiB by
//! default); smaller states are inlined in `_metadata`. Prints, per checkpoint, the files and
//! the NameNode operations it cost (from the NameNode's JMX counters), and the same with every
//! state in a file of its own for comparison.
//!
//! Run with the cluster up:
//!   scripts/testcluster.sh up hdfs
//!   cargo test --release -p sluice-integration-tests --test small_files -- --test-threads=1 --nocapture

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Raw, cluster, counter_delta, hdfs_dir, nn_counters, path_of};
use sluice::prelude::*;
use sluice::{CheckpointStatus, CollectHandle, JobStatus};
use sluice_hdfs_backend::{StateHandle, load_snapshot};
use sluice_integration_tests::TestCluster;
use sluice_testkit::{assert_same, checkpointing, sorted};

const OPERATORS: usize = 100;
/// More than the job gets through: the test stops it with a savepoint.
const TOTAL: u64 = 10_000_000;
const RATE: f64 = 1000.0;
const PARALLELISM: usize = 2;
const CHECKPOINTS: usize = 3;

/// Numbers → (x % 17, x) → 100 keyed rolling counts in a row, each counting the records of
/// its key (so each has a little keyed state: one count per key) → collected.
fn hundred_counts(env: &StreamEnv, out: &CollectHandle<(u64, u64)>) {
    let mut s = env
        .generate(Some(TOTAL), Some(RATE), |i| i)
        .uid("numbers")
        .set_parallelism(1)
        .map(|x: u64| (x % 17, x))
        .uid("pairs")
        .set_parallelism(1);
    for i in 0..OPERATORS {
        s = s
            .key_by_field(|r: &(u64, u64)| &r.0)
            .count()
            .uid(&format!("count-{i}"));
    }
    s.collect_into(out);
}

/// What the job outputs for the records `0..n` without failures: every key's running count,
/// from 1 to its total.
fn expected_counts(n: u64) -> Vec<(u64, u64)> {
    let mut totals = BTreeMap::new();
    for x in 0..n {
        *totals.entry(x % 17).or_insert(0u64) += 1;
    }
    sorted(
        totals
            .into_iter()
            .flat_map(|(k, n)| (1..=n).map(move |c| (k, c)))
            .collect(),
    )
}

/// One measured checkpoint.
struct Measured {
    files: usize,
    inline: usize,
    in_files: usize,
    count_states: usize,
    ops: BTreeMap<&'static str, u64>,
}

/// Runs the job with checkpoints to HDFS when the test asks, `threshold` as the inline
/// threshold (`None`: the default), and measures each checkpoint; checks the output exactly.
fn run(cluster: &TestCluster, threshold: Option<&str>, label: &str) -> Vec<Measured> {
    let dir = hdfs_dir(cluster, "small-files");
    let env = StreamEnv::new();
    env.set_parallelism(PARALLELISM);
    checkpointing(&env, &format!("{dir}/checkpoints"), "1 h");
    if let Some(t) = threshold {
        env.set("state.storage.fs.memory-threshold", t).unwrap();
    }
    let out = CollectHandle::default();
    hundred_counts(&env, &out);
    let client = env.execute_async(label).unwrap();
    let raw = Raw::new(cluster);
    let mut measured = Vec::new();
    // The first checkpoint is taken as the job starts; measure the ones the test triggers.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .view()
        .checkpoints
        .iter()
        .any(|c| c.status == CheckpointStatus::Completed)
        || client
            .view()
            .checkpoints
            .iter()
            .any(|c| c.status == CheckpointStatus::InProgress)
    {
        assert!(
            Instant::now() < deadline,
            "the first checkpoint did not complete"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..CHECKPOINTS {
        let before = nn_counters(cluster);
        let location = client.trigger_checkpoint().unwrap();
        let ops = counter_delta(&before, &nn_counters(cluster));
        let files = raw.files_under(&path_of(&location));
        let (_, meta) = load_snapshot(&location).unwrap();
        let handles: Vec<(&str, &StateHandle)> = meta
            .operators
            .iter()
            .flat_map(|o| o.subtasks.iter().map(move |s| (o.uid.as_str(), &s.handle)))
            .collect();
        let in_files = handles
            .iter()
            .filter(|(_, h)| matches!(h, StateHandle::File { .. }))
            .count();
        let m = Measured {
            files: files.len(),
            inline: handles.len() - in_files,
            in_files,
            count_states: handles
                .iter()
                .filter(|(uid, _)| uid.starts_with("count-"))
                .count(),
            ops,
        };
        eprintln!(
            "{label}: {} files in {} ({} states inline, {} in files); NameNode operations: {:?}",
            m.files,
            location.rsplit('/').next().unwrap(),
            m.inline,
            m.in_files,
            m.ops
        );
        assert!(
            m.files < 3 + m.in_files,
            "{label}: {} files for {} states in files: {files:?}",
            m.files,
            m.in_files
        );
        assert!(
            m.ops["CreateFileOps"] >= m.files as u64,
            "{label}: every file was created: {:?}",
            m.ops
        );
        assert_eq!(
            m.count_states,
            OPERATORS * PARALLELISM,
            "{label}: every count subtask has state"
        );
        measured.push(m);
    }
    client
        .stop_with_savepoint(Some(&format!("{dir}/savepoints")), false)
        .unwrap();
    let r = client.wait().unwrap();
    assert_eq!(r.status, JobStatus::Finished);
    // Every record the source emitted before the savepoint went through all 100 counts once.
    let n = out.len() as u64;
    assert!(n > 0, "{label}: no output");
    assert_same(out.get(), expected_counts(n), label);
    raw.delete(&path_of(&dir), true);
    measured
}

#[test]
fn a_hundred_operator_checkpoint_inlines_small_state() {
    let cluster = cluster();
    let inline = run(&cluster, None, "default threshold (20 KiB)");
    for m in &inline {
        // The keyed counts (a few bytes per key) are all inline; at most the sink's staged
        // records of the last seconds can reach 20 KiB.
        assert!(m.in_files <= PARALLELISM, "{} states in files", m.in_files);
        assert!(m.inline >= OPERATORS * PARALLELISM);
        assert!(m.files <= 1 + PARALLELISM, "{} files", m.files);
    }
    let separate = run(&cluster, Some("0"), "threshold 0 (a file per state)");
    for m in &separate {
        assert_eq!(m.inline, 0);
        assert_eq!(m.files, m.in_files + 1, "the state files and _metadata");
    }
    let avg = |ms: &[Measured], k: &str| {
        ms.iter().map(|m| m.ops[k]).sum::<u64>() as f64 / ms.len() as f64
    };
    eprintln!(
        "per checkpoint, inline vs. a file per state: files {:.0} vs {:.0}, CreateFileOps {:.0} \
         vs {:.0}, FilesRenamed {:.0} vs {:.0}, edit log transactions {:.0} vs {:.0}",
        inline.iter().map(|m| m.files).sum::<usize>() as f64 / inline.len() as f64,
        separate.iter().map(|m| m.files).sum::<usize>() as f64 / separate.len() as f64,
        avg(&inline, "CreateFileOps"),
        avg(&separate, "CreateFileOps"),
        avg(&inline, "FilesRenamed"),
        avg(&separate, "FilesRenamed"),
        avg(&inline, "TransactionsNumOps"),
        avg(&separate, "TransactionsNumOps"),
    );
}
