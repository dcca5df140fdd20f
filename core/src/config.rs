//! The typed configuration tree, with Flink's dotted key names.
//!
//! Sources, in order: defaults (all in [`Config::default`]), a YAML file (`conf/sluice.yaml`; nested
//! maps or flat dotted keys, as Flink's `config.yaml` accepts), then `-D key=value` overrides.
//! Every bad value is collected and reported together, so a user fixes them in one pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, SluiceError};

/// Key names, as constants so the code and the docs agree.
pub mod keys {
    pub const PARALLELISM_DEFAULT: &str = "parallelism.default";
    pub const MAX_PARALLELISM: &str = "pipeline.max-parallelism";
    pub const STATE_BACKEND: &str = "state.backend.type";
    pub const ROCKSDB_LOCAL_DIR: &str = "state.backend.rocksdb.localdir";
    pub const ROCKSDB_WRITE_BUFFER: &str = "state.backend.rocksdb.writebuffer.size";
    pub const ROCKSDB_CACHE_ENTRIES: &str = "state.backend.rocksdb.cache.entries";
    pub const INCREMENTAL: &str = "state.backend.incremental";
    pub const ROCKSDB_TRANSFER_THREADS: &str =
        "state.backend.rocksdb.checkpoint.transfer.thread.num";
    pub const BUFFER_TIMEOUT: &str = "execution.buffer-timeout";
    /// Flink 2's name for [`BUFFER_TIMEOUT`].
    pub const BUFFER_TIMEOUT_INTERVAL: &str = "execution.buffer-timeout.interval";
    pub const BUFFER_TIMEOUT_ENABLED: &str = "execution.buffer-timeout.enabled";
    pub const CHECKPOINT_INTERVAL: &str = "execution.checkpointing.interval";
    pub const CHECKPOINT_MODE: &str = "execution.checkpointing.mode";
    pub const CHECKPOINT_TIMEOUT: &str = "execution.checkpointing.timeout";
    pub const CHECKPOINT_MIN_PAUSE: &str = "execution.checkpointing.min-pause";
    pub const CHECKPOINT_MAX_CONCURRENT: &str =
        "execution.checkpointing.max-concurrent-checkpoints";
    pub const CHECKPOINT_TOLERABLE_FAILED: &str =
        "execution.checkpointing.tolerable-failed-checkpoints";
    pub const CHECKPOINTS_AFTER_TASKS_FINISH: &str =
        "execution.checkpointing.checkpoints-after-tasks-finish";
    pub const CHECKPOINTS_DIR: &str = "state.checkpoints.dir";
    pub const SAVEPOINTS_DIR: &str = "state.savepoints.dir";
    pub const CHECKPOINTS_RETAINED: &str = "state.checkpoints.num-retained";
    pub const RESTART_STRATEGY: &str = "restart-strategy.type";
    pub const RPC_ADDRESS: &str = "jobmanager.rpc.address";
    pub const RPC_PORT: &str = "jobmanager.rpc.port";
    pub const TASK_SLOTS: &str = "taskmanager.numberOfTaskSlots";
    pub const HEARTBEAT_INTERVAL: &str = "heartbeat.interval";
    pub const HEARTBEAT_TIMEOUT: &str = "heartbeat.timeout";
    pub const SLOT_REQUEST_TIMEOUT: &str = "slot.request.timeout";
    pub const UPLOAD_DIR: &str = "web.upload.dir";
    pub const HA_TYPE: &str = "high-availability.type";
    pub const HA_ZK_QUORUM: &str = "high-availability.zookeeper.quorum";
    pub const HA_STORAGE_DIR: &str = "high-availability.storageDir";
    pub const HA_ZK_ROOT: &str = "high-availability.zookeeper.path.root";
    pub const HA_CLUSTER_ID: &str = "high-availability.cluster-id";
    pub const HA_ZK_SESSION_TIMEOUT: &str = "high-availability.zookeeper.client.session-timeout";
    pub const HA_ZK_TOLERATE_SUSPENDED: &str =
        "high-availability.zookeeper.client.tolerate-suspended-connections";
}

/// `high-availability.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaMode {
    None,
    ZooKeeper,
}

/// The `high-availability.*` keys: with ZooKeeper, masters elect a leader, keep submitted jobs
/// in `storage_dir` (pointed to from ZooKeeper), and workers follow the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    pub mode: HaMode,
    /// `high-availability.zookeeper.quorum`: `host:port,host:port,...`.
    pub zk_quorum: Option<String>,
    /// `high-availability.storageDir`: `file://` or `hdfs://` URL of the job store.
    pub storage_dir: Option<String>,
    /// `high-availability.zookeeper.path.root` (default `/sluice`).
    pub zk_root: String,
    /// `high-availability.cluster-id` (default `default`).
    pub cluster_id: String,
    /// `high-availability.zookeeper.client.session-timeout` (default 60 s).
    pub zk_session_timeout: Duration,
    /// `high-availability.zookeeper.client.tolerate-suspended-connections` (default true,
    /// unlike Flink's false): whether a leader whose ZooKeeper connection is lost keeps its
    /// leadership (suspended: no deployment, no checkpoint completes) while the session may
    /// survive, or gives it up at once. Keeping it is safe: no other master can win while the
    /// leader's ephemeral latch node lives, and it lets a leader ride out the loss of the one
    /// ZooKeeper member it was connected to without a failover.
    pub tolerate_suspended_connections: bool,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            mode: HaMode::None,
            zk_quorum: None,
            storage_dir: None,
            zk_root: "/sluice".into(),
            cluster_id: "default".into(),
            zk_session_timeout: Duration::from_secs(60),
            tolerate_suspended_connections: true,
        }
    }
}

impl HaConfig {
    pub fn enabled(&self) -> bool {
        self.mode == HaMode::ZooKeeper
    }

    /// `<root>/<cluster-id>`: every node of this cluster lives under it.
    pub fn zk_base(&self) -> String {
        let root = self.zk_root.trim_end_matches('/');
        let id = self.cluster_id.trim_matches('/');
        format!("{root}/{id}")
    }

    /// With ZooKeeper: the quorum and the storage directory are required. Returns what is
    /// missing, naming the keys.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        let mut missing = Vec::new();
        if self.zk_quorum.as_deref().is_none_or(str::is_empty) {
            missing.push(keys::HA_ZK_QUORUM);
        }
        if self.storage_dir.as_deref().is_none_or(str::is_empty) {
            missing.push(keys::HA_STORAGE_DIR);
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}=zookeeper needs {}",
                keys::HA_TYPE,
                missing.join(" and ")
            ))
        }
    }
}

/// Where the master listens and how it and its workers watch each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `jobmanager.rpc.address` / `.port`: the master's control-plane address.
    pub rpc_address: String,
    pub rpc_port: u16,
    /// `taskmanager.numberOfTaskSlots`: subtasks of each task a worker runs.
    pub task_slots: usize,
    pub heartbeat_interval: Duration,
    /// A peer silent this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// How long a job waits for enough slots before it fails.
    pub slot_request_timeout: Duration,
    /// `web.upload.dir`: where the master keeps submitted bundles (a temporary directory
    /// when unset).
    pub upload_dir: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            rpc_address: "127.0.0.1".into(),
            rpc_port: 6123,
            task_slots: 1,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(10),
            slot_request_timeout: Duration::from_secs(300),
            upload_dir: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateBackendKind {
    HashMap,
    RocksDb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointingMode {
    ExactlyOnce,
    AtLeastOnce,
}

/// The effective configuration. Construct with [`Config::load`] or [`Config::default`] and
/// [`Config::set`]; pass it by value or reference, never through a global.
#[derive(Debug, Clone)]
pub struct Config {
    pub parallelism: usize,
    pub max_parallelism: usize,
    pub state_backend: StateBackendKind,
    /// Where RocksDB instances live; a fresh temporary directory when unset.
    pub rocksdb_local_dir: Option<PathBuf>,
    pub rocksdb_write_buffer_bytes: u64,
    /// Entries kept in the write-back cache in front of RocksDB, per state.
    pub rocksdb_cache_entries: usize,
    pub incremental: bool,
    /// Parallel file downloads when restoring an incremental RocksDB checkpoint.
    pub rocksdb_transfer_threads: usize,
    /// How long an output buffer may hold records before it is flushed downstream (checked
    /// once per batch a task takes, so `0 ms` flushes after every batch).
    pub buffer_timeout: Duration,
    /// `false`: output buffers are flushed only when full or when their task waits for input.
    pub buffer_timeout_enabled: bool,
    pub checkpoint_interval: Option<Duration>,
    pub checkpoint_mode: CheckpointingMode,
    pub checkpoint_timeout: Duration,
    pub checkpoint_min_pause: Duration,
    pub max_concurrent_checkpoints: usize,
    pub tolerable_failed_checkpoints: usize,
    /// Sources at the end of a bounded input wait for a checkpoint covering all their output
    /// before the job's tasks end (Flink's final checkpoint), so nothing published at the end
    /// is replayed after a later failure.
    pub checkpoints_after_tasks_finish: bool,
    pub checkpoints_dir: Option<String>,
    pub savepoints_dir: Option<String>,
    pub checkpoints_retained: usize,
    pub cluster: ClusterConfig,
    pub ha: HaConfig,
    /// Every key as given (file and overrides), including keys this build does not know.
    raw: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            parallelism: 1,
            max_parallelism: 128,
            state_backend: StateBackendKind::HashMap,
            rocksdb_local_dir: None,
            rocksdb_write_buffer_bytes: 8 << 20,
            rocksdb_cache_entries: 1 << 20,
            incremental: false,
            rocksdb_transfer_threads: 4,
            buffer_timeout: Duration::from_millis(100),
            buffer_timeout_enabled: true,
            checkpoint_interval: None,
            checkpoint_mode: CheckpointingMode::ExactlyOnce,
            checkpoint_timeout: Duration::from_secs(600),
            checkpoint_min_pause: Duration::ZERO,
            max_concurrent_checkpoints: 1,
            tolerable_failed_checkpoints: 0,
            checkpoints_after_tasks_finish: true,
            checkpoints_dir: None,
            savepoints_dir: None,
            checkpoints_retained: 1,
            cluster: ClusterConfig::default(),
            ha: HaConfig::default(),
            raw: BTreeMap::new(),
        }
    }
}

impl Config {
    /// Defaults, then the YAML file (if given), then `key=value` overrides; all errors at once.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let mut pairs = Vec::new();
        let mut errors = Vec::new();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|e| SluiceError::io(path.display(), e))?;
            match flatten_yaml(&text) {
                Ok(p) => pairs.extend(p),
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
        for o in overrides {
            match o.split_once('=') {
                Some((k, v)) => pairs.push((k.trim().to_string(), v.trim().to_string())),
                None => errors.push(format!("override '{o}' is not of the form key=value")),
            }
        }
        let mut config = Config::default();
        for (k, v) in pairs {
            if let Err(e) = config.set(&k, &v) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(SluiceError::Config(errors.join("; ")))
        }
    }

    /// Sets one key; the error names the key and the value.
    pub fn set(&mut self, key: &str, value: &str) -> std::result::Result<(), String> {
        use keys::*;
        let v = value.trim();
        let err = |what: &str| format!("{key}: '{v}' is not {what}");
        match key {
            PARALLELISM_DEFAULT => {
                self.parallelism = parse_positive(v).ok_or_else(|| err("a positive integer"))?
            }
            MAX_PARALLELISM => {
                let p = parse_positive(v).ok_or_else(|| err("a positive integer"))?;
                if p > 32768 {
                    return Err(err("at most 32768"));
                }
                self.max_parallelism = p
            }
            STATE_BACKEND => {
                self.state_backend = match v.to_ascii_lowercase().as_str() {
                    "hashmap" | "heap" => StateBackendKind::HashMap,
                    "rocksdb" => StateBackendKind::RocksDb,
                    _ => return Err(err("one of hashmap, rocksdb")),
                }
            }
            ROCKSDB_LOCAL_DIR => self.rocksdb_local_dir = Some(PathBuf::from(v)),
            ROCKSDB_WRITE_BUFFER => {
                self.rocksdb_write_buffer_bytes =
                    parse_memory(v).ok_or_else(|| err("a memory size such as 64mb"))?
            }
            ROCKSDB_CACHE_ENTRIES => {
                self.rocksdb_cache_entries = v.parse().map_err(|_| err("a number of entries"))?
            }
            INCREMENTAL => self.incremental = parse_bool(v).ok_or_else(|| err("true or false"))?,
            ROCKSDB_TRANSFER_THREADS => {
                self.rocksdb_transfer_threads = v.parse().map_err(|_| err("a number of threads"))?
            }
            BUFFER_TIMEOUT_ENABLED => {
                self.buffer_timeout_enabled = parse_bool(v).ok_or_else(|| err("true or false"))?
            }
            BUFFER_TIMEOUT | BUFFER_TIMEOUT_INTERVAL => {
                self.buffer_timeout =
                    parse_duration(v).ok_or_else(|| err("a duration such as 100 ms"))?
            }
            CHECKPOINT_INTERVAL => {
                let d = parse_duration(v).ok_or_else(|| err("a duration such as 10 s"))?;
                self.checkpoint_interval = (!d.is_zero()).then_some(d);
            }
            CHECKPOINT_MODE => {
                self.checkpoint_mode = match v.to_ascii_uppercase().as_str() {
                    "EXACTLY_ONCE" => CheckpointingMode::ExactlyOnce,
                    "AT_LEAST_ONCE" => CheckpointingMode::AtLeastOnce,
                    _ => return Err(err("EXACTLY_ONCE or AT_LEAST_ONCE")),
                }
            }
            CHECKPOINT_TIMEOUT => {
                self.checkpoint_timeout = parse_duration(v).ok_or_else(|| err("a duration"))?
            }
            CHECKPOINT_MIN_PAUSE => {
                self.checkpoint_min_pause = parse_duration(v).ok_or_else(|| err("a duration"))?
            }
            CHECKPOINT_MAX_CONCURRENT => {
                self.max_concurrent_checkpoints =
                    parse_positive(v).ok_or_else(|| err("a positive integer"))?
            }
            CHECKPOINT_TOLERABLE_FAILED => {
                self.tolerable_failed_checkpoints =
                    v.parse().map_err(|_| err("a non-negative integer"))?
            }
            CHECKPOINTS_AFTER_TASKS_FINISH => {
                self.checkpoints_after_tasks_finish =
                    parse_bool(v).ok_or_else(|| err("true or false"))?
            }
            CHECKPOINTS_DIR => self.checkpoints_dir = Some(v.to_string()),
            SAVEPOINTS_DIR => self.savepoints_dir = Some(v.to_string()),
            CHECKPOINTS_RETAINED => {
                self.checkpoints_retained =
                    parse_positive(v).ok_or_else(|| err("a positive integer"))?
            }
            RPC_ADDRESS => self.cluster.rpc_address = v.to_string(),
            RPC_PORT => self.cluster.rpc_port = v.parse().map_err(|_| err("a port number"))?,
            TASK_SLOTS => {
                self.cluster.task_slots =
                    parse_positive(v).ok_or_else(|| err("a positive integer"))?
            }
            HEARTBEAT_INTERVAL => {
                self.cluster.heartbeat_interval =
                    parse_duration(v).ok_or_else(|| err("a duration such as 1 s"))?
            }
            HEARTBEAT_TIMEOUT => {
                self.cluster.heartbeat_timeout =
                    parse_duration(v).ok_or_else(|| err("a duration such as 10 s"))?
            }
            SLOT_REQUEST_TIMEOUT => {
                self.cluster.slot_request_timeout =
                    parse_duration(v).ok_or_else(|| err("a duration such as 5 min"))?
            }
            UPLOAD_DIR => self.cluster.upload_dir = Some(v.to_string()),
            // Flink's older key for the same setting.
            HA_TYPE | "high-availability" => {
                self.ha.mode = match v.to_ascii_lowercase().as_str() {
                    "none" | "" => HaMode::None,
                    "zookeeper" => HaMode::ZooKeeper,
                    _ => return Err(err("one of none, zookeeper")),
                }
            }
            HA_ZK_QUORUM => self.ha.zk_quorum = Some(v.to_string()),
            HA_STORAGE_DIR => self.ha.storage_dir = Some(v.trim_end_matches('/').to_string()),
            HA_ZK_ROOT => {
                if !v.starts_with('/') {
                    return Err(err("an absolute ZooKeeper path such as /sluice"));
                }
                self.ha.zk_root = v.to_string()
            }
            HA_CLUSTER_ID => {
                let id = v.trim_matches('/');
                if id.is_empty() || id.contains('/') {
                    return Err(err("one ZooKeeper node name"));
                }
                self.ha.cluster_id = id.to_string()
            }
            HA_ZK_SESSION_TIMEOUT => {
                let d = parse_duration(v).ok_or_else(|| err("a duration such as 60 s"))?;
                if d.is_zero() {
                    return Err(err("longer than 0"));
                }
                self.ha.zk_session_timeout = d
            }
            HA_ZK_TOLERATE_SUSPENDED => {
                self.ha.tolerate_suspended_connections =
                    parse_bool(v).ok_or_else(|| err("true or false"))?
            }
            _ => {}
        }
        self.raw.insert(key.to_string(), v.to_string());
        Ok(())
    }

    /// The value of any key as given, including keys this build does not interpret.
    pub fn get_raw(&self, key: &str) -> Option<&str> {
        self.raw.get(key).map(String::as_str)
    }

    /// Every key that was set explicitly.
    pub fn explicit(&self) -> &BTreeMap<String, String> {
        &self.raw
    }
}

fn parse_positive(v: &str) -> Option<usize> {
    v.parse().ok().filter(|&n: &usize| n > 0)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Flink-style durations: `100`, `100 ms`, `10 s`, `2 min`, `1 h`, `500ms`.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => n,
        "s" | "sec" | "secs" | "second" | "seconds" => n * 1000,
        "min" | "m" | "minute" | "minutes" => n * 60_000,
        "h" | "hour" | "hours" => n * 3_600_000,
        "d" | "day" | "days" => n * 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Flink-style memory sizes: `1024`, `64kb`, `64 mb`, `1g`, `2 gb`.
pub fn parse_memory(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    Some(n * mult)
}

/// Flattens nested YAML maps into dotted keys (`a: {b: 1}` and `a.b: 1` mean the same).
fn flatten_yaml(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    fn walk(
        prefix: &str,
        v: &serde_yaml::Value,
        out: &mut Vec<(String, String)>,
    ) -> std::result::Result<(), String> {
        use serde_yaml::Value;
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let k = match k {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other)
                            .map_err(|e| e.to_string())?
                            .trim()
                            .to_string(),
                    };
                    let key = if prefix.is_empty() {
                        k
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out)?;
                }
            }
            Value::Null => {}
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            Value::Bool(b) => out.push((prefix.to_string(), b.to_string())),
            Value::Number(n) => out.push((prefix.to_string(), n.to_string())),
            Value::Sequence(items) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| {
                        serde_yaml::to_string(i)
                            .map(|s| s.trim().to_string())
                            .map_err(|e| e.to_string())
                    })
                    .collect::<std::result::Result<_, _>>()?;
                out.push((prefix.to_string(), parts.join(",")));
            }
            Value::Tagged(t) => walk(prefix, &t.value, out)?,
        }
        Ok(())
    }
    if !matches!(value, serde_yaml::Value::Null) {
        if !value.is_mapping() {
            return Err("the configuration file must be a map of keys to values".into());
        }
        walk("", &value, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides_with_nested_and_flat_keys() {
        let dir = std::env::temp_dir().join(format!("sluice-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("sluice.yaml");
        std::fs::write(&f, "parallelism:\n  default: 3\nstate.backend.type: rocksdb\nexecution:\n  checkpointing:\n    interval: 10 s\n").unwrap();
        let c = Config::load(Some(&f), &["parallelism.default=4".into()]).unwrap();
        assert_eq!(c.parallelism, 4);
        assert_eq!(c.state_backend, StateBackendKind::RocksDb);
        assert_eq!(c.checkpoint_interval, Some(Duration::from_secs(10)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn all_errors_reported_together() {
        let e = Config::load(
            None,
            &[
                "parallelism.default=zero".into(),
                "state.backend.type=leveldb".into(),
                "oops".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("parallelism.default"), "{e}");
        assert!(e.contains("state.backend.type"), "{e}");
        assert!(e.contains("'oops'"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("10 s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_memory("64 mb"), Some(64 << 20));
        assert_eq!(parse_memory("1g"), Some(1 << 30));
    }

    #[test]
    fn high_availability_keys() {
        let c = Config::default();
        assert!(!c.ha.enabled());
        assert_eq!(c.ha.zk_base(), "/sluice/default");
        assert_eq!(c.ha.zk_session_timeout, Duration::from_secs(60));
        let c = Config::load(
            None,
            &[
                "high-availability.type=zookeeper".into(),
                "high-availability.zookeeper.quorum=127.0.0.1:2181".into(),
                "high-availability.storageDir=file:///tmp/ha/".into(),
                "high-availability.zookeeper.path.root=/r".into(),
                "high-availability.cluster-id=c1".into(),
                "high-availability.zookeeper.client.session-timeout=5 s".into(),
            ],
        )
        .unwrap();
        assert!(c.ha.enabled());
        assert_eq!(c.ha.check(), Ok(()));
        assert_eq!(c.ha.zk_base(), "/r/c1");
        assert_eq!(c.ha.storage_dir.as_deref(), Some("file:///tmp/ha"));
        assert_eq!(c.ha.zk_session_timeout, Duration::from_secs(5));
        assert!(c.ha.tolerate_suspended_connections);
        let c = Config::load(
            None,
            &["high-availability.zookeeper.client.tolerate-suspended-connections=false".into()],
        )
        .unwrap();
        assert!(!c.ha.tolerate_suspended_connections);
        let c = Config::load(None, &["high-availability.type=zookeeper".into()]).unwrap();
        let e = c.ha.check().unwrap_err();
        assert!(e.contains("quorum") && e.contains("storageDir"), "{e}");
        let e = Config::load(
            None,
            &[
                "high-availability.type=etcd".into(),
                "high-availability.zookeeper.path.root=rel".into(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("high-availability.type") && e.contains("path.root"),
            "{e}"
        );
    }
}
