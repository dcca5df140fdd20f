//! The worker daemon against a fake master on loopback: registration, heartbeats, launching,
//! watching and killing job processes, and what happens when the master goes away.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sluice_worker::control::{Conn, ConnReader, PROTOCOL_VERSION, ToMaster, ToWorker};
use sluice_worker::daemon::{Daemon, Settings, Stopped};

const WAIT: Duration = Duration::from_secs(10);

/// A listening fake master.
struct Master {
    listener: TcpListener,
}

impl Master {
    fn new() -> Master {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Master { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().unwrap().port()
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// The next connection, within [`WAIT`].
    fn accept(&self) -> (Conn, ConnReader) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    let (conn, reader) = Conn::from_stream(stream).unwrap();
                    reader.set_timeout(Some(WAIT)).unwrap();
                    return (conn, reader);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "no worker connected within {WAIT:?}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// Accepts a worker, checks its registration and accepts it.
    fn register(&self) -> Registered {
        let (conn, mut reader) = self.accept();
        let Some(ToMaster::RegisterWorker {
            version,
            worker_id,
            slots,
            host,
        }) = reader.recv::<ToMaster>().unwrap()
        else {
            panic!("the first message was not RegisterWorker");
        };
        assert_eq!(version, PROTOCOL_VERSION);
        conn.send(&ToWorker::Registered).unwrap();
        Registered {
            conn,
            reader,
            worker_id,
            slots,
            host,
        }
    }
}

struct Registered {
    conn: Conn,
    reader: ConnReader,
    worker_id: String,
    slots: usize,
    host: String,
}

impl Registered {
    /// The next message other than a heartbeat.
    fn next(&mut self) -> ToMaster {
        loop {
            match self.reader.recv::<ToMaster>().unwrap() {
                Some(ToMaster::Heartbeat) => {}
                Some(m) => return m,
                None => panic!("the worker closed the connection"),
            }
        }
    }

    /// Fails if anything but heartbeats arrives within `d`.
    fn only_heartbeats_for(&mut self, d: Duration) {
        self.reader
            .set_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let end = Instant::now() + d;
        while Instant::now() < end {
            match self.reader.recv::<ToMaster>() {
                Ok(Some(ToMaster::Heartbeat)) => {}
                Ok(other) => panic!("expected only heartbeats, got {other:?}"),
                Err(e) => panic!("the worker stopped heartbeating: {e}"),
            }
        }
        self.reader.set_timeout(Some(WAIT)).unwrap();
    }

    fn launch(&self, job_id: &str, program: &[u8], args: &[&str], config: &[&str]) {
        self.conn
            .send(&ToWorker::LaunchJob {
                job_id: job_id.into(),
                bundle: program.to_vec(),
                args: args.iter().map(|s| s.to_string()).collect(),
                config: config.iter().map(|s| s.to_string()).collect(),
                epoch: 0,
            })
            .unwrap();
    }

    /// The reason of the next `JobProcessExited`, which must be for `job_id`.
    fn exited(&mut self, job_id: &str) -> String {
        match self.next() {
            ToMaster::JobProcessExited { job_id: j, reason } => {
                assert_eq!(j, job_id);
                reason
            }
            other => panic!("expected JobProcessExited, got {other:?}"),
        }
    }
}

/// A `sluice-worker` process, killed when the test ends.
struct Worker {
    child: Child,
    dir: tempfile::TempDir,
}

impl Worker {
    /// Starts the daemon against `master` with heartbeats every 100 ms, its temporary and log
    /// directories in a fresh directory, and `extra` arguments.
    fn start(master: &Master, extra: &[&str]) -> Worker {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
            .arg("-D")
            .arg(format!("jobmanager.rpc.port={}", master.port()))
            .args(["-D", "heartbeat.interval=100 ms"])
            .arg(format!(
                "-Dtaskmanager.tmp.dirs={}",
                dir.path().join("tmp").display()
            ))
            .args(extra)
            .env("SLUICE_LOG_DIR", dir.path().join("log"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Worker { child, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self, job_id: &str, worker_id: &str) -> PathBuf {
        self.dir
            .path()
            .join("log")
            .join(format!("job-{job_id}-{worker_id}.out"))
    }

    fn work_dir(&self, worker_id: &str) -> PathBuf {
        self.dir
            .path()
            .join("tmp")
            .join(format!("sluice-worker-{worker_id}"))
    }

    fn first_stdout_line(&mut self) -> String {
        let mut line = String::new();
        BufReader::new(self.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim_end().to_string()
    }

    /// Waits for the daemon to exit; its status and everything it wrote to stderr.
    fn exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "sluice-worker still runs after {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, err)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `file` has a line `pid=N` and returns N.
fn pid_in(file: &Path) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(pid) = text.lines().find_map(|l| l.strip_prefix("pid=")) {
            return pid.trim().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no pid in {}", file.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_gone(pid: u32) {
    wait_until(&format!("process {pid} ends"), || !alive(pid));
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} in vain until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A job that prints its pid and waits to be killed.
const SLEEPER: &[u8] = b"#!/bin/sh\necho \"pid=$$\"\nexec sleep 600\n";

#[test]
fn registers_its_slots_heartbeats_and_shuts_down_on_request() {
    let master = Master::new();
    let mut worker = Worker::start(&master, &["-D", "taskmanager.numberOfTaskSlots=3"]);
    let mut m = master.register();
    // The default worker id: `<hostname or 127.0.0.1>-<pid>`.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into());
    assert_eq!(m.worker_id, format!("{host}-{}", worker.pid()));
    assert_eq!(m.slots, 3);
    assert_eq!(m.host, "127.0.0.1");
    assert_eq!(
        worker.first_stdout_line(),
        format!(
            "sluice-worker {} registered with {} (3 slots)",
            m.worker_id,
            master.addr()
        )
    );
    m.only_heartbeats_for(Duration::from_millis(500));
    m.conn.send(&ToWorker::Shutdown).unwrap();
    let (status, err) = worker.exit();
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("shut this worker down"), "{err}");
}

#[test]
fn a_refused_registration_exits_non_zero_with_the_reason() {
    let master = Master::new();
    let mut worker = Worker::start(&master, &["-D", "taskmanager.resource-id=w-refused"]);
    let (conn, mut reader) = master.accept();
    let Some(ToMaster::RegisterWorker { worker_id, .. }) = reader.recv::<ToMaster>().unwrap()
    else {
        panic!("the first message was not RegisterWorker");
    };
    assert_eq!(worker_id, "w-refused");
    conn.send(&ToWorker::Refused {
        reason: "protocol version 1, but this master speaks version 2".into(),
    })
    .unwrap();
    let (status, err) = worker.exit();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "refused worker w-refused: protocol version 1, but this master speaks version 2"
        ),
        "{err}"
    );
    assert!(err.contains(&master.addr().to_string()), "{err}");
}

#[test]
fn a_launched_job_sees_its_environment_and_its_exit_is_reported() {
    let master = Master::new();
    let mut worker = Worker::start(
        &master,
        &[
            "-D",
            "taskmanager.resource-id=w-env",
            "-D",
            "taskmanager.numberOfTaskSlots=2",
        ],
    );
    let mut m = master.register();
    let job = b"#!/bin/sh
echo \"args=$*\"
echo \"ROLE=$SLUICE_ROLE\"
echo \"MASTER=$SLUICE_MASTER\"
echo \"JOB_ID=$SLUICE_JOB_ID\"
echo \"WORKER_ID=$SLUICE_WORKER_ID\"
echo \"SLOTS=$SLUICE_SLOTS\"
echo \"PROPS=$SLUICE_DYNAMIC_PROPERTIES|\"
echo \"BUNDLE_DIR=$SLUICE_BUNDLE_DIR\"
echo \"EXIT_ON_STDIN_EOF=$SLUICE_EXIT_ON_STDIN_EOF\"
if [ -p /dev/stdin ]; then echo STDIN=pipe; fi
echo to-stderr >&2
exit 3
";
    m.launch(
        "job-env",
        job,
        &["--input", "a b"],
        &["a.b=1", "c=two words"],
    );
    assert_eq!(m.exited("job-env"), "exited with status 3");
    let out = std::fs::read_to_string(worker.log("job-env", "w-env")).unwrap();
    let bundle_dir = worker.work_dir("w-env").join("job-env").join("bundle");
    let expected = format!(
        "args=--input a b
ROLE=worker
MASTER={}
JOB_ID=job-env
WORKER_ID=w-env
SLOTS=2
PROPS=a.b=1
c=two words|
BUNDLE_DIR={}
EXIT_ON_STDIN_EOF=1
STDIN=pipe
to-stderr
",
        master.addr(),
        bundle_dir.display()
    );
    assert_eq!(out, expected);
    assert!(
        !worker.work_dir("w-env").join("job-env").exists(),
        "the job's directory outlived its process"
    );

    // A second run of the same job appends to the same output file.
    m.launch("job-env", b"#!/bin/sh\necho again\n", &[], &[]);
    assert_eq!(m.exited("job-env"), "exited with status 0");
    let out = std::fs::read_to_string(worker.log("job-env", "w-env")).unwrap();
    assert!(
        out.starts_with(&expected) && out.ends_with("again\n"),
        "{out}"
    );

    m.conn.send(&ToWorker::Shutdown).unwrap();
    let (status, err) = worker.exit();
    assert!(status.success(), "{status}: {err}");
    assert!(!worker.work_dir("w-env").exists());
}

#[test]
fn kill_job_kills_the_process_silently_and_removes_its_directory() {
    let master = Master::new();
    let mut worker = Worker::start(&master, &["-D", "taskmanager.resource-id=w-kill"]);
    let mut m = master.register();
    m.launch("sleepy", SLEEPER, &[], &[]);
    let pid = pid_in(&worker.log("sleepy", "w-kill"));
    assert!(alive(pid));
    assert!(worker.work_dir("w-kill").join("sleepy/bundle").is_dir());
    m.conn
        .send(&ToWorker::KillJob {
            job_id: "sleepy".into(),
            epoch: 0,
        })
        .unwrap();
    wait_gone(pid);
    let job_dir = worker.work_dir("w-kill").join("sleepy");
    wait_until("the job's directory is removed", || !job_dir.exists());
    // Killed on request: no JobProcessExited.
    m.only_heartbeats_for(Duration::from_millis(700));

    // A process that dies of a signal by itself is reported with the signal.
    m.launch("crash", b"#!/bin/sh\nkill -SEGV $$\n", &[], &[]);
    assert_eq!(m.exited("crash"), "killed by signal 11 (SIGSEGV)");

    m.conn.send(&ToWorker::Shutdown).unwrap();
    let (status, err) = worker.exit();
    assert!(status.success(), "{status}: {err}");
}

#[test]
fn losing_the_master_kills_the_job_processes_and_exits_non_zero() {
    let master = Master::new();
    let mut worker = Worker::start(&master, &["-D", "taskmanager.resource-id=w-lost"]);
    let m = master.register();
    m.launch("one", SLEEPER, &[], &[]);
    m.launch("two", SLEEPER, &[], &[]);
    let pids = [
        pid_in(&worker.log("one", "w-lost")),
        pid_in(&worker.log("two", "w-lost")),
    ];
    m.conn.close();
    let (status, err) = worker.exit();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("lost the master at {}", master.addr())),
        "{err}"
    );
    assert!(err.contains("killed 2 job process(es)"), "{err}");
    for pid in pids {
        assert!(!alive(pid), "job process {pid} outlived its daemon");
    }
    assert!(!worker.work_dir("w-lost").exists());
}

#[test]
fn a_silent_master_is_lost_after_the_heartbeat_timeout() {
    let master = Master::new();
    let mut worker = Worker::start(
        &master,
        &[
            "-D",
            "heartbeat.timeout=700 ms",
            "-D",
            "taskmanager.resource-id=w-silent",
        ],
    );
    let _m = master.register();
    let started = Instant::now();
    let (status, err) = worker.exit();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(600), "{err}");
    assert!(err.contains("heartbeat timeout"), "{err}");
    assert!(err.contains(&master.addr().to_string()), "{err}");
}

#[test]
fn launches_that_cannot_start_are_reported_and_the_daemon_goes_on() {
    let master = Master::new();
    let mut worker = Worker::start(&master, &["-D", "taskmanager.resource-id=w-bad"]);
    let mut m = master.register();
    m.launch("garbage", b"not a program", &[], &[]);
    let reason = m.exited("garbage");
    assert!(
        reason.starts_with("could not start:") && reason.contains("neither an ELF"),
        "{reason}"
    );
    m.launch("tgz", &[0x1f, 0x8b, 8, 0, 0, 0], &[], &[]);
    let reason = m.exited("tgz");
    // A damaged job bundle is refused by the bundle's own verification, naming the problem.
    assert!(
        reason.starts_with("could not start:") && reason.contains("truncated"),
        "{reason}"
    );
    m.launch("../escape", SLEEPER, &[], &[]);
    let reason = m.exited("../escape");
    assert!(reason.contains("is not usable"), "{reason}");
    assert!(!worker.dir.path().join("tmp/escape").exists());
    m.only_heartbeats_for(Duration::from_millis(300));
    m.conn.send(&ToWorker::Shutdown).unwrap();
    let (status, err) = worker.exit();
    assert!(status.success(), "{status}: {err}");
}

#[test]
fn sigterm_kills_the_job_processes_and_exits() {
    let master = Master::new();
    let mut worker = Worker::start(&master, &["-D", "taskmanager.resource-id=w-term"]);
    let m = master.register();
    m.launch("sleepy", SLEEPER, &[], &[]);
    let pid = pid_in(&worker.log("sleepy", "w-term"));
    let kill = Command::new("kill")
        .args(["-TERM", &worker.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (status, err) = worker.exit();
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.contains("stopped by SIGTERM; killed 1 job process(es)"),
        "{err}"
    );
    assert!(!alive(pid));
    assert!(!worker.work_dir("w-term").exists());
}

#[test]
fn configuration_errors_are_reported_together_at_startup() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .args([
            "-D",
            "taskmanager.numberOfTaskSlots=0",
            "-D",
            "heartbeat.timeout=never",
            "-D",
            "jobmanager.rpc.port=http",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "taskmanager.numberOfTaskSlots",
        "heartbeat.timeout",
        "jobmanager.rpc.port",
    ] {
        assert!(err.contains(key), "{key} missing in: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-worker"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: sluice-worker"));
}

/// A bundle format of this test: a tar.gz whose `bin/job` is the entry, unpacked with `tar`.
fn untar(bundle: &Path, into: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(into).map_err(|e| e.to_string())?;
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(bundle)
        .arg("-C")
        .arg(into)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("tar failed: {status}"));
    }
    let entry = into.join("bin/job");
    if !entry.is_file() {
        return Err("the bundle has no bin/job".into());
    }
    Ok(entry)
}

#[test]
fn the_unpack_step_is_pluggable() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::create_dir_all(src.join("resources")).unwrap();
    std::fs::write(src.join("resources/greeting"), "hello from the bundle\n").unwrap();
    let job = src.join("bin/job");
    std::fs::write(
        &job,
        "#!/bin/sh\ncat \"$SLUICE_BUNDLE_DIR/resources/greeting\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&job, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tgz = dir.path().join("job.tar.gz");
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .args(["bin", "resources"])
        .status()
        .unwrap();
    assert!(ok.success());

    let master = Master::new();
    let config = sluice_core::Config::load(
        None,
        &[
            format!("jobmanager.rpc.port={}", master.port()),
            "taskmanager.resource-id=w-plug".into(),
            format!("taskmanager.tmp.dirs={}", dir.path().join("tmp").display()),
        ],
    )
    .unwrap();
    let settings = Settings::from_config(&config, dir.path().join("log")).unwrap();
    let serving = std::thread::spawn(move || {
        let daemon = Daemon::register(settings, untar).unwrap();
        daemon.serve()
    });
    let mut m = master.register();
    assert_eq!(m.worker_id, "w-plug");
    m.launch("tar-job", &std::fs::read(&tgz).unwrap(), &[], &[]);
    assert_eq!(m.exited("tar-job"), "exited with status 0");
    let out = std::fs::read_to_string(dir.path().join("log/job-tar-job-w-plug.out")).unwrap();
    assert_eq!(out, "hello from the bundle\n");
    m.launch("not-tar", b"#!/bin/sh\n", &[], &[]);
    let reason = m.exited("not-tar");
    assert!(
        reason.starts_with("could not start: tar failed"),
        "{reason}"
    );
    m.conn.send(&ToWorker::Shutdown).unwrap();
    assert_eq!(serving.join().unwrap(), Stopped::Shutdown);
}

/// A job that prints its pid and the leadership epoch it was started with, then waits.
const EPOCH_SLEEPER: &[u8] =
    b"#!/bin/sh\necho \"epoch=$SLUICE_LEADER_EPOCH\"\necho \"pid=$$\"\nexec sleep 600\n";

#[test]
fn a_message_of_an_older_leadership_epoch_is_refused_and_the_deposed_master_left() {
    let master = Master::new();
    let mut worker = Worker::start(&master, &["-D", "taskmanager.resource-id=w-epoch"]);
    let mut m = master.register();
    // The leader of epoch 7 starts a job: the daemon accepts it and hands the epoch on.
    m.conn
        .send(&ToWorker::LaunchJob {
            job_id: "fenced".into(),
            bundle: EPOCH_SLEEPER.to_vec(),
            args: Vec::new(),
            config: Vec::new(),
            epoch: 7,
        })
        .unwrap();
    let pid = pid_in(&worker.log("fenced", "w-epoch"));
    let log = std::fs::read_to_string(worker.log("fenced", "w-epoch")).unwrap();
    assert!(log.contains("epoch=7"), "{log}");
    // A deposed master (epoch 3) tries to kill it: refused, told so, and left.
    m.conn
        .send(&ToWorker::KillJob {
            job_id: "fenced".into(),
            epoch: 3,
        })
        .unwrap();
    match m.next() {
        ToMaster::StaleEpoch {
            what,
            epoch,
            highest,
        } => assert_eq!((what.as_str(), epoch, highest), ("KillJob", 3, 7)),
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
    let (status, err) = worker.exit();
    assert!(!status.success(), "{status}: {err}");
    assert!(
        err.contains(&format!(
            "refusing KillJob from the master at {}: it carries leadership epoch 3, older \
             than epoch 7 seen before",
            master.addr()
        )),
        "{err}"
    );
    // Leaving the master kills the job process, as any lost master does.
    wait_gone(pid);
}
