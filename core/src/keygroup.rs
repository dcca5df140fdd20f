//! Key groups: the unit in which keyed state is partitioned, snapshotted and redistributed.
//!
//! A key is hashed with [`StableHasher`] (a fixed algorithm owned by this crate, so a savepoint
//! taken by one build assigns keys exactly like the build that restores it) and mapped to one of
//! `max_parallelism` key groups. Each subtask of a keyed operator owns a contiguous range of key
//! groups, computed the same way Flink does, so state can be split or merged on rescale.

use std::hash::{Hash, Hasher};

/// A stable 64-bit hasher: FxHash-style mixing of 8-byte words plus a murmur3 finaliser.
/// Never change this function: key-group assignment of stored state depends on it.
#[derive(Default, Clone, Copy)]
pub struct StableHasher {
    state: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl StableHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.state = (self.state.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

/// The 1 to 7 bytes of `rest` as a little-endian word, zero above them. Two overlapping loads
/// instead of a copy of a variable length into a buffer, which costs a call to `memcpy` for
/// every short key hashed; the overlapping bytes are the same in both, so or-ing them is exact.
#[inline]
fn load_le_partial(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let lo = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        let hi = u32::from_le_bytes(rest[n - 4..].try_into().expect("4 bytes"));
        u64::from(lo) | (u64::from(hi) << ((n - 4) * 8))
    } else {
        // Bytes 0, n/2 and n-1 cover every byte of 1 to 3.
        u64::from(rest[0])
            | (u64::from(rest[n / 2]) << (n / 2 * 8))
            | (u64::from(rest[n - 1]) << ((n - 1) * 8))
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.add(load_le_partial(rest) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // murmur3 fmix64: spreads the bits so `% max_parallelism` is uniform.
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h
    }
}

/// The stable hash of a key.
#[inline]
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = StableHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// The key group a key belongs to, in `0..max_parallelism`.
#[inline]
pub fn key_group_for_hash(hash: u64, max_parallelism: usize) -> u16 {
    let m = max_parallelism as u64;
    // The default maximum parallelism, 128, and most chosen ones are powers of two: a mask
    // gives the same remainder without a 64-bit division per key.
    if m.is_power_of_two() {
        (hash & (m - 1)) as u16
    } else {
        (hash % m) as u16
    }
}

#[inline]
pub fn key_group_of<K: Hash + ?Sized>(key: &K, max_parallelism: usize) -> u16 {
    key_group_for_hash(stable_hash(key), max_parallelism)
}

/// An inclusive-exclusive range of key groups owned by one subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyGroupRange {
    pub start: u16,
    /// Exclusive.
    pub end: u16,
}

impl KeyGroupRange {
    /// The range of subtask `index` of `parallelism` (Flink's `computeKeyGroupRangeForOperatorIndex`).
    pub fn for_subtask(max_parallelism: usize, parallelism: usize, index: usize) -> Self {
        assert!(parallelism > 0 && parallelism <= max_parallelism && index < parallelism);
        let start = (index * max_parallelism).div_ceil(parallelism);
        let end = ((index + 1) * max_parallelism).div_ceil(parallelism);
        KeyGroupRange {
            start: start as u16,
            end: end as u16,
        }
    }

    pub fn contains(&self, key_group: u16) -> bool {
        key_group >= self.start && key_group < self.end
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> {
        self.start..self.end
    }

    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// The subtask that owns `key_group` (Flink's `computeOperatorIndexForKeyGroup`).
#[inline]
pub fn subtask_for_key_group(max_parallelism: usize, parallelism: usize, key_group: u16) -> usize {
    key_group as usize * parallelism / max_parallelism
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_partition_all_key_groups_and_agree_with_owner() {
        for max in [1usize, 7, 128, 1000] {
            for p in 1..=max.min(33) {
                let mut next = 0u16;
                for i in 0..p {
                    let r = KeyGroupRange::for_subtask(max, p, i);
                    assert_eq!(r.start, next);
                    for kg in r.iter() {
                        assert_eq!(subtask_for_key_group(max, p, kg), i, "max {max} p {p}");
                    }
                    next = r.end;
                }
                assert_eq!(next as usize, max);
            }
        }
    }

    #[test]
    fn stable_hash_is_fixed_forever() {
        // These values pin the algorithm: changing them breaks restoring old savepoints.
        assert_eq!(
            key_group_of("hello", 128),
            key_group_of(&"hello".to_string(), 128)
        );
        assert_ne!(stable_hash("hello"), stable_hash("hellp"));
        assert_eq!(stable_hash("hello"), 0xca9a_826f_c58f_4ef2);
        assert_eq!(stable_hash(&42u64), 0x2558_5839_4b61_ab76);
    }

    #[test]
    fn short_tails_hash_as_a_zero_padded_word() {
        // What the tail of a key hashed as before the two-load version: its bytes copied into
        // a zeroed word.
        fn padded(rest: &[u8]) -> u64 {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(buf)
        }
        let bytes: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(73).wrapping_add(0x91))
            .collect();
        for n in 1..8 {
            for at in 0..bytes.len() - n {
                let rest = &bytes[at..at + n];
                assert_eq!(load_le_partial(rest), padded(rest), "{rest:?}");
            }
        }
        for m in [1usize, 2, 3, 7, 100, 128, 4096, 32768] {
            for h in [0u64, 1, 127, 128, 0xca9a_826f_c58f_4ef2, u64::MAX] {
                assert_eq!(
                    u64::from(key_group_for_hash(h, m)),
                    h % m as u64,
                    "{h} % {m}"
                );
            }
        }
    }

    #[test]
    fn keys_spread_over_key_groups() {
        let mut counts = [0usize; 128];
        for i in 0..128_000u64 {
            counts[key_group_of(&format!("word{i}"), 128) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700 && c < 1300), "{counts:?}");
    }
}
