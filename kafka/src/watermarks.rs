//! Per-partition watermarks of the Kafka source, as Flink's Kafka source keeps them: each
//! partition has its own bounded-out-of-orderness clock over its record timestamps, the
//! subtask's watermark is the minimum over its partitions, and a partition without records
//! for `source.idle-timeout` is idle and left out of the minimum until it has records again.
//!
//! One clock per partition (not one per subtask) matters because Kafka orders records only
//! within a partition: a subtask reading a partition that is behind must not let a partition
//! that is ahead advance event time past records it has yet to read.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_worker::data::MIN_WATERMARK;

/// A partition's event-time clock.
#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    /// The largest record timestamp seen, `MIN_WATERMARK` before the first.
    max_ts: i64,
    /// When the partition last had a record (or was assigned).
    last_active: Instant,
}

/// The watermarks of a subtask's partitions and the subtask's combined watermark.
#[derive(Debug, Clone)]
pub(crate) struct PartitionWatermarks {
    out_of_orderness_ms: i64,
    idle_timeout: Option<Duration>,
    clocks: BTreeMap<(String, i32), PartitionClock>,
    emitted: i64,
}

impl PartitionWatermarks {
    pub(crate) fn new(max_out_of_orderness: Duration, idle_timeout: Option<Duration>) -> Self {
        PartitionWatermarks {
            out_of_orderness_ms: max_out_of_orderness.as_millis() as i64,
            idle_timeout,
            clocks: BTreeMap::new(),
            emitted: MIN_WATERMARK,
        }
    }

    /// Starts the clock of a partition this subtask reads from now on. Its idle timeout runs
    /// from now, so a partition that never has a record stops holding back the watermark too.
    pub(crate) fn add_partition(&mut self, tp: &(String, i32), now: Instant) {
        self.clocks.entry(tp.clone()).or_insert(PartitionClock {
            max_ts: MIN_WATERMARK,
            last_active: now,
        });
    }

    /// Forgets a partition that has ended (a bounded read reached its stop offset).
    pub(crate) fn remove_partition(&mut self, tp: &(String, i32)) {
        self.clocks.remove(tp);
    }

    /// A record of `tp` with event time `ts`.
    pub(crate) fn on_record(&mut self, tp: &(String, i32), ts: i64, now: Instant) {
        if let Some(c) = self.clocks.get_mut(tp) {
            c.max_ts = c.max_ts.max(ts);
            c.last_active = now;
        }
    }

    fn is_idle(&self, c: &PartitionClock, now: Instant) -> bool {
        self.idle_timeout
            .is_some_and(|t| now.saturating_duration_since(c.last_active) >= t)
    }

    /// Whether the subtask as a whole is idle: it reads no partition, or every partition it
    /// reads is idle. The source then marks its output idle (see `Source::is_idle`), so this
    /// subtask does not hold back the watermark of the operators downstream either.
    pub(crate) fn all_idle(&self, now: Instant) -> bool {
        self.clocks.values().all(|c| self.is_idle(c, now))
    }

    /// The combined watermark when it advanced past the one returned last: the minimum over
    /// the active partitions. While every partition is idle the watermark stays where it is
    /// and the subtask is idle as a whole ([`PartitionWatermarks::all_idle`]).
    pub(crate) fn advance(&mut self, now: Instant) -> Option<i64> {
        let mut min: Option<i64> = None;
        for c in self.clocks.values() {
            if self.is_idle(c, now) {
                continue;
            }
            let w = if c.max_ts == MIN_WATERMARK {
                MIN_WATERMARK
            } else {
                c.max_ts
                    .saturating_sub(self.out_of_orderness_ms)
                    .saturating_sub(1)
            };
            min = Some(min.map_or(w, |m| m.min(w)));
        }
        match min {
            Some(w) if w > self.emitted => {
                self.emitted = w;
                Some(w)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> (String, i32) {
        ("t".to_string(), p)
    }

    #[test]
    fn minimum_over_partitions_and_idle_ones_left_out() {
        let t0 = Instant::now();
        let mut w =
            PartitionWatermarks::new(Duration::from_millis(100), Some(Duration::from_secs(1)));
        w.add_partition(&tp(0), t0);
        w.add_partition(&tp(1), t0);
        w.on_record(&tp(0), 5_000, t0);
        // Partition 1 has no record yet: it holds the watermark back.
        assert_eq!(w.advance(t0), None);
        w.on_record(&tp(1), 2_000, t0);
        assert_eq!(w.advance(t0), Some(1_899));
        w.on_record(&tp(0), 9_000, t0 + Duration::from_millis(800));
        assert_eq!(w.advance(t0 + Duration::from_millis(800)), None);
        // Partition 1 is silent for the idle timeout: partition 0 alone decides.
        assert_eq!(w.advance(t0 + Duration::from_millis(1_000)), Some(8_899));
        // Partition 1 becomes active again behind the watermark: it never goes back.
        w.on_record(&tp(1), 3_000, t0 + Duration::from_millis(1_100));
        assert_eq!(w.advance(t0 + Duration::from_millis(1_100)), None);
        w.on_record(&tp(1), 9_500, t0 + Duration::from_millis(1_200));
        assert_eq!(w.advance(t0 + Duration::from_millis(1_200)), None);
        w.on_record(&tp(0), 9_700, t0 + Duration::from_millis(1_200));
        assert_eq!(w.advance(t0 + Duration::from_millis(1_200)), Some(9_399));
        // Every partition idle: the watermark stays, and the subtask is idle as a whole.
        assert!(!w.all_idle(t0 + Duration::from_millis(1_200)));
        assert_eq!(w.advance(t0 + Duration::from_secs(10)), None);
        assert!(w.all_idle(t0 + Duration::from_secs(10)));
        // A record makes it active again.
        w.on_record(&tp(1), 9_800, t0 + Duration::from_secs(10));
        assert!(!w.all_idle(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn a_subtask_without_partitions_is_idle() {
        let t0 = Instant::now();
        let mut w = PartitionWatermarks::new(Duration::ZERO, None);
        assert!(w.all_idle(t0));
        // Without an idle timeout only having no partition makes it idle.
        w.add_partition(&tp(0), t0);
        assert!(!w.all_idle(t0 + Duration::from_secs(3600)));
        w.remove_partition(&tp(0));
        assert!(w.all_idle(t0));
    }

    #[test]
    fn without_idle_timeout_a_silent_partition_holds_back() {
        let t0 = Instant::now();
        let mut w = PartitionWatermarks::new(Duration::ZERO, None);
        w.add_partition(&tp(0), t0);
        w.add_partition(&tp(1), t0);
        w.on_record(&tp(0), 1_000, t0);
        w.on_record(&tp(1), 500, t0);
        assert_eq!(w.advance(t0), Some(499));
        w.on_record(&tp(0), 8_000, t0);
        assert_eq!(w.advance(t0 + Duration::from_secs(3600)), None);
        w.remove_partition(&tp(1));
        assert_eq!(w.advance(t0), Some(7_999));
    }
}
