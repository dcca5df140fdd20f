//! The CLI's view of the configuration directory: the one handed to jobs, and the source of
//! the default REST address.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use sluice::rest::conf::{CONF_DIR_ENV, CONF_FILE};
use sluice_core::Config;

/// `$SLUICE_CONF_DIR`, else `./conf` if it holds `sluice.yaml` (absolute, as the job may run
/// elsewhere), else none.
pub fn conf_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(CONF_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let local = PathBuf::from("conf");
    if local.join(CONF_FILE).is_file() {
        return std::path::absolute(&local).ok();
    }
    None
}

/// The configuration file, parsed; none when there is no conf dir or no file in it.
pub fn load() -> Result<Option<Config>> {
    let Some(dir) = conf_dir() else {
        return Ok(None);
    };
    let file = dir.join(CONF_FILE);
    if !file.is_file() {
        return Ok(None);
    }
    let config = Config::load(Some(&file), &[])
        .with_context(|| format!("reading the configuration {}", file.display()))?;
    Ok(Some(config))
}

/// How long the CLI waits for ZooKeeper when it looks the leader up.
const ZK_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// `-m`; else, with `high-availability.type: zookeeper` configured, the REST address the
/// leading master published in ZooKeeper (as Flink's CLI finds the leader); else
/// `rest.address:rest.port` of the configuration; else Flink's `127.0.0.1:8081`.
pub fn rest_address(explicit: Option<&str>) -> Result<String> {
    if let Some(a) = explicit {
        return Ok(a
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string());
    }
    let config = load()?;
    if let Some(c) = &config
        && c.ha.enabled()
    {
        return leader_rest_address(c);
    }
    let get = |k: &str| {
        config
            .as_ref()
            .and_then(|c| c.get_raw(k))
            .map(str::to_string)
    };
    let host = get("rest.address").unwrap_or_else(|| "127.0.0.1".into());
    // Port 0 means "any free port" to a server; a client cannot connect to it.
    let port = get("rest.port")
        .filter(|p| p.trim() != "0")
        .unwrap_or_else(|| "8081".into());
    Ok(format!("{host}:{}", port.trim()))
}

/// The REST address in `<root>/<cluster-id>/leader/connection_info`, where the leading master
/// publishes it. Reads once: a client that races a failover gets the old leader's address and
/// an error from it, and asks again.
fn leader_rest_address(config: &Config) -> Result<String> {
    let ha = &config.ha;
    let quorum = ha
        .zk_quorum
        .as_deref()
        .filter(|q| !q.is_empty())
        .ok_or_else(|| {
            anyhow!("high-availability.type is zookeeper but high-availability.zookeeper.quorum is not set")
        })?;
    let zk = sluice_am::ha::zk::Zk::connect(quorum, ZK_LOOKUP_TIMEOUT.min(ha.zk_session_timeout))
        .with_context(|| format!("looking up the leading master in ZooKeeper at {quorum}"))?;
    let path = sluice_am::ha::connection_info_path(ha);
    let data = zk
        .get(&path)
        .with_context(|| format!("reading {path} in ZooKeeper at {quorum}"))?
        .ok_or_else(|| {
            anyhow!(
                "no master leads cluster '{}': nothing at {path} in ZooKeeper at {quorum} \
                 (give -m host:port to ask a master directly)",
                ha.cluster_id
            )
        })?;
    let info: sluice_worker::control::protocol::LeaderInfo = serde_json::from_slice(&data)
        .with_context(|| format!("{path} in ZooKeeper at {quorum} is not a leader's address"))?;
    Ok(info
        .rest
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string())
}
