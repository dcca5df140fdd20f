//! What is submitted: the effective configuration (`sluice-conf.yaml`) and the application
//! submission context of the RM REST API, with the ApplicationMaster's container spec.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use sluice_core::Config;
use sluice_core::config::keys::HA_TYPE;
use sluice_core::config::parse_memory;

use crate::error::{Error, Result};
use crate::rm::APPLICATION_TYPE;
use crate::staging::LocalResource;

/// Flink's key names.
pub mod keys {
    pub const JM_MEMORY: &str = "jobmanager.memory.process.size";
    pub const TM_MEMORY: &str = "taskmanager.memory.process.size";
    pub const TASK_SLOTS: &str = "taskmanager.numberOfTaskSlots";
    pub const CONTAINER_VCORES: &str = "yarn.containers.vcores";
    pub const APPLICATION_ATTEMPTS: &str = "yarn.application-attempts";
    pub const QUEUE: &str = "yarn.application.queue";
    pub const PARALLELISM: &str = "parallelism.default";
    pub const SAVEPOINT_PATH: &str = "execution.savepoint.path";
    pub const IGNORE_UNCLAIMED: &str = "execution.savepoint.ignore-unclaimed-state";
    pub const PIPELINE_NAME: &str = "pipeline.name";
    pub const HA_CLUSTER_ID: &str = "high-availability.cluster-id";
}

/// Flink's defaults.
pub const DEFAULT_JM_MEMORY: &str = "1600m";
pub const DEFAULT_TM_MEMORY: &str = "1728m";
pub const DEFAULT_ATTEMPTS: u32 = 2;
pub const DEFAULT_QUEUE: &str = "default";

/// The configuration file name in the staging directory and the containers.
pub const CONF_FILE: &str = "sluice-conf.yaml";

/// The effective configuration: the site file, then `-D`s, then the options that stand for
/// keys. Every value is checked as the job would check it.
#[derive(Debug, Clone)]
pub struct EffectiveConfig {
    pub map: BTreeMap<String, String>,
}

/// What the command line sets besides `-D`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub dynamic: Vec<String>,
    pub parallelism: Option<usize>,
    pub savepoint: Option<String>,
    pub allow_non_restored: bool,
    pub name: Option<String>,
    pub queue: Option<String>,
}

impl EffectiveConfig {
    pub fn build(file: Option<&Path>, o: &Overrides) -> Result<Self> {
        let mut overrides = o.dynamic.clone();
        let mut set = |k: &str, v: &str| overrides.push(format!("{k}={v}"));
        if let Some(p) = o.parallelism {
            set(keys::PARALLELISM, &p.to_string());
        }
        if let Some(s) = &o.savepoint {
            set(keys::SAVEPOINT_PATH, s);
        }
        if o.allow_non_restored {
            set(keys::IGNORE_UNCLAIMED, "true");
        }
        if let Some(n) = &o.name {
            set(keys::PIPELINE_NAME, n);
        }
        if let Some(q) = &o.queue {
            set(keys::QUEUE, q);
        }
        let config = Config::load(file, &overrides).map_err(|e| Error::Config(e.to_string()))?;
        let c = EffectiveConfig {
            map: config.explicit().clone(),
        };
        // Check now what is read later, so bad values fail before anything is uploaded.
        c.memory_mb(keys::JM_MEMORY, DEFAULT_JM_MEMORY)?;
        c.memory_mb(keys::TM_MEMORY, DEFAULT_TM_MEMORY)?;
        c.number(keys::APPLICATION_ATTEMPTS, DEFAULT_ATTEMPTS as u64)?;
        c.tm_vcores()?;
        config.ha.check().map_err(Error::Config)?;
        Ok(c)
    }

    /// With ZooKeeper high availability, `high-availability.cluster-id` defaults to the
    /// application id, as on Flink's YARN deployments: the ApplicationMaster's attempts and
    /// the workers then share the application's nodes in ZooKeeper, and no other application
    /// does.
    pub fn default_cluster_id(&mut self, app_id: &str) {
        // `high-availability` is the key's older name, which the configuration still reads.
        let ha = [HA_TYPE, "high-availability"].iter().any(|k| {
            self.get(k)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("zookeeper"))
        });
        if ha {
            self.map
                .entry(keys::HA_CLUSTER_ID.into())
                .or_insert_with(|| app_id.to_string());
        }
    }

    /// `pipeline.name` unless `--name` or the configuration set it: the bundle's name.
    pub fn default_name(&mut self, bundle_name: &str) {
        self.map
            .entry(keys::PIPELINE_NAME.into())
            .or_insert_with(|| bundle_name.to_string());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// A memory size in MB, rounded up (YARN allocates in MB).
    pub fn memory_mb(&self, key: &str, default: &str) -> Result<u64> {
        let v = self.get(key).unwrap_or(default);
        let bytes = parse_memory(v).ok_or_else(|| {
            Error::Config(format!("{key}: '{v}' is not a memory size such as 1600m"))
        })?;
        Ok(bytes.div_ceil(1 << 20))
    }

    fn number(&self, key: &str, default: u64) -> Result<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::Config(format!("{key}: '{v}' is not a positive integer"))),
        }
    }

    pub fn attempts(&self) -> u64 {
        self.number(keys::APPLICATION_ATTEMPTS, DEFAULT_ATTEMPTS as u64)
            .unwrap_or(DEFAULT_ATTEMPTS as u64)
    }

    /// vcores of a worker container: `yarn.containers.vcores`, default the slots per worker.
    pub fn tm_vcores(&self) -> Result<u64> {
        let slots = self.number(keys::TASK_SLOTS, 1)?;
        self.number(keys::CONTAINER_VCORES, slots)
    }

    pub fn queue(&self) -> &str {
        self.get(keys::QUEUE).unwrap_or(DEFAULT_QUEUE)
    }

    pub fn name(&self) -> &str {
        self.get(keys::PIPELINE_NAME).unwrap_or("sluice")
    }

    /// Flat YAML, one `key: value` per line; values that YAML would read differently are
    /// double-quoted (a JSON string is a valid YAML double-quoted scalar).
    pub fn to_yaml(&self) -> String {
        self.map
            .iter()
            .map(|(k, v)| {
                let plain = !v.is_empty()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._/-+@".contains(c))
                    && !v.starts_with(['-', '@']);
                if plain {
                    format!("{k}: {v}\n")
                } else {
                    format!("{k}: {}\n", Value::String(v.clone()))
                }
            })
            .collect()
    }
}

/// The environment values are written into the NodeManager's launch script as
/// `export KEY="value"`, so `"`, `\`, `$` and `` ` `` are escaped to arrive as given.
pub fn shell_env_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// glibc's mmap threshold for the AM. The master allocates and frees large buffers in bursts
/// (a bundle read to launch a worker, REST documents). By default glibc raises its threshold
/// after the first such free and keeps later ones in the heap, which grew the AM's peak RSS
/// from under 35 MB to over 60 MB in the worker-replacement test. A fixed threshold returns
/// them to the system at once.
pub const AM_MALLOC_MMAP_THRESHOLD: &str = "MALLOC_MMAP_THRESHOLD_=262144";

/// The AM's command line (the contract with `sluice-am --yarn`).
pub fn am_command() -> String {
    format!(
        "{AM_MALLOC_MMAP_THRESHOLD} HADOOP_CONF_DIR=\"$PWD\" exec ./sluice-am --yarn \
         -c {CONF_FILE} 1><LOG_DIR>/jobmanager.out 2><LOG_DIR>/jobmanager.err"
    )
}

/// Everything the submission context holds.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub app_id: &'a str,
    pub name: &'a str,
    pub queue: &'a str,
    pub memory_mb: u64,
    pub vcores: u64,
    pub attempts: u64,
    pub resources: &'a [LocalResource],
    pub env: &'a [(String, String)],
    pub command: String,
    pub application_type: &'a str,
}

impl Submission<'_> {
    /// The JSON body of `POST /ws/v1/cluster/apps`.
    pub fn to_json(&self) -> Value {
        let resources: Vec<Value> = self
            .resources
            .iter()
            .map(|r| {
                json!({"key": r.key, "value": {
                    "resource": r.url, "type": "FILE", "visibility": "APPLICATION",
                    "size": r.size, "timestamp": r.timestamp}})
            })
            .collect();
        let env: Vec<Value> = self
            .env
            .iter()
            .map(|(k, v)| json!({"key": k, "value": shell_env_value(v)}))
            .collect();
        json!({
            "application-id": self.app_id,
            "application-name": self.name,
            "application-type": self.application_type,
            "queue": self.queue,
            "max-app-attempts": self.attempts,
            // A new ApplicationMaster attempt takes over the running worker containers (with
            // ZooKeeper HA their workers re-register with it; otherwise it releases them).
            "keep-containers-across-application-attempts": true,
            "resource": {"memory": self.memory_mb, "vCores": self.vcores},
            "am-container-spec": {
                "local-resources": {"entry": resources},
                "environment": {"entry": env},
                "commands": {"command": self.command},
            },
        })
    }
}

/// The submission of a Sluice AM.
pub fn sluice_submission<'a>(
    app_id: &'a str,
    config: &'a EffectiveConfig,
    resources: &'a [LocalResource],
    env: &'a [(String, String)],
) -> Result<Submission<'a>> {
    Ok(Submission {
        app_id,
        name: config.name(),
        queue: config.queue(),
        memory_mb: config.memory_mb(keys::JM_MEMORY, DEFAULT_JM_MEMORY)?,
        vcores: 1,
        attempts: config.attempts(),
        resources,
        env,
        command: am_command(),
        application_type: APPLICATION_TYPE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_flink_keys_and_bad_values_fail_early() {
        let o = Overrides {
            dynamic: vec!["jobmanager.memory.process.size=1g".into()],
            parallelism: Some(4),
            savepoint: Some("hdfs:///sp/savepoint-1".into()),
            allow_non_restored: true,
            name: None,
            queue: Some("etl".into()),
        };
        let mut c = EffectiveConfig::build(None, &o).unwrap();
        c.default_name("wordcount");
        assert_eq!(c.get(keys::PARALLELISM), Some("4"));
        assert_eq!(c.get(keys::SAVEPOINT_PATH), Some("hdfs:///sp/savepoint-1"));
        assert_eq!(c.get(keys::IGNORE_UNCLAIMED), Some("true"));
        assert_eq!(c.name(), "wordcount");
        assert_eq!(c.queue(), "etl");
        assert_eq!(
            c.memory_mb(keys::JM_MEMORY, DEFAULT_JM_MEMORY).unwrap(),
            1024
        );
        assert_eq!(c.attempts(), 2);
        let yaml = c.to_yaml();
        assert!(yaml.contains("parallelism.default: 4\n"), "{yaml}");
        assert!(
            yaml.contains("execution.savepoint.path: \"hdfs:///sp/savepoint-1\"\n"),
            "{yaml}"
        );

        let bad = Overrides {
            dynamic: vec!["jobmanager.memory.process.size=lots".into()],
            ..Default::default()
        };
        let e = EffectiveConfig::build(None, &bad).unwrap_err().to_string();
        assert!(
            e.contains("jobmanager.memory.process.size") && e.contains("lots"),
            "{e}"
        );
    }

    #[test]
    fn with_zookeeper_ha_the_cluster_id_defaults_to_the_application_id() {
        let mut plain = EffectiveConfig::build(None, &Overrides::default()).unwrap();
        plain.default_cluster_id("application_1_0007");
        assert_eq!(plain.get(keys::HA_CLUSTER_ID), None);
        let ha = |extra: &[&str]| Overrides {
            dynamic: [
                "high-availability.type=zookeeper",
                "high-availability.zookeeper.quorum=127.0.0.1:2181",
                "high-availability.storageDir=hdfs:///ha",
            ]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect(),
            ..Default::default()
        };
        let mut c = EffectiveConfig::build(None, &ha(&[])).unwrap();
        c.default_cluster_id("application_1_0007");
        assert_eq!(c.get(keys::HA_CLUSTER_ID), Some("application_1_0007"));
        assert!(
            c.to_yaml()
                .contains("high-availability.cluster-id: application_1_0007\n")
        );
        let mut c =
            EffectiveConfig::build(None, &ha(&["high-availability.cluster-id=mine"])).unwrap();
        c.default_cluster_id("application_1_0007");
        assert_eq!(c.get(keys::HA_CLUSTER_ID), Some("mine"));
        let missing = Overrides {
            dynamic: vec!["high-availability.type=zookeeper".into()],
            ..Default::default()
        };
        let e = EffectiveConfig::build(None, &missing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("high-availability.zookeeper.quorum"), "{e}");
    }

    #[test]
    fn env_values_survive_the_launch_script_quoting() {
        assert_eq!(
            shell_env_value(r#"["a $b","c\"d`e`"]"#),
            r#"[\"a \$b\",\"c\\\"d\`e\`\"]"#
        );
    }

    #[test]
    fn the_submission_has_the_am_container_spec() {
        let mut c = EffectiveConfig::build(None, &Overrides::default()).unwrap();
        c.default_name("wc");
        let res = [LocalResource {
            key: "job.bundle".into(),
            url: "hdfs://nn:1/user/u/.sluice/a/job.bundle".into(),
            size: 5,
            timestamp: 7,
        }];
        let env = [("SLUICE_JOB_ARGS".to_string(), "[]".to_string())];
        let v = sluice_submission("application_1_0001", &c, &res, &env)
            .unwrap()
            .to_json();
        assert_eq!(v["application-type"], "Sluice");
        assert_eq!(v["max-app-attempts"], 2);
        assert_eq!(v["keep-containers-across-application-attempts"], true);
        assert_eq!(v["resource"]["memory"], 1600);
        assert_eq!(v["queue"], "default");
        let r = &v["am-container-spec"]["local-resources"]["entry"][0];
        assert_eq!(r["key"], "job.bundle");
        assert_eq!(r["value"]["size"], 5);
        assert_eq!(r["value"]["timestamp"], 7);
        assert_eq!(r["value"]["visibility"], "APPLICATION");
        let cmd = v["am-container-spec"]["commands"]["command"]
            .as_str()
            .unwrap();
        assert!(
            cmd.contains("./sluice-am --yarn -c sluice-conf.yaml"),
            "{cmd}"
        );
    }
}
