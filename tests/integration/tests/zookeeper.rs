//! ZooKeeper is real: an ephemeral node vanishes, and its watcher fires, when the session that
//! created it closes.

use std::time::Duration;

use sluice_integration_tests::{TestCluster, unique};
use zookeeper_client::{Acls, Client, CreateMode, EventType};

#[tokio::test]
async fn ephemeral_node_vanishes_with_its_session() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["zk"])?;
    let path = format!("/{}", unique("smoke-ephemeral"));

    let owner = Client::connect(cluster.zk_quorum()).await?;
    let observer = Client::connect(cluster.zk_quorum()).await?;
    owner
        .create(
            &path,
            b"alive",
            &CreateMode::Ephemeral.with_acls(Acls::anyone_all()),
        )
        .await?;

    // The observer's server may be a follower that has not applied the create yet: ZooKeeper
    // orders one client's view, not two clients' views. A sync brings it up to the leader.
    observer.sync(&path).await?;
    let (stat, watcher) = observer.check_and_watch_stat(&path).await?;
    let stat = stat.expect("the ephemeral node exists");
    assert_eq!(stat.ephemeral_owner, owner.session_id().0);

    // Dropping the last handle closes the session, which deletes its ephemeral nodes.
    drop(owner);
    let event = tokio::time::timeout(Duration::from_secs(30), watcher.changed()).await?;
    assert_eq!(event.event_type, EventType::NodeDeleted);
    assert_eq!(event.path, path);
    assert!(observer.check_stat(&path).await?.is_none());
    Ok(())
}
