//! `sluice-am --yarn`: the ApplicationMaster. It starts the master (control port, REST API)
//! on its NodeManager's host, registers with the ResourceManager, runs the job of the staged
//! `job.bundle`, keeps `ceil(parallelism / slots)` worker containers alive while the job
//! runs, then unregisters with the job's outcome and deletes the staging directory.
//!
//! With `high-availability.type: zookeeper` an attempt first wins the leader election of its
//! application (see [`super::ha`]); a later attempt recovers the job of the previous one from
//! its latest completed checkpoint and keeps the worker containers YARN kept for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::config::keys::RPC_PORT;
use sluice_core::{Config, JobPlan};

use super::amrm::AmRmClient;
use super::conf::HadoopConf;
use super::credentials::{AMRM_TOKEN_KIND, Credentials, TOKEN_FILE_ENV};
use super::ha::AppResult;
use super::proto::yarn::{FinalApplicationStatusProto, RegisterApplicationMasterResponseProto};
use super::result::ResultRecorder;
use super::staging::Staging;
use super::workers::{CONF_FILE, PoolState, WORKER_BINARY, WorkerPool, WorkerSpec};
use super::{Result, YarnError};
use crate::cluster::{Cluster, RunRequest};
use crate::ha::Ha;
use crate::job::JobClient;
use crate::job_status::JobStatus;
use crate::rest::{Dispatcher, REST_PORT_KEY, RestServer};
use sluice_worker::control::protocol::LeaderInfo;

/// The staging directory's full URL (set by the submitting client).
pub const STAGING_DIR_ENV: &str = "SLUICE_STAGING_DIR";
/// The job's program arguments, a JSON array of strings.
pub const JOB_ARGS_ENV: &str = "SLUICE_JOB_ARGS";
/// Set by the NodeManager.
pub const CONTAINER_ID_ENV: &str = "CONTAINER_ID";
pub const NM_HOST_ENV: &str = "NM_HOST";
/// The staged job bundle.
pub const BUNDLE_FILE: &str = "job.bundle";
/// Flink's savepoint keys, as the submitting client writes them into the configuration.
pub const SAVEPOINT_PATH_KEY: &str = "execution.savepoint.path";
pub const SAVEPOINT_IGNORE_UNCLAIMED_KEY: &str = "execution.savepoint.ignore-unclaimed-state";
/// The Hadoop site files shipped to the workers when staged.
const SITE_FILES: [&str; 3] = ["core-site.xml", "hdfs-site.xml", "yarn-site.xml"];
/// Heartbeat interval while containers are on their way, and once all run.
const FAST_HEARTBEAT: Duration = Duration::from_millis(250);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Consecutive failed heartbeats after which the ResourceManager counts as lost.
const MAX_HEARTBEAT_ERRORS: u32 = 30;
/// How long a job cancelled because its workers kept failing may take to stop.
const CANCEL_WAIT: Duration = Duration::from_secs(30);
/// Bytes of the job binary's error output quoted in the diagnostics.
const STDERR_TAIL: usize = 4000;

/// What the NodeManager and the submitting client tell the ApplicationMaster.
#[derive(Debug, Clone)]
pub struct AmEnv {
    pub container_id: String,
    pub nm_host: String,
    pub token_file: PathBuf,
    pub staging_dir: String,
    pub job_args: Vec<String>,
}

impl AmEnv {
    pub fn from_env() -> Result<AmEnv> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| YarnError::Env {
                var: name.to_string(),
                message: "not set (is this process running in a YARN container?)".into(),
            })
        };
        let job_args = match std::env::var(JOB_ARGS_ENV) {
            Ok(s) if !s.trim().is_empty() => {
                serde_json::from_str(&s).map_err(|e| YarnError::Env {
                    var: JOB_ARGS_ENV.into(),
                    message: format!(
                        "not a JSON array of strings ({e}); the NodeManager writes values into a \
                         double-quoted shell string, so the submitter escapes \\ \" $ and `"
                    ),
                })?
            }
            _ => Vec::new(),
        };
        Ok(AmEnv {
            container_id: var(CONTAINER_ID_ENV)?,
            nm_host: var(NM_HOST_ENV)?,
            token_file: PathBuf::from(var(TOKEN_FILE_ENV)?),
            staging_dir: var(STAGING_DIR_ENV)?,
            job_args,
        })
    }
}

/// Runs the ApplicationMaster to its end. `Ok` once it unregistered (whatever the job's
/// outcome, which the ResourceManager now knows); `Err` when it could not register or
/// unregister, and YARN will count the attempt as failed; on the application's last attempt
/// the staging directory is deleted first, as no attempt follows to delete it.
pub fn run(config_file: Option<&Path>, overrides: &[String]) -> Result<()> {
    let result = run_attempt(config_file, overrides);
    if let Err(e) = &result {
        eprintln!("sluice-am: the attempt failed: {e}");
        super::staging::delete_after_last_attempt(config_file, overrides);
    }
    result
}

fn run_attempt(config_file: Option<&Path>, overrides: &[String]) -> Result<()> {
    let env = AmEnv::from_env()?;
    let mut config =
        crate::rest::conf::load(config_file, overrides).map_err(|e| YarnError::Config {
            key: config_file
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the configuration".into()),
            message: e.to_string(),
        })?;
    let cluster_id = super::ha::default_cluster_id(&mut config, &env.container_id)?;
    // With HA, only the leading attempt runs the job: a new attempt waits here until the
    // previous one is gone.
    let ha = if config.ha.enabled() {
        eprintln!(
            "sluice-am: joining the leader election under {}",
            config.ha.zk_base()
        );
        Some(super::ha::elect(&config, &env.container_id)?)
    } else {
        None
    };
    // The result is recorded before the job leaves the HA job store (see `super::result`).
    let recorder = Arc::new(ResultRecorder::default());
    if let Some(ha) = &ha {
        recorder.install(ha, &config);
    }
    // Bundles go into the container's working directory, which the NodeManager removes
    // when the container ends, also after a `kill -9` (a temporary directory would stay).
    if config.cluster.upload_dir.is_none()
        && let Ok(cwd) = std::env::current_dir()
    {
        config.cluster.upload_dir = Some(cwd.join("bundles").to_string_lossy().into_owned());
    }
    // Workers reach the master on this container's host; free ports unless configured.
    config.cluster.rpc_address = env.nm_host.clone();
    if config.get_raw(RPC_PORT).is_none() {
        config.cluster.rpc_port = 0;
    }
    let cluster = Cluster::start(config.cluster.clone()).map_err(|e| YarnError::App {
        app: env.container_id.clone(),
        message: format!("cannot start the control plane: {e}"),
    })?;
    config.cluster.rpc_port = cluster.addr().port();
    if let Some(ha) = &ha {
        cluster.enable_ha(ha.clone());
    }
    let rest_port = match config.get_raw(REST_PORT_KEY) {
        Some(p) => p.trim().parse::<u16>().map_err(|_| YarnError::Config {
            key: REST_PORT_KEY.into(),
            message: format!("'{p}' is not a port number"),
        })?,
        None => 0,
    };
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.set_cluster(cluster.clone(), config.clone());
    let rest = RestServer::start(dispatcher.clone(), &env.nm_host, rest_port, &env.nm_host)
        .map_err(|e| YarnError::App {
            app: env.container_id.clone(),
            message: format!("cannot start the REST API: {e}"),
        })?;
    let rest_port = rest.local_addr().port();
    let rest_url = rest.url().to_string();
    eprintln!(
        "sluice-am: ApplicationMaster in {}; workers connect to {}, REST API at {}",
        env.container_id,
        cluster.addr(),
        rest.url()
    );
    let hadoop = HadoopConf::from_env()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| YarnError::io("starting the ApplicationMaster's runtime", e))?;
    let am = Am {
        env,
        config,
        hadoop,
        cluster,
        dispatcher,
        rest_port,
        rest_url,
        ha,
        recorder,
        // Workers look the leader up under the same cluster id.
        worker_dynamic: cluster_id
            .map(|id| vec![format!("{}={id}", sluice_core::config::keys::HA_CLUSTER_ID)])
            .unwrap_or_default(),
    };
    runtime.block_on(am.drive())
}

struct Am {
    env: AmEnv,
    config: Config,
    hadoop: HadoopConf,
    cluster: Arc<Cluster>,
    dispatcher: Arc<Dispatcher>,
    rest_port: u16,
    rest_url: String,
    /// This attempt's leadership and the HA job store (`high-availability.type: zookeeper`).
    ha: Option<Arc<Ha>>,
    /// Which job the application follows, for the result recorded as it leaves the store.
    recorder: Arc<ResultRecorder>,
    /// `key=value` settings added to every worker's command line.
    worker_dynamic: Vec<String>,
}

impl Am {
    fn tracking_url(&self) -> String {
        format!("http://{}:{}/", self.env.nm_host, self.rest_port)
    }

    async fn drive(self) -> Result<()> {
        let creds = Credentials::read(&self.env.token_file)?;
        let token = creds
            .token_of_kind(AMRM_TOKEN_KIND)
            .cloned()
            .ok_or_else(|| YarnError::Credentials {
                path: self.env.token_file.display().to_string(),
                message: format!("no {AMRM_TOKEN_KIND} token"),
            })?;
        let mut rm = AmRmClient::new(&self.hadoop.scheduler_address(), token);
        let url = self.tracking_url();
        let reg = rm.register(&self.env.nm_host, self.rest_port, &url).await?;
        eprintln!(
            "sluice-am: registered with the ResourceManager at {} (queue {})",
            rm.addr(),
            reg.queue()
        );
        let staging = Staging::open(&self.env.staging_dir, &self.hadoop.dir).await;
        let recorded = match &self.ha {
            Some(ha) => super::ha::recorded_result(ha, &self.config)?,
            None => None,
        };
        let (status, diagnostics) = match (&staging, recorded) {
            (_, Some(r)) => {
                eprintln!("sluice-am: the job ended in a previous attempt");
                (r.status(), r.diagnostics)
            }
            (Ok(staging), None) => self.run_job(&mut rm, staging, &reg).await,
            (Err(e), None) => (FinalApplicationStatusProto::AppFailed, e.to_string()),
        };
        // Kept until the application is unregistered: an attempt started in between must
        // not run the job again.
        if let Some(ha) = &self.ha {
            let result = AppResult {
                status: status as i32,
                diagnostics: diagnostics.clone(),
            };
            if let Err(e) = super::ha::record_result(ha, &self.config, &result) {
                eprintln!("sluice-am: {e}");
            }
        }
        eprintln!("sluice-am: unregistering: {status:?} {diagnostics}");
        rm.finish(status, &diagnostics, &url).await?;
        // The NodeManager stops this container soon after the unregistration: the staging
        // directory first, as the HA state can also be removed by `yarn-submit --kill`.
        if let Ok(staging) = staging
            && let Err(e) = staging.delete().await
        {
            eprintln!("sluice-am: {e}");
        }
        if let Some(ha) = &self.ha {
            super::ha::clean_up(ha, &self.config);
        }
        Ok(())
    }

    /// Runs the job with its workers; returns the application's final status and
    /// diagnostics.
    async fn run_job(
        &self,
        rm: &mut AmRmClient,
        staging: &Staging,
        reg: &RegisterApplicationMasterResponseProto,
    ) -> (FinalApplicationStatusProto, String) {
        use FinalApplicationStatusProto::*;
        let (client, parallelism) = match self.start_job() {
            Ok(s) => s,
            Err(diagnostics) => {
                self.recorder.follow_nothing();
                return (AppFailed, diagnostics);
            }
        };
        self.recorder.follow(client.handle());
        if let Some(ha) = &self.ha {
            self.publish(ha);
        }
        let slots = self.config.cluster.task_slots.max(1);
        let count = parallelism.div_ceil(slots).max(1);
        let mut spec = match WorkerSpec::from_config(&self.config, count) {
            Ok(s) => s,
            Err(e) => return self.abort(client, AppFailed, e.to_string()),
        };
        let mut files = vec![WORKER_BINARY, CONF_FILE];
        files.extend(SITE_FILES);
        match staging
            .local_resources(&files, &[WORKER_BINARY, CONF_FILE])
            .await
        {
            Ok(r) => spec.resources = r,
            Err(e) => return self.abort(client, AppFailed, e.to_string()),
        }
        spec.environment = std::env::var("HADOOP_USER_NAME")
            .map(|u| vec![("HADOOP_USER_NAME".to_string(), u)])
            .unwrap_or_default();
        spec.dynamic = self.worker_dynamic.clone();
        eprintln!(
            "sluice-am: parallelism {parallelism}, {slots} slot(s) per worker: asking for {count} \
             worker container(s) of {} MB and {} vcore(s)",
            spec.memory_mb, spec.vcores
        );
        let mut pool = WorkerPool::new(spec);
        pool.add_nm_tokens(&reg.nm_tokens_from_previous_attempts);
        // With HA the workers kept from a previous attempt follow the leader published in
        // ZooKeeper, so they re-register here; without it they cannot find this attempt.
        let kept = reg.containers_from_previous_attempts.clone();
        if self.ha.is_some() {
            pool.adopt(kept);
        } else {
            pool.release(kept);
        }
        let mut errors = 0;
        while !client.is_finished() {
            match pool.heartbeat(rm, 0.5).await {
                Ok(PoolState::Running) => errors = 0,
                Ok(PoolState::TooManyFailures(diagnostics)) => {
                    return self.abort(client, AppFailed, diagnostics);
                }
                Ok(PoolState::Shutdown) => {
                    return self.abort(
                        client,
                        AppKilled,
                        "the ResourceManager shut the ApplicationMaster down".into(),
                    );
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("sluice-am: heartbeat {errors} failed: {e}");
                    if errors >= MAX_HEARTBEAT_ERRORS {
                        return self.abort(
                            client,
                            AppFailed,
                            format!("lost the ResourceManager: {e}"),
                        );
                    }
                }
            }
            let pause = if pool.outstanding() > 0 {
                FAST_HEARTBEAT
            } else {
                HEARTBEAT
            };
            tokio::time::sleep(pause).await;
        }
        outcome(client)
    }

    /// Cancels the job (bounded wait) and returns `status` with `diagnostics`.
    fn abort(
        &self,
        client: JobClient,
        status: FinalApplicationStatusProto,
        diagnostics: String,
    ) -> (FinalApplicationStatusProto, String) {
        // Recorded as the cancelled job leaves the HA job store, instead of "cancelled".
        self.recorder.set_verdict(AppResult {
            status: status as i32,
            diagnostics: diagnostics.clone(),
        });
        client.cancel();
        let deadline = std::time::Instant::now() + CANCEL_WAIT;
        while !client.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        (status, diagnostics)
    }

    /// With HA, recovers the job a previous attempt stored (from its latest completed
    /// checkpoint); otherwise, or when none is stored, submits the staged bundle's job.
    fn start_job(&self) -> std::result::Result<(JobClient, usize), String> {
        if self.ha.is_some() {
            let (cluster, config) = (&self.cluster, &self.config);
            let recovered = crate::ha::off_runtime(|| cluster.recover_jobs(config))
                .map_err(|e| format!("recovering the job of the HA job store: {e}"))?;
            let mut jobs = recovered.into_iter();
            if let Some((client, plan)) = jobs.next() {
                for (other, _) in jobs {
                    eprintln!(
                        "sluice-am: the HA job store holds another job, {}; it runs too, but \
                         the application follows {}",
                        other.job_id(),
                        client.job_id()
                    );
                }
                let parallelism = plan.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
                self.dispatcher
                    .add_job(client.handle(), &plan.name, plan.clone(), &self.config);
                eprintln!(
                    "sluice-am: recovered job {} ({}) of a previous attempt",
                    client.job_id(),
                    plan.name
                );
                return Ok((client, parallelism));
            }
        }
        self.submit()
    }

    /// Publishes this attempt's addresses where the workers look for the leader. Without it
    /// no worker finds this attempt, so a failure ends the process and YARN starts the next
    /// attempt, which recovers the job (as when leadership is lost).
    fn publish(&self, ha: &Ha) {
        let info = LeaderInfo {
            address: self.cluster.addr(),
            rest: self.rest_url.clone(),
            epoch: ha.leadership.epoch(),
        };
        match ha.leadership.publish(&info) {
            Ok(()) => eprintln!(
                "sluice-am: leading (epoch {}), published at {}",
                info.epoch,
                crate::ha::connection_info_path(&self.config.ha)
            ),
            Err(e) => {
                eprintln!("sluice-am: cannot publish the leader's address: {e}; exiting");
                std::process::exit(3);
            }
        }
    }

    /// Unpacks the bundle, asks its binary for the plan and starts the job on this master,
    /// as `POST /jars/upload` and `/jars/:id/run` do. `Err` is the diagnostic for YARN.
    fn submit(&self) -> std::result::Result<(JobClient, usize), String> {
        let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
        let bundle_file = cwd.join(BUNDLE_FILE);
        let bundle = sluice_bundle::open_bundle(&bundle_file, &cwd.join("job"))
            .map_err(|e| format!("cannot open {}: {e:#}", bundle_file.display()))?;
        let dir = bundle.dir.to_string_lossy().to_string();
        let token = format!("${{{}}}", sluice_bundle::BUNDLE_DIR_ENV);
        let args: Vec<String> = self
            .env
            .job_args
            .iter()
            .map(|a| a.replace(&token, &dir))
            .collect();
        let explicit = self.config.explicit().clone();
        let props: Vec<String> = explicit.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let entry = bundle.entry();
        let mut cmd = Command::new(&entry);
        cmd.arg("--plan")
            .args(&args)
            .env(crate::rest::conf::DYNAMIC_PROPERTIES_ENV, props.join("\n"))
            .env(sluice_bundle::BUNDLE_DIR_ENV, &bundle.dir)
            .stdin(Stdio::null());
        if let Some(conf) = bundle
            .config_file()
            .and_then(|f| f.parent().map(Path::to_path_buf))
        {
            cmd.env(crate::rest::conf::CONF_DIR_ENV, conf);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot start the job binary {}: {e}", entry.display()))?;
        let name = entry.file_name().unwrap_or_default().to_string_lossy();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
            return Err(format!(
                "the job binary {name} failed to start ({}): {}",
                out.status,
                tail.trim()
            ));
        }
        let plan: JobPlan = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{name} --plan did not print a plan: {e}"))?;
        let parallelism = plan.nodes.iter().map(|n| n.parallelism).max().unwrap_or(1);
        let bytes = std::fs::read(&bundle_file)
            .map_err(|e| format!("cannot read {}: {e}", bundle_file.display()))?;
        let upload = self
            .cluster
            .upload(&bytes)
            .map_err(|e| format!("cannot keep the bundle: {e}"))?;
        let req = RunRequest {
            plan: Some(plan.clone()),
            program_args_list: args,
            parallelism: None,
            savepoint_path: explicit.get(SAVEPOINT_PATH_KEY).cloned(),
            allow_non_restored_state: explicit
                .get(SAVEPOINT_IGNORE_UNCLAIMED_KEY)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
            flink_configuration: explicit.into_iter().collect(),
        };
        let client = self
            .cluster
            .run(&upload, &self.config, req)
            .map_err(|e| format!("the job {} cannot be submitted: {e}", plan.name))?;
        self.dispatcher
            .add_job(client.handle(), &plan.name, plan.clone(), &self.config);
        eprintln!(
            "sluice-am: job {} ({}) submitted",
            client.job_id(),
            plan.name
        );
        Ok((client, parallelism))
    }
}

/// The application's final status for the job's end.
fn outcome(client: JobClient) -> (FinalApplicationStatusProto, String) {
    use FinalApplicationStatusProto::*;
    let job_id = client.job_id().to_string();
    match client.wait() {
        Ok(r) if r.status == JobStatus::Finished => (AppSucceeded, String::new()),
        Ok(r) if r.status == JobStatus::Canceled => {
            (AppKilled, format!("the job {job_id} was cancelled"))
        }
        Ok(r) => (
            AppFailed,
            format!("the job {job_id} ended as {:?}", r.status),
        ),
        Err(e) => (AppFailed, format!("the job {job_id} failed: {e}")),
    }
}
