//! Kafka is real: produce and consume messages through librdkafka, plainly and in a
//! transaction.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sluice_integration_tests::{TestCluster, unique};

#[path = "common/kafka.rs"]
mod kafka_common;
use kafka_common::create_topic_async;

async fn consume_one(bootstrap: &str, topic: &str, isolation: &str) -> anyhow::Result<Vec<u8>> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()?;
    consumer.subscribe(&[topic])?;
    let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
    Ok(msg.payload().unwrap_or_default().to_vec())
}

#[tokio::test]
async fn produce_and_consume() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["kafka"])?;
    let bootstrap = cluster.kafka_bootstrap();
    let topic = unique("smoke");
    create_topic_async(bootstrap, &topic, 1).await?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()?;
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("hello sluice"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;

    let payload = consume_one(bootstrap, &topic, "read_uncommitted").await?;
    assert_eq!(payload, b"hello sluice");
    Ok(())
}

#[tokio::test]
async fn transactional_produce_is_visible_to_read_committed() -> anyhow::Result<()> {
    let cluster = TestCluster::ensure_up(&["kafka"])?;
    let bootstrap = cluster.kafka_bootstrap();
    let topic = unique("smoke-txn");
    create_topic_async(bootstrap, &topic, 1).await?;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", unique("smoke-txn-producer"))
        .create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    producer.begin_transaction()?;
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("committed"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    producer.commit_transaction(Duration::from_secs(30))?;

    let payload = consume_one(bootstrap, &topic, "read_committed").await?;
    assert_eq!(payload, b"committed");
    Ok(())
}
