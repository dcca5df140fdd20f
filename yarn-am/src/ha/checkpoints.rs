//! Checkpoint ids and completed-checkpoint pointers in ZooKeeper, so that a new leader
//! continues every job's ids and restores the checkpoint the old leader last completed:
//!
//! - `<base>/checkpoint-counter/<job-id>`: the next checkpoint id, as decimal text;
//! - `<base>/checkpoints/<job-id>/chk-<id, 19 digits>`: the URL of a completed checkpoint.
//!
//! Every write is a multi-op that also checks this master's latch node: the node is
//! ephemeral, so once the session that elected this master is gone no write succeeds, and a
//! deposed master (paused, partitioned) can neither take an id nor complete a checkpoint.

use std::sync::Arc;

use sluice_core::config::HaConfig;
use sluice_core::{Result, SluiceError};
use zookeeper_client as zkc;

use super::zk::{Zk, zk_err};
use crate::checkpoint::CheckpointRegistry;

/// `<base>/checkpoints/<job-id>`.
pub fn pointers_dir(ha: &HaConfig, job_id: &str) -> String {
    format!("{}/checkpoints/{job_id}", ha.zk_base())
}

/// `<base>/checkpoint-counter/<job-id>`.
pub fn counter_path(ha: &HaConfig, job_id: &str) -> String {
    format!("{}/checkpoint-counter/{job_id}", ha.zk_base())
}

const POINTER_PREFIX: &str = "chk-";

fn pointer_id(name: &str) -> Option<u64> {
    name.strip_prefix(POINTER_PREFIX)?.parse().ok()
}

/// The latch node is written once, when it is created.
const LATCH_VERSION: i32 = 0;

/// One job's counter and pointers, written only while `latch` (this master's) exists.
pub struct ZkCheckpointRegistry {
    zk: Arc<Zk>,
    job_id: String,
    latch: String,
    counter: String,
    dir: String,
    guard: Option<super::LeaderGuard>,
}

impl ZkCheckpointRegistry {
    pub fn new(zk: Arc<Zk>, ha: &HaConfig, latch: &str, job_id: &str) -> Self {
        ZkCheckpointRegistry {
            zk,
            job_id: job_id.to_string(),
            latch: latch.to_string(),
            counter: counter_path(ha, job_id),
            dir: pointers_dir(ha, job_id),
            guard: None,
        }
    }

    /// Also checks `guard` before a checkpoint completes, so a leader that gave up (or is
    /// suspended) stops at once, before it even writes a checkpoint's `_metadata`.
    pub fn with_guard(mut self, guard: super::LeaderGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    fn fenced(&self, what: &str, e: zkc::MultiWriteError) -> SluiceError {
        let lost = matches!(
            &e,
            zkc::MultiWriteError::OperationFailed {
                index: 0,
                source: zkc::Error::NoNode
            }
        );
        if lost {
            SluiceError::Job(format!(
                "ZooKeeper: {what}: refused, this master no longer leads (its latch node {} is \
                 gone)",
                self.latch
            ))
        } else {
            SluiceError::Job(format!("ZooKeeper: {what}: {e}"))
        }
    }
}

fn persistent() -> zkc::CreateOptions<'static> {
    zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all())
}

impl CheckpointRegistry for ZkCheckpointRegistry {
    fn check_leading(&self) -> Result<()> {
        match &self.guard {
            Some(g) => g.check(&format!("complete a checkpoint of job {}", self.job_id)),
            None => Ok(()),
        }
    }

    /// Cancellation: none. Connection loss: fails (no id is taken); the checkpoint is not
    /// started.
    fn next_id(&self, at_least: u64) -> Result<u64> {
        let parent = self.counter.rsplit_once('/').map_or("/", |(p, _)| p);
        self.zk.mkdirs(parent)?;
        let client = self.zk.client().clone();
        self.zk.block_on(async {
            loop {
                let (current, version) = match client.get_data(&self.counter).await {
                    Ok((data, stat)) => {
                        let text = String::from_utf8_lossy(&data);
                        let n = text.trim().parse::<u64>().map_err(|_| {
                            SluiceError::Job(format!(
                                "ZooKeeper: {} holds '{text}', not a checkpoint id",
                                self.counter
                            ))
                        })?;
                        (n, Some(stat.version))
                    }
                    Err(zkc::Error::NoNode) => (0, None),
                    Err(e) => return Err(zk_err(&format!("reading {}", self.counter), e)),
                };
                let id = current.max(at_least).max(1);
                let next = (id + 1).to_string();
                let mut w = client.new_multi_writer();
                let built = w
                    .add_check_version(&self.latch, LATCH_VERSION)
                    .and_then(|_| match version {
                        Some(v) => w.add_set_data(&self.counter, next.as_bytes(), Some(v)),
                        None => w.add_create(&self.counter, next.as_bytes(), &persistent()),
                    });
                built.map_err(|e| zk_err(&format!("updating {}", self.counter), e))?;
                match w.commit().await {
                    Ok(_) => return Ok(id),
                    // Another writer got there first (a previous leader's last update): retry.
                    Err(zkc::MultiWriteError::OperationFailed {
                        index: 1,
                        source: zkc::Error::BadVersion | zkc::Error::NodeExists,
                    }) => continue,
                    Err(e) => {
                        return Err(self.fenced(&format!("taking an id from {}", self.counter), e));
                    }
                }
            }
        })
    }

    /// Cancellation: none. Connection loss: fails and the checkpoint does not complete (its
    /// directory is discarded). Should the commit have happened with its answer lost, the
    /// pointer names a discarded directory: recovery skips pointers whose `_metadata` cannot
    /// be read and takes the one before.
    fn add(&self, id: u64, location: &str, retained: usize) -> Result<()> {
        self.zk.mkdirs(&self.dir)?;
        let mut existing: Vec<u64> = self
            .zk
            .children(&self.dir)?
            .iter()
            .filter_map(|n| pointer_id(n))
            .filter(|n| *n != id)
            .collect();
        existing.sort_unstable();
        let keep = retained.max(1) - 1;
        let drop = existing.len().saturating_sub(keep);
        let client = self.zk.client().clone();
        let pointer = format!("{}/{POINTER_PREFIX}{id:019}", self.dir);
        self.zk.block_on(async {
            let mut w = client.new_multi_writer();
            let mut built = w.add_check_version(&self.latch, LATCH_VERSION);
            built = built.and_then(|_| w.add_create(&pointer, location.as_bytes(), &persistent()));
            for old in &existing[..drop] {
                let path = format!("{}/{POINTER_PREFIX}{old:019}", self.dir);
                built = built.and_then(|_| w.add_delete(&path, None));
            }
            built.map_err(|e| zk_err(&format!("writing {pointer}"), e))?;
            w.commit()
                .await
                .map(|_| ())
                .map_err(|e| self.fenced(&format!("writing {pointer}"), e))
        })?;
        eprintln!(
            "sluice-am: job {}: checkpoint {id} completed at {location}",
            self.job_id
        );
        Ok(())
    }
}

/// The completed checkpoints of `job_id` registered in ZooKeeper, newest first: (id, URL).
///
/// Cancellation: none. Connection loss: fails.
pub fn checkpoints(zk: &Zk, ha: &HaConfig, job_id: &str) -> Result<Vec<(u64, String)>> {
    let dir = pointers_dir(ha, job_id);
    let mut ids: Vec<u64> = zk
        .children(&dir)?
        .iter()
        .filter_map(|n| pointer_id(n))
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(url) = zk.get(&format!("{dir}/{POINTER_PREFIX}{id:019}"))? {
            out.push((id, String::from_utf8_lossy(&url).to_string()));
        }
    }
    Ok(out)
}

/// Forgets a job's counter and pointers (the job ended).
///
/// Cancellation: none. Connection loss: fails; the nodes stay (harmless: the job id is never
/// used again).
pub fn remove_job(zk: &Zk, ha: &HaConfig, job_id: &str) -> Result<()> {
    let dir = pointers_dir(ha, job_id);
    for name in zk.children(&dir)? {
        zk.delete(&format!("{dir}/{name}"))?;
    }
    zk.delete(&dir)?;
    zk.delete(&counter_path(ha, job_id))
}
