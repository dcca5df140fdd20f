//! Kafka connectors for Sluice jobs: a source whose partition offsets are checkpointed state and a sink that is exactly-once through Kafka transactions.
//!
//! ```no_run
//! use sluice::prelude::*;
//! use sluice_kafka::{KafkaDataStreamExt, KafkaSinkBuilder, KafkaSourceBuilder, KafkaStreamEnvExt};
//! use sluice_kafka::{DeliveryGuarantee, StartingOffsets, StringValues};
//!
//! fn main() -> sluice::Result<()> {
//!     let env = StreamEnv::new();
//!     let source = KafkaSourceBuilder::new("127.0.0.1:9092")
//!         .topic("words")
//!         .starting_offsets(StartingOffsets::Earliest);
//!     let sink = KafkaSinkBuilder::new("127.0.0.1:9092", "counts")
//!         .delivery_guarantee(DeliveryGuarantee::ExactlyOnce)
//!         .transactional_id_prefix("word-count");
//!     env.kafka_source("words", source, StringValues)
//!         .map(|w: String| (w, 1u64))
//!         .key_by_field(|r: &(String, u64)| &r.0)
//!         .sum()
//!         .sink_to_kafka(sink, |r: &(String, u64)| (Some(r.0.clone().into_bytes()), r.1.to_string().into_bytes()));
//!     env.execute("word count")?;
//!     Ok(())
//! }
//! ```

mod discovery;
mod format;
mod sink;
mod source;
mod source_config;
mod watermarks;

use std::sync::Arc;

use sluice::{DataStream, SinkHandle, StreamEnv};
use sluice_worker::Data;
use sluice_worker::connectors::two_phase::TwoPhaseCommitOperator;

/// The Kafka client the connectors use (librdkafka's binding), for jobs and tools that need it
/// directly.
pub use rdkafka;

pub use format::{
    JsonValues, KafkaDeserializer, KafkaRecord, KafkaSerializer, KeyValueStrings, StringValues,
    ToJson, ToStrings,
};
pub use sink::{DeliveryGuarantee, KafkaCommittable, KafkaSink, KafkaSinkBuilder};
pub use source::KafkaSource;
pub use source_config::{BoundedMode, KafkaSourceBuilder, StartingOffsets};

/// `env.kafka_source(...)`: a parallel Kafka source on a [`StreamEnv`].
pub trait KafkaStreamEnvExt {
    /// Reads the builder's topics; `deserializer` turns each record into zero or one output.
    /// The stream's records carry the Kafka record timestamps as event time.
    fn kafka_source<T: Data, D: KafkaDeserializer<T>>(
        &self,
        name: &str,
        source: KafkaSourceBuilder,
        deserializer: D,
    ) -> DataStream<T>;
}

impl KafkaStreamEnvExt for StreamEnv {
    fn kafka_source<T: Data, D: KafkaDeserializer<T>>(
        &self,
        name: &str,
        source: KafkaSourceBuilder,
        deserializer: D,
    ) -> DataStream<T> {
        let deserializer = Arc::new(deserializer);
        self.add_source(&format!("Kafka: {name}"), move || {
            KafkaSource::new(source.clone(), deserializer.clone())
        })
    }
}

/// `stream.sink_to_kafka(...)`: writes a [`DataStream`] to a Kafka topic.
pub trait KafkaDataStreamExt<T> {
    /// Writes every record through `serializer` (to a key and a value) to the builder's topic,
    /// with the builder's delivery guarantee.
    fn sink_to_kafka<S: KafkaSerializer<T>>(
        &self,
        sink: KafkaSinkBuilder,
        serializer: S,
    ) -> SinkHandle;
}

impl<T: Data> KafkaDataStreamExt<T> for DataStream<T> {
    fn sink_to_kafka<S: KafkaSerializer<T>>(
        &self,
        sink: KafkaSinkBuilder,
        serializer: S,
    ) -> SinkHandle {
        let serializer = Arc::new(serializer);
        let name = format!("Sink: Kafka {}", sink.topic_name());
        self.add_sink(&name, move || {
            TwoPhaseCommitOperator::for_sink(KafkaSink::new(sink.clone(), serializer.clone()))
        })
    }
}

/// `true`/`false` option values.
pub(crate) fn parse_bool(key: &str, value: &str) -> sluice::Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(sluice::SluiceError::Config(format!(
            "{key}: expected true or false, got '{other}'"
        ))),
    }
}
