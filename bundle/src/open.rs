//! Unpacks a bundle and verifies every part of it — archive, manifest, checksums, paths and the
//! entry binary's platform — before handing it out; on any problem nothing is left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Result, invalid};
use crate::{Bundle, FORMAT_VERSION, GZIP_MAGIC, MANIFEST_FILE, Manifest, bundle_path, elf};

/// A manifest lists paths and checksums; one larger than this is no manifest.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Unpacks the bundle `file` into the directory `into` (created if missing; it must be
/// empty) and verifies it: the archive is complete, the manifest parses and is of
/// [`FORMAT_VERSION`], every file it lists is there with its size and SHA-256 and nothing else
/// is, no path leaves the directory and nothing is a link, and the entry binary is an
/// executable ELF of this machine's platform. Every error names the bundle and the offending
/// file; after an error `into` is as it was (removed if this call created it).
pub fn open_bundle(file: &Path, into: &Path) -> Result<Bundle> {
    let created = match std::fs::read_dir(into) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(invalid!(
                    "cannot unpack the bundle {} into {}: the directory is not empty",
                    file.display(),
                    into.display()
                ));
            }
            false
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::create_dir_all(into).map_err(|e| {
                invalid!(
                    "cannot unpack the bundle {} into {}: {e}",
                    file.display(),
                    into.display()
                )
            })?;
            true
        }
        Err(e) => {
            return Err(invalid!(
                "cannot unpack the bundle {} into {}: {e}",
                file.display(),
                into.display()
            ));
        }
    };
    match unpack(file, into).and_then(|files| verify(into, files)) {
        Ok(manifest) => Ok(Bundle {
            manifest,
            dir: into.to_path_buf(),
        }),
        Err(problem) => {
            if created {
                let _ = std::fs::remove_dir_all(into);
            } else if let Ok(entries) = std::fs::read_dir(into) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
            Err(invalid!("bundle {}: {problem}", file.display()))
        }
    }
}

/// What unpacking found: files with their size, SHA-256 and executable bit, and directories.
#[derive(Default)]
struct Unpacked {
    files: BTreeMap<String, (u64, String, bool)>,
    dirs: BTreeSet<String>,
}

/// Writes every regular file and directory of the archive below `into`, hashing on the way;
/// refuses anything else and any path that would leave `into`.
fn unpack(file: &Path, into: &Path) -> Result<Unpacked, String> {
    let f = File::open(file).map_err(|e| format!("cannot open it: {e}"))?;
    let mut reader = BufReader::new(f);
    let head = reader
        .fill_buf()
        .map_err(|e| format!("cannot read it: {e}"))?;
    if head.len() < 2 || head[..2] != GZIP_MAGIC {
        return Err(
            "not a bundle: not a gzip file (a bundle is the .tar.gz `sluice bundle` writes)".into(),
        );
    }
    let mut archive = tar::Archive::new(flate2::bufread::GzDecoder::new(reader));
    let mut out = Unpacked::default();
    let damaged = |what: &str, e: std::io::Error| {
        if e.kind() == ErrorKind::UnexpectedEof {
            format!("the file is truncated ({what}: {e})")
        } else {
            format!("the file is damaged ({what}: {e})")
        }
    };
    let entries = archive
        .entries()
        .map_err(|e| damaged("reading the archive", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged("reading the archive", e))?;
        let raw = String::from_utf8(entry.path_bytes().into_owned()).map_err(|e| {
            format!(
                "{}: the path is not UTF-8",
                String::from_utf8_lossy(e.as_bytes())
            )
        })?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            return Err(format!(
                "{raw}: a link (to {target}); a bundle holds only files and directories"
            ));
        }
        if kind.is_dir() && raw.split('/').all(|p| p.is_empty() || p == ".") {
            continue; // `./`, as `tar -C dir .` writes it
        }
        let path = bundle_path(&raw).map_err(|why| format!("{raw}: the path {why}"))?;
        if kind.is_dir() {
            std::fs::create_dir_all(into.join(&path))
                .map_err(|e| format!("{path}: cannot create the directory: {e}"))?;
            out.dirs.insert(path);
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(format!(
                "{path}: an entry of type {kind:?}; a bundle holds only files and directories"
            ));
        }
        if out.files.contains_key(&path) {
            return Err(format!("{path}: in the archive twice"));
        }
        let executable = entry.header().mode().map_err(|e| damaged(&path, e))? & 0o111 != 0;
        let expected = entry.header().size().map_err(|e| damaged(&path, e))?;
        let dest = into.join(&path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("{path}: cannot create its directory: {e}"))?;
        }
        let mode = if executable { 0o755 } else { 0o644 };
        let mut target = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&dest)
            .map_err(|e| format!("{path}: cannot create {}: {e}", dest.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(damaged(&format!("reading {path}"), e)),
            };
            hasher.update(&buf[..n]);
            target
                .write_all(&buf[..n])
                .map_err(|e| format!("{path}: cannot write {}: {e}", dest.display()))?;
            size += n as u64;
        }
        if size != expected {
            return Err(format!(
                "the file is truncated ({path} ends after {size} of its {expected} bytes)"
            ));
        }
        // Exactly 0755 or 0644, whatever the umask.
        target
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{path}: cannot set its mode: {e}"))?;
        out.files
            .insert(path, (size, hex::encode(hasher.finalize()), executable));
    }
    // The rest of the gzip stream: this checks its CRC and length, and so catches a file cut
    // short right after the last tar entry.
    let mut gz = archive.into_inner();
    std::io::copy(&mut gz, &mut std::io::sink()).map_err(|e| damaged("reading the end", e))?;
    let mut rest = gz.into_inner();
    if !rest
        .fill_buf()
        .map_err(|e| damaged("reading the end", e))?
        .is_empty()
    {
        return Err("the file has data after the end of its gzip stream".into());
    }
    Ok(out)
}

/// Checks the unpacked files against the manifest, then the entry binary.
fn verify(into: &Path, unpacked: Unpacked) -> Result<Manifest, String> {
    let Unpacked { mut files, dirs } = unpacked;
    match files.remove(MANIFEST_FILE) {
        None => {
            return Err(format!(
                "{MANIFEST_FILE} is missing (not a bundle written by `sluice bundle`?)"
            ));
        }
        Some((size, _, _)) if size > MAX_MANIFEST_BYTES => {
            return Err(format!(
                "{MANIFEST_FILE} is {size} bytes, more than a manifest can be"
            ));
        }
        Some(_) => {}
    }
    let text = std::fs::read(into.join(MANIFEST_FILE))
        .map_err(|e| format!("{MANIFEST_FILE}: cannot read it: {e}"))?;
    let json: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| format!("{MANIFEST_FILE} is not valid JSON: {e}"))?;
    match json.get("format_version").map(|v| v.as_u64()) {
        None => return Err(format!("{MANIFEST_FILE} has no format_version")),
        Some(Some(v)) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            let v = v.map_or_else(|| json["format_version"].to_string(), |v| v.to_string());
            return Err(format!(
                "{MANIFEST_FILE} is of format version {v}; this sluice reads version \
                 {FORMAT_VERSION} only"
            ));
        }
    }
    let manifest: Manifest = serde_json::from_value(json)
        .map_err(|e| format!("{MANIFEST_FILE} is not a valid manifest: {e}"))?;

    let mut listed = BTreeSet::new();
    for f in &manifest.files {
        let path = bundle_path(&f.path)
            .map_err(|why| format!("{MANIFEST_FILE} lists {:?}, a path that {why}", f.path))?;
        if path != f.path || path == MANIFEST_FILE || !listed.insert(path) {
            return Err(format!(
                "{MANIFEST_FILE} lists {:?} twice or in a non-canonical form",
                f.path
            ));
        }
    }
    let entry = &manifest.entry;
    if manifest.file(entry).is_none() {
        return Err(format!(
            "the entry binary {entry} is not among the manifest's files"
        ));
    }
    if let Some(conf) = &manifest.config
        && manifest.file(conf).is_none()
    {
        return Err(format!(
            "the configuration {conf} is not among the manifest's files"
        ));
    }
    if !files.contains_key(entry) {
        return Err(format!("the entry binary {entry} is missing"));
    }
    for f in &manifest.files {
        let Some((size, sha256, executable)) = files.remove(&f.path) else {
            return Err(format!("{} is listed in the manifest but missing", f.path));
        };
        if size != f.size {
            return Err(format!(
                "{}: size mismatch, {size} bytes where the manifest says {}",
                f.path, f.size
            ));
        }
        if sha256 != f.sha256 {
            return Err(format!(
                "{}: checksum mismatch, SHA-256 {sha256} where the manifest says {}",
                f.path, f.sha256
            ));
        }
        if executable != f.executable {
            return Err(format!(
                "{}: mode mismatch, {} where the manifest says {}",
                f.path,
                if executable {
                    "executable"
                } else {
                    "not executable"
                },
                if f.executable {
                    "executable"
                } else {
                    "not executable"
                },
            ));
        }
    }
    if let Some(extra) = files.keys().next() {
        return Err(format!("{extra} is in the bundle but not in its manifest"));
    }
    for d in &dirs {
        let prefix = format!("{d}/");
        if !listed.iter().any(|p| p.starts_with(&prefix)) {
            return Err(format!(
                "the directory {d} is in the bundle but holds no file of its manifest"
            ));
        }
    }

    let info =
        elf::read_file(&into.join(entry)).map_err(|e| format!("the entry binary {entry}: {e}"))?;
    if !info.executable || !manifest.file(entry).is_some_and(|f| f.executable) {
        return Err(format!("the entry binary {entry} is not an executable"));
    }
    let host = elf::host();
    if !info.same_platform(&host) {
        return Err(format!(
            "the entry binary {entry} was built for {}, this machine runs {}",
            info.triple, host.triple
        ));
    }
    Ok(manifest)
}
