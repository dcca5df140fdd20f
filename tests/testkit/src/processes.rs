//! What the tests that start Sluice's programs share: finding the workspace's binaries,
//! bundling a job binary the way users ship it, and reading a file sink's committed output.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A binary of this workspace in the target directory the running test was built into
/// (`target/release/`, next to the test's `deps/` directory).
pub fn release_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/release");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --release --workspace --bins)",
        path.display()
    );
    path
}

/// A copy of the workspace binary `name` without its debug information (smaller to ship), as
/// `dir/<name>`.
pub fn stripped_copy(name: &str, dir: &Path) -> PathBuf {
    let stripped = dir.join(name);
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(release_bin(name))
        .arg(&stripped)
        .status()
        .expect("objcopy runs");
    assert!(status.success(), "objcopy --strip-debug {name} failed");
    stripped
}

/// The job binary `name` without its debug information, bundled with `sluice bundle` into
/// `dir/<name>.bundle`.
pub fn stripped_bundle(name: &str, dir: &Path) -> PathBuf {
    let stripped = stripped_copy(name, dir);
    let bundle = dir.join(format!("{name}.bundle"));
    let status = Command::new(release_bin("sluice"))
        .arg("bundle")
        .arg(&stripped)
        .arg("-o")
        .arg(&bundle)
        .stdout(Stdio::null())
        .status()
        .expect("sluice bundle runs");
    assert!(status.success(), "sluice bundle {name} failed");
    bundle
}

/// The lines of the committed part files (`part-*`) under `dir`, recursively.
pub fn committed_lines(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with("part-") {
                let text = std::fs::read_to_string(&p).expect("a committed part file");
                out.extend(text.lines().map(str::to_string));
            }
        }
    }
    out
}
