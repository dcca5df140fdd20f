//! The step that turns the bundle bytes a master sent into a program to start, pluggable so
//! the daemon does not depend on one bundle format.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Unpacks and verifies the bundle file `bundle` into the directory `into` (which does not
/// exist yet), returning the path of the entry program. `Err` says what is wrong; it is
/// reported to the master as the reason the job process could not start.
///
/// With the job bundle library this is
/// `|b, into| open_bundle(b, into).map(|b| b.entry()).map_err(|e| format!("{e:#}"))`.
pub type Unpack = fn(bundle: &Path, into: &Path) -> Result<PathBuf, String>;

/// The first bytes of every gzip file, and so of every job bundle.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// An [`Unpack`] for a "bundle" that is the entry program itself, an ELF executable or a `#!`
/// script: copied to `<into>/entry` with mode 0755. Refuses job bundles (gzip) and anything
/// else.
pub fn bare_executable(bundle: &Path, into: &Path) -> Result<PathBuf, String> {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(bundle)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| format!("cannot read {}: {e}", bundle.display()))?;
    let head = &head[..n];
    if head.starts_with(&GZIP_MAGIC) {
        return Err(format!(
            "{} is a job bundle, and this build of sluice-worker starts bare executables only",
            bundle.display()
        ));
    }
    if !head.starts_with(&ELF_MAGIC) && !head.starts_with(b"#!") {
        return Err(format!(
            "{} is neither an ELF executable nor a #! script",
            bundle.display()
        ));
    }
    std::fs::create_dir_all(into).map_err(|e| format!("cannot create {}: {e}", into.display()))?;
    let entry = into.join("entry");
    std::fs::copy(bundle, &entry)
        .and_then(|_| std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot write {}: {e}", entry.display()))?;
    Ok(entry)
}
