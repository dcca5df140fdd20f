//! The command line, with Flink's flags where Flink has them (`-p -s -n -D -d`, `--name`,
//! `--queue`), and `yarn application`'s verbs for operating applications.

use std::path::PathBuf;

use clap::{ArgGroup, Parser};

use crate::spec::Overrides;

#[derive(Parser, Debug)]
#[command(
    name = "yarn-submit",
    version,
    about = "Run a Sluice job bundle as a YARN application, or list, show or kill applications",
    group(ArgGroup::new("verb").args(["list", "status", "kill", "bundle"]).required(true))
)]
pub struct Args {
    /// Default parallelism of the job (`parallelism.default`).
    #[arg(short = 'p', long = "parallelism")]
    pub parallelism: Option<usize>,
    /// Restore from this savepoint or checkpoint (`execution.savepoint.path`).
    #[arg(short = 's', long = "fromSavepoint", value_name = "PATH")]
    pub from_savepoint: Option<String>,
    /// Allow state in the savepoint that no operator of the job claims.
    #[arg(
        short = 'n',
        long = "allowNonRestoredState",
        alias = "allow-non-restored-state"
    )]
    pub allow_non_restored: bool,
    /// Configuration with Flink's key names (repeatable), over `$SLUICE_CONF_DIR/sluice.yaml`.
    #[arg(short = 'D', value_name = "KEY=VALUE")]
    pub dynamic: Vec<String>,
    /// The application's (and job's) name (`pipeline.name`; default the bundle's name).
    #[arg(long = "name")]
    pub name: Option<String>,
    /// The YARN queue (`yarn.application.queue`; default `default`).
    #[arg(long = "queue")]
    pub queue: Option<String>,
    /// Return once YARN has accepted the application.
    #[arg(short = 'd', long = "detached")]
    pub detached: bool,
    /// List the Sluice applications that are submitted, accepted or running.
    #[arg(long = "list")]
    pub list: bool,
    /// With --list: also the ones that ended.
    #[arg(short = 'a', long = "all", requires = "list")]
    pub all: bool,
    /// Show an application's report.
    #[arg(long = "status", value_name = "APPLICATION_ID")]
    pub status: Option<String>,
    /// Kill an application and remove its staging directory.
    #[arg(long = "kill", value_name = "APPLICATION_ID")]
    pub kill: Option<String>,
    /// The job bundle (written by `sluice bundle`).
    pub bundle: Option<PathBuf>,
    /// Arguments for the job (after `--`).
    #[arg(last = true)]
    pub job_args: Vec<String>,
}

impl Args {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            dynamic: self.dynamic.clone(),
            parallelism: self.parallelism,
            savepoint: self.from_savepoint.clone(),
            allow_non_restored: self.allow_non_restored,
            name: self.name.clone(),
            queue: self.queue.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flink_flags_and_verbs() {
        let a = Args::try_parse_from([
            "yarn-submit",
            "-p",
            "4",
            "-D",
            "a=b",
            "--queue",
            "q",
            "-d",
            "wc.bundle",
            "--",
            "--rate",
            "5",
        ])
        .unwrap();
        assert_eq!(a.parallelism, Some(4));
        assert!(a.detached);
        assert_eq!(a.bundle, Some(PathBuf::from("wc.bundle")));
        assert_eq!(a.job_args, ["--rate", "5"]);
        assert_eq!(a.overrides().queue.as_deref(), Some("q"));

        let k = Args::try_parse_from(["yarn-submit", "--kill", "application_1_2"]).unwrap();
        assert_eq!(k.kill.as_deref(), Some("application_1_2"));
        assert!(
            Args::try_parse_from(["yarn-submit"]).is_err(),
            "nothing to do"
        );
        assert!(Args::try_parse_from(["yarn-submit", "--list", "x.bundle"]).is_err());
    }
}
