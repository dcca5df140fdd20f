//! The Kafka source: an assign-based consumer per subtask, its partition offsets kept as
//! checkpointed operator state.
//!
//! Partitions are listed in a fixed order (topics as configured, partitions ascending) and the
//! `i`-th goes to subtask `i % parallelism`; for a single topic, partition `p` goes to subtask
//! `p % parallelism`. The state is union state holding, for every partition, the offset of the
//! next record to read (and the stop offset of a bounded read), so a restore at any parallelism
//! resumes each partition exactly after the checkpointed offset. Partitions the state does not
//! know (new topics, new partitions) start at the starting position; positions of partitions
//! that are gone are dropped with a warning. The consumer group only sees offsets committed on
//! checkpoint completion, for monitoring: it is never read back, except by the
//! `group-offsets` starting position of a fresh start.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use sluice::{Collector, OperatorContext, Result, SluiceError, Source, SourcePoll};
use sluice_worker::data::Barrier;
use sluice_worker::snapshot::{OperatorSnapshot, Redistribution};

use crate::format::{KafkaDeserializer, KafkaRecord};
use crate::parse_bool;

/// The operator-state name of the partition offsets.
pub const OFFSETS_STATE: &str = "kafka-source/offsets";

const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a partition without checkpointed offset starts (`scan.startup.mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartingOffsets {
    /// The earliest retained record (`earliest-offset`).
    Earliest,
    /// After the last record at startup (`latest-offset`).
    Latest,
    /// The consumer group's committed offsets, earliest where it has none (`group-offsets`).
    GroupOffsets,
    /// The first record with a timestamp at or after this many ms since the epoch
    /// (`timestamp`, with `scan.startup.timestamp-millis`).
    Timestamp(i64),
    /// Given offsets per `(topic, partition)`; other partitions start at the earliest
    /// (`specific-offsets`, with `scan.startup.specific-offsets`).
    Specific(BTreeMap<(String, i32), i64>),
}

/// Whether the source ends (`scan.bounded.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundedMode {
    /// Read forever (`unbounded`, the default).
    Unbounded,
    /// Stop at the end of each partition as of the first start (`latest-offset`); the stop
    /// offsets are state, so a restart after a failure stops at the same place.
    Latest,
}

/// Configuration of a Kafka source, by builder methods or Flink-style option keys
/// ([`KafkaSourceBuilder::option`]).
#[derive(Debug, Clone)]
pub struct KafkaSourceBuilder {
    bootstrap: String,
    topics: Vec<String>,
    group_id: Option<String>,
    starting: StartingOffsets,
    bounded: BoundedMode,
    properties: Vec<(String, String)>,
    topic_wait: Option<Duration>,
    ignore_parse_errors: bool,
}

impl KafkaSourceBuilder {
    pub fn new(bootstrap_servers: &str) -> Self {
        KafkaSourceBuilder {
            bootstrap: bootstrap_servers.to_string(),
            topics: Vec::new(),
            group_id: None,
            starting: StartingOffsets::GroupOffsets,
            bounded: BoundedMode::Unbounded,
            properties: Vec::new(),
            topic_wait: None,
            ignore_parse_errors: false,
        }
    }

    /// A builder from Flink-style options; `properties.bootstrap.servers` is required.
    pub fn from_options<'a>(options: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut b = KafkaSourceBuilder::new("");
        let mut mode = None;
        let mut timestamp = None;
        let mut specific = None;
        for (k, v) in options {
            match k {
                "scan.startup.mode" => mode = Some(v.to_string()),
                "scan.startup.timestamp-millis" => timestamp = Some(v.to_string()),
                "scan.startup.specific-offsets" => specific = Some(v.to_string()),
                _ => b = b.option(k, v)?,
            }
        }
        if let Some(mode) = mode {
            let mode = match (mode.as_str(), &timestamp, &specific) {
                ("timestamp", Some(t), _) => format!("timestamp:{t}"),
                ("specific-offsets", _, Some(s)) => format!("specific-offsets:{s}"),
                _ => mode,
            };
            b.starting = parse_starting(&mode, b.topics.first().map(String::as_str))?;
        }
        if b.bootstrap.is_empty() {
            return Err(SluiceError::Config(
                "Kafka source: properties.bootstrap.servers is not set".into(),
            ));
        }
        Ok(b)
    }

    /// Adds a topic to read.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topics.push(topic.to_string());
        self
    }

    pub fn topics<S: AsRef<str>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics
            .extend(topics.into_iter().map(|t| t.as_ref().to_string()));
        self
    }

    /// The consumer group offsets are committed to on checkpoint completion (and read by
    /// [`StartingOffsets::GroupOffsets`]).
    pub fn group_id(mut self, group: &str) -> Self {
        self.group_id = Some(group.to_string());
        self
    }

    pub fn starting_offsets(mut self, starting: StartingOffsets) -> Self {
        self.starting = starting;
        self
    }

    pub fn bounded(mut self, bounded: BoundedMode) -> Self {
        self.bounded = bounded;
        self
    }

    /// How long to wait for a missing topic to appear before failing (`scan.topic-wait`);
    /// without it a missing topic fails the job at once.
    pub fn topic_wait(mut self, wait: Duration) -> Self {
        self.topic_wait = Some(wait);
        self
    }

    /// Skip (and count) records the deserializer rejects instead of failing the job
    /// (`format.ignore-parse-errors`).
    pub fn ignore_parse_errors(mut self, ignore: bool) -> Self {
        self.ignore_parse_errors = ignore;
        self
    }

    /// A librdkafka consumer property, passed as is.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.properties.push((key.to_string(), value.to_string()));
        self
    }

    /// Sets a Flink-style option:
    ///
    /// - `topic` (`;`-separated list), `properties.bootstrap.servers`, `properties.group.id`,
    ///   `properties.<librdkafka property>`;
    /// - `scan.startup.mode`: `earliest-offset` (or `earliest`), `latest-offset` (`latest`),
    ///   `group-offsets`, `timestamp:<ms>`, `specific-offsets:partition:0,offset:42;...`
    ///   (partitions of the first topic; `topic:t,partition:0,offset:42` for another);
    /// - `scan.bounded.mode`: `unbounded` or `latest-offset`;
    /// - `scan.topic-wait`: a duration such as `30 s` (default: fail at once);
    /// - `format.ignore-parse-errors` (also `json.ignore-parse-errors`): `true` or `false`.
    pub fn option(mut self, key: &str, value: &str) -> Result<Self> {
        match key {
            "topic" => {
                self.topics.extend(
                    value
                        .split(';')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                );
            }
            "properties.bootstrap.servers" => self.bootstrap = value.to_string(),
            "properties.group.id" => self.group_id = Some(value.to_string()),
            "scan.startup.mode" => {
                self.starting = parse_starting(value, self.topics.first().map(String::as_str))?
            }
            "scan.bounded.mode" => {
                self.bounded = match value.trim() {
                    "unbounded" => BoundedMode::Unbounded,
                    "latest-offset" | "latest" => BoundedMode::Latest,
                    other => {
                        return Err(SluiceError::Config(format!(
                            "scan.bounded.mode: expected unbounded or latest-offset, got '{other}'"
                        )));
                    }
                }
            }
            "scan.topic-wait" => {
                self.topic_wait = Some(parse_duration(key, value)?);
            }
            "format.ignore-parse-errors" | "json.ignore-parse-errors" => {
                self.ignore_parse_errors = parse_bool(key, value)?
            }
            _ => match key.strip_prefix("properties.") {
                Some(p) => self.properties.push((p.to_string(), value.to_string())),
                None => {
                    return Err(SluiceError::Config(format!(
                        "unknown Kafka source option '{key}'"
                    )));
                }
            },
        }
        Ok(self)
    }

    fn consumer(&self, ctx: &OperatorContext) -> Result<BaseConsumer> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set(
                "client.id",
                format!("sluice-{}-{}-{}", ctx.job_name, ctx.uid, ctx.subtask),
            );
        // librdkafka wants a group id even for an assign-based consumer; without one given,
        // offsets are not committed anywhere, so the default group stays empty.
        match &self.group_id {
            Some(g) => cfg.set("group.id", g),
            None => cfg.set("group.id", format!("sluice-{}-{}", ctx.job_name, ctx.uid)),
        };
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg.create()
            .map_err(|e| ctx.error(format!("cannot create a Kafka consumer: {e}")))
    }
}

fn parse_duration(key: &str, value: &str) -> Result<Duration> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| SluiceError::Config(format!("{key}: not a duration: '{value}'")))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" | "sec" | "seconds" => n * 1000,
        "min" | "m" | "minutes" => n * 60_000,
        _ => {
            return Err(SluiceError::Config(format!(
                "{key}: not a duration: '{value}'"
            )));
        }
    };
    Ok(Duration::from_millis(ms))
}

fn parse_starting(value: &str, first_topic: Option<&str>) -> Result<StartingOffsets> {
    let bad = |m: &str| SluiceError::Config(format!("scan.startup.mode: {m} in '{value}'"));
    let v = value.trim();
    Ok(match v {
        "earliest" | "earliest-offset" => StartingOffsets::Earliest,
        "latest" | "latest-offset" => StartingOffsets::Latest,
        "group-offsets" => StartingOffsets::GroupOffsets,
        _ => {
            if let Some(ms) = v.strip_prefix("timestamp:") {
                StartingOffsets::Timestamp(ms.trim().parse().map_err(|_| bad("bad timestamp"))?)
            } else if let Some(spec) = v.strip_prefix("specific-offsets:") {
                let mut offsets = BTreeMap::new();
                for part in spec.split(';').filter(|p| !p.trim().is_empty()) {
                    let mut topic = first_topic.map(str::to_string);
                    let mut partition = None;
                    let mut offset = None;
                    for kv in part.split(',') {
                        let (k, val) = kv
                            .split_once(':')
                            .ok_or_else(|| bad("expected key:value"))?;
                        match k.trim() {
                            "topic" => topic = Some(val.trim().to_string()),
                            "partition" => {
                                partition =
                                    Some(val.trim().parse().map_err(|_| bad("bad partition"))?)
                            }
                            "offset" => {
                                offset = Some(val.trim().parse().map_err(|_| bad("bad offset"))?)
                            }
                            _ => return Err(bad("unknown key")),
                        }
                    }
                    match (topic, partition, offset) {
                        (Some(t), Some(p), Some(o)) => {
                            offsets.insert((t, p), o);
                        }
                        _ => return Err(bad("each entry needs a topic, partition and offset")),
                    }
                }
                StartingOffsets::Specific(offsets)
            } else {
                return Err(bad(
                    "expected earliest-offset, latest-offset, group-offsets, timestamp:<ms> or specific-offsets:...",
                ));
            }
        }
    })
}

/// The checkpointed position of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionPosition {
    topic: String,
    partition: i32,
    /// Offset of the next record to read.
    next: i64,
    /// A bounded read ends before this offset.
    stop: Option<i64>,
}

/// Reads Kafka partitions assigned to this subtask (see the module documentation).
pub struct KafkaSource<T, D> {
    config: KafkaSourceBuilder,
    deserializer: Arc<D>,
    consumer: Option<BaseConsumer>,
    /// This subtask's partitions.
    positions: BTreeMap<(String, i32), PartitionPosition>,
    /// Partitions of a bounded read that reached their end.
    finished: BTreeSet<(String, i32)>,
    /// Offsets of checkpoints not yet known complete, to commit to the group.
    to_commit: VecDeque<(u64, Vec<PartitionPosition>)>,
    parse_errors: u64,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T, D> KafkaSource<T, D> {
    pub fn new(config: KafkaSourceBuilder, deserializer: Arc<D>) -> Self {
        KafkaSource {
            config,
            deserializer,
            consumer: None,
            positions: BTreeMap::new(),
            finished: BTreeSet::new(),
            to_commit: VecDeque::new(),
            parse_errors: 0,
            _t: std::marker::PhantomData,
        }
    }

    /// Records skipped as malformed (with `format.ignore-parse-errors`).
    pub fn parse_errors(&self) -> u64 {
        self.parse_errors
    }

    /// The partition counts of the configured topics, waiting for missing ones up to
    /// `scan.topic-wait`.
    fn partitions(
        &self,
        consumer: &BaseConsumer,
        ctx: &OperatorContext,
    ) -> Result<Vec<(String, i32)>> {
        let deadline = Instant::now() + self.config.topic_wait.unwrap_or_default();
        let mut out = Vec::new();
        for topic in &self.config.topics {
            loop {
                let md = consumer
                    .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                    .map_err(|e| ctx.error(format!("Kafka metadata of topic '{topic}': {e}")))?;
                let t = md.topics().iter().find(|t| t.name() == topic);
                let missing = t.is_none_or(|t| t.error().is_some() || t.partitions().is_empty());
                if !missing {
                    let mut ps: Vec<i32> = t
                        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
                        .unwrap_or_default();
                    ps.sort_unstable();
                    out.extend(ps.into_iter().map(|p| (topic.clone(), p)));
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ctx.error(format!(
                        "Kafka topic '{topic}' does not exist (bootstrap servers {}; set scan.topic-wait to wait for it)",
                        self.config.bootstrap
                    )));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(out)
    }

    /// Concrete start offsets of `new` partitions per the starting position.
    fn starting_offsets(
        &self,
        consumer: &BaseConsumer,
        new: &[(String, i32)],
        ctx: &OperatorContext,
    ) -> Result<BTreeMap<(String, i32), i64>> {
        let mut out = BTreeMap::new();
        let kerr = |what: &str, e: KafkaError| ctx.error(format!("Kafka {what}: {e}"));
        let earliest_or_latest = |tp: &(String, i32), latest: bool| -> Result<i64> {
            let (low, high) = consumer
                .fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT)
                .map_err(|e| kerr(&format!("watermarks of {}-{}", tp.0, tp.1), e))?;
            Ok(if latest { high } else { low })
        };
        match &self.config.starting {
            StartingOffsets::Earliest | StartingOffsets::Latest => {
                let latest = self.config.starting == StartingOffsets::Latest;
                for tp in new {
                    out.insert(tp.clone(), earliest_or_latest(tp, latest)?);
                }
            }
            StartingOffsets::Specific(given) => {
                for tp in new {
                    let o = match given.get(tp) {
                        Some(o) => *o,
                        None => earliest_or_latest(tp, false)?,
                    };
                    out.insert(tp.clone(), o);
                }
            }
            StartingOffsets::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                for (t, p) in new {
                    tpl.add_partition_offset(t, *p, Offset::Offset(*ms))
                        .map_err(|e| kerr("offsets for a timestamp", e))?;
                }
                let found = consumer
                    .offsets_for_times(tpl, METADATA_TIMEOUT)
                    .map_err(|e| kerr("offsets for a timestamp", e))?;
                for e in found.elements() {
                    let tp = (e.topic().to_string(), e.partition());
                    let o = match e.offset() {
                        Offset::Offset(o) => o,
                        // No record that late: start after the last one.
                        _ => earliest_or_latest(&tp, true)?,
                    };
                    out.insert(tp, o);
                }
            }
            StartingOffsets::GroupOffsets => {
                if self.config.group_id.is_none() {
                    return Err(ctx.error(
                        "scan.startup.mode group-offsets needs a group id (properties.group.id)",
                    ));
                }
                let mut tpl = TopicPartitionList::new();
                for (t, p) in new {
                    tpl.add_partition(t, *p);
                }
                let found = consumer
                    .committed_offsets(tpl, METADATA_TIMEOUT)
                    .map_err(|e| kerr("committed group offsets", e))?;
                for e in found.elements() {
                    let tp = (e.topic().to_string(), e.partition());
                    let o = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => earliest_or_latest(&tp, false)?,
                    };
                    out.insert(tp, o);
                }
            }
        }
        Ok(out)
    }

    fn assign(&mut self, ctx: &OperatorContext) -> Result<()> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for ((t, p), pos) in &self.positions {
            if !self.finished.contains(&(t.clone(), *p)) {
                tpl.add_partition_offset(t, *p, Offset::Offset(pos.next))
                    .map_err(|e| ctx.error(format!("Kafka assignment: {e}")))?;
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| ctx.error(format!("Kafka assignment: {e}")))
    }

    fn finish_partition(&mut self, tp: (String, i32), ctx: &OperatorContext) -> Result<()> {
        if self.finished.insert(tp) {
            self.assign(ctx)?;
        }
        Ok(())
    }
}

impl<T: sluice::Data, D: KafkaDeserializer<T>> Source for KafkaSource<T, D> {
    type Out = T;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        if self.config.topics.is_empty() {
            return Err(ctx.error("Kafka source without a topic"));
        }
        let consumer = self.config.consumer(ctx)?;
        let all = self.partitions(&consumer, ctx)?;
        let parallelism = ctx.parallelism.max(1);
        let mine: Vec<(String, i32)> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % parallelism == ctx.subtask)
            .map(|(_, tp)| tp.clone())
            .collect();

        let mut restored: BTreeMap<(String, i32), PartitionPosition> = BTreeMap::new();
        if let Some(e) = ctx
            .restored
            .as_ref()
            .and_then(|r| r.operator_state(OFFSETS_STATE))
        {
            for item in &e.items {
                let p: PartitionPosition = bincode::deserialize(item)
                    .map_err(|e| ctx.error(format!("bad Kafka source state: {e}")))?;
                restored.insert((p.topic.clone(), p.partition), p);
            }
        }
        if ctx.subtask == 0 {
            let known: BTreeSet<&(String, i32)> = all.iter().collect();
            for tp in restored.keys().filter(|tp| !known.contains(tp)) {
                log::warn!(
                    "{}: Kafka partition {}-{} is in the restored state but no longer read (topic removed from the job or deleted); its position is dropped",
                    ctx.uid,
                    tp.0,
                    tp.1
                );
            }
        }
        let new: Vec<(String, i32)> = mine
            .iter()
            .filter(|tp| !restored.contains_key(*tp))
            .cloned()
            .collect();
        let starts = self.starting_offsets(&consumer, &new, ctx)?;
        for tp in mine {
            let mut pos = match restored.remove(&tp) {
                Some(p) => p,
                None => PartitionPosition {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    next: starts.get(&tp).copied().unwrap_or(0),
                    stop: None,
                },
            };
            if self.config.bounded == BoundedMode::Latest && pos.stop.is_none() {
                let (_, high) = consumer
                    .fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT)
                    .map_err(|e| {
                        ctx.error(format!("Kafka watermarks of {}-{}: {e}", tp.0, tp.1))
                    })?;
                pos.stop = Some(high);
            }
            if pos.stop.is_some_and(|s| pos.next >= s) {
                self.finished.insert(tp.clone());
            }
            self.positions.insert(tp, pos);
        }
        log::info!(
            "{} ({}/{}): reading Kafka partitions {:?}",
            ctx.uid,
            ctx.subtask,
            parallelism,
            self.positions
                .values()
                .map(|p| (p.topic.as_str(), p.partition, p.next))
                .collect::<Vec<_>>()
        );
        self.consumer = Some(consumer);
        self.assign(ctx)
    }

    fn poll_next(
        &mut self,
        out: &mut Collector<T>,
        max_records: usize,
        ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        if self.positions.len() == self.finished.len() {
            return Ok(if self.config.bounded == BoundedMode::Latest {
                SourcePoll::Finished
            } else {
                SourcePoll::Idle(Duration::from_millis(100))
            });
        }
        let mut emitted = 0;
        let mut ended = Vec::new();
        {
            let Some(consumer) = &self.consumer else {
                return Ok(SourcePoll::Idle(Duration::from_millis(100)));
            };
            while emitted < max_records {
                let msg = match consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(m)) => m,
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        if self.config.bounded == BoundedMode::Latest {
                            // At the end of the log: a partition with this number whose
                            // position reached its stop offset is done.
                            let position = consumer.position().ok();
                            for (tp, pos) in self.positions.iter().filter(|(tp, _)| tp.1 == p) {
                                let at = position
                                    .as_ref()
                                    .and_then(|l| l.find_partition(&tp.0, tp.1))
                                    .and_then(|e| match e.offset() {
                                        Offset::Offset(o) => Some(o),
                                        _ => None,
                                    })
                                    .unwrap_or(pos.next)
                                    .max(pos.next);
                                if pos.stop.is_some_and(|s| at >= s) {
                                    ended.push(tp.clone());
                                }
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
                            return Err(ctx.error(format!("Kafka consumer: {e}")));
                        }
                        // Transient (a broker restarting): librdkafka reconnects and retries.
                        log::warn!("{} ({}): Kafka consumer: {e}", ctx.uid, ctx.subtask);
                        continue;
                    }
                };
                let key = (msg.topic().to_string(), msg.partition());
                let Some(pos) = self.positions.get_mut(&key) else {
                    continue;
                };
                let offset = msg.offset();
                if offset < pos.next {
                    continue;
                }
                if pos.stop.is_some_and(|s| offset >= s) {
                    ended.push(key);
                    continue;
                }
                pos.next = offset + 1;
                let timestamp = msg.timestamp().to_millis();
                let record = KafkaRecord {
                    topic: msg.topic(),
                    partition: msg.partition(),
                    offset,
                    timestamp,
                    key: msg.key(),
                    value: msg.payload(),
                };
                match self.deserializer.deserialize(&record) {
                    Ok(Some(r)) => {
                        match timestamp {
                            Some(ts) => out.collect_with_timestamp(r, ts),
                            None => out.collect(r),
                        }
                        emitted += 1;
                    }
                    Ok(None) => {}
                    Err(e) if self.config.ignore_parse_errors => {
                        self.parse_errors += 1;
                        if self.parse_errors <= 10 || self.parse_errors.is_power_of_two() {
                            log::warn!(
                                "{} ({}): skipping malformed record {}-{}@{offset} ({} so far): {e}",
                                ctx.uid,
                                ctx.subtask,
                                record.topic,
                                record.partition,
                                self.parse_errors
                            );
                        }
                    }
                    Err(e) => {
                        return Err(ctx.error(format!(
                            "malformed record in Kafka topic '{}' partition {} at offset {offset}: {e} (set format.ignore-parse-errors to skip such records)",
                            record.topic, record.partition
                        )));
                    }
                }
                if pos.stop.is_some_and(|s| pos.next >= s) {
                    ended.push(key);
                }
            }
        }
        for tp in ended {
            self.finish_partition(tp, ctx)?;
        }
        if emitted > 0 {
            Ok(SourcePoll::More)
        } else if self.positions.len() == self.finished.len()
            && self.config.bounded == BoundedMode::Latest
        {
            Ok(SourcePoll::Finished)
        } else {
            Ok(SourcePoll::Idle(Duration::from_millis(5)))
        }
    }

    fn snapshot_state(
        &mut self,
        barrier: &Barrier,
        ctx: &mut OperatorContext,
    ) -> Result<OperatorSnapshot> {
        let mut items = Vec::with_capacity(self.positions.len());
        for p in self.positions.values() {
            items.push(
                bincode::serialize(p)
                    .map_err(|e| ctx.error(format!("cannot serialise a Kafka offset: {e}")))?,
            );
        }
        if self.config.group_id.is_some() {
            self.to_commit.push_back((
                barrier.checkpoint_id,
                self.positions.values().cloned().collect(),
            ));
            while self.to_commit.len() > 16 {
                self.to_commit.pop_front();
            }
        }
        Ok(OperatorSnapshot::default().with_operator_state(
            OFFSETS_STATE,
            Redistribution::Union,
            items,
        ))
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint_id: u64,
        ctx: &mut OperatorContext,
    ) -> Result<()> {
        let mut latest = None;
        while self
            .to_commit
            .front()
            .is_some_and(|(id, _)| *id <= checkpoint_id)
        {
            latest = self.to_commit.pop_front();
        }
        if let (Some((_, positions)), Some(consumer)) = (latest, &self.consumer) {
            let mut tpl = TopicPartitionList::new();
            for p in &positions {
                tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next))
                    .map_err(|e| ctx.error(format!("Kafka offsets: {e}")))?;
            }
            // For monitoring only: a failure to commit does not affect the job.
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                log::warn!(
                    "{} ({}): committing Kafka offsets: {e}",
                    ctx.uid,
                    ctx.subtask
                );
            }
        }
        Ok(())
    }

    fn close(&mut self, _ctx: &mut OperatorContext) -> Result<()> {
        self.consumer = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_style_options() {
        let b = KafkaSourceBuilder::from_options([
            ("topic", "a;b"),
            ("properties.bootstrap.servers", "127.0.0.1:9092"),
            ("properties.group.id", "g"),
            ("properties.fetch.min.bytes", "1"),
            ("scan.startup.mode", "timestamp"),
            ("scan.startup.timestamp-millis", "1700000000000"),
            ("scan.bounded.mode", "latest-offset"),
            ("scan.topic-wait", "30 s"),
            ("format.ignore-parse-errors", "true"),
        ])
        .unwrap();
        assert_eq!(b.topics, vec!["a", "b"]);
        assert_eq!(b.group_id.as_deref(), Some("g"));
        assert_eq!(b.starting, StartingOffsets::Timestamp(1_700_000_000_000));
        assert_eq!(b.bounded, BoundedMode::Latest);
        assert_eq!(b.topic_wait, Some(Duration::from_secs(30)));
        assert!(b.ignore_parse_errors);
        assert_eq!(
            b.properties,
            vec![("fetch.min.bytes".to_string(), "1".to_string())]
        );
    }

    #[test]
    fn starting_positions() {
        assert_eq!(
            parse_starting("earliest", None).unwrap(),
            StartingOffsets::Earliest
        );
        assert_eq!(
            parse_starting("latest-offset", None).unwrap(),
            StartingOffsets::Latest
        );
        assert_eq!(
            parse_starting("timestamp:42", None).unwrap(),
            StartingOffsets::Timestamp(42)
        );
        let s = parse_starting(
            "specific-offsets:partition:0,offset:42;topic:t2,partition:1,offset:7",
            Some("t1"),
        )
        .unwrap();
        let expected: BTreeMap<(String, i32), i64> =
            [(("t1".to_string(), 0), 42), (("t2".to_string(), 1), 7)].into();
        assert_eq!(s, StartingOffsets::Specific(expected));
        for bad in ["sometimes", "timestamp:x", "specific-offsets:partition:0"] {
            let e = parse_starting(bad, Some("t")).unwrap_err().to_string();
            assert!(e.contains("scan.startup.mode"), "{e}");
        }
        assert!(
            KafkaSourceBuilder::new("x")
                .option("scan.bogus", "1")
                .is_err()
        );
    }
}
