//! `sluice-worker [--config FILE] [-D key=value]...`: the worker daemon, which offers task slots
//! to the master and runs job processes for it.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sluice_core::config::HaConfig;
use sluice_worker::daemon::leader::LeaderLookup;
use sluice_worker::daemon::{self, Daemon, Settings, Stopped, Stopper, Unpack};

/// How long to wait before trying ZooKeeper or a master again.
const RETRY: Duration = Duration::from_millis(250);
/// How long one watch for a published leader lasts before the daemon looks again.
const WAIT: Duration = Duration::from_secs(5);

const USAGE: &str = "usage: sluice-worker [--config FILE] [-D key=value]...

Registers with the master at jobmanager.rpc.address:jobmanager.rpc.port, offers
taskmanager.numberOfTaskSlots slots and runs the job processes the master starts here.
With high-availability.type: zookeeper it registers with the leading master published in
ZooKeeper instead, and follows the next leader when that master is lost.
Options:
  --config FILE    configuration file (YAML, Flink key names)
  -D key=value     overrides a configuration key (repeatable)
  -h, --help       prints this help";

/// How the bundle of a `LaunchJob` becomes a program: a job bundle is unpacked and verified
/// in full; a bare executable (what a master started with a job binary sends) is started as
/// it is.
const UNPACK: Unpack = |bundle, into| {
    let mut magic = [0u8; 2];
    let gzip = std::fs::File::open(bundle)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|_| magic == [0x1f, 0x8b]);
    if gzip {
        sluice_bundle::open_bundle(bundle, into)
            .map(|b| b.entry())
            .map_err(|e| format!("{e:#}"))
    } else {
        daemon::bare_executable(bundle, into)
    }
};

struct Cli {
    config: Option<PathBuf>,
    overrides: Vec<String>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Cli>, String> {
    let mut cli = Cli {
        config: None,
        overrides: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--config" => {
                let file = args.next().ok_or("--config needs a file")?;
                cli.config = Some(PathBuf::from(file));
            }
            "-D" => cli.overrides.push(args.next().ok_or("-D needs key=value")?),
            _ => {
                if let Some(file) = a.strip_prefix("--config=") {
                    cli.config = Some(PathBuf::from(file));
                } else if let Some(kv) = a.strip_prefix("-D") {
                    cli.overrides.push(kv.to_string());
                } else {
                    return Err(format!("unexpected argument '{a}'"));
                }
            }
        }
    }
    Ok(Some(cli))
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args().skip(1)) {
        Ok(Some(cli)) => cli,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sluice-worker: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let settings = match Settings::load(cli.config.as_deref(), &cli.overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let ha = match sluice_core::Config::load(cli.config.as_deref(), &cli.overrides)
        .map_err(|e| e.to_string())
        .and_then(|c| c.ha.check().map(|()| c.ha))
    {
        Ok(ha) => ha,
        Err(e) => {
            eprintln!("sluice-worker: {e}");
            return ExitCode::from(2);
        }
    };
    match sluice_core::Config::load(cli.config.as_deref(), &cli.overrides)
        .map_err(|e| e.to_string())
        .and_then(|c| {
            sluice_worker::prometheus::start_for_worker(&c, &settings.worker_id, settings.slots)
        }) {
        Ok(Some(addr)) => eprintln!("sluice-worker: Prometheus metrics at http://{addr}/metrics"),
        Ok(None) => {}
        Err(e) => {
            eprintln!("sluice-worker: {e}");
            return ExitCode::from(2);
        }
    }
    if ha.enabled() {
        return follow_the_leader(settings, &ha);
    }
    let id = settings.worker_id.clone();
    let daemon = match Daemon::register(settings, UNPACK) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("sluice-worker {id}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let master = daemon.master();
    let stopper = daemon.stopper();
    let signal_id = id.clone();
    if let Err(e) = daemon::on_termination(move |signal| {
        let killed = stopper.stop();
        eprintln!(
            "sluice-worker {signal_id}: stopped by {signal}; killed {killed} job process(es)"
        );
        std::process::exit(0);
    }) {
        eprintln!("sluice-worker {id}: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "sluice-worker {id} registered with {master} ({} slots)",
        daemon.settings().slots
    );
    match daemon.serve() {
        Stopped::Shutdown => {
            eprintln!("sluice-worker {id}: the master at {master} shut this worker down");
            ExitCode::SUCCESS
        }
        Stopped::MasterLost { reason, killed } => {
            eprintln!(
                "sluice-worker {id}: lost the master at {master} ({reason}); \
                 killed {killed} job process(es)"
            );
            ExitCode::FAILURE
        }
    }
}

/// With ZooKeeper HA: registers with the leader published in ZooKeeper, and when that master
/// is lost (its job processes killed), waits for the next leader and registers again. Ends
/// only when a master shuts the worker down, or on SIGTERM/SIGINT.
fn follow_the_leader(settings: Settings, ha: &HaConfig) -> ExitCode {
    let id = settings.worker_id.clone();
    let current: Arc<Mutex<Option<Stopper>>> = Arc::default();
    let on_signal = current.clone();
    let signal_id = id.clone();
    if let Err(e) = daemon::on_termination(move |signal| {
        let killed = on_signal.lock().as_ref().map_or(0, Stopper::stop);
        eprintln!(
            "sluice-worker {signal_id}: stopped by {signal}; killed {killed} job process(es)"
        );
        std::process::exit(0);
    }) {
        eprintln!("sluice-worker {id}: {e}");
        return ExitCode::FAILURE;
    }
    let mut lookup: Option<LeaderLookup> = None;
    let mut announced_wait = false;
    // The newest leadership epoch seen, kept across masters: a deposed master is refused.
    let fence = sluice_worker::control::EpochFence::new(0);
    loop {
        let l = match &lookup {
            Some(l) => l,
            None => match LeaderLookup::connect(ha) {
                Ok(l) => lookup.insert(l),
                Err(e) => {
                    eprintln!("sluice-worker {id}: {e}; trying again");
                    std::thread::sleep(RETRY);
                    continue;
                }
            },
        };
        let info = match l.current() {
            Ok(Some(info)) => info,
            Ok(None) => {
                if !announced_wait {
                    eprintln!("sluice-worker {id}: waiting for a leading master");
                    announced_wait = true;
                }
                if let Err(e) = l.wait_for_new(None, WAIT) {
                    eprintln!("sluice-worker {id}: {e}; reconnecting to ZooKeeper");
                    lookup = None;
                    std::thread::sleep(RETRY);
                }
                continue;
            }
            Err(e) => {
                eprintln!("sluice-worker {id}: {e}; reconnecting to ZooKeeper");
                lookup = None;
                std::thread::sleep(RETRY);
                continue;
            }
        };
        fence.observe(info.epoch);
        let mut s = settings.clone();
        s.master_addr = info.address;
        s.master = info.address.to_string();
        let daemon = match Daemon::register_fenced(s, UNPACK, fence.clone()) {
            Ok(d) => d,
            Err(e) => {
                if !announced_wait {
                    eprintln!(
                        "sluice-worker {id}: the leader (epoch {}) at {}: {e}; waiting for a \
                         leading master",
                        info.epoch, info.address
                    );
                    announced_wait = true;
                }
                // The published leader may be gone, its node not yet expired: wait for the
                // node to change, or try the same leader again shortly.
                if let Err(e) = l.wait_for_new(Some(info.epoch), RETRY) {
                    eprintln!("sluice-worker {id}: {e}; reconnecting to ZooKeeper");
                    lookup = None;
                }
                continue;
            }
        };
        *current.lock() = Some(daemon.stopper());
        println!(
            "sluice-worker {id} registered with {} ({} slots; leader epoch {})",
            info.address,
            daemon.settings().slots,
            info.epoch
        );
        let outcome = daemon.serve();
        *current.lock() = None;
        match outcome {
            Stopped::Shutdown => {
                eprintln!(
                    "sluice-worker {id}: the master at {} shut this worker down",
                    info.address
                );
                return ExitCode::SUCCESS;
            }
            Stopped::MasterLost { reason, killed } => eprintln!(
                "sluice-worker {id}: lost the master at {} ({reason}); killed {killed} job \
                 process(es); waiting for a leading master",
                info.address
            ),
        }
        announced_wait = true;
    }
}
