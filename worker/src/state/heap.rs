//! The `hashmap` backend: typed hash maps on the heap, serialised only at snapshot time.

use std::cell::RefCell;
use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use sluice_core::Result;

use super::{StateTable, decode, encode, key_group};
use crate::data::Data;
use crate::key::Key;
use crate::snapshot::write_entry;

struct Names {
    name: String,
    uid: String,
    max_parallelism: usize,
}

impl Names {
    fn new(name: &str, uid: &str, max_parallelism: usize) -> Self {
        Names {
            name: name.to_string(),
            uid: uid.to_string(),
            max_parallelism,
        }
    }
}

pub struct HeapValue<K, V> {
    names: Names,
    map: RefCell<FxHashMap<K, V>>,
}

impl<K: Key, V: Data> HeapValue<K, V> {
    pub(super) fn new(name: &str, uid: &str, max_parallelism: usize) -> Self {
        HeapValue {
            names: Names::new(name, uid, max_parallelism),
            map: RefCell::new(FxHashMap::default()),
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<V> {
        self.map.borrow().get(key).cloned()
    }

    pub(super) fn put(&self, key: &K, value: V) {
        let mut m = self.map.borrow_mut();
        match m.get_mut(key) {
            Some(v) => *v = value,
            None => {
                m.insert(key.clone(), value);
            }
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
                m.insert(key.clone(), value.clone());
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
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        for (k, v) in self.map.borrow().iter() {
            kb.clear();
            vb.clear();
            encode(k, &mut kb, &self.names.uid, &self.names.name)?;
            encode(v, &mut vb, &self.names.uid, &self.names.name)?;
            let kg = key_group(k, self.names.max_parallelism);
            write_entry(groups.entry(kg).or_default(), table_id, &kb, &vb);
        }
        Ok(())
    }

    fn restore_entry(&self, _kg: u16, mut key: &[u8], mut value: &[u8]) -> Result<()> {
        let k: K = decode(&mut key, &self.names.uid, &self.names.name)?;
        let v: V = decode(&mut value, &self.names.uid, &self.names.name)?;
        self.map.borrow_mut().insert(k, v);
        Ok(())
    }
}

pub struct HeapMap<K, UK, UV> {
    names: Names,
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
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        for (k, inner) in self.map.borrow().iter() {
            let kg = key_group(k, self.names.max_parallelism);
            for (uk, v) in inner {
                kb.clear();
                vb.clear();
                encode(k, &mut kb, &self.names.uid, &self.names.name)?;
                encode(uk, &mut kb, &self.names.uid, &self.names.name)?;
                encode(v, &mut vb, &self.names.uid, &self.names.name)?;
                write_entry(groups.entry(kg).or_default(), table_id, &kb, &vb);
            }
        }
        Ok(())
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
    names: Names,
    map: RefCell<FxHashMap<K, Vec<V>>>,
}

impl<K: Key, V: Data> HeapList<K, V> {
    pub(super) fn new(name: &str, uid: &str, max_parallelism: usize) -> Self {
        HeapList {
            names: Names::new(name, uid, max_parallelism),
            map: RefCell::new(FxHashMap::default()),
        }
    }

    pub(super) fn add(&self, key: &K, value: V) {
        let mut m = self.map.borrow_mut();
        match m.get_mut(key) {
            Some(l) => l.push(value),
            None => {
                m.insert(key.clone(), vec![value]);
            }
        }
    }

    pub(super) fn get(&self, key: &K) -> Vec<V> {
        self.map.borrow().get(key).cloned().unwrap_or_default()
    }

    pub(super) fn update(&self, key: &K, values: Vec<V>) {
        let mut m = self.map.borrow_mut();
        if values.is_empty() {
            m.remove(key);
        } else {
            m.insert(key.clone(), values);
        }
    }
}

impl<K: Key, V: Data> StateTable for HeapList<K, V> {
    fn name(&self) -> &str {
        &self.names.name
    }

    fn snapshot_into(&self, table_id: u16, groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()> {
        let (mut kb, mut vb) = (Vec::new(), Vec::new());
        for (k, l) in self.map.borrow().iter() {
            kb.clear();
            vb.clear();
            encode(k, &mut kb, &self.names.uid, &self.names.name)?;
            encode(l, &mut vb, &self.names.uid, &self.names.name)?;
            let kg = key_group(k, self.names.max_parallelism);
            write_entry(groups.entry(kg).or_default(), table_id, &kb, &vb);
        }
        Ok(())
    }

    fn restore_entry(&self, _kg: u16, mut key: &[u8], mut value: &[u8]) -> Result<()> {
        let k: K = decode(&mut key, &self.names.uid, &self.names.name)?;
        let v: Vec<V> = decode(&mut value, &self.names.uid, &self.names.name)?;
        self.map.borrow_mut().insert(k, v);
        Ok(())
    }
}
