//! Process plumbing both binaries share: logging through `tracing` (to
//! stderr, filter from `ARK_LOG`) and the shutdown signal (Ctrl-C or
//! SIGTERM, which is what systemd sends on stop).

/// Sets up `tracing` for a binary; `ARK_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str) {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        // Colour only for a person at a terminal, not in files or journald.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARK_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
