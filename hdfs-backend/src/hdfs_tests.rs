//! Unit tests of [`super`]: URL resolution, client configuration and write failure handling.

use super::*;
use crate::storage::resolve;

#[test]
fn resolves_hdfs_urls_per_authority() {
    let (s, p) = resolve("hdfs://nn.example:8020/a/./b/../c/").unwrap();
    assert_eq!(p, "/a/c");
    assert_eq!(s.url(&p), "hdfs://nn.example:8020/a/c");
    let (s, p) = resolve("HDFS://nn.example:8020").unwrap();
    assert_eq!(s.url(&p), "hdfs://nn.example:8020/");
    let e = resolve("hdfs:/no/authority").unwrap_err();
    assert!(e.to_string().contains("hdfs:/no/authority"), "{e}");
}

fn options(config: &[(&str, &str)]) -> HdfsOptions {
    HdfsOptions {
        io_runtime: None,
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A client of its own (not the process-wide cache), so tests do not share options.
fn storage(authority: &str, config: &[(&str, &str)]) -> HdfsStorage {
    HdfsStorage::build(
        "hdfs",
        authority,
        &HadoopConf::default(),
        &options(config),
        0,
    )
    .unwrap()
}

#[test]
fn client_keys_come_from_options_then_files_then_sluice_defaults() {
    let d = tempfile::tempdir().unwrap();
    let files = crate::hadoop_conf::write_conf_dir(
        d.path(),
        &[],
        &[
            (keys::FAILOVER_MAX_ATTEMPTS, "7"),
            (keys::FAILOVER_SLEEP_BASE_MILLIS, "300"),
        ],
    );
    let given = [(
        keys::FAILOVER_SLEEP_BASE_MILLIS.to_string(),
        "50".to_string(),
    )];
    let c = client_config(&given, &files);
    assert_eq!(c[keys::FAILOVER_SLEEP_BASE_MILLIS], "50", "options win");
    assert!(
        !c.contains_key(keys::FAILOVER_MAX_ATTEMPTS),
        "the file's 7 is left to hdfs-native, which reads the file"
    );
    assert_eq!(
        c[keys::FAILOVER_SLEEP_MAX_MILLIS],
        "1000",
        "Sluice's default"
    );
    assert_eq!(c[keys::RPC_TIMEOUT_MS], "10000");
    assert!(!c.contains_key(keys::SOCKET_TIMEOUT), "Hadoop's default");

    let s = HdfsStorage::build(
        "hdfs",
        "127.0.0.1:1",
        &files,
        &HdfsOptions {
            io_runtime: None,
            config: given.to_vec(),
        },
        0,
    )
    .unwrap();
    assert_eq!(s.setting(keys::FAILOVER_MAX_ATTEMPTS), Some("7"));
    assert_eq!(s.setting(keys::FAILOVER_SLEEP_BASE_MILLIS), Some("50"));
    assert_eq!(s.setting(keys::RPC_TIMEOUT_MS), Some("10000"));
    assert_eq!(s.rpc_timeout, Some(Duration::from_secs(10)));
    assert_eq!(s.setting(keys::SOCKET_TIMEOUT), None);
    assert_eq!(s.stall_bound(), Some(Duration::from_secs(70)));

    let s = storage("127.0.0.1:1", &[(keys::RPC_TIMEOUT_MS, "0")]);
    assert_eq!(
        (s.rpc_timeout, s.stall_bound()),
        (None, None),
        "0 = no limit"
    );
}

#[test]
fn only_datanode_failures_while_writing_data_are_written_again() {
    let io = |kind| HdfsError::IOError(std::io::Error::from(kind));
    assert!(is_datanode_failure(&io(
        std::io::ErrorKind::ConnectionRefused
    )));
    assert!(is_datanode_failure(&io(
        std::io::ErrorKind::ConnectionReset
    )));
    assert!(is_datanode_failure(&HdfsError::DataTransferError(
        "All nodes failed for write".into()
    )));
    let stalled = HdfsError::IOError(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        TimedOut("writing the data made no progress".into()),
    ));
    assert!(
        !is_datanode_failure(&stalled),
        "a retry would wait as long again"
    );
    assert!(!is_datanode_failure(&HdfsError::RPCError(
        "org.apache.hadoop.hdfs.server.namenode.SafeModeException".into(),
        "safe mode".into()
    )));
    assert!(is_not_replicated_yet(&HdfsError::RPCError(
        "org.apache.hadoop.hdfs.server.namenode.NotReplicatedYetException".into(),
        "Not replicated yet: /x".into()
    )));
    let s = storage("127.0.0.1:1", &[]);
    assert_eq!(s.block_write_retries(), 3, "Hadoop's default");
    let s = storage("127.0.0.1:1", &[(keys::BLOCK_WRITE_RETRIES, "0")]);
    assert_eq!(s.block_write_retries(), 0);
}

#[test]
fn job_config_passes_hadoop_client_keys_through() {
    let mut config = Config::default();
    config.set(keys::FAILOVER_MAX_ATTEMPTS, "5").unwrap();
    config.set(keys::RPC_TIMEOUT_MS, "30000").unwrap();
    config.set("parallelism.default", "3").unwrap();
    config.set("state.checkpoints.dir", "/x").unwrap();
    let mut got = HdfsOptions::from_config(&config).config;
    got.sort();
    assert_eq!(
        got,
        [
            (keys::FAILOVER_MAX_ATTEMPTS.to_string(), "5".to_string()),
            (keys::RPC_TIMEOUT_MS.to_string(), "30000".to_string()),
        ]
    );
}

#[test]
fn a_bad_client_key_value_is_an_error_naming_the_key() {
    for key in [keys::RPC_TIMEOUT_MS, keys::FAILOVER_MAX_ATTEMPTS] {
        let e = HdfsStorage::build(
            "hdfs",
            "127.0.0.1:1",
            &HadoopConf::default(),
            &options(&[(key, "10s")]),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(key) && e.contains("10s"), "{e}");
    }
}

/// With Sluice's defaults a NameNode that refuses connections (a dead process) fails a
/// call after a handful of attempts, not hdfs-native's 16 rounds with up to 15 s backoff.
#[test]
fn an_unreachable_namenode_is_a_retryable_error_naming_url_and_address() {
    let s = storage("127.0.0.1:1", &[]);
    let t = std::time::Instant::now();
    let e = s.read("/x").unwrap_err();
    eprintln!(
        "read against a dead NameNode failed after {:?}",
        t.elapsed()
    );
    assert!(e.is_retryable(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("hdfs://127.0.0.1:1/x") && msg.contains("NameNode 127.0.0.1:1"),
        "{msg}"
    );
    // Also from inside a tokio runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt.block_on(async { s.exists("/x") }).unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

/// Counts the connections a NameNode that hangs up at once gets for one call.
#[test]
fn reconnects_per_call_follow_failover_max_attempts() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    for attempts in [1usize, 3] {
        let before = accepted.load(Ordering::SeqCst);
        let s = storage(
            &addr,
            &[
                (keys::FAILOVER_MAX_ATTEMPTS, &attempts.to_string()),
                (keys::FAILOVER_SLEEP_BASE_MILLIS, "10"),
            ],
        );
        let e = s.exists("/x").unwrap_err();
        assert!(e.is_retryable(), "{e}");
        let n = accepted.load(Ordering::SeqCst) - before;
        eprintln!("max.attempts={attempts}: {n} connections; {e}");
        // One connection per attempt, two when a read is retried on a fresh connection.
        assert!(
            (attempts + 1..=2 * (attempts + 1)).contains(&n),
            "{n} connections for max.attempts={attempts}"
        );
    }
}

/// An HA nameservice whose first NameNode hangs: a call times out there without ever
/// reaching the second (hdfs-native moves on only after an error), so the next client
/// tries the second first.
#[test]
fn after_a_timeout_an_ha_client_tries_the_other_namenode_first() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hangs = silent.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });
    let closing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = closing.local_addr().unwrap().to_string();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    std::thread::spawn(move || {
        for conn in closing.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let d = tempfile::tempdir().unwrap();
    let ns = "rotation-test";
    let conf = crate::hadoop_conf::write_conf_dir(
        d.path(),
        &[],
        &[
            ("dfs.nameservices", ns),
            ("dfs.ha.namenodes.rotation-test", "nn1,nn2"),
            ("dfs.namenode.rpc-address.rotation-test.nn1", &hangs),
            ("dfs.namenode.rpc-address.rotation-test.nn2", &other),
            (keys::RPC_TIMEOUT_MS, "300"),
        ],
    );
    let first = HdfsStorage::for_authority_in("hdfs", ns, &conf).unwrap();
    assert_eq!(first.ha_namenodes, 2);
    let e = first.exists("/x").unwrap_err();
    assert!(e.to_string().contains(keys::RPC_TIMEOUT_MS), "{e}");
    assert_eq!(reached.load(Ordering::SeqCst), 0, "nn2 never tried");
    let second = HdfsStorage::for_authority_in("hdfs", ns, &conf).unwrap();
    assert!(!Arc::ptr_eq(&first.client, &second.client), "a new client");
    let _ = second.exists("/x").unwrap_err();
    assert!(reached.load(Ordering::SeqCst) > 0, "nn2 tried first");
}

/// A NameNode that accepts connections but never answers (a stopped process) would block
/// an hdfs-native call forever; `ipc.client.rpc-timeout.ms` ends it.
#[test]
fn a_namenode_that_never_answers_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn); // open and silent
        }
    });
    let s = storage(&addr, &[(keys::RPC_TIMEOUT_MS, "300")]);
    let (tx, rx) = std::sync::mpsc::channel();
    let s2 = s.clone();
    std::thread::spawn(move || {
        let _ = tx.send((s2.mkdirs("/x"), s2.write_atomic("/y", b"data")));
    });
    // Far longer than the timeout; without it the calls never return.
    let (mkdirs, write) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the calls returned");
    for e in [mkdirs.unwrap_err(), write.unwrap_err()] {
        assert!(e.is_retryable(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(keys::RPC_TIMEOUT_MS) && msg.contains(&addr),
            "{msg}"
        );
    }
}
