//! How the heap backend stores `String` keys: up to [`INLINE`] bytes inside the table's own
//! entry, longer ones in a boxed slice.
//!
//! A `String` key keeps its bytes in an allocation of its own, so with a table far larger than
//! the CPU caches every lookup misses twice (the entry, then the key's bytes) and a checkpoint's
//! copy visits a million scattered allocations. Most keys (words, ids, names) are short: stored
//! inline they cost one miss per lookup, and the copy at a barrier reads the table in order.
//!
//! A [`TextKey`] hashes, encodes and decodes exactly as the `String` it stands for, so its key
//! group and its snapshot entries are the `String`'s: snapshots do not depend on the layout.

use std::hash::{Hash, Hasher};

use hashbrown::Equivalent;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes a key may have to be stored inline: what fits beside the length and the variant tag
/// in the 24 bytes of a `String`.
pub(super) const INLINE: usize = 22;

/// A `String` key as a heap table stores it. Always inline when it fits, so equal keys have
/// equal representations.
#[derive(Clone, Debug)]
pub(crate) enum TextKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<[u8]>),
}

// As small as the `String` it replaces: the table's entries do not grow.
const _: () = assert!(std::mem::size_of::<TextKey>() == 24);

impl TextKey {
    pub(super) fn new(text: &[u8]) -> TextKey {
        if text.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..text.len()].copy_from_slice(text);
            TextKey::Inline {
                len: text.len() as u8,
                bytes,
            }
        } else {
            TextKey::Boxed(text.into())
        }
    }

    #[inline]
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            TextKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            TextKey::Boxed(b) => b,
        }
    }

    /// The first byte of a key stored in a box of its own (0 for an inline key): one load
    /// that brings the box into the cache (see [`super::read_ahead`]).
    #[inline]
    pub(super) fn first_boxed_byte(&self) -> u8 {
        match self {
            TextKey::Inline { .. } => 0,
            TextKey::Boxed(b) => b.first().copied().unwrap_or(0),
        }
    }

    /// Appends the key's bincode encoding, the `String`'s (length as u64, then the bytes),
    /// without checking its UTF-8 again as `Serialize` must to hand the text to a serializer:
    /// a checkpoint writes every key, and that check was a tenth of the writing.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        let bytes = self.as_bytes();
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(bytes);
    }

    /// The key as text; it was made from a `String`, so this only fails on a bug.
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("a text key is made from a String")
    }
}

/// Hashes as `str` does (`Hasher::write_str`'s default: the bytes, then `0xff`), so a key's
/// hash, and with it its key group, is its `String`'s.
fn hash_text<H: Hasher>(text: &[u8], state: &mut H) {
    state.write(text);
    state.write_u8(0xff);
}

impl Hash for TextKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_text(self.as_bytes(), state);
    }
}

impl PartialEq for TextKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for TextKey {}

/// A `String` key looked up in a table of [`TextKey`]s without building one.
#[derive(Clone, Copy)]
pub(super) struct TextRef<'a>(pub(super) &'a [u8]);

impl Hash for TextRef<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_text(self.0, state);
    }
}

impl Equivalent<TextKey> for TextRef<'_> {
    #[inline]
    fn equivalent(&self, key: &TextKey) -> bool {
        self.0 == key.as_bytes()
    }
}

/// Encoded as the `String` would be.
impl Serialize for TextKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TextKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| TextKey::new(s.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::keygroup::{key_group_of, stable_hash};

    fn texts() -> Vec<String> {
        let mut t: Vec<String> = ["", "a", "alpha12345", "é€𝄞", "x\u{0}y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for n in [INLINE - 1, INLINE, INLINE + 1, 100] {
            t.push("k".repeat(n));
        }
        t
    }

    /// Hash, key group and encoding are the `String`'s, inline or boxed; decoding gives the
    /// same key back.
    #[test]
    fn a_text_key_is_its_string_to_hashes_and_snapshots() {
        for s in texts() {
            let k = TextKey::new(s.as_bytes());
            assert_eq!(
                matches!(k, TextKey::Inline { .. }),
                s.len() <= INLINE,
                "{s:?}"
            );
            assert_eq!(k.as_bytes(), s.as_bytes());
            assert_eq!(stable_hash(&k), stable_hash(&s), "{s:?}");
            assert_eq!(
                stable_hash(&TextRef(s.as_bytes())),
                stable_hash(&s),
                "{s:?}"
            );
            assert_eq!(key_group_of(&k, 128), key_group_of(&s, 128), "{s:?}");
            let encoded = bincode::serialize(&k).unwrap();
            assert_eq!(encoded, bincode::serialize(&s).unwrap(), "{s:?}");
            // The checkpoint's own encoding, which skips the UTF-8 check, writes the same.
            let mut direct = Vec::new();
            super::super::encode_key(&mut direct, &k).unwrap();
            assert_eq!(direct, encoded, "{s:?}");
            assert_eq!(
                k.first_boxed_byte(),
                if s.len() > INLINE { s.as_bytes()[0] } else { 0 },
                "{s:?}"
            );
            let back: TextKey = bincode::deserialize(&encoded).unwrap();
            assert_eq!(back, k);
            let as_string: String = bincode::deserialize(&encoded).unwrap();
            assert_eq!(as_string, s);
        }
    }

    /// Keys are found by their bytes, and only equal bytes match.
    #[test]
    fn a_table_finds_text_keys_by_their_bytes() {
        let mut m: hashbrown::HashMap<TextKey, usize, rustc_hash::FxBuildHasher> =
            Default::default();
        let all = texts();
        for (i, s) in all.iter().enumerate() {
            m.insert(TextKey::new(s.as_bytes()), i);
        }
        assert_eq!(m.len(), all.len());
        for (i, s) in all.iter().enumerate() {
            assert_eq!(m.get(&TextRef(s.as_bytes())), Some(&i), "{s:?}");
        }
        assert_eq!(m.get(&TextRef(b"alpha1234")), None);
        assert_eq!(m.get(&TextRef("k".repeat(INLINE + 2).as_bytes())), None);
    }
}
