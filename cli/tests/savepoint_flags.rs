//! `sluice savepoint -t/--type` and `-d/--dispose`, `sluice stop --type`, as Flink's CLI takes
//! them; disposal through the binary: a clear error and exit status 1 for what is not a
//! savepoint, the directory gone for one that is.

use std::process::Command as Process;

use clap::Parser;
use sluice_cli::{Cli, Command};
use sluice_hdfs_backend::{CheckpointMetadata, FORMAT_VERSION, SnapshotDir, SnapshotKind};

const JOB: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn type_and_dispose_flags_parse_like_flinks() {
    let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
    match parse(&["sluice", "savepoint", "-t", "native", JOB, "/sp"]).unwrap() {
        Command::Savepoint(a) => {
            assert_eq!(format!("{:?}", a.format), "Native");
            assert_eq!(a.job_id.as_deref(), Some(JOB));
            assert_eq!(a.target_dir.as_deref(), Some("/sp"));
        }
        other => panic!("{other:?}"),
    }
    match parse(&["sluice", "savepoint", JOB]).unwrap() {
        Command::Savepoint(a) => assert_eq!(format!("{:?}", a.format), "Canonical"),
        other => panic!("{other:?}"),
    }
    match parse(&["sluice", "stop", "--type", "native", "--drain", JOB]).unwrap() {
        Command::Stop(a) => {
            assert_eq!(format!("{:?}", a.format), "Native");
            assert!(a.drain);
        }
        other => panic!("{other:?}"),
    }
    match parse(&["sluice", "savepoint", "--dispose", "/sp/savepoint-1"]).unwrap() {
        Command::Savepoint(a) => {
            assert_eq!(a.dispose.as_deref(), Some("/sp/savepoint-1"));
            assert_eq!(a.job_id, None);
        }
        other => panic!("{other:?}"),
    }
    assert!(parse(&["sluice", "savepoint", "-t", "portable", JOB]).is_err());
    assert!(parse(&["sluice", "savepoint"]).is_err(), "a job id or -d");
    assert!(parse(&["sluice", "savepoint", "-d", "/sp/x", JOB]).is_err());
}

#[test]
fn dispose_through_the_binary() {
    let t = tempfile::tempdir().unwrap();
    let sp = SnapshotDir::savepoint(t.path().to_str().unwrap(), JOB).unwrap();
    sp.write_state("op-a-0", &[1u8; 1000], 0).unwrap();
    sp.write_metadata(&CheckpointMetadata {
        format_version: FORMAT_VERSION,
        job_id: JOB.into(),
        job_name: "job".into(),
        checkpoint_id: 1,
        kind: SnapshotKind::Savepoint,
        timestamp_ms: 0,
        max_parallelism: 128,
        operators: Vec::new(),
    })
    .unwrap();
    let sluice = env!("CARGO_BIN_EXE_sluice");

    let not_one = t.path().to_str().unwrap();
    let out = Process::new(sluice)
        .args(["savepoint", "-d", not_one])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(not_one) && stderr.contains("not a savepoint"),
        "{stderr}"
    );
    assert!(std::path::Path::new(sp.path()).join("_metadata").exists());

    let out = Process::new(sluice)
        .args(["savepoint", "--dispose", sp.path()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("disposed"), "{stdout}");
    assert!(!std::path::Path::new(sp.path()).exists());
}
