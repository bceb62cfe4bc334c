//! A forge API on loopback for the tests of git-account targets: GitHub's
//! REST v3 (`/api/v3`, as GitHub Enterprise serves it), GitLab's v4
//! (`/api/v4`) and Gitea's v1 (`/api/v1`), with the JSON shapes and the
//! pagination headers their public API documentation gives (`Link` with
//! `rel="next"`/`"last"`, GitLab's `X-Next-Page`/`X-Total`, Gitea's
//! `X-Total-Count`), a rate limit that can be switched on once (403 with
//! `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset`), and a log of every
//! request with the credentials it carried. The repositories' clone URLs
//! point wherever the test serves them (`git http-backend`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// A repository the fake forge lists.
#[derive(Debug, Clone)]
pub struct FakeRepo {
    /// Its path in the account (`widgets`; GitLab: `sub/lib` in a subgroup).
    pub path: String,
    pub clone_url: String,
    pub fork: bool,
    pub archived: bool,
    pub wiki: bool,
}

impl FakeRepo {
    pub fn new(path: &str, clone_url: &str) -> Self {
        Self {
            path: path.into(),
            clone_url: clone_url.into(),
            fork: false,
            archived: false,
            wiki: false,
        }
    }
}

/// One request the forge saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path_and_query: String,
    /// `Authorization` and `PRIVATE-TOKEN`, as sent.
    pub credentials: String,
    pub at: SystemTime,
    pub status: u16,
    /// Bytes of the body sent back.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct State {
    owner: String,
    repos: Vec<FakeRepo>,
    page_size: usize,
    /// The next listing page answers 403 rate-limited until this long
    /// after it is asked.
    rate_limit_once: Option<Duration>,
    seen: Vec<Seen>,
}

/// The fake forge, stopped on drop.
#[derive(Debug)]
pub struct FakeForge {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeForge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeForge {
    /// Serves account `owner` (an organisation, a group) with `page_size`
    /// repositories a page.
    pub async fn start(owner: &str, page_size: usize) -> Result<Self> {
        let state = Arc::new(Mutex::new(State {
            owner: owner.into(),
            page_size,
            ..State::default()
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = state.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let state = shared.clone();
            async move { answer(&state, addr, &uri, &headers) }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// The account's web URL (`http://127.0.0.1:PORT/OWNER`).
    pub fn account_url(&self) -> String {
        let owner = self
            .state
            .lock()
            .map(|s| s.owner.clone())
            .unwrap_or_default();
        format!("http://{}/{owner}", self.addr)
    }

    pub fn set_repos(&self, repos: Vec<FakeRepo>) {
        if let Ok(mut s) = self.state.lock() {
            s.repos = repos;
        }
    }

    /// The next listing page is refused as rate-limited for `wait`.
    pub fn rate_limit_once(&self, wait: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.rate_limit_once = Some(wait);
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .lock()
            .map(|s| s.seen.clone())
            .unwrap_or_default()
    }
}

fn answer(state: &Mutex<State>, addr: SocketAddr, uri: &Uri, headers: &HeaderMap) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let credentials = ["authorization", "private-token"]
        .iter()
        .filter_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .collect::<Vec<_>>()
        .join(" ");
    let path = uri.path().to_string();
    let query: std::collections::HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let page: usize = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let owner = s.owner.clone();
    let listing = path.ends_with("/repos") || path.ends_with("/projects");
    let response = if listing && s.rate_limit_once.is_some() {
        let wait = s.rate_limit_once.take().unwrap_or_default();
        let reset = SystemTime::now() + wait;
        let reset = reset
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() + 1)
            .unwrap_or(0);
        let mut r = (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"message": "API rate limit exceeded", "documentation_url": "https://docs.github.com/rest/rate-limit"})),
        )
            .into_response();
        let h = r.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from_static("60"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", header(&reset.to_string()));
        r
    } else {
        route(&s, addr, &path, &owner, page)
    };
    let bytes = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    s.seen.push(Seen {
        path_and_query: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        credentials,
        at: SystemTime::now(),
        status: response.status().as_u16(),
        bytes,
    });
    response
}

fn header(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn route(s: &State, addr: SocketAddr, path: &str, owner: &str, page: usize) -> Response {
    let gitlab_group = format!("/api/v4/groups/{}", owner.replace('/', "%2F"));
    match path {
        p if p == format!("/api/v3/users/{owner}") => axum::Json(json!({
            "login": owner, "id": 1, "type": "Organization", "site_admin": false,
            "html_url": format!("http://{addr}/{owner}"),
        }))
        .into_response(),
        p if p == format!("/api/v3/orgs/{owner}/repos") => {
            paged(s, addr, p, page, |r| github_repo(r, owner))
        }
        p if p == gitlab_group => axum::Json(json!({
            "id": 7, "name": owner, "path": owner, "full_path": owner, "visibility": "public",
        }))
        .into_response(),
        p if p == format!("{gitlab_group}/projects") => {
            paged(s, addr, p, page, |r| gitlab_project(r, owner))
        }
        p if p == format!("/api/v1/orgs/{owner}") => axum::Json(json!({
            "id": 3, "username": owner, "full_name": owner, "visibility": "public",
        }))
        .into_response(),
        p if p == format!("/api/v1/orgs/{owner}/repos") => {
            paged(s, addr, p, page, |r| gitea_repo(r, owner))
        }
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found"})),
        )
            .into_response(),
    }
}

/// Page `page` of the repositories, with the pagination headers of all
/// three forges.
fn paged(
    s: &State,
    addr: SocketAddr,
    path: &str,
    page: usize,
    shape: impl Fn(&FakeRepo) -> Value,
) -> Response {
    let size = s.page_size.max(1);
    let pages = s.repos.len().div_ceil(size).max(1);
    let items: Vec<Value> = s
        .repos
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(shape)
        .collect();
    let mut r = axum::Json(Value::Array(items)).into_response();
    let link = |p: usize| format!("<http://{addr}{path}?page={p}&per_page={size}>");
    let mut links = Vec::new();
    if page < pages {
        links.push(format!("{}; rel=\"next\"", link(page + 1)));
    }
    links.push(format!("{}; rel=\"last\"", link(pages)));
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link(page - 1)));
        links.push(format!("{}; rel=\"first\"", link(1)));
    }
    let h = r.headers_mut();
    h.insert("link", header(&links.join(", ")));
    h.insert("x-total", header(&s.repos.len().to_string()));
    h.insert("x-total-count", header(&s.repos.len().to_string()));
    h.insert("x-page", header(&page.to_string()));
    h.insert("x-per-page", header(&size.to_string()));
    h.insert(
        "x-next-page",
        header(&if page < pages {
            (page + 1).to_string()
        } else {
            String::new()
        }),
    );
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("4999"));
    r
}

fn github_repo(r: &FakeRepo, owner: &str) -> Value {
    json!({
        "id": r.path.len(), "node_id": "R_kgDO", "name": r.path, "full_name": format!("{owner}/{}", r.path),
        "private": false, "owner": {"login": owner, "type": "Organization"},
        "html_url": r.clone_url.trim_end_matches(".git"), "description": null, "fork": r.fork,
        "clone_url": r.clone_url, "default_branch": "main", "archived": r.archived, "disabled": false,
        "has_wiki": r.wiki, "has_issues": true, "visibility": "public", "topics": [],
    })
}

fn gitlab_project(r: &FakeRepo, group: &str) -> Value {
    let mut p = json!({
        "id": r.path.len(), "name": r.path.rsplit('/').next().unwrap_or(&r.path),
        "path": r.path.rsplit('/').next().unwrap_or(&r.path),
        "path_with_namespace": format!("{group}/{}", r.path), "default_branch": "main",
        "http_url_to_repo": r.clone_url, "ssh_url_to_repo": "git@gitlab.example:x.git",
        "web_url": r.clone_url.trim_end_matches(".git"), "archived": r.archived,
        "wiki_enabled": r.wiki, "visibility": "public", "namespace": {"full_path": group},
    });
    if r.fork {
        p["forked_from_project"] = json!({"id": 1, "path_with_namespace": "upstream/x"});
    }
    p
}

fn gitea_repo(r: &FakeRepo, owner: &str) -> Value {
    json!({
        "id": r.path.len(), "owner": {"login": owner, "username": owner}, "name": r.path,
        "full_name": format!("{owner}/{}", r.path), "private": false, "fork": r.fork,
        "html_url": r.clone_url.trim_end_matches(".git"), "clone_url": r.clone_url,
        "ssh_url": "git@gitea.example:x.git", "default_branch": "main", "archived": r.archived,
        "has_wiki": r.wiki, "mirror": false, "empty": false,
    })
}
