//! The map behind heap value and list state and the RocksDB backend's write-back caches: keyed
//! by the state's key type, except that `String` keys are stored as [`TextKey`]s (short ones
//! inline in the map's entries).

use std::any::{Any, TypeId};

use rustc_hash::{FxBuildHasher, FxHashMap};

use super::text_key::{TextKey, TextRef};
use crate::key::Key;

type TextMap<V> = hashbrown::HashMap<TextKey, V, FxBuildHasher>;

/// One value per key. The variant is fixed by `K` when the table is made: `Text` exactly when
/// `K` is `String`.
pub(super) enum Table<K, V> {
    Keys(FxHashMap<K, V>),
    Text(TextMap<V>),
}

/// The bytes of a `String` key, for a `Text` table (whose `K` is `String`).
#[inline]
fn text_of<K: Key>(key: &K) -> TextRef<'_> {
    match (key as &dyn Any).downcast_ref::<String>() {
        Some(s) => TextRef(s.as_bytes()),
        None => unreachable!("a text table's keys are Strings"),
    }
}

impl<K: Key, V> Table<K, V> {
    pub(super) fn new() -> Self {
        if TypeId::of::<K>() == TypeId::of::<String>() {
            Table::Text(TextMap::default())
        } else {
            Table::Keys(FxHashMap::default())
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Table::Keys(m) => m.len(),
            Table::Text(m) => m.len(),
        }
    }

    pub(super) fn clear(&mut self) {
        match self {
            Table::Keys(m) => m.clear(),
            Table::Text(m) => m.clear(),
        }
    }

    #[inline]
    pub(super) fn get(&self, key: &K) -> Option<&V> {
        match self {
            Table::Keys(m) => m.get(key),
            Table::Text(m) => m.get(&text_of(key)),
        }
    }

    #[inline]
    pub(super) fn contains_key(&self, key: &K) -> bool {
        match self {
            Table::Keys(m) => m.contains_key(key),
            Table::Text(m) => m.contains_key(&text_of(key)),
        }
    }

    #[inline]
    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        match self {
            Table::Keys(m) => m.get_mut(key),
            Table::Text(m) => m.get_mut(&text_of(key)),
        }
    }

    /// Inserts a copy of `key`; the caller found it absent.
    #[inline]
    pub(super) fn insert(&mut self, key: &K, value: V) {
        match self {
            Table::Keys(m) => {
                m.insert(key.clone(), value);
            }
            Table::Text(m) => {
                m.insert(TextKey::new(text_of(key).0), value);
            }
        }
    }

    /// [`Table::insert`] of a key the caller owns: moved in where the table stores `K`.
    pub(super) fn insert_owned(&mut self, key: K, value: V) {
        match self {
            Table::Keys(m) => {
                m.insert(key, value);
            }
            Table::Text(m) => {
                m.insert(TextKey::new(text_of(&key).0), value);
            }
        }
    }

    pub(super) fn remove(&mut self, key: &K) {
        match self {
            Table::Keys(m) => {
                m.remove(key);
            }
            Table::Text(m) => {
                m.remove(&text_of(key));
            }
        }
    }

    /// Inserts a restored entry: `key` decoded as the table stores it.
    pub(super) fn restore(
        &mut self,
        value: V,
        key: impl FnOnce() -> sluice_core::Result<K>,
        text: impl FnOnce() -> sluice_core::Result<TextKey>,
    ) -> sluice_core::Result<()> {
        match self {
            Table::Keys(m) => {
                m.insert(key()?, value);
            }
            Table::Text(m) => {
                m.insert(text()?, value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `String` keys go to a text table, every other key type to a map of its own type; both
    /// find, change and remove what they hold.
    #[test]
    fn a_table_holds_its_keys_whatever_their_layout() {
        let mut text: Table<String, u64> = Table::new();
        assert!(matches!(text, Table::Text(_)));
        let mut ids: Table<u64, u64> = Table::new();
        assert!(matches!(ids, Table::Keys(_)));
        let long = "k".repeat(40);
        text.insert_owned("owned".to_string(), 7);
        assert_eq!(text.get(&"owned".to_string()), Some(&7));
        text.remove(&"owned".to_string());
        for (i, k) in ["a", "alpha12345", long.as_str()].iter().enumerate() {
            let k = k.to_string();
            assert!(!text.contains_key(&k));
            text.insert(&k, i as u64);
            *text.get_mut(&k).unwrap() += 10;
            assert_eq!(text.get(&k), Some(&(i as u64 + 10)));
            ids.insert_owned(i as u64, i as u64);
        }
        text.remove(&"a".to_string());
        ids.remove(&0);
        assert_eq!(text.get(&"a".to_string()), None);
        assert_eq!(text.get(&long), Some(&12));
        assert!(ids.get(&0).is_none() && ids.get(&2) == Some(&2));
        assert_eq!((text.len(), ids.len()), (2, 2));
        text.clear();
        assert_eq!(text.len(), 0);
        assert_eq!(text.get(&long), None);
    }
}
