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
//! Leadership is bound to the ZooKeeper session and to the leader's latch node. It is lost for
//! good, and the `on_lost` callback runs (the master process exits; a standby takes over),
//! when the session expires or is closed, when the latch node disappears (deleted by someone
//! else) or a lower latch node appears, when a worker refuses the leader's epoch as stale, or
//! when the connection to ZooKeeper is lost (SUSPENDED) and
//! `high-availability.zookeeper.client.tolerate-suspended-connections` is false. With it
//! true (the default), a lost connection only suspends the leader (no deployment, no
//! checkpoint completes) until the connection is back, and leadership is lost when it is not
//! back within the session timeout.

pub mod checkpoints;
pub mod store;
pub mod zk;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

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

pub(crate) use sluice_worker::daemon::zk::off_runtime;

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

type OnLost = Box<dyn FnOnce(String) + Send>;

/// Whether a leader may act, shared by everything that checks it; cheap to clone.
#[derive(Clone)]
pub struct LeaderGuard {
    inner: Arc<GuardState>,
}

struct GuardState {
    epoch: i64,
    /// False while the connection to ZooKeeper is lost (suspended), and for good once
    /// leadership is lost.
    active: AtomicBool,
    lost: AtomicBool,
    on_lost: Mutex<Option<OnLost>>,
}

impl LeaderGuard {
    fn new(epoch: i64, on_lost: OnLost) -> LeaderGuard {
        LeaderGuard {
            inner: Arc::new(GuardState {
                epoch,
                active: AtomicBool::new(true),
                lost: AtomicBool::new(false),
                on_lost: Mutex::new(Some(on_lost)),
            }),
        }
    }

    /// The leadership epoch guarded.
    pub fn epoch(&self) -> i64 {
        self.inner.epoch
    }

    /// Whether this master may act as leader now: it leads and its ZooKeeper connection is up.
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::SeqCst) && !self.inner.lost.load(Ordering::SeqCst)
    }

    /// `Err` naming `what` when this master may not act as leader now.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.is_active() {
            Ok(())
        } else {
            Err(SluiceError::Job(format!(
                "not the leading master (epoch {}; ZooKeeper connection suspended or \
                 leadership lost): refusing to {what}",
                self.inner.epoch
            )))
        }
    }

    fn set_connected(&self, up: bool) {
        self.inner.active.store(up, Ordering::SeqCst);
    }

    /// Leadership is lost for good: nothing is done as leader any more, and the `on_lost`
    /// callback runs (once, whoever calls first) with `reason`.
    pub fn depose(&self, reason: &str) {
        self.inner.active.store(false, Ordering::SeqCst);
        self.inner.lost.store(true, Ordering::SeqCst);
        let on_lost = self.inner.on_lost.lock().take();
        if let Some(f) = on_lost {
            f(reason.to_string());
        }
    }
}

/// This master's leadership: held from [`Leadership::elect`] until it is lost.
pub struct Leadership {
    zk: Arc<Zk>,
    ha: HaConfig,
    epoch: i64,
    latch: String,
    guard: LeaderGuard,
}

fn sequence_of(name: &str) -> Option<i64> {
    name.strip_prefix(LATCH_PREFIX)?.parse().ok()
}

impl Leadership {
    /// Joins the election and blocks until this master leads; `contender` is stored in the
    /// latch node (for people looking at ZooKeeper). After that, `on_lost` runs once when
    /// leadership is lost (see the module's documentation for when): on the ZooKeeper runtime,
    /// or on the thread that learnt of a stale epoch.
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
        let guard = LeaderGuard::new(epoch, Box::new(on_lost));
        spawn_session_monitor(&zk, guard.clone(), ha.tolerate_suspended_connections);
        spawn_latch_monitor(&zk, guard.clone(), dir, latch.clone(), epoch);
        Ok(Leadership {
            zk,
            ha: ha.clone(),
            epoch,
            latch,
            guard,
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

    /// The shared check of this leadership, for whatever must stop acting once it is lost.
    pub fn guard(&self) -> &LeaderGuard {
        &self.guard
    }

    /// Whether this master may act as leader now: it leads and its ZooKeeper connection is up.
    pub fn is_active(&self) -> bool {
        self.guard.is_active()
    }

    /// `Err` naming `what` when this master may not act as leader now.
    pub fn check(&self, what: &str) -> Result<()> {
        self.guard.check(what)
    }

    /// Leadership is lost for good (e.g. a worker refused this master's epoch as stale):
    /// `on_lost` runs with `reason`.
    pub fn depose(&self, reason: &str) {
        self.guard.depose(reason)
    }

    /// Gives leadership up at once (on SIGTERM): deletes `connection_info` and this master's
    /// latch node, so the next contender leads without waiting for the session to expire.
    /// The caller stops acting as leader before calling this (it exits after it).
    ///
    /// Cancellation: none. Connection loss: the deletes fail and are reported; the nodes then
    /// go when the session expires.
    pub fn resign(&self) {
        // Not `depose`: the caller decides what happens next (it exits).
        self.guard.inner.active.store(false, Ordering::SeqCst);
        self.guard.inner.lost.store(true, Ordering::SeqCst);
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

/// Watches the session. A lost connection (SUSPENDED) gives leadership up at once unless
/// `tolerate` (`high-availability.zookeeper.client.tolerate-suspended-connections`); with it,
/// it suspends leadership, reconnecting resumes it, and a connection lost for the session
/// timeout loses it. An expired or closed session always loses it.
fn spawn_session_monitor(zk: &Zk, guard: LeaderGuard, tolerate: bool) {
    let mut watcher = zk.client().state_watcher();
    let timeout: Duration = zk.client().session_timeout();
    zk.runtime().spawn(async move {
        let reason = loop {
            let state = watcher.peek_state();
            match state {
                zkc::SessionState::SyncConnected | zkc::SessionState::ConnectedReadOnly => {
                    guard.set_connected(true);
                    watcher.changed().await;
                }
                zkc::SessionState::Disconnected if !tolerate => {
                    guard.set_connected(false);
                    break format!(
                        "the ZooKeeper connection was lost (suspended) and {} is false",
                        sluice_core::config::keys::HA_ZK_TOLERATE_SUSPENDED
                    );
                }
                zkc::SessionState::Disconnected => {
                    guard.set_connected(false);
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
        guard.depose(&reason);
    });
}

/// How long the latch monitor waits before it looks again after a failed read (the session
/// monitor deals with the connection itself).
const LATCH_RETRY: Duration = Duration::from_millis(200);

/// Watches this leader's own latch node and its siblings: when the node disappears (deleted
/// by someone else) or a lower one appears, another contender may lead, so leadership is lost.
fn spawn_latch_monitor(zk: &Zk, guard: LeaderGuard, dir: String, latch: String, epoch: i64) {
    let client = zk.client().clone();
    zk.runtime().spawn(async move {
        let reason = loop {
            if guard.inner.lost.load(Ordering::SeqCst) {
                return;
            }
            if !guard.is_active() {
                // Suspended: nothing can be read until the connection is back.
                tokio::time::sleep(LATCH_RETRY).await;
                continue;
            }
            let (children, watcher) = match client.list_and_watch_children(&dir).await {
                Ok(r) => r,
                Err(zkc::Error::SessionExpired | zkc::Error::ClientClosed) => return,
                Err(_) => {
                    tokio::time::sleep(LATCH_RETRY).await;
                    continue;
                }
            };
            let mine = latch.rsplit('/').next().unwrap_or_default();
            if !children.iter().any(|c| c == mine) {
                break format!("its latch node {latch} was deleted");
            }
            if let Some(lower) = children
                .iter()
                .filter_map(|c| sequence_of(c).map(|s| (s, c)))
                .filter(|(s, _)| *s < epoch)
                .min()
            {
                break format!("a lower latch node {dir}/{} appeared", lower.1);
            }
            let ev = watcher.changed().await;
            if matches!(
                ev.session_state,
                zkc::SessionState::Expired | zkc::SessionState::Closed
            ) {
                return;
            }
        };
        eprintln!("sluice-am: {reason}; giving up leadership");
        guard.depose(&reason);
    });
}

/// What a leading master with HA holds: its leadership and the job store.
pub struct Ha {
    pub leadership: Leadership,
    pub store: JobStore,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_suspends_and_resumes_and_is_lost_once() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        let g = LeaderGuard::new(4, Box::new(move |r| seen.lock().push(r)));
        assert!(g.check("deploy").is_ok());
        g.set_connected(false);
        let e = g.check("deploy").expect_err("suspended").to_string();
        assert!(
            e.contains("epoch 4") && e.contains("refusing to deploy"),
            "{e}"
        );
        g.set_connected(true);
        assert!(
            g.is_active(),
            "a suspension ends when the connection is back"
        );
        g.depose("first");
        g.depose("second");
        g.set_connected(true);
        assert!(!g.is_active(), "lost leadership does not come back");
        assert_eq!(*calls.lock(), vec!["first".to_string()]);
    }
}
