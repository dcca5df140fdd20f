//! What a killed application leaves behind, removed by `yarn-submit --kill`, as Flink's
//! client does: YARN ends the ApplicationMaster with SIGTERM (then SIGKILL), so it cannot
//! delete its staging directory, nor, with `high-availability.type: zookeeper`, its ZooKeeper
//! nodes (`<root>/<cluster-id>`) and its directory under `high-availability.storageDir`.
//!
//! The application's own configuration is read from its staging directory
//! (`sluice-conf.yaml`, as submitted), so the HA settings are the ones it ran with whatever
//! the killing client's configuration says. The same removal applies to an application that
//! had already ended, e.g. one whose last attempt YARN killed.

use std::time::{Duration, Instant};

use sluice_core::Config;

use crate::error::{Error, Result};
use crate::spec::CONF_FILE;
use crate::staging::Staging;

/// How long the removal of the ZooKeeper nodes is retried: the killed master's session (and
/// its ephemeral leader latch) may live until the NodeManager has stopped its process.
const ZK_RETRY: Duration = Duration::from_secs(20);

/// What was removed besides the staging directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// `<root>/<cluster-id>` in ZooKeeper.
    pub zk_base: Option<String>,
    /// The application's directory under `high-availability.storageDir`.
    pub ha_dir: Option<String>,
}

/// The HA settings of the application staged in `staging`, `None` without ZooKeeper HA (or
/// without a staged configuration).
pub async fn staged_config(staging: &Staging) -> Result<Option<Config>> {
    let Some(bytes) = staging.read(CONF_FILE).await? else {
        return Ok(None);
    };
    let tmp = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let file = tmp.path().join(CONF_FILE);
    std::fs::write(&file, bytes).map_err(|source| Error::Io {
        path: file.clone(),
        source,
    })?;
    let config = Config::load(Some(&file), &[]).map_err(|e| {
        Error::Config(format!(
            "the staged configuration {}/{CONF_FILE}: {e}",
            staging.url()
        ))
    })?;
    Ok(config.ha.enabled().then_some(config))
}

/// Removes the ZooKeeper nodes and the HA storage directory of an application that ran with
/// `config` (see [`staged_config`]).
pub async fn remove_ha(config: &Config) -> Result<Removed> {
    let ha = &config.ha;
    let quorum = ha.zk_quorum.clone().unwrap_or_default();
    let base = ha.zk_base();
    let zk_err = |e: zookeeper_client::Error| {
        Error::Config(format!(
            "removing {base} from ZooKeeper at {quorum}: {e} (remove it by hand)"
        ))
    };
    let zk = tokio::time::timeout(
        Duration::from_secs(15),
        zookeeper_client::Client::connector()
            .with_session_timeout(Duration::from_secs(10))
            .connect(&quorum),
    )
    .await
    .map_err(|_| {
        Error::Config(format!(
            "ZooKeeper at {quorum} did not answer within 15 s; {base} stays"
        ))
    })?
    .map_err(zk_err)?;
    let deadline = Instant::now() + ZK_RETRY;
    loop {
        match delete_tree(&zk, &base).await {
            Ok(()) => break,
            // A node was added under one being deleted (the master still ending): again.
            Err(zookeeper_client::Error::NotEmpty) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(zk_err(e)),
        }
    }
    let mut removed = Removed {
        zk_base: Some(base),
        ha_dir: None,
    };
    if let Some(storage_dir) = ha.storage_dir.clone() {
        let cluster_id = ha.cluster_id.clone();
        let dir = tokio::task::spawn_blocking(move || {
            let (storage, root) =
                sluice_hdfs_backend::resolve(&storage_dir).map_err(|e| Error::Hdfs {
                    url: storage_dir.clone(),
                    why: e.to_string(),
                })?;
            let dir = format!(
                "{}/{}",
                root.trim_end_matches('/'),
                cluster_id.trim_matches('/')
            );
            let url = storage.url(&dir);
            storage.delete(&dir, true).map_err(|e| Error::Hdfs {
                url: url.clone(),
                why: format!("cannot remove the HA storage directory: {e}"),
            })?;
            Ok::<_, Error>(url)
        })
        .await
        .map_err(|e| Error::Config(format!("removing the HA storage directory: {e}")))??;
        removed.ha_dir = Some(dir);
    }
    Ok(removed)
}

/// Deletes `path` and everything below it, deepest first; missing nodes are fine.
async fn delete_tree(
    zk: &zookeeper_client::Client,
    path: &str,
) -> std::result::Result<(), zookeeper_client::Error> {
    let mut stack = vec![path.to_string()];
    let mut order = Vec::new();
    while let Some(p) = stack.pop() {
        match zk.list_children(&p).await {
            Ok(children) => stack.extend(children.into_iter().map(|c| format!("{p}/{c}"))),
            Err(zookeeper_client::Error::NoNode) => continue,
            Err(e) => return Err(e),
        }
        order.push(p);
    }
    for p in order.iter().rev() {
        match zk.delete(p, None).await {
            Ok(()) | Err(zookeeper_client::Error::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
