//! The dashboard and `/metrics`: a small HTTP/1 server (axum) beside the
//! gRPC one, on its own address (`--http`, config key `http`, default
//! [`crate::config::DEFAULT_HTTP`]; `off` turns it off). Like the gRPC
//! server, [`serve`] takes an already-bound listener and a shutdown future;
//! [`start`] is how the commander's `server::run` binds and runs it, and writes the
//! URL to `<data>/http-endpoint` ([`HTTP_ENDPOINT_FILE`]).
//!
//! Routes:
//! - `GET /`: the page ([`PAGE`], plain HTML and JavaScript, no external
//!   assets), which polls `/api/state` every second. The page holds no data,
//!   so it is served to anyone.
//! - `GET /api/state`: the swarm as JSON ([`api::snapshot`]).
//! - `GET /api/history?hours=N` (default [`HISTORY_HOURS`]): the last hours
//!   of the swarm as series to draw ([`crate::history::read`]).
//! - `POST /api/pause`, `POST /api/resume` (`?agent=NAME` for one agent):
//!   what `ark-commander pause`/`resume` do ([`crate::state::set_paused`]).
//! - `GET /metrics`: Prometheus text format ([`metrics::render`]).
//!
//! Protection ([`auth::authorize`] decides, in one place):
//! - A loopback peer may read without credentials, provided its `Host` is a
//!   loopback name (so a DNS-rebinding page cannot read through a browser).
//! - Everything else needs the admin token: 32 random bytes, hex, created
//!   0600 in `<data>/web-token` ([`TOKEN_FILE`]) on first start, sent as
//!   `Authorization: Bearer <token>` and compared in constant time. Open
//!   the page from another machine as `http://HOST:8447/#token=<token>`: the
//!   fragment never leaves the browser, the page sends it as the header.
//!   Prometheus scraping from elsewhere uses `authorization:
//!   credentials_file: <data>/web-token`.
//! - A POST without the token, even from loopback, must carry
//!   `X-Ark-Csrf: 1` (the page sends it): a cross-site form cannot set a
//!   header, so a page on another site cannot pause the swarm through a
//!   browser on the commander's host.
//! - The page forbids framing (`frame-ancestors 'none'`), so the Pause
//!   button cannot be clicked through an invisible frame.
//!
//! A reverse proxy on the same host makes every peer loopback: put one in
//! front only with its own authentication.
//!
//! The server reads the state database only through [`Store::read`] on the
//! blocking pool; it owns no state of its own besides the token.

pub mod api;
pub mod auth;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ark_core::unix_ms;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::Connection;
use serde::Deserialize;
use tokio::net::TcpListener;

pub use auth::{authorize, Access, CSRF_HEADER};

use crate::config::CommanderConfig;
use crate::state::{self, Store};
use crate::{CommanderError, Result};

/// File in the data dir holding the dashboard's URL (absent when it is off).
pub const HTTP_ENDPOINT_FILE: &str = "http-endpoint";

/// File in the data dir holding the dashboard's admin token (0600).
pub const TOKEN_FILE: &str = "web-token";

/// Random bytes in the admin token: as strong as a TLS key.
const TOKEN_BYTES: usize = 32;

/// How long a stopping dashboard may take to finish the requests in
/// flight before it is dropped (a browser keeps its connection open).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// The window `GET /api/history` answers without `?hours=`: an evening.
pub const HISTORY_HOURS: f64 = 6.0;

/// The dashboard page: HTML, CSS and JavaScript in one static string.
pub const PAGE: &str = include_str!("page.html");

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    /// A pause or resume from the dashboard reaches the agents at once.
    wakers: Arc<crate::scheduler::wake::Wakers>,
    /// Silence after which an agent counts as lost: the lease TTL, as in
    /// the admin service's listings.
    lost_after_ms: i64,
    /// A target's maximum age where it sets none (`max-age`).
    max_age_ms: u64,
    /// The history's sampling and retention (`history-every`,
    /// `history-retention`), for `/api/history`.
    history_every_ms: i64,
    history_retention_ms: i64,
    /// The admin token (see the module doc).
    token: String,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web")
            .field("lost_after_ms", &self.inner.lost_after_ms)
            .finish_non_exhaustive()
    }
}

impl Web {
    pub fn new(
        scheduler: &crate::scheduler::Scheduler,
        config: &CommanderConfig,
        token: String,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: scheduler.store.clone(),
                wakers: scheduler.wakers.clone(),
                lost_after_ms: i64::try_from(config.lease_ttl.as_millis()).unwrap_or(i64::MAX),
                max_age_ms: config.max_age.as_millis() as u64,
                history_every_ms: i64::try_from(config.history_every.as_millis())
                    .unwrap_or(i64::MAX),
                history_retention_ms: i64::try_from(config.history_retention.as_millis())
                    .unwrap_or(i64::MAX),
                token,
            }),
        }
    }

    /// Runs `f` on the state database, off the async threads.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, i64) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let web = self.clone();
        tokio::task::spawn_blocking(move || {
            let now = unix_ms();
            web.inner.store.read(|c| f(c, now))
        })
        .await
        .map_err(|e| CommanderError::Aborted(format!("dashboard request: {e}")))?
    }
}

/// The routes, with the guard in front of every one but the page.
pub fn router(web: Web) -> Router {
    let guarded = Router::new()
        .route("/api/state", get(state_json))
        .route("/api/history", get(history_json))
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .route("/metrics", get(scrape))
        .route_layer(axum::middleware::from_fn_with_state(web.clone(), guard));
    Router::new()
        .route("/", get(page))
        .merge(guarded)
        .with_state(web)
}

/// Serves the dashboard on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    web: Web,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr().map_err(CommanderError::io(
        "reading the address of",
        "the dashboard",
    ))?;
    axum::serve(
        listener,
        router(web).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(CommanderError::io(
        "serving the dashboard on",
        addr.to_string(),
    ))
}

/// The dashboard running beside the gRPC server.
#[derive(Debug)]
pub struct WebTask {
    pub url: String,
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl WebTask {
    /// Stops the server, giving requests in flight [`STOP_GRACE`].
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        match tokio::time::timeout(STOP_GRACE, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!("dashboard: {e}"),
            Ok(Err(e)) => tracing::error!("dashboard task: {e}"),
            Err(_) => task.abort(),
        }
    }
}

/// Binds the configured address (None when the dashboard is off), records
/// its URL in the data dir and serves it in a background task.
pub async fn start(
    data: &Path,
    config: &CommanderConfig,
    scheduler: &crate::scheduler::Scheduler,
) -> Result<Option<WebTask>> {
    let endpoint = data.join(HTTP_ENDPOINT_FILE);
    let _ = std::fs::remove_file(&endpoint);
    let Some(addr) = config.http_addr() else {
        return Ok(None);
    };
    let listener = crate::net::bind(addr).await.map_err(|e| {
        CommanderError::Invalid(format!(
            "cannot serve the dashboard on {addr}: {e} (in use? set --http 127.0.0.1:0, \
             another address, or --http off)"
        ))
    })?;
    let bound = listener
        .local_addr()
        .map_err(CommanderError::io("reading the address of", addr))?;
    let token = load_or_create_token(data)?;
    let url = format!("http://{}", crate::net::local_authority(bound));
    ark_core::write_atomic(&endpoint, url.as_bytes(), 0o644)
        .map_err(CommanderError::io("writing", &endpoint))?;
    tracing::info!(%url, "dashboard and /metrics listening");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let web = Web::new(scheduler, config, token);
    let task = tokio::spawn(serve(listener, web, async move {
        let _ = stopped.await;
    }));
    Ok(Some(WebTask {
        url,
        addr: bound,
        stop,
        task,
    }))
}

/// Reads `<data>/web-token`, creating it (0600) on first start.
pub fn load_or_create_token(data: &Path) -> Result<String> {
    let path = data.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CommanderError::io("reading", &path)(e)),
    }
    let token = crate::pki::random_hex(TOKEN_BYTES)?;
    ark_core::write_atomic(&path, token.as_bytes(), 0o600)
        .map_err(CommanderError::io("writing", &path))?;
    Ok(token)
}

/// Reads the dashboard URL a running commander recorded in its data dir.
pub fn endpoint(data: &Path) -> Result<String> {
    crate::net::read_endpoint(&data.join(HTTP_ENDPOINT_FILE), |path| {
        format!(
            "{} not found: no commander with a dashboard has started with this data dir \
             (is `http` set to off?)",
            path.display()
        )
    })
}

/// Answers `error` through the one HTTP boundary.
fn failure(error: CommanderError) -> Response {
    error.into_http().into_response()
}

async fn guard(
    State(web): State<Web>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match authorize(
        peer.ip(),
        request.method(),
        request.headers(),
        &web.inner.token,
    ) {
        Access::Allowed => next.run(request).await,
        Access::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!(
                "the dashboard answers other hosts only with its admin token: send \
                 `Authorization: Bearer <token>` with the token from {TOKEN_FILE} in the \
                 commander's data dir\n"
            ),
        )
            .into_response(),
        Access::Forbidden(why) => (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
    }
}

async fn page() -> Response {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; \
                 form-action 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(PAGE),
    )
        .into_response()
}

async fn state_json(State(web): State<Web>) -> Response {
    let limits = (web.inner.lost_after_ms, web.inner.max_age_ms);
    match web.read(move |c, now| api::snapshot(c, now, limits)).await {
        Ok(snapshot) => ([(header::CACHE_CONTROL, "no-store")], Json(snapshot)).into_response(),
        Err(e) => failure(e),
    }
}

/// `?hours=N`; absent: [`HISTORY_HOURS`].
#[derive(Debug, Deserialize)]
struct Window {
    hours: Option<f64>,
}

async fn history_json(State(web): State<Web>, Query(window): Query<Window>) -> Response {
    let inner = &web.inner;
    let limits = (
        inner.history_every_ms,
        inner.history_retention_ms,
        inner.max_age_ms,
    );
    let window_ms = match crate::history::window_ms(
        window.hours.unwrap_or(HISTORY_HOURS),
        inner.history_retention_ms,
    ) {
        Ok(ms) => ms,
        Err(e) => return failure(e),
    };
    match web
        .read(move |c, now| crate::history::read(c, now, window_ms, limits))
        .await
    {
        Ok(history) => ([(header::CACHE_CONTROL, "no-store")], Json(history)).into_response(),
        Err(e) => failure(e),
    }
}

async fn scrape(State(web): State<Web>) -> Response {
    let limits = (web.inner.lost_after_ms, web.inner.max_age_ms);
    match web
        .read(move |c, now| metrics::render(c, now, limits))
        .await
    {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => failure(e),
    }
}

/// `?agent=NAME`; absent or empty: the whole swarm.
#[derive(Debug, Deserialize)]
struct Scope {
    #[serde(default)]
    agent: String,
}

async fn pause(State(web): State<Web>, Query(scope): Query<Scope>) -> Response {
    set_paused(web, scope, true).await
}

async fn resume(State(web): State<Web>, Query(scope): Query<Scope>) -> Response {
    set_paused(web, scope, false).await
}

async fn set_paused(web: Web, scope: Scope, paused: bool) -> Response {
    let store = web.inner.store.clone();
    let agent = scope.agent.clone();
    let done = tokio::task::spawn_blocking(move || {
        let now = unix_ms();
        store.tx(|tx| state::set_paused(tx, &agent, paused, now))
    })
    .await
    .map_err(|e| CommanderError::Aborted(format!("dashboard request: {e}")))
    .and_then(|r| r);
    if done.is_ok() {
        web.inner.wakers.wake_agent(&scope.agent);
    }
    match done {
        Ok(()) => Json(serde_json::json!({
            "paused": paused,
            "agent": scope.agent,
        }))
        .into_response(),
        Err(e) => failure(e),
    }
}
