//! [`HdfsStorage`]: [`Storage`] on HDFS (`hdfs://` and `viewfs://` URLs) with `hdfs-native`.
//!
//! # Configuration
//! Like the Hadoop tools: `core-site.xml`/`hdfs-site.xml` are read from `$HADOOP_CONF_DIR`
//! (or `$HADOOP_HOME/etc/hadoop`), so nameservices with HA NameNodes, observer reads and
//! ViewFS mount tables work as configured there. `hdfs:///path` (no authority) means the
//! `fs.defaultFS` of that configuration. Keys set with [`configure`] override the files
//! (for example `dfs.client.failover.max.attempts`, see below).
//!
//! # Threads and blocking
//! All I/O runs on one tokio runtime: the handle given to [`configure`] (it must belong to a
//! multi-thread runtime, whose workers drive the sockets), else a 2-thread runtime created on
//! first use and kept for the life of the process. The [`Storage`] methods are synchronous
//! and block the calling thread until `hdfs-native` returns; called from inside a tokio
//! runtime they block a helper thread instead of re-entering the runtime.
//!
//! # Connection loss and cancellation
//! A call cannot be cancelled once started: it runs until `hdfs-native` gives up. On a lost or
//! refused connection `hdfs-native` reconnects, retries reads once, and fails over between
//! the NameNodes of an HA nameservice, sleeping with exponential backoff between rounds, up
//! to `dfs.client.failover.max.attempts` (default 15, i.e. about three minutes against a
//! dead single NameNode with the default `dfs.client.failover.sleep.base.millis=500` and
//! `…sleep.max.millis=15000`). Writes are failed over only when the NameNode provably did
//! not act on them. A stalled DataNode is bounded by `dfs.client.socket-timeout` (60 s).
//! When every attempt fails, the call returns [`StorageError::Io`] naming the URL and the
//! NameNode address(es); it is retryable ([`StorageError::is_retryable`]), so a failed
//! checkpoint is simply retried by the next one. A file whose writer died before `close` is
//! never visible under its final name (see [`Storage::write_atomic`]); its hidden temp file
//! is left behind until HDFS recovers its lease.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use hdfs_native::{Client, ClientBuilder, HdfsError, WriteOptions};
use tokio::runtime::{Handle, Runtime};

use crate::error::{Result, StorageError};
use crate::storage::{DirEntry, Storage, file_name, parent, random_hex12};

/// Process-wide settings for the HDFS clients that [`crate::resolve`] creates.
#[derive(Debug, Clone, Default)]
pub struct HdfsOptions {
    /// Runs all HDFS I/O; `None` = a shared 2-thread runtime created on first use. Must be a
    /// multi-thread runtime.
    pub io_runtime: Option<Handle>,
    /// Hadoop configuration keys that override `core-site.xml`/`hdfs-site.xml`.
    pub config: Vec<(String, String)>,
}

#[derive(Default)]
struct Shared {
    options: HdfsOptions,
    /// One storage (one `Client`) per `scheme://authority`.
    clients: HashMap<String, HdfsStorage>,
}

fn shared() -> &'static Mutex<Shared> {
    static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
    SHARED.get_or_init(Default::default)
}

fn default_runtime() -> Result<Handle> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt.handle().clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-hdfs-io")
        .enable_all()
        .build()
        .map_err(|e| StorageError::Io {
            path: "hdfs".into(),
            source: std::io::Error::new(e.kind(), format!("starting the HDFS I/O runtime: {e}")),
        })?;
    Ok(RUNTIME.get_or_init(|| rt).handle().clone())
}

/// Replaces the options for HDFS clients created from now on and drops the cached clients,
/// so the next [`crate::resolve`] of each authority builds a new one.
pub fn configure(options: HdfsOptions) {
    let mut s = shared().lock().unwrap_or_else(|e| e.into_inner());
    s.options = options;
    s.clients.clear();
}

/// One HDFS namespace (`hdfs://nameservice`, `hdfs://host:port` or `viewfs://cluster`);
/// paths are absolute paths within it. Cloning is cheap and shares the client.
#[derive(Debug, Clone)]
pub struct HdfsStorage {
    scheme: String,
    authority: String,
    client: Arc<Client>,
    handle: Handle,
    /// For error messages: the NameNode address(es) behind the authority.
    namenodes: String,
}

impl HdfsStorage {
    /// The cached storage for `scheme://authority` (`authority` empty = `fs.defaultFS`).
    pub fn for_authority(scheme: &str, authority: &str) -> Result<Self> {
        let scheme = scheme.to_ascii_lowercase();
        let conf = HadoopConf::load();
        let authority = if authority.is_empty() {
            conf.default_authority(&scheme).ok_or_else(|| {
                StorageError::invalid_path(
                    format!("{scheme}:///"),
                    format!(
                        "the URL names no NameNode and fs.defaultFS ({}) is not a {scheme}:// URL \
                         (set HADOOP_CONF_DIR, or write {scheme}://host:port/path)",
                        conf.get("fs.defaultFS").unwrap_or("not set")
                    ),
                )
            })?
        } else {
            authority.to_string()
        };
        let key = format!("{scheme}://{authority}");
        let mut s = shared().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(st) = s.clients.get(&key) {
            return Ok(st.clone());
        }
        let handle = match &s.options.io_runtime {
            Some(h) => h.clone(),
            None => default_runtime()?,
        };
        let mut builder = ClientBuilder::new()
            .with_url(key.clone())
            .with_io_runtime(handle.clone())
            .with_config(s.options.config.clone());
        if let Some(dir) = &conf.dir {
            builder = builder.with_config_dir(dir.to_string_lossy());
        }
        let client = builder
            .build()
            .map_err(|e| StorageError::invalid_path(&key, format!("HDFS client: {e}")))?;
        let st = HdfsStorage {
            namenodes: conf.namenodes(&scheme, &authority),
            scheme,
            authority,
            client: Arc::new(client),
            handle,
        };
        s.clients.insert(key, st.clone());
        Ok(st)
    }

    /// `hdfs` or `viewfs`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The nameservice, `host:port` or ViewFS cluster.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The underlying `hdfs-native` client (for tests and tools; blocking code should use the
    /// [`Storage`] methods).
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Runs `fut` on the I/O runtime and waits for it.
    fn block<T: Send>(&self, fut: impl Future<Output = T> + Send) -> T {
        if Handle::try_current().is_ok() {
            // Blocking inside a runtime would panic (or starve it): wait on a helper thread.
            std::thread::scope(|s| {
                s.spawn(|| self.handle.block_on(fut))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            self.handle.block_on(fut)
        }
    }

    fn err(&self, path: &str, e: HdfsError) -> StorageError {
        let url = self.url(path);
        match e {
            HdfsError::FileNotFound(_) => StorageError::NotFound { path: url },
            HdfsError::RPCError(class, _) if class.ends_with("FileNotFoundException") => {
                StorageError::NotFound { path: url }
            }
            HdfsError::InvalidPath(m) | HdfsError::InvalidArgument(m) => {
                StorageError::invalid_path(url, m)
            }
            HdfsError::IOError(io) => StorageError::Io {
                source: std::io::Error::new(
                    io.kind(),
                    format!(
                        "HDFS NameNode {} unreachable or connection lost \
                         (after hdfs-native's retries and failovers): {io}",
                        self.namenodes
                    ),
                ),
                path: url,
            },
            other => StorageError::Io {
                source: std::io::Error::other(format!(
                    "HDFS (NameNode {}): {other}",
                    self.namenodes
                )),
                path: url,
            },
        }
    }
}

impl Storage for HdfsStorage {
    /// Writes a hidden temp file in the same directory, closes it (which completes the file
    /// on the NameNode), then renames it over `path` (`overwrite`), so readers see the old
    /// file or the whole new one.
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<()> {
        let name = file_name(path);
        if name.is_empty() {
            return Err(StorageError::invalid_path(
                self.url(path),
                "names a directory, not a file",
            ));
        }
        let dir = parent(path);
        let tmp = format!(
            "{}/.{name}.{}.tmp",
            dir.trim_end_matches('/'),
            random_hex12()
        );
        let data = bytes::Bytes::copy_from_slice(bytes);
        let client = &self.client;
        let written = self.block(async {
            let opts = WriteOptions::default().overwrite(false).create_parent(true);
            let mut w = client.create(&tmp, opts).await?;
            w.write_bytes(data).await?;
            w.close().await?;
            client.rename(&tmp, path, true).await
        });
        written.map_err(|e| {
            let _ = self.block(self.client.delete(&tmp, false));
            self.err(path, e)
        })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let client = &self.client;
        self.block(async {
            let r = client.read(path).await?;
            let len = r.file_length();
            r.read_range(0, len).await
        })
        .map(|b| b.to_vec())
        .map_err(|e| self.err(path, e))
    }

    fn exists(&self, path: &str) -> Result<bool> {
        match self.block(self.client.get_file_info(path)) {
            Ok(_) => Ok(true),
            Err(e) => match self.err(path, e) {
                StorageError::NotFound { .. } => Ok(false),
                e => Err(e),
            },
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        let statuses = self
            .block(self.client.list_status(dir, false))
            .map_err(|e| self.err(dir, e))?;
        Ok(statuses
            .into_iter()
            .map(|s| DirEntry {
                name: file_name(&s.path).to_string(),
                is_dir: s.isdir,
                len: if s.isdir { 0 } else { s.length as u64 },
            })
            .collect())
    }

    fn mkdirs(&self, dir: &str) -> Result<()> {
        self.block(self.client.mkdirs(dir, 0o755, true))
            .map_err(|e| self.err(dir, e))
    }

    fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        // `false` = nothing was there: fine, cleanup may be repeated.
        match self.block(self.client.delete(path, recursive)) {
            Ok(_) => Ok(()),
            Err(e) => match self.err(path, e) {
                StorageError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    /// HDFS refuses to rename onto an existing path.
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.block(self.client.rename(from, to, false))
            .map_err(|e| self.err(&format!("{from} -> {}", self.url(to)), e))
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.authority)
    }
}

/// The few keys of the Hadoop configuration this module needs itself (`hdfs-native` reads
/// the same files for everything else).
struct HadoopConf {
    dir: Option<PathBuf>,
    map: HashMap<String, String>,
}

impl HadoopConf {
    fn load() -> Self {
        let dir = std::env::var_os("HADOOP_CONF_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HADOOP_HOME").map(|h| PathBuf::from(h).join("etc/hadoop"))
            })
            .filter(|d| d.is_dir());
        let mut map = HashMap::new();
        if let Some(d) = &dir {
            for f in ["core-site.xml", "hdfs-site.xml"] {
                let Ok(text) = std::fs::read_to_string(d.join(f)) else {
                    continue;
                };
                let Ok(doc) = roxmltree::Document::parse(&text) else {
                    continue; // hdfs-native reports a broken file when it builds the client
                };
                for p in doc.descendants().filter(|n| n.has_tag_name("property")) {
                    let child = |tag: &str| {
                        p.children()
                            .find(|c| c.has_tag_name(tag))
                            .and_then(|c| c.text())
                            .map(|t| t.trim().to_string())
                    };
                    if let (Some(k), Some(v)) = (child("name"), child("value")) {
                        map.insert(k, v);
                    }
                }
            }
        }
        HadoopConf { dir, map }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// The authority of `fs.defaultFS` when it is a `scheme://` URL.
    fn default_authority(&self, scheme: &str) -> Option<String> {
        let fs = self.get("fs.defaultFS")?;
        let (s, rest) = fs.split_once("://")?;
        let auth = rest.split('/').next()?;
        (s.eq_ignore_ascii_case(scheme) && !auth.is_empty()).then(|| auth.to_string())
    }

    /// `host:port`, or the RPC addresses of a nameservice's NameNodes.
    fn namenodes(&self, scheme: &str, authority: &str) -> String {
        if scheme == "viewfs" {
            return format!("of ViewFS cluster {authority} (see its mount table)");
        }
        let Some(ids) = self.get(&format!("dfs.ha.namenodes.{authority}")) else {
            return authority.to_string();
        };
        let addrs: Vec<&str> = ids
            .split(',')
            .filter_map(|id| {
                self.get(&format!(
                    "dfs.namenode.rpc-address.{authority}.{}",
                    id.trim()
                ))
            })
            .collect();
        format!("{authority} ({})", addrs.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::resolve;

    #[test]
    fn resolves_hdfs_urls_per_authority() {
        let (s, p) = resolve("hdfs://nn.example:8020/a/./b/../c/").unwrap();
        assert_eq!(p, "/a/c");
        assert_eq!(s.url(&p), "hdfs://nn.example:8020/a/c");
        let (s, p) = resolve("HDFS://nn.example:8020").unwrap();
        assert_eq!(s.url(&p), "hdfs://nn.example:8020/");
        let e = resolve("hdfs:/no/authority").unwrap_err();
        assert!(e.to_string().contains("hdfs:/no/authority"), "{e}");
    }

    #[test]
    fn an_unreachable_namenode_is_a_retryable_error_naming_url_and_address() {
        configure(HdfsOptions {
            io_runtime: None,
            config: vec![
                ("dfs.client.failover.max.attempts".into(), "1".into()),
                ("dfs.client.failover.sleep.base.millis".into(), "50".into()),
            ],
        });
        let (s, p) = resolve("hdfs://127.0.0.1:1/x").unwrap();
        let t = std::time::Instant::now();
        let e = s.read(&p).unwrap_err();
        assert!(e.is_retryable(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("hdfs://127.0.0.1:1/x") && msg.contains("NameNode 127.0.0.1:1"),
            "{msg}"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            t.elapsed()
        );
        // Also from inside a tokio runtime.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = rt.block_on(async { s.exists(&p) }).unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }
}
