//! Which partitions the Kafka source reads and which subtask reads each: topics by name or by
//! a pattern (`topic-pattern`), listed again every `partition.discovery.interval` so that
//! partitions added to a topic and new topics matching the pattern are read while the job runs.
//!
//! A partition's subtask depends only on the partition and the parallelism (Flink's
//! `KafkaSourceEnumerator.getSplitOwner`): subtasks list partitions independently and at
//! different moments, so an owner computed from a position in a list could differ between
//! two subtasks that saw different lists, and a partition would be read twice or never.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use regex::Regex;

/// The subtask (of `parallelism`) that reads `partition` of `topic`: the topic's partitions
/// go round-robin from a start derived from the topic name (Java's `String.hashCode`, as
/// Flink computes it, so both spread a topic's partitions the same way).
pub(crate) fn owner(topic: &str, partition: i32, parallelism: usize) -> usize {
    let n = parallelism.max(1) as i64;
    let mut h: i32 = 0;
    for unit in topic.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let start = (i64::from(h.wrapping_mul(31) & 0x7FFF_FFFF)) % n;
    ((start + i64::from(partition.max(0))) % n) as usize
}

/// Whether a topic name is matched by a pattern: the whole name, as Java's `Matcher.matches`.
pub(crate) fn matches(pattern: &Regex, topic: &str) -> bool {
    pattern
        .find(topic)
        .is_some_and(|m| m.start() == 0 && m.end() == topic.len())
}

/// A pattern anchored at both ends, so that `find` means a whole-name match.
pub(crate) fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// The partitions of the topics matching `pattern` (internal topics such as
/// `__consumer_offsets` excluded), sorted by topic and partition.
pub(crate) fn pattern_partitions(
    consumer: &BaseConsumer,
    pattern: &Regex,
    timeout: Duration,
) -> KafkaResult<Vec<(String, i32)>> {
    let md = consumer.fetch_metadata(None, timeout)?;
    let mut out: Vec<(String, i32)> = md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
        .filter(|t| matches(pattern, t.name()))
        .flat_map(|t| {
            t.partitions()
                .iter()
                .map(|p| (t.name().to_string(), p.id()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The partitions of the named topics that exist now, sorted by partition within a topic.
pub(crate) fn named_partitions(
    consumer: &BaseConsumer,
    topics: &[String],
    timeout: Duration,
) -> KafkaResult<Vec<(String, i32)>> {
    let mut out = Vec::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), timeout)?;
        if let Some(t) = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
        {
            let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
            ps.sort_unstable();
            out.extend(ps.into_iter().map(|p| (topic.clone(), p)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_spread_a_topic_round_robin_from_its_hash() {
        // Java: "orders".hashCode() == -1008770331.
        let h: i32 = -1_008_770_331;
        let start = (i64::from(h.wrapping_mul(31) & 0x7FFF_FFFF) % 3) as usize;
        for p in 0..7 {
            assert_eq!(owner("orders", p, 3), (start + p as usize) % 3);
        }
        // Every subtask gets a share of a topic with as many partitions as subtasks.
        let mut seen: Vec<usize> = (0..4).map(|p| owner("events", p, 4)).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3]);
        assert_eq!(owner("x", 5, 1), 0);
    }

    #[test]
    fn patterns_match_whole_names() {
        let p = anchored("events-.*").unwrap();
        assert!(matches(&p, "events-1"));
        assert!(!matches(&p, "old-events-1"));
        let p = anchored("a|b").unwrap();
        assert!(matches(&p, "a") && matches(&p, "b") && !matches(&p, "ab"));
    }
}
