//! Storage behind one URL scheme, and [`resolve`], which picks it for a URL.
//!
//! Paths inside a storage are `/`-separated absolute strings (for [`LocalStorage`] the
//! filesystem path itself). The trait is synchronous on purpose: checkpoint I/O runs on its
//! own threads, and an HDFS implementation can block on an injected tokio runtime.

use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, StorageError};
use crate::hadoop_conf::HadoopConf;
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

    /// Like [`Storage::write_atomic`], with the bytes coming from `src` chunk by chunk, so a
    /// large file is never whole in memory. The default collects the chunks first.
    fn write_atomic_from(&self, path: &str, src: &dyn ChunkSource) -> Result<()> {
        let mut all = Vec::with_capacity(usize::try_from(src.len()).unwrap_or(0));
        let mut chunks = src.open()?;
        while let Some(c) = chunks.next_chunk()? {
            all.extend_from_slice(&c);
        }
        self.write_atomic(path, &all)
    }

    /// Hands the file to `sink` chunk by chunk, in order; returns its length. `NotFound` when
    /// it does not exist. The default reads it whole first.
    fn read_to(&self, path: &str, sink: &mut ChunkSink<'_>) -> Result<u64> {
        let bytes = self.read(path)?;
        sink(&bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Makes `path` another name of the local file `local` (a hard link), when this storage is
    /// the local filesystem and the file is on the same device; `Ok(false)` when it cannot, and
    /// the caller copies instead. Only for files nobody modifies in place (RocksDB's SST files):
    /// the copy survives the deletion of `local`, but shares its bytes.
    fn link_from_local(&self, _path: &str, _local: &Path) -> Result<bool> {
        Ok(false)
    }

    /// The other way round: makes the local path `local` a hard link of `path`, if it can.
    fn link_to_local(&self, _path: &str, _local: &Path) -> Result<bool> {
        Ok(false)
    }

    /// Makes the names created in `dir` (by [`Storage::link_from_local`]) durable.
    fn sync_dir(&self, _dir: &str) -> Result<()> {
        Ok(())
    }
}

/// Receives the chunks of a file being read, in order.
pub type ChunkSink<'a> = dyn FnMut(&[u8]) -> Result<()> + Send + 'a;

/// The bytes of a file to write, produced in chunks; each [`ChunkSource::open`] starts again
/// from the first byte (a retried write writes the whole file again).
pub trait ChunkSource: Sync {
    /// The number of bytes each pass yields.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn open(&self) -> Result<Box<dyn ChunkIter + '_>>;
}

/// One pass over a [`ChunkSource`].
pub trait ChunkIter: Send {
    /// The next chunk, or `None` after the last.
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>>;
}

/// Bytes already in memory, in pieces of `chunk` bytes (no copy).
pub struct BytesSource {
    pub bytes: bytes::Bytes,
    pub chunk: usize,
}

impl ChunkSource for BytesSource {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn open(&self) -> Result<Box<dyn ChunkIter + '_>> {
        Ok(Box::new(BytesChunks {
            bytes: self.bytes.clone(),
            chunk: self.chunk.max(1),
        }))
    }
}

struct BytesChunks {
    bytes: bytes::Bytes,
    chunk: usize,
}

impl ChunkIter for BytesChunks {
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        if self.bytes.is_empty() {
            return Ok(None);
        }
        let n = self.chunk.min(self.bytes.len());
        Ok(Some(self.bytes.split_to(n)))
    }
}

/// Picks the storage for a URL: `file:///abs/path` (also `file:/abs/path` and
/// `file://localhost/abs/path`) => [`LocalStorage`]; `hdfs://authority/path`,
/// `viewfs://cluster/path` and `hdfs:///path` (the authority of `fs.defaultFS`) =>
/// [`HdfsStorage`], one cached client per authority (building it connects to nothing yet).
/// Any other scheme => `UnsupportedScheme` naming the URL.
///
/// A path without a scheme is resolved like Hadoop resolves a `Path`: against `fs.defaultFS`
/// of the Hadoop configuration (`$HADOOP_CONF_DIR`, else `$HADOOP_HOME/etc/hadoop`), so
/// `/sluice/checkpoints` is `hdfs://namenode/sluice/checkpoints` when `fs.defaultFS` is
/// `hdfs://namenode`, and a relative path is relative to the HDFS home directory
/// `/user/<user>` (`HADOOP_USER_NAME`, else the OS user). Without a Hadoop configuration, or with
/// `fs.defaultFS` on `file:`, it is a local path (a relative one resolved against the current
/// directory).
///
/// Returns the storage and the normalized path within it (`.`, `..`, `//` and a trailing `/`
/// removed). URLs are not percent-decoded: `file:///a b` is the path `/a b`.
pub fn resolve(url: &str) -> Result<(Arc<dyn Storage>, String)> {
    resolve_with(url, &HadoopConf::load())
}

/// [`resolve`] with a given Hadoop configuration instead of the one the environment names.
pub(crate) fn resolve_with(url: &str, conf: &HadoopConf) -> Result<(Arc<dyn Storage>, String)> {
    if url.is_empty() {
        return Err(StorageError::invalid_path(url, "the path is empty"));
    }
    if url.contains('\0') {
        return Err(StorageError::invalid_path(
            url,
            "the path contains a NUL byte",
        ));
    }
    match split_scheme(url) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("file") => {
            local(file_url_path(url, rest)?)
        }
        Some((scheme, rest)) if is_hdfs_scheme(scheme) => {
            let Some(after) = rest.strip_prefix("//") else {
                return Err(StorageError::invalid_path(
                    url,
                    format!("write {scheme}://namenode/path or {scheme}:///path"),
                ));
            };
            let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
            hdfs(scheme, authority, path, conf)
        }
        Some(_) => Err(StorageError::UnsupportedScheme {
            url: url.to_string(),
        }),
        None => match conf.default_fs() {
            None => local_plain(url),
            Some(default_fs) => on_default_fs(url, default_fs, conf),
        },
    }
}

fn is_hdfs_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("hdfs") || scheme.eq_ignore_ascii_case("viewfs")
}

fn local(path: String) -> Result<(Arc<dyn Storage>, String)> {
    Ok((Arc::new(LocalStorage), normalize(&path)))
}

fn hdfs(
    scheme: &str,
    authority: &str,
    path: &str,
    conf: &HadoopConf,
) -> Result<(Arc<dyn Storage>, String)> {
    let storage = HdfsStorage::for_authority_in(scheme, authority, conf)?;
    Ok((Arc::new(storage), normalize(path)))
}

/// A plain path on the local filesystem; a relative one is relative to the current directory.
fn local_plain(path: &str) -> Result<(Arc<dyn Storage>, String)> {
    if path.starts_with('/') {
        return local(path.to_string());
    }
    let cwd = std::env::current_dir().map_err(|e| StorageError::from_io(".", e))?;
    let cwd = cwd.to_str().ok_or_else(|| {
        StorageError::invalid_path(path, "the current directory is not valid UTF-8")
    })?;
    local(join(cwd, path))
}

/// A plain path on `fs.defaultFS`, as Hadoop qualifies a `Path` without a scheme.
fn on_default_fs(
    path: &str,
    default_fs: &str,
    conf: &HadoopConf,
) -> Result<(Arc<dyn Storage>, String)> {
    let unusable = |why: &str| {
        StorageError::invalid_path(
            path,
            format!(
                "a path without a scheme is on fs.defaultFS = {default_fs} (Hadoop configuration \
                 in {}), which {why}; write a file:// or hdfs:// URL",
                conf.dir.as_deref().unwrap_or(Path::new("?")).display()
            ),
        )
    };
    let Some((scheme, rest)) = split_scheme(default_fs) else {
        return Err(unusable("is not a URL"));
    };
    if scheme.eq_ignore_ascii_case("file") {
        return local_plain(path);
    }
    if !is_hdfs_scheme(scheme) {
        return Err(unusable("is not a file, hdfs or viewfs URL"));
    }
    let authority = rest
        .strip_prefix("//")
        .and_then(|a| a.split('/').next())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| unusable("names no NameNode"))?;
    if path.starts_with('/') {
        return hdfs(scheme, authority, path, conf);
    }
    let user = hdfs_user().ok_or_else(|| {
        unusable("makes a relative path relative to /user/<user>, but the user is unknown")
    })?;
    hdfs(scheme, authority, &format!("/user/{user}/{path}"), conf)
}

/// The user HDFS sees without Kerberos, as `hdfs-native` (and Hadoop) determine it:
/// `HADOOP_USER_NAME`, else the operating system's user.
fn hdfs_user() -> Option<String> {
    std::env::var("HADOOP_USER_NAME")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| whoami::username().ok())
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
    use crate::hadoop_conf::write_conf_dir;

    /// Without a Hadoop configuration, whatever the environment of the test run says.
    fn path_of(url: &str) -> String {
        resolve_with(url, &HadoopConf::default()).unwrap().1
    }

    fn url_of(url: &str, conf: &HadoopConf) -> String {
        let (s, p) = resolve_with(url, conf).unwrap();
        s.url(&p)
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
        let none = HadoopConf::default();
        let e = resolve_with("s3://bucket/ckpt", &none).unwrap_err();
        assert!(matches!(e, StorageError::UnsupportedScheme { .. }), "{e}");
        assert!(e.to_string().contains("s3://bucket/ckpt"), "{e}");
        let e = resolve_with("file://tmp/x", &none).unwrap_err();
        assert!(matches!(e, StorageError::InvalidPath { .. }), "{e}");
        assert!(e.to_string().contains("file://tmp/x"), "{e}");
        assert!(matches!(
            resolve_with("", &none).unwrap_err(),
            StorageError::InvalidPath { .. }
        ));
    }

    #[test]
    fn a_path_without_a_scheme_is_on_the_default_fs_of_the_hadoop_config() {
        let d = tempfile::tempdir().unwrap();
        let conf = write_conf_dir(d.path(), &[("fs.defaultFS", "hdfs://nn.example:8020")], &[]);
        assert_eq!(
            url_of("/sluice/ckpt/./a/", &conf),
            "hdfs://nn.example:8020/sluice/ckpt/a"
        );
        let user = hdfs_user().unwrap();
        assert_eq!(
            url_of("ckpt", &conf),
            format!("hdfs://nn.example:8020/user/{user}/ckpt"),
            "relative to the HDFS home directory, as in Hadoop"
        );
        // URLs with a scheme are not affected.
        assert_eq!(url_of("file:///tmp/x", &conf), "file:///tmp/x");
        assert_eq!(url_of("hdfs://other:1/x", &conf), "hdfs://other:1/x");
        assert_eq!(url_of("hdfs:///x", &conf), "hdfs://nn.example:8020/x");

        // A nameservice.
        let conf = write_conf_dir(
            d.path(),
            &[("fs.defaultFS", "hdfs://ns1/")],
            &[
                ("dfs.nameservices", "ns1"),
                ("dfs.ha.namenodes.ns1", "nn1,nn2"),
                ("dfs.namenode.rpc-address.ns1.nn1", "a.example:8020"),
                ("dfs.namenode.rpc-address.ns1.nn2", "b.example:8020"),
            ],
        );
        assert_eq!(url_of("/a", &conf), "hdfs://ns1/a");

        // fs.defaultFS on the local filesystem, or not set (Hadoop's default file:///).
        let conf = write_conf_dir(d.path(), &[("fs.defaultFS", "file:///")], &[]);
        assert_eq!(url_of("/tmp/x", &conf), "file:///tmp/x");
        let conf = write_conf_dir(d.path(), &[], &[]);
        assert_eq!(url_of("/tmp/x", &conf), "file:///tmp/x");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            url_of("rel", &conf),
            format!("file://{}/rel", cwd.display())
        );

        // No Hadoop configuration at all: a local path.
        assert_eq!(
            url_of("/sluice/ckpt", &HadoopConf::default()),
            "file:///sluice/ckpt"
        );

        // A default filesystem Sluice cannot use is an error naming it.
        let conf = write_conf_dir(d.path(), &[("fs.defaultFS", "s3a://bucket")], &[]);
        let e = resolve_with("/x", &conf).err().unwrap().to_string();
        assert!(e.contains("/x") && e.contains("s3a://bucket"), "{e}");
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
