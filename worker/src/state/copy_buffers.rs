//! The memory of a table's copies at barriers, used again at the next barrier.
//!
//! A heap table (or a RocksDB write-back cache) is copied at every checkpoint, and the copy is
//! dropped once the uploader wrote it out. A copy of a million entries is tens of megabytes:
//! freed, the allocator hands that memory back to the kernel, and the next copy faults every
//! page in again, zeroed, on the task's thread while its records wait. Kept here, the next copy
//! writes into memory that is already there.

use std::mem::size_of;
use std::ops::Deref;
use std::sync::Arc;

use parking_lot::Mutex;

use super::text_key::TextKey;

/// Buffers kept per table: as many as a copy has parts (see `heap::copy_entries`).
const KEPT: usize = 2;
/// Larger buffers go back to the allocator: memory a huge state's copy took is not held
/// between checkpoints.
const KEPT_MAX_BYTES: usize = 256 << 20;

/// Free buffers for copies of entries `(key, value)`.
pub(super) struct CopyBuffers<K, V> {
    free: Mutex<Vec<Vec<(K, V)>>>,
}

impl<K, V> CopyBuffers<K, V> {
    fn new() -> Arc<Self> {
        Arc::new(CopyBuffers {
            free: Mutex::new(Vec::new()),
        })
    }

    /// An empty buffer with room for `capacity` entries, reused if one is kept.
    pub(super) fn take(&self, capacity: usize) -> Vec<(K, V)> {
        let mut buf = self.free.lock().pop().unwrap_or_default();
        buf.reserve(capacity);
        buf
    }

    fn give(&self, mut buf: Vec<(K, V)>) {
        buf.clear();
        if buf.capacity() * size_of::<(K, V)>() > KEPT_MAX_BYTES {
            return;
        }
        let mut free = self.free.lock();
        if free.len() < KEPT {
            free.push(buf);
        }
    }
}

/// The buffers of one table, for either key layout (see [`super::heap_table::Table`]).
pub(super) struct TableBuffers<K, V> {
    pub(super) keys: Arc<CopyBuffers<K, V>>,
    pub(super) text: Arc<CopyBuffers<TextKey, V>>,
}

impl<K, V> TableBuffers<K, V> {
    pub(super) fn new() -> Self {
        TableBuffers {
            keys: CopyBuffers::new(),
            text: CopyBuffers::new(),
        }
    }
}

/// The entries of a copy, in parts; its buffers go back to their table once it is dropped
/// (by the uploader, after writing it out).
pub(super) struct Copied<K, V> {
    parts: Vec<Vec<(K, V)>>,
    home: Arc<CopyBuffers<K, V>>,
}

impl<K, V> Copied<K, V> {
    pub(super) fn new(parts: Vec<Vec<(K, V)>>, home: Arc<CopyBuffers<K, V>>) -> Self {
        Copied { parts, home }
    }
}

impl<K, V> Deref for Copied<K, V> {
    type Target = [Vec<(K, V)>];

    fn deref(&self) -> &Self::Target {
        &self.parts
    }
}

impl<K, V> Drop for Copied<K, V> {
    fn drop(&mut self) {
        for part in self.parts.drain(..) {
            self.home.give(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dropped copy's buffers serve the next copy, emptied; no more than a copy's parts are
    /// kept, and none of a huge copy.
    #[test]
    fn a_dropped_copys_buffers_serve_the_next_copy() {
        let home: Arc<CopyBuffers<u64, u64>> = CopyBuffers::new();
        let parts: Vec<_> = (0..3)
            .map(|i| {
                let mut b = home.take(1000);
                b.push((i, i));
                b
            })
            .collect();
        let addresses: Vec<*const (u64, u64)> = parts.iter().map(|p| p.as_ptr()).collect();
        drop(Copied::new(parts, home.clone()));
        assert_eq!(home.free.lock().len(), KEPT);
        let again = home.take(10);
        assert!(again.is_empty() && again.capacity() >= 1000);
        assert!(
            addresses.contains(&again.as_ptr()),
            "a kept buffer is reused"
        );

        let huge = KEPT_MAX_BYTES / size_of::<(u64, u64)>() + 1;
        let big: Arc<CopyBuffers<u64, u64>> = CopyBuffers::new();
        drop(Copied::new(vec![big.take(huge)], big.clone()));
        assert!(big.free.lock().is_empty(), "a huge buffer is not kept");
    }
}
