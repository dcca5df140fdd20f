//! The state an operator subtask hands over at a barrier, and gets back on restore.
//!
//! Keyed state is stored per key group in one canonical byte format shared by every backend
//! (so a savepoint taken on the heap backend restores into RocksDB and back), and can be split
//! or merged when parallelism changes. Operator (non-keyed) state is a named list of items that
//! is either split among the new subtasks or given whole to each of them.
//!
//! A RocksDB checkpoint (full or incremental) or native savepoint ([`SavepointFormat::Native`])
//! carries the database itself instead ([`NativeState`]): the heap-held part (timers) stays in
//! `groups`, the rest is in the native directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use sluice_core::KeyGroupRange;
use sluice_hdfs_backend::{NativeFile, StateBuf};

use crate::blob_pool::BlobPool;

/// Key-group blobs at least this long go into a state file from their own memory (see
/// [`OperatorSnapshot::into_state_buf`]); shorter ones are cheaper copied than written apart.
pub const SHARED_BLOB_MIN: usize = 16 << 10;

/// The format of a savepoint, Flink's `SavepointFormatType` (`--type`, REST `formatType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SavepointFormat {
    /// Key-group blobs every backend reads: restores into any backend and parallelism.
    #[default]
    Canonical,
    /// The state backend's own files (RocksDB's SST files, copied): about a file copy to take
    /// and restore. Restores at any parallelism; at another one, or into the heap backend,
    /// the key groups are read out of the files (slower). On the heap backend it is canonical.
    Native,
}

impl SavepointFormat {
    /// `CANONICAL` / `NATIVE`, as Flink's REST API spells them.
    pub fn as_str(self) -> &'static str {
        match self {
            SavepointFormat::Canonical => "CANONICAL",
            SavepointFormat::Native => "NATIVE",
        }
    }
}

impl std::str::FromStr for SavepointFormat {
    type Err = String;

    /// Case-insensitive, as Flink's CLI accepts `--type native`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "CANONICAL" => Ok(SavepointFormat::Canonical),
            "NATIVE" => Ok(SavepointFormat::Native),
            _ => Err(format!(
                "'{s}' is not a savepoint format: use CANONICAL or NATIVE"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Redistribution {
    /// Items are dealt out among the new subtasks (Flink's even-split list state).
    Split,
    /// Every new subtask receives every item (Flink's union list state).
    Union,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorStateEntry {
    pub name: String,
    pub mode: Redistribution,
    pub items: Vec<Vec<u8>>,
}

/// Keyed state of one subtask: the names of its state tables, and for each key group a blob of
/// entries `[u16 table][u32 len][key][u32 len][value]`, keys and values in bincode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyedSnapshot {
    pub tables: Vec<String>,
    #[serde(with = "blobs")]
    pub groups: BTreeMap<u16, Vec<u8>>,
    /// RocksDB directories holding (more of) this state; never serialised: the uploader stores
    /// their files and describes them in an [`IncrementalMeta`].
    #[serde(skip)]
    pub native: Vec<NativeState>,
    /// Heap tables frozen at the barrier, not yet in `groups`; never serialised: the uploader
    /// encodes them ([`KeyedSnapshot::encode_frozen`]) before it stores anything.
    #[serde(skip)]
    pub frozen: Vec<Frozen>,
}

/// A heap table as it was at a barrier (a copy the task took there), for the uploader to
/// encode: the copy costs the task far less than encoding the entries.
pub trait FrozenTable: Send + Sync {
    /// Appends the table's entries to their key groups' blobs, as
    /// [`write_entry`] lays them out.
    /// Blobs whose size it knows beforehand take their memory from `pool`.
    fn write_into(
        &self,
        groups: &mut BTreeMap<u16, Vec<u8>>,
        pool: &BlobPool,
    ) -> sluice_core::Result<()>;
}

/// A [`FrozenTable`] in a snapshot.
#[derive(Clone)]
pub struct Frozen(pub Arc<dyn FrozenTable>);

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Frozen(..)")
    }
}

impl PartialEq for Frozen {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A local directory that is deleted when the last reference to it goes.
#[derive(Debug)]
pub struct LocalDir(pub PathBuf);

impl Drop for LocalDir {
    fn drop(&mut self) {
        let _ignored = std::fs::remove_dir_all(&self.0);
    }
}

/// A RocksDB database in its own files: at a checkpoint the local RocksDB checkpoint (hard
/// links) waiting for upload; on restore the downloaded files waiting to be opened.
#[derive(Debug, Clone)]
pub struct NativeState {
    pub dir: Arc<LocalDir>,
    /// Unique id of the database instance the files belong to (hex, no '-').
    pub instance: String,
    /// The key groups the database holds.
    pub range: KeyGroupRange,
    /// The state names; an entry's state id is the position of its name here.
    pub tables: Vec<String>,
    /// The job directory URL and shared files the SST files were downloaded from: a checkpoint
    /// of that job directory references them instead of uploading them again.
    pub inherited: Option<(String, Vec<NativeFile>)>,
    /// `state.backend.incremental`: SST files are stored once and shared by later checkpoints;
    /// otherwise every checkpoint stores all its files.
    pub incremental: bool,
    /// For a native savepoint: every file is copied into the savepoint directory (never
    /// hard-linked to the live database, never in the job's `shared/`), so the savepoint is
    /// self-contained and owned by the user.
    pub savepoint: bool,
    /// Stored in the canonical form instead (key-group blobs, one file or inline): a small
    /// full checkpoint or a canonical savepoint. The task only links the database's files at
    /// the barrier; the uploader reads the entries out of them
    /// ([`crate::incremental::read_out_native`]), so the scan no longer stalls the records.
    pub canonical: bool,
    /// Set when the files are written after the barrier, off the task's thread: readers wait
    /// for it ([`NativeState::wait_ready`]).
    pub ready: Option<Arc<Ready>>,
}

impl NativeState {
    /// Waits until the directory holds the files (at once unless they are written in the
    /// background); fails if writing them failed.
    pub fn wait_ready(&self) -> Result<(), String> {
        self.ready.as_ref().map_or(Ok(()), |r| r.wait())
    }
}

/// The outcome of work that fills a [`NativeState`]'s directory after the barrier.
#[derive(Debug, Default)]
pub struct Ready {
    result: Mutex<Option<Result<(), String>>>,
    done: Condvar,
}

impl Ready {
    pub fn set(&self, result: Result<(), String>) {
        *self.result.lock() = Some(result);
        self.done.notify_all();
    }

    pub fn wait(&self) -> Result<(), String> {
        let mut r = self.result.lock();
        loop {
            if let Some(result) = &*r {
                return result.clone();
            }
            self.done.wait(&mut r);
        }
    }
}

impl PartialEq for NativeState {
    fn eq(&self, other: &Self) -> bool {
        self.dir.0 == other.dir.0 && self.instance == other.instance && self.range == other.range
    }
}

/// What `StateHandle::Incremental::meta` holds: the operator snapshot (heap-held keyed state
/// and operator state) and what the database files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncrementalMeta {
    pub snapshot: OperatorSnapshot,
    pub instance: String,
    pub range: KeyGroupRange,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorSnapshot {
    pub operator_state: Vec<OperatorStateEntry>,
    pub keyed: Option<KeyedSnapshot>,
}

impl OperatorSnapshot {
    pub fn is_empty(&self) -> bool {
        self.operator_state.is_empty()
            && self
                .keyed
                .as_ref()
                .is_none_or(|k| k.groups.is_empty() && k.native.is_empty() && k.frozen.is_empty())
    }

    pub fn with_operator_state(
        mut self,
        name: &str,
        mode: Redistribution,
        items: Vec<Vec<u8>>,
    ) -> Self {
        self.operator_state.push(OperatorStateEntry {
            name: name.to_string(),
            mode,
            items,
        });
        self
    }

    /// The snapshot serialized exactly as `bincode::serialize` lays it out, in a buffer a state
    /// file is written from: key-group blobs of at least [`SHARED_BLOB_MIN`] bytes go in by
    /// reference ([`StateBuf::append_shared`]), not copied, and their memory goes to `pool`
    /// once the buffer is dropped.
    pub fn into_state_buf(mut self, pool: &Arc<BlobPool>) -> bincode::Result<StateBuf> {
        let groups = self
            .keyed
            .as_mut()
            .map(|k| std::mem::take(&mut k.groups))
            .unwrap_or_default();
        let mut out = StateBuf::with_capacity(bincode::serialized_size(&self)? as usize);
        bincode::serialize_into(&mut out, &self)?;
        if groups.is_empty() {
            return Ok(out);
        }
        // `groups` is the last field serialized (the last of `KeyedSnapshot`, itself the last of
        // `OperatorSnapshot`), so the bytes end with its length: 0, a `u64`. The entries follow
        // it as bincode writes a map of `u16` to byte strings.
        out.truncate(out.len() - 8);
        out.write_all(&(groups.len() as u64).to_le_bytes())?;
        for (kg, blob) in groups {
            out.write_all(&kg.to_le_bytes())?;
            out.write_all(&(blob.len() as u64).to_le_bytes())?;
            if blob.len() >= SHARED_BLOB_MIN {
                out.append_shared(pool.shared(blob));
            } else {
                out.write_all(&blob)?;
            }
        }
        Ok(out)
    }

    pub fn operator_state(&self, name: &str) -> Option<&OperatorStateEntry> {
        self.operator_state.iter().find(|e| e.name == name)
    }

    /// The state subtask `index` of `parallelism` gets from the snapshots of all old subtasks.
    pub fn redistribute(
        old: &[OperatorSnapshot],
        max_parallelism: usize,
        parallelism: usize,
        index: usize,
    ) -> OperatorSnapshot {
        let range = KeyGroupRange::for_subtask(max_parallelism, parallelism, index);
        let mut out = OperatorSnapshot::default();
        // Keyed: take the key groups in our range, from whichever old subtask had them.
        let mut keyed: Option<KeyedSnapshot> = None;
        for snap in old {
            if let Some(k) = &snap.keyed {
                let dst = keyed.get_or_insert_with(|| KeyedSnapshot {
                    tables: k.tables.clone(),
                    ..KeyedSnapshot::default()
                });
                dst.native.extend(
                    k.native
                        .iter()
                        .filter(|n| n.range.start < range.end && range.start < n.range.end)
                        .cloned(),
                );
                let remap = remap_tables(&mut dst.tables, &k.tables);
                for (&kg, blob) in k.groups.range(range.start..range.end) {
                    let blob = if remap.iter().enumerate().all(|(i, &j)| i == j as usize) {
                        blob.clone()
                    } else {
                        rewrite_table_ids(blob, &remap)
                    };
                    dst.groups.entry(kg).or_default().extend_from_slice(&blob);
                }
            }
        }
        out.keyed = keyed;
        // Operator state: union or round-robin split, by name.
        let mut names: Vec<(String, Redistribution)> = Vec::new();
        for snap in old {
            for e in &snap.operator_state {
                if !names.iter().any(|(n, _)| n == &e.name) {
                    names.push((e.name.clone(), e.mode));
                }
            }
        }
        for (name, mode) in names {
            let all: Vec<&Vec<u8>> = old
                .iter()
                .filter_map(|s| s.operator_state(&name))
                .flat_map(|e| e.items.iter())
                .collect();
            let items = match mode {
                Redistribution::Union => all.into_iter().cloned().collect(),
                Redistribution::Split => all
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| i % parallelism == index)
                    .map(|(_, v)| v.clone())
                    .collect(),
            };
            out.operator_state
                .push(OperatorStateEntry { name, mode, items });
        }
        out
    }
}

/// Maps table ids of `src` onto `dst`, appending names `dst` lacks.
pub(crate) fn remap_tables(dst: &mut Vec<String>, src: &[String]) -> Vec<u16> {
    src.iter()
        .map(|name| match dst.iter().position(|n| n == name) {
            Some(i) => i as u16,
            None => {
                dst.push(name.clone());
                (dst.len() - 1) as u16
            }
        })
        .collect()
}

impl KeyedSnapshot {
    /// Encodes the frozen tables into `groups` (the uploader does, off the task's thread),
    /// then drops the key groups left empty.
    pub fn encode_frozen(&mut self, pool: &BlobPool) -> sluice_core::Result<()> {
        for f in std::mem::take(&mut self.frozen) {
            f.0.write_into(&mut self.groups, pool)?;
        }
        self.groups.retain(|_, b| !b.is_empty());
        Ok(())
    }

    /// Appends `groups`, whose state ids index `tables`, remapping ids onto `self.tables`.
    pub fn merge_groups(&mut self, tables: &[String], groups: BTreeMap<u16, Vec<u8>>) {
        let remap = remap_tables(&mut self.tables, tables);
        for (kg, blob) in groups {
            let blob = if remap.iter().enumerate().all(|(i, &j)| i == j as usize) {
                blob
            } else {
                rewrite_table_ids(&blob, &remap)
            };
            self.groups.entry(kg).or_default().extend_from_slice(&blob);
        }
    }
}

pub(crate) fn rewrite_table_ids(blob: &[u8], remap: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blob.len());
    for (table, key, value) in EntryIter::new(blob) {
        write_entry(&mut out, remap[table as usize], key, value);
    }
    out
}

/// Appends one entry to a key-group blob.
#[inline]
pub fn write_entry(out: &mut Vec<u8>, table: u16, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&table.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

/// Iterates the entries of a key-group blob; stops at the first malformed entry.
pub struct EntryIter<'a> {
    rest: &'a [u8],
}

impl<'a> EntryIter<'a> {
    pub fn new(blob: &'a [u8]) -> Self {
        EntryIter { rest: blob }
    }
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = (u16, &'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let r = self.rest;
        if r.len() < 6 {
            return None;
        }
        let table = u16::from_le_bytes([r[0], r[1]]);
        let kl = u32::from_le_bytes(r[2..6].try_into().ok()?) as usize;
        let key = r.get(6..6 + kl)?;
        let vs = 6 + kl;
        let vl = u32::from_le_bytes(r.get(vs..vs + 4)?.try_into().ok()?) as usize;
        let value = r.get(vs + 4..vs + 4 + vl)?;
        self.rest = &r[vs + 4 + vl..];
        Some((table, key, value))
    }
}

/// Key-group blobs as byte strings: in bincode the same bytes as a sequence of `u8` (length,
/// then the bytes), so older snapshots read the same, but written and read in one piece instead
/// of byte by byte (which made the blobs' encoding a large part of a canonical savepoint).
mod blobs {
    use std::collections::BTreeMap;

    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::{Deserialize, Serialize, Serializer};

    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub fn serialize<S: Serializer>(
        groups: &BTreeMap<u16, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(groups.iter().map(|(k, v)| (k, Bytes(v))))
    }

    struct ByteBuf(Vec<u8>);

    impl<'de> Deserialize<'de> for ByteBuf {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_byte_buf(BufVisitor)
        }
    }

    struct BufVisitor;

    impl<'de> Visitor<'de> for BufVisitor {
        type Value = ByteBuf;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a key-group blob")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<ByteBuf, E> {
            Ok(ByteBuf(v.to_vec()))
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
            Ok(ByteBuf(v))
        }

        /// Formats without byte strings (JSON) write a sequence of numbers.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(ByteBuf(out))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u16, Vec<u8>>, D::Error> {
        let groups = BTreeMap::<u16, ByteBuf>::deserialize(d)?;
        Ok(groups.into_iter().map(|(kg, b)| (kg, b.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot written through [`OperatorSnapshot::into_state_buf`] is the bytes bincode
    /// writes for it, whatever its blobs' sizes, and decodes back to it.
    #[test]
    fn state_buf_holds_the_bincode_of_the_snapshot() {
        let big: Vec<u8> = (0..SHARED_BLOB_MIN as u32 * 3)
            .map(|i| (i % 249) as u8)
            .collect();
        let keyed = |groups: BTreeMap<u16, Vec<u8>>| KeyedSnapshot {
            tables: vec!["count".into(), "seen".into()],
            groups,
            ..KeyedSnapshot::default()
        };
        let cases = [
            OperatorSnapshot::default(),
            OperatorSnapshot::default().with_operator_state(
                "offsets",
                Redistribution::Split,
                vec![vec![1, 2], vec![3]],
            ),
            OperatorSnapshot {
                keyed: Some(keyed(BTreeMap::new())),
                ..OperatorSnapshot::default()
            },
            OperatorSnapshot {
                keyed: Some(keyed(
                    [
                        (0u16, vec![9u8; 10]),
                        (1, big.clone()),
                        (2, big[..SHARED_BLOB_MIN].to_vec()),
                        (7, vec![5u8; SHARED_BLOB_MIN - 1]),
                        (127, big.clone()),
                        (4000, vec![1]),
                    ]
                    .into(),
                )),
                ..OperatorSnapshot::default()
            }
            .with_operator_state("u", Redistribution::Union, vec![vec![7; 40]]),
        ];
        for snap in cases {
            let expected = bincode::serialize(&snap).unwrap();
            let buf = snap.clone().into_state_buf(&BlobPool::new()).unwrap();
            assert_eq!(buf.len(), expected.len());
            let bytes = buf.into_vec();
            assert!(bytes == expected, "{snap:?}");
            let back: OperatorSnapshot = bincode::deserialize(&bytes).unwrap();
            assert_eq!(back, snap);
        }
    }

    /// The blobs' encoding is the one of a plain `BTreeMap<u16, Vec<u8>>`: snapshots written
    /// before it changed still decode, and the other way round.
    #[test]
    fn key_group_blobs_encode_as_before() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Plain {
            tables: Vec<String>,
            groups: BTreeMap<u16, Vec<u8>>,
        }
        let plain = Plain {
            tables: vec!["a".into(), "b".into()],
            groups: [
                (3u16, vec![1u8, 2, 255]),
                (90, Vec::new()),
                (7, vec![0; 300]),
            ]
            .into_iter()
            .collect(),
        };
        let keyed = KeyedSnapshot {
            tables: plain.tables.clone(),
            groups: plain.groups.clone(),
            ..KeyedSnapshot::default()
        };
        let old = bincode::serialize(&plain).unwrap();
        assert_eq!(bincode::serialize(&keyed).unwrap(), old);
        assert_eq!(bincode::deserialize::<KeyedSnapshot>(&old).unwrap(), keyed);
        let json = serde_json::to_string(&keyed).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        assert_eq!(serde_json::from_str::<KeyedSnapshot>(&json).unwrap(), keyed);
    }

    #[test]
    fn redistribute_splits_key_groups_and_operator_state() {
        let mut a = KeyedSnapshot {
            tables: vec!["count".into()],
            ..KeyedSnapshot::default()
        };
        for kg in 0..64u16 {
            let mut blob = Vec::new();
            write_entry(&mut blob, 0, &[kg as u8], &[1]);
            a.groups.insert(kg, blob);
        }
        let mut b = KeyedSnapshot {
            tables: vec!["other".into(), "count".into()],
            ..KeyedSnapshot::default()
        };
        for kg in 64..128u16 {
            let mut blob = Vec::new();
            write_entry(&mut blob, 1, &[kg as u8], &[2]);
            b.groups.insert(kg, blob);
        }
        let old = vec![
            OperatorSnapshot {
                keyed: Some(a),
                operator_state: vec![],
            }
            .with_operator_state("pos", Redistribution::Split, vec![vec![0], vec![1]]),
            OperatorSnapshot {
                keyed: Some(b),
                operator_state: vec![],
            }
            .with_operator_state("pos", Redistribution::Split, vec![vec![2]]),
        ];
        let mut seen = 0;
        let mut items = 0;
        for i in 0..3 {
            let s = OperatorSnapshot::redistribute(&old, 128, 3, i);
            let k = s.keyed.as_ref().unwrap();
            let range = KeyGroupRange::for_subtask(128, 3, i);
            for (kg, blob) in &k.groups {
                assert!(range.contains(*kg));
                for (t, key, _) in EntryIter::new(blob) {
                    assert_eq!(k.tables[t as usize], "count");
                    assert_eq!(key, &[*kg as u8]);
                    seen += 1;
                }
            }
            items += s.operator_state("pos").unwrap().items.len();
        }
        assert_eq!(seen, 128);
        assert_eq!(items, 3);
    }
}
