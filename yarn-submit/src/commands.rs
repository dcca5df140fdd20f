//! `--list`, `--status`, `--kill`, and finding a running application's master for the
//! `sluice` CLI (`--yarn-app`).

use std::time::Duration;

use crate::cleanup::{self, Removed};
use crate::error::{Error, Result};
use crate::hadoop_conf::HadoopConf;
use crate::rm::{AppReport, RmClient};
use crate::staging::Staging;
use crate::submit::user_name;

fn rm() -> Result<(HadoopConf, RmClient)> {
    let conf = HadoopConf::from_env()?;
    let rm = RmClient::new(&conf, &user_name())?;
    Ok((conf, rm))
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Like `yarn application -list`: one row per application, newest first.
pub async fn list(all: bool) -> Result<String> {
    let (_, rm) = rm()?;
    let apps = rm.apps(all).await?;
    let mut out = format!("Total number of applications: {}\n", apps.len());
    out.push_str("Application-Id\tApplication-Name\tUser\tQueue\tState\tFinal-State\tProgress\tTracking-URL\n");
    for a in apps {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{:.0}%\t{}\n",
            a.id, a.name, a.user, a.queue, a.state, a.final_status, a.progress, a.tracking_url
        ));
    }
    Ok(out)
}

/// Like `yarn application -status`.
pub async fn status(app_id: &str) -> Result<String> {
    let (_, rm) = rm()?;
    let a = rm.app(app_id).await?;
    Ok(format_report(&a))
}

pub fn format_report(a: &AppReport) -> String {
    let rows = [
        ("Application-Id", a.id.clone()),
        ("Application-Name", a.name.clone()),
        ("Application-Type", a.application_type.clone()),
        ("User", a.user.clone()),
        ("Queue", a.queue.clone()),
        ("Start-Time", time(a.started_time)),
        ("Finish-Time", time(a.finished_time)),
        ("Progress", format!("{:.0}%", a.progress)),
        ("State", a.state.clone()),
        ("Final-State", a.final_status.clone()),
        ("Tracking-URL", a.tracking_url.clone()),
        (
            "Master-Address",
            a.am_address().unwrap_or("N/A").to_string(),
        ),
        ("AM-Container-Logs", a.am_container_logs.clone()),
        (
            "Aggregate-Resource",
            format!(
                "{} MB, {} vcores",
                a.allocated_mb.max(0),
                a.allocated_v_cores.max(0)
            ),
        ),
        ("Diagnostics", a.diagnostics.trim().to_string()),
    ];
    let mut out = String::from("Application Report :\n");
    for (k, v) in rows {
        out.push_str(&format!("\t{k} : {v}\n"));
    }
    out
}

/// What `--kill` did.
#[derive(Debug, Clone)]
pub struct Killed {
    /// The report after the kill.
    pub report: AppReport,
    /// The application had ended before (then only what it left behind was removed).
    pub had_ended: bool,
    /// The HA nodes and directory removed (with `high-availability.type: zookeeper`).
    pub removed: Removed,
}

/// Kills the application (waiting until YARN says it ended) and removes what its master,
/// killed with it, cannot: its staging directory and, with ZooKeeper high availability, its
/// ZooKeeper nodes and HA storage directory (see [`crate::cleanup`]).
pub async fn kill(app_id: &str) -> Result<Killed> {
    let (conf, rm) = rm()?;
    let had_ended = rm.app(app_id).await?.is_terminal();
    let report = rm.kill(app_id, Duration::from_secs(60)).await?;
    let user = if report.user.is_empty() {
        user_name()
    } else {
        report.user.clone()
    };
    let staging = Staging::new(&conf, &user, app_id)?;
    // The staged configuration says where the HA state is: read before the directory goes.
    let removed = match cleanup::staged_config(&staging).await {
        Ok(Some(config)) => cleanup::remove_ha(&config).await,
        Ok(None) => Ok(Removed::default()),
        Err(e) => Err(e),
    };
    staging.remove().await?;
    Ok(Killed {
        report,
        had_ended,
        removed: removed?,
    })
}

/// The REST address (`host:port`) of a running application's master, from the
/// ResourceManager's report (`amRPCAddress`: the master registers its REST port as its RPC
/// port, as Flink's does).
pub async fn master_address(app_id: &str) -> Result<String> {
    let (_, rm) = rm()?;
    let a = rm.app(app_id).await?;
    if a.is_terminal() {
        return Err(Error::Usage(format!(
            "application {app_id} has ended ({}, {}): it has no master any more",
            a.state, a.final_status
        )));
    }
    a.am_address().map(str::to_string).ok_or_else(|| {
        Error::Usage(format!(
            "application {app_id} is {} and its master has not registered yet; try again shortly",
            a.state
        ))
    })
}

/// [`master_address`] for callers without a tokio runtime (the `sluice` CLI).
pub fn master_address_blocking(app_id: &str) -> Result<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start a runtime: {e}")))?
        .block_on(master_address(app_id))
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_times_in_utc() {
        assert_eq!(super::time(0), "-");
        assert_eq!(super::time(1_795_655_910_233), "2026-11-26 01:18:30 UTC");
        assert_eq!(super::time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
