//! Checkpoints on an HDFS nameservice with an HA NameNode pair (`hdfs://sluice`) across manual
//! failovers, on a second test cluster (`testcluster.sh up --ha hdfs` in its own directory,
//! `$SLUICE_TESTCLUSTER_HA_DIR` or `/tmp/sluice-testcluster-ha`; started and stopped by the test
//! unless it already runs). Its own test binary, because `HADOOP_CONF_DIR` (which defines the
//! nameservice) is set once per process.
//!
//!   cargo test --release -p sluice-integration-tests --test hdfs_ha -- --test-threads=1

mod common;

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use common::{LongJob, Raw, failed_after, path_of, summary};
use sluice::prelude::*;
use sluice_hdfs_backend::hdfs::{HdfsOptions, configure};
use sluice_hdfs_backend::resolve;
use sluice_integration_tests::{TestCluster, unique};
use sluice_testkit::checkpointing;

fn ha_dir() -> PathBuf {
    std::env::var_os("SLUICE_TESTCLUSTER_HA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/sluice-testcluster-ha"))
}

/// Stops the HA cluster when dropped if this test started it.
struct StopIfStarted(Option<TestCluster>);

impl Drop for StopIfStarted {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0
            && let Err(e) = c.down()
        {
            eprintln!("stopping the HA test cluster: {e}");
        }
    }
}

#[test]
fn checkpoints_continue_across_namenode_failovers() {
    let dir = ha_dir();
    let running = TestCluster::open_in(&dir).is_ok_and(|c| c.process_alive("namenode"));
    let mut cluster = TestCluster::ensure_up_in(&dir, &["--ha", "hdfs"])
        .expect("a test cluster with an HA NameNode pair");
    let _stop = StopIfStarted((!running).then(|| cluster.clone()));
    assert!(cluster.info().hdfs.ha);
    assert_eq!(cluster.hdfs_url(), "hdfs://sluice", "a nameservice");
    static ENV: Once = Once::new();
    let conf = cluster.conf_dir().to_path_buf();
    ENV.call_once(|| {
        // SAFETY: set once, before any HDFS client of this process reads it.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("HADOOP_CONF_DIR", &conf)
        };
    });
    configure(HdfsOptions::default());

    let base = format!("{}/sluice-it/{}", cluster.hdfs_url(), unique("ha"));
    let env = StreamEnv::new();
    env.set_parallelism(2);
    checkpointing(&env, &format!("{base}/checkpoints"), "100 ms");
    env.set("state.checkpoints.num-retained", "2").unwrap();
    env.set("state.storage.fs.memory-threshold", "0").unwrap();
    let job = LongJob::start(&env, "ha-failover", 400_000, 2000.0);
    let mut last = job.completed_after(0, Duration::from_secs(60));
    let (s, p) = resolve(&base).unwrap();
    for _ in 0..2 {
        let before = job.last_checkpoint_id();
        let active = cluster.failover().unwrap();
        let t = Instant::now();
        // Triggered once the other NameNode is active.
        last = job.completed_after(job.last_checkpoint_id(), Duration::from_secs(60));
        let v = job.client.view();
        eprintln!(
            "failover to {active}: checkpoint {last} completed {:?} after it; failed during \
             and after it: {:?}",
            t.elapsed(),
            summary(&failed_after(&v, before))
        );
        assert_eq!(v.restored_checkpoint, None, "no restart");
        assert!(
            s.exists(&p).unwrap(),
            "the storage follows the active NameNode"
        );
    }
    // A checkpoint written through the other NameNode restores.
    job.fail_and_recover(last);
    let r = job.finish_exactly(&format!("{base}/savepoints"), "NameNode failovers");
    assert_eq!(r.restarts, 1);
    Raw::new(&cluster).delete(&path_of(&base), true);
}
