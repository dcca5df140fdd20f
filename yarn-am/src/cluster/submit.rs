//! Submitting a job to the cluster: the bundle is kept by the master (so replacement workers
//! can start the job too), every worker daemon starts a process of it, and a driver runs the
//! job on a [`RemoteExecutor`].

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use sluice_core::{Config, JobPlan, Result, SluiceError};
use sluice_worker::control::{Conn, ToWorker};

use super::{BundleWriter, Cluster, JobEntry, RemoteExecutor, StoredBundle};
use crate::ha::StoredJob;
use crate::job::{self, JobClient};

/// `POST /jars/:id/run`: Flink's fields where they exist, plus the job's plan (the output of
/// `<job-binary> --plan`), which the master schedules without the user's code.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    pub plan: Option<JobPlan>,
    #[serde(default)]
    pub program_args_list: Vec<String>,
    pub parallelism: Option<usize>,
    pub savepoint_path: Option<String>,
    #[serde(default)]
    pub allow_non_restored_state: bool,
    /// `key=value` overrides, as `-D` gives them.
    #[serde(default)]
    pub flink_configuration: HashMap<String, String>,
}

/// A job process to start on a worker. The bundle is read from disk only when the message is
/// sent, outside the cluster's lock, and dropped right after.
pub(super) struct Launch {
    job_id: String,
    bundle: Arc<StoredBundle>,
    args: Vec<String>,
    config: Vec<String>,
    epoch: i64,
}

impl Launch {
    /// Sends `LaunchJob` on `conn`. Fails when the bundle cannot be read or the worker is gone.
    pub(super) fn send(&self, conn: &Conn) -> Result<()> {
        conn.send(&ToWorker::LaunchJob {
            job_id: self.job_id.clone(),
            bundle: self.bundle.read()?,
            args: self.args.clone(),
            config: self.config.clone(),
            epoch: self.epoch,
        })
    }
}

impl JobEntry {
    pub(super) fn launch(&self, job_id: &str) -> Launch {
        Launch {
            job_id: job_id.to_string(),
            bundle: self.bundle.clone(),
            args: self.args.clone(),
            config: self.config_lines.clone(),
            epoch: self.epoch,
        }
    }
}

impl Cluster {
    /// Keeps an uploaded bundle (on disk, in `web.upload.dir`); returns its id.
    pub fn upload(&self, bundle: &[u8]) -> Result<String> {
        let mut w = self.begin_upload()?;
        w.write(bundle)?;
        self.finish_upload(w)
    }

    /// Starts an upload written piece by piece (a request body as it arrives).
    pub fn begin_upload(&self) -> Result<BundleWriter> {
        self.bundles.create("job.bundle")
    }

    /// Completes an upload started with [`Cluster::begin_upload`]; returns its id.
    pub fn finish_upload(&self, w: BundleWriter) -> Result<String> {
        let id = format!("{}_job.bundle", job::new_job_id());
        let bundle = w.finish()?;
        self.uploads.lock().insert(id.clone(), bundle);
        Ok(id)
    }

    /// Starts the job of the uploaded bundle `bundle_id`. `base` is the master's configuration;
    /// the request's settings override it. Returns the running job's client.
    pub fn run(
        self: &Arc<Self>,
        bundle_id: &str,
        base: &Config,
        req: RunRequest,
    ) -> Result<JobClient> {
        let bundle = self.uploads.lock().get(bundle_id).cloned().ok_or_else(|| {
            SluiceError::Config(format!("no uploaded bundle with id {bundle_id}"))
        })?;
        let plan = req.plan.clone().ok_or_else(|| {
            SluiceError::Config(
                "the run request has no plan (the output of `<job-binary> --plan`)".into(),
            )
        })?;
        plan.validate()?;
        let mut lines: Vec<String> = plan
            .config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        lines.extend(
            req.flink_configuration
                .iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
        if let Some(p) = req.parallelism {
            lines.push(format!("parallelism.default={p}"));
        }
        if let Some(s) = &req.savepoint_path {
            lines.push(format!("{}={s}", crate::RESTORE_PATH_KEY));
            if req.allow_non_restored_state {
                lines.push(format!("{}=true", crate::ALLOW_NON_RESTORED_KEY));
            }
        }
        let mut config = base.clone();
        let mut errors = Vec::new();
        for line in &lines {
            if let Some((k, v)) = line.split_once('=')
                && let Err(e) = config.set(k.trim(), v.trim())
            {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(SluiceError::Config(errors.join("; ")));
        }
        let job_id = job::new_job_id();
        if let Some(ha) = self.ha() {
            ha.leadership.check("accept a job")?;
            ha.store.put(&StoredJob {
                job_id: job_id.clone(),
                plan: plan.clone(),
                args: req.program_args_list.clone(),
                config_lines: lines.clone(),
                bundle: Arc::new(bundle.read()?),
            })?;
        }
        self.start_job(
            job_id,
            bundle,
            plan,
            req.program_args_list.clone(),
            lines,
            config,
        )
    }

    /// A new leader's recovery: starts every job of the HA job store again under its id,
    /// from its latest completed checkpoint under `state.checkpoints.dir/<job-id>/` (or as it
    /// was submitted, when none completed). Returns the running jobs with their plans.
    pub fn recover_jobs(self: &Arc<Self>, base: &Config) -> Result<Vec<(JobClient, JobPlan)>> {
        let Some(ha) = self.ha() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for stored in ha.store.list()? {
            let job_id = stored.job_id.clone();
            let mut lines = stored.config_lines.clone();
            let mut config = base.clone();
            for line in &lines {
                if let Some((k, v)) = line.split_once('=') {
                    let _ = config.set(k.trim(), v.trim());
                }
            }
            let registered = crate::ha::checkpoints::checkpoints(
                ha.leadership.zk(),
                ha.leadership.config(),
                &job_id,
            )
            .unwrap_or_else(|e| {
                eprintln!(
                    "sluice-am: recovering job {job_id}: cannot read its checkpoint pointers: {e}"
                );
                Vec::new()
            });
            // The newest registered checkpoint whose metadata reads back; the storage
            // listing only for jobs whose checkpoints predate the pointers.
            let from_pointers = registered.iter().find(|(id, url)| {
                match sluice_hdfs_backend::load_snapshot(url) {
                    Ok(_) => true,
                    Err(e) => {
                        eprintln!("sluice-am: recovering job {job_id}: checkpoint {id} at {url} is not usable: {e}");
                        false
                    }
                }
            });
            if let Some((id, url)) = from_pointers {
                eprintln!("sluice-am: recovering job {job_id} from checkpoint {id} ({url})");
                let _ = config.set(crate::RESTORE_PATH_KEY, url);
                lines.push(format!("{}={url}", crate::RESTORE_PATH_KEY));
            } else if !registered.is_empty() {
                eprintln!("sluice-am: recovering job {job_id}: no registered checkpoint is usable");
            } else if let Some(dir) = &config.checkpoints_dir {
                match sluice_hdfs_backend::completed_checkpoints(dir, &job_id) {
                    Ok(list) => {
                        if let Some((id, snap)) = list.last() {
                            let line = format!("{}={}", crate::RESTORE_PATH_KEY, snap.url());
                            eprintln!(
                                "sluice-am: recovering job {job_id} from checkpoint {id} ({})",
                                snap.url()
                            );
                            let _ = config.set(crate::RESTORE_PATH_KEY, snap.url());
                            lines.push(line);
                        } else {
                            eprintln!(
                                "sluice-am: recovering job {job_id}: no completed checkpoint"
                            );
                        }
                    }
                    Err(e) => eprintln!(
                        "sluice-am: recovering job {job_id}: cannot list its checkpoints: {e}"
                    ),
                }
            }
            let plan = stored.plan.clone();
            let bundle = match self.bundles.store("job.bundle", &stored.bundle) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("sluice-am: job {job_id} cannot be recovered: {e}");
                    continue;
                }
            };
            match self.start_job(
                job_id.clone(),
                bundle,
                stored.plan,
                stored.args,
                lines,
                config,
            ) {
                Ok(client) => out.push((client, plan)),
                Err(e) => eprintln!("sluice-am: job {job_id} cannot be recovered: {e}"),
            }
        }
        Ok(out)
    }

    /// Registers the job, asks every worker daemon to start a process of it and starts its
    /// driver.
    fn start_job(
        self: &Arc<Self>,
        job_id: String,
        bundle: Arc<StoredBundle>,
        plan: JobPlan,
        args: Vec<String>,
        lines: Vec<String>,
        config: Config,
    ) -> Result<JobClient> {
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let registry = crate::MetricsRegistry::default();
        let daemons = {
            let mut st = self.state.lock();
            let entry = JobEntry {
                fingerprint: plan.fingerprint(),
                bundle,
                args,
                config_lines: lines,
                processes: Default::default(),
                route: None,
                events: events_tx,
                metrics: HashMap::new(),
                registry: registry.clone(),
                launches: HashMap::new(),
                epoch: self.epoch(),
            };
            let launch = entry.launch(&job_id);
            st.jobs.insert(job_id.clone(), entry);
            let ids: Vec<String> = st.workers.keys().cloned().collect();
            let job = st.jobs.get_mut(&job_id).expect("just inserted");
            for w in &ids {
                job.launches.insert(w.clone(), 1);
            }
            let conns: Vec<Conn> = st.workers.values().map(|w| w.conn.clone()).collect();
            (launch, conns)
        };
        let (launch, conns) = daemons;
        for conn in conns {
            if let Err(e) = launch.send(&conn) {
                eprintln!("job {job_id}: starting its process at {}: {e}", conn.peer());
            }
        }
        let executor = RemoteExecutor::new(self.clone(), job_id.clone(), plan.clone(), events_rx)?;
        job::submit(plan, job_id, config, Box::new(executor), registry)
    }
}
