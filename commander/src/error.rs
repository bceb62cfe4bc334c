//! The commander's error type, and the one place where domain errors become
//! gRPC statuses ([`CommanderError::into_status`]) or, for the dashboard,
//! HTTP statuses ([`CommanderError::into_http`]).

use std::path::PathBuf;

/// Result alias for the commander library.
pub type Result<T, E = CommanderError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CommanderError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Link(#[from] ark_link::LinkError),
    /// A caller without the right certificate.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A report on a lease the commander no longer recognises.
    #[error("{0}")]
    StaleLease(String),
    #[error("{0}")]
    BadToken(String),
    /// An upload whose bytes do not match their tree: cut.
    #[error("{0}")]
    Cut(String),
    /// Try again (e.g. the quarantined copy must be re-verified).
    #[error("{0}")]
    Aborted(String),
    /// The archive's disk is full: which disk, how much is free and needed.
    #[error("{0}")]
    NoSpace(String),
    /// The archive's object store did not answer (down, unreachable, out of
    /// quorum): nothing was committed, the verified upload stays in
    /// quarantine, and the same landing succeeds once the store is back.
    #[error("{0}")]
    StoreUnavailable(String),
    /// The archive's filesystem refuses a name: which name, which limit.
    /// Not transient: the run fails rather than retry the same name.
    #[error("{0}")]
    Name(String),
}

impl CommanderError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| {
            match source.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Self::NoSpace(format!(
                    "{what} {}: the disk is full ({} free there): free space on it, or move the archive \
                     (`archive` in commander.toml)",
                    path.display(),
                    ark_core::fs::free_space(&path).map_or("unknown".into(), |n| format!("{n} bytes"))
                ))
            }
            std::io::ErrorKind::InvalidFilename => Self::Name(format!(
                "{what} {}: the filesystem refuses this name ({source}); not retried: \
                 Ark builds every archive name to fit, so report it",
                path.display()
            )),
            _ => Self::Io { what, path, source },
        }
        }
    }

    /// Names the state database at `path` in a database error, and makes
    /// one caused by a full disk [`Self::NoSpace`] (SQLite rolled the
    /// transaction back: nothing is half-written, and the same call
    /// succeeds once there is room).
    pub fn on_database(self, path: &std::path::Path) -> Self {
        let Self::Db(e) = &self else {
            return self;
        };
        let code = e.sqlite_error_code();
        let full = code == Some(rusqlite::ErrorCode::DiskFull);
        let io = code == Some(rusqlite::ErrorCode::SystemIoFailure);
        if !ark_core::fs::out_of_room(path, full, io) {
            return self;
        }
        Self::NoSpace(format!(
            "state database {}: the disk is full ({} free there; {e}): nothing was written; \
             free space on it and the commander carries on by itself",
            path.display(),
            ark_core::fs::free_space(path).map_or("unknown".into(), |n| format!("{n} bytes")),
        ))
    }

    /// The service boundary: every RPC error passes through here once.
    pub fn into_status(self) -> tonic::Status {
        use tonic::Status;
        match self {
            Self::Unauthenticated(m) | Self::BadToken(m) => Status::unauthenticated(m),
            Self::PermissionDenied(m) => Status::permission_denied(m),
            Self::NotFound(m) => Status::not_found(m),
            Self::Invalid(m) => Status::invalid_argument(m),
            Self::AlreadyExists(m) => Status::already_exists(m),
            Self::StaleLease(m) => Status::failed_precondition(m),
            Self::Cut(m) => Status::data_loss(m),
            Self::Aborted(m) | Self::StoreUnavailable(m) => Status::aborted(m),
            Self::NoSpace(m) => Status::resource_exhausted(m),
            Self::Name(m) => Status::invalid_argument(m),
            other => {
                tracing::error!("internal error: {other:#}");
                Status::internal(format!("commander internal error: {other}"))
            }
        }
    }
}

impl CommanderError {
    /// The dashboard's boundary: the HTTP status and plain-text body.
    pub fn into_http(self) -> (axum::http::StatusCode, String) {
        use axum::http::StatusCode;
        let status = match &self {
            Self::Unauthenticated(_) | Self::BadToken(_) => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::AlreadyExists(_) => StatusCode::CONFLICT,
            _ => {
                tracing::error!("internal error: {self:#}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, format!("{self}\n"))
    }
}

impl From<CommanderError> for tonic::Status {
    fn from(e: CommanderError) -> Self {
        e.into_status()
    }
}
