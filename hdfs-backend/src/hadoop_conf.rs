//! The few keys of the Hadoop configuration (`core-site.xml`, `hdfs-site.xml`) this crate needs
//! itself: `fs.defaultFS`, the NameNodes of a nameservice (for error messages) and the client
//! keys of [`crate::hdfs::keys`]. `hdfs-native` reads the same files for everything else.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What `fs.defaultFS` is when a Hadoop config exists but does not set it (as in Hadoop's
/// `core-default.xml`).
const LOCAL_DEFAULT_FS: &str = "file:///";
pub(crate) const DEFAULT_FS: &str = "fs.defaultFS";

/// A Hadoop configuration directory, as the Hadoop tools find it, and its key/value pairs.
#[derive(Debug, Clone, Default)]
pub(crate) struct HadoopConf {
    /// `None`: no Hadoop configuration (neither `HADOOP_CONF_DIR` nor `HADOOP_HOME`).
    pub(crate) dir: Option<PathBuf>,
    map: HashMap<String, String>,
}

impl HadoopConf {
    /// The configuration of `$HADOOP_CONF_DIR`, else `$HADOOP_HOME/etc/hadoop`; none if neither
    /// names an existing directory.
    pub(crate) fn load() -> Self {
        Self::from_dir(locate(
            std::env::var_os("HADOOP_CONF_DIR"),
            std::env::var_os("HADOOP_HOME"),
        ))
    }

    /// The configuration in `dir` (`None`: no Hadoop configuration at all). Missing files are
    /// empty; a file that is not XML is skipped here (`hdfs-native` reports it when it builds a
    /// client).
    pub(crate) fn from_dir(dir: Option<PathBuf>) -> Self {
        let mut map = HashMap::new();
        if let Some(d) = &dir {
            for f in ["core-site.xml", "hdfs-site.xml"] {
                read_properties(&d.join(f), &mut map);
            }
        }
        HadoopConf { dir, map }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// `fs.defaultFS` when there is a Hadoop configuration (`file:///` if it does not set the
    /// key, as in Hadoop); `None` without one.
    pub(crate) fn default_fs(&self) -> Option<&str> {
        self.dir.as_ref()?;
        Some(self.get(DEFAULT_FS).unwrap_or(LOCAL_DEFAULT_FS))
    }

    /// The authority of `fs.defaultFS` when it is a `scheme://` URL.
    pub(crate) fn default_authority(&self, scheme: &str) -> Option<String> {
        let fs = self.get(DEFAULT_FS)?;
        let (s, rest) = fs.split_once("://")?;
        let auth = rest.split('/').next()?;
        (s.eq_ignore_ascii_case(scheme) && !auth.is_empty()).then(|| auth.to_string())
    }

    /// `host:port`, or the RPC addresses of a nameservice's NameNodes.
    pub(crate) fn namenodes(&self, scheme: &str, authority: &str) -> String {
        if scheme == "viewfs" {
            return format!("of ViewFS cluster {authority} (see its mount table)");
        }
        let Some(ids) = self.get(&format!("dfs.ha.namenodes.{authority}")) else {
            return authority.to_string();
        };
        let addrs: Vec<&str> = ids
            .split(',')
            .filter_map(|id| {
                self.get(&format!(
                    "dfs.namenode.rpc-address.{authority}.{}",
                    id.trim()
                ))
            })
            .collect();
        format!("{authority} ({})", addrs.join(", "))
    }
}

/// `HADOOP_CONF_DIR`, else `HADOOP_HOME/etc/hadoop`, if that is a directory.
pub(crate) fn locate(conf_dir: Option<OsString>, hadoop_home: Option<OsString>) -> Option<PathBuf> {
    let dir = match conf_dir.filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(hadoop_home.filter(|h| !h.is_empty())?).join("etc/hadoop"),
    };
    dir.is_dir().then_some(dir)
}

fn read_properties(file: &Path, map: &mut HashMap<String, String>) {
    let Ok(text) = std::fs::read_to_string(file) else {
        return;
    };
    let Ok(doc) = roxmltree::Document::parse(&text) else {
        return;
    };
    for p in doc.descendants().filter(|n| n.has_tag_name("property")) {
        let child = |tag: &str| {
            p.children()
                .find(|c| c.has_tag_name(tag))
                .and_then(|c| c.text())
                .map(|t| t.trim().to_string())
        };
        if let (Some(k), Some(v)) = (child("name"), child("value")) {
            map.insert(k, v);
        }
    }
}

/// Test helper: a Hadoop configuration directory with a `core-site.xml` and an
/// `hdfs-site.xml` holding the given properties.
#[cfg(test)]
pub(crate) fn write_conf_dir(
    dir: &Path,
    core: &[(&str, &str)],
    hdfs: &[(&str, &str)],
) -> HadoopConf {
    for (file, props) in [("core-site.xml", core), ("hdfs-site.xml", hdfs)] {
        let mut xml = String::from("<?xml version=\"1.0\"?>\n<configuration>\n");
        for (k, v) in props {
            xml.push_str(&format!(
                "  <property><name>{k}</name><value>{v}</value></property>\n"
            ));
        }
        xml.push_str("</configuration>\n");
        std::fs::write(dir.join(file), xml).unwrap();
    }
    HadoopConf::from_dir(Some(dir.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_the_config_dir_like_hadoop() {
        let conf = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join("etc/hadoop")).unwrap();
        let c = Some(conf.path().as_os_str().to_owned());
        let h = Some(home.path().as_os_str().to_owned());
        assert_eq!(locate(c.clone(), h.clone()).as_deref(), Some(conf.path()));
        assert_eq!(
            locate(None, h.clone()),
            Some(home.path().join("etc/hadoop"))
        );
        assert_eq!(
            locate(Some(OsString::new()), h),
            Some(home.path().join("etc/hadoop"))
        );
        assert_eq!(locate(None, None), None);
        let missing = conf.path().join("missing").into_os_string();
        assert_eq!(locate(Some(missing), None), None);
    }

    #[test]
    fn reads_default_fs_and_namenodes() {
        let d = tempfile::tempdir().unwrap();
        let conf = write_conf_dir(
            d.path(),
            &[("fs.defaultFS", "hdfs://ns1")],
            &[
                ("dfs.ha.namenodes.ns1", "nn1, nn2"),
                ("dfs.namenode.rpc-address.ns1.nn1", "a:8020"),
                ("dfs.namenode.rpc-address.ns1.nn2", "b:8020"),
            ],
        );
        assert_eq!(conf.default_fs(), Some("hdfs://ns1"));
        assert_eq!(conf.default_authority("hdfs").as_deref(), Some("ns1"));
        assert_eq!(conf.default_authority("viewfs"), None);
        assert_eq!(conf.namenodes("hdfs", "ns1"), "ns1 (a:8020, b:8020)");
        assert_eq!(conf.namenodes("hdfs", "h:1"), "h:1");

        let empty = write_conf_dir(d.path(), &[], &[]);
        assert_eq!(empty.default_fs(), Some("file:///"), "Hadoop's default");
        assert_eq!(HadoopConf::from_dir(None).default_fs(), None);
    }
}
