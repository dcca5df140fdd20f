//! Fencing at the ZooKeeper level, on the real 3-member ensemble: checkpoint ids and
//! completed-checkpoint pointers are written only while the writer's latch node exists. A
//! master that lost leadership (here: resigned, as an expired session would) can neither take
//! an id nor register a checkpoint, and the next leader continues the ids where the last one
//! stopped.

use std::sync::Arc;
use std::time::Duration;

use sluice_am::checkpoint::CheckpointRegistry;
use sluice_am::ha::checkpoints::{ZkCheckpointRegistry, checkpoints};
use sluice_am::ha::{Leadership, Zk};
use sluice_core::config::{HaConfig, HaMode};
use sluice_integration_tests::{TestCluster, unique};

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
