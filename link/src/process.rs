//! Process plumbing both binaries share: logging through `tracing` (to
//! stderr, filter from `ARK_LOG`), the shutdown signal (Ctrl-C or
//! SIGTERM, which is what systemd sends on stop) and the `completions`
//! subcommand.

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

/// `completions SHELL`: shell completions for a binary, generated from its
/// own clap definition.
#[derive(Debug, clap::Args)]
pub struct CompletionsCmd {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl CompletionsCmd {
    /// Writes the completion script for `cmd` to stdout.
    pub fn print(&self, mut cmd: clap::Command) {
        let bin = cmd.get_name().to_string();
        clap_complete::generate(self.shell, &mut cmd, bin, &mut std::io::stdout());
    }
}
