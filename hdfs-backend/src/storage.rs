//! Storage behind one URL scheme, and [`resolve`], which picks it for a URL.
//!
//! Paths inside a storage are `/`-separated absolute strings (for [`LocalStorage`] the
//! filesystem path itself). The trait is synchronous on purpose: checkpoint I/O runs on its
//! own threads, and an HDFS implementation can block on an injected tokio runtime.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, StorageError};
use crate::hdfs::HdfsStorage;
use crate::local::LocalStorage;

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name within the directory (no separators).
    pub name: String,
    pub is_dir: bool,
    /// Length in bytes; 0 for directories.
    pub len: u64,
}

pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Writes to a temporary name in the same directory, syncs it, then renames it over `path`,
    /// so readers never see half a file. Creates missing parent directories.
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<()>;
    /// The whole file; `NotFound` when it does not exist.
    fn read(&self, path: &str) -> Result<Vec<u8>>;
    fn exists(&self, path: &str) -> Result<bool>;
    /// The entries of `dir`, in no particular order; `NotFound` when it does not exist.
    fn list(&self, dir: &str) -> Result<Vec<DirEntry>>;
    /// Creates `dir` and its missing parents; an existing directory is fine.
    fn mkdirs(&self, dir: &str) -> Result<()>;
    /// Deletes a file, or a directory (non-empty ones only when `recursive`). A missing path
    /// is `Ok`, so cleanup can be repeated after a crash.
    fn delete(&self, path: &str, recursive: bool) -> Result<()>;
    /// Renames `from` to `to`; `to` should not exist (what happens if it does depends on the
    /// storage, as it does between POSIX and HDFS).
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// `path` as a URL a user can paste back into Sluice (`file:///tmp/x`, `hdfs://nn/x`).
    fn url(&self, path: &str) -> String {
        path.to_string()
    }
}

/// Picks the storage for a URL: `file:///abs/path` (also `file:/abs/path` and
/// `file://localhost/abs/path`), or a plain path (a relative one resolved against the current
/// directory) => [`LocalStorage`]; `hdfs://authority/path`, `viewfs://cluster/path` and
/// `hdfs:///path` (the authority of `fs.defaultFS`) => [`HdfsStorage`], one cached client per
/// authority (building it connects to nothing yet). Plain paths stay local even when
/// `fs.defaultFS` is HDFS. Any other scheme => `UnsupportedScheme` naming the URL.
/// Returns the storage and the normalized path within it (`.`, `..`, `//` and a trailing `/`
/// removed). URLs are not percent-decoded: `file:///a b` is the path `/a b`.
pub fn resolve(url: &str) -> Result<(Arc<dyn Storage>, String)> {
    if url.is_empty() {
        return Err(StorageError::invalid_path(url, "the path is empty"));
    }
    if url.contains('\0') {
        return Err(StorageError::invalid_path(
            url,
            "the path contains a NUL byte",
        ));
    }
    let path = match split_scheme(url) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("file") => file_url_path(url, rest)?,
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("hdfs") || scheme.eq_ignore_ascii_case("viewfs") =>
        {
            let Some(after) = rest.strip_prefix("//") else {
                return Err(StorageError::invalid_path(
                    url,
                    format!("write {scheme}://namenode/path or {scheme}:///path"),
                ));
            };
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            let storage = HdfsStorage::for_authority(scheme, authority)?;
            return Ok((Arc::new(storage), normalize(path)));
        }
        Some(_) => {
            return Err(StorageError::UnsupportedScheme {
                url: url.to_string(),
            });
        }
        None if url.starts_with('/') => url.to_string(),
        None => {
            let cwd = std::env::current_dir().map_err(|e| StorageError::from_io(".", e))?;
            let cwd = cwd.to_str().ok_or_else(|| {
                StorageError::invalid_path(url, "the current directory is not valid UTF-8")
            })?;
            join(cwd, url)
        }
    };
    Ok((Arc::new(LocalStorage), normalize(&path)))
}

/// `scheme:rest` when `url` starts with a URL scheme followed by `/`. Schemes are at least two
/// characters so that a drive letter or a relative name like `a:b` stays a path.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once(':')?;
    let mut chars = scheme.chars();
    let valid = scheme.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (valid && rest.starts_with('/')).then_some((scheme, rest))
}

fn file_url_path(url: &str, rest: &str) -> Result<String> {
    let Some(after) = rest.strip_prefix("//") else {
        return Ok(rest.to_string()); // file:/abs/path, as Java writes it
    };
    let (host, path) = after.split_at(after.find('/').unwrap_or(after.len()));
    if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
        return Err(StorageError::invalid_path(
            url,
            format!("a file URL names no host (got '{host}'); write file:///absolute/path"),
        ));
    }
    if path.is_empty() {
        return Err(StorageError::invalid_path(url, "the URL has no path"));
    }
    Ok(path.to_string())
}

/// Lexically normalizes an absolute `/`-separated path.
pub(crate) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent of a normalized absolute path (`/` for `/x` and for `/`).
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last component of a normalized path.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// 48 bits that differ between calls, threads and processes: for savepoint and temp names.
/// `RandomState` is seeded randomly per process; the counter and clock separate calls.
pub(crate) fn random_hex12() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(url: &str) -> String {
        resolve(url).unwrap().1
    }

    #[test]
    fn resolves_file_urls_and_plain_paths() {
        assert_eq!(path_of("file:///tmp/a/b"), "/tmp/a/b");
        assert_eq!(path_of("file:/tmp/a/b/"), "/tmp/a/b");
        assert_eq!(path_of("FILE://localhost/tmp//a/./c/../b"), "/tmp/a/b");
        assert_eq!(path_of("/tmp/x:y"), "/tmp/x:y");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(path_of("rel/dir"), format!("{}/rel/dir", cwd.display()));
        assert_eq!(path_of("a:b"), format!("{}/a:b", cwd.display()));
    }

    #[test]
    fn rejects_other_schemes_and_file_hosts() {
        let e = resolve("s3://bucket/ckpt").unwrap_err();
        assert!(matches!(e, StorageError::UnsupportedScheme { .. }), "{e}");
        assert!(e.to_string().contains("s3://bucket/ckpt"), "{e}");
        let e = resolve("file://tmp/x").unwrap_err();
        assert!(matches!(e, StorageError::InvalidPath { .. }), "{e}");
        assert!(e.to_string().contains("file://tmp/x"), "{e}");
        assert!(matches!(
            resolve("").unwrap_err(),
            StorageError::InvalidPath { .. }
        ));
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(file_name("/a/b"), "b");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/a", "x"), "/a/x");
        assert_ne!(random_hex12(), random_hex12());
        assert_eq!(random_hex12().len(), 12);
    }
}
