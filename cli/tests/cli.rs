//! The `sluice` CLI against real job processes: `sluice-testjob` (this crate's test job: a
//! rate-limited generator with a keyed running count per `i % 5`, uid `counts`, printed as
//! `(key,count)`), found next to the CLI via Cargo's `CARGO_BIN_EXE_*` variables, which Cargo
//! builds before the tests. Each test works in a temporary directory of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
const TESTJOB: &str = env!("CARGO_BIN_EXE_sluice-testjob");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `sluice args` in `cwd` with `env`, outside of any inherited Sluice variables.
fn sluice(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(SLUICE);
    cmd.args(args).current_dir(cwd);
    for var in [
        "SLUICE_CONF_DIR",
        "SLUICE_DYNAMIC_PROPERTIES",
        "SLUICE_REST_PORT",
        "SLUICE_REST_LINGER_MS",
        "SLUICE_LOG_DIR",
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
    assert_eq!(
        run.code, 0,
        "{what}: stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

/// The value after `prefix` on the first line of `text` that starts with it.
fn after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with '{prefix}' in:\n{text}"))
        .trim()
}

/// A detached job: (job id, REST host:port, log file).
fn run_detached(cwd: &Path, extra: &[&str], job_args: &[&str]) -> (String, String, PathBuf) {
    let mut args = vec!["run", "-d", "--rest-port", "0", "--log-dir", "log"];
    args.extend(extra);
    args.push(TESTJOB);
    args.push("--");
    args.extend(job_args);
    let run = ok(sluice(cwd, &args, &[]), "sluice run -d");
    let id = after(&run.stdout, "Job has been submitted with JobID ").to_string();
    assert_eq!(id.len(), 32, "{id}");
    let rest = after(&run.stderr, "REST API at http://").to_string();
    let log = PathBuf::from(after(&run.stderr, "Job output: "));
    (id, rest, log)
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

/// The last count printed per key in a job's output.
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

/// The first count printed per key.
fn first_counts(output: &str) -> BTreeMap<u64, u64> {
    let mut first = BTreeMap::new();
    for line in output.lines().rev() {
        first.extend(last_counts(line));
    }
    first
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits until the job process behind `rest` exited (its REST API stops answering).
fn wait_for_exit(rest: &str) {
    eventually(30, "the job process to exit", || {
        std::net::TcpStream::connect(rest).is_err()
    });
}

#[test]
fn run_list_checkpoints_savepoint_inspect_stop_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let ckpt = cwd.join("ckpt");
    let interval = "-Dexecution.checkpointing.interval=200ms".to_string();
    let dir = format!("-Dstate.checkpoints.dir={}", ckpt.display());
    let (id, rest, log) = run_detached(cwd, &[&interval, &dir], &["--rate", "200"]);

    let list = ok(sluice(cwd, &["list", "-m", &rest], &[]), "list");
    assert!(
        list.stdout
            .contains(&format!(" : {id} : sluice-testjob (RUNNING)")),
        "{}",
        list.stdout
    );

    let mut table = String::new();
    eventually(20, "a completed checkpoint", || {
        table = ok(
            sluice(cwd, &["checkpoints", "-m", &rest, &id], &[]),
            "checkpoints",
        )
        .stdout;
        table.lines().any(|l| {
            l.split_whitespace()
                .take(3)
                .skip(1)
                .eq(["CHECKPOINT", "COMPLETED"])
        })
    });
    assert!(
        table.contains(&format!("file://{}/{id}/chk-", ckpt.display())),
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap().starts_with("ID  TYPE"),
        "{table}"
    );

    // A checkpoint on demand: Flink's lines, and the id it names is in the history.
    let cp = ok(
        sluice(cwd, &["checkpoint", "-m", &rest, &id], &[]),
        "checkpoint",
    )
    .stdout;
    assert!(
        cp.starts_with(&format!("Triggering checkpoint for job {id}.\n")),
        "{cp}"
    );
    let cp_id: u64 = cp
        .lines()
        .find_map(|l| l.strip_prefix("Checkpoint("))
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `Checkpoint(<id>)` line in {cp}"));
    assert!(
        cp.contains(&format!("Checkpoint({cp_id}) for job {id} completed.")),
        "{cp}"
    );
    let history = ok(
        sluice(cwd, &["checkpoints", "-m", &rest, &id], &[]),
        "checkpoints",
    )
    .stdout;
    assert!(
        history.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(cp_id.to_string().as_str()) && l.contains("COMPLETED")
        }),
        "checkpoint {cp_id} in {history}"
    );

    let sp = ok(
        sluice(
            cwd,
            &[
                "savepoint",
                "-m",
                &rest,
                &id,
                cwd.join("sp").to_str().unwrap(),
            ],
            &[],
        ),
        "savepoint",
    );
    let location = after(&sp.stdout, "Savepoint completed. Path: ").to_string();
    assert!(
        location.starts_with(&format!(
            "file://{}/sp/savepoint-{}",
            cwd.display(),
            &id[..6]
        )),
        "{location}"
    );
    assert!(
        Path::new(location.trim_start_matches("file://"))
            .join("_metadata")
            .is_file()
    );

    let inspect = ok(sluice(cwd, &["inspect", &location], &[]), "inspect");
    for uid in ["numbers", "keys", "counts", "format"] {
        assert!(
            inspect.stdout.contains(&format!("operator {uid} \"")),
            "{uid} in:\n{}",
            inspect.stdout
        );
    }
    assert!(
        inspect.stdout.contains("keyed state: 5 key groups"),
        "{}",
        inspect.stdout
    );
    assert!(
        inspect.stdout.contains("state \"value\": 5 entries"),
        "{}",
        inspect.stdout
    );
    let dump = ok(
        sluice(cwd, &["inspect", &location, "--dump", "counts"], &[]),
        "inspect --dump",
    );
    let entries: Vec<serde_json::Value> = dump
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 5, "{}", dump.stdout);
    let mut keys: Vec<u64> = entries
        .iter()
        .map(|e| {
            assert_eq!(e["state"], "value");
            assert!(e["key_group"].as_u64().unwrap() < 128);
            let key = e["key"].as_str().unwrap();
            assert_eq!(key.len(), 16, "a u64 key is 8 bincode bytes: {e}");
            u64::from_str_radix(&key[..2], 16).unwrap()
        })
        .collect();
    keys.sort();
    assert_eq!(keys, [0, 1, 2, 3, 4]);

    let unknown = "00000000000000000000000000000000";
    let cancel = sluice(cwd, &["cancel", "-m", &rest, unknown], &[]);
    assert_eq!(cancel.code, 1, "{}", cancel.stderr);
    assert!(
        cancel.stderr.contains(&format!("Job {unknown} not found")),
        "{}",
        cancel.stderr
    );

    let stop = ok(
        sluice(
            cwd,
            &[
                "stop",
                "-m",
                &rest,
                "--savepointPath",
                cwd.join("sp2").to_str().unwrap(),
                &id,
            ],
            &[],
        ),
        "stop",
    );
    let stopped_at = after(&stop.stdout, "Savepoint completed. Path: ").to_string();
    assert!(
        Path::new(stopped_at.trim_start_matches("file://"))
            .join("_metadata")
            .is_file()
    );
    wait_for_exit(&rest);
    let before = read(&log);
    assert!(before.contains(&format!("job {id} Finished")), "{before}");
    let last = last_counts(&before);
    assert_eq!(last.len(), 5, "{before}");

    // Restored, the counts go on exactly where the savepoint left them.
    let (id2, rest2, log2) = run_detached(cwd, &["-s", &stopped_at], &["--rate", "200"]);
    assert_ne!(id2, id);
    eventually(20, "every key counted after the restore", || {
        first_counts(&read(&log2)).len() == 5
    });
    let first = first_counts(&read(&log2));
    let expected: BTreeMap<u64, u64> = last.iter().map(|(k, c)| (*k, c + 1)).collect();
    assert_eq!(first, expected, "first counts after restore vs last before");
    let cancel = ok(sluice(cwd, &["cancel", "-m", &rest2, &id2], &[]), "cancel");
    assert!(
        cancel.stdout.contains(&format!("Cancelled job {id2}.")),
        "{}",
        cancel.stdout
    );
    wait_for_exit(&rest2);
    assert!(
        read(&log2).contains(&format!("job {id2} Canceled")),
        "{}",
        read(&log2)
    );
}

#[test]
fn run_from_a_missing_savepoint_fails_before_starting_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-savepoint");
    let run = sluice(
        tmp.path(),
        &[
            "run",
            "-d",
            "--log-dir",
            "log",
            "-s",
            missing.to_str().unwrap(),
            TESTJOB,
        ],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(missing.to_str().unwrap()),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("submitted"), "{}", run.stdout);
    assert!(!tmp.path().join("log").exists(), "nothing may start");

    // A directory without _metadata (an incomplete snapshot) names the missing file.
    let incomplete = tmp.path().join("incomplete");
    std::fs::create_dir(&incomplete).unwrap();
    let run = sluice(
        tmp.path(),
        &["run", "-s", incomplete.to_str().unwrap(), TESTJOB],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr
            .contains(&format!("{}/_metadata", incomplete.display())),
        "{}",
        run.stderr
    );
}

#[test]
fn attached_run_hands_over_configuration_and_exits_with_the_jobs_code() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("conf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("sluice.yaml"), "parallelism:\n  default: 2\n").unwrap();

    // ./conf is picked up; -p beats it.
    let args = [
        "run",
        "--rest-port",
        "0",
        "-p",
        "3",
        TESTJOB,
        "--",
        "--count",
        "20",
        "--rate",
        "2000",
    ];
    let run = ok(sluice(tmp.path(), &args, &[]), "attached run");
    assert!(
        run.stderr.contains("parallelism.default=3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("Job has been submitted with JobID "),
        "{}",
        run.stdout
    );
    assert_eq!(
        last_counts(&run.stdout),
        (0..5).map(|k| (k, 4)).collect(),
        "{}",
        run.stdout
    );
    let run = ok(
        sluice(
            tmp.path(),
            &["run", "--rest-port", "0", TESTJOB, "--", "--count", "1"],
            &[],
        ),
        "conf only",
    );
    assert!(
        run.stderr.contains("parallelism.default=2"),
        "{}",
        run.stderr
    );

    // A job that fails: its exit code comes back.
    let args = [
        "run",
        "--rest-port",
        "0",
        "-D",
        "restart-strategy.type=none",
        TESTJOB,
        "--",
        "--fail-at",
        "3",
        "--rate",
        "1000",
    ];
    let run = sluice(tmp.path(), &args, &[]);
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr.contains("failing at record 3 as asked"),
        "{}",
        run.stderr
    );

    // A bad configuration value stops the job before it runs, naming the key.
    let run = sluice(
        tmp.path(),
        &[
            "run",
            "--rest-port",
            "0",
            "-D",
            "parallelism.default=zero",
            TESTJOB,
        ],
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("parallelism.default: 'zero'"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_default_address_comes_from_the_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = tmp.path().join("myconf");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("sluice.yaml"), format!("rest.port: {port}\n")).unwrap();
    let env = [("SLUICE_CONF_DIR", conf.to_str().unwrap())];
    let run = ok(
        sluice(
            tmp.path(),
            &["run", "-d", "--log-dir", "log", TESTJOB],
            &env,
        ),
        "run with rest.port in conf",
    );
    let id = after(&run.stdout, "Job has been submitted with JobID ").to_string();
    assert_eq!(
        after(&run.stderr, "REST API at "),
        format!("http://127.0.0.1:{port}")
    );
    let list = ok(sluice(tmp.path(), &["list"], &env), "list without -m");
    assert!(
        list.stdout
            .contains(&format!(" : {id} : sluice-testjob (RUNNING)")),
        "{}",
        list.stdout
    );
    ok(
        sluice(tmp.path(), &["cancel", &id], &env),
        "cancel without -m",
    );
    wait_for_exit(&format!("127.0.0.1:{port}"));

    let bad = sluice(tmp.path(), &["cancel", "not-a-job"], &env);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("'not-a-job' is not a job id"),
        "{}",
        bad.stderr
    );
}

#[test]
fn checkpoints_gc_lists_by_default_and_deletes_only_with_delete() {
    use sluice_hdfs_backend::{CheckpointMetadata, FORMAT_VERSION, SnapshotDir, SnapshotKind};
    let t = tempfile::tempdir().unwrap();
    let base = t.path().to_str().unwrap().to_string();
    let job = "0123456789abcdef0123456789abcdef";
    // A complete checkpoint, a partial one and an orphaned shared file.
    let done = SnapshotDir::checkpoint(&base, job, 1).unwrap();
    done.write_metadata(&CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: job.into(),
        job_name: "gc".into(),
        checkpoint_id: 1,
        kind: SnapshotKind::Checkpoint,
        timestamp_ms: 0,
        max_parallelism: 128,
        operators: vec![],
    })
    .unwrap();
    let partial = SnapshotDir::checkpoint(&base, job, 2).unwrap();
    partial.write_state("op-x-0", &[7; 100], 0).unwrap();
    let shared = t.path().join(job).join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("abc-2-000009.sst"), b"orphan").unwrap();

    let dry = sluice(t.path(), &["checkpoints", "gc", &base], &[]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("would delete") && dry.stdout.contains("chk-2"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("abc-2-000009.sst"), "{}", dry.stdout);
    assert!(t.path().join(job).join("chk-2").exists() && shared.join("abc-2-000009.sst").exists());

    let real = sluice(t.path(), &["checkpoints", "gc", &base, "--delete"], &[]);
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert!(
        !t.path().join(job).join("chk-2").exists() && !shared.join("abc-2-000009.sst").exists()
    );
    assert!(t.path().join(job).join("chk-1").join("_metadata").exists());

    let missing = sluice(
        t.path(),
        &["checkpoints", "gc", "/nonexistent/checkpoints"],
        &[],
    );
    assert_ne!(missing.code, 0);
    assert!(
        missing.stderr.contains("/nonexistent/checkpoints"),
        "{}",
        missing.stderr
    );
}
