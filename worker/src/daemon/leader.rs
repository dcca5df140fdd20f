//! Finding the leading master through ZooKeeper (`high-availability.type: zookeeper`): the
//! leader publishes a [`LeaderInfo`] at `<root>/<cluster-id>/leader/connection_info`.
//!
//! The ZooKeeper client is async; it runs on a small runtime of its own and the calls here
//! block. Cancellation: none of the calls can be cancelled. Connection loss: a read fails
//! once the client gives up (see the methods); the daemon then opens a new session.

use std::time::Duration;

use sluice_core::config::HaConfig;
use sluice_core::{Result, SluiceError};
use zookeeper_client as zk;

use crate::control::protocol::LeaderInfo;

/// A ZooKeeper session used to look up the leader.
pub struct LeaderLookup {
    client: zk::Client,
    path: String,
    rt: tokio::runtime::Runtime,
}

fn zk_err(what: &str, e: impl std::fmt::Display) -> SluiceError {
    SluiceError::Job(format!("ZooKeeper: {what}: {e}"))
}

impl LeaderLookup {
    /// Opens a session to `high-availability.zookeeper.quorum`; fails when no member answers
    /// within the session timeout.
    pub fn connect(ha: &HaConfig) -> Result<LeaderLookup> {
        let quorum = ha.zk_quorum.clone().unwrap_or_default();
        let timeout = ha.zk_session_timeout;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                SluiceError::Internal(format!("cannot start the ZooKeeper runtime: {e}"))
            })?;
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    timeout,
                    zk::Client::connector()
                        .with_session_timeout(timeout)
                        .with_connection_timeout(timeout.min(Duration::from_secs(15)))
                        .connect(&quorum),
                )
                .await
            })
            .map_err(|_| zk_err(&format!("connecting to {quorum}"), "no answer"))?
            .map_err(|e| zk_err(&format!("connecting to {quorum}"), e))?;
        Ok(LeaderLookup {
            client,
            path: format!("{}/leader/connection_info", ha.zk_base()),
            rt,
        })
    }

    /// The published leader, if any.
    pub fn current(&self) -> Result<Option<LeaderInfo>> {
        match self.rt.block_on(self.client.get_data(&self.path)) {
            Ok((data, _)) => Ok(decode(&self.path, &data)),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(zk_err(&format!("reading {}", self.path), e)),
        }
    }

    /// Waits up to `timeout` for a leader other than `not` (by epoch) to be published;
    /// `Ok(None)` when none was within the time. Watches the node, so a new leader is seen
    /// as soon as it publishes.
    pub fn wait_for_new(&self, not: Option<i64>, timeout: Duration) -> Result<Option<LeaderInfo>> {
        let path = self.path.clone();
        self.rt.block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let (stat, watcher) = self
                    .client
                    .check_and_watch_stat(&path)
                    .await
                    .map_err(|e| zk_err(&format!("watching {path}"), e))?;
                if stat.is_some() {
                    match self.client.get_data(&path).await {
                        Ok((data, _)) => {
                            if let Some(info) = decode(&path, &data)
                                && Some(info.epoch) != not
                            {
                                return Ok(Some(info));
                            }
                        }
                        Err(zk::Error::NoNode) => {}
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
