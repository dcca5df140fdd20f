//! Turns SIGTERM and SIGINT into an orderly stop: one small thread waits for either signal.

use sluice_core::{Result, SluiceError};
use tokio::signal::unix::{SignalKind, signal};

/// Calls `on_signal` with the signal's name (`SIGTERM` or `SIGINT`) on a dedicated thread
/// when the process receives the first of them. From then on the default action of these
/// signals (ending the process at once) no longer applies.
pub fn on_termination(on_signal: impl FnOnce(&'static str) + Send + 'static) -> Result<()> {
    let internal = |what: &str, e: std::io::Error| {
        SluiceError::Internal(format!("cannot handle SIGTERM and SIGINT ({what}): {e}"))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| internal("runtime", e))?;
    // Registered here, before this function returns, so no signal is missed after it.
    let (mut term, mut int) = {
        let _guard = runtime.enter();
        (
            signal(SignalKind::terminate()).map_err(|e| internal("SIGTERM", e))?,
            signal(SignalKind::interrupt()).map_err(|e| internal("SIGINT", e))?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(256 << 10)
        .spawn(move || {
            let name = runtime.block_on(async {
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                }
            });
            on_signal(name)
        })
        .map_err(|e| internal("thread", e))?;
    Ok(())
}
