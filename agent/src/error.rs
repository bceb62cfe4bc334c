//! The agent's error type. Each variant says what failed and what to do;
//! the binary prints the chain once and maps it to an exit code.

use std::path::PathBuf;

pub use ark_link::LinkError;

/// Result alias for the agent library.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// Everything that can go wrong in the agent library.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("this agent is not enrolled: {0} is missing (run `ark-agent enroll --commander URL --token TOKEN` first)")]
    NotEnrolled(PathBuf),
    /// TLS, the address, the token, or an RPC (see [`LinkError`]).
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("certificate request failed: {0}")]
    Certificate(#[from] rcgen::Error),
}

impl AgentError {
    /// Builds an I/O error that names the file and what was being done.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { what, path, source }
    }

    /// A TLS set-up failure.
    pub fn tls(message: impl Into<String>) -> Self {
        Self::Link(LinkError::Tls(message.into()))
    }

    /// A failed RPC, sorted (see [`LinkError::rpc`]).
    pub fn rpc(call: &'static str, status: tonic::Status) -> Self {
        Self::Link(LinkError::rpc(call, status))
    }

    /// True when the commander said no to this agent or this lease: final.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Link(e) if e.is_refusal())
    }

    /// True when the commander was not reached (worth retrying as is).
    pub fn is_link(&self) -> bool {
        matches!(self, Self::Link(e) if e.is_link())
    }

    /// True when the commander is busy with an earlier attempt or its
    /// disk is full (worth retrying shortly, as is).
    pub fn is_retry_later(&self) -> bool {
        matches!(self, Self::Link(e) if e.is_retry_later())
    }

    /// True when the commander cut an upload whose bytes did not match
    /// their tree (`DATA_LOSS`).
    pub fn is_cut(&self) -> bool {
        matches!(self, Self::Link(e) if e.is_cut())
    }
}
