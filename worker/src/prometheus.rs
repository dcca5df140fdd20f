//! Prometheus metrics in the text exposition format 0.0.4: a small writer, the process's own
//! figures (RSS, CPU time, threads) from `/proc`, and a minimal HTTP endpoint for the worker
//! daemon (`metrics.reporter.prom.port`, Flink's key). Metric names are documented in
//! `docs/metrics.md`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// Flink's key for the port of the Prometheus reporter: one port or a range `9250-9260`
/// (the first free one is taken).
pub const PROM_PORT_KEY: &str = "metrics.reporter.prom.port";
/// The address the endpoint binds (default all interfaces, as Flink's reporter does).
pub const PROM_HOST_KEY: &str = "metrics.reporter.prom.host";

/// A text exposition being written: `# HELP`/`# TYPE` once per metric name.
#[derive(Default)]
pub struct Exposition {
    out: String,
    declared: std::collections::HashSet<String>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// One sample of `name` (`gauge` or `counter`) with `labels`.
    pub fn sample(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        if self.declared.insert(name.to_string()) {
            let _ = writeln!(self.out, "# HELP {name} {help}");
            let _ = writeln!(self.out, "# TYPE {name} {kind}");
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, "gauge", help, labels, value)
    }

    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, "counter", help, labels, value)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// (RSS bytes, CPU seconds, threads) of process `pid` ("self" for this one), from `/proc`.
/// CPU time assumes the kernel's USER_HZ of 100, which Linux uses on every architecture.
pub fn process_figures(pid: &str) -> Option<(u64, f64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let rss = field("VmRSS:").unwrap_or(0) * 1024;
    let threads = field("Threads:").unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((rss, ticks as f64 / 100.0, threads))
}

/// `sluice_process_*` of this process.
pub fn process_metrics(e: &mut Exposition) {
    if let Some((rss, cpu, threads)) = process_figures("self") {
        e.gauge(
            "sluice_process_rss_bytes",
            "Resident set size of this process.",
            &[],
            rss as f64,
        );
        e.counter(
            "sluice_process_cpu_seconds_total",
            "User and system CPU time of this process.",
            &[],
            cpu,
        );
        e.gauge(
            "sluice_process_threads",
            "Threads of this process.",
            &[],
            threads as f64,
        );
    }
}

/// The pids of this process's direct children (the job processes a worker daemon started).
pub fn child_pids() -> Vec<u32> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let after = &s[s.rfind(')')? + 2..];
                    after.split_whitespace().nth(1).map(|p| p == me)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The port(s) of a `metrics.reporter.prom.port` value: `9249` or `9250-9260`.
pub fn parse_ports(v: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let v = v.trim();
    match v.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a <= b).then_some(a..=b)
        }
        None => v.parse().ok().map(|p| p..=p),
    }
}

/// Serves `GET /metrics` (and `/`) with `render()` on the first free port of `ports` on a
/// thread of its own; returns the bound address.
pub fn serve(
    host: &str,
    ports: std::ops::RangeInclusive<u16>,
    render: impl Fn() -> String + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let mut last = None;
    let mut listener = None;
    for port in ports.clone() {
        match TcpListener::bind((host, port)) {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let listener = listener.ok_or_else(|| {
        let e = last.unwrap_or_else(|| std::io::Error::other("empty port range"));
        std::io::Error::new(
            e.kind(),
            format!(
                "{PROM_PORT_KEY} {host}:{}-{}: {e}",
                ports.start(),
                ports.end()
            ),
        )
    })?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("prometheus".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &render);
            }
        })?;
    Ok(addr)
}

/// One request per connection: the request line decides, headers are read and ignored.
fn answer(mut s: std::net::TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = if method != "GET" {
        ("405 Method Not Allowed", "only GET\n".to_string())
    } else if path == "/metrics" || path == "/" {
        ("200 OK", render())
    } else {
        (
            "404 Not Found",
            format!("no such path {path}; try /metrics\n"),
        )
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The worker daemon's endpoint, when `metrics.reporter.prom.port` is set: its own process
/// figures, its slots, and the job processes it started (count, summed RSS and CPU time).
pub fn start_for_worker(
    config: &sluice_core::Config,
    worker_id: &str,
    slots: usize,
) -> Result<Option<SocketAddr>, String> {
    let Some(v) = config.get_raw(PROM_PORT_KEY) else {
        return Ok(None);
    };
    let ports = parse_ports(v).ok_or_else(|| {
        format!("{PROM_PORT_KEY}: '{v}' is not a port or a range such as 9250-9260")
    })?;
    let host = config
        .get_raw(PROM_HOST_KEY)
        .unwrap_or("0.0.0.0")
        .to_string();
    let id = worker_id.to_string();
    let render = move || {
        let mut e = Exposition::new();
        let l = [("tm_id", id.as_str())];
        e.gauge(
            "sluice_taskmanager_numberOfTaskSlots",
            "Task slots this worker offers.",
            &l,
            slots as f64,
        );
        let children: Vec<(u64, f64, u64)> = child_pids()
            .iter()
            .filter_map(|p| process_figures(&p.to_string()))
            .collect();
        e.gauge(
            "sluice_taskmanager_jobProcesses",
            "Job processes this worker runs.",
            &l,
            children.len() as f64,
        );
        e.gauge(
            "sluice_taskmanager_jobProcesses_rss_bytes",
            "Summed resident set size of the job processes of this worker.",
            &l,
            children.iter().map(|c| c.0).sum::<u64>() as f64,
        );
        e.counter(
            "sluice_taskmanager_jobProcesses_cpu_seconds_total",
            "Summed CPU time of the job processes running on this worker.",
            &l,
            children.iter().map(|c| c.1).sum::<f64>(),
        );
        process_metrics(&mut e);
        e.finish()
    };
    serve(&host, ports, render)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_text_format_and_reads_proc() {
        let mut e = Exposition::new();
        e.counter("sluice_x_total", "X.", &[("job_id", "a\"b")], 3.0);
        e.counter("sluice_x_total", "X.", &[("job_id", "c")], 0.5);
        process_metrics(&mut e);
        let text = e.finish();
        assert!(text.starts_with("# HELP sluice_x_total X.\n# TYPE sluice_x_total counter\n"));
        assert!(
            text.contains("sluice_x_total{job_id=\"a\\\"b\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_x_total{job_id=\"c\"} 0.5\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE sluice_x_total").count(), 1);
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("sluice_process_rss_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1e6, "{text}");
        assert_eq!(parse_ports("9250-9252"), Some(9250..=9252));
        assert_eq!(parse_ports("9249"), Some(9249..=9249));
        assert_eq!(parse_ports("x"), None);
    }

    #[test]
    fn the_worker_endpoint_is_off_unless_configured() {
        let off = sluice_core::Config::load(None, &[]).unwrap();
        assert_eq!(start_for_worker(&off, "w", 2), Ok(None));
        let bad = sluice_core::Config::load(None, &[format!("{PROM_PORT_KEY}=x")]).unwrap();
        assert!(
            start_for_worker(&bad, "w", 2)
                .unwrap_err()
                .contains(PROM_PORT_KEY)
        );
        let on = sluice_core::Config::load(
            None,
            &[
                format!("{PROM_PORT_KEY}=0"),
                format!("{PROM_HOST_KEY}=127.0.0.1"),
            ],
        )
        .unwrap();
        let addr = start_for_worker(&on, "w-1", 3).unwrap().unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(
            out.contains("\nsluice_taskmanager_numberOfTaskSlots{tm_id=\"w-1\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("\nsluice_process_rss_bytes "), "{out}");
    }

    #[test]
    fn serves_over_http() {
        let addr = serve("127.0.0.1", 0..=0, || "sluice_up 1\n".to_string()).unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("\r\n\r\nsluice_up 1\n"), "{out}");
    }
}
