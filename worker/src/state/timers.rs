//! Per-key timers of keyed operators. They are keyed state: snapshotted per key group and
//! redistributed with the keys on rescale. Kept on the heap for every backend.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;
use std::rc::Rc;

use sluice_core::Result;

use super::{StateTable, decode, encode, key_group};
use crate::key::Key;
use crate::snapshot::write_entry;

/// Timers ordered by time; the key is stored serialised so any key type can be ordered.
pub struct TimerTable {
    name: String,
    uid: String,
    max_parallelism: usize,
    timers: RefCell<BTreeSet<(i64, u16, Vec<u8>)>>,
}

impl TimerTable {
    pub(super) fn new(name: &str, uid: &str, max_parallelism: usize) -> Self {
        TimerTable {
            name: name.to_string(),
            uid: uid.to_string(),
            max_parallelism,
            timers: RefCell::new(BTreeSet::new()),
        }
    }
}

impl StateTable for TimerTable {
    fn name(&self) -> &str {
        &self.name
    }

    fn snapshot_into(&self, table_id: u16, groups: &mut BTreeMap<u16, Vec<u8>>) -> Result<()> {
        for (ts, kg, key) in self.timers.borrow().iter() {
            write_entry(
                groups.entry(*kg).or_default(),
                table_id,
                key,
                &ts.to_le_bytes(),
            );
        }
        Ok(())
    }

    fn restore_entry(&self, kg: u16, key: &[u8], value: &[u8]) -> Result<()> {
        let mut v = value;
        let ts: i64 = decode(&mut v, &self.uid, &self.name).or_else(|_| {
            value
                .try_into()
                .map(i64::from_le_bytes)
                .map_err(|_| sluice_core::SluiceError::State {
                    uid: self.uid.clone(),
                    state: self.name.clone(),
                    message: "timer entry is not an 8-byte timestamp".into(),
                })
        })?;
        self.timers.borrow_mut().insert((ts, kg, key.to_vec()));
        Ok(())
    }
}

/// Typed access to one timer table.
pub struct TimerService<K> {
    table: Rc<TimerTable>,
    scratch: RefCell<Vec<u8>>,
    _key: PhantomData<K>,
}

impl<K: Key> TimerService<K> {
    pub(super) fn new(table: Rc<TimerTable>) -> Self {
        TimerService {
            table,
            scratch: RefCell::new(Vec::new()),
            _key: PhantomData,
        }
    }

    /// Registers a timer for `key` at `ts`; registering the same one twice keeps one.
    pub fn register(&self, key: &K, ts: i64) -> Result<()> {
        let mut kb = self.scratch.borrow_mut();
        kb.clear();
        encode(key, &mut kb, &self.table.uid, &self.table.name)?;
        let kg = key_group(key, self.table.max_parallelism);
        self.table.timers.borrow_mut().insert((ts, kg, kb.clone()));
        Ok(())
    }

    pub fn delete(&self, key: &K, ts: i64) -> Result<()> {
        let mut kb = Vec::new();
        encode(key, &mut kb, &self.table.uid, &self.table.name)?;
        let kg = key_group(key, self.table.max_parallelism);
        self.table.timers.borrow_mut().remove(&(ts, kg, kb));
        Ok(())
    }

    /// Removes and returns the earliest timer at or before `up_to`, if any.
    pub fn pop_due(&self, up_to: i64) -> Result<Option<(i64, K)>> {
        let mut t = self.table.timers.borrow_mut();
        match t.first() {
            Some((ts, _, _)) if *ts <= up_to => {
                let (ts, _, kb) = t.pop_first().expect("first exists");
                let mut s = kb.as_slice();
                let key = decode(&mut s, &self.table.uid, &self.table.name)?;
                Ok(Some((ts, key)))
            }
            _ => Ok(None),
        }
    }

    /// The earliest registered timer.
    pub fn earliest(&self) -> Option<i64> {
        self.table.timers.borrow().first().map(|t| t.0)
    }

    pub fn len(&self) -> usize {
        self.table.timers.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
