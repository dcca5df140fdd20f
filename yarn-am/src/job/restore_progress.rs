//! Progress of a restore's downloads (the files of RocksDB checkpoints), which can take a while
//! for large state: a live line on a terminal, and one summary line in logs when it was slow.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sluice_core::size::human;

/// How often the live line is redrawn.
const REDRAW: Duration = Duration::from_millis(200);
/// Restores faster than this get no summary line in non-terminal output.
const SUMMARY_AFTER: Duration = Duration::from_secs(1);

/// Reports the bytes fetched so far of `total`, until dropped.
pub struct RestoreProgress {
    fetched: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    painter: Option<std::thread::JoinHandle<()>>,
    started: Instant,
    total: u64,
    path: String,
}

impl RestoreProgress {
    /// Starts reporting the restore of `total` bytes from `path` (a live line on stderr only
    /// when stderr is a terminal).
    pub fn start(path: &str, total: u64) -> RestoreProgress {
        let fetched = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let painter = std::io::stderr().is_terminal().then(|| {
            let (fetched, done, path) = (fetched.clone(), done.clone(), path.to_string());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    eprint!("\r{} ", line(&path, fetched.load(Ordering::Relaxed), total));
                    let _ = std::io::stderr().flush();
                    std::thread::sleep(REDRAW);
                }
                eprint!("\r\x1b[2K");
                let _ = std::io::stderr().flush();
            })
        });
        RestoreProgress {
            fetched,
            done,
            painter,
            started: Instant::now(),
            total,
            path: path.to_string(),
        }
    }

    /// The counter the downloads add to.
    pub fn fetched(&self) -> &AtomicU64 {
        &self.fetched
    }
}

impl Drop for RestoreProgress {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        let painted = match self.painter.take() {
            Some(t) => t.join().is_ok(),
            None => false,
        };
        let took = self.started.elapsed();
        if painted || took >= SUMMARY_AFTER {
            eprintln!(
                "{} in {:.1} s",
                line(&self.path, self.fetched.load(Ordering::Relaxed), self.total),
                took.as_secs_f64()
            );
        }
    }
}

/// "Restoring state from <path>: 300.0 MiB of 1.2 GiB (25 %)".
fn line(path: &str, fetched: u64, total: u64) -> String {
    let pct = (fetched.saturating_mul(100))
        .checked_div(total)
        .unwrap_or(100)
        .min(100);
    format!(
        "Restoring state from {path}: {} of {} ({pct} %)",
        human(fetched),
        human(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_path_and_the_share_fetched() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(
            line("hdfs:///ck/job/chk-7", gib / 4, gib),
            "Restoring state from hdfs:///ck/job/chk-7: 256.0 MiB of 1.0 GiB (25 %)"
        );
        assert_eq!(
            line("p", 0, 0),
            "Restoring state from p: 0 B of 0 B (100 %)"
        );
    }

    #[test]
    fn the_counter_is_shared_with_the_downloads() {
        let p = RestoreProgress::start("p", 10);
        p.fetched().fetch_add(4, Ordering::Relaxed);
        assert_eq!(p.fetched.load(Ordering::Relaxed), 4);
    }
}
