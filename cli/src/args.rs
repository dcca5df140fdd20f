//! Verbs and flags, Flink's where Flink has them (`run -s -n -d -p -D`, `-m host:port`,
//! `stop --savepointPath --drain`, `savepoint --type`/`--dispose`), so Flink users need not
//! relearn them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Run Sluice jobs and operate them over the REST API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a job binary or bundle, handing it configuration, a restore path and a REST port.
    Run(RunArgs),
    /// Pack a job binary, its resources and its default configuration into one bundle file.
    Bundle(BundleArgs),
    /// List the jobs of the process behind the REST address.
    List(ListArgs),
    /// Take a savepoint of a running job.
    Savepoint(SavepointArgs),
    /// Stop a job with a savepoint (Flink's stop-with-savepoint).
    Stop(StopArgs),
    /// Cancel a job (no savepoint).
    Cancel(JobArgs),
    /// Trigger a checkpoint of a running job now and wait for it (Flink's `checkpoint`).
    Checkpoint(JobArgs),
    /// Show a job's checkpoint history, or `gc <dir>`: remove checkpoint files nothing references.
    Checkpoints(CheckpointsArgs),
    /// Show what a savepoint or checkpoint holds.
    Inspect(InspectArgs),
}

/// `-m host:port`: where the REST API is; default `rest.address`/`rest.port` of the
/// configuration (`$SLUICE_CONF_DIR` or `./conf`), else 127.0.0.1:8081.
#[derive(Args, Debug, Clone)]
pub struct Address {
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    pub jobmanager: Option<String>,
    /// The YARN application whose master to ask: its address comes from the
    /// ResourceManager's application report (`$HADOOP_CONF_DIR`).
    #[arg(
        long = "yarn-app",
        value_name = "APPLICATION_ID",
        conflicts_with = "jobmanager"
    )]
    pub yarn_app: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Submit the bundle to the master whose REST API is at this address, instead of running
    /// the job in a process of its own.
    #[arg(short = 'm', long = "jobmanager", value_name = "HOST:PORT")]
    pub jobmanager: Option<String>,
    /// Default parallelism of the job (`parallelism.default`).
    #[arg(short = 'p', long = "parallelism")]
    pub parallelism: Option<usize>,
    /// Restore from this savepoint or checkpoint (directory or its `_metadata` file).
    #[arg(short = 's', long = "fromSavepoint", value_name = "PATH")]
    pub from_savepoint: Option<String>,
    /// Allow state in the savepoint that no operator of the job claims.
    #[arg(
        short = 'n',
        long = "allowNonRestoredState",
        alias = "allow-non-restored-state"
    )]
    pub allow_non_restored: bool,
    /// Configuration for the job, with Flink's key names (repeatable).
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    pub dynamic: Vec<String>,
    /// Return once the job is submitted; its output goes to a log file.
    #[arg(short = 'd', long = "detached")]
    pub detached: bool,
    /// Port of the job's REST API (0: a free one); default `rest.port`, else 8081.
    #[arg(long = "rest-port", value_name = "PORT")]
    pub rest_port: Option<u16>,
    /// Where a detached job's output goes (default `$SLUICE_LOG_DIR`, else `./log`).
    #[arg(long = "log-dir", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// The job binary (a Rust program using the `sluice` crate), or a bundle of one written by
    /// `sluice bundle`: verified, unpacked to a temporary directory named to the job by
    /// `$SLUICE_BUNDLE_DIR`, its `conf/sluice.yaml` over the site configuration.
    pub job: PathBuf,
    /// Arguments for the job binary (after `--`); for a bundle, `${SLUICE_BUNDLE_DIR}` in them
    /// is replaced by the unpacked bundle's directory.
    #[arg(last = true)]
    pub job_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct BundleArgs {
    /// The job binary: an ELF executable, possibly built for another platform.
    pub binary: PathBuf,
    /// A file or directory shipped under `resources/` by its name (repeatable).
    #[arg(long = "resource", value_name = "PATH")]
    pub resources: Vec<PathBuf>,
    /// The job's default configuration, stored as `conf/sluice.yaml`.
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The bundle's name (default: the binary's file name).
    #[arg(long = "name")]
    pub name: Option<String>,
    /// The bundle file to write (default `<name>.bundle`).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub address: Address,
    /// Also show jobs that ended.
    #[arg(short = 'a', long = "all")]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct JobArgs {
    #[command(flatten)]
    pub address: Address,
    /// The 32-hex-digit job id (see `sluice list`).
    pub job_id: String,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CheckpointsArgs {
    #[command(subcommand)]
    pub action: Option<CheckpointsAction>,
    #[command(flatten)]
    pub address: Address,
    /// The 32-hex-digit job id (see `sluice list`).
    pub job_id: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum CheckpointsAction {
    /// List (or with --delete remove) the files under a checkpoint directory that no retained
    /// checkpoint references: partial `chk-<n>` directories and unreferenced shared files.
    /// Completed checkpoints and savepoints are never touched. Run it only for jobs that are
    /// not running: a checkpoint in progress looks exactly like garbage.
    Gc(GcArgs),
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// The checkpoint base directory (`state.checkpoints.dir`): a path, file:// or hdfs:// URL.
    pub dir: String,
    /// Delete the files instead of only printing what would be deleted.
    #[arg(long)]
    pub delete: bool,
}

/// `-t, --type`: Flink's savepoint format types.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FormatType {
    /// Key-group state every backend reads: restores into any backend and parallelism.
    #[default]
    Canonical,
    /// The state backend's own files (RocksDB's, copied): about a file copy to take and to
    /// restore, at any parallelism (on the heap backend the same as canonical).
    Native,
}

impl FormatType {
    /// As Flink's REST API spells it (`formatType`).
    pub fn rest_name(self) -> &'static str {
        match self {
            FormatType::Canonical => "CANONICAL",
            FormatType::Native => "NATIVE",
        }
    }
}

#[derive(Args, Debug)]
pub struct SavepointArgs {
    #[command(flatten)]
    pub address: Address,
    #[arg(required_unless_present = "dispose")]
    pub job_id: Option<String>,
    /// Where the savepoint directory is created (default `state.savepoints.dir` of the job).
    pub target_dir: Option<String>,
    /// The savepoint's format.
    #[arg(short = 't', long = "type", value_enum, default_value_t = FormatType::Canonical)]
    pub format: FormatType,
    /// Delete this savepoint (a directory with a valid `_metadata`, or that file; path,
    /// file:// or hdfs:// URL) instead of taking one. Flink's `--dispose`.
    #[arg(
        short = 'd',
        long = "dispose",
        value_name = "SAVEPOINT_PATH",
        conflicts_with_all = ["job_id", "target_dir"]
    )]
    pub dispose: Option<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[command(flatten)]
    pub address: Address,
    /// Where the savepoint directory is created (default `state.savepoints.dir` of the job).
    #[arg(short = 'p', long = "savepointPath", value_name = "DIR")]
    pub savepoint_path: Option<String>,
    /// Fire all event-time timers before the savepoint (for a job that is not resumed).
    #[arg(short = 'd', long = "drain")]
    pub drain: bool,
    /// The savepoint's format.
    #[arg(short = 't', long = "type", value_enum, default_value_t = FormatType::Canonical)]
    pub format: FormatType,
    pub job_id: String,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Keys and values are bincode as the job wrote them, printed as hex. \
A key whose bytes after an 8-byte length prefix are valid UTF-8 (a String key) also gets \
\"key_utf8\": a best-effort decoding, since the key type is known only to the job."
)]
pub struct InspectArgs {
    /// A savepoint or checkpoint directory, or its `_metadata` file (path or file:// URL).
    pub path: String,
    /// Print the keyed state entries of the operator with this uid as JSON lines.
    #[arg(long = "dump", value_name = "UID")]
    pub dump: Option<String>,
}
