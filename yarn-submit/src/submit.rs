//! Submission in the order that keeps bad input cheap: local checks (Hadoop configuration,
//! bundle, binaries, configuration values), then the ResourceManager (reachable, queue,
//! container size), and only then the upload to the staging directory, which is removed
//! again if anything after it fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::hadoop_conf::HadoopConf;
use crate::rm::RmClient;
use crate::spec::{self, CONF_FILE, EffectiveConfig, Overrides, keys};
use crate::staging::{FILE_REPLICATION, FileLayout, LocalResource, Staging};

use sluice_core::config::parse_memory;
use sluice_hdfs_backend::hdfs::PASSED_THROUGH_PREFIXES;

/// Hadoop's client key for the block size of new files.
const BLOCK_SIZE: &str = "dfs.blocksize";

/// The binaries shipped with every application, found next to the `yarn-submit` executable.
pub const AM_BINARY: &str = "sluice-am";
pub const WORKER_BINARY: &str = "sluice-worker";
/// The bundle's name in the staging directory and the AM's working directory.
pub const BUNDLE_FILE: &str = "job.bundle";
/// Environment of the AM container.
pub const STAGING_DIR_ENV: &str = "SLUICE_STAGING_DIR";
pub const JOB_ARGS_ENV: &str = "SLUICE_JOB_ARGS";
/// Where yarn-submit looks for the binaries instead of its own directory, if set.
pub const BIN_DIR_ENV: &str = "SLUICE_BIN_DIR";

/// What to submit.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub bundle: PathBuf,
    pub overrides: Overrides,
    pub job_args: Vec<String>,
}

/// A submitted application.
pub struct Submitted {
    pub app_id: String,
    pub staging: Staging,
    pub rm: RmClient,
}

/// The user the application runs as: `$HADOOP_USER_NAME`, else `$USER`, else `sluice`.
pub fn user_name() -> String {
    ["HADOOP_USER_NAME", "USER"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "sluice".into())
}

/// Sluice's configuration file: `$SLUICE_CONF_DIR/sluice.yaml`, else `conf/sluice.yaml`.
fn site_config() -> Option<PathBuf> {
    let dir = std::env::var_os("SLUICE_CONF_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("conf"));
    Some(dir.join("sluice.yaml")).filter(|f| f.is_file())
}

fn bin_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Verifies the bundle (as the AM will) and returns its name.
fn bundle_name(bundle: &Path) -> Result<String> {
    if !bundle.is_file() {
        return Err(Error::Bundle(format!(
            "the bundle {} does not exist",
            bundle.display()
        )));
    }
    let tmp = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let opened = sluice_bundle::open_bundle(bundle, &tmp.path().join("b"))
        .map_err(|e| Error::Bundle(format!("{e:#}")))?;
    Ok(opened.manifest.name)
}

/// Checks, uploads and submits; progress goes to stderr.
pub async fn submit(opts: &SubmitOptions) -> Result<Submitted> {
    let started = Instant::now();
    let conf = HadoopConf::from_env()?;
    let user = user_name();
    // Verifying the bundle reads all of it: do it while the ResourceManager is asked.
    let bundle = opts.bundle.clone();
    let verified = tokio::task::spawn_blocking(move || bundle_name(&bundle));
    let bins = bin_dir()?;
    for b in [AM_BINARY, WORKER_BINARY] {
        if !bins.join(b).is_file() {
            return Err(Error::Usage(format!(
                "{} is missing: yarn-submit ships the {b} binary found next to it (or in ${BIN_DIR_ENV})",
                bins.join(b).display()
            )));
        }
    }
    let site = site_config();
    let mut config = EffectiveConfig::build(site.as_deref(), &opts.overrides)?;
    let staging_fs = conf.default_fs()?;

    let rm = RmClient::new(&conf, &user)?;
    rm.cluster_info().await?;
    let queue = config.queue().to_string();
    let queues = rm.leaf_queues().await?;
    if !queues.contains(&queue) {
        return Err(Error::NoSuchQueue {
            queue,
            known: queues.join(", "),
        });
    }
    let app = rm.new_application().await?;
    check_resources(&config, app.max_memory_mb, app.max_vcores)?;
    let name = verified
        .await
        .map_err(|e| Error::Bundle(format!("verifying {}: {e}", opts.bundle.display())))??;
    config.default_name(&name);
    config.default_cluster_id(&app.id);

    // Hadoop client keys of the configuration apply to the upload, as to the job's own HDFS
    // access.
    let client_keys: Vec<(String, String)> = config
        .map
        .iter()
        .filter(|(k, _)| PASSED_THROUGH_PREFIXES.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let staging = Arc::new(Staging::with_client_keys(
        &conf,
        &user,
        &app.id,
        &client_keys,
    )?);
    eprintln!(
        "Uploading the bundle and the Sluice binaries to {staging_fs}{} ...",
        crate::staging::staging_path(&user, &app.id)
    );
    let result = async {
        let resources = upload_all(&staging, &conf, &config, opts, &bins).await?;
        let env = vec![
            (STAGING_DIR_ENV.to_string(), staging.url()),
            (
                JOB_ARGS_ENV.to_string(),
                serde_json::to_string(&opts.job_args).unwrap_or_else(|_| "[]".into()),
            ),
            ("HADOOP_USER_NAME".to_string(), user.clone()),
        ];
        let submission = spec::sluice_submission(&app.id, &config, &resources, &env)?;
        rm.submit(&submission.to_json()).await
    }
    .await;
    if let Err(e) = result {
        if let Err(cleanup) = staging.remove().await {
            eprintln!("warning: {cleanup}");
        }
        return Err(e);
    }
    eprintln!(
        "Submitted application {} in {:.1} s",
        app.id,
        started.elapsed().as_secs_f64()
    );
    let staging = Arc::try_unwrap(staging)
        .map_err(|_| Error::Usage("the staging directory is still in use".into()))?;
    Ok(Submitted {
        app_id: app.id,
        staging,
        rm,
    })
}

/// The master's and the workers' containers must fit the largest container of the cluster.
fn check_resources(config: &EffectiveConfig, max_mb: u64, max_vcores: u64) -> Result<()> {
    let jm = config.memory_mb(keys::JM_MEMORY, spec::DEFAULT_JM_MEMORY)?;
    let tm = config.memory_mb(keys::TM_MEMORY, spec::DEFAULT_TM_MEMORY)?;
    let tm_vcores = config.tm_vcores()?;
    let too_large = |what: &str, requested: String, maximum: String, key: &str| {
        Err(Error::TooLarge {
            what: what.into(),
            requested,
            maximum,
            key: key.into(),
        })
    };
    if jm > max_mb {
        return too_large(
            "The master (JobManager)",
            format!("{jm} MB"),
            format!("{max_mb} MB"),
            keys::JM_MEMORY,
        );
    }
    if tm > max_mb {
        return too_large(
            "A worker (TaskManager)",
            format!("{tm} MB"),
            format!("{max_mb} MB"),
            keys::TM_MEMORY,
        );
    }
    if tm_vcores > max_vcores {
        return too_large(
            "A worker (TaskManager)",
            format!("{tm_vcores} vcores"),
            format!("{max_vcores} vcores"),
            keys::CONTAINER_VCORES,
        );
    }
    Ok(())
}

/// Uploads everything the contract lists, concurrently (the binaries are large).
async fn upload_all(
    staging: &Arc<Staging>,
    conf: &HadoopConf,
    config: &EffectiveConfig,
    opts: &SubmitOptions,
    bins: &Path,
) -> Result<Vec<LocalResource>> {
    let layout = file_layout(config)?;
    let tmp = tempfile::tempdir().map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let conf_file = tmp.path().join(CONF_FILE);
    std::fs::write(&conf_file, config.to_yaml()).map_err(|source| Error::Io {
        path: conf_file.clone(),
        source,
    })?;
    let (am, worker) = {
        let (a, w) = (bins.join(AM_BINARY), bins.join(WORKER_BINARY));
        let (ta, tw) = (tmp.path().join(AM_BINARY), tmp.path().join(WORKER_BINARY));
        let a = tokio::task::spawn_blocking(move || without_debug_info(a, &ta));
        let w = tokio::task::spawn_blocking(move || without_debug_info(w, &tw));
        let join = |r: std::result::Result<PathBuf, tokio::task::JoinError>, b: &Path| {
            r.unwrap_or_else(|_| b.to_path_buf())
        };
        (
            join(a.await, &bins.join(AM_BINARY)),
            join(w.await, &bins.join(WORKER_BINARY)),
        )
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        (am, AM_BINARY.into()),
        (worker, WORKER_BINARY.into()),
        (opts.bundle.clone(), BUNDLE_FILE.into()),
        (conf_file, CONF_FILE.into()),
    ];
    for f in conf.site_files() {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        files.push((f, name));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (path, name)) in files.into_iter().enumerate() {
        let staging = staging.clone();
        tasks.spawn(async move { (i, staging.upload(&path, &name, layout).await) });
    }
    let mut out = Vec::new();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(r))) => out.push((i, r)),
            Ok((_, Err(e))) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(Error::Hdfs {
                    url: staging.url(),
                    why: format!("upload task failed: {e}"),
                });
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

/// A copy of the binary `path` without its debug information, at `into` (`objcopy
/// --strip-debug`): release binaries carry hundreds of MB of it, which every container would
/// download. The binary itself when `objcopy` is not installed or fails.
fn without_debug_info(path: PathBuf, into: &Path) -> PathBuf {
    let stripped = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(&path)
        .arg(into)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if stripped { into.to_path_buf() } else { path }
}

/// `yarn.file-replication` (Flink's key; -1 or unset: the cluster's) and `dfs.blocksize`
/// (the client's block size, as Hadoop's client takes it from its configuration).
fn file_layout(config: &EffectiveConfig) -> Result<FileLayout> {
    let replication = match config.get(FILE_REPLICATION) {
        None => None,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n > 0 => Some(n as u32),
            Ok(_) => None,
            Err(_) => {
                return Err(Error::Config(format!(
                    "{FILE_REPLICATION}: '{v}' is not a number"
                )));
            }
        },
    };
    let block_size = match config.get(BLOCK_SIZE) {
        None => None,
        Some(v) => Some(parse_memory(v).filter(|&b| b > 0).ok_or_else(|| {
            Error::Config(format!("{BLOCK_SIZE}: '{v}' is not a size such as 128m"))
        })?),
    };
    Ok(FileLayout {
        replication,
        block_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_larger_than_the_cluster_allows_are_refused_naming_the_key() {
        let big = Overrides {
            dynamic: vec!["jobmanager.memory.process.size=100g".into()],
            ..Default::default()
        };
        let c = EffectiveConfig::build(None, &big).unwrap();
        let e = check_resources(&c, 2048, 4).unwrap_err().to_string();
        assert!(
            e.contains("102400 MB") && e.contains("2048 MB") && e.contains(keys::JM_MEMORY),
            "{e}"
        );
        let c = EffectiveConfig::build(None, &Overrides::default()).unwrap();
        check_resources(&c, 2048, 4).unwrap();
        let e = check_resources(&c, 1700, 4).unwrap_err().to_string();
        assert!(e.contains(keys::TM_MEMORY), "{e}");
    }
}
