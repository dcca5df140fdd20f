//! The Kafka source: an assign-based consumer per subtask, its partition offsets kept as
//! checkpointed operator state.
//!
//! Topics are given by name or by a pattern (`topic-pattern`); each partition is read by the
//! subtask [`discovery::owner`] names, a function of the partition and the parallelism only,
//! and with `partition.discovery.interval` the partitions are listed again while the job runs
//! (new partitions and new matching topics start at their earliest offset, as in Flink). The
//! state is union state holding, for every partition, the offset of the next record to read (and the stop offset of a bounded read), so a restore at any parallelism
//! resumes each partition exactly after the checkpointed offset. Partitions the state does not
//! know (new topics, new partitions) start at the starting position; positions of partitions
//! that are gone are dropped with a warning. The consumer group only sees offsets committed on
//! checkpoint completion, for monitoring: it is never read back, except by the
//! `group-offsets` starting position of a fresh start.
//!
//! With [`KafkaSourceBuilder::watermarks`] the source emits watermarks itself, one clock per
//! partition (see [`crate::watermarks`]), and `source.idle-timeout` keeps silent partitions from
//! holding them back. A subtask with no partition, or whose partitions are all idle, marks its
//! output idle ([`Source::is_idle`]) so that it does not hold back downstream watermarks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use sluice::{Collector, OperatorContext, Result, Source, SourcePoll};
use sluice_worker::data::Barrier;
use sluice_worker::snapshot::{OperatorSnapshot, Redistribution};

use crate::discovery::{self, owner};
use crate::format::{KafkaDeserializer, KafkaRecord};
use crate::source_config::{BoundedMode, KafkaSourceBuilder, StartingOffsets, pattern_text};
use crate::watermarks::PartitionWatermarks;

/// A partition: topic and partition number.
type TopicPart = (String, i32);

/// The operator-state name of the partition offsets.
pub const OFFSETS_STATE: &str = "kafka-source/offsets";

const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// Discovery runs on the task's thread between polls: it must not stall reading for long.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The offset of the earliest retained record of a partition.
fn earliest_offset(
    consumer: &BaseConsumer,
    tp: &(String, i32),
    timeout: Duration,
) -> std::result::Result<i64, KafkaError> {
    consumer
        .fetch_watermarks(&tp.0, tp.1, timeout)
        .map(|(low, _)| low)
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
    /// Per-partition event-time clocks, when the source emits watermarks.
    clock: Option<PartitionWatermarks>,
    /// When to list the partitions again (partition discovery).
    next_discovery: Option<Instant>,
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
            clock: None,
            next_discovery: None,
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
        if let Some(pattern) = &self.config.topic_pattern {
            loop {
                out = discovery::pattern_partitions(consumer, pattern, METADATA_TIMEOUT)
                    .map_err(|e| ctx.error(format!("Kafka metadata: {e}")))?;
                // With discovery on, matching topics may come later: start without any.
                if !out.is_empty() || self.discovery_interval().is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ctx.error(format!(
                        "no Kafka topic matches topic-pattern '{}' (bootstrap servers {}; set scan.topic-wait to wait for one, or partition.discovery.interval to pick them up later)",
                        pattern_text(pattern),
                        self.config.bootstrap
                    )));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
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
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The discovery interval, none for a bounded read (it ends at offsets fixed at the start).
    fn discovery_interval(&self) -> Option<Duration> {
        self.config
            .discovery_interval
            .filter(|_| self.config.bounded == BoundedMode::Unbounded)
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

    /// Lists the partitions again and starts reading the new ones this subtask owns, from
    /// their earliest offset. A failed listing (a broker restarting) is retried next time.
    fn discover(&mut self, ctx: &OperatorContext) -> Result<()> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let listed = match &self.config.topic_pattern {
            Some(p) => discovery::pattern_partitions(consumer, p, DISCOVERY_TIMEOUT),
            None => Ok(Vec::new()),
        }
        .and_then(|mut l| {
            l.extend(discovery::named_partitions(
                consumer,
                &self.config.topics,
                DISCOVERY_TIMEOUT,
            )?);
            Ok(l)
        });
        let listed = match listed {
            Ok(l) => l,
            Err(e) => {
                log::warn!(
                    "{} ({}): Kafka partition discovery: {e}",
                    ctx.uid,
                    ctx.subtask
                );
                return Ok(());
            }
        };
        let parallelism = ctx.parallelism.max(1);
        let now = Instant::now();
        let mut added = Vec::new();
        for tp in listed {
            if owner(&tp.0, tp.1, parallelism) != ctx.subtask || self.positions.contains_key(&tp) {
                continue;
            }
            let next = match earliest_offset(consumer, &tp, DISCOVERY_TIMEOUT) {
                Ok(o) => o,
                Err(e) => {
                    log::warn!(
                        "{} ({}): Kafka partition {}-{} discovered but its offsets are unknown yet: {e}",
                        ctx.uid,
                        ctx.subtask,
                        tp.0,
                        tp.1
                    );
                    continue;
                }
            };
            if let Some(clock) = &mut self.clock {
                clock.add_partition(&tp, now);
            }
            added.push((tp.0.clone(), tp.1, next));
            self.positions.insert(
                tp.clone(),
                PartitionPosition {
                    topic: tp.0,
                    partition: tp.1,
                    next,
                    stop: None,
                },
            );
        }
        if added.is_empty() {
            return Ok(());
        }
        log::info!(
            "{} ({}/{}): discovered Kafka partitions {added:?}",
            ctx.uid,
            ctx.subtask,
            parallelism
        );
        self.assign(ctx)
    }

    fn finish_partition(&mut self, tp: (String, i32), ctx: &OperatorContext) -> Result<()> {
        if let Some(clock) = &mut self.clock {
            clock.remove_partition(&tp);
        }
        if self.finished.insert(tp) {
            self.assign(ctx)?;
        }
        Ok(())
    }
}

impl<T: sluice::Data, D: KafkaDeserializer<T>> Source for KafkaSource<T, D> {
    type Out = T;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<()> {
        if self.config.topics.is_empty() && self.config.topic_pattern.is_none() {
            return Err(ctx.error("Kafka source without a topic or topic-pattern"));
        }
        let consumer = self.config.consumer(ctx)?;
        let all = self.partitions(&consumer, ctx)?;
        let parallelism = ctx.parallelism.max(1);
        let mine: Vec<(String, i32)> = all
            .iter()
            .filter(|tp| owner(&tp.0, tp.1, parallelism) == ctx.subtask)
            .cloned()
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
        // With discovery, partitions of a topic the state knows were added after the
        // checkpoint: they start at the earliest offset, as when discovered while running.
        let known_topics: BTreeSet<String> = restored.keys().map(|tp| tp.0.clone()).collect();
        let (grown, new): (Vec<TopicPart>, Vec<TopicPart>) = mine
            .iter()
            .filter(|tp| !restored.contains_key(*tp))
            .cloned()
            .partition(|tp| self.discovery_interval().is_some() && known_topics.contains(&tp.0));
        let mut starts = self.starting_offsets(&consumer, &new, ctx)?;
        for tp in grown {
            let low = earliest_offset(&consumer, &tp, METADATA_TIMEOUT)
                .map_err(|e| ctx.error(format!("Kafka watermarks of {}-{}: {e}", tp.0, tp.1)))?;
            starts.insert(tp, low);
        }
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
        if let Some(bound) = self.config.watermark_bound {
            let now = Instant::now();
            let mut clock = PartitionWatermarks::new(bound, self.config.idle_timeout);
            for tp in self
                .positions
                .keys()
                .filter(|tp| !self.finished.contains(*tp))
            {
                clock.add_partition(tp, now);
            }
            self.clock = Some(clock);
        }
        self.next_discovery = self.discovery_interval().map(|d| Instant::now() + d);
        self.consumer = Some(consumer);
        self.assign(ctx)
    }

    fn poll_next(
        &mut self,
        out: &mut Collector<T>,
        max_records: usize,
        ctx: &mut OperatorContext,
    ) -> Result<SourcePoll> {
        let now = Instant::now();
        if let Some(interval) = self.discovery_interval()
            && self.next_discovery.is_none_or(|t| now >= t)
        {
            self.next_discovery = Some(now + interval);
            self.discover(ctx)?;
        }
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
                if let (Some(clock), Some(ts)) = (&mut self.clock, timestamp) {
                    clock.on_record(&key, ts, now);
                }
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
        if let Some(w) = self.clock.as_mut().and_then(|c| c.advance(now)) {
            out.emit_watermark(w);
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

    /// Idle when this subtask reads no partition (more subtasks than partitions, or all of a
    /// bounded read's partitions ended) or, with watermarks, when every partition it reads has
    /// been silent for `source.idle-timeout`: it must not hold back downstream watermarks.
    fn is_idle(&self) -> bool {
        self.positions.len() == self.finished.len()
            || self
                .clock
                .as_ref()
                .is_some_and(|c| c.all_idle(Instant::now()))
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
