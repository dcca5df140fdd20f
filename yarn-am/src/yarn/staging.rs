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

#[cfg(test)]
mod tests {
    use super::*;

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
