//! Byte buffers used again once the [`Bytes`] lent out of them are dropped: the memory of
//! key-group blobs from one checkpoint to the next, and of received frames from one frame to
//! the next.
//!
//! Freed, a large buffer's memory goes back to the kernel, and the next one faults every page
//! in again, zeroed: with a million keys a tenth of the uploader's time went to that. A buffer
//! lent out through [`BlobPool::shared`] comes back here when its last bytes are dropped. Its
//! contents stay initialized, so a reader can fill it again without zeroing it first
//! ([`BlobPool::take_filled`]).

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

/// Bytes of blobs an uploader keeps for the next checkpoint: the memory a huge state took is
/// not held between checkpoints beyond this.
pub const STATE_KEPT_MAX_BYTES: usize = 256 << 20;

/// Free buffers, kept up to a limit of bytes.
pub struct BlobPool {
    free: Mutex<Free>,
    limit: usize,
}

#[derive(Default)]
struct Free {
    blobs: Vec<Vec<u8>>,
    bytes: usize,
}

impl Default for BlobPool {
    /// A pool for checkpoint blobs.
    fn default() -> Self {
        BlobPool::with_limit(STATE_KEPT_MAX_BYTES)
    }
}

impl BlobPool {
    /// A pool for checkpoint blobs, shared by an uploader's threads.
    pub fn new() -> Arc<BlobPool> {
        Arc::default()
    }

    /// A pool that keeps at most `limit` bytes of free buffers.
    pub fn with_limit(limit: usize) -> BlobPool {
        BlobPool {
            free: Mutex::default(),
            limit,
        }
    }

    /// The buffer kept last, if any.
    fn pop(&self) -> Option<Vec<u8>> {
        let mut free = self.free.lock();
        let blob = free.blobs.pop();
        if let Some(b) = &blob {
            free.bytes -= b.capacity();
        }
        blob
    }

    /// An empty blob with room for `capacity` bytes: a kept one if it has that room (one that
    /// has not is dropped, as growing it would copy memory it holds for nothing).
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        match self.pop() {
            Some(mut b) if b.capacity() >= capacity => {
                b.clear();
                b
            }
            _ => Vec::with_capacity(capacity),
        }
    }

    /// A buffer of `len` bytes to be overwritten, such as by a read: a kept one if it has room,
    /// its old bytes left as they are (only a part it did not hold before is zeroed), else a
    /// new zeroed one with room to spare of up to `spare` bytes, so that a slightly longer
    /// request later still fits it.
    pub fn take_filled(&self, len: usize, spare: usize) -> Vec<u8> {
        match self.pop() {
            Some(mut b) if b.capacity() >= len => {
                b.resize(len, 0);
                b
            }
            _ => {
                let mut b = Vec::with_capacity(len + spare);
                b.resize(len, 0);
                b
            }
        }
    }

    fn give(&self, blob: Vec<u8>) {
        let mut free = self.free.lock();
        if free.bytes + blob.capacity() <= self.limit {
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

        drop(pool.shared(Vec::with_capacity(STATE_KEPT_MAX_BYTES + 1)));
        assert_eq!(pool.kept_bytes(), 0, "beyond the limit nothing is kept");
    }

    /// A filled buffer comes back with its bytes, is taken again at the same address without
    /// being zeroed, and grows into its spare room zeroing only the new part.
    #[test]
    fn filled_buffers_are_reused_without_zeroing() {
        let pool = Arc::new(BlobPool::with_limit(1 << 20));
        let mut frame = pool.take_filled(1000, 500);
        assert_eq!(frame, vec![0; 1000]);
        assert!(frame.capacity() >= 1500);
        frame.fill(9);
        let address = frame.as_ptr();
        drop(pool.shared(frame).slice(0..10));
        let again = pool.take_filled(1200, 500);
        assert_eq!(again.as_ptr(), address, "the kept buffer is reused");
        assert_eq!(
            &again[..1000],
            &[9; 1000][..],
            "its bytes are not zeroed again"
        );
        assert_eq!(
            &again[1000..],
            &[0; 200][..],
            "the part it did not hold is zeroed"
        );
        drop(pool.shared(again));
        let small = pool.take_filled(10, 0);
        assert_eq!(small.len(), 10);
        assert_eq!(
            small.as_ptr(),
            address,
            "a shorter request is served by a longer buffer"
        );
        drop(pool.shared(small));
        let big = pool.take_filled(4000, 0);
        assert_ne!(big.as_ptr(), address, "a buffer without room is not grown");
        assert_eq!(big, vec![0; 4000]);
        assert_eq!(pool.kept_bytes(), 0, "and is dropped");
        drop(pool.shared(vec![0; 2 << 20]));
        assert_eq!(pool.kept_bytes(), 0, "beyond the limit nothing is kept");
    }
}
