//! `StreamEnv`: where a job starts. It holds the configuration and the graph being built, and
//! runs the job on the embedded cluster.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use sluice_core::{Config, NodeKind, Result};
use sluice_worker::connectors::collection::CollectionSource;
use sluice_worker::connectors::files::FileSource;
use sluice_worker::connectors::generator::GeneratorSource;
use sluice_worker::connectors::socket::SocketSource;
use sluice_worker::node::{NodeRuntime, SourceRuntime};
use sluice_worker::{Data, Source};

use crate::cluster::{self, Role};
use crate::embedded::EmbeddedExecutor;
use crate::graph::{Graph, NodeDef};
use crate::stream::DataStream;
use crate::{JobClient, JobResult};

/// The entry point of a job: configuration plus the graph of sources, transformations and sinks.
#[derive(Clone)]
pub struct StreamEnv {
    pub(crate) graph: Rc<RefCell<Graph>>,
    pub(crate) config: Rc<RefCell<Config>>,
}

impl Default for StreamEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamEnv {
    /// An environment with the configuration handed over by `sluice run` (see
    /// [`StreamEnv::from_env`]), else the defaults. A bad configuration is printed and the
    /// process exits with status 2, as a job cannot run without it.
    pub fn new() -> Self {
        Self::from_env().unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2)
        })
    }

    /// The configuration handed over by the CLI: `$SLUICE_CONF_DIR/sluice.yaml` if present,
    /// then the `key=value` lines of `$SLUICE_DYNAMIC_PROPERTIES`.
    pub fn from_env() -> Result<Self> {
        Ok(Self::with_config(crate::rest::conf::load(None, &[])?))
    }

    pub fn with_config(config: Config) -> Self {
        StreamEnv {
            graph: Rc::new(RefCell::new(Graph::default())),
            config: Rc::new(RefCell::new(config)),
        }
    }

    /// Loads `conf/sluice.yaml`-style configuration plus `key=value` overrides. Without a
    /// file, the one handed over by the CLI is used; `overrides` come after the CLI's.
    pub fn from_config_file(file: Option<&Path>, overrides: &[String]) -> Result<Self> {
        Ok(Self::with_config(crate::rest::conf::load(file, overrides)?))
    }

    pub fn config(&self) -> Config {
        self.config.borrow().clone()
    }

    /// Sets one configuration key (Flink's names), e.g. `state.backend.type`.
    pub fn set(&self, key: &str, value: &str) -> Result<&Self> {
        self.config
            .borrow_mut()
            .set(key, value)
            .map_err(sluice_core::SluiceError::Config)?;
        Ok(self)
    }

    /// Default parallelism of operators that do not set their own.
    pub fn set_parallelism(&self, parallelism: usize) -> &Self {
        self.config.borrow_mut().parallelism = parallelism;
        self
    }

    /// Number of key groups; fixed for the lifetime of a job's state.
    pub fn set_max_parallelism(&self, max: usize) -> &Self {
        self.config.borrow_mut().max_parallelism = max;
        self
    }

    pub(crate) fn add_node(&self, node: NodeDef) -> usize {
        self.graph.borrow_mut().add(node)
    }

    /// A source from any [`Source`] implementation, made fresh for each subtask.
    pub fn add_source<S: Source, F>(&self, name: &str, factory: F) -> DataStream<S::Out>
    where
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.add_source_with_limit(name, None, factory)
    }

    /// Like [`StreamEnv::add_source`] for sources that cannot run in parallel.
    pub fn add_non_parallel_source<S: Source, F>(
        &self,
        name: &str,
        factory: F,
    ) -> DataStream<S::Out>
    where
        F: Fn() -> S + Send + Sync + 'static,
    {
        self.add_source_with_limit(name, Some(1), factory)
    }

    fn add_source_with_limit<S: Source, F>(
        &self,
        name: &str,
        max: Option<usize>,
        factory: F,
    ) -> DataStream<S::Out>
    where
        F: Fn() -> S + Send + Sync + 'static,
    {
        let runtime: Arc<dyn NodeRuntime> = Arc::new(SourceRuntime::new(factory));
        let id = self.add_node(NodeDef {
            name: format!("Source: {name}"),
            kind: NodeKind::Source,
            uid: None,
            parallelism: None,
            max_node_parallelism: max,
            keyed: false,
            inputs: Vec::new(),
            runtime,
        });
        DataStream::new(self.clone(), id)
    }

    /// A bounded, replayable source over `items` (parallelism 1).
    pub fn from_collection<T: Data>(&self, items: Vec<T>) -> DataStream<T> {
        let items = Arc::new(items);
        self.add_non_parallel_source("Collection", move || CollectionSource::new(items.clone()))
    }

    /// `f(0), f(1), ..., f(count - 1)` (forever when `count` is `None`), at most `rate` records
    /// per second over all subtasks. Replayable and rescalable.
    pub fn generate<T: Data, F>(&self, count: Option<u64>, rate: Option<f64>, f: F) -> DataStream<T>
    where
        F: Fn(u64) -> T + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.add_source("Generator", move || {
            GeneratorSource::new(f.clone(), count, rate)
        })
    }

    /// Text lines from a TCP socket (`host:port`), e.g. fed by `nc -lk PORT`; parallelism 1.
    pub fn socket_text_stream(&self, address: &str) -> DataStream<String> {
        let address = address.to_string();
        self.add_non_parallel_source("Socket", move || SocketSource::new(&address))
    }

    /// Text lines from the files in `dir`. With `watch = Some(interval)` the directory is
    /// re-listed at that interval and new files are read too (the source never ends).
    pub fn read_text_files(
        &self,
        dir: impl AsRef<Path>,
        watch: Option<std::time::Duration>,
    ) -> DataStream<String> {
        let dir = dir.as_ref().to_path_buf();
        self.add_source("Files", move || FileSource::new(dir.clone(), watch))
    }

    /// The numbers `from..to`.
    pub fn generate_sequence(&self, from: u64, to: u64) -> DataStream<u64> {
        self.generate(Some(to.saturating_sub(from)), None, move |i| from + i)
    }

    /// Plans and runs the job on the embedded, in-process cluster; returns when it ends.
    ///
    /// Started with `--plan` (or `SLUICE_ROLE=plan`), the process prints the plan as JSON and
    /// exits instead; with `--worker MASTER` (or `SLUICE_ROLE=worker`), it runs the subtasks a
    /// master deploys to it and exits when the master ends the job.
    pub fn execute(&self, job_name: &str) -> Result<JobResult> {
        self.take_role(job_name);
        let result = self.execute_async(job_name)?.wait();
        crate::rest::linger();
        result
    }

    /// Acts on `--plan` / `--worker` (see [`StreamEnv::execute`]); returns only for the
    /// embedded role.
    fn take_role(&self, job_name: &str) {
        match cluster::role() {
            Role::Embedded => {}
            Role::Plan => match self.plan_json(job_name) {
                Ok(json) => {
                    println!("{json}");
                    std::process::exit(0);
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            },
            Role::Worker { master } => {
                let config = self.config.borrow().clone();
                let resolved = self.graph.borrow().resolve(
                    job_name,
                    config.parallelism,
                    config.max_parallelism,
                );
                let outcome = resolved.and_then(|r| cluster::run_job_process(r, config, &master));
                match outcome {
                    Ok(()) => std::process::exit(0),
                    Err(e) => {
                        eprintln!("{e}");
                        std::process::exit(1);
                    }
                }
            }
        }
    }

    /// Plans the job, starts it on the embedded cluster and returns at once.
    pub fn execute_async(&self, job_name: &str) -> Result<JobClient> {
        self.take_role(job_name);
        let config = self.config.borrow().clone();
        let graph = self.graph.borrow();
        // The REST API starts before the job, so a taken port fails the submission.
        let rest = crate::rest::start_if_configured(&config)?;
        let resolved = graph.resolve(job_name, config.parallelism, config.max_parallelism)?;
        let plan = resolved.plan.clone();
        let job_id = sluice_am::job::new_job_id();
        let metrics = sluice_am::MetricsRegistry::default();
        let executor = EmbeddedExecutor::new(resolved, &job_id, config.clone(), metrics.clone())?;
        let client = sluice_am::job::submit(
            plan.clone(),
            job_id,
            config.clone(),
            Box::new(executor),
            metrics,
        )?;
        if let Some(rest) = rest {
            rest.register(client.handle(), plan, &config)?;
        }
        Ok(client)
    }

    /// The job plan as JSON (uids, operators, parallelism, edges), without running it.
    pub fn plan_json(&self, job_name: &str) -> Result<String> {
        let config = self.config.borrow();
        let resolved =
            self.graph
                .borrow()
                .resolve(job_name, config.parallelism, config.max_parallelism)?;
        let mut plan = resolved.plan;
        plan.config = config.explicit().clone();
        Ok(plan.to_json())
    }
}
