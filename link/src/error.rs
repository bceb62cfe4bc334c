//! What can go wrong on the link between an agent (or the commander's CLI)
//! and a commander: TLS set-up, the address, the enrolment token, and an RPC
//! the commander refused or could not be reached for.

/// Result alias for the link.
pub type Result<T, E = LinkError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the enrolment token is malformed: {0} (copy the whole token printed by `ark-commander enroll NAME`)")]
    BadToken(String),
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("bad commander address {url:?}: {message} (expected https://HOST:PORT)")]
    BadUrl { url: String, message: String },
    #[error("the commander refused {call}: {status}")]
    Refused {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("cannot reach the commander for {call}: {status} (is it running, and is the address right?)")]
    Unreachable {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("the commander rejected this device's TLS certificate during {call} ({detail}): it was not issued by this commander's CA; enrol again with a fresh token")]
    CertificateRejected { call: &'static str, detail: String },
}

impl LinkError {
    /// Sorts a failed RPC into "the commander said no" and "we could not
    /// reach it": the first is final, the second is worth retrying.
    pub fn rpc(call: &'static str, status: tonic::Status) -> Self {
        use tonic::Code;
        // With TLS 1.3 the server judges a client certificate after the
        // client's side of the handshake is done, so a rejection arrives as
        // a TLS alert on the first request, buried in the transport error.
        let chain = format!("{status:?}");
        if let Some(at) = chain.find("received fatal alert: ") {
            let detail = chain[at..]
                .split(['"', ' ', ')', ','].as_slice())
                .take(4)
                .collect::<Vec<_>>()
                .join(" ");
            return Self::CertificateRejected { call, detail };
        }
        match status.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => {
                Self::Unreachable {
                    call,
                    status: Box::new(status),
                }
            }
            _ => Self::Refused {
                call,
                status: Box::new(status),
            },
        }
    }

    /// True when the commander said no to this agent or this lease (stale
    /// generation, reassigned run, unknown certificate): final, stop.
    pub fn is_refusal(&self) -> bool {
        use tonic::Code;
        match self {
            Self::Refused { status, .. } => matches!(
                status.code(),
                Code::FailedPrecondition
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::NotFound
            ),
            Self::CertificateRejected { .. } => true,
            _ => false,
        }
    }

    /// True when the commander was not reached (worth retrying as is).
    pub fn is_link(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// True when the commander said "not now" to a call that will succeed
    /// as is later: `ABORTED` (it still holds an earlier attempt of the same
    /// work, e.g. an upload stream cut by a partition that it has not reaped
    /// yet) or `RESOURCE_EXHAUSTED` (its state database is full: nothing
    /// happened, and the call succeeds once it has room).
    pub fn is_retry_later(&self) -> bool {
        use tonic::Code;
        matches!(self, Self::Refused { status, .. } if matches!(status.code(), Code::Aborted | Code::ResourceExhausted))
    }

    /// True when the commander cut an upload whose bytes did not match
    /// their tree (`DATA_LOSS`).
    pub fn is_cut(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if status.code() == tonic::Code::DataLoss)
    }
}
