//! Job bundles end to end: `sluice bundle` packs real job binaries with resources and a
//! configuration, `sluice run job.bundle` runs them from a verified temporary copy, and every
//! kind of damaged, tampered or foreign bundle is refused with a message naming the bundle and
//! the problem before anything starts. Each test works in a temporary directory of its own,
//! which is also the `TMPDIR` of the CLI, so leftover unpacked bundles show.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice_cli::bundle::{self, BundleOptions, Manifest};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const TESTJOB: &str = env!("CARGO_BIN_EXE_sluice-testjob");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `sluice args` in `cwd` with `env`, outside of any inherited Sluice variables, with
/// `cwd/tmp` as its temporary directory.
fn sluice(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let tmp = cwd.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = Command::new(SLUICE);
    cmd.args(args).current_dir(cwd).env("TMPDIR", &tmp);
    for var in [
        "SLUICE_CONF_DIR",
        "SLUICE_DYNAMIC_PROPERTIES",
        "SLUICE_REST_PORT",
        "SLUICE_REST_LINGER_MS",
        "SLUICE_LOG_DIR",
        "SLUICE_BUNDLE_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("sluice runs");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn ok(run: Run, what: &str) -> Run {
    assert_eq!(run.code, 0, "{what}: {run:?}");
    run
}

/// The unpacked bundles left in the CLI's temporary directory.
fn leftovers(cwd: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(cwd.join("tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A small real program from this machine, found on `PATH`.
fn system_program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

/// The `wordcount` example, next to the CLI in the target directory; built first if a
/// `cargo test -p sluice-cli` alone did not build it.
fn wordcount() -> PathBuf {
    let release = Path::new(SLUICE).parent().unwrap();
    let bin = release.join("wordcount");
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "-p",
                "sluice-examples",
                "--bin",
                "wordcount",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CARGO_TARGET_DIR", release.parent().unwrap())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the wordcount example failed");
    }
    bin
}

/// The `(word,count)` lines WordCount prints for `texts` read in this order.
fn expected_wordcount(texts: &[&str]) -> Vec<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for text in texts {
        for w in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let w = w.to_lowercase();
            let c = counts.entry(w.clone()).or_insert(0);
            *c += 1;
            out.push(format!("({w},{c})"));
        }
    }
    out
}

/// The job's output lines: what `sluice run` printed itself taken out.
fn job_lines(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.starts_with("Job has been submitted"))
        .map(String::from)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The last count printed per key by `sluice-testjob`.
fn last_counts(output: &str) -> BTreeMap<u64, u64> {
    let mut last = BTreeMap::new();
    for line in output.lines() {
        let l = line.rsplit("> ").next().unwrap_or(line);
        if let Some((k, c)) = l
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .and_then(|l| l.split_once(','))
            && let (Ok(k), Ok(c)) = (k.parse(), c.parse())
        {
            last.insert(k, c);
        }
    }
    last
}

/// Polls until `cond` holds, at most `secs`.
fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TEXTS: [(&str, &str); 2] = [
    (
        "a.txt",
        "To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer\n",
    ),
    (
        "b.txt",
        "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n",
    ),
];

#[test]
fn wordcount_bundled_with_its_input_and_configuration_runs_from_the_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let words = cwd.join("words");
    std::fs::create_dir(&words).unwrap();
    for (name, text) in TEXTS {
        std::fs::write(words.join(name), text).unwrap();
    }
    std::fs::write(cwd.join("wc.yaml"), "parallelism:\n  default: 2\n").unwrap();
    let wordcount = wordcount();
    let made = ok(
        sluice(
            cwd,
            &[
                "bundle",
                wordcount.to_str().unwrap(),
                "--resource",
                "words",
                "--config",
                "wc.yaml",
                "-o",
                "wc.bundle",
            ],
            &[],
        ),
        "sluice bundle",
    );
    let triple = bundle::host_triple();
    assert!(
        made.stdout.starts_with(&format!(
            "Wrote wc.bundle: wordcount for {triple}, 5 files, "
        )),
        "{made:?}"
    );
    for path in [
        "MANIFEST.json",
        "bin/wordcount",
        "resources/words/a.txt",
        "resources/words/b.txt",
        "conf/sluice.yaml",
    ] {
        assert!(
            made.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(path)),
            "{path} in {made:?}"
        );
    }

    // The bundle's configuration runs WordCount with 2 subtasks: prefixed updates.
    let input = "--input=${SLUICE_BUNDLE_DIR}/resources/words";
    let run = ok(
        sluice(
            cwd,
            &["run", "--rest-port", "0", "wc.bundle", "--", input],
            &[],
        ),
        "run the bundle",
    );
    let texts: Vec<&str> = TEXTS.iter().map(|(_, t)| *t).collect();
    let mut stripped = Vec::new();
    for l in job_lines(&run.stdout) {
        let (prefix, rest) = l
            .split_once("> ")
            .unwrap_or_else(|| panic!("no subtask prefix in {l}: {run:?}"));
        assert!(["1", "2"].contains(&prefix), "{l}");
        stripped.push(rest.to_string());
    }
    assert_eq!(
        sorted(stripped),
        sorted(expected_wordcount(&texts)),
        "{run:?}"
    );
    assert!(run.stderr.contains("Finished"), "{run:?}");

    // -D wins over the bundle's configuration: one subtask, the exact output in order.
    let run = ok(
        sluice(
            cwd,
            &[
                "run",
                "--rest-port",
                "0",
                "-D",
                "parallelism.default=1",
                "wc.bundle",
                "--",
                input,
            ],
            &[],
        ),
        "run the bundle with -D",
    );
    assert_eq!(
        job_lines(&run.stdout),
        expected_wordcount(&texts),
        "{run:?}"
    );
    assert!(leftovers(cwd).is_empty(), "{:?}", leftovers(cwd));
}

#[test]
fn a_bundles_configuration_goes_over_the_sites_and_under_dynamic_properties() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    std::fs::write(cwd.join("job.yaml"), "parallelism.default: 2\n").unwrap();
    let bundle_args = |config: bool, out: &str| {
        let mut args = vec!["bundle", TESTJOB, "-o", out, "--name", "counts"];
        if config {
            args.extend(["--config", "job.yaml"]);
        }
        ok(sluice(cwd, &args, &[]), "sluice bundle");
    };
    bundle_args(true, "with-conf.bundle");
    bundle_args(false, "without-conf.bundle");
    let job = ["--", "--count", "20", "--rate", "2000"];
    let run = |bundle: &str, extra: &[&str]| {
        let mut args = vec!["run", "--rest-port", "0"];
        args.extend(extra);
        args.push(bundle);
        args.extend(job);
        let run = ok(sluice(cwd, &args, &[]), bundle);
        assert_eq!(
            last_counts(&run.stdout),
            (0..5).map(|k| (k, 4)).collect(),
            "{run:?}"
        );
        run
    };
    let parallelism = |run: &Run| {
        run.stderr
            .lines()
            .find_map(|l| l.strip_prefix("parallelism.default="))
            .unwrap_or_else(|| panic!("no parallelism printed: {run:?}"))
            .to_string()
    };
    assert_eq!(parallelism(&run("with-conf.bundle", &[])), "2");

    // A site configuration (./conf) is the base; the bundle's own goes over it.
    std::fs::create_dir(cwd.join("conf")).unwrap();
    std::fs::write(cwd.join("conf/sluice.yaml"), "parallelism:\n  default: 4\n").unwrap();
    assert_eq!(parallelism(&run("without-conf.bundle", &[])), "4");
    assert_eq!(parallelism(&run("with-conf.bundle", &[])), "2");
    assert_eq!(parallelism(&run("with-conf.bundle", &["-p", "3"])), "3");
    assert_eq!(
        parallelism(&run("with-conf.bundle", &["-D", "parallelism.default=1"])),
        "1"
    );
    assert!(leftovers(cwd).is_empty(), "{:?}", leftovers(cwd));

    // A detached job keeps its unpacked bundle while it runs; once it exited, the next
    // bundle run removes it.
    let run = ok(
        sluice(
            cwd,
            &[
                "run",
                "-d",
                "--rest-port",
                "0",
                "--log-dir",
                "log",
                "with-conf.bundle",
                "--",
                "--count",
                "20",
                "--rate",
                "200",
            ],
            &[],
        ),
        "detached",
    );
    let kept = PathBuf::from(
        run.stderr
            .lines()
            .find_map(|l| l.strip_prefix("Job bundle unpacked in "))
            .unwrap_or_else(|| panic!("no unpacked directory named: {run:?}")),
    );
    assert!(kept.join("job/bin/sluice-testjob").is_file(), "{run:?}");
    let owners = std::fs::read_to_string(kept.join("owners")).unwrap();
    eventually(60, "the detached job to exit", || {
        owners
            .lines()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    let _ = sluice(cwd, &["run", "no-such.bundle"], &[]);
    assert!(!kept.exists(), "{} is still there", kept.display());
}

#[test]
fn the_job_gets_the_bundle_directory_its_resources_and_its_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    std::fs::write(cwd.join("data.txt"), "shipped with the job\n").unwrap();
    std::fs::write(cwd.join("job.yaml"), "rest.port: 0\n").unwrap();
    let env = system_program("env");
    ok(
        sluice(
            cwd,
            &[
                "bundle",
                env.to_str().unwrap(),
                "--resource",
                "data.txt",
                "--config",
                "job.yaml",
            ],
            &[],
        ),
        "bundle env",
    );
    assert!(cwd.join("env.bundle").is_file(), "default output name");
    // `env` prints its environment and exits without submitting a job.
    let run = sluice(cwd, &["run", "env.bundle", "--", "-0"], &[]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("exited (exit status: 0) without submitting a job"),
        "{run:?}"
    );
    let vars: BTreeMap<&str, &str> = run
        .stdout
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let dir = Path::new(vars["SLUICE_BUNDLE_DIR"]);
    assert!(dir.starts_with(cwd.join("tmp")), "{run:?}");
    assert_eq!(
        Path::new(vars["SLUICE_CONF_DIR"]),
        dir.join("conf"),
        "{run:?}"
    );
    assert!(
        !vars.contains_key("SLUICE_REST_PORT"),
        "rest.port is in the bundle's configuration: {run:?}"
    );
    assert!(!dir.exists(), "removed after the run");

    // `cat` shows that a resource is where the variable says.
    let cat = system_program("cat");
    ok(
        sluice(
            cwd,
            &[
                "bundle",
                cat.to_str().unwrap(),
                "--resource",
                "data.txt",
                "-o",
                "cat.bundle",
            ],
            &[],
        ),
        "bundle cat",
    );
    let run = sluice(
        cwd,
        &[
            "run",
            "cat.bundle",
            "--",
            "${SLUICE_BUNDLE_DIR}/resources/data.txt",
        ],
        &[],
    );
    assert_eq!(run.stdout, "shipped with the job\n", "{run:?}");
    assert!(leftovers(cwd).is_empty(), "{:?}", leftovers(cwd));
}

#[test]
fn write_and_open_through_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("data.txt"), "some data\n").unwrap();
    std::fs::write(dir.join("conf.yaml"), "parallelism.default: 3\n").unwrap();
    let touch = system_program("touch");
    let opts = BundleOptions {
        binary: touch.clone(),
        resources: vec![dir.join("data.txt")],
        config: Some(dir.join("conf.yaml")),
        name: Some("my job".into()),
    };
    let out = dir.join("a.bundle");
    let manifest = bundle::write_bundle(&opts, &out).unwrap();
    assert_eq!(manifest.format_version, bundle::FORMAT_VERSION);
    assert_eq!(manifest.name, "my job");
    assert_eq!(manifest.entry, "bin/touch");
    assert_eq!(manifest.target, bundle::host_triple());
    assert_eq!(manifest.built_on, bundle::host_triple());
    assert_eq!(manifest.config.as_deref(), Some("conf/sluice.yaml"));
    let binary = std::fs::read(&touch).unwrap();
    let listed = manifest.file("bin/touch").unwrap();
    assert_eq!(listed.size, binary.len() as u64);
    assert_eq!(listed.sha256, hex::encode(Sha256::digest(&binary)));
    assert!(listed.executable);
    assert!(!manifest.file("resources/data.txt").unwrap().executable);

    // The same inputs give the same bytes.
    let again = dir.join("b.bundle");
    bundle::write_bundle(&opts, &again).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());

    let opened = bundle::open_bundle(&out, &dir.join("x")).unwrap();
    assert_eq!(opened.manifest, manifest);
    assert_eq!(std::fs::read(opened.entry()).unwrap(), binary);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&opened.entry()), 0o755);
    let data = opened.resource_dir().join("data.txt");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "some data\n");
    assert_eq!(mode(&data), 0o644);
    assert_eq!(
        std::fs::read_to_string(opened.config_file().unwrap()).unwrap(),
        "parallelism.default: 3\n"
    );

    // Not into a directory that holds something; a failed open leaves nothing behind.
    let e = bundle::open_bundle(&out, &dir.join("x")).unwrap_err();
    assert!(format!("{e:#}").contains("is not empty"), "{e:#}");
    std::fs::write(
        dir.join("broken.bundle"),
        &std::fs::read(&out).unwrap()[..500],
    )
    .unwrap();
    let into = dir.join("y");
    let e = bundle::open_bundle(&dir.join("broken.bundle"), &into).unwrap_err();
    assert!(format!("{e:#}").contains("truncated"), "{e:#}");
    assert!(!into.exists());
}

#[test]
fn bundling_refuses_inputs_that_could_not_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    std::fs::write(cwd.join("job.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(cwd.join("bad.yaml"), "parallelism.default: zero\n").unwrap();
    std::fs::create_dir(cwd.join("other")).unwrap();
    std::fs::write(cwd.join("data.txt"), "a").unwrap();
    std::fs::write(cwd.join("other/data.txt"), "b").unwrap();
    let touch = system_program("touch");
    let touch = touch.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["job.sh"], "job.sh: not an ELF binary"),
        (&["no-such-binary"], "no-such-binary is not a file"),
        (
            &[touch, "--resource", "missing.txt"],
            "the resource missing.txt does not exist",
        ),
        (
            &[touch, "--config", "bad.yaml"],
            "parallelism.default: 'zero'",
        ),
        (
            &[
                touch,
                "--resource",
                "data.txt",
                "--resource",
                "other/data.txt",
            ],
            "would both be stored as resources/data.txt",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["bundle"];
        all.extend(args);
        all.extend(["-o", "out.bundle"]);
        let run = sluice(cwd, &all, &[]);
        assert_ne!(run.code, 0, "{args:?}: {run:?}");
        assert!(run.stderr.contains(message), "{args:?}: {run:?}");
        assert!(!cwd.join("out.bundle").exists(), "{args:?}");
    }
    assert!(
        std::fs::read_dir(cwd).unwrap().flatten().all(|e| !e
            .file_name()
            .to_string_lossy()
            .starts_with(".sluice-bundle")),
        "no partial bundle is left"
    );
}

/// One entry of a bundle's tar archive, as the tests rewrite it.
#[derive(Clone)]
struct Item {
    path: String,
    data: Vec<u8>,
    mode: u32,
    kind: tar::EntryType,
    link: Option<String>,
}

impl Item {
    fn file(path: &str, data: &[u8]) -> Item {
        Item {
            path: path.into(),
            data: data.to_vec(),
            mode: 0o644,
            kind: tar::EntryType::Regular,
            link: None,
        }
    }
}

fn read_items(bundle: &Path) -> Vec<Item> {
    let file = std::fs::File::open(bundle).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            Item {
                path: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                data,
                mode: e.header().mode().unwrap(),
                kind: e.header().entry_type(),
                link: None,
            }
        })
        .collect()
}

/// Writes `items` as a bundle, names and link names byte for byte (so also ones that
/// `tar::Builder` would refuse to write).
fn write_items(items: &[Item], out: &Path) {
    let file = std::fs::File::create(out).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for item in items {
        let mut h = tar::Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..item.path.len()].copy_from_slice(item.path.as_bytes());
        if let Some(link) = &item.link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(item.kind);
        h.set_mode(item.mode);
        h.set_size(item.data.len() as u64);
        h.set_cksum();
        tar.append(&h, &item.data[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

fn manifest_of(items: &[Item]) -> Manifest {
    let m = items.iter().find(|i| i.path == "MANIFEST.json").unwrap();
    serde_json::from_slice(&m.data).unwrap()
}

/// Replaces the manifest with `m`.
fn set_manifest(items: &mut [Item], m: &Manifest) {
    let i = items
        .iter_mut()
        .find(|i| i.path == "MANIFEST.json")
        .unwrap();
    i.data = serde_json::to_vec_pretty(m).unwrap();
}

/// Replaces the contents of `path` and lists the new size and checksum in the manifest, as a
/// forger would.
fn replace_listed(items: &mut [Item], path: &str, data: &[u8]) {
    items.iter_mut().find(|i| i.path == path).unwrap().data = data.to_vec();
    let mut m = manifest_of(items);
    let f = m.files.iter_mut().find(|f| f.path == path).unwrap();
    f.size = data.len() as u64;
    f.sha256 = hex::encode(Sha256::digest(data));
    set_manifest(items, &m);
}

/// A temporary directory with `touch.bundle` (`touch` with a resource and a configuration)
/// and its entries. Run as `sluice run X.bundle -- ran`, its job creates the file `ran`.
fn touch_bundle() -> (tempfile::TempDir, Vec<Item>) {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    std::fs::write(cwd.join("data.txt"), "some data\n").unwrap();
    std::fs::write(cwd.join("conf.yaml"), "parallelism.default: 2\n").unwrap();
    let touch = system_program("touch");
    ok(
        sluice(
            cwd,
            &[
                "bundle",
                touch.to_str().unwrap(),
                "--resource",
                "data.txt",
                "--config",
                "conf.yaml",
                "-o",
                "touch.bundle",
            ],
            &[],
        ),
        "bundle touch",
    );
    let items = read_items(&cwd.join("touch.bundle"));
    (tmp, items)
}

/// Runs the bundle `name` detached and checks it is refused with `message` (and the bundle's
/// path), and that nothing ran, no log was started and nothing unpacked is left.
fn refused(cwd: &Path, name: &str, message: &str) {
    let run = sluice(
        cwd,
        &["run", "-d", "--log-dir", "log", name, "--", "ran"],
        &[],
    );
    assert_ne!(run.code, 0, "{name}: {run:?}");
    let path = cwd.join(name);
    assert!(
        run.stderr.contains(&format!("bundle {}: ", path.display()))
            || run.stderr.contains(&format!("bundle {name}: ")),
        "{name}: the bundle is named in {run:?}"
    );
    assert!(
        run.stderr.contains(message),
        "{name}: '{message}' in {run:?}"
    );
    assert!(!cwd.join("ran").exists(), "{name}: the job ran");
    assert!(!cwd.join("log").exists(), "{name}: a job was started");
    assert!(!run.stdout.contains("submitted"), "{name}: {run:?}");
    assert!(leftovers(cwd).is_empty(), "{name}: {:?}", leftovers(cwd));
}

#[test]
fn the_intact_bundle_runs_its_entry() {
    let (tmp, items) = touch_bundle();
    let cwd = tmp.path();
    // Re-tarred unchanged, as the refusal tests do, it still runs; so it does unpacked and
    // packed again with tar, directory entries and `./` prefixes and all.
    write_items(&items, &cwd.join("same.bundle"));
    let unpacked = cwd.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    let tar = |args: &[&str]| {
        let status = Command::new("tar").args(args).status().expect("tar runs");
        assert!(status.success(), "tar {args:?}");
    };
    let (whole, again) = (cwd.join("touch.bundle"), cwd.join("retarred.bundle"));
    tar(&[
        "-xzf",
        whole.to_str().unwrap(),
        "-C",
        unpacked.to_str().unwrap(),
    ]);
    tar(&[
        "-czf",
        again.to_str().unwrap(),
        "-C",
        unpacked.to_str().unwrap(),
        ".",
    ]);
    for name in ["touch.bundle", "same.bundle", "retarred.bundle"] {
        let run = sluice(cwd, &["run", name, "--", "ran"], &[]);
        assert!(
            run.stderr.contains("without submitting a job"),
            "{name}: {run:?}"
        );
        assert!(cwd.join("ran").exists(), "{name}: the entry ran");
        std::fs::remove_file(cwd.join("ran")).unwrap();
    }
    assert!(leftovers(cwd).is_empty(), "{:?}", leftovers(cwd));
}

#[test]
fn a_truncated_or_non_gzip_bundle_is_refused() {
    let (tmp, _) = touch_bundle();
    let cwd = tmp.path();
    let whole = std::fs::read(cwd.join("touch.bundle")).unwrap();
    for (name, cut) in [
        ("cut.bundle", whole.len() / 2),
        ("end-cut.bundle", whole.len() - 4),
    ] {
        std::fs::write(cwd.join(name), &whole[..cut]).unwrap();
        refused(cwd, name, "truncated");
    }
    std::fs::write(cwd.join("text.bundle"), "not a bundle\n").unwrap();
    refused(cwd, "text.bundle", "not a gzip file");
    let mut trailing = whole.clone();
    trailing.extend(b"more");
    std::fs::write(cwd.join("trailing.bundle"), trailing).unwrap();
    refused(
        cwd,
        "trailing.bundle",
        "data after the end of its gzip stream",
    );
}

#[test]
fn a_file_changed_inside_the_bundle_is_refused() {
    let (tmp, items) = touch_bundle();
    let cwd = tmp.path();
    let mut flipped = items.clone();
    let bin = flipped.iter_mut().find(|i| i.path == "bin/touch").unwrap();
    let at = bin.data.len() / 2;
    bin.data[at] ^= 0x01;
    write_items(&flipped, &cwd.join("flipped.bundle"));
    refused(cwd, "flipped.bundle", "bin/touch: checksum mismatch");

    let mut longer = items.clone();
    let data = longer
        .iter_mut()
        .find(|i| i.path == "resources/data.txt")
        .unwrap();
    data.data.push(b'!');
    write_items(&longer, &cwd.join("longer.bundle"));
    refused(cwd, "longer.bundle", "resources/data.txt: size mismatch");

    let mut mode = items.clone();
    mode.iter_mut()
        .find(|i| i.path == "bin/touch")
        .unwrap()
        .mode = 0o644;
    write_items(&mode, &cwd.join("mode.bundle"));
    refused(cwd, "mode.bundle", "bin/touch: mode mismatch");
}

#[test]
fn missing_and_extra_files_are_refused() {
    let (tmp, items) = touch_bundle();
    let cwd = tmp.path();
    let without =
        |path: &str| -> Vec<Item> { items.iter().filter(|i| i.path != path).cloned().collect() };
    write_items(&without("bin/touch"), &cwd.join("no-entry.bundle"));
    refused(
        cwd,
        "no-entry.bundle",
        "the entry binary bin/touch is missing",
    );
    write_items(&without("conf/sluice.yaml"), &cwd.join("no-conf.bundle"));
    refused(
        cwd,
        "no-conf.bundle",
        "conf/sluice.yaml is listed in the manifest but missing",
    );

    let mut extra = items.clone();
    extra.push(Item::file("resources/extra.txt", b"smuggled"));
    write_items(&extra, &cwd.join("extra.bundle"));
    refused(
        cwd,
        "extra.bundle",
        "resources/extra.txt is in the bundle but not in its manifest",
    );

    let mut twice = items.clone();
    twice.push(Item::file("resources/data.txt", b"other data"));
    write_items(&twice, &cwd.join("twice.bundle"));
    refused(
        cwd,
        "twice.bundle",
        "resources/data.txt: in the archive twice",
    );

    let mut dir = items.clone();
    dir.push(Item {
        kind: tar::EntryType::Directory,
        mode: 0o755,
        ..Item::file("empty/", b"")
    });
    write_items(&dir, &cwd.join("dir.bundle"));
    refused(cwd, "dir.bundle", "the directory empty is in the bundle");

    // The manifest names an entry it does not list.
    let mut unlisted = items.clone();
    let mut m = manifest_of(&unlisted);
    m.entry = "bin/other".into();
    set_manifest(&mut unlisted, &m);
    write_items(&unlisted, &cwd.join("unlisted.bundle"));
    refused(
        cwd,
        "unlisted.bundle",
        "the entry binary bin/other is not among the manifest's files",
    );
}

#[test]
fn a_missing_unreadable_or_newer_manifest_is_refused() {
    let (tmp, items) = touch_bundle();
    let cwd = tmp.path();
    let no_manifest: Vec<Item> = items
        .iter()
        .filter(|i| i.path != "MANIFEST.json")
        .cloned()
        .collect();
    write_items(&no_manifest, &cwd.join("no-manifest.bundle"));
    refused(cwd, "no-manifest.bundle", "MANIFEST.json is missing");

    let mut garbled = items.clone();
    let half = garbled[0].data.len() / 2;
    garbled[0].data.truncate(half);
    write_items(&garbled, &cwd.join("garbled.bundle"));
    refused(cwd, "garbled.bundle", "MANIFEST.json is not valid JSON");

    let mut newer = items.clone();
    let mut json: serde_json::Value = serde_json::from_slice(&newer[0].data).unwrap();
    json["format_version"] = 2.into();
    json["something_new"] = "x".into();
    newer[0].data = serde_json::to_vec(&json).unwrap();
    write_items(&newer, &cwd.join("newer.bundle"));
    refused(
        cwd,
        "newer.bundle",
        "MANIFEST.json is of format version 2; this sluice reads version 1 only",
    );

    let mut incomplete = items.clone();
    let mut json: serde_json::Value = serde_json::from_slice(&incomplete[0].data).unwrap();
    json.as_object_mut().unwrap().remove("entry");
    incomplete[0].data = serde_json::to_vec(&json).unwrap();
    write_items(&incomplete, &cwd.join("incomplete.bundle"));
    refused(
        cwd,
        "incomplete.bundle",
        "MANIFEST.json is not a valid manifest: missing field `entry`",
    );
}

/// A 64-bit little-endian ELF header of an executable for `machine` (`e_machine`).
fn fake_elf(machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN, as PIE executables are
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h.extend(b"the rest of a binary");
    h
}

#[test]
fn an_entry_that_is_no_executable_of_this_platform_is_refused() {
    let (tmp, items) = touch_bundle();
    let cwd = tmp.path();
    let host = bundle::host_triple();
    // aarch64 (EM_AARCH64 = 183), unless this machine is one; then x86_64 (EM_X86_64 = 62).
    let (machine, foreign) = if host.starts_with("aarch64") {
        (62, "x86_64-unknown-linux-gnu")
    } else {
        (183, "aarch64-unknown-linux-gnu")
    };
    let mut other = items.clone();
    replace_listed(&mut other, "bin/touch", &fake_elf(machine));
    write_items(&other, &cwd.join("foreign.bundle"));
    refused(
        cwd,
        "foreign.bundle",
        &format!("the entry binary bin/touch was built for {foreign}, this machine runs {host}"),
    );

    // A script would run (and create `ran`) if it were started.
    let mut script = items.clone();
    replace_listed(&mut script, "bin/touch", b"#!/bin/sh\ntouch ran\n");
    write_items(&script, &cwd.join("script.bundle"));
    refused(
        cwd,
        "script.bundle",
        "the entry binary bin/touch: not an ELF binary",
    );

    let mut object = fake_elf(62);
    object[16] = 1; // ET_REL: an object file
    let mut rel = items.clone();
    replace_listed(&mut rel, "bin/touch", &object);
    write_items(&rel, &cwd.join("object.bundle"));
    refused(
        cwd,
        "object.bundle",
        "the entry binary bin/touch is not an executable",
    );
}

#[test]
fn paths_leaving_the_bundle_and_links_are_refused() {
    let (tmp, items) = touch_bundle();
    let cwd = tmp.path();
    let outside = cwd.join("tmp").join("escaped.txt");
    let cases = [
        (
            "dotdot.bundle",
            Item::file("../escaped.txt", b"x"),
            "../escaped.txt: the path escapes the bundle directory",
        ),
        (
            "deep.bundle",
            Item::file("resources/../../escaped.txt", b"x"),
            "the path escapes the bundle directory",
        ),
        (
            "absolute.bundle",
            Item::file(outside.to_str().unwrap(), b"x"),
            "the path is an absolute path",
        ),
        (
            "symlink.bundle",
            Item {
                kind: tar::EntryType::Symlink,
                link: Some("/etc/passwd".into()),
                ..Item::file("resources/link", b"")
            },
            "resources/link: a link (to /etc/passwd)",
        ),
        (
            "hardlink.bundle",
            Item {
                kind: tar::EntryType::Link,
                link: Some("../../escaped.txt".into()),
                ..Item::file("resources/hard", b"")
            },
            "resources/hard: a link (to ../../escaped.txt)",
        ),
    ];
    for (name, item, message) in cases {
        let mut evil = items.clone();
        evil.insert(1, item);
        write_items(&evil, &cwd.join(name));
        refused(cwd, name, message);
        assert!(!outside.exists(), "{name} wrote outside the bundle");
        assert!(!cwd.join("escaped.txt").exists(), "{name}");
    }

    // The manifest may not name such paths either.
    let mut listed = items.clone();
    let mut m = manifest_of(&listed);
    m.files[1].path = "../data.txt".into();
    set_manifest(&mut listed, &m);
    write_items(&listed, &cwd.join("listed.bundle"));
    refused(
        cwd,
        "listed.bundle",
        "MANIFEST.json lists \"../data.txt\", a path that escapes the bundle directory",
    );
}
