//! Fencing of deposed masters on the worker side: a worker (daemon or job process) remembers
//! the newest leadership epoch it has seen, from the messages of its masters and, with high
//! availability, from the leader published in ZooKeeper, and refuses every message that
//! carries an older one. A master that lost leadership without noticing (paused, partitioned)
//! can therefore deploy nothing and neither trigger nor complete a checkpoint on a worker that
//! already heard of its successor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::protocol::{ToMaster, ToWorker};

/// The newest epoch seen, shared by the threads of one worker; also counts refusals (the
/// daemon's Prometheus endpoint and tests read them).
#[derive(Debug, Default)]
pub struct EpochFence {
    highest: AtomicI64,
    refused: AtomicU64,
}

/// Environment variable through which a daemon hands its newest epoch to the job processes
/// it starts.
pub const EPOCH_ENV: &str = "SLUICE_LEADER_EPOCH";

impl EpochFence {
    pub fn new(highest: i64) -> Arc<EpochFence> {
        Arc::new(EpochFence {
            highest: AtomicI64::new(highest),
            refused: AtomicU64::new(0),
        })
    }

    /// A fence starting at the epoch in [`EPOCH_ENV`] (0 when unset).
    pub fn from_env() -> Arc<EpochFence> {
        let epoch = std::env::var(EPOCH_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Self::new(epoch)
    }

    /// The newest epoch seen.
    pub fn highest(&self) -> i64 {
        self.highest.load(Ordering::SeqCst)
    }

    /// How many messages were refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Records `epoch` (from ZooKeeper or an accepted message); returns whether it is newer
    /// than every epoch seen before.
    pub fn observe(&self, epoch: i64) -> bool {
        self.highest.fetch_max(epoch, Ordering::SeqCst) < epoch
    }

    /// Whether `msg` from the master at `master` may be carried out: messages without an
    /// epoch always may; one with an epoch older than the newest seen is refused, with the
    /// line to log and the reply to send; a newer one raises the fence.
    pub fn admit(&self, msg: &ToWorker, master: SocketAddr, who: &str) -> Result<(), Box<Refusal>> {
        let Some(epoch) = msg.epoch() else {
            return Ok(());
        };
        let highest = self.highest.fetch_max(epoch, Ordering::SeqCst);
        if epoch >= highest {
            return Ok(());
        }
        self.refused.fetch_add(1, Ordering::SeqCst);
        let what = msg.name().to_string();
        Err(Box::new(Refusal {
            log: format!(
                "{who}: refusing {what} from the master at {master}: it carries leadership \
                 epoch {epoch}, older than epoch {highest} seen before (a deposed master)"
            ),
            reply: ToMaster::StaleEpoch {
                what,
                epoch,
                highest,
            },
        }))
    }
}

/// A refused message: what to log, and the error reply for the master.
#[derive(Debug)]
pub struct Refusal {
    pub log: String,
    pub reply: ToMaster,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(epoch: i64) -> ToWorker {
        ToWorker::Deploy {
            attempt: 1,
            placement: Vec::new(),
            restore: None,
            epoch,
        }
    }

    #[test]
    fn older_epochs_are_refused_newer_ones_raise_the_fence() {
        let master: SocketAddr = "127.0.0.1:6123".parse().expect("an address");
        let fence = EpochFence::new(5);
        assert!(fence.admit(&deploy(5), master, "w").is_ok());
        assert!(fence.admit(&ToWorker::Heartbeat, master, "w").is_ok());
        let r = fence
            .admit(&deploy(4), master, "w")
            .expect_err("epoch 4 < 5");
        assert!(
            r.log
                .contains("refusing Deploy from the master at 127.0.0.1:6123")
                && r.log.contains("epoch 4, older than epoch 5"),
            "{}",
            r.log
        );
        assert!(matches!(
            r.reply,
            ToMaster::StaleEpoch {
                epoch: 4,
                highest: 5,
                ..
            }
        ));
        assert!(fence.admit(&deploy(9), master, "w").is_ok());
        assert_eq!(fence.highest(), 9);
        assert!(fence.admit(&deploy(5), master, "w").is_err());
        assert!(!fence.observe(3));
        assert!(fence.observe(10));
        assert_eq!((fence.highest(), fence.refused()), (10, 2));
    }
}
