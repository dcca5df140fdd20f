//! The application's staging directory on HDFS (`<fs.defaultFS>/user/<user>/.sluice/<app>/`):
//! where the client put the binaries, the bundle and the configuration. The AM names its
//! files as YARN local resources (with their HDFS length and modification time, which the
//! NodeManager checks) and deletes the directory at the end.

use std::path::Path;

use hdfs_native::{Client, ClientBuilder};

use super::proto::yarn::{
    LocalResourceProto, LocalResourceTypeProto, LocalResourceVisibilityProto,
    StringLocalResourceMapProto, UrlProto,
};
use super::{Result, YarnError};

/// A staging directory and a client of its file system.
pub struct Staging {
    url: String,
    scheme: String,
    host: String,
    port: Option<i32>,
    path: String,
    client: Client,
}

/// Splits `scheme://host[:port]/path`.
pub fn split_url(url: &str) -> Option<(String, String, Option<i32>, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
        None => (authority.to_string(), None),
    };
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    Some((scheme.to_string(), host, port, path.to_string()))
}

impl Staging {
    /// Connects to the file system of the staging directory `url`, with the Hadoop
    /// configuration of `conf_dir`. No I/O happens until a file is looked at, so this
    /// neither blocks nor needs cancelling.
    pub async fn open(url: &str, conf_dir: &Path) -> Result<Staging> {
        let bad = |message: String| YarnError::Hdfs {
            path: url.to_string(),
            message,
        };
        let (scheme, host, port, path) = split_url(url)
            .ok_or_else(|| bad("not a URL of the form hdfs://host:port/path".into()))?;
        let fs = match port {
            Some(p) => format!("{scheme}://{host}:{p}"),
            None => format!("{scheme}://{host}"),
        };
        let client = ClientBuilder::new()
            .with_url(&fs)
            .with_config_dir(conf_dir.to_string_lossy())
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Staging {
            url: url.to_string(),
            scheme,
            host,
            port,
            path,
            client,
        })
    }

    /// The local resources of the staged `files` (type FILE, visibility APPLICATION) that
    /// exist; a file of `required` that does not exist is an error naming it.
    ///
    /// Read-only, so cancelling is harmless. A lost NameNode connection is retried by
    /// hdfs-native, then reported as `Hdfs` naming the file.
    pub async fn local_resources(
        &self,
        files: &[&str],
        required: &[&str],
    ) -> Result<Vec<StringLocalResourceMapProto>> {
        let mut out = Vec::new();
        for name in files {
            let path = format!("{}/{name}", self.path);
            let status = match self.client.get_file_info(&path).await {
                Ok(s) => s,
                Err(_) if !required.contains(name) => continue,
                Err(e) => {
                    return Err(YarnError::Hdfs {
                        path: format!("{}/{name}", self.url.trim_end_matches('/')),
                        message: e.to_string(),
                    });
                }
            };
            out.push(StringLocalResourceMapProto {
                key: Some(name.to_string()),
                value: Some(LocalResourceProto {
                    resource: Some(UrlProto {
                        scheme: Some(self.scheme.clone()),
                        host: Some(self.host.clone()),
                        port: self.port,
                        file: Some(path),
                        user_info: None,
                    }),
                    size: Some(status.length as i64),
                    timestamp: Some(status.modification_time as i64),
                    r#type: Some(LocalResourceTypeProto::File as i32),
                    visibility: Some(LocalResourceVisibilityProto::Application as i32),
                    ..Default::default()
                }),
            });
        }
        Ok(out)
    }

    /// Deletes the staging directory with everything in it.
    ///
    /// Cancelled or failed midway, the directory may be partly deleted; deleting again
    /// finishes the job. Errors (`Hdfs`) name the directory.
    pub async fn delete(&self) -> Result<()> {
        self.client
            .delete(&self.path, true)
            .await
            .map(|_| ())
            .map_err(|e| YarnError::Hdfs {
                path: self.url.clone(),
                message: format!("cannot delete the staging directory: {e}"),
            })
    }
}

/// Flink's key for the application's attempts, and YARN's cap on them (both default 2).
const ATTEMPTS_KEY: &str = "yarn.application-attempts";
const RM_MAX_ATTEMPTS_KEY: &str = "yarn.resourcemanager.am.max-attempts";
const DEFAULT_ATTEMPTS: u32 = 2;

/// Whether the attempt of `container_id` is the application's last one: YARN starts no
/// other after it fails, so nothing else would delete the staging directory.
pub fn is_last_attempt(container_id: &str, attempts: Option<&str>, rm_max: Option<&str>) -> bool {
    let count = |v: Option<&str>| {
        v.and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_ATTEMPTS)
    };
    let max = count(attempts).min(count(rm_max));
    super::ids::parse_container_id(container_id)
        .and_then(|c| c.app_attempt_id)
        .is_some_and(|a| a.attempt_id() >= max as i32)
}

/// Deletes the staging directory when this failing attempt is the application's last (see
/// [`is_last_attempt`]). Best effort: what cannot be read or deleted is reported; `yarn-submit
/// --kill <application-id>` removes what stays.
pub fn delete_after_last_attempt(config_file: Option<&Path>, overrides: &[String]) {
    use super::am::{CONTAINER_ID_ENV, STAGING_DIR_ENV};
    let (Ok(container), Ok(url)) = (
        std::env::var(CONTAINER_ID_ENV),
        std::env::var(STAGING_DIR_ENV),
    ) else {
        return;
    };
    let attempts = crate::rest::conf::load(config_file, overrides)
        .ok()
        .and_then(|c| c.get_raw(ATTEMPTS_KEY).map(str::to_string));
    let Ok(hadoop) = super::conf::HadoopConf::from_env() else {
        return;
    };
    if !is_last_attempt(
        &container,
        attempts.as_deref(),
        hadoop.get(RM_MAX_ATTEMPTS_KEY),
    ) {
        return;
    }
    let deleted = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| YarnError::io("starting a runtime to delete the staging directory", e))
        .and_then(|rt| {
            rt.block_on(async {
                let staging = Staging::open(&url, &hadoop.dir).await?;
                tokio::time::timeout(std::time::Duration::from_secs(30), staging.delete())
                    .await
                    .unwrap_or_else(|_| {
                        Err(YarnError::Hdfs {
                            path: url.clone(),
                            message: "deleting the staging directory timed out".into(),
                        })
                    })
            })
        });
    match deleted {
        Ok(()) => eprintln!("sluice-am: the last attempt failed; deleted {url}"),
        Err(e) => eprintln!("sluice-am: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_attempt_is_the_smaller_of_the_two_limits() {
        let first = "container_e03_1700000000000_0042_01_000001";
        let second = "container_e03_1700000000000_0042_02_000001";
        assert!(!is_last_attempt(first, None, None));
        assert!(is_last_attempt(second, None, None), "2 attempts by default");
        assert!(is_last_attempt(first, Some("1"), None));
        assert!(!is_last_attempt(second, Some("3"), Some("4")));
        assert!(
            is_last_attempt(second, Some("5"), Some("2")),
            "YARN caps the attempts"
        );
        assert!(!is_last_attempt("nonsense", Some("1"), None));
    }

    #[test]
    fn staging_urls_split() {
        assert_eq!(
            split_url("hdfs://127.0.0.1:9000/user/u/.sluice/application_1_0001/"),
            Some((
                "hdfs".into(),
                "127.0.0.1".into(),
                Some(9000),
                "/user/u/.sluice/application_1_0001".into()
            ))
        );
        assert_eq!(
            split_url("hdfs://ns/x"),
            Some(("hdfs".into(), "ns".into(), None, "/x".into()))
        );
        assert!(split_url("/no/scheme").is_none());
    }
}
