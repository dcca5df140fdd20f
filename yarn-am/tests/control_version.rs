//! A real master (`sluice-am`) refuses, at registration, a worker daemon or job process that
//! speaks another control protocol version, naming both versions, also when the peer's
//! registration does not even decode as this version's; a peer of its own version is taken.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_worker::control::{Conn, ConnReader, PROTOCOL_VERSION, ToMaster, ToWorker};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `sluice-am` process, killed when dropped.
struct Master {
    child: Child,
    control: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Master {
    fn start() -> Master {
        let rpc = free_port();
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice-am"))
            .args(["-D", &format!("jobmanager.rpc.port={rpc}")])
            .args(["-D", &format!("rest.port={}", free_port())])
            .args(["-D", "heartbeat.timeout=5s"])
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("the log file"))
            .spawn()
            .expect("sluice-am starts");
        let control: SocketAddr = format!("127.0.0.1:{rpc}").parse().expect("an address");
        let m = Master {
            child,
            control,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(control).is_err() {
            assert!(
                Instant::now() < deadline,
                "the master's control port {control} never opened: {}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    fn connect(&self) -> (Conn, ConnReader) {
        let (conn, reader) =
            Conn::connect(self.control, Duration::from_secs(5)).expect("connects to the master");
        reader
            .set_timeout(Some(Duration::from_secs(10)))
            .expect("a read timeout");
        (conn, reader)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The master's answer to a registration, and whether it then closed the connection.
fn answer(reader: &mut ConnReader) -> (ToWorker, bool) {
    let first = loop {
        match reader.recv::<ToWorker>().expect("the master answers") {
            Some(ToWorker::Heartbeat) => continue,
            Some(m) => break m,
            None => panic!("the master closed the connection without an answer"),
        }
    };
    let closed = matches!(reader.recv::<ToWorker>(), Ok(None) | Err(_));
    (first, closed)
}

fn refusal(reader: &mut ConnReader) -> String {
    match answer(reader) {
        (ToWorker::Refused { reason }, true) => reason,
        (ToWorker::Refused { reason }, false) => {
            panic!("the master refused ({reason}) but kept the connection open")
        }
        (other, _) => panic!("the master did not refuse: {other:?}"),
    }
}

fn register_worker(version: u32, id: &str) -> ToMaster {
    ToMaster::RegisterWorker {
        version,
        worker_id: id.into(),
        slots: 2,
        host: "127.0.0.1".into(),
    }
}

#[test]
fn the_master_refuses_peers_of_another_protocol_version_naming_both_versions() {
    let master = Master::start();
    let newer = PROTOCOL_VERSION + 1;

    let (conn, mut reader) = master.connect();
    conn.send(&register_worker(newer, "worker-new"))
        .expect("registers");
    let reason = refusal(&mut reader);
    assert!(
        reason.contains("worker-new")
            && reason.contains(&format!("version {newer}"))
            && reason.contains(&format!("version {PROTOCOL_VERSION}")),
        "{reason}"
    );

    let (conn, mut reader) = master.connect();
    conn.send(&ToMaster::RegisterJobProcess {
        version: PROTOCOL_VERSION - 1,
        job_id: "0123456789abcdef0123456789abcdef".into(),
        worker_id: "worker-old".into(),
        data_addr: "127.0.0.1:1".parse().expect("an address"),
        plan_fingerprint: 7,
    })
    .expect("registers");
    let reason = refusal(&mut reader);
    assert!(
        reason.contains("0123456789abcdef0123456789abcdef")
            && reason.contains("worker-old")
            && reason.contains(&format!("version {}", PROTOCOL_VERSION - 1))
            && reason.contains(&format!("version {PROTOCOL_VERSION}")),
        "{reason}"
    );

    // A registration shaped as another version shapes it: the variant and the version, then
    // fields this version does not decode.
    let (conn, mut reader) = master.connect();
    conn.send(&(0u32, 99u32, [0xffu8; 3])).expect("registers");
    let reason = refusal(&mut reader);
    assert!(
        reason.contains("version 99") && reason.contains(&format!("version {PROTOCOL_VERSION}")),
        "{reason}"
    );

    // None of them counts as a worker; a worker of this version registers.
    let (conn, mut reader) = master.connect();
    conn.send(&register_worker(PROTOCOL_VERSION, "worker-same"))
        .expect("registers");
    let reader_answer = loop {
        match reader.recv::<ToWorker>().expect("the master answers") {
            Some(ToWorker::Heartbeat) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(reader_answer, Some(ToWorker::Registered)),
        "{reader_answer:?}\n{}",
        master.log()
    );
    // The master logs the registration just after answering it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let log = master.log();
        if log.contains("worker worker-same at 127.0.0.1 registered")
            || std::time::Instant::now() > deadline
        {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        log.contains("worker worker-same at 127.0.0.1 registered")
            && !log.contains("worker worker-new at 127.0.0.1 registered"),
        "{log}"
    );
}
