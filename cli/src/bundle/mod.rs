//! Job bundles in the CLI: `sluice bundle` and the unpacked bundle a run uses.

mod launch;

pub(crate) use launch::RunDir;
pub use sluice_bundle::{
    BUNDLE_DIR_ENV, Bundle, BundleOptions, CONFIG_PATH, FORMAT_VERSION, MANIFEST_FILE, Manifest,
    bundle_name, host_triple, human, is_bundle, open_bundle, write_bundle,
};

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::args::BundleArgs;

/// `sluice bundle`: writes the bundle and prints what it holds.
pub fn command(a: BundleArgs) -> Result<()> {
    let opts = BundleOptions {
        binary: a.binary,
        resources: a.resources,
        config: a.config,
        name: a.name,
    };
    let out = match a.output {
        Some(o) => o,
        None => PathBuf::from(format!("{}.bundle", bundle_name(&opts)?)),
    };
    let manifest = write_bundle(&opts, &out)?;
    let written = std::fs::metadata(&out)
        .with_context(|| format!("reading {}", out.display()))?
        .len();
    println!(
        "Wrote {}: {} for {}, {} files, {} ({} unpacked)",
        out.display(),
        manifest.name,
        manifest.target,
        manifest.files.len() + 1,
        human(written),
        human(manifest.total_size()),
    );
    let width = manifest
        .files
        .iter()
        .map(|f| f.path.len())
        .max()
        .unwrap_or(0);
    println!("  {MANIFEST_FILE}");
    for f in &manifest.files {
        println!(
            "  {:width$}  {:>10}  sha256:{}",
            f.path,
            human(f.size),
            &f.sha256[..16]
        );
    }
    Ok(())
}
