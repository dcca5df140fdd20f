//! The Kafka sink, run by the two-phase-commit operator.
//!
//! At-least-once: records are produced as they come and the producer is flushed at every
//! barrier (and at end of input), so a completed checkpoint never covers an unacknowledged
//! record.
//!
//! Exactly-once (with checkpointing): records written between two barriers are kept with the
//! checkpoint (the committable) and produced in one Kafka transaction when the checkpoint
//! completes. Each writer subtask `w` uses the transactional id `<prefix>-<w>` and numbers its
//! committables; the transaction also commits the committable's number as the offset of a
//! marker consumer group (`<prefix>-<w>`) on partition 0 of the output topic, atomically with
//! the records. Committing is therefore idempotent: a committable whose number the marker has
//! reached is already published. That makes the sink exactly-once even where the client
//! cannot resume a transaction of an earlier process: a checkpoint that completed but whose
//! notification was lost (a crash, a stop with savepoint) is published on restore from the
//! records in the checkpoint itself; `init_transactions` on `<prefix>-<w>` first aborts (fences)
//! whatever transaction a crashed attempt left open. The cost is that a checkpoint holds the
//! output of its interval.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use sluice::{Batch, OperatorContext, Result, SluiceError};
use sluice_worker::connectors::two_phase::TwoPhaseCommitSink;

use crate::format::KafkaSerializer;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The sink's guarantee (`sink.delivery-guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Produce and never wait (`none`).
    None,
    /// Flush at every checkpoint (`at-least-once`, the default).
    AtLeastOnce,
    /// Kafka transactions committed on checkpoint completion (`exactly-once`); without
    /// checkpointing the sink is at-least-once.
    ExactlyOnce,
}

/// Configuration of a Kafka sink, by builder methods or Flink-style option keys
/// ([`KafkaSinkBuilder::option`]).
#[derive(Debug, Clone)]
pub struct KafkaSinkBuilder {
    bootstrap: String,
    topic: String,
    guarantee: DeliveryGuarantee,
    prefix: Option<String>,
    properties: Vec<(String, String)>,
}

impl KafkaSinkBuilder {
    pub fn new(bootstrap_servers: &str, topic: &str) -> Self {
        KafkaSinkBuilder {
            bootstrap: bootstrap_servers.to_string(),
            topic: topic.to_string(),
            guarantee: DeliveryGuarantee::AtLeastOnce,
            prefix: None,
            properties: Vec::new(),
        }
    }

    /// A builder from Flink-style options; `topic` and `properties.bootstrap.servers` are
    /// required.
    pub fn from_options<'a>(options: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut b = KafkaSinkBuilder::new("", "");
        for (k, v) in options {
            b = b.option(k, v)?;
        }
        if b.bootstrap.is_empty() || b.topic.is_empty() {
            return Err(SluiceError::Config(
                "Kafka sink: topic and properties.bootstrap.servers must be set".into(),
            ));
        }
        Ok(b)
    }

    pub fn topic_name(&self) -> &str {
        &self.topic
    }

    pub fn delivery_guarantee(mut self, guarantee: DeliveryGuarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// Prefix of the transactional ids (`<prefix>-<subtask>`); unique per job and stable
    /// across its restarts and savepoints. Default: `<job name>-<sink uid>`.
    pub fn transactional_id_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// A librdkafka producer property, passed as is.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets a Flink-style option: `topic`, `properties.bootstrap.servers`,
    /// `properties.<librdkafka property>`, `sink.delivery-guarantee` (`none`,
    /// `at-least-once`, `exactly-once`), `sink.transactional-id-prefix`.
    pub fn option(mut self, key: &str, value: &str) -> Result<Self> {
        match key {
            "topic" => self.topic = value.trim().to_string(),
            "properties.bootstrap.servers" => self.bootstrap = value.to_string(),
            "sink.delivery-guarantee" => {
                self.guarantee = match value.trim() {
                    "none" => DeliveryGuarantee::None,
                    "at-least-once" => DeliveryGuarantee::AtLeastOnce,
                    "exactly-once" => DeliveryGuarantee::ExactlyOnce,
                    other => {
                        return Err(SluiceError::Config(format!(
                            "sink.delivery-guarantee: expected none, at-least-once or exactly-once, got '{other}'"
                        )));
                    }
                }
            }
            "sink.transactional-id-prefix" => self.prefix = Some(value.to_string()),
            _ => match key.strip_prefix("properties.") {
                Some(p) => self.properties.push((p.to_string(), value.to_string())),
                None => {
                    return Err(SluiceError::Config(format!(
                        "unknown Kafka sink option '{key}'"
                    )));
                }
            },
        }
        Ok(self)
    }

    fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }
}

/// One record to produce.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutRecord {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    timestamp: Option<i64>,
}

/// What one writer subtask wrote between two barriers; published in one transaction.
#[derive(Clone, Serialize, Deserialize)]
pub struct KafkaCommittable {
    writer: usize,
    /// Per writer, increasing; the marker group's offset once published.
    seq: i64,
    records: Vec<OutRecord>,
}

impl std::fmt::Debug for KafkaCommittable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KafkaCommittable(writer {}, #{}, {} records)",
            self.writer,
            self.seq,
            self.records.len()
        )
    }
}

/// Remembers the first failed delivery of a non-transactional producer.
#[derive(Clone, Default)]
struct DeliveryErrors(Arc<Mutex<Option<String>>>);

impl ClientContext for DeliveryErrors {}

impl ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((e, _)) = result {
            let mut first = self.0.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

impl DeliveryErrors {
    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A transactional producer for one writer id, with its marker group.
struct Writer {
    producer: BaseProducer<DeliveryErrors>,
    marker: BaseConsumer,
    /// Highest committable number published.
    published: i64,
}

/// Writes records to a Kafka topic (see the module documentation).
pub struct KafkaSink<T, S> {
    config: KafkaSinkBuilder,
    serializer: Arc<S>,
    exactly_once: bool,
    prefix: String,
    subtask: usize,
    /// The non-transactional producer (at-least-once, none).
    producer: Option<BaseProducer<DeliveryErrors>>,
    errors: DeliveryErrors,
    /// Records since the last barrier (exactly-once).
    buffer: Vec<OutRecord>,
    next_seq: i64,
    writers: HashMap<usize, Writer>,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T, S> KafkaSink<T, S> {
    pub fn new(config: KafkaSinkBuilder, serializer: Arc<S>) -> Self {
        KafkaSink {
            config,
            serializer,
            exactly_once: false,
            prefix: String::new(),
            subtask: 0,
            producer: None,
            errors: DeliveryErrors::default(),
            buffer: Vec::new(),
            next_seq: 1,
            writers: HashMap::new(),
            _t: std::marker::PhantomData,
        }
    }

    fn kafka_error(ctx: &OperatorContext, what: &str, e: impl std::fmt::Display) -> SluiceError {
        ctx.error(format!("Kafka {what}: {e}"))
    }

    /// Sends one record, waiting while the producer's queue is full.
    fn send(
        producer: &BaseProducer<DeliveryErrors>,
        topic: &str,
        r: &OutRecord,
        ctx: &OperatorContext,
    ) -> Result<()> {
        loop {
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&r.value[..]);
            if let Some(k) = &r.key {
                rec = rec.key(&k[..]);
            }
            // Records without an event time (or with the minimum placeholder) get the
            // producer's clock.
            if let Some(ts) = r.timestamp.filter(|t| *t >= 0) {
                rec = rec.timestamp(ts);
            }
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(Self::kafka_error(ctx, "produce", e)),
            }
        }
    }

    /// The transactional producer of writer `w`: created on first use, which fences (aborts)
    /// a transaction an earlier attempt left open, and learns what is already published.
    fn writer(&mut self, w: usize, ctx: &OperatorContext) -> Result<&mut Writer> {
        if !self.writers.contains_key(&w) {
            let id = format!("{}-{w}", self.prefix);
            let producer: BaseProducer<DeliveryErrors> = self
                .config
                .client_config()
                .set("transactional.id", &id)
                .set("transaction.timeout.ms", "600000")
                .create_with_context(DeliveryErrors::default())
                .map_err(|e| Self::kafka_error(ctx, "transactional producer", e))?;
            producer
                .init_transactions(TIMEOUT)
                .map_err(|e| Self::kafka_error(ctx, &format!("init_transactions of '{id}'"), e))?;
            let marker: BaseConsumer = self
                .config
                .client_config()
                .set("group.id", &id)
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .create()
                .map_err(|e| Self::kafka_error(ctx, "marker consumer", e))?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.config.topic, 0);
            let committed = marker
                .committed_offsets(tpl, TIMEOUT)
                .map_err(|e| Self::kafka_error(ctx, &format!("committed marker of '{id}'"), e))?;
            let published = committed
                .elements()
                .first()
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            log::info!(
                "{} ({}): Kafka transactional id '{id}' ready, published up to #{published}",
                ctx.uid,
                ctx.subtask
            );
            self.writers.insert(
                w,
                Writer {
                    producer,
                    marker,
                    published,
                },
            );
        }
        Ok(self.writers.get_mut(&w).expect("inserted above"))
    }

    fn take_committable(&mut self) -> Vec<KafkaCommittable> {
        if self.buffer.is_empty() {
            return Vec::new();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        vec![KafkaCommittable {
            writer: self.subtask,
            seq,
            records: std::mem::take(&mut self.buffer),
        }]
    }

    fn flush(&mut self, ctx: &OperatorContext) -> Result<()> {
        if let Some(p) = &self.producer {
            p.flush(TIMEOUT)
                .map_err(|e| Self::kafka_error(ctx, "flush", e))?;
        }
        match self.errors.take() {
            Some(e) => Err(Self::kafka_error(ctx, "delivery", e)),
            None => Ok(()),
        }
    }
}

impl<T: sluice::Data, S: KafkaSerializer<T>> TwoPhaseCommitSink for KafkaSink<T, S> {
    type In = T;
    type Committable = KafkaCommittable;

    fn open(&mut self, ctx: &mut OperatorContext, exactly_once: bool) -> Result<()> {
        self.subtask = ctx.subtask;
        self.exactly_once = exactly_once && self.config.guarantee == DeliveryGuarantee::ExactlyOnce;
        self.prefix = self
            .config
            .prefix
            .clone()
            .unwrap_or_else(|| format!("{}-{}", ctx.job_name, ctx.uid));
        if !self.exactly_once {
            let mut cfg = self.config.client_config();
            if self.config.guarantee != DeliveryGuarantee::None {
                cfg.set("enable.idempotence", "true");
            }
            self.producer = Some(
                cfg.create_with_context(self.errors.clone())
                    .map_err(|e| Self::kafka_error(ctx, "producer", e))?,
            );
        }
        Ok(())
    }

    fn write(&mut self, batch: Batch<T>, ctx: &mut OperatorContext) -> Result<()> {
        if self.exactly_once {
            for (r, ts) in batch.into_iter_ts() {
                let (key, value) = self.serializer.serialize(&r);
                self.buffer.push(OutRecord {
                    key,
                    value,
                    timestamp: ts,
                });
            }
            return Ok(());
        }
        let producer = self.producer.as_ref().expect("opened");
        for (r, ts) in batch.into_iter_ts() {
            let (key, value) = self.serializer.serialize(&r);
            Self::send(
                producer,
                &self.config.topic,
                &OutRecord {
                    key,
                    value,
                    timestamp: ts,
                },
                ctx,
            )?;
        }
        producer.poll(Duration::ZERO);
        if let Some(e) = self.errors.take() {
            return Err(Self::kafka_error(ctx, "delivery", e));
        }
        Ok(())
    }

    fn pre_commit(
        &mut self,
        _checkpoint_id: u64,
        ctx: &mut OperatorContext,
    ) -> Result<Vec<KafkaCommittable>> {
        if self.exactly_once {
            return Ok(self.take_committable());
        }
        if self.config.guarantee != DeliveryGuarantee::None {
            self.flush(ctx)?;
        }
        Ok(Vec::new())
    }

    fn commit(&mut self, c: &KafkaCommittable, ctx: &mut OperatorContext) -> Result<()> {
        let topic = self.config.topic.clone();
        let writer = self.writer(c.writer, ctx)?;
        if c.seq <= writer.published {
            return Ok(());
        }
        let producer = &writer.producer;
        let run = || -> std::result::Result<(), String> {
            producer.begin_transaction().map_err(|e| e.to_string())?;
            for r in &c.records {
                Self::send(producer, &topic, r, ctx).map_err(|e| e.to_string())?;
            }
            let mut marker = TopicPartitionList::new();
            marker
                .add_partition_offset(&topic, 0, Offset::Offset(c.seq))
                .map_err(|e| e.to_string())?;
            let group = writer
                .marker
                .group_metadata()
                .ok_or("the marker consumer has no group metadata")?;
            producer
                .send_offsets_to_transaction(&marker, &group, TIMEOUT)
                .map_err(|e| e.to_string())?;
            producer
                .commit_transaction(TIMEOUT)
                .map_err(|e| e.to_string())
        };
        if let Err(e) = run() {
            // Leave nothing open; a restart publishes the committable again.
            let _ignored = producer.abort_transaction(TIMEOUT);
            self.writers.remove(&c.writer);
            return Err(ctx.error(format!(
                "Kafka transaction of {c:?} to topic '{topic}': {e}"
            )));
        }
        writer.published = c.seq;
        Ok(())
    }

    fn abort_leftovers(
        &mut self,
        restored: &[KafkaCommittable],
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        if !self.exactly_once {
            return Ok(());
        }
        // Fence our own id (what an earlier attempt of this subtask left open is aborted) and
        // continue numbering after what it published or pre-committed.
        let own = self.subtask;
        let published = self.writer(own, ctx)?.published;
        let restored_max = restored
            .iter()
            .filter(|c| c.writer == own)
            .map(|c| c.seq)
            .max()
            .unwrap_or(0);
        self.next_seq = published.max(restored_max) + 1;
        // Writers of an earlier, larger parallelism whose committables we publish: fence too.
        let parallelism = ctx.parallelism.max(1);
        let mut others: Vec<usize> = restored
            .iter()
            .map(|c| c.writer)
            .filter(|w| *w != own && w % parallelism == own)
            .collect();
        others.sort_unstable();
        others.dedup();
        for w in others {
            self.writer(w, ctx)?;
        }
        Ok(())
    }

    fn finish(&mut self, ctx: &mut OperatorContext) -> Result<Vec<KafkaCommittable>> {
        if self.exactly_once {
            if self.writers.is_empty() {
                // Checkpointing never started the numbering: learn it now.
                let own = self.subtask;
                self.next_seq = self.writer(own, ctx)?.published + 1;
            }
            return Ok(self.take_committable());
        }
        self.flush(ctx)?;
        Ok(Vec::new())
    }

    fn close(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        self.writers.clear();
        if let Some(p) = self.producer.take() {
            let _ignored = p.flush(Duration::from_secs(5));
        }
        Ok(())
    }
}
