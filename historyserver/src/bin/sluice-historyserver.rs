//! `sluice-historyserver`: serves the archives of finished jobs (see the crate's docs for the
//! keys and paths). Started by `scripts/historyserver.sh`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sluice_historyserver::{HistoryConfig, HistoryServer};

#[derive(Parser)]
#[command(
    name = "sluice-historyserver",
    version,
    about = "The Sluice HistoryServer"
)]
struct Args {
    /// Configuration file (`conf/sluice.yaml`); default `$SLUICE_CONF_DIR/sluice.yaml` if it
    /// exists.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Configuration overrides, `key=value` (Flink's key names).
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    dynamic: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = args.config.or_else(|| {
        let dir = std::env::var_os("SLUICE_CONF_DIR").filter(|d| !d.is_empty())?;
        Some(PathBuf::from(dir).join("sluice.yaml")).filter(|f| f.is_file())
    });
    let config = sluice_core::Config::load(file.as_deref(), &args.dynamic)
        .context("the HistoryServer's configuration")?;
    let config =
        HistoryConfig::from_config(&config).context("the HistoryServer's configuration")?;
    let dirs = config.archive_dirs.join(", ");
    let server = HistoryServer::start(config).context("starting the HistoryServer")?;
    eprintln!(
        "sluice-historyserver: serving archived jobs at http://{}, polling {dirs}, cache {}",
        server.local_addr(),
        server.cache().root().display()
    );
    loop {
        std::thread::park();
    }
}
