//! Windowed example: generated click events with event time, counted per user in tumbling
//! event-time windows, with a bounded out-of-orderness watermark.

use serde::{Deserialize, Serialize};
use sluice::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Click {
    pub user: String,
    pub timestamp_ms: i64,
}

/// Event `i`: user `user{i % users}` at time `i * step_ms`, with every 7th event delayed by
/// `delay_ms` (out of order, but within the watermark's bound when `delay_ms <= bound`).
pub fn click(i: u64, users: u64, step_ms: i64, delay_ms: i64) -> Click {
    let base = i as i64 * step_ms;
    Click {
        user: format!("user{}", i % users),
        timestamp_ms: if i % 7 == 3 {
            (base - delay_ms).max(0)
        } else {
            base
        },
    }
}

/// Per-user click counts per tumbling window of `window`.
pub fn clicks_per_window(
    clicks: &DataStream<Click>,
    window: Duration,
    out_of_orderness: Duration,
) -> DataStream<Windowed<String, u64>> {
    clicks
        .assign_timestamps_and_watermarks(out_of_orderness, |c: &Click| c.timestamp_ms)
        .uid("timestamps")
        .key_by_field(|c: &Click| &c.user)
        .window(WindowAssigner::tumbling(window))
        .count()
        .uid("window-count")
}
