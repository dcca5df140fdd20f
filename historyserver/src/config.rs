//! The HistoryServer's settings, read from Flink's `historyserver.*` keys of a Sluice
//! configuration; every bad value is reported at startup, naming its key.

use std::path::PathBuf;
use std::time::Duration;

use sluice_core::Config;
use sluice_core::config::parse_duration;

use crate::error::{HistoryError, Result};

pub const ARCHIVE_DIRS_KEY: &str = "historyserver.archive.fs.dir";
pub const REFRESH_INTERVAL_KEY: &str = "historyserver.archive.fs.refresh-interval";
pub const RETAINED_JOBS_KEY: &str = "historyserver.archive.retained-jobs";
pub const WEB_PORT_KEY: &str = "historyserver.web.port";
pub const WEB_ADDRESS_KEY: &str = "historyserver.web.address";
pub const WEB_TMPDIR_KEY: &str = "historyserver.web.tmpdir";
pub const JM_LOG_URL_KEY: &str = "historyserver.log.jobmanager.url-pattern";
pub const TM_LOG_URL_KEY: &str = "historyserver.log.taskmanager.url-pattern";

/// Flink's default HistoryServer port.
pub const DEFAULT_PORT: u16 = 8082;
/// Flink's default refresh interval (10000 ms).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct HistoryConfig {
    /// Directory URLs to poll (`file://`, `hdfs://`, or plain paths on `fs.defaultFS`).
    pub archive_dirs: Vec<String>,
    pub refresh_interval: Duration,
    /// How many archived jobs to keep (newest by end time); `None`: all.
    pub retained_jobs: Option<usize>,
    pub address: String,
    pub port: u16,
    /// The local cache; `None`: a fresh temporary directory.
    pub tmpdir: Option<PathBuf>,
    /// URL patterns with `<jobid>` (and `<tmid>` for task managers) placeholders.
    pub jobmanager_log_url: Option<String>,
    pub taskmanager_log_url: Option<String>,
}

impl HistoryConfig {
    pub fn from_config(config: &Config) -> Result<HistoryConfig> {
        let mut errors = Vec::new();
        let raw = |k: &str| config.get_raw(k).map(str::trim).filter(|v| !v.is_empty());
        let archive_dirs: Vec<String> = raw(ARCHIVE_DIRS_KEY)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
        if archive_dirs.is_empty() {
            errors.push(format!(
                "{ARCHIVE_DIRS_KEY} is not set: name at least one directory the masters archive \
                 jobs into (jobmanager.archive.fs.dir)"
            ));
        }
        for d in &archive_dirs {
            if let Err(e) = sluice_hdfs_backend::resolve(d) {
                errors.push(format!("{ARCHIVE_DIRS_KEY}: {e}"));
            }
        }
        let refresh_interval = match raw(REFRESH_INTERVAL_KEY) {
            None => DEFAULT_REFRESH,
            Some(v) => match parse_duration(v).filter(|d| !d.is_zero()) {
                Some(d) => d,
                None => {
                    errors.push(format!(
                        "{REFRESH_INTERVAL_KEY}: '{v}' is not a positive duration such as 10000 or 10 s"
                    ));
                    DEFAULT_REFRESH
                }
            },
        };
        let retained_jobs = match raw(RETAINED_JOBS_KEY) {
            None | Some("-1") => None,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    errors.push(format!(
                        "{RETAINED_JOBS_KEY}: '{v}' is not -1 (all) or a positive number"
                    ));
                    None
                }
            },
        };
        let port = match raw(WEB_PORT_KEY) {
            None => DEFAULT_PORT,
            Some(v) => v.parse().unwrap_or_else(|_| {
                errors.push(format!(
                    "{WEB_PORT_KEY}: '{v}' is not a port number (0-65535)"
                ));
                DEFAULT_PORT
            }),
        };
        if !errors.is_empty() {
            return Err(HistoryError::Config(errors.join("; ")));
        }
        Ok(HistoryConfig {
            archive_dirs,
            refresh_interval,
            retained_jobs,
            address: raw(WEB_ADDRESS_KEY).unwrap_or("0.0.0.0").to_string(),
            port,
            tmpdir: raw(WEB_TMPDIR_KEY).map(PathBuf::from),
            jobmanager_log_url: raw(JM_LOG_URL_KEY).map(str::to_string),
            taskmanager_log_url: raw(TM_LOG_URL_KEY).map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[&str]) -> Result<HistoryConfig> {
        let o: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        HistoryConfig::from_config(&Config::load(None, &o).unwrap())
    }

    #[test]
    fn defaults_and_errors_name_their_keys() {
        let c = load(&["historyserver.archive.fs.dir=file:///a, file:///b"]).unwrap();
        assert_eq!(c.archive_dirs, vec!["file:///a", "file:///b"]);
        assert_eq!(c.port, 8082);
        assert_eq!(c.refresh_interval, Duration::from_secs(10));
        assert_eq!(c.retained_jobs, None);
        let e = load(&[]).unwrap_err().to_string();
        assert!(e.contains(ARCHIVE_DIRS_KEY), "{e}");
        let e = load(&[
            "historyserver.archive.fs.dir=file:///a",
            "historyserver.archive.retained-jobs=0",
            "historyserver.web.port=x",
            "historyserver.archive.fs.refresh-interval=soon",
        ])
        .unwrap_err()
        .to_string();
        for k in [RETAINED_JOBS_KEY, WEB_PORT_KEY, REFRESH_INTERVAL_KEY] {
            assert!(e.contains(k), "{e}");
        }
        let c = load(&[
            "historyserver.archive.fs.dir=file:///a",
            "historyserver.archive.retained-jobs=5",
            "historyserver.archive.fs.refresh-interval=250",
        ])
        .unwrap();
        assert_eq!(c.retained_jobs, Some(5));
        assert_eq!(c.refresh_interval, Duration::from_millis(250));
    }
}
