//! Keeps the job's worker containers alive: asks YARN for them, starts `sluice-worker` in
//! each, replaces the ones that end (their process was killed, their NodeManager lost), gives
//! back surplus ones, and fails the application after too many failures.

use std::collections::{BTreeMap, BTreeSet};

use sluice_core::Config;
use sluice_core::config::parse_memory;

use super::amrm::AmRmClient;
use super::nm::{NmClient, container_name, node_addr};
use super::proto::yarn::{
    AmCommandProto, ContainerIdProto, ContainerLaunchContextProto, ContainerProto, NmTokenProto,
    PriorityProto, ResourceProto, ResourceRequestProto, StringLocalResourceMapProto,
    StringStringMapProto,
};
use super::{Result, YarnError};

/// Failed worker containers tolerated before the application fails (default: the number
/// of workers).
pub const MAX_FAILED_CONTAINERS_KEY: &str = "yarn.maximum-failed-containers";
/// Virtual cores per worker container (default: its slots).
pub const CONTAINER_VCORES_KEY: &str = "yarn.containers.vcores";
/// Memory of a worker container.
pub const TM_PROCESS_SIZE_KEY: &str = "taskmanager.memory.process.size";
pub const TM_PROCESS_SIZE_DEFAULT: &str = "1728m";
/// The worker binary and configuration file in the container's working directory.
pub const WORKER_BINARY: &str = "sluice-worker";
pub const CONF_FILE: &str = "sluice-conf.yaml";
/// The priority of worker requests (any fixed value: all requests are alike).
const PRIORITY: i32 = 1;
/// Lines of a container's diagnostics kept in a failure message.
const DIAGNOSTIC_LINES: usize = 3;

/// What every worker container looks like.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub count: usize,
    pub memory_mb: i64,
    pub vcores: i32,
    pub max_failed: usize,
    /// The master's control address the workers register with.
    pub master_host: String,
    pub master_port: u16,
    /// Files localized into each container (the worker binary, the configuration, the
    /// Hadoop site files).
    pub resources: Vec<StringLocalResourceMapProto>,
    pub environment: Vec<(String, String)>,
    /// More `key=value` settings for every worker (`-D`), such as the HA cluster id the
    /// ApplicationMaster defaulted to its application id. Values are shell-quoted.
    pub dynamic: Vec<String>,
}

impl WorkerSpec {
    /// `count` workers sized from `config`.
    pub fn from_config(config: &Config, count: usize) -> Result<WorkerSpec> {
        let bad = |key: &str, message: String| YarnError::Config {
            key: key.to_string(),
            message,
        };
        let size = config
            .get_raw(TM_PROCESS_SIZE_KEY)
            .unwrap_or(TM_PROCESS_SIZE_DEFAULT);
        let memory_mb = parse_memory(size)
            .map(|b| b.div_ceil(1 << 20) as i64)
            .ok_or_else(|| {
                bad(
                    TM_PROCESS_SIZE_KEY,
                    format!("'{size}' is not a memory size"),
                )
            })?;
        let vcores = match config.get_raw(CONTAINER_VCORES_KEY) {
            Some(v) => v
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(CONTAINER_VCORES_KEY, format!("'{v}' is not a count")))?,
            None => config.cluster.task_slots as i32,
        };
        let max_failed = match config.get_raw(MAX_FAILED_CONTAINERS_KEY) {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| bad(MAX_FAILED_CONTAINERS_KEY, format!("'{v}' is not a count")))?,
            None => count,
        };
        Ok(WorkerSpec {
            count,
            memory_mb,
            vcores,
            max_failed,
            master_host: config.cluster.rpc_address.clone(),
            master_port: config.cluster.rpc_port,
            resources: Vec::new(),
            environment: Vec::new(),
            dynamic: Vec::new(),
        })
    }

    /// The shell command starting the worker of `container_id`; its output goes to the
    /// container's log directory, its job processes' logs too (`SLUICE_LOG_DIR`), and it
    /// unpacks bundles under the container's local directories.
    pub fn command(&self, container_id: &str) -> String {
        let dynamic: String = self
            .dynamic
            .iter()
            .map(|kv| format!("-D '{}' ", kv.replace('\'', "'\\''")))
            .collect();
        format!(
            "SLUICE_LOG_DIR=<LOG_DIR> HADOOP_CONF_DIR=\"$PWD\" exec ./{WORKER_BINARY} \
             --config {CONF_FILE} -D jobmanager.rpc.address={} -D jobmanager.rpc.port={} \
             -D taskmanager.resource-id={container_id} -D \"taskmanager.tmp.dirs=$LOCAL_DIRS\" \
             {dynamic}1><LOG_DIR>/taskmanager.out 2><LOG_DIR>/taskmanager.err",
            self.master_host, self.master_port
        )
    }

    pub fn launch_context(&self, container_id: &str) -> ContainerLaunchContextProto {
        ContainerLaunchContextProto {
            local_resources: self.resources.clone(),
            environment: self
                .environment
                .iter()
                .map(|(k, v)| StringStringMapProto {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            command: vec![self.command(container_id)],
            ..Default::default()
        }
    }

    fn request(&self, n: usize) -> ResourceRequestProto {
        ResourceRequestProto {
            priority: Some(PriorityProto {
                priority: Some(PRIORITY),
            }),
            resource_name: Some("*".into()),
            capability: Some(ResourceProto {
                memory: Some(self.memory_mb),
                virtual_cores: Some(self.vcores),
            }),
            num_containers: Some(n as i32),
            relax_locality: Some(true),
            ..Default::default()
        }
    }
}

/// What a heartbeat found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolState {
    /// All is well (some containers may still be on their way).
    Running,
    /// More containers failed than allowed: the application fails with this diagnostic.
    TooManyFailures(String),
    /// The ResourceManager ordered the ApplicationMaster to shut down.
    Shutdown,
}

/// The worker containers of one application attempt.
pub struct WorkerPool {
    spec: WorkerSpec,
    nm: NmClient,
    running: BTreeMap<String, ContainerProto>,
    /// Running containers a previous attempt started (their workers re-register with this
    /// one); one that ends is replaced without counting as a failure of this attempt, as it
    /// may have ended with the previous attempt.
    adopted: BTreeSet<String>,
    /// Containers asked for and not yet allocated.
    outstanding: usize,
    to_release: Vec<ContainerIdProto>,
    /// Whether the ResourceManager's count of outstanding containers differs from ours.
    /// The scheduler lowers its count itself as it allocates, so the count is sent only when
    /// it changed otherwise: re-sending it while allocations are on their way would ask for
    /// them again.
    ask_changed: bool,
    failed: usize,
    last_failure: Option<String>,
}

impl WorkerPool {
    pub fn new(spec: WorkerSpec) -> WorkerPool {
        WorkerPool {
            outstanding: spec.count,
            spec,
            nm: NmClient::default(),
            running: BTreeMap::new(),
            adopted: BTreeSet::new(),
            to_release: Vec::new(),
            ask_changed: true,
            failed: 0,
            last_failure: None,
        }
    }

    /// Containers started and not ended.
    pub fn running(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    pub fn failed(&self) -> usize {
        self.failed
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    pub fn add_nm_tokens(&mut self, tokens: &[NmTokenProto]) {
        self.nm.add_tokens(tokens);
    }

    /// Takes over the containers of previous attempts that YARN kept
    /// (`containers_from_previous_attempts`): they count as running workers, so fewer are
    /// asked for; any beyond the wanted count are released.
    pub fn adopt(&mut self, containers: Vec<ContainerProto>) {
        for c in containers {
            let name = container_name(&c);
            if self.outstanding == 0 {
                eprintln!("sluice-am: releasing surplus container {name} of a previous attempt");
                self.to_release.extend(c.id);
                continue;
            }
            self.outstanding -= 1;
            self.ask_changed = true;
            eprintln!(
                "sluice-am: keeping worker container {name} on {} from a previous attempt",
                node_addr(c.node_id.as_ref())
            );
            self.adopted.insert(name.clone());
            self.running.insert(name, c);
        }
    }

    /// Gives the containers back with the next heartbeat (previous attempts' containers whose
    /// workers cannot find this attempt).
    pub fn release(&mut self, containers: Vec<ContainerProto>) {
        for c in containers {
            eprintln!(
                "sluice-am: releasing container {} of a previous attempt",
                container_name(&c)
            );
            self.to_release.extend(c.id);
        }
    }

    /// One heartbeat: sends the outstanding count when it changed (or after a resync),
    /// starts allocated containers, notes ended ones and asks for their replacements.
    ///
    /// Cancellation: safe between heartbeats; cancelled midway, a container being started
    /// may be neither running nor released (YARN reclaims it when it is never started).
    /// A lost ResourceManager connection is returned as the error after the client's
    /// retries; the pool's state is unchanged then and the next heartbeat may go on.
    pub async fn heartbeat(&mut self, rm: &mut AmRmClient, progress: f32) -> Result<PoolState> {
        let ask = if self.ask_changed {
            vec![self.spec.request(self.outstanding)]
        } else {
            Vec::new()
        };
        let release = std::mem::take(&mut self.to_release);
        let resp = match rm.allocate(ask, release.clone(), progress).await {
            Ok(r) => r,
            Err(e) => {
                self.to_release = release;
                return Err(e);
            }
        };
        self.ask_changed = false;
        self.nm.add_tokens(&resp.nm_tokens);
        match resp
            .a_m_command
            .and_then(|c| AmCommandProto::try_from(c).ok())
        {
            Some(AmCommandProto::AmShutdown) => return Ok(PoolState::Shutdown),
            // A restarted ResourceManager forgot the outstanding requests.
            Some(AmCommandProto::AmResync) => self.ask_changed = true,
            None => {}
        }
        for c in resp.allocated_containers {
            let name = container_name(&c);
            if self.outstanding == 0 {
                eprintln!("sluice-am: releasing surplus container {name}");
                self.to_release.extend(c.id);
                continue;
            }
            self.outstanding -= 1;
            let launch = self.spec.launch_context(&name);
            match self.nm.start(&c, launch).await {
                Ok(()) => {
                    eprintln!(
                        "sluice-am: started worker container {name} on {}",
                        node_addr(c.node_id.as_ref())
                    );
                    self.running.insert(name, c);
                }
                Err(e) => {
                    self.to_release.extend(c.id);
                    self.record_failure(format!("launching container {name} failed: {e}"));
                }
            }
        }
        for s in resp.completed_container_statuses {
            let name = s.container_id.as_ref().map(super::ids::container_id);
            let Some(c) = name.as_ref().and_then(|n| self.running.remove(n)) else {
                continue;
            };
            if name.as_ref().is_some_and(|n| self.adopted.remove(n)) {
                eprintln!(
                    "sluice-am: container {} of a previous attempt ended (exit status {}); \
                     requesting a replacement",
                    container_name(&c),
                    s.exit_status()
                );
                self.outstanding += 1;
                self.ask_changed = true;
                continue;
            }
            let diagnostics: Vec<&str> = s
                .diagnostics()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(DIAGNOSTIC_LINES)
                .collect();
            self.record_failure(format!(
                "container {} on {} ended with exit status {}: {}",
                container_name(&c),
                node_addr(c.node_id.as_ref()),
                s.exit_status(),
                diagnostics.join(" / ")
            ));
        }
        if self.failed > self.spec.max_failed {
            return Ok(PoolState::TooManyFailures(format!(
                "{} worker containers failed, more than {MAX_FAILED_CONTAINERS_KEY}={}; the last: {}",
                self.failed,
                self.spec.max_failed,
                self.last_failure.as_deref().unwrap_or_default()
            )));
        }
        Ok(PoolState::Running)
    }

    /// A worker container failed: counts it and asks for a replacement.
    fn record_failure(&mut self, what: String) {
        self.failed += 1;
        self.outstanding += 1;
        self.ask_changed = true;
        eprintln!(
            "sluice-am: {what} (failure {} of at most {}); requesting a replacement",
            self.failed, self.spec.max_failed
        );
        self.last_failure = Some(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_containers_are_sized_from_the_configuration() {
        let mut config = Config::default();
        config.set("taskmanager.numberOfTaskSlots", "2").unwrap();
        config.set(TM_PROCESS_SIZE_KEY, "1g").unwrap();
        config.cluster.rpc_address = "nm-host".into();
        config.cluster.rpc_port = 4242;
        let spec = WorkerSpec::from_config(&config, 3).unwrap();
        assert_eq!((spec.memory_mb, spec.vcores, spec.max_failed), (1024, 2, 3));
        config.set(CONTAINER_VCORES_KEY, "1").unwrap();
        config.set(MAX_FAILED_CONTAINERS_KEY, "7").unwrap();
        let mut spec = WorkerSpec::from_config(&config, 3).unwrap();
        assert_eq!((spec.vcores, spec.max_failed), (1, 7));
        let cmd = spec.command("container_1_0001_01_000002");
        assert!(cmd.contains("-D jobmanager.rpc.address=nm-host -D jobmanager.rpc.port=4242"));
        assert!(cmd.contains("taskmanager.resource-id=container_1_0001_01_000002"));
        assert!(cmd.ends_with("2><LOG_DIR>/taskmanager.err"));
        spec.dynamic = vec!["high-availability.cluster-id=it's".into()];
        let cmd = spec.command("c");
        assert!(
            cmd.contains("-D 'high-availability.cluster-id=it'\\''s' 1>"),
            "{cmd}"
        );
        config.set(TM_PROCESS_SIZE_KEY, "lots").unwrap();
        let e = WorkerSpec::from_config(&config, 3).unwrap_err().to_string();
        assert!(e.contains(TM_PROCESS_SIZE_KEY), "{e}");
    }

    fn container(app_attempt: i32, seq: i64) -> ContainerProto {
        let id = crate::yarn::ids::parse_container_id(&format!(
            "container_1700000000000_0001_{app_attempt:02}_{seq:06}"
        ));
        ContainerProto {
            id,
            ..Default::default()
        }
    }

    #[test]
    fn containers_of_a_previous_attempt_count_as_workers_and_surplus_ones_are_released() {
        let mut config = Config::default();
        config.cluster.rpc_address = "nm-host".into();
        let spec = WorkerSpec::from_config(&config, 2).unwrap();
        let mut pool = WorkerPool::new(spec);
        pool.adopt(vec![container(1, 2), container(1, 3), container(1, 4)]);
        assert_eq!(
            pool.running(),
            [
                "container_1700000000000_0001_01_000002",
                "container_1700000000000_0001_01_000003"
            ]
        );
        assert_eq!(pool.outstanding(), 0);
        assert_eq!(pool.to_release.len(), 1);
        pool.release(vec![container(1, 5)]);
        assert_eq!(pool.to_release.len(), 2);
    }
}
