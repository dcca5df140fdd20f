//! The background writer of one RocksDB instance. At a checkpoint the task only collects the
//! dirty values of its write-back cache (encoded, sorted); writing them to RocksDB and taking
//! the RocksDB checkpoint after them run here, in that order, while the task goes on with
//! records. The task waits for this work only before it reads or writes the database itself
//! (a cache miss, map or list state, a scan), so a job whose state fits the cache never waits.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, unbounded};
use parking_lot::{Condvar, Mutex};
use rocksdb::DB;

use crate::snapshot::Ready;

/// Encoded keys and values back to back, and where each entry's are (value `None`: a delete).
#[derive(Default)]
pub(super) struct Entries {
    pub(super) bytes: Vec<u8>,
    entries: Vec<Entry>,
    /// Where [`Entries::sort`] lays the bytes out again in key order; swapped with `bytes`.
    gathered: Vec<u8>,
}

struct Entry {
    /// The key's first bytes (zero-padded), compared before the key itself: most comparisons
    /// of a sort end here, without a cache miss into `bytes` for each side.
    prefix: [u64; 3],
    key: Range<usize>,
    value: Option<Range<usize>>,
}

impl Entries {
    /// Adds an entry whose key and value are already in `bytes`.
    pub(super) fn push(&mut self, key: Range<usize>, value: Option<Range<usize>>) {
        let mut padded = [0u8; 24];
        let k = &self.bytes[key.clone()];
        let n = k.len().min(padded.len());
        padded[..n].copy_from_slice(&k[..n]);
        let word =
            |i: usize| u64::from_be_bytes(padded[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        self.entries.push(Entry {
            prefix: [word(0), word(1), word(2)],
            key,
            value,
        });
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Puts the entries in ascending key order, which RocksDB's memtable inserts far more
    /// cheaply than the cache's hash order, and SST files require. Big-endian prefixes order
    /// like the bytes they hold; equal prefixes (also a short key against a longer one that
    /// continues with zeros) fall back to the whole keys.
    ///
    /// The bytes are then copied into key order as well. Read in key order from where they
    /// were written, every entry was a cache miss in a buffer of megabytes, taken one at a time
    /// inside the SST writer (a tenth of a second per million entries); a plain copy loop
    /// overlaps those misses.
    pub(super) fn sort(&mut self) {
        let bytes = &self.bytes;
        self.entries.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| bytes[a.key.clone()].cmp(&bytes[b.key.clone()]))
        });
        let out = &mut self.gathered;
        out.clear();
        out.reserve(bytes.len());
        for e in &mut self.entries {
            let start = out.len();
            out.extend_from_slice(&bytes[e.key.clone()]);
            e.key = start..out.len();
            if let Some(v) = &mut e.value {
                let start = out.len();
                out.extend_from_slice(&bytes[v.clone()]);
                *v = start..out.len();
            }
        }
        std::mem::swap(&mut self.bytes, &mut self.gathered);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.entries.iter().map(|e| {
            (
                &self.bytes[e.key.clone()],
                e.value.clone().map(|v| &self.bytes[v]),
            )
        })
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }
}

enum Job {
    /// Sort these entries, write them as an SST file at `path` and ingest it.
    Ingest { path: PathBuf, data: Entries },
    /// Flush the memtable and take a RocksDB checkpoint (hard links) in `target`.
    Checkpoint { target: PathBuf, ready: Arc<Ready> },
}

#[derive(Default)]
struct Progress {
    /// Jobs submitted and not finished.
    pending: usize,
    /// The first failure; every later job fails with it, and so does every wait.
    failed: Option<String>,
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
    /// Buffers of finished write-backs, for the next: a fresh one of several megabytes costs
    /// the task a page fault per page it fills.
    spare: Mutex<Option<Entries>>,
    /// Nothing pending and nothing failed: what `settle` finds on nearly every state access,
    /// told without taking the lock.
    idle: AtomicBool,
    /// Set by [`Writer::abandon`]: the write-back at hand stops too.
    abandoned: AtomicBool,
}

impl Shared {
    /// Updates `idle` from `progress`; called with its lock held.
    fn note_idle(&self, progress: &Progress) {
        let idle = progress.pending == 0 && progress.failed.is_none();
        self.idle.store(idle, Ordering::Release);
    }
}

pub(super) struct Writer {
    /// Dropped first on shutdown: the thread finishes what is queued, then ends.
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Writer {
    /// A writer for `db`, on a thread named after the database directory's operator.
    pub(super) fn start(db: Arc<DB>, name: String) -> std::io::Result<Writer> {
        // Unbounded, but never long: each checkpoint adds at most one job per state and the
        // checkpoint itself, and a task that touches the database waits for all of them.
        let (tx, rx) = unbounded::<Job>();
        let shared = Arc::new(Shared {
            idle: AtomicBool::new(true),
            ..Shared::default()
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            for mut job in rx {
                let failed = s.progress.lock().failed.clone();
                let result = match failed {
                    Some(f) => Err(f),
                    None => run(&db, &mut job, &s.abandoned),
                };
                match job {
                    Job::Checkpoint { ready, .. } => ready.set(result.clone()),
                    Job::Ingest { mut data, .. } => {
                        data.clear();
                        *s.spare.lock() = Some(data);
                    }
                }
                let mut p = s.progress.lock();
                p.pending -= 1;
                if let Err(e) = result {
                    p.failed.get_or_insert(e);
                }
                s.note_idle(&p);
                drop(p);
                s.changed.notify_all();
            }
        })?;
        Ok(Writer {
            jobs: Some(tx),
            thread: Some(thread),
            shared,
        })
    }

    /// Empty buffers for a write-back, those of an earlier one if it is done.
    pub(super) fn buffers(&self) -> Entries {
        self.shared.spare.lock().take().unwrap_or_default()
    }

    /// Queues writing `data` into the database through an SST file at `path`.
    pub(super) fn ingest(&self, path: PathBuf, data: Entries) -> Result<(), String> {
        self.submit(Job::Ingest { path, data })
    }

    /// Queues a RocksDB checkpoint into `target` after everything queued before; `ready`
    /// tells its outcome.
    pub(super) fn checkpoint(&self, target: PathBuf, ready: Arc<Ready>) -> Result<(), String> {
        self.submit(Job::Checkpoint { target, ready })
    }

    fn submit(&self, job: Job) -> Result<(), String> {
        let mut p = self.shared.progress.lock();
        if let Some(f) = &p.failed {
            return Err(f.clone());
        }
        p.pending += 1;
        self.shared.idle.store(false, Ordering::Release);
        drop(p);
        let sent = self.jobs.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            let mut p = self.shared.progress.lock();
            p.pending -= 1;
            self.shared.note_idle(&p);
            return Err("the RocksDB writer thread is gone".into());
        }
        Ok(())
    }

    /// Waits until everything queued is in the database; fails if any of it failed.
    pub(super) fn settle(&self) -> Result<(), String> {
        if self.shared.idle.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut p = self.shared.progress.lock();
        while p.pending > 0 {
            self.shared.changed.wait(&mut p);
        }
        match &p.failed {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    /// Ends the thread without writing what is queued, and stops a write-back under way: for
    /// a database about to be deleted, whose contents nobody reads again (a task's working
    /// copy, as its attempt ends). A checkpoint still queued fails, so whoever waits for it
    /// learns that it was not taken. A failed attempt's restart waited for this work: with a
    /// million cached entries, most of a second.
    pub(super) fn abandon(&mut self) {
        self.shared.abandoned.store(true, Ordering::Relaxed);
        {
            let mut p = self.shared.progress.lock();
            p.failed
                .get_or_insert_with(|| "the RocksDB instance was closed".to_string());
            self.shared.note_idle(&p);
        }
        self.shut_down();
    }

    /// Finishes what is queued and ends the thread.
    pub(super) fn shut_down(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ignored = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Entries a write-back writes between its looks at whether it was abandoned.
const ABANDON_CHECK: usize = 1 << 16;

fn run(db: &DB, job: &mut Job, abandoned: &AtomicBool) -> Result<(), String> {
    match job {
        Job::Ingest { path, data } => ingest(db, path, data, abandoned),
        Job::Checkpoint { target, .. } => {
            let target: &Path = target;
            db.flush()
                .map_err(|e| format!("flushing before the checkpoint: {e}"))?;
            rocksdb::checkpoint::Checkpoint::new(db)
                .and_then(|c| c.create_checkpoint(target))
                .map_err(|e| format!("checkpoint into {}: {e}", target.display()))
        }
    }
}

/// Writes sorted entries into one SST file and ingests it, instead of inserting them into the
/// memtable and flushing it: a write-back of every cached value (all of them, when every key
/// changes between checkpoints) cost a memtable insert per entry and then a flush that read
/// them all out again into a file. The file is uncompressed: the next compaction rewrites it,
/// compressed, anyway.
fn ingest(db: &DB, path: &Path, data: &mut Entries, abandoned: &AtomicBool) -> Result<(), String> {
    let stopped = || format!("writing back through {}: abandoned", path.display());
    if abandoned.load(Ordering::Relaxed) {
        return Err(stopped());
    }
    data.sort();
    let mut opts = super::rocks::db_options(8 << 20);
    opts.set_compression_type(rocksdb::DBCompressionType::None);
    let err = |e: rocksdb::Error| format!("writing back through {}: {e}", path.display());
    let result = (|| {
        let mut writer = rocksdb::SstFileWriter::create(&opts);
        writer.open(path).map_err(err)?;
        for (i, (key, value)) in data.iter().enumerate() {
            if i % ABANDON_CHECK == 0 && abandoned.load(Ordering::Relaxed) {
                return Err(stopped());
            }
            match value {
                Some(v) => writer.put(key, v),
                None => writer.delete(key),
            }
            .map_err(err)?;
        }
        writer.finish().map_err(err)?;
        let mut ingest = rocksdb::IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        db.ingest_external_file_opts(&ingest, vec![path.to_path_buf()])
            .map_err(err)
    })();
    // Moved into the database when ingested; left behind otherwise.
    let _ignored = std::fs::remove_file(path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of `n` distinct keys starting with `prefix`, with 100-byte values.
    fn entries(prefix: &str, n: usize) -> Entries {
        let mut data = Entries::default();
        for i in 0..n {
            let start = data.bytes.len();
            data.bytes
                .extend_from_slice(format!("{prefix}-{i:09}").as_bytes());
            let key = start..data.bytes.len();
            data.bytes.extend_from_slice(&[b'v'; 100]);
            data.push(key.clone(), Some(key.end..data.bytes.len()));
        }
        data
    }

    /// Shut down, a writer writes everything queued before it; abandoned, it writes nothing
    /// queued, and a checkpoint still queued fails instead of being taken.
    #[test]
    fn an_abandoned_writer_drops_its_queue_and_fails_queued_checkpoints() {
        for abandon in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let db = Arc::new(
                DB::open(
                    &super::super::rocks::db_options(8 << 20),
                    tmp.path().join("db"),
                )
                .unwrap(),
            );
            let mut writer = Writer::start(db.clone(), "rocksdb-wb-test".into()).unwrap();
            // Built first and queued at once: the writer cannot be through the first three
            // write-backs by the time it is abandoned.
            let write_backs: Vec<Entries> = (0..4)
                .map(|j| entries(&format!("wb{j}"), 200_000))
                .collect();
            for (j, data) in write_backs.into_iter().enumerate() {
                writer
                    .ingest(tmp.path().join(format!("wb-{j}.sst")), data)
                    .unwrap();
            }
            let ready = Arc::new(Ready::default());
            writer
                .checkpoint(tmp.path().join("chk"), ready.clone())
                .unwrap();
            if abandon {
                writer.abandon();
            } else {
                writer.shut_down();
            }
            let taken = ready.wait();
            let has = |k: &str| db.get(k.as_bytes()).unwrap().is_some();
            if abandon {
                let e = taken.unwrap_err();
                assert!(e.contains("closed") || e.contains("abandoned"), "{e}");
                assert!(!tmp.path().join("chk").exists());
                assert!(
                    !has("wb3-000000000"),
                    "a queued write-back ran after abandon"
                );
            } else {
                taken.unwrap();
                assert!(tmp.path().join("chk").exists());
                assert!(has("wb0-000000000") && has("wb3-000199999"));
            }
        }
    }

    /// The prefix sort orders keys exactly as comparing their bytes does, also for keys shorter
    /// than the prefix, keys that continue with zero bytes, and keys equal in their first 24
    /// bytes.
    #[test]
    fn entries_sort_as_their_key_bytes() {
        let mut keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![1],
            b"ab".to_vec(),
            b"ab\0".to_vec(),
            b"ab\0\x01".to_vec(),
            [b"k".repeat(24), b"b".to_vec()].concat(),
            [b"k".repeat(24), b"a".to_vec()].concat(),
            b"k".repeat(24),
            [b"k".repeat(23), vec![0]].concat(),
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 30) as usize;
            // Few distinct bytes, so long shared prefixes are common.
            keys.push((0..len).map(|i| ((x >> (i % 60)) & 3) as u8).collect());
        }
        keys.sort();
        keys.dedup();
        let mut data = Entries::default();
        for k in keys.iter().rev() {
            let start = data.bytes.len();
            data.bytes.extend_from_slice(k);
            data.push(start..data.bytes.len(), None);
        }
        data.sort();
        let sorted: Vec<Vec<u8>> = data.iter().map(|(k, _)| k.to_vec()).collect();
        assert_eq!(sorted, keys);
    }
}
