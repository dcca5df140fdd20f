//! The CLI's view of the configuration directory: the one handed to jobs, and the source of
//! the default REST address.

use std::path::PathBuf;

use anyhow::{Context, Result};
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

/// `-m`, else `rest.address:rest.port` of the configuration, else Flink's `127.0.0.1:8081`.
pub fn rest_address(explicit: Option<&str>) -> Result<String> {
    if let Some(a) = explicit {
        return Ok(a
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string());
    }
    let config = load()?;
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
