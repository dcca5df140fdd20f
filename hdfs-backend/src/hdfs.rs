//! [`HdfsStorage`]: [`Storage`] on HDFS (`hdfs://` and `viewfs://` URLs) with `hdfs-native`.
//!
//! # Configuration
//! Like the Hadoop tools: `core-site.xml`/`hdfs-site.xml` are read from `$HADOOP_CONF_DIR`
//! (or `$HADOOP_HOME/etc/hadoop`), so nameservices with HA NameNodes, observer reads and
//! ViewFS mount tables work as configured there. `hdfs:///path` (no authority) and a path
//! without a scheme (see [`crate::resolve`]) mean the `fs.defaultFS` of that configuration.
//! Keys given to [`configure`] (from the job configuration: [`HdfsOptions::from_config`])
//! override the files.
//!
//! # Failing fast when the NameNode is gone
//! The client keys of [`keys`], with Hadoop's names, bound how long a call waits for a
//! NameNode; a value from [`configure`] wins over one from the Hadoop files, which wins over
//! Sluice's default ([`CLIENT_DEFAULTS`]). Sluice's defaults are lower than Hadoop's, because a
//! checkpoint that fails is simply retried by the next one, while one that hangs for minutes
//! holds the checkpoint I/O threads and hides the outage:
//!
//! | key | Sluice | Hadoop / hdfs-native | what it bounds |
//! | --- | --- | --- | --- |
//! | `dfs.client.failover.max.attempts` | 3 | 15 | reconnects/failovers per call |
//! | `dfs.client.failover.sleep.base.millis` | 200 | 500 | first backoff (doubles per round) |
//! | `dfs.client.failover.sleep.max.millis` | 1000 | 15000 | longest backoff |
//! | `ipc.client.rpc-timeout.ms` | 10000 | 120000 (`0`: none) | one NameNode call, enforced by Sluice |
//! | `dfs.client.socket-timeout` | (Hadoop's) | 60000 | a silent DataNode |
//! | `dfs.client.block.write.retries` | (Hadoop's) | 3 | rewrites of a file a DataNode failed, enforced by Sluice |
//!
//! With Sluice's defaults a call against a NameNode that refuses connections (its process is
//! gone) fails after four attempts and about 2 s of backoff; with Hadoop's, after about three
//! minutes. `hdfs-native` has no timeout on NameNode calls of its own, so a NameNode that
//! accepts connections but does not answer (stopped, or stuck in a long GC pause) would block
//! a call forever: Sluice bounds every NameNode call it makes (create, rename, delete,
//! mkdirs, listing, file status, opening a file) with `ipc.client.rpc-timeout.ms`. Writing a
//! file's data involves NameNode calls Sluice cannot separate (a new block, completing the
//! file) and DataNode acknowledgements (bounded by `dfs.client.socket-timeout` in
//! `hdfs-native`), and a large file takes as long as it takes: a write fails once a 4 MiB
//! chunk, or closing the file, made no progress for `ipc.client.rpc-timeout.ms +
//! dfs.client.socket-timeout` (70 s by default). Reading data is bounded by
//! `dfs.client.socket-timeout` per read. A checkpoint as a whole is bounded by
//! `execution.checkpointing.timeout`.
//!
//! A call Sluice stops waiting for is abandoned, not undone: a stopped NameNode that continues
//! still executes the calls queued on its socket, so a timed-out create or rename may take
//! effect after the error (the checkpoint it belonged to has failed by then; its directory is
//! discarded or left for retention).
//!
//! Not honoured (`hdfs-native` has no such setting): `ipc.client.connect.timeout` and
//! `ipc.client.connect.max.retries`. A refused connection is retried by the failover loop
//! above; a connection attempt to a host that does not answer at all (down, or dropping
//! packets) lasts until the OS gives up, about two minutes on Linux, so
//! `ipc.client.rpc-timeout.ms` ends the call first.
//!
//! # HA nameservices
//! `hdfs-native` tries the NameNodes of a nameservice starting with the last one that
//! answered and moves on only when one fails, so an active NameNode that hangs (its host is
//! down, its process stopped) would hold every call until the timeout, and the standby that
//! took over would never be tried. After a NameNode call of an HA nameservice times out,
//! the next [`crate::resolve`] therefore gets a new client that tries the NameNodes in rotated
//! order (the next one first).
//!
//! # Threads and blocking
//! All I/O runs on one tokio runtime: the handle given to [`configure`] (it must belong to a
//! multi-thread runtime with timers enabled, whose workers drive the sockets), else a
//! 2-thread runtime created on first use and kept for the life of the process. The
//! [`Storage`] methods are synchronous and block the calling thread until `hdfs-native`
//! returns; called from inside a tokio runtime they block a helper thread instead of
//! re-entering the runtime.
//!
//! # Connection loss
//! On a lost or refused connection `hdfs-native` reconnects, retries reads once, and fails
//! over between the NameNodes of an HA nameservice, sleeping with exponential backoff between
//! rounds, up to `dfs.client.failover.max.attempts`. Writes are failed over only when the
//! NameNode provably did not act on them. When every attempt fails, or the call times out,
//! the call returns [`StorageError::Io`] naming the URL and the NameNode address(es); it is
//! retryable ([`StorageError::is_retryable`]), so a failed checkpoint is simply retried by the
//! next one. A file whose writer died before `close` is never visible under its final name
//! (see [`Storage::write_atomic`]); its hidden temp file is left behind until HDFS recovers
//! its lease.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hdfs_native::{Client, ClientBuilder, HdfsError, WriteOptions};
use sluice_core::Config;
use tokio::runtime::{Handle, Runtime};

use crate::error::{Result, StorageError};
use crate::hadoop_conf::HadoopConf;
use crate::storage::{
    BytesSource, ChunkSink, ChunkSource, DirEntry, Storage, file_name, parent, random_hex12,
};

/// The Hadoop client keys that bound how long an HDFS call waits (see the module
/// documentation for what each bounds).
pub mod keys {
    /// Reconnects (to the same NameNode) and failovers (between HA NameNodes) per call.
    pub const FAILOVER_MAX_ATTEMPTS: &str = "dfs.client.failover.max.attempts";
    /// The first backoff between rounds of attempts, in ms; doubled per round, with jitter.
    pub const FAILOVER_SLEEP_BASE_MILLIS: &str = "dfs.client.failover.sleep.base.millis";
    /// The longest backoff between rounds of attempts, in ms.
    pub const FAILOVER_SLEEP_MAX_MILLIS: &str = "dfs.client.failover.sleep.max.millis";
    /// How long one NameNode call may take in all (attempts, backoff and answer), in ms;
    /// `0` = no limit. Enforced by Sluice.
    pub const RPC_TIMEOUT_MS: &str = "ipc.client.rpc-timeout.ms";
    /// How long a DataNode may stay silent during a read or write, in ms; `0` = no limit.
    pub const SOCKET_TIMEOUT: &str = "dfs.client.socket-timeout";
    /// How often a file whose data failed on a DataNode is written again (Hadoop: how often
    /// a block is retried on other DataNodes); default 3. Enforced by Sluice.
    pub const BLOCK_WRITE_RETRIES: &str = "dfs.client.block.write.retries";
}

/// Sluice's defaults for the keys of [`keys`], used when neither [`configure`] nor the Hadoop
/// configuration files set them. (`dfs.client.socket-timeout` keeps Hadoop's 60 s.)
pub const CLIENT_DEFAULTS: &[(&str, &str)] = &[
    (keys::FAILOVER_MAX_ATTEMPTS, "3"),
    (keys::FAILOVER_SLEEP_BASE_MILLIS, "200"),
    (keys::FAILOVER_SLEEP_MAX_MILLIS, "1000"),
    (keys::RPC_TIMEOUT_MS, "10000"),
];

/// Job configuration keys with these prefixes are Hadoop client keys, passed to the HDFS
/// client by [`HdfsOptions::from_config`].
pub const PASSED_THROUGH_PREFIXES: &[&str] = &["dfs.", "ipc."];

/// Process-wide settings for the HDFS clients that [`crate::resolve`] creates.
#[derive(Debug, Clone, Default)]
pub struct HdfsOptions {
    /// Runs all HDFS I/O; `None` = a shared 2-thread runtime created on first use. Must be a
    /// multi-thread runtime with timers enabled.
    pub io_runtime: Option<Handle>,
    /// Hadoop configuration keys that override `core-site.xml`/`hdfs-site.xml`.
    pub config: Vec<(String, String)>,
}

impl HdfsOptions {
    /// The Hadoop client keys of a job configuration: every key starting with one of
    /// [`PASSED_THROUGH_PREFIXES`] (`dfs.client.failover.max.attempts: 5`,
    /// `ipc.client.rpc-timeout.ms: 30000`, ...), verbatim. The caller installs them with
    /// [`configure`] before the job's first checkpoint I/O.
    pub fn from_config(config: &Config) -> Self {
        HdfsOptions {
            io_runtime: None,
            config: config
                .explicit()
                .iter()
                .filter(|(k, _)| PASSED_THROUGH_PREFIXES.iter().any(|p| k.starts_with(p)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

#[derive(Default)]
struct Shared {
    options: HdfsOptions,
    /// One storage (one `Client`) per `scheme://authority`.
    clients: HashMap<String, HdfsStorage>,
    /// Per HA nameservice (`hdfs://ns`): by how many places the next client rotates the order
    /// in which it tries the NameNodes (see [`HdfsStorage::nn`]).
    rotations: HashMap<String, usize>,
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
    s.rotations.clear();
}

/// The client settings for the keys of [`keys`] and any other given key: `options` first,
/// then the Hadoop files (left to `hdfs-native`, which reads them itself), then
/// [`CLIENT_DEFAULTS`]. Returns what to pass to the client on top of the files.
fn client_config(options: &[(String, String)], files: &HadoopConf) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = options.iter().cloned().collect();
    for (k, v) in CLIENT_DEFAULTS {
        if !out.contains_key(*k) && files.get(k).is_none() {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
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
    /// `ipc.client.rpc-timeout.ms`; `None` = no limit.
    rpc_timeout: Option<Duration>,
    /// The effective value of each key of [`keys`].
    settings: Arc<HashMap<String, String>>,
    /// The NameNodes of an HA nameservice; 0 for `host:port` and ViewFS.
    ha_namenodes: usize,
}

impl HdfsStorage {
    /// The cached storage for `scheme://authority` (`authority` empty = `fs.defaultFS`), with
    /// the Hadoop configuration the environment names.
    pub fn for_authority(scheme: &str, authority: &str) -> Result<Self> {
        Self::for_authority_in(scheme, authority, &HadoopConf::load())
    }

    pub(crate) fn for_authority_in(
        scheme: &str,
        authority: &str,
        conf: &HadoopConf,
    ) -> Result<Self> {
        let scheme = scheme.to_ascii_lowercase();
        let authority = if authority.is_empty() {
            conf.default_authority(&scheme).ok_or_else(|| {
                StorageError::invalid_path(
                    format!("{scheme}:///"),
                    format!(
                        "the URL names no NameNode and fs.defaultFS ({}) is not a {scheme}:// URL \
                         (set HADOOP_CONF_DIR, or write {scheme}://host:port/path)",
                        conf.get(crate::hadoop_conf::DEFAULT_FS)
                            .unwrap_or("not set")
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
        let rotation = s.rotations.get(&key).copied().unwrap_or(0);
        let st = Self::build(&scheme, &authority, conf, &s.options, rotation)?;
        s.clients.insert(key, st.clone());
        Ok(st)
    }

    /// A new client for `scheme://authority` (both given, lower case), not cached; for an HA
    /// nameservice, trying its NameNodes in the configured order rotated by `rotation`.
    fn build(
        scheme: &str,
        authority: &str,
        conf: &HadoopConf,
        options: &HdfsOptions,
        rotation: usize,
    ) -> Result<Self> {
        let key = format!("{scheme}://{authority}");
        let handle = match &options.io_runtime {
            Some(h) => h.clone(),
            None => default_runtime()?,
        };
        let mut config = client_config(&options.config, conf);
        let ids_key = format!("dfs.ha.namenodes.{authority}");
        let mut ids: Vec<String> = config
            .get(&ids_key)
            .map(String::as_str)
            .or_else(|| conf.get(&ids_key))
            .filter(|_| scheme == "hdfs")
            .map(|v| v.split(',').map(|id| id.trim().to_string()).collect())
            .unwrap_or_default();
        if ids.len() > 1 && !rotation.is_multiple_of(ids.len()) {
            let by = rotation % ids.len();
            ids.rotate_left(by);
            config.insert(ids_key, ids.join(","));
        }
        let setting = |k: &str| config.get(k).map(String::as_str).or_else(|| conf.get(k));
        let number = |k: &str| -> Result<Option<u64>> {
            setting(k)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        StorageError::invalid_path(
                            &key,
                            format!("{k} = '{v}' is not a non-negative integer"),
                        )
                    })
                })
                .transpose()
        };
        for k in [
            keys::FAILOVER_MAX_ATTEMPTS,
            keys::FAILOVER_SLEEP_BASE_MILLIS,
            keys::FAILOVER_SLEEP_MAX_MILLIS,
            keys::SOCKET_TIMEOUT,
            keys::BLOCK_WRITE_RETRIES,
        ] {
            // hdfs-native would silently use its default for a value it cannot parse.
            number(k)?;
        }
        let rpc_timeout = number(keys::RPC_TIMEOUT_MS)?
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        let settings: HashMap<String, String> = [
            keys::FAILOVER_MAX_ATTEMPTS,
            keys::FAILOVER_SLEEP_BASE_MILLIS,
            keys::FAILOVER_SLEEP_MAX_MILLIS,
            keys::RPC_TIMEOUT_MS,
            keys::SOCKET_TIMEOUT,
            keys::BLOCK_WRITE_RETRIES,
        ]
        .into_iter()
        .filter_map(|k| setting(k).map(|v| (k.to_string(), v.to_string())))
        .collect();
        let mut builder = ClientBuilder::new()
            .with_url(key.clone())
            .with_io_runtime(handle.clone())
            .with_config(config);
        if let Some(dir) = &conf.dir {
            builder = builder.with_config_dir(dir.to_string_lossy());
        }
        let client = builder
            .build()
            .map_err(|e| StorageError::invalid_path(&key, format!("HDFS client: {e}")))?;
        Ok(HdfsStorage {
            namenodes: conf.namenodes(scheme, authority),
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            client: Arc::new(client),
            handle,
            rpc_timeout,
            settings: Arc::new(settings),
            ha_namenodes: ids.len(),
        })
    }

    /// The effective value of a key of [`keys`] for this client (from [`configure`], the
    /// Hadoop files or [`CLIENT_DEFAULTS`]); `None` = `hdfs-native`'s own default.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
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

    /// Bounds one NameNode call by `ipc.client.rpc-timeout.ms`.
    ///
    /// `hdfs-native` tries the NameNodes of an HA nameservice from the last one that
    /// answered, and moves on only when one fails; one that hangs (a host that is down, a
    /// process stopped) holds every call until the timeout. So when a call times out, the next
    /// [`crate::resolve`] builds a new client that tries the NameNodes in rotated order.
    async fn nn<T>(
        &self,
        call: impl Future<Output = hdfs_native::Result<T>>,
    ) -> hdfs_native::Result<T> {
        let result = bounded(self.rpc_timeout, call, || {
            format!(
                "no answer within {} ms ({})",
                self.rpc_timeout.map_or(0, |d| d.as_millis()),
                keys::RPC_TIMEOUT_MS
            )
        })
        .await;
        if self.ha_namenodes > 1
            && let Err(HdfsError::IOError(io)) = &result
            && io.get_ref().is_some_and(|e| e.is::<TimedOut>())
        {
            self.rotate_namenodes();
        }
        result
    }

    /// Drops this client from the cache and makes the next one start with the next NameNode,
    /// unless another call did so already.
    fn rotate_namenodes(&self) {
        let key = format!("{}://{}", self.scheme, self.authority);
        let mut s = shared().lock().unwrap_or_else(|e| e.into_inner());
        if s.clients
            .get(&key)
            .is_some_and(|c| Arc::ptr_eq(&c.client, &self.client))
        {
            s.clients.remove(&key);
            *s.rotations.entry(key).or_insert(0) += 1;
        }
    }

    /// How long a write may go without progress: a chunk may wait for a new block from the
    /// NameNode and for DataNode acknowledgements. `None` if either is unbounded.
    fn stall_bound(&self) -> Option<Duration> {
        let socket = match self.setting(keys::SOCKET_TIMEOUT) {
            Some(v) => v.trim().parse().ok().filter(|&ms: &u64| ms > 0)?,
            None => DEFAULT_SOCKET_TIMEOUT_MS,
        };
        Some(self.rpc_timeout? + Duration::from_millis(socket))
    }

    /// `dfs.client.block.write.retries` (Hadoop's default: 3).
    fn block_write_retries(&self) -> u32 {
        self.setting(keys::BLOCK_WRITE_RETRIES)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_BLOCK_WRITE_RETRIES)
    }

    /// One attempt of [`Storage::write_atomic`] through `tmp`; on failure, the phase it
    /// failed in.
    async fn write_once(
        &self,
        tmp: &str,
        path: &str,
        src: &dyn ChunkSource,
    ) -> std::result::Result<(), WriteFailure> {
        let stall = self.stall_bound();
        let stalled = |what: &str| {
            format!(
                "{what} made no progress for {} ms ({} + {})",
                stall.map_or(0, |d| d.as_millis()),
                keys::RPC_TIMEOUT_MS,
                keys::SOCKET_TIMEOUT
            )
        };
        let opts = WriteOptions::default().overwrite(false).create_parent(true);
        let mut chunks = src.open().map_err(WriteFailure::Source)?;
        let mut w = self
            .nn(self.client.create(tmp, opts))
            .await
            .map_err(|e| WriteFailure::Hdfs(WritePhase::Create, e))?;
        // Each chunk is read from the source while the previous ones are still on their way
        // to the DataNodes.
        while let Some(chunk) = chunks.next_chunk().map_err(WriteFailure::Source)? {
            bounded(stall, w.write_bytes(chunk), || stalled("writing the data"))
                .await
                .map_err(|e| WriteFailure::Hdfs(WritePhase::Data, e))?;
        }
        // The last acknowledgements, then the NameNode completes the file (asked again with
        // backoff while the DataNodes have not reported the block yet).
        bounded(stall, w.close(), || stalled("closing the file"))
            .await
            .map_err(|e| WriteFailure::Hdfs(WritePhase::Data, e))?;
        self.nn(self.client.rename(tmp, path, true))
            .await
            .map_err(|e| WriteFailure::Hdfs(WritePhase::Rename, e))
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
            HdfsError::IOError(io) if io.get_ref().is_some_and(|e| e.is::<TimedOut>()) => {
                StorageError::Io {
                    source: std::io::Error::new(
                        io.kind(),
                        format!("HDFS (NameNode {}): {io}", self.namenodes),
                    ),
                    path: url,
                }
            }
            HdfsError::IOError(io) => StorageError::Io {
                source: std::io::Error::new(
                    io.kind(),
                    format!(
                        "HDFS connection refused or lost (the NameNode {} after {} \
                         reconnects/failovers, or a DataNode): {io}",
                        self.namenodes,
                        self.setting(keys::FAILOVER_MAX_ATTEMPTS).unwrap_or("15")
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

/// `hdfs-native`'s default for `dfs.client.socket-timeout`.
const DEFAULT_SOCKET_TIMEOUT_MS: u64 = 60_000;
/// Hadoop's default for `dfs.client.block.write.retries`.
const DEFAULT_BLOCK_WRITE_RETRIES: u32 = 3;

/// Why one attempt of a write failed: HDFS (in which phase), or the bytes to write.
enum WriteFailure {
    Hdfs(WritePhase, HdfsError),
    Source(StorageError),
}

/// Where a write of [`Storage::write_atomic`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WritePhase {
    Create,
    /// Writing and closing: DataNode pipelines, and the NameNode for blocks and completion.
    Data,
    Rename,
}

/// Whether a failure while writing data is a DataNode's (worth a new pipeline): a connection
/// refused or lost, or a pipeline that failed. Not a stall Sluice timed out (a retry would
/// wait as long again), nor an error the NameNode answered with.
fn is_datanode_failure(e: &HdfsError) -> bool {
    match e {
        HdfsError::IOError(io) => !io.get_ref().is_some_and(|e| e.is::<TimedOut>()),
        HdfsError::DataTransferError(_) => true,
        _ => false,
    }
}

/// The NameNode refused the next block because the previous one has not reached its minimum
/// replication yet: DataNodes slow to report under load, gone after a pause.
fn is_not_replicated_yet(e: &HdfsError) -> bool {
    matches!(e, HdfsError::RPCError(class, _) if class.ends_with("NotReplicatedYetException"))
}

/// `e` with `context` appended to its message (I/O errors; others unchanged).
fn with_context(e: StorageError, context: &str) -> StorageError {
    match e {
        StorageError::Io { path, source } => StorageError::Io {
            path,
            source: std::io::Error::new(source.kind(), format!("{source}; {context}")),
        },
        other => other,
    }
}

/// Data is handed to the writer in chunks, so a stalled write is noticed per chunk.
const WRITE_CHUNK: usize = 4 << 20;

/// A call Sluice gave up waiting for.
#[derive(Debug)]
struct TimedOut(String);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimedOut {}

/// `call`, failing with a `TimedOut` I/O error after `limit`. Dropping `hdfs-native`'s future
/// abandons the call: its connection stays usable, a late answer is discarded.
async fn bounded<T>(
    limit: Option<Duration>,
    call: impl Future<Output = hdfs_native::Result<T>>,
    what: impl FnOnce() -> String,
) -> hdfs_native::Result<T> {
    let Some(limit) = limit else {
        return call.await;
    };
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(HdfsError::IOError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            TimedOut(what()),
        ))),
    }
}

impl Storage for HdfsStorage {
    /// Writes a hidden temp file in the same directory, closes it (which completes the file
    /// on the NameNode), then renames it over `path` (`overwrite`), so readers see the old
    /// file or the whole new one. NameNode calls are bounded by `ipc.client.rpc-timeout.ms`;
    /// the data fails once a chunk makes no progress for that plus `dfs.client.socket-timeout`.
    ///
    /// When writing the data fails on a DataNode (refused, reset, a failed pipeline), the whole
    /// file is written again under a new temp name, up to `dfs.client.block.write.retries`
    /// times: `hdfs-native` cannot ask the NameNode for a block on other DataNodes, as Hadoop's
    /// client does, so a DataNode that died but is not yet declared dead (10.5 minutes with
    /// Hadoop's defaults) would otherwise fail every file whose pipeline includes it. A new
    /// file gets a new pipeline, which on a cluster with more DataNodes than replicas usually
    /// avoids the dead one.
    fn write_atomic(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.write_atomic_from(
            path,
            &BytesSource {
                bytes: bytes::Bytes::copy_from_slice(bytes),
                chunk: WRITE_CHUNK,
            },
        )
    }

    /// [`Storage::write_atomic`], chunk by chunk from `src`; a retry reads `src` again.
    fn write_atomic_from(&self, path: &str, src: &dyn ChunkSource) -> Result<()> {
        let name = file_name(path);
        if name.is_empty() {
            return Err(StorageError::invalid_path(
                self.url(path),
                "names a directory, not a file",
            ));
        }
        let dir = parent(path);
        let retries = self.block_write_retries();
        let mut attempt = 0;
        loop {
            let tmp = format!(
                "{}/.{name}.{}.tmp",
                dir.trim_end_matches('/'),
                random_hex12()
            );
            let failure = match self.block(self.write_once(&tmp, path, src)) {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            let _ = self.block(self.nn(self.client.delete(&tmp, false)));
            let (phase, e) = match failure {
                WriteFailure::Hdfs(phase, e) => (phase, e),
                WriteFailure::Source(e) => return Err(e),
            };
            if phase == WritePhase::Data && attempt < retries && is_datanode_failure(&e) {
                attempt += 1;
                continue;
            }
            if phase == WritePhase::Data && attempt < retries && is_not_replicated_yet(&e) {
                // Hadoop's client asks for the next block again after 400 ms, doubling; hdfs-
                // native gives up at once, so the file is written again after that pause.
                std::thread::sleep(Duration::from_millis(400 << attempt));
                attempt += 1;
                continue;
            }
            let e = self.err(path, e);
            return Err(if attempt == 0 {
                e
            } else {
                with_context(
                    e,
                    &format!(
                        "written {} times ({} = {retries})",
                        attempt + 1,
                        keys::BLOCK_WRITE_RETRIES
                    ),
                )
            });
        }
    }

    /// Opening (the block locations) is a NameNode call bounded by
    /// `ipc.client.rpc-timeout.ms`; reading the data is bounded by `dfs.client.socket-timeout`
    /// per read.
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        let client = &self.client;
        self.block(async {
            let r = self.nn(client.read(path)).await?;
            let len = r.file_length();
            r.read_range(0, len).await
        })
        .map(|b| b.to_vec())
        .map_err(|e| self.err(path, e))
    }

    /// [`Storage::read`], handing each piece to `sink` as it arrives from the DataNodes.
    fn read_to(&self, path: &str, sink: &mut ChunkSink<'_>) -> Result<u64> {
        use futures::StreamExt;
        let client = &self.client;
        self.block(async {
            let r = self
                .nn(client.read(path))
                .await
                .map_err(|e| self.err(path, e))?;
            let len = r.file_length();
            let mut stream = std::pin::pin!(r.read_range_stream(0, len));
            while let Some(piece) = stream.next().await {
                sink(&piece.map_err(|e| self.err(path, e))?)?;
            }
            Ok(len as u64)
        })
    }

    fn exists(&self, path: &str) -> Result<bool> {
        match self.block(self.nn(self.client.get_file_info(path))) {
            Ok(_) => Ok(true),
            Err(e) => match self.err(path, e) {
                StorageError::NotFound { .. } => Ok(false),
                e => Err(e),
            },
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        let statuses = self
            .block(self.nn(self.client.list_status(dir, false)))
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
        self.block(self.nn(self.client.mkdirs(dir, 0o755, true)))
            .map_err(|e| self.err(dir, e))
    }

    fn delete(&self, path: &str, recursive: bool) -> Result<()> {
        // `false` = nothing was there: fine, cleanup may be repeated.
        match self.block(self.nn(self.client.delete(path, recursive))) {
            Ok(_) => Ok(()),
            Err(e) => match self.err(path, e) {
                StorageError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    /// HDFS refuses to rename onto an existing path.
    fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.block(self.nn(self.client.rename(from, to, false)))
            .map_err(|e| self.err(&format!("{from} -> {}", self.url(to)), e))
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.authority)
    }
}

#[cfg(test)]
#[path = "hdfs_tests.rs"]
mod tests;
