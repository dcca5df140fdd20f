//! A blocking handle on one ZooKeeper session, shared by the master's high availability and
//! the worker daemon's leader lookup. The `zookeeper-client` crate is async; the session runs
//! on a small tokio runtime of its own and every call here blocks the calling thread until
//! ZooKeeper answers. Any number of threads may call at once.
//!
//! Cancellation: a call cannot be cancelled; it returns when ZooKeeper answers or the client
//! gives up. Connection loss: a call made while the client is disconnected waits for the
//! client to reconnect within the session timeout and fails with `ConnectionLoss` (or
//! `SessionExpired`) otherwise; a write that failed this way may or may not have happened.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::{Result, SluiceError};
use zookeeper_client as zkc;

/// The ZooKeeper errors callers tell apart.
pub use zkc::Error as ZkError;
pub use zkc::SessionState;

/// One ZooKeeper session and the runtime that drives it.
pub struct Zk {
    client: Arc<zkc::Client>,
    quorum: String,
    rt: tokio::runtime::Runtime,
}

/// A ZooKeeper failure as the crate's error, naming what was being done.
pub fn zk_err(what: &str, e: impl std::fmt::Display) -> SluiceError {
    SluiceError::Job(format!("ZooKeeper: {what}: {e}"))
}

/// Runs blocking `f` here, or on a helper thread when this thread drives a tokio runtime
/// (blocking calls may not run there).
pub fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

impl Zk {
    /// Opens a session to `quorum` (`host:port,...`). Fails when no member answers within
    /// the session timeout.
    pub fn connect(quorum: &str, session_timeout: Duration) -> Result<Zk> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zookeeper")
            .enable_all()
            .build()
            .map_err(|e| {
                SluiceError::Internal(format!("cannot start the ZooKeeper runtime: {e}"))
            })?;
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    session_timeout,
                    zkc::Client::connector()
                        .with_session_timeout(session_timeout)
                        .with_connection_timeout(session_timeout.min(Duration::from_secs(15)))
                        .connect(quorum),
                )
                .await
            })
            .map_err(|_| {
                SluiceError::Job(format!(
                    "ZooKeeper at {quorum} did not answer within {session_timeout:?}"
                ))
            })?
            .map_err(|e| zk_err(&format!("connecting to {quorum}"), e))?;
        Ok(Zk {
            rt,
            client: Arc::new(client),
            quorum: quorum.to_string(),
        })
    }

    pub fn quorum(&self) -> &str {
        &self.quorum
    }

    pub fn client(&self) -> &Arc<zkc::Client> {
        &self.client
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Runs `f` on the ZooKeeper runtime and waits for it; callable from any thread, also
    /// from within another runtime (the REST API's).
    pub fn block_on<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        off_runtime(|| self.rt.block_on(f))
    }

    /// `mkdir -p` of persistent nodes.
    pub fn mkdirs(&self, path: &str) -> Result<()> {
        let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
        self.block_on(self.client.mkdir(path, &opts))
            .map_err(|e| zk_err(&format!("creating {path}"), e))
    }

    /// Creates a persistent node with `data`, or replaces the data of an existing one.
    pub fn put(&self, path: &str, data: &[u8]) -> Result<()> {
        let opts = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
        self.block_on(async {
            match self.client.create(path, data, &opts).await {
                Ok(_) => Ok(()),
                Err(zkc::Error::NodeExists) => {
                    self.client.set_data(path, data, None).await.map(|_| ())
                }
                Err(e) => Err(e),
            }
        })
        .map_err(|e| zk_err(&format!("writing {path}"), e))
    }

    /// The node's data, `None` when it does not exist.
    pub fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.block_on(self.client.get_data(path)) {
            Ok((data, _)) => Ok(Some(data)),
            Err(zkc::Error::NoNode) => Ok(None),
            Err(e) => Err(zk_err(&format!("reading {path}"), e)),
        }
    }

    /// The node's children, empty when it does not exist.
    pub fn children(&self, path: &str) -> Result<Vec<String>> {
        match self.block_on(self.client.list_children(path)) {
            Ok(c) => Ok(c),
            Err(zkc::Error::NoNode) => Ok(Vec::new()),
            Err(e) => Err(zk_err(&format!("listing {path}"), e)),
        }
    }

    /// Deletes a node; a missing node is not an error.
    pub fn delete(&self, path: &str) -> Result<()> {
        match self.block_on(self.client.delete(path, None)) {
            Ok(()) | Err(zkc::Error::NoNode) => Ok(()),
            Err(e) => Err(zk_err(&format!("deleting {path}"), e)),
        }
    }

    /// The session's state as of now.
    pub fn state(&self) -> SessionState {
        self.client.state()
    }
}
