//! The daemon's settings, read under Flink's key names from the shared configuration.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_core::config::parse_memory;
use sluice_core::{Config, Result, SluiceError};

/// The keys the daemon reads, with Flink's names.
pub mod keys {
    pub use sluice_core::config::keys::{
        HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, RPC_ADDRESS, RPC_PORT, TASK_SLOTS,
    };
    /// The worker id (default `<hostname or 127.0.0.1>-<pid>`).
    pub const RESOURCE_ID: &str = "taskmanager.resource-id";
    /// The host reported to the master (default the local address of the control connection).
    pub const HOST: &str = "taskmanager.host";
    /// Where job bundles are unpacked: the first of a `,`- or `:`-separated list (default the
    /// system's temporary directory).
    pub const TMP_DIRS: &str = "taskmanager.tmp.dirs";
    /// Checked to be a memory size; the daemon itself does not limit its job processes.
    pub const PROCESS_SIZE: &str = "taskmanager.memory.process.size";
}

/// The directory job output goes to (default `log`).
pub const LOG_DIR_ENV: &str = "SLUICE_LOG_DIR";

/// Everything the daemon needs to know before it connects.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The master's control address as configured, `host:port`.
    pub master: String,
    /// The same, resolved.
    pub master_addr: SocketAddr,
    pub slots: usize,
    pub worker_id: String,
    /// Reported to the master; `None` reports the local address of the control connection.
    pub host: Option<String>,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// This daemon's directory: `<tmp dir>/sluice-worker-<worker_id>`, one subdirectory per job.
    pub work_dir: PathBuf,
    /// Where `job-<job_id>-<worker_id>.out` files go.
    pub log_dir: PathBuf,
}

impl Settings {
    /// The configuration file (if any), then `key=value` overrides; the log directory from
    /// `$SLUICE_LOG_DIR`, else `log`. Every error is reported at once.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Settings> {
        let config = Config::load(file, overrides)?;
        let log_dir = std::env::var_os(LOG_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("log"));
        Settings::from_config(&config, log_dir)
    }

    /// The daemon's keys of `config`; every bad value is reported in one error. The cluster
    /// keys are typed by [`Config`] (which reports their errors when it loads); this adds the
    /// keys only the daemon reads and checks that the values fit together.
    pub fn from_config(config: &Config, log_dir: PathBuf) -> Result<Settings> {
        let cluster = &config.cluster;
        let mut errors = Vec::new();
        if cluster.rpc_port == 0 {
            errors.push(format!("{}: 0 is not a port to connect to", keys::RPC_PORT));
        }
        let worker_id = match config.get_raw(keys::RESOURCE_ID) {
            None => format!("{}-{}", hostname(), std::process::id()),
            Some(v) => {
                if let Err(why) = check_name(v) {
                    errors.push(format!(
                        "{}: '{v}' is not a usable worker id ({why})",
                        keys::RESOURCE_ID
                    ));
                }
                v.to_string()
            }
        };
        let (interval, timeout) = (cluster.heartbeat_interval, cluster.heartbeat_timeout);
        if interval.is_zero() {
            errors.push(format!(
                "{}: must be longer than 0",
                keys::HEARTBEAT_INTERVAL
            ));
        }
        if interval >= timeout {
            errors.push(format!(
                "{}: {} ms must be shorter than {} ({} ms)",
                keys::HEARTBEAT_INTERVAL,
                interval.as_millis(),
                keys::HEARTBEAT_TIMEOUT,
                timeout.as_millis()
            ));
        }
        if let Some(v) = config.get_raw(keys::PROCESS_SIZE)
            && parse_memory(v).is_none()
        {
            errors.push(format!(
                "{}: '{v}' is not a memory size such as 1728 mb",
                keys::PROCESS_SIZE
            ));
        }
        let tmp = match config.get_raw(keys::TMP_DIRS) {
            None => std::env::temp_dir(),
            Some(v) => match v.split([',', ':']).map(str::trim).find(|d| !d.is_empty()) {
                Some(first) => PathBuf::from(first),
                None => {
                    errors.push(format!("{}: '{v}' names no directory", keys::TMP_DIRS));
                    std::env::temp_dir()
                }
            },
        };
        let address = &cluster.rpc_address;
        let master_addr = resolve(address, cluster.rpc_port);
        if master_addr.is_none() {
            errors.push(format!(
                "{}: '{address}' does not resolve to an address",
                keys::RPC_ADDRESS
            ));
        }
        match master_addr {
            Some(master_addr) if errors.is_empty() => Ok(Settings {
                master: format!("{}:{}", bracket_ipv6(address), cluster.rpc_port),
                master_addr,
                slots: cluster.task_slots,
                work_dir: tmp.join(format!("sluice-worker-{worker_id}")),
                worker_id,
                host: config.get_raw(keys::HOST).map(str::to_string),
                heartbeat_interval: interval,
                heartbeat_timeout: timeout,
                log_dir,
            }),
            _ => Err(SluiceError::Config(errors.join("; "))),
        }
    }
}

/// Whether `name` can be used as one directory or file name component: letters, digits, `.`,
/// `_` and `-`, not `.` or `..`, at most 200 characters. `Err` says what is wrong.
pub fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 200 {
        return Err("it is longer than 200 characters");
    }
    if name == "." || name == ".." {
        return Err("it is . or ..");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// This machine's host name, or `127.0.0.1` when it has none.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && check_name(h).is_ok())
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

/// The first IPv4 address of `host`, else its first address.
fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(overrides: &[&str]) -> Result<Settings> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let config = Config::load(None, &overrides)?;
        Settings::from_config(&config, PathBuf::from("log"))
    }

    #[test]
    fn defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.master, "127.0.0.1:6123");
        assert_eq!(s.master_addr, "127.0.0.1:6123".parse().unwrap());
        assert_eq!(s.slots, 1);
        assert!(s.worker_id.ends_with(&format!("-{}", std::process::id())));
        assert_eq!(s.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(s.heartbeat_timeout, Duration::from_secs(10));
        assert_eq!(
            s.work_dir,
            std::env::temp_dir().join(format!("sluice-worker-{}", s.worker_id))
        );
        assert_eq!(s.host, None);
    }

    #[test]
    fn flink_keys() {
        let s = settings(&[
            "jobmanager.rpc.address=localhost",
            "jobmanager.rpc.port=7000",
            "taskmanager.numberOfTaskSlots=4",
            "taskmanager.resource-id=w-1",
            "taskmanager.tmp.dirs=/var/tmp/a,/var/tmp/b",
            "heartbeat.interval=200 ms",
            "heartbeat.timeout=3 s",
            "taskmanager.memory.process.size=1728m",
        ])
        .unwrap();
        assert_eq!(s.master, "localhost:7000");
        assert_eq!(s.master_addr.port(), 7000);
        assert!(s.master_addr.ip().is_loopback());
        assert_eq!(s.slots, 4);
        assert_eq!(s.worker_id, "w-1");
        assert_eq!(s.work_dir, PathBuf::from("/var/tmp/a/sluice-worker-w-1"));
        assert_eq!(s.heartbeat_interval, Duration::from_millis(200));
        assert_eq!(s.heartbeat_timeout, Duration::from_secs(3));
    }

    #[test]
    fn all_errors_together() {
        let e = settings(&[
            "jobmanager.rpc.port=0",
            "taskmanager.resource-id=../x",
            "taskmanager.tmp.dirs=,",
            "taskmanager.memory.process.size=lots",
            "heartbeat.interval=5 s",
            "heartbeat.timeout=2 s",
        ])
        .unwrap_err()
        .to_string();
        for key in [
            "jobmanager.rpc.port",
            "taskmanager.resource-id",
            "taskmanager.tmp.dirs",
            "taskmanager.memory.process.size",
            "shorter than heartbeat.timeout",
        ] {
            assert!(e.contains(key), "{key} missing in: {e}");
        }
        // Bad values of the typed cluster keys are reported by `Config::load`, together.
        let e = settings(&[
            "jobmanager.rpc.port=70000",
            "taskmanager.numberOfTaskSlots=0",
            "heartbeat.interval=soon",
        ])
        .unwrap_err()
        .to_string();
        for key in [
            "jobmanager.rpc.port",
            "taskmanager.numberOfTaskSlots",
            "heartbeat.interval",
        ] {
            assert!(e.contains(key), "{key} missing in: {e}");
        }
    }

    #[test]
    fn names() {
        assert!(check_name("job-1.a_b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "x\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
