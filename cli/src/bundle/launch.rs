//! A bundle unpacked for `sluice run`: a temporary directory holding the verified bundle (and,
//! when both exist, the bundle's configuration merged over the site's), removed when the run
//! ends or, for a detached job, by a later run once the job has exited.
//!
//! Layout: `$TMPDIR/sluice-bundle-XXXXXX/{job/, conf/sluice.yaml, owners}`. `owners` lists the
//! ids of the processes using the directory (the CLI, then the job); a directory none of whose
//! owners lives any more is stale, whatever killed them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sluice_core::Config;
use tempfile::TempDir;

use super::{BUNDLE_DIR_ENV, Bundle, open_bundle};

const PREFIX: &str = "sluice-bundle-";
const OWNERS: &str = "owners";
const CONF_FILE: &str = "sluice.yaml";

/// A verified bundle in a temporary directory, ready to run.
pub(crate) struct RunDir {
    tmp: TempDir,
    bundle: Bundle,
    conf_dir: Option<PathBuf>,
}

impl RunDir {
    /// Unpacks and verifies the bundle `file` (see [`open_bundle`]), and works out the job's
    /// configuration directory: the bundle's `conf/sluice.yaml` is the job's own configuration,
    /// so it goes over the site configuration (`$SLUICE_CONF_DIR` or `./conf`) if there is one,
    /// as a Flink job's own settings go over the cluster's; `-D` goes over both, as it reaches
    /// the job separately.
    pub fn prepare(file: &Path) -> Result<RunDir> {
        sweep_stale();
        let tmp = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir()
            .context("cannot create a temporary directory to unpack the bundle in")?;
        // Owned before anything is unpacked, so a CLI killed meanwhile leaves nothing for good.
        add_owner(tmp.path(), std::process::id())?;
        let run = RunDir {
            bundle: open_bundle(file, &tmp.path().join("job"))?,
            conf_dir: None,
            tmp,
        };
        let conf_dir = run.effective_conf()?;
        Ok(RunDir { conf_dir, ..run })
    }

    /// The unpacked entry binary.
    pub fn entry(&self) -> PathBuf {
        self.bundle.entry()
    }

    /// The unpacked bundle, handed to the job as [`BUNDLE_DIR_ENV`].
    pub fn dir(&self) -> &Path {
        &self.bundle.dir
    }

    /// The configuration directory for the job, if any.
    pub fn conf_dir(&self) -> Option<&Path> {
        self.conf_dir.as_deref()
    }

    /// The job's arguments with `${SLUICE_BUNDLE_DIR}` replaced by the unpacked bundle's
    /// directory, so `-- --input '${SLUICE_BUNDLE_DIR}/resources/data'` reaches a resource.
    pub fn job_args(&self, args: &[String]) -> Vec<String> {
        let token = format!("${{{BUNDLE_DIR_ENV}}}");
        let dir = self.dir().to_string_lossy();
        args.iter().map(|a| a.replace(&token, &dir)).collect()
    }

    /// Records `pid` as using the directory: it is not removed as stale while `pid` lives.
    pub fn add_owner(&self, pid: u32) -> Result<()> {
        add_owner(self.tmp.path(), pid)
    }

    /// Keeps the directory after this value is dropped (for a detached job, which outlives
    /// the CLI); a later `sluice run` of a bundle removes it once the job has exited.
    pub fn keep(self) -> PathBuf {
        self.tmp.keep()
    }

    /// The site configuration, the bundle's over it; just one of them if there is one.
    fn effective_conf(&self) -> Result<Option<PathBuf>> {
        let site = crate::conf::conf_dir();
        let site_file = site
            .as_ref()
            .map(|d| d.join(CONF_FILE))
            .filter(|f| f.is_file());
        let Some(own) = self.bundle.config_file() else {
            return Ok(site);
        };
        let Some(site_file) = site_file else {
            return Ok(own.parent().map(Path::to_path_buf));
        };
        let load = |f: &Path| {
            Config::load(Some(f), &[])
                .with_context(|| format!("reading the configuration {}", f.display()))
        };
        let mut merged: BTreeMap<String, String> = load(&site_file)?.explicit().clone();
        merged.extend(load(&own)?.explicit().clone());
        let dir = self.tmp.path().join("conf");
        let file = dir.join(CONF_FILE);
        let mut text = format!(
            "# {}, then the bundle's {} over it.\n",
            site_file.display(),
            super::CONFIG_PATH
        );
        for (k, v) in &merged {
            // JSON strings are YAML strings.
            text.push_str(&format!(
                "{}: {}\n",
                serde_json::Value::from(k.as_str()),
                serde_json::Value::from(v.as_str())
            ));
        }
        std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(&file, text))
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(Some(dir))
    }
}

/// Appends `pid` to the owners of the directory `dir`.
fn add_owner(dir: &Path, pid: u32) -> Result<()> {
    let path = dir.join(OWNERS);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(f, "{pid}").with_context(|| format!("cannot write {}", path.display()))
}

/// Removes the bundle directories left in the temporary directory whose owners all exited.
/// Best effort: on a system without `/proc` nothing is removed.
fn sweep_stale() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join(OWNERS)) else {
            continue;
        };
        let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if !pids.is_empty()
            && !pids
                .iter()
                .any(|p| Path::new(&format!("/proc/{p}")).exists())
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
