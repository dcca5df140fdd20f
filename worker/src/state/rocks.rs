//! The `rocksdb` backend: one RocksDB instance per operator subtask. Keys are prefixed with the
//! key group (big-endian, so a key-group range is one contiguous scan) and the state's id:
//! `[key group u16][state u16][bincode key]([bincode user key])`. The write-ahead log is off:
//! checkpoints, not RocksDB, make state durable. Value state has a bounded write-back cache so
//! a hot key costs a hash lookup, and cached changes reach RocksDB in one write batch.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use rocksdb::{DB, Options, WriteBatch, WriteOptions};
use rustc_hash::FxHashSet;
use sluice_core::{KeyGroupRange, Result, SluiceError};

use super::copy_buffers::{CopyBuffers, TableBuffers};
use super::heap_table::Table;
use super::rocks_writer::{Entries, Writer};
use super::{StateTable, decode, encode, heap, key_group, read_ahead};
use crate::context::OperatorContext;
use crate::data::Data;
use crate::key::{Key, KeySelector};
use crate::snapshot::{Frozen, LocalDir, NativeState, Ready, write_entry};

pub struct RocksInstance {
    db: Option<Arc<DB>>,
    /// Writes checkpoints' write-backs and takes RocksDB checkpoints off the task's thread.
    writer: Writer,
    dir: PathBuf,
    uid: String,
    write: WriteOptions,
    cache_entries: usize,
    /// Unique id of this database instance, naming its files in the job's shared directory.
    instance: String,
    /// Shared files this database's SST files were restored from (see [`NativeState`]).
    inherited: Option<(String, Vec<sluice_hdfs_backend::NativeFile>)>,
    /// Whether anything was ever written to the database. Until then every entry of value
    /// state lives in the write-back caches (and map and list state, which write through,
    /// hold nothing), so a checkpoint can copy the caches instead of writing them back.
    written: Cell<bool>,
}

impl RocksInstance {
    /// A new, empty database.
    pub fn open(ctx: &OperatorContext) -> Result<Self> {
        Self::open_with(ctx, None)
    }

    /// Opens a copy of a restored native checkpoint: its SST files are hard-linked (they are
    /// immutable), the other files copied, so the restored directory stays intact for another
    /// attempt.
    pub(crate) fn open_native(ctx: &OperatorContext, native: &NativeState) -> Result<Self> {
        Self::open_with(ctx, Some(native))
    }

    fn open_with(ctx: &OperatorContext, native: Option<&NativeState>) -> Result<Self> {
        let base = ctx
            .config
            .rocksdb_local_dir
            .clone()
            .unwrap_or_else(|| ctx.local_dir.clone());
        let dir = base.join(format!(
            "rocksdb-{}-{}-{}-{}",
            sanitize(&ctx.uid),
            ctx.subtask,
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| SluiceError::io(dir.display(), e))?;
        if let Some(n) = native {
            link_or_copy_dir(&n.dir.0, &dir)?;
        }
        let opts = db_options(ctx.config.rocksdb_write_buffer_bytes as usize);
        let db = Arc::new(DB::open(&opts, &dir).map_err(|e| rocks_err(&ctx.uid, &dir, e))?);
        let writer = Writer::start(db.clone(), format!("rocksdb-wb-{}", ctx.subtask))
            .map_err(|e| SluiceError::io(format!("a writer thread for {}", dir.display()), e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(RocksInstance {
            db: Some(db),
            writer,
            dir,
            uid: ctx.uid.clone(),
            write,
            cache_entries: ctx.config.rocksdb_cache_entries.max(1),
            instance: instance_id(),
            inherited: native.and_then(|n| n.inherited.clone()),
            written: Cell::new(native.is_some()),
        })
    }

    /// Whether the database never received a write: all keyed state is then in the value
    /// states' caches (see [`StateTable::freeze_cache`]).
    pub(super) fn never_written(&self) -> bool {
        !self.written.get()
    }

    pub(super) fn wait_for_compactions(&self) -> Result<()> {
        let mut opts = rocksdb::WaitForCompactOptions::default();
        opts.set_flush(true);
        self.db()?.wait_for_compact(&opts).map_err(|e| self.err(e))
    }

    /// Flushes the memtable and takes a RocksDB checkpoint (hard links to the SST files, a copy
    /// of the small rest) next to the database: cheap, and the files stay valid while the
    /// database goes on changing. Both happen on the writer thread, after the write-backs
    /// queued before; the returned state is ready once they did. The directory is deleted once
    /// the returned state is dropped.
    pub(crate) fn native_checkpoint(
        &self,
        checkpoint_id: u64,
        range: KeyGroupRange,
        tables: Vec<String>,
        incremental: bool,
        savepoint: bool,
    ) -> Result<NativeState> {
        let mut target = self.dir.clone().into_os_string();
        target.push(format!(".chk-{checkpoint_id}-{}", unique()));
        let target = PathBuf::from(target);
        let ready = Arc::new(Ready::default());
        self.writer
            .checkpoint(target.clone(), ready.clone())
            .map_err(|e| self.state_err(e))?;
        Ok(NativeState {
            dir: Arc::new(LocalDir(target)),
            instance: self.instance.clone(),
            range,
            tables,
            inherited: self.inherited.clone(),
            incremental: incremental && !savepoint,
            savepoint,
            canonical: false,
            ready: Some(ready),
        })
    }

    /// The database, once the writer thread has written everything queued: what the task
    /// reads or writes itself must come after it.
    fn db(&self) -> Result<&DB> {
        self.writer.settle().map_err(|e| self.state_err(e))?;
        Ok(self.raw_db())
    }

    fn raw_db(&self) -> &DB {
        self.db.as_ref().expect("RocksDB is open until drop")
    }

    fn state_err(&self, message: String) -> SluiceError {
        SluiceError::State {
            uid: self.uid.clone(),
            state: "rocksdb".into(),
            message: format!("{}: {message}", self.dir.display()),
        }
    }

    /// Queues `data` for the writer thread to write as an SST file of its own.
    fn write_back_async(&self, data: Entries) -> Result<()> {
        self.written.set(true);
        let mut path = self.dir.clone().into_os_string();
        path.push(format!(".write-back-{}.sst", unique()));
        self.writer
            .ingest(PathBuf::from(path), data)
            .map_err(|e| self.state_err(e))
    }

    fn err(&self, e: rocksdb::Error) -> SluiceError {
        rocks_err(&self.uid, &self.dir, e)
    }

    fn multi_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.db()?
            .multi_get(keys)
            .into_iter()
            .map(|r| r.map_err(|e| self.err(e)))
            .collect()
    }

    fn get(&self, key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        self.db()?.get_pinned(key).map_err(|e| self.err(e))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.written.set(true);
        self.db()?
            .put_opt(key, value, &self.write)
            .map_err(|e| self.err(e))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.written.set(true);
        self.db()?
            .delete_opt(key, &self.write)
            .map_err(|e| self.err(e))
    }

    fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        self.written.set(true);
        self.db()?
            .write_opt(batch, &self.write)
            .map_err(|e| self.err(e))
    }

    /// Loads entries, given in ascending key order, straight into SST files that RocksDB then
    /// ingests: no memtable inserts, flushes or compactions (which made restoring a canonical
    /// savepoint into RocksDB about ten times a file copy). An entry whose key is not above the
    /// previous one (a snapshot taken on the heap backend is unordered) is written normally.
    pub(super) fn bulk_load(
        &self,
        fill: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()>,
    ) -> Result<()> {
        self.written.set(true);
        let opts = db_options(8 << 20);
        let mut files = BulkFiles(Vec::new());
        let mut writer: Option<rocksdb::SstFileWriter<'_>> = None;
        let mut last: Vec<u8> = Vec::new();
        let mut batch = WriteBatch::default();
        let sst_err = |path: &Path, e: rocksdb::Error| SluiceError::State {
            uid: self.uid.clone(),
            state: "rocksdb".into(),
            message: format!("bulk-loading {}: {e}", path.display()),
        };
        let mut put = |key: &[u8], value: &[u8]| -> Result<()> {
            // Keys are never empty (they start with the key group): `last` is empty until
            // the first entry went into a file.
            if !last.is_empty() && key <= last.as_slice() {
                batch.put(key, value);
                if batch.len() >= 4096 {
                    self.write_batch(std::mem::take(&mut batch))?;
                }
                return Ok(());
            }
            let full = writer
                .as_ref()
                .is_some_and(|w| w.file_size() >= BULK_FILE_BYTES);
            if writer.is_none() || full {
                if let Some(mut w) = writer.take() {
                    let path = files.0.last().expect("an open file has a path");
                    w.finish().map_err(|e| sst_err(path, e))?;
                }
                let mut path = self.dir.clone().into_os_string();
                path.push(format!(".bulk-{}.sst", unique()));
                let path = PathBuf::from(path);
                let w = rocksdb::SstFileWriter::create(&opts);
                files.0.push(path.clone());
                w.open(&path).map_err(|e| sst_err(&path, e))?;
                writer = Some(w);
            }
            let w = writer.as_mut().expect("opened above");
            w.put(key, value)
                .map_err(|e| sst_err(files.0.last().expect("open"), e))?;
            last.clear();
            last.extend_from_slice(key);
            Ok(())
        };
        fill(&mut put)?;
        if let Some(mut w) = writer.take() {
            let path = files.0.last().expect("an open file has a path");
            w.finish().map_err(|e| sst_err(path, e))?;
        }
        if !batch.is_empty() {
            self.write_batch(batch)?;
        }
        if files.0.is_empty() {
            return Ok(());
        }
        let mut ingest = rocksdb::IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        self.db()?
            .ingest_external_file_opts(&ingest, files.0.clone())
            .map_err(|e| self.err(e))
    }

    /// Copies every entry of the key groups in `range` into snapshot blobs.
    pub(super) fn scan_into(
        &self,
        range: KeyGroupRange,
        groups: &mut BTreeMap<u16, Vec<u8>>,
    ) -> Result<()> {
        scan_db(self.db()?, range, groups).map_err(|e| self.err(e))
    }

    /// Prefix-scans `prefix`, returning (key suffix after the prefix, value) pairs.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut it = self.db()?.raw_iterator();
        it.seek(prefix);
        let mut out = Vec::new();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k[prefix.len()..].to_vec(), v.to_vec()));
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Bytes of the database's SST files (not its memtables): what a native checkpoint
    /// taken now stores.
    pub fn stored_size(&self) -> u64 {
        self.int_property("rocksdb.live-sst-files-size")
    }

    fn int_property(&self, name: &str) -> u64 {
        self.raw_db()
            .property_int_value(name)
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

impl Drop for RocksInstance {
    fn drop(&mut self) {
        self.writer.abandon();
        self.db.take();
        // Local state is a working copy; the checkpoint holds the durable one.
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

/// The entries of the key groups in `range` of `db`, appended to per-key-group blobs.
fn scan_db(
    db: &DB,
    range: KeyGroupRange,
    groups: &mut BTreeMap<u16, Vec<u8>>,
) -> std::result::Result<(), rocksdb::Error> {
    let mut it = db.raw_iterator();
    for kg in range.iter() {
        let prefix = kg.to_be_bytes();
        it.seek(prefix);
        let mut blob = groups.remove(&kg).unwrap_or_default();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            if k.len() < 4 || k[..2] != prefix {
                break;
            }
            let table = u16::from_be_bytes([k[2], k[3]]);
            write_entry(&mut blob, table, &k[4..], v);
            it.next();
        }
        it.status()?;
        if !blob.is_empty() {
            groups.insert(kg, blob);
        }
    }
    Ok(())
}

/// Reads the key groups of `range` out of a native checkpoint (opened read-only, in place) in
/// the canonical format, with state ids indexing `native.tables`: how a restore at another
/// parallelism, or into the heap backend, takes state from an incremental checkpoint.
pub(crate) fn scan_native(
    native: &NativeState,
    range: KeyGroupRange,
    uid: &str,
) -> Result<BTreeMap<u16, Vec<u8>>> {
    let dir = &native.dir.0;
    let db = DB::open_for_read_only(&db_options(8 << 20), dir, false)
        .map_err(|e| rocks_err(uid, dir, e))?;
    let mut groups = BTreeMap::new();
    let overlap = KeyGroupRange {
        start: range.start.max(native.range.start),
        end: range.end.min(native.range.end),
    };
    if overlap.start < overlap.end {
        scan_db(&db, overlap, &mut groups).map_err(|e| rocks_err(uid, dir, e))?;
    }
    Ok(groups)
}

pub(super) fn db_options(write_buffer_bytes: usize) -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_write_buffer_size(write_buffer_bytes);
    opts.set_max_write_buffer_number(4);
    opts.increase_parallelism(2);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // State is read by full key: bloom filters (in SST files and the memtable) let a lookup
    // skip every file that cannot hold the key.
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_block_cache(&rocksdb::Cache::new_lru_cache(64 << 20));
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    opts.set_block_based_table_factory(&table);
    opts.set_memtable_prefix_bloom_ratio(0.1);
    opts.set_memtable_whole_key_filtering(true);
    opts.set_level_compaction_dynamic_level_bytes(true);
    opts
}

/// Dirty entries from which a write-back goes to RocksDB as an SST file of its own rather
/// than through the memtable: fewer would make a small file (a compaction input) per
/// checkpoint.
const SST_WRITE_BACK_MIN: usize = 4096;

/// Bulk-loaded SST files are cut at this size, so later compactions work on pieces.
const BULK_FILE_BYTES: u64 = 256 << 20;

/// SST files written for a bulk load; deleted when dropped (after ingestion moved them, that
/// finds nothing).
struct BulkFiles(Vec<PathBuf>);

impl Drop for BulkFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ignored = std::fs::remove_file(f);
        }
    }
}

/// Hard-links SST files (immutable) from `from` into `to` and copies the rest (RocksDB
/// rewrites them); copies where links are impossible (another file system).
fn link_or_copy_dir(from: &Path, to: &Path) -> Result<()> {
    let entries = std::fs::read_dir(from).map_err(|e| SluiceError::io(from.display(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SluiceError::io(from.display(), e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let is_sst = src.extension().is_some_and(|e| e == "sst");
        if !(is_sst && std::fs::hard_link(&src, &dst).is_ok()) {
            std::fs::copy(&src, &dst).map_err(|e| SluiceError::io(src.display(), e))?;
        }
    }
    Ok(())
}

/// 16 hex digits unique per database instance within the job: process, clock and a counter.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = (u64::from(std::process::id()) << 40)
        ^ (u64::from(nanos) << 12)
        ^ unique().wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{mixed:016x}")
}

fn rocks_err(uid: &str, dir: &std::path::Path, e: rocksdb::Error) -> SluiceError {
    SluiceError::State {
        uid: uid.to_string(),
        state: "rocksdb".into(),
        message: format!("RocksDB at {}: {e}", dir.display()),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Encodes keys of one state: `[kg][id][bincode key]...`, reusing one buffer.
struct KeyCodec {
    name: String,
    uid: String,
    id: u16,
    max_parallelism: usize,
    buf: RefCell<Vec<u8>>,
}

impl KeyCodec {
    fn new(name: &str, uid: &str, id: u16, max_parallelism: usize) -> Self {
        KeyCodec {
            name: name.to_string(),
            uid: uid.to_string(),
            id,
            max_parallelism,
            buf: RefCell::new(Vec::with_capacity(64)),
        }
    }

    /// Runs `f` with the encoded key (and user key, if any).
    fn with<K: Key, R>(
        &self,
        key: &K,
        user_key: Option<&dyn ErasedEncode>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        let mut b = self.buf.borrow_mut();
        b.clear();
        self.encode_key(key, &mut b)?;
        if let Some(uk) = user_key {
            uk.encode_into(&mut b, &self.uid, &self.name)?;
        }
        f(&b)
    }

    /// Appends the database key of `key`: its key group, the state id, then the key.
    fn encode_key<K: Key>(&self, key: &K, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&key_group(key, self.max_parallelism).to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        super::encode_key(out, key).map_err(|e| SluiceError::State {
            uid: self.uid.clone(),
            state: self.name.clone(),
            message: format!("cannot serialise a key: {e}"),
        })
    }

    /// Appends an entry (`value` `None`: a delete) to a write-back, its key encoded straight
    /// into the buffer.
    fn push_entry<K: Key, V: Data>(
        &self,
        data: &mut Entries,
        key: &K,
        value: Option<&V>,
    ) -> Result<()> {
        let bytes = &mut data.bytes;
        let start = bytes.len();
        self.encode_key(key, bytes)?;
        let key_at = start..bytes.len();
        let value_at = match value {
            Some(v) => {
                let start = bytes.len();
                encode(v, bytes, &self.uid, &self.name)?;
                Some(start..bytes.len())
            }
            None => None,
        };
        data.push(key_at, value_at);
        Ok(())
    }

    fn raw_key(&self, kg: u16, key: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(4 + key.len());
        b.extend_from_slice(&kg.to_be_bytes());
        b.extend_from_slice(&self.id.to_be_bytes());
        b.extend_from_slice(key);
        b
    }
}

trait ErasedEncode {
    fn encode_into(&self, out: &mut Vec<u8>, uid: &str, state: &str) -> Result<()>;
}

impl<T: serde::Serialize> ErasedEncode for T {
    fn encode_into(&self, out: &mut Vec<u8>, uid: &str, state: &str) -> Result<()> {
        encode(self, out, uid, state)
    }
}

/// A cached value, or a cached absence, and whether the database still lacks it (`dirty`).
/// An enum rather than an `Option` beside a flag: the flag shares the variant's tag word, so
/// a slot of a `u64` count takes 16 bytes, not 24, and a million-key cache is a third smaller
/// to look up in and to copy at a checkpoint.
enum CacheSlot<V> {
    Present { value: V, dirty: bool },
    Absent { dirty: bool },
}

const _: () = assert!(std::mem::size_of::<CacheSlot<u64>>() == 16);

impl<V> CacheSlot<V> {
    fn new(value: Option<V>, dirty: bool) -> Self {
        match value {
            Some(value) => CacheSlot::Present { value, dirty },
            None => CacheSlot::Absent { dirty },
        }
    }

    fn value(&self) -> Option<&V> {
        match self {
            CacheSlot::Present { value, .. } => Some(value),
            CacheSlot::Absent { .. } => None,
        }
    }

    fn is_dirty(&self) -> bool {
        match self {
            CacheSlot::Present { dirty, .. } | CacheSlot::Absent { dirty } => *dirty,
        }
    }

    fn mark_clean(&mut self) {
        match self {
            CacheSlot::Present { dirty, .. } | CacheSlot::Absent { dirty } => *dirty = false,
        }
    }
}

pub struct RocksValue<K, V> {
    db: Rc<RocksInstance>,
    codec: KeyCodec,
    /// For the copies of the cache that checkpoints freeze.
    names: Arc<heap::Names>,
    cache: RefCell<Table<K, CacheSlot<V>>>,
    copies: TableBuffers<K, V>,
}

impl<K: Key, V: Data> RocksValue<K, V> {
    pub(super) fn new(
        name: &str,
        uid: &str,
        id: u16,
        db: Rc<RocksInstance>,
        max_parallelism: usize,
    ) -> Self {
        RocksValue {
            db,
            codec: KeyCodec::new(name, uid, id, max_parallelism),
            names: heap::Names::new(name, uid, max_parallelism),
            cache: RefCell::new(Table::new()),
            copies: TableBuffers::new(),
        }
    }

    fn load(&self, key: &K) -> Result<Option<V>> {
        self.codec.with(key, None, |k| match self.db.get(k)? {
            None => Ok(None),
            Some(bytes) => {
                let mut s: &[u8] = &bytes;
                decode(&mut s, &self.codec.uid, &self.codec.name).map(Some)
            }
        })
    }

    /// Writes every dirty entry in one batch and empties the cache (to make room).
    fn flush(&self) -> Result<()> {
        self.write_back()?;
        self.cache.borrow_mut().clear();
        Ok(())
    }

    /// Writes every dirty entry in one batch and keeps them cached, clean: what a checkpoint
    /// needs. Emptying the cache there instead made every key a RocksDB read again after each
    /// checkpoint, from more and more level-0 files, which slowed a job checkpointing every
    /// second by a third.
    fn write_back(&self) -> Result<()> {
        let mut data = self.db.writer.buffers();
        match &mut *self.cache.borrow_mut() {
            Table::Keys(m) => self.take_dirty(m.iter_mut(), &mut data)?,
            Table::Text(m) => self.take_dirty(m.iter_mut(), &mut data)?,
        }
        if data.is_empty() {
            return Ok(());
        }
        if data.len() >= SST_WRITE_BACK_MIN {
            // Every entry stays cached (clean), so the task reads none of them from RocksDB
            // while the writer thread sorts and writes them.
            return self.db.write_back_async(data);
        }
        data.sort();
        let mut batch = WriteBatch::default();
        for (key, value) in data.iter() {
            match value {
                Some(v) => batch.put(key, v),
                None => batch.delete(key),
            }
        }
        self.db.write_batch(batch)
    }

    /// Encodes the dirty entries into `data` and marks them clean.
    fn take_dirty<'a, Q: Key>(
        &self,
        entries: impl Iterator<Item = (&'a Q, &'a mut CacheSlot<V>)>,
        data: &mut Entries,
    ) -> Result<()>
    where
        V: 'a,
    {
        read_ahead(
            entries.filter(|(_, slot)| slot.is_dirty()),
            |(k, _)| *k,
            |(k, slot)| {
                slot.mark_clean();
                self.codec.push_entry(data, k, slot.value())
            },
        )
    }

    /// A copy of the cached values (about `len` entries, some of them removals) for the
    /// uploader: see [`heap::freeze_values`].
    fn freeze_live<'a, Q: Key, I>(
        &self,
        entries: impl Fn() -> I + Sync,
        len: usize,
        table_id: u16,
        buffers: &Arc<CopyBuffers<Q, V>>,
    ) -> Frozen
    where
        I: Iterator<Item = (&'a Q, &'a CacheSlot<V>)>,
        V: 'a,
    {
        let live = |(k, slot): (&'a Q, &'a CacheSlot<V>)| slot.value().map(|v| (k, v));
        heap::freeze_values(entries, live, len, &self.names, table_id, buffers)
    }

    fn make_room(&self) -> Result<()> {
        if self.cache.borrow().len() >= self.db.cache_entries {
            self.flush()?;
        }
        Ok(())
    }

    /// Loads the values under the keys of `records` missing from the cache with one batched
    /// RocksDB read, so a batch of records costs one `multi_get` instead of a lookup per
    /// record. Makes room first if the missing keys do not fit, so nothing loaded here is
    /// evicted before the batch is processed. Only the missing keys count: a batch whose keys
    /// are all cached never empties a full cache (counting every record did, on every batch,
    /// once a state's keys filled the cache to within a batch of its size).
    pub(super) fn prefetch<R, S: KeySelector<R, Key = K>>(
        &self,
        records: &[R],
        selector: &S,
    ) -> Result<()> {
        let mut missing = self.missing_keys(records, selector);
        if self.cache.borrow().len() + missing.len() > self.db.cache_entries {
            self.flush()?;
            missing = self.missing_keys(records, selector);
        }
        let missing: Vec<K> = missing.into_iter().collect();
        if missing.is_empty() {
            return Ok(());
        }
        let encoded = missing
            .iter()
            .map(|k| self.codec.with(k, None, |b| Ok(b.to_vec())))
            .collect::<Result<Vec<_>>>()?;
        let values = self.db.multi_get(&encoded)?;
        let mut cache = self.cache.borrow_mut();
        for (k, v) in missing.into_iter().zip(values) {
            let value = match v {
                None => None,
                Some(bytes) => {
                    let mut s: &[u8] = &bytes;
                    Some(decode(&mut s, &self.codec.uid, &self.codec.name)?)
                }
            };
            cache.insert_owned(k, CacheSlot::new(value, false));
        }
        Ok(())
    }

    /// The distinct keys of `records` not in the cache, each cloned once.
    fn missing_keys<R, S: KeySelector<R, Key = K>>(
        &self,
        records: &[R],
        selector: &S,
    ) -> FxHashSet<K> {
        let mut missing = FxHashSet::default();
        let cache = self.cache.borrow();
        for r in records {
            selector.with_key(r, |k| {
                if !cache.contains_key(k) && !missing.contains(k) {
                    missing.insert(k.clone());
                }
            });
        }
        missing
    }

    pub(super) fn get(&self, key: &K) -> Result<Option<V>> {
        if let Some(slot) = self.cache.borrow().get(key) {
            return Ok(slot.value().cloned());
        }
        let v = self.load(key)?;
        self.make_room()?;
        self.cache
            .borrow_mut()
            .insert(key, CacheSlot::new(v.clone(), false));
        Ok(v)
    }

    pub(super) fn put(&self, key: &K, value: V) -> Result<()> {
        self.set(key, Some(value))
    }

    pub(super) fn remove(&self, key: &K) -> Result<()> {
        self.set(key, None)
    }

    /// Caches `value` (`None`: a removal) under `key`, dirty.
    fn set(&self, key: &K, value: Option<V>) -> Result<()> {
        if let Some(slot) = self.cache.borrow_mut().get_mut(key) {
            *slot = CacheSlot::new(value, true);
            return Ok(());
        }
        self.make_room()?;
        self.cache
            .borrow_mut()
            .insert(key, CacheSlot::new(value, true));
        Ok(())
    }

    #[inline]
    pub(super) fn merge(&self, key: &K, value: V, f: impl FnOnce(&mut V, V)) -> Result<V> {
        if let Some(slot) = self.cache.borrow_mut().get_mut(key) {
            return Ok(match slot {
                CacheSlot::Present { value: acc, dirty } => {
                    *dirty = true;
                    f(acc, value);
                    acc.clone()
                }
                CacheSlot::Absent { .. } => {
                    *slot = CacheSlot::new(Some(value.clone()), true);
                    value
                }
            });
        }
        let merged = match self.load(key)? {
            Some(mut acc) => {
                f(&mut acc, value);
                acc
            }
            None => value,
        };
        self.make_room()?;
        self.cache
            .borrow_mut()
            .insert(key, CacheSlot::new(Some(merged.clone()), true));
        Ok(merged)
    }
}

impl<K: Key, V: Data> StateTable for RocksValue<K, V> {
    fn name(&self) -> &str {
        &self.codec.name
    }

    fn snapshot_into(&self, _table_id: u16, _groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()> {
        self.write_back()
    }

    /// The cached values, copied as the heap backend copies its maps; dirty entries stay
    /// dirty, for the write-back that follows once the database is in use.
    fn freeze_cache(&self, table_id: u16) -> Option<Frozen> {
        let cache = self.cache.borrow();
        Some(match &*cache {
            Table::Keys(m) => self.freeze_live(|| m.iter(), m.len(), table_id, &self.copies.keys),
            Table::Text(m) => self.freeze_live(|| m.iter(), m.len(), table_id, &self.copies.text),
        })
    }

    fn restore_entry(&self, kg: u16, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_entry(key, value)?;
        self.db.put(&self.codec.raw_key(kg, key), value)
    }

    fn check_entry(&self, key: &[u8], value: &[u8]) -> Result<()> {
        // Decode once so a type change fails here, naming the state, not on first access.
        let (mut k, mut v) = (key, value);
        let _: K = decode(&mut k, &self.codec.uid, &self.codec.name)?;
        let _: V = decode(&mut v, &self.codec.uid, &self.codec.name)?;
        Ok(())
    }

    fn bulk_id(&self) -> Option<u16> {
        Some(self.codec.id)
    }

    fn cache_capacity(&self) -> Option<usize> {
        Some(self.db.cache_entries)
    }

    fn restore_cached(&self, _kg: u16, key: &[u8], value: &[u8]) -> Result<()> {
        let (mut k, mut v) = (key, value);
        let key: K = decode(&mut k, &self.codec.uid, &self.codec.name)?;
        let value: V = decode(&mut v, &self.codec.uid, &self.codec.name)?;
        // Dirty: the database does not hold it, so the first write-back must.
        self.cache
            .borrow_mut()
            .insert_owned(key, CacheSlot::new(Some(value), true));
        Ok(())
    }
}

pub struct RocksMap<K, UK, UV> {
    db: Rc<RocksInstance>,
    codec: KeyCodec,
    _types: PhantomData<(K, UK, UV)>,
}

impl<K: Key, UK: Key, UV: Data> RocksMap<K, UK, UV> {
    pub(super) fn new(
        name: &str,
        uid: &str,
        id: u16,
        db: Rc<RocksInstance>,
        max_parallelism: usize,
    ) -> Self {
        RocksMap {
            db,
            codec: KeyCodec::new(name, uid, id, max_parallelism),
            _types: PhantomData,
        }
    }

    pub(super) fn get(&self, key: &K, uk: &UK) -> Result<Option<UV>> {
        self.codec.with(key, Some(uk), |k| match self.db.get(k)? {
            None => Ok(None),
            Some(bytes) => {
                let mut s: &[u8] = &bytes;
                decode(&mut s, &self.codec.uid, &self.codec.name).map(Some)
            }
        })
    }

    pub(super) fn put(&self, key: &K, uk: &UK, value: UV) -> Result<()> {
        let mut vb = Vec::new();
        encode(&value, &mut vb, &self.codec.uid, &self.codec.name)?;
        self.codec.with(key, Some(uk), |k| self.db.put(k, &vb))
    }

    pub(super) fn remove(&self, key: &K, uk: &UK) -> Result<()> {
        self.codec.with(key, Some(uk), |k| self.db.delete(k))
    }

    pub(super) fn entries(&self, key: &K) -> Result<Vec<(UK, UV)>> {
        let raw = self
            .codec
            .with(key, None, |prefix| self.db.scan_prefix(prefix))?;
        raw.into_iter()
            .map(|(uk, v)| {
                let (mut a, mut b) = (uk.as_slice(), v.as_slice());
                Ok((
                    decode(&mut a, &self.codec.uid, &self.codec.name)?,
                    decode(&mut b, &self.codec.uid, &self.codec.name)?,
                ))
            })
            .collect()
    }

    pub(super) fn clear(&self, key: &K) -> Result<()> {
        self.codec.with(key, None, |prefix| {
            let mut batch = WriteBatch::default();
            for (suffix, _) in self.db.scan_prefix(prefix)? {
                let mut full = prefix.to_vec();
                full.extend_from_slice(&suffix);
                batch.delete(full);
            }
            self.db.write_batch(batch)
        })
    }
}

impl<K: Key, UK: Key, UV: Data> StateTable for RocksMap<K, UK, UV> {
    fn name(&self) -> &str {
        &self.codec.name
    }

    fn snapshot_into(&self, _table_id: u16, _groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()> {
        Ok(())
    }

    fn restore_entry(&self, kg: u16, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_entry(key, value)?;
        self.db.put(&self.codec.raw_key(kg, key), value)
    }

    fn check_entry(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let (mut k, mut v) = (key, value);
        let _: K = decode(&mut k, &self.codec.uid, &self.codec.name)?;
        let _: UK = decode(&mut k, &self.codec.uid, &self.codec.name)?;
        let _: UV = decode(&mut v, &self.codec.uid, &self.codec.name)?;
        Ok(())
    }

    fn bulk_id(&self) -> Option<u16> {
        Some(self.codec.id)
    }
}

pub struct RocksList<K, V> {
    db: Rc<RocksInstance>,
    codec: KeyCodec,
    _types: PhantomData<(K, V)>,
}

impl<K: Key, V: Data> RocksList<K, V> {
    pub(super) fn new(
        name: &str,
        uid: &str,
        id: u16,
        db: Rc<RocksInstance>,
        max_parallelism: usize,
    ) -> Self {
        RocksList {
            db,
            codec: KeyCodec::new(name, uid, id, max_parallelism),
            _types: PhantomData,
        }
    }

    pub(super) fn get(&self, key: &K) -> Result<Vec<V>> {
        self.codec.with(key, None, |k| match self.db.get(k)? {
            None => Ok(Vec::new()),
            Some(bytes) => {
                let mut s: &[u8] = &bytes;
                decode(&mut s, &self.codec.uid, &self.codec.name)
            }
        })
    }

    pub(super) fn add(&self, key: &K, value: V) -> Result<()> {
        let mut list = self.get(key)?;
        list.push(value);
        self.update(key, list)
    }

    pub(super) fn update(&self, key: &K, values: Vec<V>) -> Result<()> {
        if values.is_empty() {
            return self.codec.with(key, None, |k| self.db.delete(k));
        }
        let mut vb = Vec::new();
        encode(&values, &mut vb, &self.codec.uid, &self.codec.name)?;
        self.codec.with(key, None, |k| self.db.put(k, &vb))
    }
}

impl<K: Key, V: Data> StateTable for RocksList<K, V> {
    fn name(&self) -> &str {
        &self.codec.name
    }

    fn snapshot_into(&self, _table_id: u16, _groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()> {
        Ok(())
    }

    fn restore_entry(&self, kg: u16, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_entry(key, value)?;
        self.db.put(&self.codec.raw_key(kg, key), value)
    }

    fn check_entry(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let (mut k, mut v) = (key, value);
        let _: K = decode(&mut k, &self.codec.uid, &self.codec.name)?;
        let _: Vec<V> = decode(&mut v, &self.codec.uid, &self.codec.name)?;
        Ok(())
    }

    fn bulk_id(&self) -> Option<u16> {
        Some(self.codec.id)
    }
}
