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
pub struct StateBuf {
    bytes: Vec<u8>,
    /// Where the state starts in `bytes`.
    start: usize,
}

impl StateBuf {
    /// An empty buffer with room for `len` bytes of state: a state that grew past it would be
    /// moved (copied once more) and lose its placement.
    pub fn with_capacity(len: usize) -> StateBuf {
        let mut bytes = Vec::with_capacity(LINE + len);
        let start = lead_for(bytes.as_ptr(), frame::HEADER);
        bytes.resize(start, 0);
        StateBuf { bytes, start }
    }

    /// Bytes of state written so far.
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state as its own vector (moved down to the vector's start, so only for small ones).
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        self.bytes.drain(..self.start);
        self.bytes
    }

    /// The state, without a copy.
    pub(crate) fn into_bytes(self) -> Bytes {
        Bytes::from(self.bytes).slice(self.start..)
    }

    /// Where the state's first byte sits in memory, for tests of the placement.
    #[cfg(test)]
    fn first_byte_address(&self) -> usize {
        self.bytes[self.start..].as_ptr() as usize
    }
}

impl io::Write for StateBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.bytes.extend_from_slice(buf);
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
            let bytes = b.into_bytes();
            assert_eq!(&bytes[..], &state[..]);
        }
        let mut b = StateBuf::with_capacity(3);
        b.write_all(b"abc").unwrap();
        assert_eq!(b.into_vec(), b"abc");
    }
}
