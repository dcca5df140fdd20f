//! Shared helpers for the integration tests in `tests/`, which run against the loopback test cluster of `scripts/testcluster.sh`.

pub use sluice_testcluster::TestCluster;

/// A name no earlier run used, so tests never trip over leftovers of another run.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}
