//! The memory of key-group blobs, used again at the next checkpoint.
//!
//! With a million keys the uploader encodes tens of megabytes of blobs at every checkpoint and
//! drops them once the state file is written. Freed, the allocator hands that memory back to
//! the kernel, and the next checkpoint faults every page in again, zeroed (a tenth of the
//! uploader's time). A blob written to a state file from its own memory
//! ([`BlobPool::shared`]) comes back here when the write is done.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// Bytes of blobs kept for the next checkpoint: the memory a huge state took is not held
/// between checkpoints beyond this.
const KEPT_MAX_BYTES: usize = 256 << 20;

/// Free blob buffers of one uploader.
#[derive(Default)]
pub struct BlobPool {
    free: Mutex<Free>,
}

#[derive(Default)]
struct Free {
    blobs: Vec<Vec<u8>>,
    bytes: usize,
}

impl BlobPool {
    pub fn new() -> Arc<BlobPool> {
        Arc::default()
    }

    /// An empty blob with room for `capacity` bytes: a kept one if it has that room (one that
    /// has not is dropped, as growing it would copy memory it holds for nothing).
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let kept = {
            let mut free = self.free.lock();
            let blob = free.blobs.pop();
            if let Some(b) = &blob {
                free.bytes -= b.capacity();
            }
            blob
        };
        match kept {
            Some(b) if b.capacity() >= capacity => b,
            _ => Vec::with_capacity(capacity),
        }
    }

    fn give(&self, mut blob: Vec<u8>) {
        blob.clear();
        let mut free = self.free.lock();
        if free.bytes + blob.capacity() <= KEPT_MAX_BYTES {
            free.bytes += blob.capacity();
            free.blobs.push(blob);
        }
    }

    /// `blob` as shared bytes, without a copy; its memory comes back to the pool once the
    /// last of them is dropped.
    pub fn shared(self: &Arc<Self>, blob: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            blob,
            home: self.clone(),
        })
    }

    /// Bytes of the blobs kept, for tests.
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.free.lock().bytes
    }
}

/// A blob lent out as [`Bytes`]; back to its pool when dropped.
struct Lent {
    blob: Vec<u8>,
    home: Arc<BlobPool>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.blob
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.home.give(std::mem::take(&mut self.blob));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lent blob comes back once its last bytes are dropped, and serves the next take that
    /// fits it; a take it does not fit gets fresh memory; no more than the limit is kept.
    #[test]
    fn lent_blobs_come_back_and_serve_the_next_checkpoint() {
        let pool = BlobPool::new();
        let mut blob = pool.take(1000);
        blob.extend_from_slice(&[7; 600]);
        let address = blob.as_ptr();
        let bytes = pool.shared(blob);
        assert_eq!(&bytes[..], &[7; 600][..]);
        assert_eq!(bytes.as_ptr(), address, "shared without a copy");
        let slice = bytes.slice(100..200);
        drop(bytes);
        assert_eq!(pool.kept_bytes(), 0, "still lent while a slice lives");
        drop(slice);
        assert!(pool.kept_bytes() >= 1000);
        let again = pool.take(800);
        assert!(
            again.is_empty() && again.as_ptr() == address,
            "the kept blob is reused"
        );
        assert_eq!(pool.kept_bytes(), 0);
        drop(pool.shared(again));
        let bigger = pool.take(10_000);
        assert!(bigger.capacity() >= 10_000);
        assert_eq!(
            pool.kept_bytes(),
            0,
            "a blob too small is dropped, not kept"
        );

        drop(pool.shared(Vec::with_capacity(KEPT_MAX_BYTES + 1)));
        assert_eq!(pool.kept_bytes(), 0, "beyond the limit nothing is kept");
    }
}
