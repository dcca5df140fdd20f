//! The HistoryServer: polls the directories masters archive finished jobs into, caches the
//! archives locally and serves their REST documents read-only under Flink's paths.
//!
//! Flink's keys: `historyserver.archive.fs.dir` (comma-separated `file://`/`hdfs://`
//! directories), `historyserver.archive.fs.refresh-interval` (default 10 s),
//! `historyserver.archive.retained-jobs` (default -1: all; per directory, the oldest jobs by
//! end time beyond it leave the cache and the index, and their archives are deleted),
//! `historyserver.web.port` (8082),
//! `historyserver.web.address` (0.0.0.0), `historyserver.web.tmpdir` (the cache; default a
//! fresh temporary directory), `historyserver.log.jobmanager.url-pattern` and
//! `historyserver.log.taskmanager.url-pattern` (`<jobid>`, `<tmid>` are replaced).
//!
//! Served: `/config`, `/overview`, `/jobs`, `/jobs/overview` (every archived job, newest
//! first), every path an archive holds (`/jobs/<id>`, `/jobs/<id>/checkpoints`, ...), and,
//! when the patterns are set, Flink's `/jobs/<id>/jobmanager/log-url` and
//! `/jobs/<id>/taskmanagers/<tm-id>/log-url` (`{"url": ...}`); all also under `/v1`. Other API
//! paths are 404 with Flink's `{"errors": [...]}`; non-API paths are the dashboard's files.
//! Only files of the cache directory (reached through path segments of letters, digits, `-`
//! and `_`) and the compiled-in dashboard are ever served.

pub mod cache;
pub mod config;
pub mod error;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use cache::Cache;
pub use config::HistoryConfig;
pub use error::{HistoryError, Result};

/// A running HistoryServer: its HTTP server and its polling thread. Dropping it stops both.
pub struct HistoryServer {
    addr: SocketAddr,
    cache: Arc<Cache>,
    stop: Arc<AtomicBool>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// Removed on drop when the cache is a temporary directory of our own.
    _tmp: Option<tempfile::TempDir>,
}

impl HistoryServer {
    /// Binds the port, then serves and polls in the background (the first poll at once).
    pub fn start(config: HistoryConfig) -> Result<HistoryServer> {
        let (root, tmp) = match &config.tmpdir {
            Some(dir) => (dir.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("sluice-web-history-")
                    .tempdir()
                    .map_err(|e| HistoryError::io(std::env::temp_dir().display(), e))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let cache = Arc::new(Cache::new(root, config.retained_jobs)?);
        let bind = format!("{}:{}", config.address, config.port);
        let listener = std::net::TcpListener::bind(&bind)
            .and_then(|l| l.set_nonblocking(true).map(|_| l))
            .map_err(|e| HistoryError::io(format!("the HistoryServer address {bind}"), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HistoryError::io(format!("the HistoryServer address {bind}"), e))?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_poller(cache.clone(), &config, stop.clone())?;
        let router = server::router(Arc::new(server::AppState {
            cache: cache.clone(),
            config,
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| HistoryError::io("the HistoryServer runtime", e))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("historyserver-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            let serving = axum::serve(l, router).with_graceful_shutdown(async {
                                let _ = rx.await;
                            });
                            if let Err(e) = serving.await {
                                eprintln!("historyserver: HTTP server at {addr} stopped: {e}");
                            }
                        }
                        Err(e) => eprintln!("historyserver: cannot listen on {addr}: {e}"),
                    }
                })
            })
            .map_err(|e| HistoryError::io("the HistoryServer HTTP thread", e))?;
        Ok(HistoryServer {
            addr,
            cache,
            stop,
            shutdown: Some(tx),
            _tmp: tmp,
        })
    }

    /// The bound address (with the real port when 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Waits until at least `n` jobs are cached, or `timeout`; returns whether they are.
    pub fn wait_for_jobs(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.cache.len() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for HistoryServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Polls the archive directories every refresh interval on a thread of its own (storage
/// calls block; HDFS ones on the storage layer's own runtime).
fn spawn_poller(cache: Arc<Cache>, config: &HistoryConfig, stop: Arc<AtomicBool>) -> Result<()> {
    let dirs = config.archive_dirs.clone();
    let interval = config.refresh_interval;
    std::thread::Builder::new()
        .name("historyserver-poll".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let added = cache.refresh(&dirs);
                if added > 0 {
                    eprintln!(
                        "historyserver: {added} new archived job(s), {} cached",
                        cache.len()
                    );
                }
                let until = Instant::now() + interval;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20).min(interval));
                }
            }
        })
        .map_err(|e| HistoryError::io("the HistoryServer polling thread", e))?;
    Ok(())
}
