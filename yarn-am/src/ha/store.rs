//! The durable job store: every submitted job's bundle, plan, program arguments and
//! configuration lines, as one file under `<high-availability.storageDir>/<cluster-id>/jobs/
//! <job-id>` (any storage `sluice_hdfs_backend` resolves: `file://`, `hdfs://`), pointed to by
//! the persistent ZooKeeper node `<root>/<cluster-id>/jobs/<job-id>`, which holds the file's
//! URL. The file is written first and the node last, so a node always points to a whole file;
//! a file without a node is an unfinished submission and is ignored.
//!
//! File format: `SLJ1`, the header's length (u64, little endian), the header as JSON (plan,
//! args, config lines), then the bundle's bytes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::config::HaConfig;
use sluice_core::{JobPlan, Result, SluiceError};
use sluice_hdfs_backend::Storage;

use super::{Zk, jobs_dir};

const MAGIC: &[u8; 4] = b"SLJ1";

/// A job as the store keeps it.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub job_id: String,
    pub plan: JobPlan,
    pub args: Vec<String>,
    pub config_lines: Vec<String>,
    pub bundle: Arc<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    job_id: String,
    plan: JobPlan,
    args: Vec<String>,
    config_lines: Vec<String>,
}

/// Runs with a job's id before the job leaves the store; an error keeps it stored.
pub type RemoveHook = Box<dyn Fn(&str) -> Result<()> + Send + Sync>;

pub struct JobStore {
    zk: Arc<Zk>,
    before_remove: std::sync::OnceLock<RemoveHook>,
    zk_dir: String,
    storage: Arc<dyn Storage>,
    /// `<storageDir>/<cluster-id>/jobs`, as a path of `storage`.
    dir: String,
}

fn storage_err(what: String, e: impl std::fmt::Display) -> SluiceError {
    SluiceError::Job(format!("the HA job store: {what}: {e}"))
}

impl JobStore {
    pub fn open(zk: Arc<Zk>, ha: &HaConfig) -> Result<JobStore> {
        let url = ha.storage_dir.as_deref().ok_or_else(|| {
            SluiceError::Config(format!(
                "{} is required for ZooKeeper high availability",
                sluice_core::config::keys::HA_STORAGE_DIR
            ))
        })?;
        let (storage, base) = sluice_hdfs_backend::resolve(url)
            .map_err(|e| storage_err(format!("resolving {url}"), e))?;
        let dir = format!(
            "{}/{}/jobs",
            base.trim_end_matches('/'),
            ha.cluster_id.trim_matches('/')
        );
        Ok(JobStore {
            zk,
            before_remove: std::sync::OnceLock::new(),
            zk_dir: jobs_dir(ha),
            storage,
            dir,
        })
    }

    fn file(&self, job_id: &str) -> String {
        format!("{}/{job_id}", self.dir)
    }

    /// Stores the job: the file, then the ZooKeeper pointer.
    ///
    /// Cancellation: none. Connection loss: the pointer write fails (the job must then not
    /// start); the file may be left without a pointer, which recovery ignores.
    pub fn put(&self, job: &StoredJob) -> Result<()> {
        super::off_runtime(|| self.put_here(job))
    }

    fn put_here(&self, job: &StoredJob) -> Result<()> {
        let header = serde_json::to_vec(&Header {
            job_id: job.job_id.clone(),
            plan: job.plan.clone(),
            args: job.args.clone(),
            config_lines: job.config_lines.clone(),
        })
        .map_err(|e| storage_err("encoding the job".into(), e))?;
        let mut bytes = Vec::with_capacity(12 + header.len() + job.bundle.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&job.bundle);
        let file = self.file(&job.job_id);
        self.storage
            .write_atomic(&file, &bytes)
            .map_err(|e| storage_err(format!("writing {file}"), e))?;
        let url = self.storage.url(&file);
        self.zk
            .put(&format!("{}/{}", self.zk_dir, job.job_id), url.as_bytes())
    }

    /// Sets (once) what runs before a job is removed: the YARN ApplicationMaster records the
    /// application's result there, so that an attempt started after the removal finds the
    /// result instead of submitting the job again.
    pub fn before_remove(&self, hook: RemoveHook) {
        let _ = self.before_remove.set(hook);
    }

    /// Forgets the job: the ZooKeeper pointer first, then the file.
    ///
    /// Cancellation: none. Connection loss: fails and leaves the job stored; a later leader
    /// would recover it (and, as it ended, the recovered job ends again).
    pub fn remove(&self, job_id: &str) -> Result<()> {
        if let Some(hook) = self.before_remove.get() {
            hook(job_id)?;
        }
        self.zk.delete(&format!("{}/{job_id}", self.zk_dir))?;
        let file = self.file(job_id);
        self.storage
            .delete(&file, false)
            .map_err(|e| storage_err(format!("deleting {file}"), e))
    }

    /// Every stored job. A pointer whose file is missing or unreadable is reported and
    /// skipped.
    ///
    /// Cancellation: none. Connection loss: fails.
    pub fn list(&self) -> Result<Vec<StoredJob>> {
        let mut out = Vec::new();
        let mut ids = self.zk.children(&self.zk_dir)?;
        ids.sort();
        for id in ids {
            let Some(url) = self.zk.get(&format!("{}/{id}", self.zk_dir))? else {
                continue;
            };
            let url = String::from_utf8_lossy(&url).to_string();
            match self.read(&url) {
                Ok(job) => out.push(job),
                Err(e) => eprintln!("sluice-am: stored job {id} cannot be recovered: {e}"),
            }
        }
        Ok(out)
    }

    fn read(&self, url: &str) -> Result<StoredJob> {
        let (storage, path) = sluice_hdfs_backend::resolve(url)
            .map_err(|e| storage_err(format!("resolving {url}"), e))?;
        let bytes = storage
            .read(&path)
            .map_err(|e| storage_err(format!("reading {url}"), e))?;
        let bad = |why: &str| storage_err(format!("reading {url}"), why);
        if bytes.len() < 12 || &bytes[..4] != MAGIC {
            return Err(bad("not a stored job"));
        }
        let len = u64::from_le_bytes(bytes[4..12].try_into().expect("8 bytes")) as usize;
        let end = 12usize
            .checked_add(len)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| bad("truncated"))?;
        let header: Header = serde_json::from_slice(&bytes[12..end])
            .map_err(|e| storage_err(format!("decoding {url}"), e))?;
        Ok(StoredJob {
            job_id: header.job_id,
            plan: header.plan,
            args: header.args,
            config_lines: header.config_lines,
            bundle: Arc::new(bytes[end..].to_vec()),
        })
    }
}
