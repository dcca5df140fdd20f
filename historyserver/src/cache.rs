//! The local cache of archived jobs: archives fetched from the archive directories are split
//! into one file per REST path under `<cache>/jobs/` (as Flink's HistoryServer does), so
//! serving a document is reading one small file, and memory holds only each job's
//! `/jobs/overview` entry (a few hundred bytes) and the names of the archives already seen.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::error::{HistoryError, Result};

/// What the index keeps of one archived job.
struct JobRecord {
    /// Its entry of `/jobs/overview`, as compact JSON.
    overview: Box<str>,
    /// For retention and ordering: `end-time`, else `last-modification`.
    end_time: i64,
    state: Box<str>,
    /// The archive directory it was read from, as configured (retention counts per directory).
    dir: Box<str>,
    /// The archive's path in that directory's storage, deleted when retention drops the job.
    path: Box<str>,
}

pub struct Cache {
    root: PathBuf,
    retained: Option<usize>,
    jobs: RwLock<BTreeMap<String, JobRecord>>,
    /// `<archive dir>\n<file name>` of every archive handled (cached, expired or unreadable as
    /// an archive), so a poll reads only new files.
    seen: Mutex<HashSet<String>>,
    /// Completed polls, for whoever waits for the cache to settle.
    refreshes: AtomicU64,
}

/// Whether `s` may be one segment of a served or cached path: letters, digits, `-` and `_`
/// only. No dots (so no `..`), no `%` (so no encoded dots or slashes), no separators: a path
/// built from such segments under the cache root stays inside it.
pub fn safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether the part of a path after `/jobs/<id>` is empty or `/` followed by safe segments.
fn safe_rest(rest: &str) -> bool {
    rest.is_empty()
        || rest
            .strip_prefix('/')
            .is_some_and(|sub| sub.split('/').all(safe_segment))
}

impl Cache {
    /// A cache in `root` (created if missing; leftovers of an earlier run are removed, as the
    /// index starts empty).
    pub fn new(root: PathBuf, retained: Option<usize>) -> Result<Cache> {
        let jobs_dir = root.join("jobs");
        if jobs_dir.exists() {
            std::fs::remove_dir_all(&jobs_dir)
                .map_err(|e| HistoryError::io(jobs_dir.display(), e))?;
        }
        std::fs::create_dir_all(&jobs_dir).map_err(|e| HistoryError::io(jobs_dir.display(), e))?;
        Ok(Cache {
            root,
            retained,
            jobs: RwLock::new(BTreeMap::new()),
            seen: Mutex::new(HashSet::new()),
            refreshes: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn len(&self) -> usize {
        self.jobs.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, job_id: &str) -> bool {
        self.jobs.read().contains_key(job_id)
    }

    /// Polls every directory once; returns how many jobs were added. A directory that cannot
    /// be listed, or an archive that cannot be read, is reported and tried again next time;
    /// a file that is not an archive is reported once and then ignored.
    pub fn refresh(&self, dirs: &[String]) -> usize {
        let mut added = 0;
        for dir in dirs {
            match self.refresh_dir(dir) {
                Ok(n) => added += n,
                Err(e) => eprintln!("historyserver: cannot poll {dir}: {e}"),
            }
        }
        self.enforce_retention();
        self.refreshes.fetch_add(1, Ordering::Release);
        added
    }

    /// How many polls of all directories have completed.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Acquire)
    }

    fn refresh_dir(&self, dir: &str) -> Result<usize> {
        let (storage, base) = sluice_hdfs_backend::resolve(dir)?;
        let entries = match storage.list(&base) {
            Ok(e) => e,
            // Masters create the directory with their first archive.
            Err(sluice_hdfs_backend::StorageError::NotFound { .. }) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut added = 0;
        for entry in entries {
            // Temporary files of an archive being written start with '.'.
            if entry.is_dir || !safe_segment(&entry.name) {
                continue;
            }
            let key = format!("{dir}\n{}", entry.name);
            if self.seen.lock().contains(&key) {
                continue;
            }
            let path = format!("{}/{}", base.trim_end_matches('/'), entry.name);
            let url = storage.url(&path);
            let bytes = match storage.read(&path) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("historyserver: cannot read archive {url}: {e}");
                    continue;
                }
            };
            match self.add(&entry.name, &url, &bytes) {
                Ok(true) => {
                    added += 1;
                    if let Some(r) = self.jobs.write().get_mut(&entry.name) {
                        r.dir = Box::from(dir);
                        r.path = Box::from(path.as_str());
                    }
                }
                Ok(false) => {}
                Err(e) => eprintln!("historyserver: {e}"),
            }
            self.seen.lock().insert(key);
        }
        Ok(added)
    }

    /// Caches the archive of job `job_id` (read from `url`); `false` if the job is cached
    /// already (archived in two directories).
    pub fn add(&self, job_id: &str, url: &str, bytes: &[u8]) -> Result<bool> {
        if !safe_segment(job_id) {
            return Err(HistoryError::bad(url, "the file name is not a job id"));
        }
        if self.contains(job_id) {
            return Ok(false);
        }
        let archive: Value = serde_json::from_slice(bytes)
            .map_err(|e| HistoryError::bad(url, format!("not JSON: {e}")))?;
        let entries = archive["archive"]
            .as_array()
            .ok_or_else(|| HistoryError::bad(url, "no \"archive\" array"))?;
        let mut overview = None;
        let prefix = format!("/jobs/{job_id}");
        let mut files = Vec::new();
        for e in entries {
            let (Some(path), Some(json)) = (e["path"].as_str(), e["json"].as_str()) else {
                return Err(HistoryError::bad(url, "an entry without path or json"));
            };
            if path == "/jobs/overview" {
                let doc: Value = serde_json::from_str(json)
                    .map_err(|e| HistoryError::bad(url, format!("/jobs/overview: {e}")))?;
                overview = doc["jobs"]
                    .as_array()
                    .and_then(|jobs| jobs.iter().find(|j| j["jid"] == job_id).cloned());
                continue;
            }
            // Only this job's own paths, made of safe segments: an archive cannot place a
            // file anywhere else in the cache.
            let Some(rest) = path.strip_prefix(&prefix) else {
                continue;
            };
            if !safe_rest(rest) {
                continue;
            }
            files.push((self.file_for(job_id, rest), json));
        }
        let overview = overview.ok_or_else(|| {
            HistoryError::bad(url, format!("no /jobs/overview entry for job {job_id}"))
        })?;
        for (file, json) in files {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| HistoryError::io(parent.display(), e))?;
            }
            std::fs::write(&file, json).map_err(|e| HistoryError::io(file.display(), e))?;
        }
        let end_time = [
            &overview["end-time"],
            &overview["last-modification"],
            &overview["start-time"],
        ]
        .iter()
        .filter_map(|v| v.as_i64())
        .find(|t| *t > 0)
        .unwrap_or(0);
        let record = JobRecord {
            state: overview["state"].as_str().unwrap_or("").into(),
            overview: overview.to_string().into_boxed_str(),
            end_time,
            dir: "".into(),
            path: "".into(),
        };
        // Files first, index second: a request sees a job only once all its files exist.
        self.jobs.write().insert(job_id.to_string(), record);
        Ok(true)
    }

    /// The cache file of path `rest` (`""` or `/a/b`) of job `job_id`; both already checked
    /// to be made of safe segments.
    fn file_for(&self, job_id: &str, rest: &str) -> PathBuf {
        let jobs = self.root.join("jobs");
        match rest.strip_prefix('/') {
            None => jobs.join(format!("{job_id}.json")),
            Some(sub) => jobs.join(job_id).join(format!("{sub}.json")),
        }
    }

    /// The cached document at `/jobs/<job_id><rest>`, if any; `None` for unknown jobs,
    /// paths that are not made of safe segments, and paths the archive did not hold.
    pub fn document(&self, job_id: &str, rest: &str) -> Option<PathBuf> {
        if !safe_segment(job_id) || !self.contains(job_id) {
            return None;
        }
        if !safe_rest(rest) {
            return None;
        }
        let file = self.file_for(job_id, rest);
        file.is_file().then_some(file)
    }

    /// `/jobs/overview`: every cached job, newest first.
    pub fn overview_json(&self) -> String {
        let jobs = self.jobs.read();
        let mut list: Vec<&JobRecord> = jobs.values().collect();
        list.sort_by_key(|r| std::cmp::Reverse(r.end_time));
        let mut out =
            String::with_capacity(16 + list.iter().map(|r| r.overview.len() + 1).sum::<usize>());
        out.push_str("{\"jobs\":[");
        for (i, r) in list.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&r.overview);
        }
        out.push_str("]}");
        out
    }

    /// (job id, state) of every cached job.
    pub fn states(&self) -> Vec<(String, String)> {
        self.jobs
            .read()
            .iter()
            .map(|(id, r)| (id.clone(), r.state.to_string()))
            .collect()
    }

    /// Keeps the newest `historyserver.archive.retained-jobs` jobs (by end time) of each
    /// archive directory, as Flink does: older ones leave the index and the cache, and their
    /// archive files are deleted from the directory. An archive that cannot be deleted is
    /// reported; it stays seen, so it does not come back either way.
    fn enforce_retention(&self) {
        let Some(keep) = self.retained else {
            return;
        };
        let expired: Vec<(String, JobRecord)> = {
            let mut jobs = self.jobs.write();
            let mut by_dir: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
            for (id, r) in jobs.iter() {
                by_dir
                    .entry(&r.dir)
                    .or_default()
                    .push((r.end_time, id.as_str()));
            }
            let mut ids: Vec<String> = Vec::new();
            for (_, mut by_age) in by_dir {
                if by_age.len() > keep {
                    by_age.sort();
                    let n = by_age.len() - keep;
                    ids.extend(by_age.into_iter().take(n).map(|(_, id)| id.to_string()));
                }
            }
            ids.into_iter()
                .filter_map(|id| jobs.remove(&id).map(|r| (id, r)))
                .collect()
        };
        for (id, record) in expired {
            let jobs = self.root.join("jobs");
            let _ = std::fs::remove_file(jobs.join(format!("{id}.json")));
            let _ = std::fs::remove_dir_all(jobs.join(&id));
            if record.path.is_empty() {
                continue; // added directly, not read from a directory
            }
            let deleted = sluice_hdfs_backend::resolve(&record.dir)
                .and_then(|(storage, _)| storage.delete(&record.path, false));
            if let Err(e) = deleted {
                eprintln!(
                    "historyserver: cannot delete the expired archive {} of job {id} in {}: {e}",
                    record.path, record.dir
                );
            }
        }
    }
}
