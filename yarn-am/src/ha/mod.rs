//! ZooKeeper high availability of the standalone master.
//!
//! Layout under `<high-availability.zookeeper.path.root>/<high-availability.cluster-id>`:
//! - `leader/latch/latch-<seq>`: one ephemeral sequential node per master; the lowest
//!   sequence number leads, every other master watches its predecessor. The leader's sequence
//!   number is its leadership epoch.
//! - `leader/connection_info`: ephemeral, written by the leader: [`LeaderInfo`] as JSON.
//! - `jobs/<job-id>`: persistent pointers (the URL) to the stored jobs under
//!   `<high-availability.storageDir>/<cluster-id>/jobs/<job-id>`; see [`store`].
//! - `checkpoint-counter/<job-id>` and `checkpoints/<job-id>/chk-<id>`: checkpoint ids and
//!   completed-checkpoint pointers, written only by the leader; see [`checkpoints`].
//!
//! Leadership is bound to the ZooKeeper session: when the connection is lost the leader
//! suspends (no deployment, no checkpoint completes); when it is not back within the session
//! timeout, or the session expired, leadership is lost for good and the `on_lost` callback
//! runs (the master process exits; a standby takes over).

pub mod checkpoints;
pub mod store;
pub mod zk;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sluice_core::config::HaConfig;
use sluice_core::{Result, SluiceError};
use sluice_worker::control::protocol::LeaderInfo;
use zookeeper_client as zkc;

pub use store::{JobStore, StoredJob};
pub use zk::Zk;

/// `<base>/leader/latch`.
pub fn latch_dir(ha: &HaConfig) -> String {
    format!("{}/leader/latch", ha.zk_base())
}

/// `<base>/leader/connection_info`.
pub fn connection_info_path(ha: &HaConfig) -> String {
    format!("{}/leader/connection_info", ha.zk_base())
}

/// `<base>/jobs`.
pub fn jobs_dir(ha: &HaConfig) -> String {
    format!("{}/jobs", ha.zk_base())
}

const LATCH_PREFIX: &str = "latch-";

/// Runs blocking `f` here, or on a helper thread when this thread drives a tokio runtime
/// (blocking calls may not run there).
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// How often a standby probes the leader's control port, and how many refused connections in
/// a row mean its process is gone.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
const REFUSALS_TO_TAKE_OVER: u32 = 3;

/// Returns once the leader published at `info_path` (with latch sequence `leader_seq`) has
/// refused [`REFUSALS_TO_TAKE_OVER`] connections in a row on its control address: nothing
/// listens there any more, so its process is gone even though its session has not expired.
/// A leader that is slow, paused or unreachable does not refuse (the connection times out or
/// hangs), so this never fires for it; waiting for its session to expire stays the only way.
async fn leader_refuses(client: &zkc::Client, info_path: &str, leader_seq: Option<i64>) {
    let mut refusals = 0;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let info = match client.get_data(info_path).await {
            Ok((data, _)) => serde_json::from_slice::<LeaderInfo>(&data).ok(),
            Err(_) => None,
        };
        let Some(info) = info.filter(|i| Some(i.epoch) == leader_seq) else {
            refusals = 0;
            continue;
        };
        let probe =
            tokio::time::timeout(PROBE_INTERVAL, tokio::net::TcpStream::connect(info.address))
                .await;
        match probe {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => refusals += 1,
            _ => refusals = 0,
        }
        if refusals >= REFUSALS_TO_TAKE_OVER {
            return;
        }
    }
}

/// This master's leadership: held from [`Leadership::elect`] until the session is lost.
pub struct Leadership {
    zk: Arc<Zk>,
    ha: HaConfig,
    epoch: i64,
    latch: String,
    /// False while the connection to ZooKeeper is lost (suspended), and for good once the
    /// session is gone.
    active: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
}

fn sequence_of(name: &str) -> Option<i64> {
    name.strip_prefix(LATCH_PREFIX)?.parse().ok()
}

impl Leadership {
    /// Joins the election and blocks until this master leads; `contender` is stored in the
    /// latch node (for people looking at ZooKeeper). After that, `on_lost` runs once (on the
    /// ZooKeeper runtime) when leadership is lost: the session expired or was closed, or the
    /// connection stayed lost for the session timeout.
    ///
    /// Cancellation: none; the call returns only as leader or with an error. Connection loss
    /// while waiting: the wait goes on as long as the session survives; an expired session is
    /// an error (its latch node is gone with it).
    pub fn elect(
        zk: Arc<Zk>,
        ha: &HaConfig,
        contender: &str,
        on_lost: impl FnOnce(String) + Send + 'static,
    ) -> Result<Leadership> {
        let dir = latch_dir(ha);
        zk.mkdirs(&dir)?;
        zk.mkdirs(&jobs_dir(ha))?;
        let client = zk.client().clone();
        let prefix = format!("{dir}/{LATCH_PREFIX}");
        let opts = zkc::CreateMode::EphemeralSequential.with_acls(zkc::Acls::anyone_all());
        let (_, seq) = zk
            .block_on(client.create(&prefix, contender.as_bytes(), &opts))
            .map_err(|e| zk::zk_err(&format!("joining the election under {dir}"), e))?;
        let epoch = seq.into_i64();
        let latch = format!("{prefix}{seq}");
        eprintln!("sluice-am: joined the leader election as {latch}");
        loop {
            let mut seqs: Vec<(i64, String)> = zk
                .children(&dir)?
                .into_iter()
                .filter_map(|n| sequence_of(&n).map(|s| (s, n)))
                .collect();
            seqs.sort();
            if !seqs.iter().any(|(s, _)| *s == epoch) {
                return Err(SluiceError::Job(format!(
                    "ZooKeeper: the latch node {latch} disappeared (the session expired)"
                )));
            }
            let Some((_, pred)) = seqs.iter().rev().find(|(s, _)| *s < epoch) else {
                break;
            };
            let leader_seq = seqs.first().map(|(s, _)| *s);
            let pred_is_leader = seqs
                .iter()
                .rev()
                .find(|(s, _)| *s < epoch)
                .is_some_and(|(s, _)| Some(*s) == leader_seq);
            let pred = format!("{dir}/{pred}");
            eprintln!("sluice-am: standing by behind {pred}");
            let info_path = connection_info_path(ha);
            let waited = zk.block_on(async {
                let (stat, watcher) = client.check_and_watch_stat(&pred).await?;
                if stat.is_none() {
                    return Ok(());
                }
                let gone = async {
                    let ev = watcher.changed().await;
                    if matches!(
                        ev.session_state,
                        zkc::SessionState::Expired
                            | zkc::SessionState::Closed
                            | zkc::SessionState::AuthFailed
                    ) {
                        return Err(zkc::Error::SessionExpired);
                    }
                    Ok(())
                };
                if !pred_is_leader {
                    return gone.await;
                }
                tokio::select! {
                    r = gone => r,
                    () = leader_refuses(&client, &info_path, leader_seq) => {
                        // The leader's process is gone (its control port refuses connections):
                        // take over now instead of waiting for its session to expire. Its
                        // latch node goes, and with it any write it could still attempt, as
                        // every checkpoint write checks that node.
                        eprintln!(
                            "sluice-am: the leader ({pred}) refuses connections on its control \
                             port; taking over without waiting for its ZooKeeper session to expire"
                        );
                        match client.delete(&pred, None).await {
                            Ok(()) | Err(zkc::Error::NoNode) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                }
            });
            waited.map_err(|e| zk::zk_err(&format!("watching {pred}"), e))?;
        }
        eprintln!("sluice-am: leading with epoch {epoch}");
        let active = Arc::new(AtomicBool::new(true));
        let lost = Arc::new(AtomicBool::new(false));
        spawn_session_monitor(&zk, active.clone(), lost.clone(), on_lost);
        Ok(Leadership {
            zk,
            ha: ha.clone(),
            epoch,
            latch,
            active,
            lost,
        })
    }

    /// The leadership epoch: grows with every term, never reused.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The `high-availability.*` settings this master was elected with.
    pub fn config(&self) -> &HaConfig {
        &self.ha
    }

    pub fn latch(&self) -> &str {
        &self.latch
    }

    pub fn zk(&self) -> &Arc<Zk> {
        &self.zk
    }

    /// Whether this master may act as leader now: it leads and its ZooKeeper connection is up.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst) && !self.lost.load(Ordering::SeqCst)
    }

    /// `Err` naming `what` when this master may not act as leader now.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.is_active() {
            Ok(())
        } else {
            Err(SluiceError::Job(format!(
                "not the leading master (epoch {}; ZooKeeper connection suspended or lost): \
                 refusing to {what}",
                self.epoch
            )))
        }
    }

    /// Gives leadership up at once (on SIGTERM): deletes `connection_info` and this master's
    /// latch node, so the next contender leads without waiting for the session to expire.
    /// The caller stops acting as leader before calling this (it exits after it).
    ///
    /// Cancellation: none. Connection loss: the deletes fail and are reported; the nodes then
    /// go when the session expires.
    pub fn resign(&self) {
        self.active.store(false, Ordering::SeqCst);
        self.lost.store(true, Ordering::SeqCst);
        for path in [connection_info_path(&self.ha), self.latch.clone()] {
            if let Err(e) = self.zk.delete(&path) {
                eprintln!("sluice-am: resigning: {e}");
            }
        }
    }

    /// Publishes this leader's addresses at `leader/connection_info` (ephemeral, so it goes
    /// with the session). A node left by a previous leader is replaced.
    ///
    /// Cancellation: none. Connection loss: fails (see [`zk`]); the caller exits, as the
    /// master could not be found.
    pub fn publish(&self, info: &LeaderInfo) -> Result<()> {
        self.check("publish its address")?;
        let path = connection_info_path(&self.ha);
        let data = serde_json::to_vec(info).expect("leader info serialises");
        let client = self.zk.client().clone();
        let opts = zkc::CreateMode::Ephemeral.with_acls(zkc::Acls::anyone_all());
        self.zk
            .block_on(async {
                loop {
                    match client.create(&path, &data, &opts).await {
                        Ok(_) => return Ok(()),
                        Err(zkc::Error::NodeExists) => match client.delete(&path, None).await {
                            Ok(()) | Err(zkc::Error::NoNode) => {}
                            Err(e) => return Err(e),
                        },
                        Err(e) => return Err(e),
                    }
                }
            })
            .map_err(|e| zk::zk_err(&format!("publishing {path}"), e))
    }
}

/// Watches the session: a lost connection suspends leadership; reconnecting resumes it; an
/// expired or closed session, or a connection lost for the session timeout, loses it.
fn spawn_session_monitor(
    zk: &Zk,
    active: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    on_lost: impl FnOnce(String) + Send + 'static,
) {
    let mut watcher = zk.client().state_watcher();
    let timeout: Duration = zk.client().session_timeout();
    zk.runtime().spawn(async move {
        let reason = loop {
            let state = watcher.peek_state();
            match state {
                zkc::SessionState::SyncConnected | zkc::SessionState::ConnectedReadOnly => {
                    active.store(true, Ordering::SeqCst);
                    watcher.changed().await;
                }
                zkc::SessionState::Disconnected => {
                    active.store(false, Ordering::SeqCst);
                    eprintln!("sluice-am: ZooKeeper connection lost; leadership suspended");
                    match tokio::time::timeout(timeout, watcher.changed()).await {
                        Ok(s) => {
                            if matches!(
                                s,
                                zkc::SessionState::SyncConnected
                                    | zkc::SessionState::ConnectedReadOnly
                            ) {
                                eprintln!("sluice-am: ZooKeeper connection back; leading again");
                            }
                        }
                        Err(_) => {
                            break format!(
                                "the ZooKeeper connection stayed lost for the session timeout \
                                 ({timeout:?})"
                            );
                        }
                    }
                }
                other => break format!("the ZooKeeper session ended ({other:?})"),
            }
        };
        active.store(false, Ordering::SeqCst);
        lost.store(true, Ordering::SeqCst);
        on_lost(reason);
    });
}

/// What a leading master with HA holds: its leadership and the job store.
pub struct Ha {
    pub leadership: Leadership,
    pub store: JobStore,
}
