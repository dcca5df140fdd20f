//! The support crate's fault injection works: each killable process comes back after
//! `kill` + `restart`, and its service answers again.

use std::time::Duration;

use hdfs_native::{ClientBuilder, WriteOptions};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_integration_tests::{TestCluster, unique};

#[tokio::test]
async fn killed_processes_restart_and_serve() -> anyhow::Result<()> {
    let mut cluster = TestCluster::ensure_up(&["zk", "hdfs", "yarn", "kafka"])?;
    let zk = cluster.process_names("zk").last().map(|s| s.to_string());
    for name in ["datanode1", "nodemanager1", "kafka"]
        .into_iter()
        .map(String::from)
        .chain(zk)
    {
        cluster.kill(&name)?;
        let p = cluster.info().processes.iter().find(|p| p.name == name);
        assert!(p.is_some_and(|p| !p.alive), "{name} is down after kill");
        cluster.restart(&name)?;
        let p = cluster.info().processes.iter().find(|p| p.name == name);
        assert!(p.is_some_and(|p| p.alive), "{name} is up after restart");
    }

    // HDFS still takes a replicated write.
    let hdfs = ClientBuilder::new()
        .with_url(cluster.hdfs_url())
        .with_config_dir(cluster.conf_dir().to_string_lossy())
        .build()?;
    let path = format!("/smoke/{}", unique("after-restart"));
    let mut w = hdfs.create(&path, WriteOptions::default()).await?;
    w.write_bytes(b"still here".to_vec().into()).await?;
    w.close().await?;
    assert!(hdfs.delete(&path, false).await?);

    // The restarted broker accepts writes on the same address.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.kafka_bootstrap())
        .create()?;
    producer
        .send(
            FutureRecord::to(&unique("after-restart"))
                .key("k")
                .payload("x"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;

    // Every ZooKeeper member serves sessions.
    for member in cluster.zk_members() {
        let client = zookeeper_client::Client::connect(member).await?;
        client.check_stat("/").await?;
    }
    Ok(())
}
