//! `sluice-recovery-bench [--backend hashmap|rocksdb] [--state-mib 100]`: the time from an
//! injected failure to the first output after recovery, with a given amount of keyed state.
//!
//! The job keeps a ~100-byte value per key (state-mib MiB in all), checkpoints every second
//! into a temporary directory, and restarts without delay (`fixed-delay`, 0 ms) so the figure
//! is the engine's own: cancel the failed attempt, read the latest checkpoint, redeploy,
//! restore state, and deliver the first record to the sink.

/// Records are allocated on one task thread and freed on another; mimalloc handles that
/// far better than the system allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use sluice::prelude::*;
use sluice::{Collector, Operator, OperatorContext, SluiceError};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "hashmap")]
    backend: String,
    /// Keyed state to build before the failure, in MiB (about 100 bytes per key).
    #[arg(long, default_value_t = 100)]
    state_mib: u64,
}

static ARMED: AtomicBool = AtomicBool::new(false);
static FAILED: AtomicBool = AtomicBool::new(false);
static FAILED_AT_US: AtomicI64 = AtomicI64::new(0);
static RECOVERED_AFTER_US: AtomicI64 = AtomicI64::new(0);
static ATTEMPTS: AtomicU64 = AtomicU64::new(0);
static SEEN: AtomicU64 = AtomicU64::new(0);

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Records when the first record of a restarted attempt arrives.
struct FirstOutputAfterRecovery {
    restarted: bool,
}

impl Operator for FirstOutputAfterRecovery {
    type In = (u64, u64);
    type Out = ();

    fn open(&mut self, _ctx: &mut OperatorContext) -> sluice::Result<()> {
        self.restarted = ATTEMPTS.fetch_add(1, Ordering::SeqCst) > 0;
        Ok(())
    }

    fn process_batch(
        &mut self,
        batch: sluice::Batch<(u64, u64)>,
        _out: &mut Collector<()>,
        _ctx: &mut OperatorContext,
    ) -> sluice::Result<()> {
        SEEN.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if self.restarted && !batch.is_empty() && RECOVERED_AFTER_US.load(Ordering::SeqCst) == 0 {
            RECOVERED_AFTER_US.store(
                now_us() - FAILED_AT_US.load(Ordering::SeqCst),
                Ordering::SeqCst,
            );
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let keys = args.state_mib * (1 << 20) / 100;
    let dir = std::env::temp_dir().join(format!("sluice-recovery-bench-{}", std::process::id()));
    let env = StreamEnv::new();
    env.set("state.backend.type", &args.backend)?;
    env.set("execution.checkpointing.interval", "1 s")?;
    env.set("state.checkpoints.dir", dir.to_str().unwrap_or("/tmp"))?;
    env.set("restart-strategy.type", "fixed-delay")?;
    env.set("restart-strategy.fixed-delay.delay", "0 ms")?;
    // Fill every key once, then keep updating them at a steady rate.
    env.generate(None, None, move |i| i % keys)
        .uid("keys")
        .map(|k: u64| (k, format!("{k:0>96}")))
        .uid("values")
        .try_flat_map(|r: (u64, String), out: &mut Collector<(u64, String)>| {
            if ARMED.load(Ordering::Relaxed) && !FAILED.swap(true, Ordering::SeqCst) {
                FAILED_AT_US.store(now_us(), Ordering::SeqCst);
                return Err(SluiceError::job("injected failure"));
            }
            out.collect(r);
            Ok(())
        })
        .uid("fail-once")
        .key_by_field(|r: &(u64, String)| &r.0)
        .reduce(|_old, new| new)
        .uid("latest")
        .map(|(k, v): (u64, String)| (k, v.len() as u64))
        .add_sink("Sink: first after recovery", || FirstOutputAfterRecovery {
            restarted: false,
        });
    let client = env.execute_async("recovery-bench")?;
    // Wait until every key has a value and a checkpoint holds them.
    let fill_start = Instant::now();
    while SEEN.load(Ordering::Relaxed) < keys {
        if client.is_finished() || fill_start.elapsed() > Duration::from_secs(600) {
            bail!("the job stopped before filling its state");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(id) = client.wait_for_checkpoint(Duration::from_secs(120)) else {
        bail!("no checkpoint completed after filling the state");
    };
    let size = client
        .view()
        .checkpoints
        .iter()
        .find(|c| c.id == id)
        .map(|c| c.state_size)
        .unwrap_or(0);
    ARMED.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(120);
    while RECOVERED_AFTER_US.load(Ordering::SeqCst) == 0 {
        if Instant::now() > deadline {
            bail!("no output within 120 s after the failure");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let recovery_ms = RECOVERED_AFTER_US.load(Ordering::SeqCst) as f64 / 1000.0;
    client.cancel();
    let result = client.wait()?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "sluice recovery backend={} keys={keys} checkpoint_id={id} checkpoint_mib={:.1} failure_to_first_output_ms={recovery_ms:.0} restarts={}",
        args.backend,
        size as f64 / (1 << 20) as f64,
        result.restarts
    );
    Ok(())
}
