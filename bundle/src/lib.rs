//! Job bundles: one file (a gzipped tar) holding a job binary, its resources and its default
//! configuration, listed with their checksums in `MANIFEST.json` — what users ship, like a
//! Flink jar.
//!
//! Layout inside a bundle:
//!
//! ```text
//! MANIFEST.json          format version, name, entry, platforms, every file's size and SHA-256
//! bin/<binary>           the entry binary (mode 0755)
//! resources/<name>...    the files and directories given with --resource
//! conf/sluice.yaml       the default configuration given with --config
//! ```
//!
//! [`write_bundle`] writes one, [`open_bundle`] unpacks one and verifies all of it before it
//! returns, so nothing from a damaged, tampered or foreign bundle is ever started.

mod elf;
mod error;
mod open;
mod write;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use error::{BundleError, Result};
pub use open::open_bundle;
pub use sluice_core::size::human;
pub use write::{bundle_name, write_bundle};

/// The manifest format this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's path inside a bundle.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// Where the entry binary lives inside a bundle.
pub const BIN_DIR: &str = "bin";
/// Where the `--resource` files live inside a bundle.
pub const RESOURCE_DIR: &str = "resources";
/// Where the default configuration lives inside a bundle.
pub const CONFIG_PATH: &str = "conf/sluice.yaml";
/// Names the unpacked bundle's directory for the job `sluice run` starts from a bundle; its
/// resources are in `$SLUICE_BUNDLE_DIR/resources`.
pub const BUNDLE_DIR_ENV: &str = "SLUICE_BUNDLE_DIR";

/// What `MANIFEST.json` says: the bundle's identity and every file it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The bundle's name (by default the binary's file name).
    pub name: String,
    /// Path of the entry binary inside the bundle, e.g. `bin/wordcount`.
    pub entry: String,
    /// Target triple of the entry binary, read from its ELF header.
    pub target: String,
    /// Target triple of the machine that wrote the bundle.
    pub built_on: String,
    /// The program that wrote the bundle, e.g. `sluice 0.1.0`.
    pub created_by: String,
    /// Path of the default configuration inside the bundle ([`CONFIG_PATH`]), if it has one.
    #[serde(default)]
    pub config: Option<String>,
    /// Every file of the bundle except the manifest itself.
    pub files: Vec<FileEntry>,
}

/// One file of a bundle as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path inside the bundle, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
    /// Unpacked with mode 0755 rather than 0644.
    #[serde(default)]
    pub executable: bool,
}

impl Manifest {
    /// The listed file at `path`, if any.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Bytes of all listed files together.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What [`write_bundle`] packs.
#[derive(Debug, Clone, Default)]
pub struct BundleOptions {
    /// The job binary: an ELF executable, of any platform (it is checked where it runs).
    pub binary: PathBuf,
    /// Files and directories stored under `resources/` by their file name.
    pub resources: Vec<PathBuf>,
    /// The default configuration, stored as `conf/sluice.yaml` after it parsed.
    pub config: Option<PathBuf>,
    /// The bundle's name; default the binary's file name.
    pub name: Option<String>,
}

/// A verified bundle, unpacked.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Its manifest.
    pub manifest: Manifest,
    /// The directory it was unpacked into.
    pub dir: PathBuf,
}

impl Bundle {
    /// The unpacked entry binary.
    pub fn entry(&self) -> PathBuf {
        self.dir.join(&self.manifest.entry)
    }

    /// The unpacked default configuration, if the bundle has one.
    pub fn config_file(&self) -> Option<PathBuf> {
        self.manifest.config.as_ref().map(|c| self.dir.join(c))
    }

    /// The directory holding the bundle's resources (it may not exist if there are none).
    pub fn resource_dir(&self) -> PathBuf {
        self.dir.join(RESOURCE_DIR)
    }
}

/// Whether `path` names a bundle rather than a job binary: a file that starts with the gzip
/// magic, or a path ending in `.bundle` (which [`open_bundle`] then refuses if it is not one).
pub fn is_bundle(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e == "bundle") {
        return true;
    }
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|_| magic == GZIP_MAGIC)
}

/// The first two bytes of every gzip file.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The target triple of this machine, as bundles record and check it.
pub fn host_triple() -> String {
    elf::host().triple
}

/// `path` as a bundle path: relative, `/`-separated, no `.`, `..` or root components.
/// `Err` says what is wrong with it.
fn bundle_path(path: &str) -> Result<String, &'static str> {
    if path.starts_with('/') {
        return Err("is an absolute path");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("escapes the bundle directory (`..`)"),
            p if p.contains('\0') || p.contains('\\') => {
                return Err("has a NUL or backslash in its name");
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("is empty");
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_paths_are_relative_and_stay_inside() {
        assert_eq!(bundle_path("./bin/job").unwrap(), "bin/job");
        assert_eq!(bundle_path("bin//job").unwrap(), "bin/job");
        assert!(bundle_path("../job").unwrap_err().contains(".."));
        assert!(bundle_path("bin/../../job").unwrap_err().contains(".."));
        assert!(bundle_path("/etc/passwd").unwrap_err().contains("absolute"));
        assert!(bundle_path("./").is_err());
    }
}
