//! The gRPC services: enrolment (no client certificate), the agent session
//! (an enrolled agent's certificate) and admin (the admin certificate).
//!
//! Identity comes only from the TLS layer ([`PeerInfo`]): the fingerprint of
//! the verified client certificate is looked up in the state database. No
//! field in any message can make one agent act as another. Domain errors
//! become `tonic::Status` through `CommanderError::into_status`, once, here.

use std::sync::Arc;

use ark_core::unix_ms;
use ark_link::token::EnrollToken;
use ark_proto::admin_server::Admin;
use ark_proto::agent_session_server::AgentSession;
use ark_proto::enrollment_server::Enrollment;
use ark_proto::*;
use tonic::{Request, Response, Status};

use crate::archive::Archive;

mod admin;
use crate::pki::Pki;
use crate::scheduler::Scheduler;
use crate::state;
use crate::tls::PeerInfo;
use crate::upload;
use crate::{CommanderError, Result};

/// Default page size for `runs` listings.
const DEFAULT_RUNS_LIMIT: u32 = 50;

/// What every service needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    scheduler: Scheduler,
    archive: Archive,
    /// Runs with an upload being received.
    uploading: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    pki: Pki,
    listen: String,
}

type Reply<T> = std::result::Result<Response<T>, Status>;

fn reply<T>(result: Result<T>) -> Reply<T> {
    result
        .map(Response::new)
        .map_err(CommanderError::into_status)
}

/// Marks a run as being uploaded for as long as it lives.
struct UploadGuard {
    set: Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
    run: i64,
}

impl UploadGuard {
    fn claim(
        set: &Arc<std::sync::Mutex<std::collections::HashSet<i64>>>,
        run: i64,
    ) -> Option<Self> {
        let fresh = set.lock().unwrap_or_else(|p| p.into_inner()).insert(run);
        fresh.then(|| Self {
            set: set.clone(),
            run,
        })
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.run);
    }
}

/// Names for agents and targets: short, and safe as a file name and a path
/// segment on the NAS whatever the operator typed.
pub fn validate_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CommanderError::Invalid(format!(
            "{what} name {name:?} is not allowed: use 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        )))
    }
}

/// A target name derived from its URL: the last path segment, else the host.
pub fn name_from_url(url: &str) -> String {
    let uri: tonic::transport::Uri = url.parse().unwrap_or_default();
    let segment = uri.path().rsplit('/').find(|s| !s.is_empty()).unwrap_or("");
    let raw = if segment.is_empty() {
        uri.host().unwrap_or("target")
    } else {
        segment
    };
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(['.', '-'])
        .chars()
        .take(64)
        .collect();
    if name.is_empty() {
        "target".into()
    } else {
        name
    }
}

impl Services {
    pub fn new(scheduler: Scheduler, archive: Archive, pki: Pki, listen: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                scheduler,
                archive,
                uploading: Arc::default(),
                pki,
                listen,
            }),
        }
    }

    /// Runs `f` on tokio's blocking pool. Store calls take a lock and may
    /// wait on the disk (an fsync on a Pi's SD card can take 100 ms); doing
    /// them there keeps the async workers free for the other agents' TLS.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Services) -> Result<T> + Send + 'static,
    ) -> Reply<T> {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || f(&this)).await {
            Ok(result) => reply(result),
            Err(e) => Err(Status::internal(format!("commander task failed: {e}"))),
        }
    }

    fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    fn store(&self) -> &state::Store {
        &self.inner.scheduler.store
    }

    /// The commander's default maximum age of a target, in ms.
    fn max_age_ms(&self) -> u64 {
        self.inner.scheduler.config.max_age.as_millis() as u64
    }

    fn fingerprint<T>(req: &Request<T>) -> Result<String> {
        req.extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.cert_fingerprint.clone())
            .ok_or_else(|| {
                CommanderError::Unauthenticated(
                    "a client certificate is required: enrol this device with `ark-agent enroll --commander URL --token TOKEN`"
                        .into(),
                )
            })
    }

    /// The enrolled agent behind this request's certificate.
    fn agent<T>(&self, req: &Request<T>) -> Result<String> {
        let fingerprint = Self::fingerprint(req)?;
        self.store()
            .read(|c| state::agent_by_cert(c, &fingerprint))?
            .ok_or_else(|| {
                CommanderError::Unauthenticated(
                    "this certificate belongs to no enrolled agent (re-enrolled elsewhere, or an admin certificate): enrol again"
                        .into(),
                )
            })
    }

    /// The agent behind a request, with the certificate it presented.
    fn caller<T>(&self, req: &Request<T>) -> Result<upload::Caller> {
        let agent = self.agent(req)?;
        let peer = req.extensions().get::<PeerInfo>();
        let cert_der = peer
            .and_then(|p| p.cert_der.clone())
            .ok_or_else(|| CommanderError::Unauthenticated("no client certificate".into()))?;
        Ok(upload::Caller {
            agent,
            cert_sha256: Self::fingerprint(req)?,
            cert_der,
        })
    }

    fn admin<T>(&self, req: &Request<T>) -> Result<()> {
        if Self::fingerprint(req)? == self.inner.pki.admin_fingerprint {
            Ok(())
        } else {
            Err(CommanderError::PermissionDenied(
                "admin calls need the admin certificate from the commander's data dir (pki/admin.pem)".into(),
            ))
        }
    }
}

#[tonic::async_trait]
impl Enrollment for Services {
    async fn enroll(&self, request: Request<EnrollRequest>) -> Reply<EnrollResponse> {
        let req = request.into_inner();
        self.blocking(move |s| {
            let hash = hex::encode(ring::digest::digest(
                &ring::digest::SHA256,
                req.token.as_bytes(),
            ));
            let now = unix_ms();
            let pki = &s.inner.pki;
            s.store().tx(|tx| {
                let name = state::redeem_token(tx, &hash, now)?;
                let (certificate_pem, fingerprint) = pki.sign_agent(&req.csr_pem, &name)?;
                state::enroll_agent(tx, &name, &fingerprint, now)?;
                state::event(
                    tx,
                    now,
                    None,
                    Some(&name),
                    "enrolled",
                    &format!("certificate {}", &fingerprint[..16]),
                )?;
                tracing::info!(agent = %name, "agent enrolled");
                Ok(EnrollResponse {
                    agent_name: name,
                    certificate_pem,
                    ca_pem: pki.ca_pem().to_string(),
                })
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl AgentSession for Services {
    type WatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = std::result::Result<Wake, Status>> + Send + 'static>,
    >;

    async fn watch(&self, request: Request<WatchRequest>) -> Reply<Self::WatchStream> {
        let agent = self
            .blocking(move |s| s.agent(&request))
            .await?
            .into_inner();
        let wakes = self.scheduler().wakers.watch(&agent);
        tracing::debug!(%agent, "agent watching for work");
        let stream =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(wakes), Ok);
        Ok(Response::new(Box::pin(stream)))
    }

    type KnownRefsStream = std::pin::Pin<
        Box<
            dyn tokio_stream::Stream<Item = std::result::Result<KnownRefsPage, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn known_refs(&self, request: Request<KnownRefsRequest>) -> Reply<Self::KnownRefsStream> {
        let pages = self
            .blocking(move |s| {
                let agent = s.agent(&request)?;
                let lease = request
                    .get_ref()
                    .lease
                    .ok_or_else(|| CommanderError::Invalid("KnownRefs without a lease".into()))?;
                let refs = s.scheduler().known_refs(&agent, &lease, unix_ms())?;
                Ok(crate::kinds::known_refs_pages(refs))
            })
            .await?
            .into_inner();
        let stream = tokio_stream::iter(pages.into_iter().map(Ok));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn register(&self, request: Request<RegisterRequest>) -> Reply<RegisterResponse> {
        self.blocking(move |s| {
            let agent = s.agent(&request)?;
            let caps = request.into_inner().capabilities.unwrap_or_default();
            let now = unix_ms();
            s.store().tx(|tx| {
                state::set_capabilities(tx, &agent, &caps, now)?;
                state::event(
                    tx,
                    now,
                    None,
                    Some(&agent),
                    "registered",
                    &format!("{} {} cores, kinds {:?}", caps.arch, caps.cores, caps.kinds),
                )
            })?;
            let config = &s.scheduler().config;
            Ok(RegisterResponse {
                agent_name: agent,
                heartbeat_interval_ms: config.heartbeat.as_millis() as u64,
                lease_ttl_ms: config.lease_ttl.as_millis() as u64,
            })
        })
        .await
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Reply<HeartbeatResponse> {
        self.blocking(move |s| {
            let agent = s.agent(&request)?;
            s.scheduler()
                .heartbeat(&agent, request.get_ref(), unix_ms())
        })
        .await
    }

    async fn report_progress(&self, request: Request<ProgressRequest>) -> Reply<ProgressResponse> {
        self.blocking(move |s| {
            let agent = s.agent(&request)?;
            let ttl_ms = s
                .scheduler()
                .progress(&agent, request.get_ref(), unix_ms())?;
            Ok(ProgressResponse { ttl_ms })
        })
        .await
    }

    async fn complete(&self, request: Request<CompleteRequest>) -> Reply<CompleteResponse> {
        self.blocking(move |s| {
            let agent = s.agent(&request)?;
            s.scheduler()
                .complete(&agent, request.get_ref(), unix_ms())?;
            if let Some(lease) = request.get_ref().lease {
                upload::quorum::settle_run(s.scheduler(), &s.inner.archive, lease.run_id);
            }
            Ok(CompleteResponse {})
        })
        .await
    }

    async fn have(&self, request: Request<HaveRequest>) -> Reply<HaveResponse> {
        self.blocking(move |s| {
            let caller = s.caller(&request)?;
            upload::have(
                s.scheduler(),
                &s.inner.archive,
                &caller,
                request.get_ref(),
                unix_ms(),
            )
        })
        .await
    }

    async fn upload(
        &self,
        request: Request<tonic::Streaming<UploadChunk>>,
    ) -> Reply<UploadResponse> {
        let caller = self.caller(&request).map_err(CommanderError::into_status)?;
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(UploadChunk {
                part: Some(upload_chunk::Part::Header(header)),
            }) => header,
            _ => {
                return Err(Status::invalid_argument(
                    "an upload must begin with its header",
                ))
            }
        };
        let (pending, offset) = {
            let caller = caller.clone();
            self.blocking(move |s| {
                upload::begin(s.scheduler(), &s.inner.archive, &caller, &header, unix_ms())
            })
            .await?
            .into_inner()
        };
        // One upload per run at a time: a late stream from an agent whose
        // lease moved on must not write into the same quarantined file.
        let _busy =
            UploadGuard::claim(&self.inner.uploading, pending.version.run_id).ok_or_else(|| {
                Status::aborted(format!(
                    "another upload of run {} is in progress; ask Have again shortly",
                    pending.version.run_id
                ))
            })?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let this = self.clone();
        let receiver = tokio::task::spawn_blocking(move || {
            upload::receive(this.scheduler(), &this.inner.archive, &pending, offset, rx)
        });
        loop {
            match stream.message().await {
                Ok(Some(UploadChunk { part: Some(part) })) => {
                    if tx.send(upload::Piece::Part(part)).await.is_err() {
                        break;
                    }
                }
                Ok(Some(UploadChunk { part: None })) => {}
                Ok(None) => {
                    let _ = tx.send(upload::Piece::End).await;
                    break;
                }
                Err(status) => {
                    tracing::info!(agent = %caller.agent, "upload stream broke: {status}");
                    break;
                }
            }
        }
        drop(tx);
        match receiver.await {
            Ok(result) => reply(result),
            Err(e) => Err(Status::internal(format!("upload task failed: {e}"))),
        }
    }
}

impl Services {
    fn set_paused(&self, agent: &str, paused: bool) -> Result<()> {
        let now = unix_ms();
        self.store()
            .tx(|tx| state::set_paused(tx, agent, paused, now))?;
        self.scheduler().wakers.wake_agent(agent);
        Ok(())
    }
}
