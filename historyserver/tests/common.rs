//! Helpers shared by the HistoryServer's tests: raw HTTP calls (so request paths reach the
//! server exactly as written, without a client normalizing `..`) and synthetic archives.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

/// (status, body) of `GET path`, sent byte for byte as given.
pub fn get_raw(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status line in {text:?}"));
    let body = match text.split_once("\r\n\r\n") {
        Some((head, body))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            dechunk(body)
        }
        Some((_, body)) => body.to_string(),
        None => String::new(),
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The JSON body of `GET path`, which must answer 200.
pub fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get_raw(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// An archive in Flink's format for job `id` that ended at `end_time` in `state`.
pub fn synthetic_archive(id: &str, end_time: i64, state: &str) -> Vec<u8> {
    let overview = json!({"jobs": [{
        "jid": id, "name": format!("job {id}"), "jobType": "STREAMING", "start-time": end_time - 1000,
        "end-time": end_time, "duration": 1000, "state": state, "last-modification": end_time,
        "tasks": {"total": 1},
    }]});
    let details =
        json!({"jid": id, "name": format!("job {id}"), "state": state, "end-time": end_time});
    let entries = json!({"archive": [
        {"path": "/jobs/overview", "json": overview.to_string()},
        {"path": format!("/jobs/{id}"), "json": details.to_string()},
        {"path": format!("/jobs/{id}/checkpoints"), "json": json!({"counts": {"completed": 3}}).to_string()},
        // A hostile entry: must not be written outside the cache, nor served.
        {"path": format!("/jobs/{id}/../../../escaped"), "json": "{\"escaped\":true}"},
    ]});
    entries.to_string().into_bytes()
}

/// Writes `bytes` as archive `id` into `dir` the way the master does (temporary name first).
pub fn put_archive(dir: &Path, id: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{id}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(id)).unwrap();
}

/// A 32-hex-digit job id from a number.
pub fn job_id(n: u64) -> String {
    format!("{:032x}", 0xabc0_0000_0000u64 + n)
}
