//! HDFS is real: write, read, rename and delete a file through hdfs-native.

use hdfs_native::{ClientBuilder, WriteOptions};
use sluice_integration_tests::{TestCluster, unique};

#[tokio::test]
async fn write_read_rename_delete() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["hdfs"])?;
    let client = ClientBuilder::new()
        .with_url(cluster.hdfs_url())
        .with_config_dir(cluster.conf_dir().to_string_lossy())
        .build()?;

    let dir = format!("/smoke/{}", unique("hdfs"));
    let path = format!("{dir}/hello.txt");
    let renamed = format!("{dir}/renamed.txt");
    // Larger than one packet, so the write pipeline to both DataNodes is exercised.
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();

    let mut writer = client.create(&path, WriteOptions::default()).await?;
    writer.write_bytes(data.clone().into()).await?;
    writer.close().await?;

    let status = client.get_file_info(&path).await?;
    assert_eq!(status.length, data.len());
    assert_eq!(
        status.replication,
        Some(2),
        "replication 2 on two DataNodes"
    );

    let mut reader = client.read(&path).await?;
    let back = reader.read_bytes(reader.file_length()).await?;
    assert_eq!(back.as_ref(), data.as_slice());

    client.rename(&path, &renamed, false).await?;
    assert!(client.get_file_info(&path).await.is_err(), "old name gone");
    let mut reader = client.read(&renamed).await?;
    assert_eq!(reader.read_bytes(16).await?.as_ref(), &data[..16]);

    assert!(client.delete(&dir, true).await?);
    assert!(client.get_file_info(&renamed).await.is_err(), "deleted");
    Ok(())
}
