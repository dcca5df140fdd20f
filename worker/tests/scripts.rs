//! The cluster admin scripts: they parse, report status without a cluster, start and stop
//! workers against a fake master, and (once `sluice-am` is built) a whole local cluster.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_worker::control::{Conn, ToMaster, ToWorker};

const SCRIPTS: [&str; 6] = [
    "start-cluster.sh",
    "stop-cluster.sh",
    "master.sh",
    "worker.sh",
    "historyserver.sh",
    "lib.sh",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn script(name: &str) -> PathBuf {
    repo().join("scripts").join(name)
}

/// Where the test build put `sluice-worker` (and, once built, `sluice-am`).
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A configuration directory, a log directory and the environment that points the scripts
/// at them.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new(conf: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/sluice.yaml"), conf).unwrap();
        Env { dir }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn run(&self, name: &str, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(script(name))
            .args(args)
            .env("SLUICE_CONF_DIR", self.dir.path().join("conf"))
            .env("SLUICE_LOG_DIR", self.log_dir())
            .env("SLUICE_BIN_DIR", bin_dir())
            .env("SLUICE_START_TIMEOUT", "30")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a script that must succeed; its stdout.
    fn ok(&self, name: &str, args: &[&str]) -> String {
        let out = self.run(name, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{name} {args:?}: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

impl Drop for Env {
    /// Stops whatever a failed test left running.
    fn drop(&mut self) {
        let _ = self.run("worker.sh", &["stop"]);
        let _ = self.run("master.sh", &["stop"]);
    }
}

#[test]
fn the_scripts_parse_and_pass_shellcheck() {
    for name in SCRIPTS {
        let out = Command::new("bash")
            .arg("-n")
            .arg(script(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash -n {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `-x` follows `source lib.sh` (found next to each script).
    let out = Command::new("shellcheck")
        .args(["-x", "--source-path=SCRIPTDIR"])
        .args(SCRIPTS.map(script))
        .output()
        .expect("shellcheck runs (.ci/run installs it)");
    assert!(
        out.status.success(),
        "shellcheck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn status_and_stop_work_without_a_cluster() {
    let env = Env::new("");
    assert_eq!(
        env.ok("worker.sh", &["status"]),
        "no sluice-worker is running\n"
    );
    assert_eq!(
        env.ok("master.sh", &["status"]),
        "sluice-am is not running\n"
    );
    assert_eq!(
        env.ok("worker.sh", &["stop"]),
        "no sluice-worker is running\n"
    );
    assert_eq!(env.ok("master.sh", &["stop"]), "sluice-am is not running\n");
    let out = env.run("worker.sh", &["stop", "1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("worker 1 is not running"));
    let out = env.run("worker.sh", &["restart"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: worker.sh"));
}

/// Accepts workers on loopback, records `(worker_id, slots)` of each and accepts it.
struct FakeMaster {
    port: u16,
    registered: Arc<Mutex<Vec<(String, usize)>>>,
    stop: Arc<AtomicBool>,
}

impl FakeMaster {
    fn start() -> FakeMaster {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let registered = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (reg, halt) = (registered.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let (conn, mut reader) = Conn::from_stream(stream).unwrap();
                if let Ok(Some(ToMaster::RegisterWorker {
                    worker_id, slots, ..
                })) = reader.recv::<ToMaster>()
                {
                    reg.lock().unwrap().push((worker_id, slots));
                    let _ = conn.send(&ToWorker::Registered);
                    // Reads heartbeats until the worker goes.
                    std::thread::spawn(
                        move || while let Ok(Some(_)) = reader.recv::<ToMaster>() {},
                    );
                }
            }
        });
        FakeMaster {
            port,
            registered,
            stop,
        }
    }
}

impl Drop for FakeMaster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn worker_sh_starts_numbered_workers_and_stops_them() {
    let master = FakeMaster::start();
    let env = Env::new(&format!(
        "jobmanager.rpc.address: 127.0.0.1\njobmanager.rpc.port: {}\n\
         taskmanager.numberOfTaskSlots: 2\nheartbeat.timeout: 60000\n",
        master.port
    ));
    let first = env.ok("worker.sh", &["start"]);
    assert!(
        first.starts_with("worker 1: sluice-worker ")
            && first.contains(&format!(
                "registered with 127.0.0.1:{} (2 slots)",
                master.port
            )),
        "{first}"
    );
    let second = env.ok(
        "worker.sh",
        &["start", "-D", "taskmanager.numberOfTaskSlots=4"],
    );
    assert!(
        second.starts_with("worker 2: ") && second.contains("(4 slots)"),
        "{second}"
    );
    let registered = master.registered.lock().unwrap().clone();
    assert_eq!(
        registered.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![2, 4]
    );
    let status = env.ok("worker.sh", &["status"]);
    for (i, (id, _)) in registered.iter().enumerate() {
        let line = format!("worker {} is running (pid ", i + 1);
        assert!(status.contains(&line), "{status}");
        assert!(status.contains(&format!("worker id {id})")), "{status}");
    }

    assert!(
        env.ok("worker.sh", &["stop", "1"])
            .starts_with("stopped worker 1 (pid ")
    );
    let status = env.ok("worker.sh", &["status"]);
    assert!(!status.contains("worker 1"), "{status}");
    assert!(status.contains("worker 2 is running"), "{status}");
    // The lowest free number is reused.
    assert!(env.ok("worker.sh", &["start"]).starts_with("worker 1: "));

    let stopped = env.ok("worker.sh", &["stop"]);
    assert!(
        stopped.contains("stopped worker 1") && stopped.contains("stopped worker 2"),
        "{stopped}"
    );
    assert_eq!(
        env.ok("worker.sh", &["status"]),
        "no sluice-worker is running\n"
    );
    let log = std::fs::read_to_string(env.log_dir().join("sluice-worker-2.log")).unwrap();
    assert!(log.contains("stopped by SIGTERM"), "{log}");

    // A worker that cannot register fails the start and leaves no pid file.
    let out = env.run("worker.sh", &["start", "-D", "jobmanager.rpc.port=1"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exited while starting"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.ok("worker.sh", &["status"]),
        "no sluice-worker is running\n"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Needs `sluice-am` next to `sluice-worker` (a workspace build puts it there).
#[test]
fn start_cluster_and_stop_cluster_with_the_master() {
    assert!(
        bin_dir().join("sluice-am").is_file(),
        "no sluice-am in {}: build the workspace (cargo build --release --workspace)",
        bin_dir().display()
    );
    let (rpc, rest) = (free_port(), free_port());
    let env = Env::new(&format!(
        "jobmanager.rpc.address: 127.0.0.1\njobmanager.rpc.port: {rpc}\nrest.port: {rest}\n\
         taskmanager.numberOfTaskSlots: 2\n"
    ));
    std::fs::write(
        env.dir.path().join("conf/workers"),
        "# two local workers\nlocalhost\n127.0.0.1\n",
    )
    .unwrap();
    let started = env.ok("start-cluster.sh", &[]);
    assert!(started.contains("sluice-am started (pid "), "{started}");
    assert!(started.contains("worker 2: "), "{started}");
    assert!(
        env.ok("master.sh", &["status"])
            .starts_with("sluice-am is running (pid "),
    );
    let status = env.ok("worker.sh", &["status"]);
    assert!(
        status.contains("worker 1 is running") && status.contains("worker 2 is running"),
        "{status}"
    );
    let stopped = env.ok("stop-cluster.sh", &[]);
    assert!(stopped.contains("stopped sluice-am"), "{stopped}");
    assert_eq!(
        env.ok("master.sh", &["status"]),
        "sluice-am is not running\n"
    );
    assert_eq!(
        env.ok("worker.sh", &["status"]),
        "no sluice-worker is running\n"
    );
}
