//! The Hadoop configuration the ApplicationMaster needs: the ResourceManager's scheduler
//! address and the default file system, from `yarn-site.xml` / `core-site.xml` in
//! `HADOOP_CONF_DIR`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Result, YarnError};

/// Where the ResourceManager serves the ApplicationMaster protocol.
pub const SCHEDULER_ADDRESS_KEY: &str = "yarn.resourcemanager.scheduler.address";
/// Hadoop's default for [`SCHEDULER_ADDRESS_KEY`].
pub const SCHEDULER_ADDRESS_DEFAULT: &str = "0.0.0.0:8030";
/// The ResourceManager's host, from which the default addresses derive.
pub const RM_HOSTNAME_KEY: &str = "yarn.resourcemanager.hostname";
pub const DEFAULT_FS_KEY: &str = "fs.defaultFS";
pub const CONF_DIR_ENV: &str = "HADOOP_CONF_DIR";
const FILES: [&str; 3] = ["core-site.xml", "hdfs-site.xml", "yarn-site.xml"];

/// The properties of the site files of one directory.
#[derive(Debug, Clone, Default)]
pub struct HadoopConf {
    pub dir: PathBuf,
    props: HashMap<String, String>,
}

impl HadoopConf {
    /// Reads the site files of `dir` that exist (a later file's value wins).
    pub fn load(dir: &Path) -> Result<HadoopConf> {
        let mut props = HashMap::new();
        for f in FILES {
            let path = dir.join(f);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            parse_into(&text, &mut props).map_err(|message| YarnError::Config {
                key: path.display().to_string(),
                message,
            })?;
        }
        Ok(HadoopConf {
            dir: dir.to_path_buf(),
            props,
        })
    }

    /// `$HADOOP_CONF_DIR`, else the working directory (where YARN put the localized files).
    pub fn from_env() -> Result<HadoopConf> {
        let dir = std::env::var_os(CONF_DIR_ENV)
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("."));
        HadoopConf::load(&dir)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.props.get(key).map(String::as_str)
    }

    /// `yarn.resourcemanager.scheduler.address`, with `${yarn.resourcemanager.hostname}`
    /// substituted and a wildcard host replaced by the RM host or 127.0.0.1.
    pub fn scheduler_address(&self) -> String {
        let raw = self
            .get(SCHEDULER_ADDRESS_KEY)
            .unwrap_or(SCHEDULER_ADDRESS_DEFAULT);
        let host = self.get(RM_HOSTNAME_KEY).unwrap_or("0.0.0.0");
        let addr = raw.replace(&format!("${{{RM_HOSTNAME_KEY}}}"), host);
        match addr.strip_prefix("0.0.0.0:") {
            Some(port) if host != "0.0.0.0" => format!("{host}:{port}"),
            Some(port) => format!("127.0.0.1:{port}"),
            None => addr,
        }
    }
}

fn parse_into(text: &str, props: &mut HashMap<String, String>) -> std::result::Result<(), String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
    for p in doc.descendants().filter(|n| n.has_tag_name("property")) {
        let child = |name: &str| {
            p.children()
                .find(|c| c.has_tag_name(name))
                .and_then(|c| c.text())
                .map(|t| t.trim().to_string())
        };
        if let (Some(k), Some(v)) = (child("name"), child("value")) {
            props.insert(k, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_address_from_yarn_site() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("yarn-site.xml"),
            "<configuration><property><name>yarn.resourcemanager.scheduler.address</name>\
             <value> 127.0.0.1:45151 </value></property></configuration>",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("core-site.xml"),
            "<?xml version=\"1.0\"?><configuration><property><name>fs.defaultFS</name>\
             <value>hdfs://127.0.0.1:9000</value></property></configuration>",
        )
        .unwrap();
        let c = HadoopConf::load(dir.path()).unwrap();
        assert_eq!(c.scheduler_address(), "127.0.0.1:45151");
        assert_eq!(c.get(DEFAULT_FS_KEY), Some("hdfs://127.0.0.1:9000"));
        let empty = HadoopConf::default();
        assert_eq!(empty.scheduler_address(), "127.0.0.1:8030");
    }
}
