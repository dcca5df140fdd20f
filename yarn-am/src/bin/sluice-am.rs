//! `sluice-am`: the master process of a standalone cluster. It accepts worker daemons on the
//! control port, job bundles over its REST API, and runs each job on the workers' slots.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sluice_am::cluster::Cluster;
use sluice_am::ha::{Ha, JobStore, Leadership, Zk};
use sluice_am::rest::{
    Dispatcher, REST_ADDRESS_KEY, REST_BIND_ADDRESS_KEY, REST_PORT_KEY, RestServer,
};
use sluice_worker::control::protocol::LeaderInfo;

#[derive(Parser)]
#[command(name = "sluice-am", version, about = "The Sluice master")]
struct Args {
    /// Configuration file (`conf/sluice.yaml`).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Configuration overrides, `key=value` (Flink's key names).
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    dynamic: Vec<String>,
    /// Run as the YARN ApplicationMaster of one job (inside the AM container).
    #[arg(long)]
    yarn: bool,
}

/// Connects to ZooKeeper, opens the job store and blocks until this master leads. Losing
/// leadership later ends the process: a standby takes over.
fn elect(config: &sluice_core::Config) -> anyhow::Result<Arc<Ha>> {
    let quorum = config.ha.zk_quorum.as_deref().unwrap_or_default();
    let zk = Arc::new(
        Zk::connect(quorum, config.ha.zk_session_timeout).context("connecting to ZooKeeper")?,
    );
    let store = JobStore::open(zk.clone(), &config.ha).context("opening the HA job store")?;
    let contender = format!("sluice-am pid {}", std::process::id());
    let leadership = Leadership::elect(zk, &config.ha, &contender, |reason| {
        eprintln!("sluice-am: lost leadership: {reason}; exiting");
        std::process::exit(3);
    })
    .context("the leader election")?;
    Ok(Arc::new(Ha { leadership, store }))
}

/// The control address workers can reach: the bound address, with the configured host
/// when the master bound a wildcard address.
fn advertise(host: &str, bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified()
        && let Ok(mut addrs) = std::net::ToSocketAddrs::to_socket_addrs(&(host, bound.port()))
        && let Some(a) = addrs.next()
    {
        return a;
    }
    bound
}

/// Flink's default REST port.
const DEFAULT_REST_PORT: u16 = 8081;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.yarn {
        sluice_am::yarn::am::run(args.config.as_deref(), &args.dynamic)
            .context("the YARN ApplicationMaster")?;
        return Ok(());
    }
    let config = sluice_am::rest::conf::load(args.config.as_deref(), &args.dynamic)
        .context("the master's configuration")?;
    config
        .ha
        .check()
        .map_err(anyhow::Error::msg)
        .context("the master's configuration")?;
    // With HA, a master stands by until it leads; only the leader listens for workers and
    // jobs.
    let ha = if config.ha.enabled() {
        Some(elect(&config)?)
    } else {
        None
    };
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
    let rest = RestServer::start(dispatcher.clone(), &bind, port, &advertised)
        .context("starting the REST API")?;
    eprintln!(
        "sluice-am: workers connect to {}, REST API at {}",
        cluster.addr(),
        rest.url()
    );
    if let Some(ha) = ha {
        let epoch = ha.leadership.epoch();
        cluster.enable_ha(ha.clone());
        // A master stopped with SIGTERM/SIGINT hands leadership over at once.
        let resigning = ha.clone();
        sluice_worker::daemon::on_termination(move |signal| {
            eprintln!("sluice-am: stopped by {signal}; giving up leadership");
            resigning.leadership.resign();
            std::process::exit(0);
        })
        .context("handling SIGTERM")?;
        let recovered = cluster
            .recover_jobs(&config)
            .context("recovering the jobs of the HA job store")?;
        for (client, plan) in recovered {
            let name = plan.name.clone();
            dispatcher.add_job(client.handle(), &name, plan, &config);
            eprintln!("sluice-am: recovered job {}", client.job_id());
        }
        let info = LeaderInfo {
            address: advertise(&config.cluster.rpc_address, cluster.addr()),
            rest: rest.url().to_string(),
            epoch,
        };
        ha.leadership
            .publish(&info)
            .context("publishing the leader's address")?;
        eprintln!(
            "sluice-am: leader (epoch {epoch}) published at {}",
            sluice_am::ha::connection_info_path(&config.ha)
        );
    }
    loop {
        std::thread::park();
    }
}
