//! Configuration of the Kafka source: builder methods and Flink-style option keys.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;

use sluice::{OperatorContext, Result, SluiceError};

use crate::discovery;
use crate::parse_bool;

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
    pub(crate) bootstrap: String,
    pub(crate) topics: Vec<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) starting: StartingOffsets,
    pub(crate) bounded: BoundedMode,
    pub(crate) properties: Vec<(String, String)>,
    pub(crate) topic_wait: Option<Duration>,
    pub(crate) ignore_parse_errors: bool,
    /// Topics matching this (anchored) pattern are read, besides `topics`.
    pub(crate) topic_pattern: Option<regex::Regex>,
    pub(crate) discovery_interval: Option<Duration>,
    /// Per-partition watermarks with this out-of-orderness bound, when set.
    pub(crate) watermark_bound: Option<Duration>,
    pub(crate) idle_timeout: Option<Duration>,
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
            topic_pattern: None,
            discovery_interval: None,
            watermark_bound: None,
            idle_timeout: None,
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

    /// Reads every topic whose whole name matches this regular expression (Flink's
    /// `setTopicPattern`); internal topics (`__...`) are never read. With
    /// [`KafkaSourceBuilder::partition_discovery_interval`] topics created later are read too.
    pub fn topic_pattern(mut self, pattern: &str) -> Result<Self> {
        let re = discovery::anchored(pattern)
            .map_err(|e| SluiceError::Config(format!("topic-pattern '{pattern}': {e}")))?;
        self.topic_pattern = Some(re);
        Ok(self)
    }

    /// Lists the partitions again this often while the job runs: partitions added to the
    /// topics, and topics matching the pattern, are read from their earliest offset
    /// (`partition.discovery.interval`; off by default, and for bounded reads).
    pub fn partition_discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery_interval = Some(interval).filter(|d| !d.is_zero());
        self
    }

    /// Makes the source emit watermarks from the Kafka record timestamps, one clock per
    /// partition (largest timestamp seen minus `max_out_of_orderness`, minus 1 ms), the minimum
    /// over the subtask's partitions: Flink's
    /// `WatermarkStrategy.forBoundedOutOfOrderness` given to `fromSource`.
    pub fn watermarks(mut self, max_out_of_orderness: Duration) -> Self {
        self.watermark_bound = Some(max_out_of_orderness);
        self
    }

    /// A partition without records for this long no longer holds back the watermark until it
    /// has records again (`source.idle-timeout`; Flink's `withIdleness`).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout).filter(|d| !d.is_zero());
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
    /// - `format.ignore-parse-errors` (also `json.ignore-parse-errors`): `true` or `false`;
    /// - `topic-pattern`: a regular expression over whole topic names;
    /// - `partition.discovery.interval` (also `scan.topic-partition-discovery.interval`): a
    ///   duration, `0` for none;
    /// - `source.idle-timeout` (also `scan.watermark.idle-timeout`): a duration, `0` for none;
    /// - `scan.watermark.max-out-of-orderness`: a duration; per-partition watermarks from the
    ///   record timestamps (see [`KafkaSourceBuilder::watermarks`]).
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
            "topic-pattern" => return self.topic_pattern(value.trim()),
            "partition.discovery.interval" | "scan.topic-partition-discovery.interval" => {
                return Ok(self.partition_discovery_interval(parse_duration(key, value)?));
            }
            "source.idle-timeout" | "scan.watermark.idle-timeout" => {
                return Ok(self.idle_timeout(parse_duration(key, value)?));
            }
            "scan.watermark.max-out-of-orderness" => {
                return Ok(self.watermarks(parse_duration(key, value)?));
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

    pub(crate) fn consumer(&self, ctx: &OperatorContext) -> Result<BaseConsumer> {
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

/// A topic pattern as the user wrote it (without the anchors added to it).
pub(crate) fn pattern_text(pattern: &regex::Regex) -> &str {
    let s = pattern.as_str();
    s.strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(s)
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
