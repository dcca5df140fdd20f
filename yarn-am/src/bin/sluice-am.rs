//! `sluice-am`: the master process of a standalone cluster. It accepts worker daemons on the
//! control port, job bundles over its REST API, and runs each job on the workers' slots.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sluice_am::cluster::Cluster;
use sluice_am::rest::{
    Dispatcher, REST_ADDRESS_KEY, REST_BIND_ADDRESS_KEY, REST_PORT_KEY, RestServer,
};

#[derive(Parser)]
#[command(name = "sluice-am", version, about = "The Sluice master")]
struct Args {
    /// Configuration file (`conf/sluice.yaml`).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Configuration overrides, `key=value` (Flink's key names).
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    dynamic: Vec<String>,
}

/// Flink's default REST port.
const DEFAULT_REST_PORT: u16 = 8081;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = sluice_am::rest::conf::load(args.config.as_deref(), &args.dynamic)
        .context("the master's configuration")?;
    let cluster = Cluster::start(config.cluster.clone()).context("starting the control plane")?;
    let port = match config.get_raw(REST_PORT_KEY) {
        Some(p) => p
            .trim()
            .parse::<u16>()
            .with_context(|| format!("{REST_PORT_KEY}: '{p}' is not a port number"))?,
        None => DEFAULT_REST_PORT,
    };
    let advertised = config
        .get_raw(REST_ADDRESS_KEY)
        .unwrap_or(&config.cluster.rpc_address)
        .to_string();
    let bind = config
        .get_raw(REST_BIND_ADDRESS_KEY)
        .unwrap_or(&advertised)
        .to_string();
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.set_cluster(cluster.clone(), config.clone());
    let rest =
        RestServer::start(dispatcher, &bind, port, &advertised).context("starting the REST API")?;
    eprintln!(
        "sluice-am: workers connect to {}, REST API at {}",
        cluster.addr(),
        rest.url()
    );
    loop {
        std::thread::park();
    }
}
