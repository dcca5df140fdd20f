//! The memory a state is serialized into before it is written to its file, placed so that the
//! write copies it fast.

use std::io;

use bytes::Bytes;

use sluice_core::placement::{LINE, lead_for};

use crate::frame;

/// A subtask's serialized state on its way to [`crate::SnapshotDir::write_state_owned`]; fill
/// it through [`io::Write`].
///
/// Why not a plain `Vec`: a state file holds the state behind a 16-byte header, so a buffer
/// starting on a page, as large allocations do, would have the kernel copy the state into the
/// page cache 16 bytes past its offset in memory: the slow case of `sluice_core::placement`.
/// The state therefore starts a few bytes into its buffer, at the offset within a line it will
/// have in the file.
///
/// Large pieces the state already holds in memory of their own (a key group's blob) are
/// appended by reference with [`StateBuf::append_shared`] rather than copied in: copying tens
/// of megabytes into a fresh buffer cost as much as writing them to the file, most of it the
/// kernel zeroing the buffer's new pages.
pub struct StateBuf {
    bytes: Vec<u8>,
    /// Where the state starts in `bytes`.
    start: usize,
    /// What follows `bytes`, in order: shared pieces and the small writes between them.
    rest: Vec<Bytes>,
    /// Written after the last shared piece, not yet in `rest`.
    open: Vec<u8>,
    /// Bytes in `rest`.
    rest_len: usize,
}

impl StateBuf {
    /// An empty buffer with room for `len` bytes of state: a state that grew past it would be
    /// moved (copied once more) and lose its placement.
    pub fn with_capacity(len: usize) -> StateBuf {
        let mut bytes = Vec::with_capacity(LINE + len);
        let start = lead_for(bytes.as_ptr(), frame::HEADER);
        bytes.resize(start, 0);
        StateBuf {
            bytes,
            start,
            rest: Vec::new(),
            open: Vec::new(),
            rest_len: 0,
        }
    }

    /// Bytes of state written so far.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start + self.rest_len + self.open.len()
    }

    /// Drops what was written past the first `len` bytes; only before anything was appended
    /// with [`StateBuf::append_shared`] (a serializer's closing bytes replaced by others).
    ///
    /// # Panics
    /// If a shared piece was appended, or `len` is more than was written.
    pub fn truncate(&mut self, len: usize) {
        assert!(
            self.rest.is_empty() && self.open.is_empty(),
            "truncating past a shared piece"
        );
        assert!(
            len <= self.len(),
            "truncating {} bytes to {len}",
            self.len()
        );
        self.bytes.truncate(self.start + len);
    }

    /// Appends `piece` without copying it; the file is written from it in place.
    pub fn append_shared(&mut self, piece: Bytes) {
        if !self.open.is_empty() {
            let open = std::mem::take(&mut self.open);
            self.push_rest(Bytes::from(open));
        }
        self.push_rest(piece);
    }

    fn push_rest(&mut self, piece: Bytes) {
        self.rest_len += piece.len();
        self.rest.push(piece);
    }

    /// The state in order: the placed head, then what followed it.
    pub(crate) fn into_parts(mut self) -> Vec<Bytes> {
        let mut parts = Vec::with_capacity(self.rest.len() + 2);
        parts.push(Bytes::from(self.bytes).slice(self.start..));
        parts.append(&mut self.rest);
        if !self.open.is_empty() {
            parts.push(Bytes::from(self.open));
        }
        parts
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state as its own vector (moved down to the vector's start and its pieces copied in,
    /// so only for small ones).
    pub fn into_vec(mut self) -> Vec<u8> {
        self.bytes.drain(..self.start);
        for piece in &self.rest {
            self.bytes.extend_from_slice(piece);
        }
        self.bytes.extend_from_slice(&self.open);
        self.bytes
    }

    /// Where the state's first byte sits in memory, for tests of the placement.
    #[cfg(test)]
    fn first_byte_address(&self) -> usize {
        self.bytes[self.start..].as_ptr() as usize
    }
}

impl StateBuf {
    /// Where writes go: the head until a shared piece was appended.
    fn tail(&mut self) -> &mut Vec<u8> {
        if self.rest.is_empty() {
            &mut self.bytes
        } else {
            &mut self.open
        }
    }
}

impl io::Write for StateBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tail().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.tail().extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_state_sits_at_its_file_offset_within_a_line() {
        for len in [0, 1, 1000, 5 << 20] {
            let mut b = StateBuf::with_capacity(len);
            let state: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
            b.write_all(&state).unwrap();
            assert_eq!(b.len(), len);
            if len > 0 {
                assert_eq!(
                    (b.first_byte_address() + LINE - frame::HEADER) % LINE,
                    0,
                    "{len} bytes"
                );
            }
            let parts = b.into_parts();
            assert_eq!(parts.len(), 1);
            assert_eq!(&parts[0][..], &state[..]);
        }
        let mut b = StateBuf::with_capacity(3);
        b.write_all(b"abc").unwrap();
        assert_eq!(b.into_vec(), b"abc");
    }

    #[test]
    fn shared_pieces_follow_the_writes_before_them_in_order() {
        let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let shared = Bytes::from(blob.clone());
        let mut b = StateBuf::with_capacity(16);
        b.write_all(b"head and then some").unwrap();
        b.truncate(4);
        b.write_all(b"!").unwrap();
        b.append_shared(shared.clone());
        b.write_all(b"between").unwrap();
        b.append_shared(shared.clone());
        b.append_shared(Bytes::new());
        b.write_all(b"end").unwrap();
        let mut expected = b"head!".to_vec();
        expected.extend_from_slice(&blob);
        expected.extend_from_slice(b"between");
        expected.extend_from_slice(&blob);
        expected.extend_from_slice(b"end");
        assert_eq!(b.len(), expected.len());
        let parts = b.into_parts();
        // The shared pieces went in as they are, not copied.
        assert!(parts.iter().any(|p| p.as_ptr() == shared.as_ptr()));
        assert_eq!(parts.concat(), expected);

        let mut b = StateBuf::with_capacity(0);
        b.write_all(b"x").unwrap();
        b.append_shared(Bytes::from_static(b"yz"));
        b.write_all(b"w").unwrap();
        assert_eq!(b.into_vec(), b"xyzw");
    }
}
