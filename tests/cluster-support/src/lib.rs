//! Finds, starts and fault-injects the loopback test cluster (HDFS, YARN, ZooKeeper, Kafka) that `scripts/testcluster.sh` runs, for integration tests.
//!
//! ```no_run
//! let cluster = sluice_testcluster::TestCluster::ensure_up(&["hdfs"]).unwrap();
//! println!("{}", cluster.hdfs_url());
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

pub mod yarn;

/// Where the cluster lives unless `SLUICE_TESTCLUSTER_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/tmp/sluice-testcluster";

/// Errors of this crate; each names the file, command or process it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}):\n{output}")]
    Script {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("GET {url}: {source}")]
    Http { url: String, source: std::io::Error },
    #[error("unknown component or process `{0}` in the test cluster")]
    Unknown(String),
    #[error("{component} is not running after `testcluster.sh up` (see {dir}/logs)")]
    NotRunning { component: String, dir: PathBuf },
    #[error("GET {url} as JSON: {message}")]
    Json { url: String, message: String },
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// `cluster.json` as written by `scripts/testcluster.sh`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterInfo {
    pub dir: PathBuf,
    pub conf_dir: PathBuf,
    pub launcher_classpath: String,
    pub java: String,
    pub zookeeper: ZooKeeperInfo,
    pub hdfs: HdfsInfo,
    pub yarn: YarnInfo,
    pub kafka: KafkaInfo,
    pub processes: Vec<ProcessInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ZooKeeperInfo {
    /// `zk` (standalone), `zk3` (three-member ensemble) or `none`.
    pub mode: String,
    /// Connect string, `127.0.0.1:p1,127.0.0.1:p2,...`.
    pub quorum: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HdfsInfo {
    /// `hdfs://127.0.0.1:port`, or `hdfs://sluice` with an HA pair.
    pub url: String,
    pub ha: bool,
    pub namenode_http: String,
    pub datanodes: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct YarnInfo {
    pub rm_address: String,
    pub rm_scheduler_address: String,
    /// `http://127.0.0.1:port`, the REST API's base.
    pub rm_web: String,
    pub nodemanagers: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaInfo {
    pub bootstrap: String,
    pub controller_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProcessInfo {
    /// `zk1`, `namenode`, `datanode2`, `resourcemanager`, `nodemanager1`, `kafka`, ...
    pub name: String,
    /// `zk`, `hdfs`, `yarn` or `kafka`.
    pub component: String,
    pub pid: Option<u32>,
    pub alive: bool,
    pub log: PathBuf,
}

/// A handle on the running test cluster.
#[derive(Debug, Clone)]
pub struct TestCluster {
    info: ClusterInfo,
    script: PathBuf,
}

impl TestCluster {
    /// The cluster's state directory.
    pub fn dir() -> PathBuf {
        std::env::var_os("SLUICE_TESTCLUSTER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
    }

    /// The control script (`SLUICE_TESTCLUSTER_SCRIPT` overrides the one in this repository).
    pub fn script() -> PathBuf {
        std::env::var_os("SLUICE_TESTCLUSTER_SCRIPT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/testcluster.sh")
            })
    }

    /// Reads `cluster.json` of a cluster that is already up; starts nothing.
    pub fn open() -> Result<Self> {
        Self::open_in(&Self::dir())
    }

    /// [`open`](Self::open) for the cluster in `dir` instead of [`dir`](Self::dir).
    pub fn open_in(dir: &Path) -> Result<Self> {
        let path = dir.join("cluster.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let info = serde_json::from_str(&text).map_err(|source| Error::Parse { path, source })?;
        Ok(Self {
            info,
            script: Self::script(),
        })
    }

    /// Returns the cluster with every listed component (`zk`, `zk3`, `hdfs`, `yarn`, `kafka`)
    /// running, starting the missing ones with `testcluster.sh up` (which leaves running ones
    /// alone). `zk` is satisfied by an ensemble too.
    pub fn ensure_up(components: &[&str]) -> Result<Self> {
        Self::ensure_up_in(&Self::dir(), components)
    }

    /// [`ensure_up`](Self::ensure_up) for a cluster in `dir`, e.g. a second one next to the
    /// default. `--ha` among the components asks for an HDFS HA NameNode pair; a running
    /// cluster without one is an error (the HA setting changes only with `down` + `up`).
    pub fn ensure_up_in(dir: &Path, components: &[&str]) -> Result<Self> {
        let ha = components.contains(&"--ha");
        let want: Vec<&str> = components
            .iter()
            .copied()
            .filter(|c| *c != "--ha")
            .collect();
        let satisfied =
            |c: &Self| want.iter().all(|w| c.component_running(w)) && (!ha || c.info.hdfs.ha);
        if let Ok(cluster) = Self::open_in(dir)
            && satisfied(&cluster)
        {
            return Ok(cluster);
        }
        let mut args = vec!["up"];
        args.extend(components.iter().copied());
        run_script(&Self::script(), dir, &args)?;
        let cluster = Self::open_in(dir)?;
        for c in want {
            if !cluster.component_running(c) {
                return Err(Error::NotRunning {
                    component: c.to_string(),
                    dir: cluster.info.dir.clone(),
                });
            }
        }
        if ha && !cluster.info.hdfs.ha {
            return Err(Error::NotRunning {
                component: "an HDFS HA pair (the running cluster has one NameNode)".into(),
                dir: cluster.info.dir.clone(),
            });
        }
        Ok(cluster)
    }

    /// Stops every process of this cluster (`testcluster.sh down`).
    pub fn down(&mut self) -> Result<()> {
        run_script(&self.script, &self.info.dir, &["down"])?;
        self.reload()
    }

    /// With an HA pair (`up --ha`): makes the active NameNode standby and the other one
    /// active, as `hdfs haadmin` does (a manual failover); returns the now active one
    /// (`nn1` or `nn2`).
    pub fn failover(&mut self) -> Result<String> {
        let out = run_script(&self.script, &self.info.dir, &["failover"])?;
        self.reload()?;
        Ok(out
            .lines()
            .filter_map(|l| l.strip_suffix(" active"))
            .filter_map(|l| l.rsplit(' ').next())
            .next()
            .unwrap_or_default()
            .to_string())
    }

    fn component_running(&self, component: &str) -> bool {
        let (name, mode) = match component {
            "zk" => ("zk", None),
            "zk3" => ("zk", Some("zk3")),
            other => (other, None),
        };
        if mode.is_some_and(|m| m != self.info.zookeeper.mode) {
            return false;
        }
        let procs: Vec<&ProcessInfo> = self
            .info
            .processes
            .iter()
            .filter(|p| p.component == name)
            .collect();
        !procs.is_empty() && procs.iter().all(|p| p.alive && pid_alive(p.pid))
    }

    /// Everything `cluster.json` says.
    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// `fs.defaultFS`, e.g. `hdfs://127.0.0.1:41631`.
    pub fn hdfs_url(&self) -> &str {
        &self.info.hdfs.url
    }

    /// A `HADOOP_CONF_DIR` with core-site.xml, hdfs-site.xml and yarn-site.xml.
    pub fn conf_dir(&self) -> &Path {
        &self.info.conf_dir
    }

    /// ZooKeeper connect string.
    pub fn zk_quorum(&self) -> &str {
        &self.info.zookeeper.quorum
    }

    /// The client addresses of the ZooKeeper members, in member order.
    pub fn zk_members(&self) -> Vec<&str> {
        self.info.zookeeper.quorum.split(',').collect()
    }

    /// Kafka `bootstrap.servers`.
    pub fn kafka_bootstrap(&self) -> &str {
        &self.info.kafka.bootstrap
    }

    /// Base URL of the ResourceManager's web app and REST API.
    pub fn rm_web(&self) -> &str {
        &self.info.yarn.rm_web
    }

    /// The JVM and classpath that start the cluster's launcher (and its smoke application
    /// master, `io.sluice.minicluster.SmokeAppMaster`); the classpath includes the conf dir.
    pub fn java_command(&self) -> (&str, &str) {
        (&self.info.java, &self.info.launcher_classpath)
    }

    /// The process names, e.g. `datanode1`, for [`kill`](Self::kill) and
    /// [`restart`](Self::restart).
    pub fn process_names(&self, component: &str) -> Vec<&str> {
        self.info
            .processes
            .iter()
            .filter(|p| p.component == component)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Whether a process of the cluster runs (a paused one does).
    pub fn process_alive(&self, process: &str) -> bool {
        self.info
            .processes
            .iter()
            .any(|p| p.name == process && p.alive && pid_alive(p.pid))
    }

    /// `kill -9` one process (`namenode`, `datanode1`, `nodemanager2`, `zk3`, `kafka`, ...).
    pub fn kill(&mut self, process: &str) -> Result<()> {
        self.check_process(process)?;
        run_script(&self.script, &self.info.dir, &["kill", process])?;
        self.reload()
    }

    /// Stops one process with SIGTERM, as its operator would (a NodeManager then stops its
    /// containers and unregisters), and waits until it is gone. [`restart`](Self::restart)
    /// starts it again.
    pub fn stop(&mut self, process: &str) -> Result<()> {
        self.check_process(process)?;
        run_script(&self.script, &self.info.dir, &["kill", process, "TERM"])?;
        self.reload()
    }

    /// Starts one process again with its recorded command (killing it first if it still runs)
    /// and waits until it serves again: the NameNode (with the namespace it had) out of safe
    /// mode and DataNodes live, NodeManagers RUNNING, the ZooKeeper member answering `srvr`,
    /// the broker answering a metadata request.
    pub fn restart(&mut self, process: &str) -> Result<()> {
        self.check_process(process)?;
        run_script(&self.script, &self.info.dir, &["restart", process])?;
        self.reload()
    }

    /// `SIGSTOP` one process: it keeps its sockets open but answers nothing, like a server in
    /// a long GC pause. [`resume`](Self::resume) continues it; `down` does too.
    pub fn pause(&mut self, process: &str) -> Result<()> {
        self.check_process(process)?;
        run_script(&self.script, &self.info.dir, &["pause", process])?;
        self.reload()
    }

    /// `SIGCONT` a process [`pause`](Self::pause)d before.
    pub fn resume(&mut self, process: &str) -> Result<()> {
        self.check_process(process)?;
        run_script(&self.script, &self.info.dir, &["resume", process])?;
        self.reload()
    }

    /// The attributes of one NameNode metrics bean from its JMX servlet, e.g.
    /// `NameNodeActivity` (`CreateFileOps`, `FilesCreated`, `FilesRenamed`, `DeleteFileOps`,
    /// ...). The cluster publishes metrics to JMX once a second, so a value may be up to a
    /// second old.
    pub fn namenode_metrics(
        &self,
        bean: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let base = &self.info.hdfs.namenode_http;
        let url = format!("{base}/jmx?qry=Hadoop:service=NameNode,name={bean}");
        let body = http_get(&url).map_err(|source| Error::Http {
            url: url.clone(),
            source,
        })?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| Error::Http {
            url: url.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })?;
        json["beans"][0]
            .as_object()
            .cloned()
            .ok_or_else(|| Error::Http {
                url,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such bean"),
            })
    }

    fn check_process(&self, process: &str) -> Result<()> {
        if self.info.processes.iter().any(|p| p.name == process) {
            Ok(())
        } else {
            Err(Error::Unknown(process.to_string()))
        }
    }

    fn reload(&mut self) -> Result<()> {
        self.info = Self::open_in(&self.info.dir.clone())?.info;
        Ok(())
    }
}

/// A plain HTTP/1.0 GET of an `http://host:port/path` URL on the loopback cluster.
fn http_get(url: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let invalid =
        |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("not an http:// URL"))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut conn = std::net::TcpStream::connect(host)?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no HTTP header"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("").to_string(),
        ));
    }
    Ok(body.to_string())
}

fn pid_alive(pid: Option<u32>) -> bool {
    pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists())
}

/// Runs the control script on the cluster in `dir`.
fn run_script(script: &Path, dir: &Path, args: &[&str]) -> Result<String> {
    let command = format!(
        "SLUICE_TESTCLUSTER_DIR={} {} {}",
        dir.display(),
        script.display(),
        args.join(" ")
    );
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .env("SLUICE_TESTCLUSTER_DIR", dir)
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(output)
    } else {
        Err(Error::Script {
            command,
            status: out.status,
            output,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_json() {
        let json = r#"{
          "dir": "/tmp/c", "conf_dir": "/tmp/c/conf", "launcher_classpath": "/tmp/c/conf:x.jar",
          "java": "java",
          "zookeeper": {"mode": "zk3", "quorum": "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"},
          "hdfs": {"url": "hdfs://127.0.0.1:9", "ha": false,
                   "namenode_http": "http://127.0.0.1:10", "datanodes": 2},
          "yarn": {"rm_address": "127.0.0.1:11", "rm_scheduler_address": "127.0.0.1:12",
                   "rm_web": "http://127.0.0.1:13", "nodemanagers": 2},
          "kafka": {"bootstrap": "127.0.0.1:14", "controller_port": 15},
          "processes": [
            {"name": "zk1", "component": "zk", "pid": 1, "alive": true, "log": "/tmp/c/logs/zk1.log"},
            {"name": "kafka", "component": "kafka", "pid": null, "alive": false, "log": "/tmp/c/logs/kafka.log"}
          ]
        }"#;
        let info: ClusterInfo = serde_json::from_str(json).unwrap();
        let cluster = TestCluster {
            info,
            script: PathBuf::from("testcluster.sh"),
        };
        assert_eq!(cluster.zk_members().len(), 3);
        assert_eq!(cluster.kafka_bootstrap(), "127.0.0.1:14");
        assert_eq!(cluster.process_names("zk"), vec!["zk1"]);
        assert!(!cluster.component_running("kafka"));
        assert!(cluster.component_running("zk3"));
        assert!(
            !cluster.component_running("yarn"),
            "no yarn process recorded"
        );
        assert!(matches!(
            cluster.check_process("nope"),
            Err(Error::Unknown(_))
        ));
    }
}
