//! Fencing on the real 3-member ensemble: checkpoint ids and completed-checkpoint pointers
//! are written only while the writer's latch node exists. A master that lost leadership
//! (here: resigned, as an expired session would) can neither take an id nor register a
//! checkpoint, and the next leader continues the ids where the last one stopped. A worker
//! daemon that found the new leader's epoch in ZooKeeper refuses a deploy of the deposed one.

use std::sync::Arc;
use std::time::Duration;

use sluice_am::checkpoint::CheckpointRegistry;
use sluice_am::ha::checkpoints::{ZkCheckpointRegistry, checkpoints};
use sluice_am::ha::{Leadership, Zk};
use sluice_core::config::{HaConfig, HaMode};
use sluice_integration_tests::{TestCluster, unique};
use sluice_worker::control::protocol::LeaderInfo;
use sluice_worker::control::{Conn, EpochFence, PROTOCOL_VERSION, ToMaster, ToWorker};
use sluice_worker::daemon::leader::LeaderLookup;
use sluice_worker::daemon::{Daemon, Settings, Stopped};

fn ha_config(quorum: &str) -> HaConfig {
    HaConfig {
        mode: HaMode::ZooKeeper,
        zk_quorum: Some(quorum.to_string()),
        zk_root: "/sluice-tests".into(),
        cluster_id: unique("fencing"),
        zk_session_timeout: Duration::from_secs(10),
        ..HaConfig::default()
    }
}

fn elect(ha: &HaConfig, name: &str) -> (Arc<Zk>, Leadership) {
    let zk = Arc::new(
        Zk::connect(
            ha.zk_quorum.as_deref().expect("a quorum"),
            ha.zk_session_timeout,
        )
        .expect("a ZooKeeper session"),
    );
    let leadership = Leadership::elect(zk.clone(), ha, name, |_| {}).expect("leadership");
    (zk, leadership)
}

#[test]
fn a_deposed_master_can_take_no_checkpoint_id_and_register_no_checkpoint() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["zk3"])?;
    let ha = ha_config(cluster.zk_quorum());
    let (zk, first) = elect(&ha, "first");
    let job = "0123456789abcdef0123456789abcdef";
    let registry = ZkCheckpointRegistry::new(zk.clone(), &ha, first.latch(), job);

    assert_eq!(registry.next_id(1)?, 1);
    assert_eq!(registry.next_id(1)?, 2);
    // The coordinator's own next id wins when it is ahead (ids after a restored savepoint).
    assert_eq!(registry.next_id(7)?, 7);
    registry.add(1, "file:///checkpoints/chk-1", 2)?;
    registry.add(2, "file:///checkpoints/chk-2", 2)?;
    registry.add(7, "file:///checkpoints/chk-7", 2)?;
    assert_eq!(
        checkpoints(&zk, &ha, job)?,
        vec![
            (7, "file:///checkpoints/chk-7".to_string()),
            (2, "file:///checkpoints/chk-2".to_string()),
        ],
        "the newest 2 pointers are retained, newest first"
    );

    // Leadership goes (as with an expired session: the latch node is gone).
    first.resign();
    let id = registry
        .next_id(8)
        .expect_err("a deposed master takes no id");
    assert!(id.to_string().contains("no longer leads"), "{id}");
    let add = registry
        .add(8, "file:///checkpoints/chk-8", 2)
        .expect_err("a deposed master registers no checkpoint");
    assert!(add.to_string().contains("no longer leads"), "{add}");
    assert_eq!(
        checkpoints(&zk, &ha, job)?.first().map(|c| c.0),
        Some(7),
        "nothing was registered after the deposition"
    );

    // The next leader continues the ids and sees the same checkpoints.
    let (zk2, second) = elect(&ha, "second");
    let next = ZkCheckpointRegistry::new(zk2.clone(), &ha, second.latch(), job);
    assert_eq!(next.next_id(1)?, 8, "ids are never reused across leaders");
    next.add(8, "file:///checkpoints/chk-8", 2)?;
    assert_eq!(checkpoints(&zk2, &ha, job)?.first().map(|c| c.0), Some(8));
    sluice_am::ha::checkpoints::remove_job(&zk2, &ha, job)?;
    assert!(
        checkpoints(&zk2, &ha, job)?.is_empty(),
        "a finished job's pointers go"
    );
    second.resign();
    Ok(())
}

#[test]
fn a_worker_that_saw_the_new_leaders_epoch_refuses_the_deposed_leaders_launch() -> anyhow::Result<()>
{
    let cluster = TestCluster::ensure_up(&["zk3"])?;
    let ha = ha_config(cluster.zk_quorum());
    // The deposed leader's control port, spoken to by this test as that master would.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let old_addr = listener.local_addr()?;
    let (_zk1, first) = elect(&ha, "first");
    let old_epoch = first.epoch();
    first.publish(&LeaderInfo {
        address: old_addr,
        rest: "http://127.0.0.1:1".into(),
        epoch: old_epoch,
    })?;
    first.resign();
    assert!(
        first.check("deploy").is_err(),
        "a master that lost leadership refuses to deploy itself"
    );
    let (_zk2, second) = elect(&ha, "second");
    second.publish(&LeaderInfo {
        address: "127.0.0.1:1".parse()?,
        rest: "http://127.0.0.1:1".into(),
        epoch: second.epoch(),
    })?;
    assert!(second.epoch() > old_epoch, "epochs grow with every term");

    // The worker reads the published leader, as sluice-worker does, and remembers its epoch;
    // then it registers with the deposed master (it was still connected to it).
    let lookup = LeaderLookup::connect(&ha)?;
    let published = lookup.current()?.expect("a published leader");
    assert_eq!(published.epoch, second.epoch());
    let fence = EpochFence::new(0);
    fence.observe(published.epoch);
    let work = tempfile::tempdir()?;
    let settings = Settings::load(
        None,
        &[
            format!("jobmanager.rpc.port={}", old_addr.port()),
            "taskmanager.resource-id=w-fenced".into(),
            format!("taskmanager.tmp.dirs={}", work.path().display()),
        ],
    )?;
    let worker = std::thread::spawn(move || {
        let unpack: sluice_worker::daemon::Unpack = |_, _| Err("nothing runs here".into());
        Daemon::register_fenced(settings, unpack, fence).map(Daemon::serve)
    });
    let (stream, _) = listener.accept()?;
    let (conn, mut reader) = Conn::from_stream(stream)?;
    reader.set_timeout(Some(Duration::from_secs(10)))?;
    match reader.recv::<ToMaster>()? {
        Some(ToMaster::RegisterWorker { version, .. }) => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("expected a registration, got {other:?}"),
    }
    conn.send(&ToWorker::Registered)?;
    conn.send(&ToWorker::LaunchJob {
        job_id: "stale".into(),
        bundle: b"#!/bin/sh\nexit 0\n".to_vec(),
        args: Vec::new(),
        config: Vec::new(),
        epoch: old_epoch,
    })?;
    let refused = loop {
        match reader.recv::<ToMaster>()? {
            Some(ToMaster::Heartbeat) => continue,
            other => break other,
        }
    };
    match refused {
        Some(ToMaster::StaleEpoch {
            what,
            epoch,
            highest,
        }) => assert_eq!(
            (what.as_str(), epoch, highest),
            ("LaunchJob", old_epoch, second.epoch()),
            "the deposed master is told why"
        ),
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
    let stopped = worker.join().expect("the daemon thread")?;
    match stopped {
        Stopped::MasterLost { reason, killed } => {
            assert!(reason.contains("it is deposed"), "{reason}");
            assert_eq!(killed, 0, "nothing was launched");
        }
        other => panic!("the daemon left the deposed master: {other:?}"),
    }
    second.resign();
    Ok(())
}
