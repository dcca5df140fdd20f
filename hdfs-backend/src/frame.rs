//! The checksummed frame around every file Sluice writes into a snapshot:
//!
//! ```text
//! magic [4] | format version u32 LE | payload length u64 LE | payload | CRC32 u32 LE
//! ```
//!
//! The CRC32 (crc32fast, IEEE) covers everything before it. Magic and version come first and
//! stay there in every future version, so an old build can always tell "newer format" from
//! "garbage"; everything after the version may change with it.

use bytes::Bytes;
use sluice_core::placement::{LINE, lead_for};

use crate::error::{Result, StorageError};
use crate::storage::{ChunkIter, ChunkSource};

pub(crate) const STATE_MAGIC: [u8; 4] = *b"SLST";
pub(crate) const METADATA_MAGIC: [u8; 4] = *b"SLMD";
pub(crate) const HEADER: usize = 16;
const TRAILER: usize = 4;

/// The frame of `payload`: header, payload, CRC32 of both.
pub(crate) fn encode(magic: [u8; 4], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    append_frame(&mut out, magic, version, payload);
    out
}

/// [`encode`] for a payload of any size: the payload is copied in at its own offset within a
/// line (see `sluice_core::placement`), and the frame is returned where it is.
pub(crate) fn encode_placed(magic: [u8; 4], version: u32, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(LINE + HEADER + payload.len() + TRAILER);
    // The payload goes to `lead + HEADER`: where its source's offset within a line is.
    let lead = lead_for(
        out.as_ptr(),
        (payload.as_ptr() as usize).wrapping_sub(HEADER),
    );
    out.resize(lead, 0);
    append_frame(&mut out, magic, version, payload);
    Bytes::from(out).slice(lead..)
}

/// Appends the frame of `payload` to `out`, which has room for it.
fn append_frame(out: &mut Vec<u8>, magic: [u8; 4], version: u32, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&header(magic, version, payload.len() as u64));
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// The frame of `payload` as [`encode`] lays it out, written in pieces without copying the
/// payload (a checkpoint's state is tens of megabytes, and copying it behind a header cost as
/// much as writing it out), with the payload's own CRC32, computed in the same pass.
pub(crate) struct Framed {
    header: Bytes,
    /// The payload, in the pieces it was handed over in.
    payload: Vec<Bytes>,
    trailer: Bytes,
    payload_len: usize,
    /// CRC32 of the payload alone.
    pub(crate) payload_crc: u32,
}

/// Pieces of the payload a [`Framed`] hands to storage at a time.
const FRAMED_CHUNK: usize = 4 << 20;

impl Framed {
    /// The frame of the payload made of `pieces`, in order.
    pub(crate) fn new(magic: [u8; 4], version: u32, pieces: Vec<Bytes>) -> Framed {
        let payload_len: usize = pieces.iter().map(Bytes::len).sum();
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(&magic);
        header.extend_from_slice(&version.to_le_bytes());
        header.extend_from_slice(&(payload_len as u64).to_le_bytes());
        let mut of_payload = crc32fast::Hasher::new();
        for piece in &pieces {
            of_payload.update(piece);
        }
        let mut of_frame = crc32fast::Hasher::new();
        of_frame.update(&header);
        of_frame.combine(&of_payload);
        Framed {
            header: header.into(),
            payload: pieces,
            trailer: Bytes::copy_from_slice(&of_frame.finalize().to_le_bytes()),
            payload_len,
            payload_crc: of_payload.finalize(),
        }
    }
}

impl ChunkSource for Framed {
    fn len(&self) -> u64 {
        (HEADER + self.payload_len + TRAILER) as u64
    }

    fn open(&self) -> Result<Box<dyn ChunkIter + '_>> {
        let mut pieces = vec![self.header.clone()];
        for piece in &self.payload {
            let mut rest = piece.clone();
            while !rest.is_empty() {
                pieces.push(rest.split_to(FRAMED_CHUNK.min(rest.len())));
            }
        }
        pieces.push(self.trailer.clone());
        Ok(Box::new(pieces.into_iter()))
    }
}

impl ChunkIter for std::vec::IntoIter<Bytes> {
    fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(self.next())
    }
}

/// The payload of a frame of `magic` and `version`; `path` names the file in errors.
pub(crate) fn decode<'a>(
    path: &str,
    magic: [u8; 4],
    version: u32,
    bytes: &'a [u8],
) -> Result<&'a [u8]> {
    let corrupt = |reason: String| StorageError::corrupt(path, reason);
    if bytes.len() < HEADER + TRAILER {
        return Err(corrupt(format!(
            "{} bytes is shorter than the {}-byte frame (truncated?)",
            bytes.len(),
            HEADER + TRAILER
        )));
    }
    let declared = check_header(path, magic, version, &bytes[..HEADER])?;
    let actual = (bytes.len() - HEADER - TRAILER) as u64;
    if declared != actual {
        return Err(corrupt(format!(
            "the header declares {declared} payload bytes but the file holds {actual} (truncated?)"
        )));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let stored = u32::from_le_bytes(trailer.try_into().expect("4 bytes"));
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(corrupt(format!(
            "CRC32 mismatch: stored {stored:08x}, computed {computed:08x}"
        )));
    }
    Ok(&body[HEADER..])
}

/// Checks magic and version of a 16-byte header; returns the declared payload length.
fn check_header(path: &str, magic: [u8; 4], version: u32, header: &[u8]) -> Result<u64> {
    if header[..4] != magic {
        return Err(StorageError::corrupt(
            path,
            format!(
                "unknown magic {:?}, expected {:?}",
                String::from_utf8_lossy(&header[..4]),
                String::from_utf8_lossy(&magic)
            ),
        ));
    }
    let found = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if found != version {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_string(),
            found,
            supported: version,
        });
    }
    Ok(u64::from_le_bytes(
        header[8..16].try_into().expect("8 bytes"),
    ))
}

/// Like [`decode`], but takes the file and returns the payload in the same allocation, so a
/// large state file is not held twice.
pub(crate) fn decode_owned(
    path: &str,
    magic: [u8; 4],
    version: u32,
    mut bytes: Vec<u8>,
) -> Result<Vec<u8>> {
    let len = decode(path, magic, version, &bytes)?.len();
    bytes.truncate(HEADER + len);
    bytes.drain(..HEADER);
    Ok(bytes)
}

/// The header of a frame whose payload is `len` bytes, for writing a frame piece by piece.
pub(crate) fn header(magic: [u8; 4], version: u32, len: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&magic);
    h[4..8].copy_from_slice(&version.to_le_bytes());
    h[8..].copy_from_slice(&len.to_le_bytes());
    h
}

/// The trailer after `header` and a payload whose own CRC32 state is `payload`: the payload
/// is hashed once, its CRC serves both the frame and `_metadata`.
pub(crate) fn trailer(header: &[u8; HEADER], payload: &crc32fast::Hasher) -> [u8; TRAILER] {
    let mut h = crc32fast::Hasher::new();
    h.update(header);
    h.combine(payload);
    h.finalize().to_le_bytes()
}

/// Checks a frame as it streams by and passes its payload on: [`decode`] for files too large
/// to hold. The payload is handed on before the trailer is checked, so whoever receives it
/// must discard it when [`Decoder::finish`] fails.
pub(crate) struct Decoder<'a> {
    path: &'a str,
    magic: [u8; 4],
    version: u32,
    header: Vec<u8>,
    declared: u64,
    seen: u64,
    trailer: Vec<u8>,
    payload: crc32fast::Hasher,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(path: &'a str, magic: [u8; 4], version: u32) -> Self {
        Decoder {
            path,
            magic,
            version,
            header: Vec::with_capacity(HEADER),
            declared: 0,
            seen: 0,
            trailer: Vec::with_capacity(TRAILER),
            payload: crc32fast::Hasher::new(),
        }
    }

    /// Takes the next bytes of the file; payload bytes go to `out`.
    pub(crate) fn feed(
        &mut self,
        mut bytes: &[u8],
        out: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if self.header.len() < HEADER {
            let n = (HEADER - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < HEADER {
                return Ok(());
            }
            self.declared = check_header(self.path, self.magic, self.version, &self.header)?;
        }
        let left = self.declared - self.seen;
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
        if n > 0 {
            self.payload.update(&bytes[..n]);
            self.seen += n as u64;
            out(&bytes[..n])?;
            bytes = &bytes[n..];
        }
        if !bytes.is_empty() {
            if self.trailer.len() + bytes.len() > TRAILER {
                return Err(StorageError::corrupt(
                    self.path,
                    format!(
                        "the header declares {} payload bytes but the file holds more",
                        self.declared
                    ),
                ));
            }
            self.trailer.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Checks length and CRC32 once the whole file went through; returns the payload's length
    /// and CRC32.
    pub(crate) fn finish(self) -> Result<(u64, u32)> {
        let corrupt = |reason: String| StorageError::corrupt(self.path, reason);
        if self.header.len() < HEADER || self.trailer.len() < TRAILER {
            let total = self.header.len() as u64 + self.seen + self.trailer.len() as u64;
            return Err(corrupt(format!(
                "{total} bytes is shorter than the frame{} (truncated?)",
                if self.header.len() < HEADER {
                    String::new()
                } else {
                    format!(", the header declares {} payload bytes", self.declared)
                }
            )));
        }
        let header: [u8; HEADER] = self.header[..].try_into().expect("16 bytes");
        let stored = u32::from_le_bytes(self.trailer[..].try_into().expect("4 bytes"));
        let computed = u32::from_le_bytes(trailer(&header, &self.payload));
        if stored != computed {
            return Err(corrupt(format!(
                "CRC32 mismatch: stored {stored:08x}, computed {computed:08x}"
            )));
        }
        Ok((self.seen, self.payload.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placed_frame_copies_its_payload_at_the_payloads_line_offset() {
        let source: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        for start in (0..LINE).chain([1000, 4095]) {
            for len in [0, 1, 100, 65_000] {
                let payload = &source[start..start + len];
                let placed = encode_placed(STATE_MAGIC, 1, payload);
                assert_eq!(decode("f", STATE_MAGIC, 1, &placed).unwrap(), payload);
                let copy = placed.as_ptr() as usize + HEADER;
                assert_eq!(
                    copy.wrapping_sub(payload.as_ptr() as usize) % LINE,
                    0,
                    "start {start} len {len}"
                );
                assert_eq!(encode(STATE_MAGIC, 1, payload), placed);
            }
        }
    }

    /// A frame written in pieces is [`encode`]'s, byte for byte, and knows its payload's CRC.
    #[test]
    fn a_frame_in_pieces_is_the_encoded_frame() {
        for n in [
            0usize,
            1,
            5,
            FRAMED_CHUNK - 1,
            FRAMED_CHUNK,
            2 * FRAMED_CHUNK + 3,
        ] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            // One piece, and the same bytes in three pieces (one of them empty).
            let cut = n / 3;
            let whole = Framed::new(STATE_MAGIC, 3, vec![Bytes::from(payload.clone())]);
            let pieces = Framed::new(
                STATE_MAGIC,
                3,
                vec![
                    Bytes::copy_from_slice(&payload[..cut]),
                    Bytes::new(),
                    Bytes::copy_from_slice(&payload[cut..]),
                ],
            );
            for framed in [whole, pieces] {
                let mut written = Vec::new();
                let mut pieces = framed.open().unwrap();
                while let Some(p) = pieces.next_chunk().unwrap() {
                    assert!(p.len() <= FRAMED_CHUNK);
                    written.extend_from_slice(&p);
                }
                assert_eq!(written, encode(STATE_MAGIC, 3, &payload), "{n} bytes");
                assert_eq!(framed.len(), written.len() as u64);
                assert_eq!(framed.payload_crc, crc32fast::hash(&payload));
            }
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let f = encode(STATE_MAGIC, 1, b"hello");
        assert_eq!(decode("f", STATE_MAGIC, 1, &f).unwrap(), b"hello");
        assert_eq!(
            decode_owned("f", STATE_MAGIC, 1, f.clone()).unwrap(),
            b"hello"
        );
        assert_eq!(
            decode("f", STATE_MAGIC, 1, &encode(STATE_MAGIC, 1, b"")).unwrap(),
            b""
        );
        let e = decode("f", METADATA_MAGIC, 1, &f).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
        let e = decode("f", STATE_MAGIC, 1, &f[..f.len() - 1]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = decode("f", STATE_MAGIC, 1, &f[..10]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut g = f.clone();
        g[17] ^= 0x01;
        let e = decode("f", STATE_MAGIC, 1, &g).unwrap_err();
        assert!(e.to_string().contains("CRC32"), "{e}");
        let e = decode("f", STATE_MAGIC, 1, &encode(STATE_MAGIC, 2, b"x")).unwrap_err();
        assert!(
            matches!(
                e,
                StorageError::UnsupportedVersion {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{e}"
        );
    }

    /// The streaming encoder and decoder agree with `encode` and `decode`, whatever the piece
    /// sizes, and find the same damage.
    #[test]
    fn streaming_matches_whole_frames() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let whole = encode(STATE_MAGIC, 1, &payload);
        let h = header(STATE_MAGIC, 1, payload.len() as u64);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&payload);
        let mut pieced = h.to_vec();
        pieced.extend_from_slice(&payload);
        pieced.extend_from_slice(&trailer(&h, &crc));
        assert_eq!(pieced, whole);
        let stream = |bytes: &[u8], piece: usize| {
            let mut d = Decoder::new("f", STATE_MAGIC, 1);
            let mut out = Vec::new();
            for c in bytes.chunks(piece) {
                d.feed(c, &mut |p| {
                    out.extend_from_slice(p);
                    Ok(())
                })?;
            }
            d.finish().map(|r| (r, out))
        };
        for piece in [1, 3, 16, 17, 4096, 1 << 20] {
            let ((len, c), out) = stream(&whole, piece).unwrap();
            assert_eq!(
                (len, c, out.as_slice()),
                (10_000, crc32fast::hash(&payload), &payload[..])
            );
        }
        let e = stream(&whole[..whole.len() - 1], 100).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = stream(&whole[..10], 100).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let mut longer = whole.clone();
        longer.push(0);
        assert!(stream(&longer, 100).is_err());
        let mut g = whole.clone();
        g[5000] ^= 1;
        let e = stream(&g, 100).unwrap_err();
        assert!(e.to_string().contains("CRC32"), "{e}");
        let e = stream(&encode(METADATA_MAGIC, 1, b"x"), 100).unwrap_err();
        assert!(e.to_string().contains("magic"), "{e}");
    }
}
