//! The `hashmap` backend: typed hash maps on the heap, serialised only at snapshot time.
//!
//! At a checkpoint the task copies each map ([`StateTable::freeze`]) and the uploader encodes
//! the copy: a copy costs the task a fraction of encoding the entries. The task keeps the
//! original, whose memory layout its accesses are used to; handing over the original and
//! copying it lazily on the next change (copy-on-write) scattered the keys the task goes on
//! reading, and lost more to cache misses than the encoding cost.
//!
//! Value and list state keep `String` keys inline in the map's entries where they fit
//! ([`super::text_key`]): one cache miss per lookup instead of two, and a copy at a barrier that
//! reads the map in order instead of a million scattered allocations.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use sluice_core::Result;

use super::copy_buffers::{Copied, CopyBuffers, TableBuffers};
use super::heap_table::Table;
use super::text_key::TextKey;
use super::{StateTable, begin_entry, decode, encode_field, encode_key, key_group, read_ahead};
use crate::blob_pool::BlobPool;
use crate::data::Data;
use crate::key::{Key, KeySelector};
use crate::snapshot::{Frozen, FrozenTable};

/// What a state's snapshot entries and errors name: the state, its operator's uid, and the
/// maximum parallelism its key groups are of. Shared by a table and each copy frozen from it.
pub(super) struct Names {
    name: String,
    uid: String,
    max_parallelism: usize,
}

impl Names {
    pub(super) fn new(name: &str, uid: &str, max_parallelism: usize) -> Arc<Self> {
        Arc::new(Names {
            name: name.to_string(),
            uid: uid.to_string(),
            max_parallelism,
        })
    }
}

/// Writes a map's entries into key-group blobs under `table_id`, taking the blobs' memory from
/// the pool where it knows their sizes.
type WriteEntries<M> = fn(&M, &Names, u16, &mut BTreeMap<u16, Vec<u8>>, &BlobPool) -> Result<()>;

/// A map as it was at a barrier, for the uploader to encode.
struct FrozenMap<M> {
    map: M,
    names: Arc<Names>,
    table_id: u16,
    write: WriteEntries<M>,
}

impl<M: Send + Sync> FrozenTable for FrozenMap<M> {
    fn write_into(&self, groups: &mut BTreeMap<u16, Vec<u8>>, pool: &BlobPool) -> Result<()> {
        (self.write)(&self.map, &self.names, self.table_id, groups, pool)
    }
}

fn freeze<M: Send + Sync + 'static>(
    copy: M,
    names: &Arc<Names>,
    table_id: u16,
    write: WriteEntries<M>,
) -> Frozen {
    Frozen(Arc::new(FrozenMap {
        map: copy,
        names: names.clone(),
        table_id,
        write,
    }))
}

/// Tables at least this large are copied by two threads at a barrier (see [`copy_entries`]).
const SPLIT_COPY_MIN: usize = 1 << 16;

/// The entries of a map, for the uploader: copied at the barrier. Their key groups are left
/// for the uploader to work out (hashing every key here took a third of the copy's time, all
/// of it while the task waits), and an entry copies in 24 bytes instead of 32 for a
/// [`TextKey`] and a `u64`.
/// Not `map.clone()`: that visits the keys one cache miss after another (see [`read_ahead`]).
/// `entries` yields the table's entries afresh on each call (`len` of them), and `live` the
/// ones to copy (a cache leaves out its removals), as references to key and value. A large
/// table is copied half here and half on a helper thread while the task waits: the copy waits
/// on memory, not on this core, and the task is stalled for the copy's duration, so two copying
/// threads halve the stall.
fn copy_entries<'a, K, V, T, I>(
    entries: impl Fn() -> I + Sync,
    live: impl Fn(T) -> Option<(&'a K, &'a V)> + Sync,
    len: usize,
    buffers: &Arc<CopyBuffers<K, V>>,
) -> Entries<K, V>
where
    K: Key,
    V: Clone + Send + Sync + 'a,
    I: Iterator<Item = T>,
{
    let copied = |parts| Copied::new(parts, buffers.clone());
    if len < SPLIT_COPY_MIN {
        let all = entries().filter_map(&live);
        return copied(vec![copy_part(all, buffers.take(len))]);
    }
    // Split before `live` looks at an entry, so the helper skips the first half's entries
    // without reading them.
    let half = len / 2;
    let second = || {
        let part = entries().skip(half).filter_map(&live);
        copy_part(part, buffers.take(len - half))
    };
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("state-copy".into())
            .spawn_scoped(s, second);
        let first = copy_part(entries().take(half).filter_map(&live), buffers.take(half));
        let second = match helper {
            Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            // No thread to be had: copy the rest here.
            Err(_) => second(),
        };
        copied(vec![first, second])
    })
}

/// One thread's part of [`copy_entries`].
fn copy_part<'a, K: Key, V: Clone + 'a>(
    part: impl Iterator<Item = (&'a K, &'a V)>,
    mut out: Vec<(K, V)>,
) -> Vec<(K, V)> {
    let Ok(()) = read_ahead(
        part,
        |(k, _)| *k,
        |(k, v)| {
            out.push((k.clone(), v.clone()));
            Ok::<(), Infallible>(())
        },
    );
    out
}

/// A copy of value state's entries (about `len` of them; see [`copy_entries`]) in the
/// canonical snapshot format, for the uploader to encode: how the heap backend freezes its
/// value maps, for the RocksDB backend's write-back caches.
pub(super) fn freeze_values<'a, K: Key, V: Data, T, I>(
    entries: impl Fn() -> I + Sync,
    live: impl Fn(T) -> Option<(&'a K, &'a V)> + Sync,
    len: usize,
    names: &Arc<Names>,
    table_id: u16,
    buffers: &Arc<CopyBuffers<K, V>>,
) -> Frozen
where
    I: Iterator<Item = T>,
{
    let copy = copy_entries(entries, live, len, buffers);
    freeze(copy, names, table_id, write_entries)
}

/// Entries of a value or list table, as [`copy_entries`] takes them: in parts, one per copying
/// thread.
type Entries<K, V> = Copied<K, V>;

pub struct HeapValue<K, V> {
    names: Arc<Names>,
    map: RefCell<Table<K, V>>,
    copies: TableBuffers<K, V>,
}

impl<K: Key, V: Data> HeapValue<K, V> {
    pub(super) fn new(name: &str, uid: &str, max_parallelism: usize) -> Self {
        HeapValue {
            names: Names::new(name, uid, max_parallelism),
            map: RefCell::new(Table::new()),
            copies: TableBuffers::new(),
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<V> {
        self.map.borrow().get(key).cloned()
    }

    /// Looks the key of each record up without reading its value (see
    /// [`super::ValueState::prefetch`]).
    pub(super) fn warm<R, S: KeySelector<R, Key = K>>(&self, records: &[R], selector: &S) {
        let map = self.map.borrow();
        let found = records
            .iter()
            .filter(|r| selector.with_key(r, |k| map.contains_key(k)))
            .count();
        // Keeps the lookups from being optimised away: their only effect is on the caches.
        std::hint::black_box(found);
    }

    pub(super) fn put(&self, key: &K, value: V) {
        let mut m = self.map.borrow_mut();
        match m.get_mut(key) {
            Some(v) => *v = value,
            None => m.insert(key, value),
        }
    }

    pub(super) fn remove(&self, key: &K) {
        self.map.borrow_mut().remove(key);
    }

    #[inline]
    pub(super) fn merge(&self, key: &K, value: V, f: impl FnOnce(&mut V, V)) -> V {
        let mut m = self.map.borrow_mut();
        match m.get_mut(key) {
            Some(acc) => {
                f(acc, value);
                acc.clone()
            }
            None => {
                m.insert(key, value.clone());
                value
            }
        }
    }
}

impl<K: Key, V: Data> StateTable for HeapValue<K, V> {
    fn name(&self) -> &str {
        &self.names.name
    }

    fn snapshot_into(&self, table_id: u16, groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()> {
        write_table(&self.map.borrow(), &self.names, table_id, groups)
    }

    fn freeze(&self, table_id: u16) -> Option<Frozen> {
        Some(freeze_table(
            &self.map.borrow(),
            &self.names,
            table_id,
            &self.copies,
        ))
    }

    fn restore_entry(&self, _kg: u16, key: &[u8], mut value: &[u8]) -> Result<()> {
        let v: V = decode(&mut value, &self.names.uid, &self.names.name)?;
        restore_into(&mut self.map.borrow_mut(), &self.names, key, v)
    }
}

pub struct HeapMap<K, UK, UV> {
    names: Arc<Names>,
    map: RefCell<FxHashMap<K, FxHashMap<UK, UV>>>,
}

impl<K: Key, UK: Key, UV: Data> HeapMap<K, UK, UV> {
    pub(super) fn new(name: &str, uid: &str, max_parallelism: usize) -> Self {
        HeapMap {
            names: Names::new(name, uid, max_parallelism),
            map: RefCell::new(FxHashMap::default()),
        }
    }

    pub(super) fn get(&self, key: &K, uk: &UK) -> Option<UV> {
        self.map.borrow().get(key).and_then(|m| m.get(uk)).cloned()
    }

    pub(super) fn put(&self, key: &K, uk: UK, value: UV) {
        let mut m = self.map.borrow_mut();
        if let Some(inner) = m.get_mut(key) {
            inner.insert(uk, value);
        } else {
            let mut inner = FxHashMap::default();
            inner.insert(uk, value);
            m.insert(key.clone(), inner);
        }
    }

    pub(super) fn remove(&self, key: &K, uk: &UK) {
        let mut m = self.map.borrow_mut();
        if let Some(inner) = m.get_mut(key) {
            inner.remove(uk);
            if inner.is_empty() {
                m.remove(key);
            }
        }
    }

    pub(super) fn entries(&self, key: &K) -> Vec<(UK, UV)> {
        self.map
            .borrow()
            .get(key)
            .map(|m| m.iter().map(|(a, b)| (a.clone(), b.clone())).collect())
            .unwrap_or_default()
    }

    pub(super) fn clear(&self, key: &K) {
        self.map.borrow_mut().remove(key);
    }
}

impl<K: Key, UK: Key, UV: Data> StateTable for HeapMap<K, UK, UV> {
    fn name(&self) -> &str {
        &self.names.name
    }

    fn snapshot_into(&self, table_id: u16, groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()> {
        write_maps(
            &self.map.borrow(),
            &self.names,
            table_id,
            groups,
            &BlobPool::default(),
        )
    }

    fn freeze(&self, table_id: u16) -> Option<Frozen> {
        Some(freeze(
            self.map.borrow().clone(),
            &self.names,
            table_id,
            write_maps,
        ))
    }

    fn restore_entry(&self, _kg: u16, mut key: &[u8], mut value: &[u8]) -> Result<()> {
        let k: K = decode(&mut key, &self.names.uid, &self.names.name)?;
        let uk: UK = decode(&mut key, &self.names.uid, &self.names.name)?;
        let v: UV = decode(&mut value, &self.names.uid, &self.names.name)?;
        self.map.borrow_mut().entry(k).or_default().insert(uk, v);
        Ok(())
    }
}

pub struct HeapList<K, V> {
    names: Arc<Names>,
    map: RefCell<Table<K, Vec<V>>>,
    copies: TableBuffers<K, Vec<V>>,
}

impl<K: Key, V: Data> HeapList<K, V> {
    pub(super) fn new(name: &str, uid: &str, max_parallelism: usize) -> Self {
        HeapList {
            names: Names::new(name, uid, max_parallelism),
            map: RefCell::new(Table::new()),
            copies: TableBuffers::new(),
        }
    }

    pub(super) fn add(&self, key: &K, value: V) {
        let mut m = self.map.borrow_mut();
        match m.get_mut(key) {
            Some(l) => l.push(value),
            None => m.insert(key, vec![value]),
        }
    }

    pub(super) fn get(&self, key: &K) -> Vec<V> {
        self.map.borrow().get(key).cloned().unwrap_or_default()
    }

    pub(super) fn update(&self, key: &K, values: Vec<V>) {
        let mut m = self.map.borrow_mut();
        if values.is_empty() {
            m.remove(key);
        } else if let Some(l) = m.get_mut(key) {
            *l = values;
        } else {
            m.insert(key, values);
        }
    }
}

impl<K: Key, V: Data> StateTable for HeapList<K, V> {
    fn name(&self) -> &str {
        &self.names.name
    }

    fn snapshot_into(&self, table_id: u16, groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()> {
        write_table(&self.map.borrow(), &self.names, table_id, groups)
    }

    fn freeze(&self, table_id: u16) -> Option<Frozen> {
        Some(freeze_table(
            &self.map.borrow(),
            &self.names,
            table_id,
            &self.copies,
        ))
    }

    fn restore_entry(&self, _kg: u16, key: &[u8], mut value: &[u8]) -> Result<()> {
        let v: Vec<V> = decode(&mut value, &self.names.uid, &self.names.name)?;
        restore_into(&mut self.map.borrow_mut(), &self.names, key, v)
    }
}

/// Key-group blobs by index, so that each entry costs no map lookup; empty until used.
///
/// Entries are written to a small stage per key group first and reach their blob a stage at a
/// time. A table's entries come in hash order, each to another of up to `max_parallelism`
/// blobs: written straight there, nearly every entry began a cache line of memory the cache did
/// not hold, too many places at once for the hardware to fetch ahead, and the uploader's stores
/// waited on memory (about 80 ns an entry, most of its time, with a million entries). The
/// stages together stay in the core's cache, and a full stage goes to its blob as one copy.
struct Blobs {
    blobs: Vec<Vec<u8>>,
    stages: Vec<Vec<u8>>,
    /// Bytes a stage gathers before it goes to its blob.
    stage_len: usize,
}

/// Entries [`Blobs::sized_for`] encodes to learn their size.
const SIZE_SAMPLE: usize = 64;
/// Bytes all stages of a table gather before they go to their blobs (each has room for twice its
/// share): well inside a core's L2 cache.
const STAGES_BYTES: usize = 128 << 10;
/// Stage length bounds: a copy of fewer bytes would gain little over writing entries one by
/// one, and more than a kilobyte gains nothing more.
const STAGE_MIN: usize = 128;
const STAGE_MAX: usize = 1 << 10;

impl Blobs {
    fn new(max_parallelism: usize) -> Blobs {
        Blobs::with_blobs(vec![Vec::new(); max_parallelism])
    }

    fn with_blobs(blobs: Vec<Vec<u8>>) -> Blobs {
        let stage_len = (STAGES_BYTES / blobs.len().max(1)).clamp(STAGE_MIN, STAGE_MAX);
        Blobs {
            stages: vec![Vec::new(); blobs.len()],
            blobs,
            stage_len,
        }
    }

    /// Where to write the next entry of key group `kg`; [`Blobs::settle`] it after.
    fn stage(&mut self, kg: usize) -> &mut Vec<u8> {
        let stage = &mut self.stages[kg];
        if stage.capacity() == 0 {
            // Room for a full stage and the entry that fills it: only an entry larger than a
            // stage makes it grow.
            stage.reserve(2 * self.stage_len);
        }
        stage
    }

    /// Moves key group `kg`'s stage to its blob once it is full.
    fn settle(&mut self, kg: usize) {
        let stage = &mut self.stages[kg];
        if stage.len() >= self.stage_len {
            self.blobs[kg].extend_from_slice(stage);
            stage.clear();
        }
    }

    /// Blobs with room for `counts[kg]` entries in each key group `kg`, at the average size of
    /// the first [`SIZE_SAMPLE`] of `entries` plus an eighth, from `pool`: a blob that grows by
    /// doubling copies itself as it goes and touches twice the memory, which for a million
    /// entries was a fifth of the uploader's time.
    fn sized_for<'a, K: Key, V: Data + 'a>(
        counts: &[usize],
        entries: impl Iterator<Item = (&'a K, &'a V)>,
        names: &Names,
        table_id: u16,
        pool: &BlobPool,
    ) -> Result<Blobs> {
        let mut sample = Vec::new();
        let mut sampled = 0;
        for (k, v) in entries.take(SIZE_SAMPLE) {
            write_entry(&mut sample, k, v, names, table_id)?;
            sampled += 1;
        }
        let per_entry = sample.len().div_ceil(sampled.max(1));
        Ok(Blobs::with_blobs(
            counts
                .iter()
                .map(|&n| match n * per_entry + n * per_entry / 8 {
                    0 => Vec::new(),
                    room => pool.take(room),
                })
                .collect(),
        ))
    }

    /// Appends the blobs, with what their stages still hold, to `groups` (after what earlier
    /// tables wrote there).
    fn append_to(mut self, groups: &mut BTreeMap<u16, Vec<u8>>) {
        for (blob, stage) in self.blobs.iter_mut().zip(&self.stages) {
            blob.extend_from_slice(stage);
        }
        for (kg, blob) in self.blobs.into_iter().enumerate() {
            if !blob.is_empty() {
                let g = groups.entry(kg as u16).or_default();
                if g.is_empty() {
                    *g = blob;
                } else {
                    g.extend_from_slice(&blob);
                }
            }
        }
    }
}

/// The entries of value and list state: one per key.
fn write_values<'a, K: Key, V: Data>(
    entries: impl Iterator<Item = (&'a K, &'a V)>,
    names: &Names,
    table_id: u16,
    groups: &mut BTreeMap<u16, Vec<u8>>,
) -> Result<()> {
    let entries = entries.map(|(k, v)| (key_group(k, names.max_parallelism), k, v));
    let blobs = Blobs::new(names.max_parallelism);
    write_keyed(entries, blobs, names, table_id, groups)
}

/// [`write_values`] of a value or list table, whatever its key layout: a [`TextKey`] encodes
/// and hashes as its `String`, so both write the same entries.
fn write_table<K: Key, V: Data>(
    table: &Table<K, V>,
    names: &Names,
    table_id: u16,
    groups: &mut BTreeMap<u16, Vec<u8>>,
) -> Result<()> {
    match table {
        Table::Keys(m) => write_values(m.iter(), names, table_id, groups),
        Table::Text(m) => write_values(m.iter(), names, table_id, groups),
    }
}

/// A value or list table copied at a barrier (see [`copy_entries`]), for the uploader.
fn freeze_table<K: Key, V: Data>(
    table: &Table<K, V>,
    names: &Arc<Names>,
    table_id: u16,
    buffers: &TableBuffers<K, V>,
) -> Frozen {
    match table {
        Table::Keys(m) => freeze(
            copy_entries(|| m.iter(), Some, m.len(), &buffers.keys),
            names,
            table_id,
            write_entries,
        ),
        Table::Text(m) => freeze(
            copy_entries(|| m.iter(), Some, m.len(), &buffers.text),
            names,
            table_id,
            write_entries,
        ),
    }
}

/// Inserts a restored entry, its key decoded as the table stores it.
fn restore_into<K: Key, V>(
    table: &mut Table<K, V>,
    names: &Names,
    key: &[u8],
    value: V,
) -> Result<()> {
    let (uid, name) = (&names.uid, &names.name);
    table.restore(
        value,
        || decode::<K>(&mut { key }, uid, name),
        || decode::<TextKey>(&mut { key }, uid, name),
    )
}

/// The entries [`copy_entries`] took: one per key. Each key's group is worked out once, here
/// on the uploader's thread, for both passes over the entries.
fn write_entries<K: Key, V: Data>(
    entries: &Entries<K, V>,
    names: &Names,
    table_id: u16,
    groups: &mut BTreeMap<u16, Vec<u8>>,
    pool: &BlobPool,
) -> Result<()> {
    let mp = names.max_parallelism;
    // Each entry's key group, worked out once, and how many entries each group has: the
    // entries are read twice (here and to write them), not three times.
    let mut counts = vec![0usize; mp];
    let key_groups: Vec<u16> = entries
        .iter()
        .flatten()
        .map(|(k, _)| {
            let kg = key_group(k, mp);
            counts[usize::from(kg)] += 1;
            kg
        })
        .collect();
    let blobs = Blobs::sized_for(
        &counts,
        entries.iter().flatten().map(|(k, v)| (k, v)),
        names,
        table_id,
        pool,
    )?;
    let all = entries
        .iter()
        .flatten()
        .zip(&key_groups)
        .map(|((k, v), kg)| (*kg, k, v));
    write_keyed(all, blobs, names, table_id, groups)
}

/// Writes one entry per (key group, key, value) into the key groups' blobs.
fn write_keyed<'a, K: Key, V: Data>(
    entries: impl Iterator<Item = (u16, &'a K, &'a V)>,
    mut blobs: Blobs,
    names: &Names,
    table_id: u16,
    groups: &mut BTreeMap<u16, Vec<u8>>,
) -> Result<()> {
    for (kg, k, v) in entries {
        let kg = usize::from(kg);
        write_entry(blobs.stage(kg), k, v, names, table_id)?;
        blobs.settle(kg);
    }
    blobs.append_to(groups);
    Ok(())
}

fn write_entry<K: Key, V: Data>(
    out: &mut Vec<u8>,
    key: &K,
    value: &V,
    names: &Names,
    table_id: u16,
) -> Result<()> {
    if write_text_count_entry(out, key, value, table_id) {
        return Ok(());
    }
    let (uid, name) = (&names.uid, &names.name);
    begin_entry(out, table_id);
    encode_field(out, uid, name, |o| encode_key(o, key))?;
    encode_field(out, uid, name, |o| bincode::serialize_into(o, value))
}

/// The entry of a text key and a 64-bit integer (a count, a sum: the most common keyed state)
/// written in one go, with the same bytes as the general path: no length filled in afterwards
/// and no trip through serde for the value, which took most of the uploader's time per entry.
/// `false` for any other key or value type.
#[inline]
fn write_text_count_entry<K: 'static, V: 'static>(
    out: &mut Vec<u8>,
    key: &K,
    value: &V,
    table_id: u16,
) -> bool {
    let Some(key) = (key as &dyn Any).downcast_ref::<TextKey>() else {
        return false;
    };
    let value = value as &dyn Any;
    let value = match (value.downcast_ref::<u64>(), value.downcast_ref::<i64>()) {
        (Some(v), _) => v.to_le_bytes(),
        (None, Some(v)) => v.to_le_bytes(),
        (None, None) => return false,
    };
    let text_len = key.as_bytes().len();
    // The key field as `encode_key` writes it: bincode's u64 length, then the bytes.
    let Ok(key_field) = u32::try_from(8 + text_len) else {
        return false;
    };
    out.reserve(2 + 4 + 8 + text_len + 4 + 8);
    begin_entry(out, table_id);
    out.extend_from_slice(&key_field.to_le_bytes());
    key.encode_into(out);
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&value);
    true
}

/// The entries of map state: one per key and user key.
fn write_maps<K: Key, UK: Key, UV: Data>(
    map: &FxHashMap<K, FxHashMap<UK, UV>>,
    names: &Names,
    table_id: u16,
    groups: &mut BTreeMap<u16, Vec<u8>>,
    // Map state's blobs grow as they are written (their sizes are not counted first), so they
    // take no memory from the pool.
    _pool: &BlobPool,
) -> Result<()> {
    let (uid, name) = (&names.uid, &names.name);
    let mut blobs = Blobs::new(names.max_parallelism);
    for (k, inner) in map {
        let kg = key_group(k, names.max_parallelism) as usize;
        for (uk, v) in inner {
            let out = blobs.stage(kg);
            begin_entry(out, table_id);
            encode_field(out, uid, name, |o| {
                bincode::serialize_into(&mut *o, k)?;
                bincode::serialize_into(o, uk)
            })?;
            encode_field(out, uid, name, |o| bincode::serialize_into(o, v))?;
            blobs.settle(kg);
        }
    }
    blobs.append_to(groups);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::READ_AHEAD;

    /// The general path's bytes for one entry.
    fn general_entry<K: Key, V: Data>(key: &K, value: &V, table_id: u16) -> Vec<u8> {
        let mut out = Vec::new();
        begin_entry(&mut out, table_id);
        encode_field(&mut out, "u", "s", |o| encode_key(o, key)).unwrap();
        encode_field(&mut out, "u", "s", |o| bincode::serialize_into(o, value)).unwrap();
        out
    }

    /// A text key with a `u64` or `i64` goes the short way, byte for byte as the general path
    /// writes it (and as a `String` key is written); other types go the general way.
    #[test]
    fn text_count_entries_are_written_as_the_general_path_writes_them() {
        let long = "a key longer than the twenty-two bytes stored inline";
        for text in ["", "a", "word-123", "twenty-two bytes, inl.", long, "ünï"] {
            let key = TextKey::new(text.as_bytes());
            for (u, i) in [
                (0u64, 0i64),
                (1, -1),
                (u64::MAX, i64::MIN),
                (12_345, i64::MAX),
            ] {
                let mut fast = Vec::new();
                assert!(write_text_count_entry(&mut fast, &key, &u, 7));
                assert_eq!(fast, general_entry(&key, &u, 7), "{text:?} {u}");
                assert_eq!(
                    fast,
                    general_entry(&text.to_string(), &u, 7),
                    "{text:?} {u}"
                );
                fast.clear();
                assert!(write_text_count_entry(&mut fast, &key, &i, 300));
                assert_eq!(fast, general_entry(&key, &i, 300), "{text:?} {i}");
            }
        }
        let key = TextKey::new(b"k");
        let mut out = Vec::new();
        assert!(!write_text_count_entry(&mut out, &key, &1u32, 1));
        assert!(!write_text_count_entry(
            &mut out,
            &"k".to_string(),
            &1u64,
            1
        ));
        assert!(out.is_empty());
    }

    /// Every entry is copied once, with its key and value, whatever the count's remainder by
    /// [`READ_AHEAD`], for keys with and without allocations of their own, by one thread or
    /// split between two; also when the count given is only an upper bound (a filtered table).
    #[test]
    fn copied_entries_are_the_maps_with_their_key_groups() {
        let split = SPLIT_COPY_MIN;
        // Shared by every round: each copy reuses the buffers of the one before, emptied.
        let string_buffers = TableBuffers::<String, u64>::new().keys;
        let number_buffers = TableBuffers::<u64, Vec<u32>>::new().keys;
        for n in [
            0,
            1,
            READ_AHEAD - 1,
            READ_AHEAD,
            READ_AHEAD + 1,
            1000,
            split,
            3 * split + 5,
            7,
        ] {
            let strings: FxHashMap<String, u64> =
                (0..n as u64).map(|i| (format!("key{i}"), i)).collect();
            let numbers: FxHashMap<u64, Vec<u32>> =
                (0..n as u64).map(|i| (i * 7, vec![i as u32])).collect();
            let copy = copy_entries(|| strings.iter(), Some, n, &string_buffers);
            assert_eq!(copy.len(), if n < split { 1 } else { 2 });
            let copy: Vec<_> = copy.iter().flatten().cloned().collect();
            assert_eq!(copy.len(), n);
            let back: FxHashMap<String, u64> = copy.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(back, strings);
            let copy: Vec<_> = copy_entries(|| numbers.iter(), Some, n, &number_buffers)
                .iter()
                .flatten()
                .cloned()
                .collect();
            assert_eq!(copy.len(), n);
            assert!(copy.iter().all(|(k, v)| numbers[k] == *v));
            // Every third entry filtered out, the count given still `n`.
            let kept = || numbers.iter().filter(|(k, _)| *k % 3 != 0);
            let copy: Vec<_> = copy_entries(
                || numbers.iter(),
                |(k, v)| (*k % 3 != 0).then_some((k, v)),
                n,
                &number_buffers,
            )
            .iter()
            .flatten()
            .cloned()
            .collect();
            assert_eq!(copy.len(), kept().count());
            let copied: FxHashMap<u64, Vec<u32>> = copy.into_iter().collect();
            assert_eq!(copied, kept().map(|(k, v)| (*k, v.clone())).collect());
        }
    }

    /// Staged writing gives each key group exactly the bytes written straight to its blob, in
    /// the same order: for entries much smaller than a stage and larger than one, for few and
    /// many key groups (short and long stages), and behind what an earlier table wrote there.
    #[test]
    fn staged_blobs_hold_their_entries_in_order() {
        for max_parallelism in [1, 128, 4096] {
            let mut blobs = Blobs::new(max_parallelism);
            let mut expected: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
            expected.insert(0, b"earlier table".to_vec());
            let mut groups = expected.clone();
            // A fixed pseudo-random walk over key groups and entry sizes.
            let mut x = 0x2545_f491_4f6c_dd1du64;
            for i in 0..20_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let kg = (x % max_parallelism as u64) as usize;
                let len = if i % 97 == 0 {
                    3000
                } else {
                    1 + (x >> 32) as usize % 60
                };
                let entry: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
                blobs.stage(kg).extend_from_slice(&entry);
                blobs.settle(kg);
                expected
                    .entry(kg as u16)
                    .or_default()
                    .extend_from_slice(&entry);
            }
            blobs.append_to(&mut groups);
            assert_eq!(groups, expected, "max parallelism {max_parallelism}");
        }
    }
}
