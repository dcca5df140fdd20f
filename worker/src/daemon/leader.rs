//! Finding the leading master through ZooKeeper (`high-availability.type: zookeeper`): the
//! leader publishes a [`LeaderInfo`] at `<root>/<cluster-id>/leader/connection_info`.
//!
//! The calls block on the session's own runtime (see [`super::zk`]). Cancellation: none of the
//! calls can be cancelled. Connection loss: a read fails once the client gives up (see the
//! methods); the daemon then opens a new session.

use std::time::Duration;

use sluice_core::Result;
use sluice_core::config::HaConfig;
use zookeeper_client as zkc;

use super::zk::{Zk, zk_err};
use crate::control::protocol::LeaderInfo;

/// A ZooKeeper session used to look up the leader.
pub struct LeaderLookup {
    zk: Zk,
    path: String,
}

impl LeaderLookup {
    /// Opens a session to `high-availability.zookeeper.quorum`; fails when no member answers
    /// within the session timeout.
    pub fn connect(ha: &HaConfig) -> Result<LeaderLookup> {
        let quorum = ha.zk_quorum.clone().unwrap_or_default();
        Ok(LeaderLookup {
            zk: Zk::connect(&quorum, ha.zk_session_timeout)?,
            path: format!("{}/leader/connection_info", ha.zk_base()),
        })
    }

    /// The published leader, if any.
    ///
    /// Connection loss: fails once the client gives up reconnecting.
    pub fn current(&self) -> Result<Option<LeaderInfo>> {
        Ok(self
            .zk
            .get(&self.path)?
            .and_then(|data| decode(&self.path, &data)))
    }

    /// Waits up to `timeout` for a leader other than `not` (by epoch) to be published;
    /// `Ok(None)` when none was within the time. Watches the node, so a new leader is seen
    /// as soon as it publishes.
    ///
    /// Cancellation: none (the wait ends at `timeout`). Connection loss: fails once the
    /// client gives up reconnecting.
    pub fn wait_for_new(&self, not: Option<i64>, timeout: Duration) -> Result<Option<LeaderInfo>> {
        let path = self.path.clone();
        let client = self.zk.client().clone();
        self.zk.block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let (stat, watcher) = client
                    .check_and_watch_stat(&path)
                    .await
                    .map_err(|e| zk_err(&format!("watching {path}"), e))?;
                if stat.is_some() {
                    match client.get_data(&path).await {
                        Ok((data, _)) => {
                            if let Some(info) = decode(&path, &data)
                                && Some(info.epoch) != not
                            {
                                return Ok(Some(info));
                            }
                        }
                        Err(zkc::Error::NoNode) => {}
                        Err(e) => return Err(zk_err(&format!("reading {path}"), e)),
                    }
                }
                if tokio::time::timeout_at(deadline, watcher.changed())
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
        })
    }
}

fn decode(path: &str, data: &[u8]) -> Option<LeaderInfo> {
    match serde_json::from_slice(data) {
        Ok(info) => Some(info),
        Err(e) => {
            eprintln!("sluice-worker: {path} does not hold a leader's address: {e}");
            None
        }
    }
}
