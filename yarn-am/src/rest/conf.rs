//! Configuration handed from `sluice run` to the job process it starts. The job binary is the
//! user's program, so the CLI cannot pass a `Config` value: it passes a config directory and
//! `-D` style overrides through the environment, and `StreamEnv::new()` picks them up.

use std::path::{Path, PathBuf};

use sluice_core::{Config, Result, SluiceError};

/// A directory holding `sluice.yaml` (Flink's `FLINK_CONF_DIR`).
pub const CONF_DIR_ENV: &str = "SLUICE_CONF_DIR";
/// Newline-separated `key=value` overrides (what `sluice run -D/-p/-s/-n` set).
pub const DYNAMIC_PROPERTIES_ENV: &str = "SLUICE_DYNAMIC_PROPERTIES";
/// The configuration file inside [`CONF_DIR_ENV`].
pub const CONF_FILE: &str = "sluice.yaml";

/// Defaults, then `file` (else `$SLUICE_CONF_DIR/sluice.yaml` if it exists), then the
/// overrides of `$SLUICE_DYNAMIC_PROPERTIES`, then `overrides`; all errors reported together,
/// with the variable named so the user knows where a bad value came from.
pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Config> {
    let conf_file = match file {
        Some(f) => Some(f.to_path_buf()),
        None => handed_over_file()?,
    };
    let mut all = dynamic_properties()?;
    all.extend(overrides.iter().cloned());
    Config::load(conf_file.as_deref(), &all)
}

/// `$SLUICE_CONF_DIR/sluice.yaml`, if the variable is set and the file exists. A variable
/// naming a directory that does not exist is an error: it is a typo, not "no configuration".
pub fn handed_over_file() -> Result<Option<PathBuf>> {
    let Some(dir) = std::env::var_os(CONF_DIR_ENV).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        return Err(SluiceError::Config(format!(
            "{CONF_DIR_ENV}={} is not a directory",
            dir.display()
        )));
    }
    let file = dir.join(CONF_FILE);
    Ok(file.is_file().then_some(file))
}

/// The `key=value` lines of `$SLUICE_DYNAMIC_PROPERTIES` (blank lines skipped).
pub fn dynamic_properties() -> Result<Vec<String>> {
    let Some(text) = std::env::var_os(DYNAMIC_PROPERTIES_ENV) else {
        return Ok(Vec::new());
    };
    let text = text
        .into_string()
        .map_err(|_| SluiceError::Config(format!("{DYNAMIC_PROPERTIES_ENV} is not valid UTF-8")))?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !line.contains('=') {
            return Err(SluiceError::Config(format!(
                "{DYNAMIC_PROPERTIES_ENV}: '{line}' is not of the form key=value"
            )));
        }
        out.push(line.to_string());
    }
    Ok(out)
}
