//! ZooKeeper high availability of the ApplicationMaster (`high-availability.type:
//! zookeeper`): every attempt joins the leader election of its application, so attempt 2,
//! started by YARN after attempt 1 died, takes over once attempt 1 is gone, recovers the job
//! from the HA job store and its latest completed checkpoint, and publishes its address, where
//! the worker containers kept from attempt 1 find it.
//!
//! On YARN the cluster id defaults to the application id, as Flink's
//! `high-availability.cluster-id` does; it names the ZooKeeper nodes
//! (`<root>/<application id>/...`) and the HA storage directory of the application.
//!
//! Besides what the standalone master keeps (see [`crate::ha`]), the ApplicationMaster writes
//! `<base>/application-result` (JSON) as the job ends, before the job leaves the HA job store
//! (see [`super::result`]), and again with the final outcome before it unregisters: an
//! attempt started after the job ended but before the application was unregistered finds it
//! and unregisters with that outcome instead of running the job again. After unregistering, the
//! application's ZooKeeper nodes and HA storage directory are removed.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::Config;
use sluice_core::config::keys::HA_CLUSTER_ID;

use super::ids::{application_id, parse_container_id};
use super::proto::yarn::FinalApplicationStatusProto;
use super::{Result, YarnError};
use crate::ha::{Ha, JobStore, Leadership, Zk};

/// How the outcome of the job is kept for a later attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppResult {
    /// The `FinalApplicationStatusProto` value.
    pub status: i32,
    pub diagnostics: String,
}

impl AppResult {
    pub fn status(&self) -> FinalApplicationStatusProto {
        FinalApplicationStatusProto::try_from(self.status)
            .unwrap_or(FinalApplicationStatusProto::AppFailed)
    }
}

/// `<base>/application-result`.
fn result_path(config: &Config) -> String {
    format!("{}/application-result", config.ha.zk_base())
}

fn ha_err(config: &Config, message: impl std::fmt::Display) -> YarnError {
    YarnError::Config {
        key: format!(
            "high availability in ZooKeeper at {} under {}",
            config.ha.zk_quorum.as_deref().unwrap_or_default(),
            config.ha.zk_base()
        ),
        message: message.to_string(),
    }
}

/// The application id of `container_id`, e.g. `application_1700000000000_0001`.
pub fn application_of(container_id: &str) -> Option<String> {
    let c = parse_container_id(container_id)?;
    Some(application_id(c.app_id.as_ref()))
}

/// With HA on and no `high-availability.cluster-id` configured, sets it to the application
/// id of `container_id`. Returns the id it set (workers must be told it), `None` otherwise.
pub fn default_cluster_id(config: &mut Config, container_id: &str) -> Result<Option<String>> {
    if !config.ha.enabled() || config.get_raw(HA_CLUSTER_ID).is_some() {
        return Ok(None);
    }
    let app = application_of(container_id).ok_or_else(|| YarnError::Env {
        var: super::am::CONTAINER_ID_ENV.into(),
        message: format!("'{container_id}' is not a YARN container id"),
    })?;
    config
        .set(HA_CLUSTER_ID, &app)
        .map_err(|e| YarnError::Config {
            key: HA_CLUSTER_ID.into(),
            message: e.to_string(),
        })?;
    Ok(Some(app))
}

/// Connects to ZooKeeper, opens the job store and blocks until this attempt leads (the
/// previous attempt's process is gone, or its ZooKeeper session expired). Losing leadership
/// later ends the process: YARN then starts the next attempt.
pub fn elect(config: &Config, container_id: &str) -> Result<Arc<Ha>> {
    config.ha.check().map_err(|e| ha_err(config, e))?;
    let quorum = config.ha.zk_quorum.as_deref().unwrap_or_default();
    let zk =
        Arc::new(Zk::connect(quorum, config.ha.zk_session_timeout).map_err(|e| ha_err(config, e))?);
    let store = JobStore::open(zk.clone(), &config.ha).map_err(|e| ha_err(config, e))?;
    let contender = format!("sluice-am in {container_id} pid {}", std::process::id());
    let leadership = Leadership::elect(zk, &config.ha, &contender, |reason| {
        eprintln!("sluice-am: lost leadership: {reason}; exiting (YARN starts the next attempt)");
        std::process::exit(3);
    })
    .map_err(|e| ha_err(config, e))?;
    Ok(Arc::new(Ha { leadership, store }))
}

/// The outcome a previous attempt recorded, if the job already ended.
pub fn recorded_result(ha: &Ha, config: &Config) -> Result<Option<AppResult>> {
    let path = result_path(config);
    let Some(data) = ha
        .leadership
        .zk()
        .get(&path)
        .map_err(|e| ha_err(config, e))?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| ha_err(config, format!("{path} is not an application result: {e}")))
}

/// Records the job's outcome before the application unregisters.
pub fn record_result(ha: &Ha, config: &Config, result: &AppResult) -> Result<()> {
    ha.leadership
        .check("record the application's result")
        .map_err(|e| ha_err(config, e))?;
    let data = serde_json::to_vec(result).expect("an application result serialises");
    ha.leadership
        .zk()
        .put(&result_path(config), &data)
        .map_err(|e| ha_err(config, e))
}

/// Deletes `path` and everything below it; missing nodes are fine.
fn delete_tree(zk: &Zk, path: &str) -> sluice_core::Result<()> {
    for child in zk.children(path)? {
        delete_tree(zk, &format!("{path}/{child}"))?;
    }
    zk.delete(path)
}

/// Removes what the application kept for HA: its ZooKeeper nodes and its directory under
/// `high-availability.storageDir`. Called after the application unregistered, so no later
/// attempt needs them. Failures are reported, not returned: the application already ended.
pub fn clean_up(ha: &Ha, config: &Config) {
    // Gives leadership up first: deleting its own latch node below would otherwise count as
    // leadership lost, which ends the process.
    ha.leadership.resign();
    let base = config.ha.zk_base();
    if let Err(e) = delete_tree(ha.leadership.zk(), &base) {
        eprintln!("sluice-am: removing the HA nodes under {base}: {e}");
    }
    let Some(storage_dir) = config.ha.storage_dir.as_deref() else {
        return;
    };
    let removed = crate::ha::off_runtime(|| {
        let (storage, root) =
            sluice_hdfs_backend::resolve(storage_dir).map_err(|e| e.to_string())?;
        let dir = format!(
            "{}/{}",
            root.trim_end_matches('/'),
            config.ha.cluster_id.trim_matches('/')
        );
        storage
            .delete(&dir, true)
            .map_err(|e| format!("{}: {e}", storage.url(&dir)))
    });
    if let Err(e) = removed {
        eprintln!("sluice-am: removing the HA storage directory: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_id_defaults_to_the_application_id_only_with_ha() {
        let container = "container_e03_1700000000000_0042_02_000001";
        assert_eq!(
            application_of(container).as_deref(),
            Some("application_1700000000000_0042")
        );
        let mut c = Config::default();
        assert_eq!(default_cluster_id(&mut c, container).unwrap(), None);
        c.set("high-availability.type", "zookeeper").unwrap();
        assert_eq!(
            default_cluster_id(&mut c, container).unwrap().as_deref(),
            Some("application_1700000000000_0042")
        );
        assert_eq!(c.ha.zk_base(), "/sluice/application_1700000000000_0042");
        let mut c = Config::default();
        c.set("high-availability.type", "zookeeper").unwrap();
        c.set(HA_CLUSTER_ID, "mine").unwrap();
        assert_eq!(default_cluster_id(&mut c, container).unwrap(), None);
        assert_eq!(c.ha.zk_base(), "/sluice/mine");
        let e = default_cluster_id(&mut Config::default(), "nonsense");
        assert!(e.unwrap().is_none(), "without HA the id is not looked at");
        let mut c = Config::default();
        c.set("high-availability.type", "zookeeper").unwrap();
        let e = default_cluster_id(&mut c, "nonsense")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nonsense"), "{e}");
    }

    #[test]
    fn a_recorded_result_keeps_its_status() {
        let r = AppResult {
            status: FinalApplicationStatusProto::AppKilled as i32,
            diagnostics: "cancelled".into(),
        };
        let back: AppResult = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back.status(), FinalApplicationStatusProto::AppKilled);
        assert_eq!(back, r);
    }
}
