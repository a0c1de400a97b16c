//! Signals: SIGINT or SIGTERM starts a graceful shutdown.

use std::future::Future;

/// Registers the SIGINT and SIGTERM handlers now (so a signal that arrives while the daemon is
/// still starting is not lost, nor fatal) and returns a future that resolves on the first.
pub fn signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut i), Ok(mut t)) => tokio::select! {
                    _ = i.recv() => tracing::info!(signal = "SIGINT", "Shutting down."),
                    _ = t.recv() => tracing::info!(signal = "SIGTERM", "Shutting down."),
                },
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    tracing::info!(signal = "SIGINT", "Shutting down.");
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(signal = "SIGINT", "Shutting down.");
    }
}
