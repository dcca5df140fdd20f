//! The checksummed frame around every file Sluice writes into a snapshot:
//!
//! ```text
//! magic [4] | format version u32 LE | payload length u64 LE | payload | CRC32 u32 LE
//! ```
//!
//! The CRC32 (crc32fast, IEEE) covers everything before it. Magic and version come first and
//! stay there in every future version, so an old build can always tell "newer format" from
//! "garbage"; everything after the version may change with it.

use crate::error::{Result, StorageError};

pub(crate) const STATE_MAGIC: [u8; 4] = *b"SLST";
pub(crate) const METADATA_MAGIC: [u8; 4] = *b"SLMD";
const HEADER: usize = 16;
const TRAILER: usize = 4;

pub(crate) fn encode(magic: [u8; 4], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
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
    if bytes[..4] != magic {
        return Err(corrupt(format!(
            "unknown magic {:?}, expected {:?}",
            String::from_utf8_lossy(&bytes[..4]),
            String::from_utf8_lossy(&magic)
        )));
    }
    let found = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if found != version {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_string(),
            found,
            supported: version,
        });
    }
    let declared = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
