//! The application's staging directory on HDFS, `/user/<user>/.sluice/<application-id>/`:
//! upload of the files the containers localise (with the length and modification time the
//! NodeManagers check them against), and its removal.

use std::io::Read;
use std::path::Path;

use hdfs_native::{Client, ClientBuilder, WriteOptions};
use sluice_hdfs_backend::hdfs::CLIENT_DEFAULTS;

use crate::error::{Error, Result};
use crate::hadoop_conf::HadoopConf;

/// Flink's key: the replication of the uploaded files (default: the cluster's).
pub const FILE_REPLICATION: &str = "yarn.file-replication";

/// Bytes per write call: large enough for throughput, small enough to bound memory.
const CHUNK: usize = 8 << 20;

/// Replication and block size of the uploaded files (`None`: the cluster's defaults).
#[derive(Debug, Clone, Copy, Default)]
pub struct FileLayout {
    pub replication: Option<u32>,
    pub block_size: Option<u64>,
}

/// One uploaded file, as a container's local resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResource {
    /// The file name in the container's working directory.
    pub key: String,
    /// Full URL, `hdfs://host:port/user/.../name`.
    pub url: String,
    /// Length and modification time (ms) from the NameNode, which the NodeManager checks.
    pub size: u64,
    pub timestamp: u64,
}

/// The staging directory of one application.
pub struct Staging {
    client: Client,
    fs: String,
    path: String,
}

/// `/user/<user>/.sluice/<application-id>`.
pub fn staging_path(user: &str, app_id: &str) -> String {
    format!("/user/{user}/.sluice/{app_id}")
}

impl Staging {
    /// The staging directory of `app_id` on `fs.defaultFS` (nothing is created yet).
    pub fn new(conf: &HadoopConf, user: &str, app_id: &str) -> Result<Staging> {
        Self::with_client_keys(conf, user, app_id, &[])
    }

    /// [`new`](Self::new), with Hadoop client keys (`dfs.*`, `ipc.*` of the configuration)
    /// over the site files.
    pub fn with_client_keys(
        conf: &HadoopConf,
        user: &str,
        app_id: &str,
        keys: &[(String, String)],
    ) -> Result<Staging> {
        let fs = conf.default_fs()?;
        // Fail within seconds, not minutes, when the NameNode is down (unless the site files
        // or the configuration say otherwise).
        let mut defaults: Vec<(String, String)> = CLIENT_DEFAULTS
            .iter()
            .filter(|(k, _)| conf.get(k).is_none() && !keys.iter().any(|(o, _)| o == k))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        defaults.extend(keys.iter().cloned());
        let client = ClientBuilder::new()
            .with_url(fs.clone())
            .with_config_dir(conf.dir.to_string_lossy())
            .with_config(defaults)
            .with_user(user)
            .build()
            .map_err(|e| Error::Hdfs {
                url: fs.clone(),
                why: format!("cannot create a client: {e}"),
            })?;
        Ok(Staging {
            client,
            fs,
            path: staging_path(user, app_id),
        })
    }

    /// Full URL of the directory.
    pub fn url(&self) -> String {
        format!("{}{}", self.fs, self.path)
    }

    fn file_url(&self, name: &str) -> String {
        format!("{}/{name}", self.url())
    }

    /// Uploads `local` as `<dir>/<name>` (replacing an earlier one) and returns it as a local
    /// resource with the NameNode's length and modification time.
    pub async fn upload(
        &self,
        local: &Path,
        name: &str,
        layout: FileLayout,
    ) -> Result<LocalResource> {
        let remote = format!("{}/{name}", self.path);
        let url = self.file_url(name);
        let hdfs_err = |why: String| Error::Hdfs {
            url: url.clone(),
            why,
        };
        let mut file = std::fs::File::open(local).map_err(|source| Error::Io {
            path: local.to_path_buf(),
            source,
        })?;
        let mut options = WriteOptions::default().overwrite(true).create_parent(true);
        if let Some(r) = layout.replication {
            options = options.replication(r);
        }
        if let Some(b) = layout.block_size {
            options = options.block_size(b);
        }
        let mut writer = self
            .client
            .create(&remote, options)
            .await
            .map_err(|e| hdfs_err(format!("cannot create: {e}")))?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = read_full(&mut file, &mut buf).map_err(|source| Error::Io {
                path: local.to_path_buf(),
                source,
            })?;
            if n == 0 {
                break;
            }
            writer
                .write_bytes(bytes::Bytes::copy_from_slice(&buf[..n]))
                .await
                .map_err(|e| hdfs_err(format!("writing: {e}")))?;
        }
        writer
            .close()
            .await
            .map_err(|e| hdfs_err(format!("closing: {e}")))?;
        let status = self
            .client
            .get_file_info(&remote)
            .await
            .map_err(|e| hdfs_err(format!("reading its status: {e}")))?;
        Ok(LocalResource {
            key: name.to_string(),
            url,
            size: status.length as u64,
            timestamp: status.modification_time,
        })
    }

    /// Removes the directory and everything in it; `false` if it was not there.
    pub async fn remove(&self) -> Result<bool> {
        remove(&self.client, &self.fs, &self.path).await
    }

    /// The contents of `<dir>/<name>`, `None` when there is no such file.
    pub async fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let remote = format!("{}/{name}", self.path);
        let hdfs_err = |e: hdfs_native::HdfsError| Error::Hdfs {
            url: self.file_url(name),
            why: format!("cannot read: {e}"),
        };
        let mut reader = match self.client.read(&remote).await {
            Ok(r) => r,
            Err(hdfs_native::HdfsError::FileNotFound(_)) => return Ok(None),
            Err(e) => return Err(hdfs_err(e)),
        };
        let len = reader.file_length();
        let bytes = reader.read_bytes(len).await.map_err(hdfs_err)?;
        Ok(Some(bytes.to_vec()))
    }

    /// The files in the directory: name and length.
    pub async fn list(&self) -> Result<Vec<(String, u64)>> {
        let files = self
            .client
            .list_status(&self.path, false)
            .await
            .map_err(|e| Error::Hdfs {
                url: self.url(),
                why: e.to_string(),
            })?;
        Ok(files
            .into_iter()
            .map(|f| {
                let name = f.path.rsplit('/').next().unwrap_or_default().to_string();
                (name, f.length as u64)
            })
            .collect())
    }
}

async fn remove(client: &Client, fs: &str, path: &str) -> Result<bool> {
    match client.delete(path, true).await {
        Ok(existed) => Ok(existed),
        Err(hdfs_native::HdfsError::FileNotFound(_)) => Ok(false),
        Err(e) => Err(Error::Hdfs {
            url: format!("{fs}{path}"),
            why: format!("cannot remove the staging directory: {e}"),
        }),
    }
}

/// Fills `buf` as far as the file goes; 0 at its end.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
