//! Keyed state. An operator registers named states in a [`KeyedStateStore`] and gets typed
//! handles back; the store's backend (`hashmap` or `rocksdb`) is hidden behind them. Every
//! backend snapshots by key group into one canonical format (see [`crate::snapshot`]), so state
//! can be restored into either backend at any parallelism.

mod copy_buffers;
mod heap;
mod heap_table;
mod rocks;
mod rocks_writer;
pub mod testing;
mod text_key;
mod timers;

use text_key::TextKey;

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_core::config::StateBackendKind;
use sluice_core::keygroup::key_group_of;
use sluice_core::{KeyGroupRange, Result, SluiceError};

use crate::context::OperatorContext;
use crate::data::{Barrier, BarrierKind, Data};
use crate::key::{Key, KeySelector};
use crate::snapshot::{EntryIter, Frozen, KeyedSnapshot, SavepointFormat};

pub use rocks::RocksInstance;
pub(crate) use rocks::scan_native;
pub use timers::{TimerService, TimerTable};

/// One registered state, as the store sees it for snapshots and restores.
pub(crate) trait StateTable {
    fn name(&self) -> &str;
    /// Heap tables write their entries into the per-key-group blobs; RocksDB tables write
    /// their cached changes to the database (the store then scans it).
    fn snapshot_into(&self, table_id: u16, groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()>;
    /// The table as it is now, for the uploader to encode (see [`crate::snapshot::Frozen`]);
    /// `None` for tables that [`StateTable::snapshot_into`] must write at the barrier.
    fn freeze(&self, _table_id: u16) -> Option<Frozen> {
        None
    }
    /// A copy of a RocksDB table's cached entries, when the database holds none of its state
    /// (see [`KeyedStateStore::snapshot_at`]); `None` for tables without a cache.
    fn freeze_cache(&self, _table_id: u16) -> Option<Frozen> {
        None
    }
    /// Loads one entry of a snapshot; decoding errors name the state.
    fn restore_entry(&self, key_group: u16, key: &[u8], value: &[u8]) -> Result<()>;
    /// Checks that an entry of a snapshot decodes as this state's types, without loading it
    /// (for tables the store bulk-loads, see [`StateTable::bulk_id`]).
    fn check_entry(&self, _key: &[u8], _value: &[u8]) -> Result<()> {
        Ok(())
    }
    /// The state id of a table kept in RocksDB under `[key group][id][key]`, whose restored
    /// entries the store writes into SST files and ingests; `None` for heap-held tables.
    fn bulk_id(&self) -> Option<u16> {
        None
    }
    /// How many entries a RocksDB table's write-back cache holds; `None` for tables without
    /// one. A restored state that fits it goes into the cache (see
    /// [`StateTable::restore_cached`]).
    fn cache_capacity(&self) -> Option<usize> {
        None
    }
    /// Loads one entry of a snapshot into the table's write-back cache, dirty, leaving the
    /// database untouched; decoding errors name the state.
    fn restore_cached(&self, key_group: u16, key: &[u8], value: &[u8]) -> Result<()> {
        self.restore_entry(key_group, key, value)
    }
}

pub(crate) enum Backend {
    Heap,
    Rocks(Rc<RocksInstance>),
}

/// A full (non-incremental) RocksDB checkpoint of a database with less live data than this in
/// its SST files is taken in the canonical format: scanning it (and the memtable, at most a
/// write buffer) costs little, and it is one file or inlined in `_metadata` instead of the
/// four or more files of a native checkpoint (small-file pressure on HDFS).
pub const NATIVE_FULL_MIN_BYTES: u64 = 1 << 20;

/// The keyed state of one operator subtask.
pub struct KeyedStateStore {
    backend: Backend,
    uid: String,
    max_parallelism: usize,
    range: KeyGroupRange,
    tables: Vec<Rc<dyn StateTable>>,
    restored: Option<KeyedSnapshot>,
    /// `state.backend.incremental`: RocksDB checkpoints share SST files with earlier ones.
    incremental: bool,
    /// The state names of a database restored natively: state ids are baked into its keys, so
    /// states must be registered under the same ids.
    native_tables: Option<Vec<String>>,
}

impl KeyedStateStore {
    /// Opens the backend chosen by `state.backend.type` and takes the keyed part of
    /// `ctx.restored`, which each state registered later loads from.
    ///
    /// Restored native (incremental) state is opened as the database itself when this subtask
    /// has exactly the key groups of one restored database; otherwise (other parallelism, heap
    /// backend) the key groups of this subtask are read out of every overlapping database into
    /// the canonical format and restored like any snapshot.
    pub fn open(ctx: &mut OperatorContext) -> Result<Self> {
        let mut restored = ctx.restored.as_mut().and_then(|r| r.keyed.take());
        let rocks = ctx.config.state_backend == StateBackendKind::RocksDb;
        let native = restored.as_mut().map(|k| std::mem::take(&mut k.native));
        let mut native_tables = None;
        let backend = match native {
            Some(n) if rocks && n.len() == 1 && n[0].range == ctx.key_groups => {
                native_tables = Some(n[0].tables.clone());
                Backend::Rocks(Rc::new(RocksInstance::open_native(ctx, &n[0])?))
            }
            other => {
                for n in other.unwrap_or_default() {
                    let groups = rocks::scan_native(&n, ctx.key_groups, &ctx.uid)?;
                    if let Some(k) = restored.as_mut() {
                        k.merge_groups(&n.tables, groups);
                    }
                }
                if rocks {
                    Backend::Rocks(Rc::new(RocksInstance::open(ctx)?))
                } else {
                    Backend::Heap
                }
            }
        };
        Ok(KeyedStateStore {
            backend,
            uid: ctx.uid.clone(),
            max_parallelism: ctx.max_parallelism,
            range: ctx.key_groups,
            tables: Vec::new(),
            restored,
            incremental: ctx.config.incremental,
            native_tables,
        })
    }

    pub fn max_parallelism(&self) -> usize {
        self.max_parallelism
    }

    fn register(&mut self, table: Rc<dyn StateTable>) -> Result<u16> {
        let name = table.name().to_string();
        if self.tables.iter().any(|t| t.name() == name) {
            return Err(SluiceError::State {
                uid: self.uid.clone(),
                state: name,
                message: "registered twice".into(),
            });
        }
        let id = self.tables.len() as u16;
        if let Some(old) = self.native_tables.as_ref().and_then(|t| t.get(id as usize))
            && *old != name
        {
            return Err(SluiceError::State {
                uid: self.uid.clone(),
                state: name,
                message: format!(
                    "registered as state {id}, but the incremental checkpoint restored has \
                     '{old}' there; register states in the same order, or restore from a savepoint"
                ),
            });
        }
        if let Some(r) = &self.restored
            && let Some(old_id) = r.tables.iter().position(|t| *t == name)
        {
            let range = self.range;
            // Key groups ascending, each in key order when taken from RocksDB: the order of
            // the database's keys, so bulk loading writes sorted SST files.
            let entries = || {
                r.groups
                    .iter()
                    .filter(move |(kg, _)| range.contains(**kg))
                    .flat_map(|(&kg, blob)| {
                        EntryIter::new(blob)
                            .filter(move |(t, _, _)| *t as usize == old_id)
                            .map(move |(_, k, v)| (kg, k, v))
                    })
            };
            // A state that fits its cache, restored into a database never written, goes back
            // into the cache it was copied from: the database stays unused, so checkpoints go
            // on copying the caches. (Written into RocksDB instead, entries in a heap
            // snapshot's or a cache copy's order went through the memtable one by one, with
            // flushes and compactions: about a second for a million entries.)
            let into_cache = |db: &RocksInstance| {
                db.never_written()
                    && table
                        .cache_capacity()
                        // Counting stops one past the room: a large state is not walked twice.
                        .is_some_and(|room| entries().take(room + 1).count() <= room)
            };
            match (self.rocks(), table.bulk_id()) {
                (Some(db), Some(_)) if into_cache(&db) => {
                    for (kg, k, v) in entries() {
                        table.restore_cached(kg, k, v)?;
                    }
                }
                (Some(db), Some(state_id)) => db.bulk_load(|put| {
                    let mut raw = Vec::with_capacity(64);
                    for (kg, k, v) in entries() {
                        table.check_entry(k, v)?;
                        raw.clear();
                        raw.extend_from_slice(&kg.to_be_bytes());
                        raw.extend_from_slice(&state_id.to_be_bytes());
                        raw.extend_from_slice(k);
                        put(&raw, v)?;
                    }
                    Ok(())
                })?,
                _ => {
                    for (kg, k, v) in entries() {
                        table.restore_entry(kg, k, v)?;
                    }
                }
            }
        }
        self.tables.push(table);
        Ok(id)
    }

    fn rocks(&self) -> Option<Rc<RocksInstance>> {
        match &self.backend {
            Backend::Rocks(r) => Some(r.clone()),
            Backend::Heap => None,
        }
    }

    /// Creates and registers a state named `name`: `heap(name, uid, max_parallelism)` on the
    /// heap backend, `rocks(name, uid, id, db, max_parallelism)` on RocksDB; `table` gives
    /// the store its view of the state.
    fn new_state<S>(
        &mut self,
        name: &str,
        heap: impl FnOnce(&str, &str, usize) -> S,
        rocks: impl FnOnce(&str, &str, u16, Rc<RocksInstance>, usize) -> S,
        table: impl FnOnce(&S) -> Rc<dyn StateTable>,
    ) -> Result<S> {
        let id = self.tables.len() as u16;
        let state = match self.rocks() {
            None => heap(name, &self.uid, self.max_parallelism),
            Some(db) => rocks(name, &self.uid, id, db, self.max_parallelism),
        };
        self.register(table(&state))?;
        Ok(state)
    }

    pub fn value<K: Key, V: Data>(&mut self, name: &str) -> Result<ValueState<K, V>> {
        self.new_state(
            name,
            |n, uid, p| ValueState::Heap(Rc::new(heap::HeapValue::new(n, uid, p))),
            |n, uid, id, db, p| {
                ValueState::Rocks(Rc::new(rocks::RocksValue::new(n, uid, id, db, p)))
            },
            ValueState::table,
        )
    }

    pub fn map<K: Key, UK: Key, UV: Data>(&mut self, name: &str) -> Result<MapState<K, UK, UV>> {
        self.new_state(
            name,
            |n, uid, p| MapState::Heap(Rc::new(heap::HeapMap::new(n, uid, p))),
            |n, uid, id, db, p| MapState::Rocks(Rc::new(rocks::RocksMap::new(n, uid, id, db, p))),
            MapState::table,
        )
    }

    pub fn list<K: Key, V: Data>(&mut self, name: &str) -> Result<ListState<K, V>> {
        self.new_state(
            name,
            |n, uid, p| ListState::Heap(Rc::new(heap::HeapList::new(n, uid, p))),
            |n, uid, id, db, p| ListState::Rocks(Rc::new(rocks::RocksList::new(n, uid, id, db, p))),
            ListState::table,
        )
    }

    /// Timers live with keyed state (they are snapshotted per key group too), always on the heap.
    pub fn timers<K: Key>(&mut self, name: &str) -> Result<TimerService<K>> {
        let table = Rc::new(TimerTable::new(name, &self.uid, self.max_parallelism));
        self.register(table.clone())?;
        Ok(TimerService::new(table))
    }

    /// Writes cached changes to RocksDB and waits until its flushes and compactions are done,
    /// so the files stop changing (for tests and benchmarks); nothing to do on the heap.
    pub fn wait_for_compactions(&self) -> Result<()> {
        let Backend::Rocks(db) = &self.backend else {
            return Ok(());
        };
        let mut ignored = BTreeMap::new();
        for (id, t) in self.tables.iter().enumerate() {
            t.snapshot_into(id as u16, &mut ignored)?;
        }
        db.wait_for_compactions()
    }

    /// The keyed state at `barrier`: on RocksDB a checkpoint is a native RocksDB checkpoint
    /// (plus heap-held state in `groups`), its SST files shared between checkpoints with
    /// `state.backend.incremental`; so is a native savepoint, whose files are all its own.
    /// Canonical savepoints (as in Flink: they restore into any backend), small full
    /// checkpoints and everything on the heap are canonical; on RocksDB their files are
    /// linked here all the same, marked
    /// [`canonical`](crate::snapshot::NativeState::canonical), and read out by the uploader.
    ///
    /// A full checkpoint on RocksDB whose database was never written (all its state fits the
    /// write-back caches) copies the caches as the heap backend copies its maps, and stores
    /// them canonical: writing every cached entry back as an SST file at each checkpoint only
    /// to read it out again cost the job far more (the files, then their compaction, at every
    /// checkpoint), and the cached entries stay dirty for when the database is first used.
    pub fn snapshot_at(&self, barrier: &Barrier) -> Result<KeyedSnapshot> {
        let from_caches = match &self.backend {
            Backend::Rocks(db) => {
                db.never_written() && !self.incremental && barrier.kind == BarrierKind::Checkpoint
            }
            Backend::Heap => false,
        };
        // Heap tables are frozen, for the uploader to encode; the rest write their entries.
        let mut groups = BTreeMap::new();
        let mut frozen = Vec::new();
        for (id, t) in self.tables.iter().enumerate() {
            let id = id as u16;
            let copy = match from_caches {
                true => t.freeze_cache(id).or_else(|| t.freeze(id)),
                false => t.freeze(id),
            };
            match copy {
                Some(f) => frozen.push(f),
                None => t.snapshot_into(id, &mut groups)?,
            }
        }
        groups.retain(|_, b: &mut Vec<u8>| !b.is_empty());
        let tables: Vec<String> = self.tables.iter().map(|t| t.name().to_string()).collect();
        let db = match &self.backend {
            Backend::Rocks(db) if !from_caches => db,
            // The copies would then miss what went to the database.
            Backend::Rocks(db) if !db.never_written() => {
                return Err(SluiceError::Internal(format!(
                    "the state of '{}' reached RocksDB while checkpoint {} copied its caches",
                    self.uid, barrier.checkpoint_id
                )));
            }
            _ => {
                return Ok(KeyedSnapshot {
                    tables,
                    groups,
                    native: Vec::new(),
                    frozen,
                });
            }
        };
        let savepoint = barrier.kind != BarrierKind::Checkpoint;
        let mut files = db.native_checkpoint(
            barrier.checkpoint_id,
            self.range,
            tables.clone(),
            self.incremental,
            savepoint,
        )?;
        // Sized by its SST files (the estimate of live data ignored what the memtable or a
        // queued write-back held, and took a 3 MB state for empty); this checkpoint's own
        // write-back may still be queued, so a state that only now grew past the threshold is
        // stored canonical once more.
        let native = match barrier.kind.savepoint_format() {
            None => self.incremental || db.stored_size() >= NATIVE_FULL_MIN_BYTES,
            Some(format) => format == SavepointFormat::Native,
        };
        // Canonical state is read out of the linked files by the uploader: scanning the
        // database here held the records up for the whole scan at every checkpoint.
        files.canonical = !native;
        Ok(KeyedSnapshot {
            tables,
            groups,
            native: vec![files],
            frozen,
        })
    }

    /// A consistent copy of all keyed state, per key group.
    pub fn snapshot(&self) -> Result<KeyedSnapshot> {
        let mut groups = BTreeMap::new();
        for (id, t) in self.tables.iter().enumerate() {
            t.snapshot_into(id as u16, &mut groups)?;
        }
        if let Backend::Rocks(db) = &self.backend {
            db.scan_into(self.range, &mut groups)?;
        }
        groups.retain(|_, b: &mut Vec<u8>| !b.is_empty());
        Ok(KeyedSnapshot {
            tables: self.tables.iter().map(|t| t.name().to_string()).collect(),
            groups,
            native: Vec::new(),
            frozen: Vec::new(),
        })
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    uid: &str,
    state: &str,
) -> Result<()> {
    bincode::serialize_into(out, value).map_err(|e| SluiceError::State {
        uid: uid.to_string(),
        state: state.to_string(),
        message: format!("cannot serialise: {e}"),
    })
}

/// Starts an entry of `table` in a key-group blob, as [`crate::snapshot::write_entry`] lays it
/// out; the key and the value follow, each written by [`encode_field`].
pub(crate) fn begin_entry(out: &mut Vec<u8>, table: u16) {
    out.extend_from_slice(&table.to_le_bytes());
}

/// Appends what `write` encodes (bincode) behind its length as a u32: an entry's key or value,
/// encoded in place rather than in a buffer of its own and then copied.
pub(crate) fn encode_field(
    out: &mut Vec<u8>,
    uid: &str,
    state: &str,
    write: impl FnOnce(&mut Vec<u8>) -> bincode::Result<()>,
) -> Result<()> {
    let error = |message: String| SluiceError::State {
        uid: uid.to_string(),
        state: state.to_string(),
        message,
    };
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out).map_err(|e| error(format!("cannot serialise: {e}")))?;
    let len = out.len() - at - 4;
    let len = u32::try_from(len).map_err(|_| error(format!("an entry of {len} bytes")))?;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &mut &[u8], uid: &str, state: &str) -> Result<T> {
    bincode::deserialize_from(bytes).map_err(|e| SluiceError::State {
        uid: uid.to_string(),
        state: state.to_string(),
        message: format!(
            "stored value does not decode as {}: {e}",
            std::any::type_name::<T>()
        ),
    })
}

/// Items [`read_ahead`] handles together.
pub(crate) const READ_AHEAD: usize = 16;

/// Runs `f` on every item, [`READ_AHEAD`] items at a time, after first loading each one's key
/// in one short loop. A checkpoint goes through a large table in the table's order, and a key
/// that owns an allocation (a `String`) then costs a cache miss each, one after another. The
/// loads of that first loop do not depend on each other, so their misses overlap, and `f` finds
/// the keys in the cache.
pub(crate) fn read_ahead<T, K: 'static, E>(
    mut items: impl Iterator<Item = T>,
    key: impl Fn(&T) -> &K,
    mut f: impl FnMut(T) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    loop {
        let mut ahead: [Option<T>; READ_AHEAD] = std::array::from_fn(|_| None);
        let mut n = 0;
        for slot in &mut ahead {
            match items.next() {
                Some(item) => {
                    *slot = Some(item);
                    n += 1;
                }
                None => break,
            }
        }
        let mut first_bytes = 0u8;
        for item in ahead.iter().flatten() {
            first_bytes ^= first_byte(key(item));
        }
        std::hint::black_box(first_bytes);
        for item in ahead.into_iter().flatten() {
            f(item)?;
        }
        if n < READ_AHEAD {
            return Ok(());
        }
    }
}

/// The first byte of a key that owns an allocation (a `String`, a long [`TextKey`]; 0 for
/// other keys): one load that brings the allocation into the cache.
#[inline]
fn first_byte<K: 'static>(key: &K) -> u8 {
    let key = key as &dyn std::any::Any;
    if let Some(t) = key.downcast_ref::<TextKey>() {
        return t.first_boxed_byte();
    }
    match key.downcast_ref::<String>() {
        Some(s) => s.as_bytes().first().copied().unwrap_or(0),
        None => 0,
    }
}

/// Appends the bincode encoding of a key: a [`TextKey`]'s without a second UTF-8 check.
#[inline]
pub(crate) fn encode_key<K: Serialize + 'static>(
    out: &mut Vec<u8>,
    key: &K,
) -> bincode::Result<()> {
    match (key as &dyn std::any::Any).downcast_ref::<TextKey>() {
        Some(t) => {
            t.encode_into(out);
            Ok(())
        }
        None => bincode::serialize_into(out, key),
    }
}

pub(crate) fn key_group<K: Key>(key: &K, max_parallelism: usize) -> u16 {
    key_group_of(key, max_parallelism)
}

/// A single value per key.
pub enum ValueState<K, V> {
    Heap(Rc<heap::HeapValue<K, V>>),
    Rocks(Rc<rocks::RocksValue<K, V>>),
}

impl<K: Key, V: Data> ValueState<K, V> {
    fn table(&self) -> Rc<dyn StateTable> {
        match self {
            ValueState::Heap(t) => t.clone(),
            ValueState::Rocks(t) => t.clone(),
        }
    }

    pub fn get(&self, key: &K) -> Result<Option<V>> {
        match self {
            ValueState::Heap(t) => Ok(t.get(key)),
            ValueState::Rocks(t) => t.get(key),
        }
    }

    pub fn put(&self, key: &K, value: V) -> Result<()> {
        match self {
            ValueState::Heap(t) => {
                t.put(key, value);
                Ok(())
            }
            ValueState::Rocks(t) => t.put(key, value),
        }
    }

    pub fn remove(&self, key: &K) -> Result<()> {
        match self {
            ValueState::Heap(t) => {
                t.remove(key);
                Ok(())
            }
            ValueState::Rocks(t) => t.remove(key),
        }
    }

    /// Hints that the values under the keys of `records` are about to be read or updated,
    /// record by record. The heap backend looks every key up once, in a loop of lookups that
    /// do not depend on each other, so their cache misses overlap and the updates then find
    /// their entries in the cache (a large table misses on nearly every key). The RocksDB
    /// backend loads the keys missing from its cache with one batched read.
    pub fn prefetch<R, S: KeySelector<R, Key = K>>(
        &self,
        records: &[R],
        selector: &S,
    ) -> Result<()> {
        match self {
            ValueState::Heap(t) => {
                t.warm(records, selector);
                Ok(())
            }
            ValueState::Rocks(t) => t.prefetch(records, selector),
        }
    }

    /// Folds `value` into the stored value (or stores it if there is none) and returns the result.
    #[inline]
    pub fn merge(&self, key: &K, value: V, f: impl FnOnce(&mut V, V)) -> Result<V> {
        match self {
            ValueState::Heap(t) => Ok(t.merge(key, value, f)),
            ValueState::Rocks(t) => t.merge(key, value, f),
        }
    }
}

/// A map per key.
pub enum MapState<K, UK, UV> {
    Heap(Rc<heap::HeapMap<K, UK, UV>>),
    Rocks(Rc<rocks::RocksMap<K, UK, UV>>),
}

impl<K: Key, UK: Key, UV: Data> MapState<K, UK, UV> {
    fn table(&self) -> Rc<dyn StateTable> {
        match self {
            MapState::Heap(t) => t.clone(),
            MapState::Rocks(t) => t.clone(),
        }
    }

    pub fn get(&self, key: &K, user_key: &UK) -> Result<Option<UV>> {
        match self {
            MapState::Heap(t) => Ok(t.get(key, user_key)),
            MapState::Rocks(t) => t.get(key, user_key),
        }
    }

    pub fn put(&self, key: &K, user_key: UK, value: UV) -> Result<()> {
        match self {
            MapState::Heap(t) => {
                t.put(key, user_key, value);
                Ok(())
            }
            MapState::Rocks(t) => t.put(key, &user_key, value),
        }
    }

    pub fn remove(&self, key: &K, user_key: &UK) -> Result<()> {
        match self {
            MapState::Heap(t) => {
                t.remove(key, user_key);
                Ok(())
            }
            MapState::Rocks(t) => t.remove(key, user_key),
        }
    }

    /// All entries of `key`'s map (in no particular order).
    pub fn entries(&self, key: &K) -> Result<Vec<(UK, UV)>> {
        match self {
            MapState::Heap(t) => Ok(t.entries(key)),
            MapState::Rocks(t) => t.entries(key),
        }
    }

    /// Removes `key`'s whole map.
    pub fn clear(&self, key: &K) -> Result<()> {
        match self {
            MapState::Heap(t) => {
                t.clear(key);
                Ok(())
            }
            MapState::Rocks(t) => t.clear(key),
        }
    }
}

/// A list per key.
pub enum ListState<K, V> {
    Heap(Rc<heap::HeapList<K, V>>),
    Rocks(Rc<rocks::RocksList<K, V>>),
}

impl<K: Key, V: Data> ListState<K, V> {
    fn table(&self) -> Rc<dyn StateTable> {
        match self {
            ListState::Heap(t) => t.clone(),
            ListState::Rocks(t) => t.clone(),
        }
    }

    pub fn add(&self, key: &K, value: V) -> Result<()> {
        match self {
            ListState::Heap(t) => {
                t.add(key, value);
                Ok(())
            }
            ListState::Rocks(t) => t.add(key, value),
        }
    }

    pub fn get(&self, key: &K) -> Result<Vec<V>> {
        match self {
            ListState::Heap(t) => Ok(t.get(key)),
            ListState::Rocks(t) => t.get(key),
        }
    }

    pub fn update(&self, key: &K, values: Vec<V>) -> Result<()> {
        match self {
            ListState::Heap(t) => {
                t.update(key, values);
                Ok(())
            }
            ListState::Rocks(t) => t.update(key, values),
        }
    }

    pub fn clear(&self, key: &K) -> Result<()> {
        self.update(key, Vec::new())
    }
}

#[cfg(test)]
mod tests;
