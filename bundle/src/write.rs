//! Writes a bundle: checks the inputs, hashes them, and packs manifest and files into a
//! gzipped tar that appears at its path only once it is complete.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result, invalid};
use crate::{
    BIN_DIR, BundleOptions, CONFIG_PATH, FORMAT_VERSION, FileEntry, MANIFEST_FILE, Manifest,
    RESOURCE_DIR, elf,
};

/// Packs `opts` into the bundle file `out` and returns its manifest. The binary must be an
/// ELF executable (of any platform), resources must exist, the configuration must parse, and
/// no two inputs may land on the same path. `out` is replaced only once the bundle is complete.
pub fn write_bundle(opts: &BundleOptions, out: &Path) -> Result<Manifest> {
    let binary = &opts.binary;
    if !binary.is_file() {
        return Err(invalid!(
            "the job binary {} is not a file",
            binary.display()
        ));
    }
    let info =
        elf::read_file(binary).map_err(|e| invalid!("the job binary {}: {e}", binary.display()))?;
    if !info.executable {
        return Err(invalid!(
            "the job binary {}: an ELF file, but not an executable",
            binary.display()
        ));
    }
    let name = bundle_name(opts)?;
    let entry = format!("{BIN_DIR}/{}", file_name(binary)?);

    let mut inputs: Vec<Input> = vec![Input {
        path: entry.clone(),
        source: binary.clone(),
        executable: true,
    }];
    for r in &opts.resources {
        let base = format!("{RESOURCE_DIR}/{}", file_name(r)?);
        collect(r, &base, &mut inputs)?;
    }
    if let Some(conf) = &opts.config {
        sluice_core::Config::load(Some(conf), &[])
            .map_err(|e| invalid!("the configuration {}: {e}", conf.display()))?;
        inputs.push(Input {
            path: CONFIG_PATH.to_string(),
            source: conf.clone(),
            executable: false,
        });
    }
    for (i, a) in inputs.iter().enumerate() {
        if let Some(b) = inputs[..i].iter().find(|b| b.path == a.path) {
            return Err(invalid!(
                "{} and {} would both be stored as {}; rename one",
                b.source.display(),
                a.source.display(),
                a.path
            ));
        }
    }

    let mut files = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let (size, sha256) = hash_file(&input.source)?;
        files.push(FileEntry {
            path: input.path.clone(),
            size,
            sha256,
            executable: input.executable,
        });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name,
        entry,
        target: info.triple,
        built_on: super::host_triple(),
        created_by: format!("sluice {}", env!("CARGO_PKG_VERSION")),
        config: opts.config.as_ref().map(|_| CONFIG_PATH.to_string()),
        files,
    };

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".sluice-bundle-")
        .tempfile_in(&dir)
        .io_context(|| format!("cannot create a file in {}", dir.display()))?;
    pack(&manifest, &inputs, tmp.as_file())
        .io_context(|| format!("writing the bundle {}", out.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .io_context(|| format!("writing the bundle {}", out.display()))?;
    tmp.persist(out)
        .map_err(|e| e.error)
        .io_context(|| format!("cannot write the bundle {}", out.display()))?;
    Ok(manifest)
}

/// One file to pack: where it goes inside the bundle and where it comes from.
struct Input {
    path: String,
    source: PathBuf,
    executable: bool,
}

/// `--name`, else the binary's file name.
pub fn bundle_name(opts: &BundleOptions) -> Result<String> {
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => file_name(&opts.binary)?,
    };
    if name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(invalid!(
            "the bundle name {name:?} is empty or has control characters"
        ));
    }
    Ok(name)
}

/// The last component of `path` as UTF-8 (`.` and `..` resolved first).
fn file_name(path: &Path) -> Result<String> {
    let resolved;
    let path = if path.file_name().is_some() {
        path
    } else {
        resolved = std::fs::canonicalize(path)
            .io_context(|| format!("{} does not exist", path.display()))?;
        &resolved
    };
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| invalid!("{}: the file name must be UTF-8", path.display()))
}

/// `source` (a file, or a directory taken whole in name order) as inputs under `base`.
/// Symbolic links to files are stored as the files; links to directories are refused, as
/// they may loop.
fn collect(source: &Path, base: &str, inputs: &mut Vec<Input>) -> Result<()> {
    let meta = std::fs::metadata(source)
        .io_context(|| format!("the resource {} does not exist", source.display()))?;
    if meta.is_file() {
        inputs.push(Input {
            path: base.to_string(),
            source: source.to_path_buf(),
            executable: meta.permissions().mode() & 0o111 != 0,
        });
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(invalid!(
            "the resource {} is neither a file nor a directory",
            source.display()
        ));
    }
    let mut children: Vec<_> = std::fs::read_dir(source)
        .io_context(|| format!("reading the resource directory {}", source.display()))?
        .collect::<std::io::Result<_>>()
        .io_context(|| format!("reading the resource directory {}", source.display()))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let name = file_name(&path)?;
        let linked_dir = std::fs::symlink_metadata(&path)
            .io_context(|| format!("reading {}", path.display()))?
            .file_type()
            .is_symlink()
            && path.is_dir();
        if linked_dir {
            return Err(invalid!(
                "the resource {} is a symbolic link to a directory; give the directory itself",
                path.display()
            ));
        }
        collect(&path, &format!("{base}/{name}"), inputs)?;
    }
    Ok(())
}

/// The size and SHA-256 (hex) of the file at `path`.
fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).io_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).io_context(|| format!("reading {}", path.display())),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Writes the tar.gz: the manifest first, then the files in manifest order, with fixed
/// owners and times so the same inputs give the same bytes.
fn pack(manifest: &Manifest, inputs: &[Input], out: &File) -> std::io::Result<()> {
    let gz = flate2::GzBuilder::new().write(BufWriter::new(out), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let json = serde_json::to_vec_pretty(manifest).map_err(std::io::Error::other)?;
    tar.append_data(
        &mut header(json.len() as u64, false),
        MANIFEST_FILE,
        &json[..],
    )?;
    for (input, listed) in inputs.iter().zip(&manifest.files) {
        // Streamed from the file again and hashed on the way; a file that changed since it
        // was listed is an error rather than a bundle whose checksums lie.
        let file = File::open(&input.source).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot open {}: {e}", input.source.display()),
            )
        })?;
        let mut reader = Hashing {
            inner: file.take(listed.size),
            hasher: Sha256::new(),
            size: 0,
        };
        tar.append_data(
            &mut header(listed.size, listed.executable),
            &listed.path,
            &mut reader,
        )
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("packing {}: {e}", input.source.display()))
        })?;
        if (reader.size, hex::encode(reader.hasher.finalize()))
            != (listed.size, listed.sha256.clone())
        {
            return Err(std::io::Error::other(format!(
                "{} changed while it was being bundled",
                input.source.display()
            )));
        }
    }
    let gz = tar.into_inner()?;
    let mut file = gz.finish()?;
    file.flush()?;
    file.get_ref().sync_all()?;
    Ok(())
}

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

fn header(size: u64, executable: bool) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(if executable { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}
