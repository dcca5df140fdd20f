//! Keys and key selectors. A key selector is a plain generic closure so keyed exchanges and
//! keyed operators call it directly (no virtual call per record); a borrowing selector avoids
//! cloning the key just to hash it or look up its state.

use std::hash::Hash;

use crate::data::Data;
use sluice_core::keygroup::stable_hash;

/// A key: serialisable (state lives under it), hashable with a stable hash (it picks the key
/// group) and comparable. A type without these cannot be a key, so such a job does not compile:
///
/// ```compile_fail
/// use sluice_worker::Key;
/// fn needs_key<K: Key>() {}
/// struct NotSerializable;
/// needs_key::<NotSerializable>();
/// ```
///
/// Floating-point numbers are not keys (no stable equality):
///
/// ```compile_fail
/// use sluice_worker::Key;
/// fn needs_key<K: Key>() {}
/// needs_key::<f64>();
/// ```
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}

pub trait KeySelector<T>: Clone + Send + Sync + 'static {
    type Key: Key;
    /// The owned key of a record.
    fn key_of(&self, record: &T) -> Self::Key;
    /// Runs `f` on the record's key without cloning it where the selector can lend it.
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&Self::Key) -> R) -> R;
    /// The stable hash of the record's key.
    #[inline]
    fn hash_of(&self, record: &T) -> u64 {
        self.with_key(record, stable_hash)
    }
}

/// A selector that computes an owned key: `key_by(|r| r.user_id)`.
pub struct OwnedKey<F>(pub F);

impl<F: Clone> Clone for OwnedKey<F> {
    fn clone(&self) -> Self {
        OwnedKey(self.0.clone())
    }
}

impl<T, K: Key, F> KeySelector<T> for OwnedKey<F>
where
    F: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    type Key = K;
    #[inline]
    fn key_of(&self, record: &T) -> K {
        (self.0)(record)
    }
    #[inline]
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&K) -> R) -> R {
        f(&(self.0)(record))
    }
}

/// A selector that lends a field of the record: `key_by_field(|r| &r.0)`.
pub struct FieldKey<F>(pub F);

impl<F: Clone> Clone for FieldKey<F> {
    fn clone(&self) -> Self {
        FieldKey(self.0.clone())
    }
}

impl<T, K: Key, F> KeySelector<T> for FieldKey<F>
where
    F: for<'a> Fn(&'a T) -> &'a K + Clone + Send + Sync + 'static,
{
    type Key = K;
    #[inline]
    fn key_of(&self, record: &T) -> K {
        (self.0)(record).clone()
    }
    #[inline]
    fn with_key<R>(&self, record: &T, f: impl FnOnce(&K) -> R) -> R {
        f((self.0)(record))
    }
}
