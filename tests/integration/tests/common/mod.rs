//! Helpers shared by the HDFS test files (`hdfs_faults.rs`, `small_files.rs`); each test file
//! is its own crate and uses a part of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use hdfs_native::{Client, ClientBuilder};
use sluice::prelude::*;
use sluice::{
    CheckpointStats, CheckpointStatus, CollectHandle, JobClient, JobResult, JobStatus, JobView,
};
use sluice_integration_tests::{TestCluster, unique};
use sluice_testkit::{assert_same, expected_sums, sums_job_failing_when, sums_job_into};

/// The cluster with HDFS up, and `HADOOP_CONF_DIR` pointing at its configuration (as Hadoop
/// tools expect), so `hdfs://` URLs and paths without a scheme resolve as in production.
pub fn cluster() -> TestCluster {
    let cluster = TestCluster::ensure_up(&["hdfs"]).expect("the test cluster's HDFS must be up");
    static ENV: Once = Once::new();
    let conf = cluster.conf_dir().to_path_buf();
    ENV.call_once(|| {
        // SAFETY: set once, before any HDFS client of this process reads it, and never
        // changed; the tests run with --test-threads=1.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("HADOOP_CONF_DIR", &conf)
        };
    });
    assert_eq!(
        std::env::var_os("HADOOP_CONF_DIR").as_deref(),
        Some(conf.as_os_str())
    );
    // Every test starts with the clients' default settings.
    sluice_hdfs_backend::hdfs::configure(Default::default());
    cluster
}

/// A fresh directory URL on the cluster's HDFS.
pub fn hdfs_dir(cluster: &TestCluster, what: &str) -> String {
    format!(
        "{}/sluice-it/{}",
        cluster.hdfs_url().trim_end_matches('/'),
        unique(what)
    )
}

/// The path part of an `hdfs://authority/path` URL.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest[rest.find('/').unwrap_or(rest.len())..].to_string()
}

/// A raw hdfs-native client, independent of the storage under test, with a runtime for it.
pub struct Raw {
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
}

impl Raw {
    pub fn new(cluster: &TestCluster) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = ClientBuilder::new()
            .with_url(cluster.hdfs_url())
            .with_config_dir(cluster.conf_dir().to_string_lossy())
            .with_io_runtime(rt.handle().clone())
            .build()
            .unwrap();
        Raw { rt, client }
    }

    /// Names directly under a directory, sorted.
    pub fn names(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .rt
            .block_on(self.client.list_status(dir, false))
            .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
            .into_iter()
            .map(|s| s.path.rsplit('/').next().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// Every file (not directory) under a directory, recursively: (path, length), sorted.
    pub fn files_under(&self, dir: &str) -> Vec<(String, usize)> {
        let mut files: Vec<(String, usize)> = self
            .rt
            .block_on(self.client.list_status(dir, true))
            .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
            .into_iter()
            .filter(|s| !s.isdir)
            .map(|s| (s.path, s.length))
            .collect();
        files.sort();
        files
    }

    pub fn exists(&self, path: &str) -> bool {
        self.rt.block_on(self.client.get_file_info(path)).is_ok()
    }

    pub fn delete(&self, path: &str, recursive: bool) {
        self.rt
            .block_on(self.client.delete(path, recursive))
            .unwrap_or_else(|e| panic!("deleting {path}: {e}"));
    }
}

/// Brings a process of the cluster back when dropped (also when a test fails half-way), so
/// one failed fault test does not leave the cluster broken for the next: restarts it if it
/// is dead, continues it if it is paused.
pub struct Revive(pub &'static str);

impl Drop for Revive {
    fn drop(&mut self) {
        let Ok(mut c) = TestCluster::open() else {
            return;
        };
        if c.process_alive(self.0) {
            let _ = c.resume(self.0);
        } else if let Err(e) = c.restart(self.0) {
            eprintln!("could not restart {}: {e}", self.0);
        }
    }
}

/// The NameNode counters reported per checkpoint.
pub const NN_COUNTERS: &[&str] = &[
    "CreateFileOps",
    "FilesCreated",
    "FilesRenamed",
    "DeleteFileOps",
    "FileInfoOps",
    "GetListingOps",
    "AddBlockOps",
    "TotalFileOps",
    "TransactionsNumOps",
];

/// The NameNode's operation counters ([`NN_COUNTERS`]) once every operation so far shows in
/// them: the cluster publishes metrics to JMX once a second, so this waits a little longer.
pub fn nn_counters(cluster: &TestCluster) -> BTreeMap<&'static str, u64> {
    std::thread::sleep(Duration::from_millis(1300));
    let m = cluster
        .namenode_metrics("NameNodeActivity")
        .expect("the NameNode's JMX metrics");
    NN_COUNTERS
        .iter()
        .map(|k| {
            let v = m
                .get(*k)
                .and_then(|v| v.as_u64())
                .unwrap_or_else(|| panic!("no counter {k} in NameNodeActivity"));
            (*k, v)
        })
        .collect()
}

pub fn counter_delta(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, u64> {
    after
        .iter()
        .map(|(k, v)| (*k, v.saturating_sub(before[k])))
        .collect()
}

/// The testkit's sums job, rate-limited so it outlasts a fault injected while it runs, and
/// with one failure that fires when [`LongJob::fail_and_recover`] arms it. The test ends it
/// with [`LongJob::finish_exactly`].
pub struct LongJob {
    pub client: JobClient,
    pub out: CollectHandle<(u64, u64)>,
    armed: Arc<AtomicBool>,
    total: u64,
}

impl LongJob {
    /// `total` records at `rate` per second, on `env` (configured by the caller).
    pub fn start(env: &StreamEnv, name: &str, total: u64, rate: f64) -> Self {
        let armed = Arc::new(AtomicBool::new(false));
        let a = armed.clone();
        let fail = move |_x: u64| a.swap(false, Ordering::SeqCst);
        let out = CollectHandle::default();
        sums_job_failing_when(env, total, Some(rate), fail, &out);
        let client = env.execute_async(name).unwrap();
        LongJob {
            client,
            out,
            armed,
            total,
        }
    }

    /// Polls the job's view until `done` holds; panics with the view after `timeout`.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&JobView) -> bool,
    ) -> JobView {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.client.view();
            if done(&v) {
                return v;
            }
            assert!(
                !self.client.is_finished(),
                "the job ended while waiting for {what}: {:?}",
                v.status
            );
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; checkpoints: {:?}",
                summary(&v.checkpoints)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The highest checkpoint id triggered so far (0 if none).
    pub fn last_checkpoint_id(&self) -> u64 {
        self.client
            .view()
            .checkpoints
            .iter()
            .map(|c| c.id)
            .max()
            .unwrap_or(0)
    }

    /// Waits for a checkpoint with an id above `after` to complete; returns its id.
    pub fn completed_after(&self, after: u64, timeout: Duration) -> u64 {
        let v = self.wait_until(
            &format!("completed checkpoint after {after}"),
            timeout,
            |v| {
                v.checkpoints
                    .iter()
                    .any(|c| c.id > after && c.status == CheckpointStatus::Completed)
            },
        );
        v.checkpoints
            .iter()
            .filter(|c| c.id > after && c.status == CheckpointStatus::Completed)
            .map(|c| c.id)
            .min()
            .unwrap()
    }

    /// Lets one record fail the job, and waits until it restored from a checkpoint at least
    /// `min_id`; returns the checkpoint it restored from.
    pub fn fail_and_recover(&self, min_id: u64) -> u64 {
        let before = self.client.view().restored_checkpoint;
        self.armed.store(true, Ordering::SeqCst);
        let v = self.wait_until("restart from a checkpoint", Duration::from_secs(60), |v| {
            v.restored_checkpoint != before && v.status == JobStatus::Running
        });
        let id = v.restored_checkpoint.unwrap();
        assert!(
            id >= min_id,
            "restored from {id}, expected {min_id} or later"
        );
        id
    }

    /// Stops the job with a savepoint in `savepoint_dir` and checks its output is exactly the
    /// failure-free output of the records before the savepoint; then restores a new job from
    /// the savepoint, lets it process the rest, and checks the whole output is exactly the
    /// failure-free output of all records: nothing lost, nothing duplicated.
    pub fn finish_exactly(self, savepoint_dir: &str, what: &str) -> JobResult {
        let location = self
            .client
            .stop_with_savepoint(Some(savepoint_dir), false)
            .unwrap_or_else(|e| panic!("{what}: stop with savepoint: {e}"));
        let r = self.client.wait().unwrap();
        assert_eq!(r.status, JobStatus::Finished, "{what}");
        eprintln!("{what}: {} restarts, {}", r.restarts, tally(&r.checkpoints));
        let before = self.out.len() as u64;
        assert!(
            before > 0 && before < self.total,
            "{what}: {before} records"
        );
        assert_same(
            self.out.get(),
            expected_sums(before),
            &format!("{what}, up to the savepoint"),
        );
        let env = StreamEnv::new();
        env.set_parallelism(2);
        env.set(sluice::RESTORE_PATH_KEY, &location).unwrap();
        sums_job_into(&env, self.total, None, vec![], &self.out);
        env.execute("after").unwrap();
        assert_same(
            self.out.get(),
            expected_sums(self.total),
            &format!("{what}, restored from {location}"),
        );
        r
    }
}

/// (id, status, duration ms, failure) of each checkpoint, oldest first, for messages.
pub fn summary(checkpoints: &[CheckpointStats]) -> Vec<String> {
    let mut v: Vec<&CheckpointStats> = checkpoints.iter().collect();
    v.sort_by_key(|c| c.id);
    v.iter()
        .map(|c| {
            let why = c
                .failure_message
                .as_deref()
                .map(|m| format!(" ({})", m.chars().take(160).collect::<String>()))
                .unwrap_or_default();
            format!("{} {:?} {} ms{why}", c.id, c.status, c.end_to_end_duration)
        })
        .collect()
}

/// How many checkpoints completed and failed, and the first failure.
pub fn tally(checkpoints: &[CheckpointStats]) -> String {
    let count = |s| checkpoints.iter().filter(|c| c.status == s).count();
    let first_failure = checkpoints
        .iter()
        .filter(|c| c.status == CheckpointStatus::Failed)
        .min_by_key(|c| c.id);
    format!(
        "{} checkpoints completed, {} failed{}",
        count(CheckpointStatus::Completed),
        count(CheckpointStatus::Failed),
        first_failure
            .map(|c| format!(", first: {:?}", summary(std::slice::from_ref(c))))
            .unwrap_or_default()
    )
}

/// Checkpoints with an id above `after` that failed.
pub fn failed_after(v: &JobView, after: u64) -> Vec<CheckpointStats> {
    v.checkpoints
        .iter()
        .filter(|c| c.id > after && c.status == CheckpointStatus::Failed)
        .cloned()
        .collect()
}
