//! The client's Hadoop configuration, found as the Hadoop tools find it: `core-site.xml` and
//! `hdfs-site.xml` in `$HADOOP_CONF_DIR` (else `$HADOOP_HOME/etc/hadoop`), `yarn-site.xml` in
//! `$YARN_CONF_DIR` if it holds one, else in the same directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `fs.defaultFS`: where the staging directory lives.
pub const DEFAULT_FS: &str = "fs.defaultFS";
/// The ResourceManager's web app (and REST API), `host:port`.
pub const RM_WEBAPP_ADDRESS: &str = "yarn.resourcemanager.webapp.address";
/// The ResourceManager's host; the web address defaults to it with port 8088.
pub const RM_HOSTNAME: &str = "yarn.resourcemanager.hostname";
/// Whether the ResourceManager runs as an HA pair, and the ids of its members.
pub const RM_HA_ENABLED: &str = "yarn.resourcemanager.ha.enabled";
pub const RM_HA_IDS: &str = "yarn.resourcemanager.ha.rm-ids";
/// `HTTP_ONLY` (default) or `HTTPS_ONLY`; this client speaks plain HTTP only.
pub const HTTP_POLICY: &str = "yarn.http.policy";
/// Hadoop's default port of the ResourceManager's web app.
pub const DEFAULT_RM_WEBAPP_PORT: u16 = 8088;

/// The site files copied into the staging directory, in this order.
pub const SITE_FILES: [&str; 3] = ["core-site.xml", "hdfs-site.xml", "yarn-site.xml"];

/// The Hadoop configuration of the client.
#[derive(Debug, Clone)]
pub struct HadoopConf {
    /// `$HADOOP_CONF_DIR` (or its fallbacks): core-site.xml and hdfs-site.xml.
    pub dir: PathBuf,
    /// Where yarn-site.xml was read from.
    pub yarn_dir: PathBuf,
    map: HashMap<String, String>,
}

impl HadoopConf {
    /// The configuration named by the environment; [`Error::NoHadoopConf`] when neither
    /// `HADOOP_CONF_DIR`, `YARN_CONF_DIR` nor `HADOOP_HOME` names an existing directory.
    pub fn from_env() -> Result<HadoopConf> {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let hadoop = var("HADOOP_CONF_DIR")
            .or_else(|| var("HADOOP_HOME").map(|h| h.join("etc/hadoop")))
            .filter(|d| d.is_dir());
        let yarn = var("YARN_CONF_DIR").filter(|d| d.join("yarn-site.xml").is_file());
        match (hadoop, yarn) {
            (Some(dir), yarn) => {
                let yarn_dir = yarn.unwrap_or_else(|| dir.clone());
                Self::from_dirs(dir, yarn_dir)
            }
            (None, Some(yarn)) => Self::from_dirs(yarn.clone(), yarn),
            (None, None) => Err(Error::NoHadoopConf),
        }
    }

    /// The configuration in `dir` (and yarn-site.xml from `yarn_dir`); missing files are
    /// empty, a file that is not XML is an error naming it.
    pub fn from_dirs(dir: PathBuf, yarn_dir: PathBuf) -> Result<HadoopConf> {
        let mut map = HashMap::new();
        read_properties(&dir.join("core-site.xml"), &mut map)?;
        read_properties(&dir.join("hdfs-site.xml"), &mut map)?;
        read_properties(&yarn_dir.join("yarn-site.xml"), &mut map)?;
        Ok(HadoopConf { dir, yarn_dir, map })
    }

    /// A value with `${other.key}` and `${env.VAR}` references expanded, as Hadoop does.
    pub fn get(&self, key: &str) -> Option<String> {
        let mut v = self.map.get(key)?.clone();
        // A few rounds cover chained references; a cycle stops here instead of looping.
        for _ in 0..8 {
            let Some(start) = v.find("${") else { break };
            let Some(len) = v[start..].find('}') else {
                break;
            };
            let name = &v[start + 2..start + len];
            let value = match name.strip_prefix("env.") {
                Some(var) => std::env::var(var).unwrap_or_default(),
                None => self.map.get(name).cloned().unwrap_or_default(),
            };
            v.replace_range(start..start + len + 1, &value);
        }
        Some(v)
    }

    /// `fs.defaultFS`, which must be an `hdfs://` or `viewfs://` URL to stage files on.
    pub fn default_fs(&self) -> Result<String> {
        let fs = self.get(DEFAULT_FS).unwrap_or_else(|| "file:///".into());
        if fs.starts_with("hdfs://") || fs.starts_with("viewfs://") {
            Ok(fs.trim_end_matches('/').to_string())
        } else {
            Err(Error::Config(format!(
                "{DEFAULT_FS} is '{fs}' in {}: the staging directory needs HDFS (hdfs://...)",
                self.dir.join("core-site.xml").display()
            )))
        }
    }

    /// The `host:port` addresses of the ResourceManager's web app: one, or one per member of
    /// an HA pair (`yarn.resourcemanager.webapp.address.<id>`), in configured order.
    pub fn rm_webapp_addresses(&self) -> Result<Vec<String>> {
        if self
            .get(HTTP_POLICY)
            .is_some_and(|p| p.eq_ignore_ascii_case("HTTPS_ONLY"))
        {
            return Err(Error::Config(format!(
                "{HTTP_POLICY} is HTTPS_ONLY in {}: yarn-submit speaks HTTP only",
                self.yarn_site().display()
            )));
        }
        let ha = self
            .get(RM_HA_ENABLED)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let ids: Vec<String> = match self.get(RM_HA_IDS) {
            Some(ids) if ha => ids
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            _ => Vec::new(),
        };
        let address = |suffix: &str| {
            self.get(&format!("{RM_WEBAPP_ADDRESS}{suffix}"))
                .or_else(|| {
                    self.get(&format!("{RM_HOSTNAME}{suffix}"))
                        .map(|h| format!("{h}:{DEFAULT_RM_WEBAPP_PORT}"))
                })
                .unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_RM_WEBAPP_PORT}"))
        };
        if ids.is_empty() {
            Ok(vec![client_address(&address(""))])
        } else {
            Ok(ids
                .iter()
                .map(|id| client_address(&address(&format!(".{id}"))))
                .collect())
        }
    }

    /// The yarn-site.xml this configuration was read from (for error messages).
    pub fn yarn_site(&self) -> PathBuf {
        self.yarn_dir.join("yarn-site.xml")
    }

    /// The site files that exist, to ship to the containers.
    pub fn site_files(&self) -> Vec<PathBuf> {
        SITE_FILES
            .iter()
            .map(|f| {
                let dir = if *f == "yarn-site.xml" {
                    &self.yarn_dir
                } else {
                    &self.dir
                };
                dir.join(f)
            })
            .filter(|p| p.is_file())
            .collect()
    }
}

/// A server's wildcard bind address is reached on this host.
fn client_address(addr: &str) -> String {
    let addr = addr.trim().trim_start_matches("http://");
    match addr.strip_prefix("0.0.0.0:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.to_string(),
    }
}

fn read_properties(file: &Path, map: &mut HashMap<String, String>) -> Result<()> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::ConfFile {
                path: file.to_path_buf(),
                why: e.to_string(),
            });
        }
    };
    let doc = roxmltree::Document::parse(&text).map_err(|e| Error::ConfFile {
        path: file.to_path_buf(),
        why: format!("not XML: {e}"),
    })?;
    for p in doc.descendants().filter(|n| n.has_tag_name("property")) {
        let child = |tag: &str| {
            p.children()
                .find(|c| c.has_tag_name(tag))
                .map(|c| c.text().unwrap_or("").trim().to_string())
        };
        if let (Some(k), Some(v)) = (child("name"), child("value")) {
            map.insert(k, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, props: &[(&str, &str)]) {
        let mut xml = String::from("<?xml version=\"1.0\"?>\n<configuration>\n");
        for (k, v) in props {
            xml.push_str(&format!(
                "<property><name>{k}</name><value>{v}</value></property>\n"
            ));
        }
        xml.push_str("</configuration>\n");
        std::fs::write(dir.join(file), xml).unwrap();
    }

    #[test]
    fn reads_the_rm_address_with_hadoop_defaults_and_substitution() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        write(&dir, "core-site.xml", &[(DEFAULT_FS, "hdfs://nn:8020/")]);
        write(&dir, "yarn-site.xml", &[(RM_HOSTNAME, "rm1")]);
        let c = HadoopConf::from_dirs(dir.clone(), dir.clone()).unwrap();
        assert_eq!(c.default_fs().unwrap(), "hdfs://nn:8020");
        assert_eq!(c.rm_webapp_addresses().unwrap(), ["rm1:8088"]);

        write(
            &dir,
            "yarn-site.xml",
            &[
                (RM_HOSTNAME, "rmhost"),
                (RM_WEBAPP_ADDRESS, "${yarn.resourcemanager.hostname}:9999"),
            ],
        );
        let c = HadoopConf::from_dirs(dir.clone(), dir.clone()).unwrap();
        assert_eq!(c.rm_webapp_addresses().unwrap(), ["rmhost:9999"]);

        write(
            &dir,
            "yarn-site.xml",
            &[
                (RM_HA_ENABLED, "true"),
                (RM_HA_IDS, "a, b"),
                ("yarn.resourcemanager.webapp.address.a", "0.0.0.0:1"),
                ("yarn.resourcemanager.hostname.b", "h2"),
            ],
        );
        let c = HadoopConf::from_dirs(dir.clone(), dir.clone()).unwrap();
        assert_eq!(c.rm_webapp_addresses().unwrap(), ["127.0.0.1:1", "h2:8088"]);
        assert_eq!(c.site_files().len(), 2, "no hdfs-site.xml was written");
    }

    #[test]
    fn a_local_default_fs_or_broken_xml_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        write(&dir, "core-site.xml", &[]);
        let c = HadoopConf::from_dirs(dir.clone(), dir.clone()).unwrap();
        let e = c.default_fs().unwrap_err().to_string();
        assert!(e.contains("file:///") && e.contains("core-site.xml"), "{e}");

        std::fs::write(dir.join("hdfs-site.xml"), "<configuration>").unwrap();
        let e = HadoopConf::from_dirs(dir.clone(), dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hdfs-site.xml") && e.contains("not XML"), "{e}");
    }
}
