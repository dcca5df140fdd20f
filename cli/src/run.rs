//! `sluice run`: starts a job binary as a child process. The job binary is the user's program,
//! so configuration reaches it through the environment (`SLUICE_CONF_DIR`,
//! `SLUICE_DYNAMIC_PROPERTIES`, `SLUICE_REST_PORT`), which `StreamEnv::new()` reads. The
//! child appends `<job id> <REST URL>` to the file named by `SLUICE_REST_ANNOUNCE` once its
//! job is submitted; that is how `run` learns the job id and the (possibly system-picked)
//! port without parsing the job's output.
//!
//! A bundle (`sluice bundle`) is unpacked and verified first; its entry binary then runs like
//! any job binary, with `SLUICE_BUNDLE_DIR` naming the unpacked bundle.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use sluice::rest::conf::{CONF_DIR_ENV, CONF_FILE, DYNAMIC_PROPERTIES_ENV};
use sluice::rest::{REST_ANNOUNCE_ENV, REST_PORT_ENV};
use sluice::{ALLOW_NON_RESTORED_KEY, RESTORE_PATH_KEY};

use crate::args::RunArgs;
use crate::bundle::{self, RunDir};
use crate::client::RestClient;
use crate::conf;

/// Flink's default REST port, used when neither `--rest-port` nor `rest.port` says otherwise.
const DEFAULT_REST_PORT: u16 = 8081;

pub fn run(a: RunArgs) -> Result<ExitCode> {
    // Checked before anything starts: a typo in -s should not cost a job start.
    if let Some(path) = &a.from_savepoint {
        sluice_hdfs_backend::load_snapshot(path)
            .map_err(|e| anyhow!("cannot restore from {path}: {e}"))?;
    }
    if let Some(master) = a.jobmanager.clone() {
        return crate::submit::submit(&a, &master);
    }
    // So is a bundle: unpacked and verified, or refused, before the job starts.
    let bundle = if bundle::is_bundle(&a.job) {
        Some(RunDir::prepare(&a.job)?)
    } else {
        None
    };
    let (job, job_args, conf_dir) = match &bundle {
        Some(b) => (
            b.entry(),
            b.job_args(&a.job_args),
            b.conf_dir().map(Path::to_path_buf),
        ),
        None => (
            resolve_binary(&a.job)?,
            a.job_args.clone(),
            conf::conf_dir(),
        ),
    };
    let announce = announce_file();
    let mut cmd = Command::new(&job);
    cmd.args(&job_args)
        .env(DYNAMIC_PROPERTIES_ENV, dynamic_properties(&a).join("\n"))
        .env(REST_ANNOUNCE_ENV, &announce);
    if let Some(dir) = &conf_dir {
        cmd.env(CONF_DIR_ENV, dir);
    }
    if let Some(b) = &bundle {
        cmd.env(bundle::BUNDLE_DIR_ENV, b.dir());
    }
    if let Some(port) = rest_port(&a, conf_dir.as_deref())? {
        cmd.env(REST_PORT_ENV, port.to_string());
    }
    let log = if a.detached {
        let (out, path) = log_file(a.log_dir.as_deref())?;
        let err = out
            .try_clone()
            .with_context(|| format!("opening {}", path.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // Its own process group: a Ctrl-C meant for the terminal's next command must not
        // reach a job that was started to outlive this CLI.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        Some(path)
    } else {
        None
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start the job binary {}", job.display()))?;
    if let Some(b) = &bundle {
        b.add_owner(child.id())?;
    }
    let submitted = wait_for_announce(&announce, &mut child, &job, log.as_deref());
    let _ = std::fs::remove_file(&announce);
    let (job_id, url) = submitted?;
    // Like Flink's client, confirm the job through the REST API (`GET /jobs/:id/status`).
    // A short attached job may already be gone; its exit code tells how it went.
    let address = url.trim_start_matches("http://").to_string();
    let status = RestClient::new(&address).and_then(|c| c.get(&format!("/jobs/{job_id}/status")));
    if let (Err(e), true) = (&status, a.detached) {
        bail!("job {job_id} was submitted, but its REST API does not answer: {e:#}");
    }
    println!("Job has been submitted with JobID {job_id}");
    if let Some(log) = log {
        eprintln!("REST API at {url}");
        eprintln!("Job output: {}", log.display());
        if let Some(b) = bundle {
            eprintln!("Job bundle unpacked in {}", b.keep().display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let exit = child
        .wait()
        .with_context(|| format!("waiting for the job binary {}", job.display()))?;
    Ok(exit_code(exit))
}

/// `-D` first, then the flags that stand for a key, so `-p 2` beats `-D parallelism.default=4`.
pub(crate) fn dynamic_properties(a: &RunArgs) -> Vec<String> {
    let mut props = a.dynamic.clone();
    if let Some(p) = a.parallelism {
        props.push(format!("parallelism.default={p}"));
    }
    if let Some(s) = &a.from_savepoint {
        props.push(format!("{RESTORE_PATH_KEY}={s}"));
    }
    if a.allow_non_restored {
        props.push(format!("{ALLOW_NON_RESTORED_KEY}=true"));
    }
    props
}

/// `--rest-port`; else none if `rest.port` is set (`-D` or the configuration in `conf_dir`:
/// the job reads it itself); else 8081, so `sluice list` finds the job at its default address.
fn rest_port(a: &RunArgs, conf_dir: Option<&Path>) -> Result<Option<u16>> {
    if a.rest_port.is_some() {
        return Ok(a.rest_port);
    }
    let in_dynamic = a
        .dynamic
        .iter()
        .any(|d| d.trim_start().starts_with("rest.port="));
    let in_conf = match conf_dir.map(|d| d.join(CONF_FILE)).filter(|f| f.is_file()) {
        Some(file) => sluice_core::Config::load(Some(&file), &[])
            .with_context(|| format!("reading the configuration {}", file.display()))?
            .get_raw("rest.port")
            .is_some(),
        None => false,
    };
    Ok((!in_dynamic && !in_conf).then_some(DEFAULT_REST_PORT))
}

/// A path without a slash is looked up like a shell would only if it is not a file here.
fn resolve_binary(job: &Path) -> Result<PathBuf> {
    if job.is_file() {
        return Ok(std::path::absolute(job).unwrap_or_else(|_| job.to_path_buf()));
    }
    if job.components().count() == 1
        && let Some(found) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join(job))
            .find(|p| p.is_file())
    {
        return Ok(found);
    }
    bail!("the job binary {} does not exist", job.display())
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn announce_file() -> PathBuf {
    std::env::temp_dir().join(format!("sluice-run-{}.announce", unique_suffix()))
}

/// `<--log-dir | $SLUICE_LOG_DIR | ./log>/sluice-job-<pid>-<nanos>.log`, created.
fn log_file(dir: Option<&Path>) -> Result<(File, PathBuf)> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::var_os("SLUICE_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("log")),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the log directory {}", dir.display()))?;
    let path = std::path::absolute(dir.join(format!("sluice-job-{}.log", unique_suffix())))?;
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok((file, path))
}

/// Waits until the child announced its job: (job id, REST URL). A child that exits first
/// (bad arguments, a job that fails planning) is reported with its exit status.
fn wait_for_announce(
    announce: &Path,
    child: &mut Child,
    job: &Path,
    log: Option<&Path>,
) -> Result<(String, String)> {
    loop {
        if let Ok(text) = std::fs::read_to_string(announce)
            // Only a whole line: the child may be between two writes.
            && let Some(line) = text.split_inclusive('\n').find(|l| l.ends_with('\n'))
            && let Some((id, url)) = line.trim_end().split_once(' ')
        {
            return Ok((id.to_string(), url.to_string()));
        }
        if let Some(status) = child.try_wait()? {
            let see = log
                .map(|l| format!("; its output is in {}", l.display()))
                .unwrap_or_default();
            bail!(
                "the job binary {} exited ({status}) without submitting a job{see}",
                job.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child's exit code; a child killed by a signal gives 128 + the signal, as shells do.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}
