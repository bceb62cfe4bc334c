//! Forge accounts: the repositories of a GitHub user or organisation
//! (REST v3), a GitLab group with its subgroups or a user (REST v4), or a
//! Gitea/Forgejo organisation or user (API v1), listed by the commander
//! itself page by page (`Link: <…>; rel="next"`).
//!
//! Rate limits are obeyed, never hammered: an answer 403/429 with
//! `Retry-After`, or with the remaining quota at 0 and a reset time
//! (`X-RateLimit-Reset`, GitLab's `RateLimit-Reset`), ends the listing with
//! [`ListError::RateLimited`] and the time to come back; a page that leaves
//! the quota at 0 does the same before asking for the next. The token is
//! read from its file at every listing, sent only to the forge's own API
//! origin (a `next` link elsewhere is refused), and never appears in an
//! error, a log line or an event.

use std::time::Duration;

use serde::Deserialize;

/// Most pages one listing reads: 1,000 pages of 100 is an account far
/// bigger than any household mirrors.
const MAX_PAGES: usize = 1000;

/// Largest JSON page read.
const PAGE_LIMIT: usize = 32 << 20;

/// Largest token file read.
const TOKEN_LIMIT: u64 = 16 << 10;

/// A forge API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
}

impl Forge {
    /// `--forge NAME`, else the forge the URL's host is known to be.
    pub fn choose(named: &str, url: &reqwest::Url) -> Result<Forge, String> {
        match named.trim().to_ascii_lowercase().as_str() {
            "github" => return Ok(Forge::GitHub),
            "gitlab" => return Ok(Forge::GitLab),
            "gitea" | "forgejo" => return Ok(Forge::Gitea),
            "" => {}
            other => {
                return Err(format!(
                    "--forge {other}: say github, gitlab or gitea (Forgejo speaks Gitea's API)"
                ))
            }
        }
        match url.host_str().unwrap_or_default() {
            "github.com" | "www.github.com" => Ok(Forge::GitHub),
            "gitlab.com" => Ok(Forge::GitLab),
            "codeberg.org" | "gitea.com" => Ok(Forge::Gitea),
            host => Err(format!(
                "which forge is {host}? say --forge github, gitlab or gitea"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }
}

/// A repository the forge lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    /// Its path within the account (`widgets`, `sub/tools`).
    pub path: String,
    /// Where to clone it (HTTP(S)).
    pub clone_url: String,
    pub fork: bool,
    pub archived: bool,
    /// Its wiki's clone URL, when the forge says it has one.
    pub wiki: Option<String>,
}

/// Why a listing stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// The forge asked to wait: come back at `until` (ms since the epoch).
    RateLimited {
        until: i64,
        why: String,
    },
    Failed(String),
}

impl std::fmt::Display for ListError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListError::RateLimited { why, .. } => f.write_str(why),
            ListError::Failed(why) => f.write_str(why),
        }
    }
}

/// An account to list.
#[derive(Debug, Clone)]
pub struct Account {
    pub forge: Forge,
    /// The account's web URL (`https://github.com/acme`,
    /// `https://gitlab.com/group/sub`).
    pub url: reqwest::Url,
    pub token_file: String,
}

impl Account {
    /// The API root and the account's path (`acme`, `group/sub`).
    fn api(&self) -> Result<(reqwest::Url, String), ListError> {
        let path = self.url.path().trim_matches('/').to_string();
        if path.is_empty() {
            return Err(ListError::Failed(format!(
                "{}: the URL names no account (e.g. https://github.com/ORG)",
                self.url
            )));
        }
        let origin = self.url.origin().ascii_serialization();
        let root = match (self.forge, self.url.host_str()) {
            (Forge::GitHub, Some("github.com" | "www.github.com")) => {
                "https://api.github.com/".to_string()
            }
            (Forge::GitHub, _) => format!("{origin}/api/v3/"),
            (Forge::GitLab, _) => format!("{origin}/api/v4/"),
            (Forge::Gitea, _) => format!("{origin}/api/v1/"),
        };
        let root = root
            .parse()
            .map_err(|e| ListError::Failed(format!("{root}: {e}")))?;
        Ok((root, path))
    }

    /// The token, read from its file (None: no file configured).
    fn token(&self) -> Result<Option<String>, ListError> {
        if self.token_file.is_empty() {
            return Ok(None);
        }
        let read = std::fs::File::open(&self.token_file).and_then(|f| {
            use std::io::Read;
            let mut text = String::new();
            f.take(TOKEN_LIMIT).read_to_string(&mut text)?;
            Ok(text)
        });
        match read {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
            Ok(_) => Err(ListError::Failed(format!(
                "the token file {} is empty",
                self.token_file
            ))),
            Err(e) => Err(ListError::Failed(format!(
                "reading the token file {}: {e}",
                self.token_file
            ))),
        }
    }
}

/// Lists every repository of `account`, page by page.
pub async fn list(
    client: &reqwest::Client,
    account: &Account,
    now: i64,
) -> Result<Vec<Repo>, ListError> {
    let (root, path) = account.api()?;
    let token = account.token()?;
    let pages = Pages {
        client,
        root: &root,
        token: token.as_deref(),
        forge: account.forge,
        now,
    };
    match account.forge {
        Forge::GitHub => github(&pages, &path).await,
        Forge::GitLab => gitlab(&pages, &path).await,
        Forge::Gitea => gitea(&pages, &path).await,
    }
}

/// Paged GETs against one forge API.
struct Pages<'a> {
    client: &'a reqwest::Client,
    root: &'a reqwest::Url,
    token: Option<&'a str>,
    forge: Forge,
    now: i64,
}

/// One page's JSON and the next page's URL.
struct Page {
    body: Vec<u8>,
    next: Option<String>,
    status: reqwest::StatusCode,
}

impl Pages<'_> {
    /// GET `url` (relative to the API root, or a `next` link).
    async fn get(&self, url: &str) -> Result<Page, ListError> {
        let url = self
            .root
            .join(url)
            .map_err(|e| ListError::Failed(format!("{url}: {e}")))?;
        if url.origin() != self.root.origin() {
            return Err(ListError::Failed(format!(
                "the forge sent a next page at {}, outside its API ({}): refused, the token stays home",
                url.origin().ascii_serialization(),
                self.root.origin().ascii_serialization()
            )));
        }
        let mut request = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = self.token {
            request = match self.forge {
                Forge::GitHub => request.bearer_auth(token),
                Forge::GitLab => request.header("PRIVATE-TOKEN", token),
                Forge::Gitea => {
                    request.header(reqwest::header::AUTHORIZATION, format!("token {token}"))
                }
            };
        }
        // The error names the URL only: never the request (its headers).
        let response = request
            .send()
            .await
            .map_err(|e| ListError::Failed(format!("GET {url}: {}", without_url(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        if let Some(wait) = rate_limited(status, &headers, self.now) {
            return Err(ListError::RateLimited {
                until: wait,
                why: format!(
                    "{} rate-limited the listing ({status}) until {}: waiting, not retrying sooner",
                    self.forge.as_str(),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + Duration::from_millis(wait.max(0) as u64)
                    )
                ),
            });
        }
        let next = headers
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ListError::Failed(format!("reading {url}: {}", without_url(&e))))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > PAGE_LIMIT {
                return Err(ListError::Failed(format!(
                    "{url}: a page larger than {PAGE_LIMIT} bytes"
                )));
            }
        }
        // A page that spent the last of the quota: wait before the next.
        if next.is_some() && remaining(&headers) == Some(0) {
            if let Some(until) = reset_at(&headers, self.now) {
                return Err(ListError::RateLimited {
                    until,
                    why: format!(
                        "{} quota spent mid-listing: waiting for its reset",
                        self.forge.as_str()
                    ),
                });
            }
        }
        Ok(Page { body, next, status })
    }

    /// Every item of the paged list starting at `first`.
    async fn all<T: for<'de> Deserialize<'de>>(&self, first: &str) -> Result<Vec<T>, ListError> {
        let mut items = Vec::new();
        let mut url = first.to_string();
        for _ in 0..MAX_PAGES {
            let page = self.get(&url).await?;
            if !page.status.is_success() {
                return Err(ListError::Failed(format!(
                    "{}{url} answered {}: {}",
                    self.root,
                    page.status,
                    String::from_utf8_lossy(&page.body[..page.body.len().min(200)])
                )));
            }
            let batch: Vec<T> = serde_json::from_slice(&page.body).map_err(|e| {
                ListError::Failed(format!("{url}: not the forge's list of repositories: {e}"))
            })?;
            items.extend(batch);
            match page.next {
                Some(next) => url = next,
                None => return Ok(items),
            }
        }
        Err(ListError::Failed(format!(
            "more than {MAX_PAGES} pages: refused"
        )))
    }

    /// The status of a GET (to tell a user from an organisation).
    async fn exists(&self, url: &str) -> Result<bool, ListError> {
        let page = self.get(url).await?;
        match page.status.as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            other => Err(ListError::Failed(format!(
                "{}{url} answered {other}: check the account URL and the token",
                self.root
            ))),
        }
    }
}

/// The error's text without the URL reqwest puts in it (the caller names
/// the URL once).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    text
}

fn header_number(headers: &reqwest::header::HeaderMap, names: &[&str]) -> Option<i64> {
    names.iter().find_map(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    })
}

fn remaining(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    header_number(headers, &["x-ratelimit-remaining", "ratelimit-remaining"])
}

/// When the quota resets (ms), from an epoch-seconds reset header.
fn reset_at(headers: &reqwest::header::HeaderMap, now: i64) -> Option<i64> {
    header_number(headers, &["x-ratelimit-reset", "ratelimit-reset"])
        .map(|secs| (secs * 1000).max(now))
}

/// When to come back, if this answer says the forge is rate-limiting.
fn rate_limited(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    now: i64,
) -> Option<i64> {
    if !matches!(status.as_u16(), 403 | 429) {
        return None;
    }
    if let Some(secs) = header_number(headers, &["retry-after"]) {
        return Some(now + secs.max(1) * 1000);
    }
    if remaining(headers) == Some(0) || status.as_u16() == 429 {
        return Some(reset_at(headers, now).unwrap_or(now + 60_000));
    }
    None
}

/// The `rel="next"` target of a Link header value.
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"))
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

fn wiki_of(clone_url: &str) -> String {
    match clone_url.strip_suffix(".git") {
        Some(stem) => format!("{stem}.wiki.git"),
        None => format!("{clone_url}.wiki.git"),
    }
}

#[derive(Deserialize)]
struct GitHubOwner {
    #[serde(rename = "type", default)]
    kind: String,
}

/// A repository as GitHub and Gitea both list it (the same fields).
#[derive(Deserialize)]
struct OwnedRepo {
    name: String,
    clone_url: String,
    #[serde(default)]
    fork: bool,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    has_wiki: bool,
}

impl From<OwnedRepo> for Repo {
    fn from(r: OwnedRepo) -> Self {
        Repo {
            wiki: r.has_wiki.then(|| wiki_of(&r.clone_url)),
            path: r.name,
            clone_url: r.clone_url,
            fork: r.fork,
            archived: r.archived,
        }
    }
}

async fn github(pages: &Pages<'_>, owner: &str) -> Result<Vec<Repo>, ListError> {
    let owner = owner.split('/').next().unwrap_or(owner);
    let page = pages.get(&format!("users/{owner}")).await?;
    if !page.status.is_success() {
        return Err(ListError::Failed(format!(
            "GitHub has no user or organisation {owner:?} ({})",
            page.status
        )));
    }
    let kind: GitHubOwner = serde_json::from_slice(&page.body)
        .map_err(|e| ListError::Failed(format!("users/{owner}: {e}")))?;
    let first = if kind.kind == "Organization" {
        format!("orgs/{owner}/repos?per_page=100&type=all")
    } else {
        format!("users/{owner}/repos?per_page=100&type=owner")
    };
    let repos: Vec<OwnedRepo> = pages.all(&first).await?;
    Ok(repos.into_iter().map(Repo::from).collect())
}

#[derive(Deserialize)]
struct GitLabProject {
    path_with_namespace: String,
    http_url_to_repo: String,
    #[serde(default)]
    archived: bool,
    #[serde(default)]
    forked_from_project: Option<serde_json::Value>,
    #[serde(default)]
    wiki_enabled: bool,
}

async fn gitlab(pages: &Pages<'_>, path: &str) -> Result<Vec<Repo>, ListError> {
    let encoded = path.replace('/', "%2F");
    let first = if pages.exists(&format!("groups/{encoded}")).await? {
        format!(
            "groups/{encoded}/projects?include_subgroups=true&per_page=100&order_by=id&sort=asc"
        )
    } else {
        format!("users/{encoded}/projects?per_page=100&order_by=id&sort=asc")
    };
    let projects: Vec<GitLabProject> = pages.all(&first).await?;
    let prefix = format!("{path}/");
    Ok(projects
        .into_iter()
        .map(|p| Repo {
            path: p
                .path_with_namespace
                .strip_prefix(&prefix)
                .unwrap_or(&p.path_with_namespace)
                .to_string(),
            wiki: p.wiki_enabled.then(|| wiki_of(&p.http_url_to_repo)),
            clone_url: p.http_url_to_repo,
            fork: p.forked_from_project.is_some_and(|v| !v.is_null()),
            archived: p.archived,
        })
        .collect())
}

async fn gitea(pages: &Pages<'_>, owner: &str) -> Result<Vec<Repo>, ListError> {
    let owner = owner.split('/').next().unwrap_or(owner);
    let first = if pages.exists(&format!("orgs/{owner}")).await? {
        format!("orgs/{owner}/repos?limit=50")
    } else {
        format!("users/{owner}/repos?limit=50")
    };
    let repos: Vec<OwnedRepo> = pages.all(&first).await?;
    Ok(repos.into_iter().map(Repo::from).collect())
}

/// The repositories of `repos` the account's options keep, with their
/// wikis as repositories of their own (`path.wiki`).
pub fn chosen(
    repos: Vec<Repo>,
    o: &ark_proto::AccountOptions,
) -> Result<Vec<(String, String)>, String> {
    let set = |globs: &[String]| -> Result<globset::GlobSet, String> {
        let mut b = globset::GlobSetBuilder::new();
        for g in globs {
            b.add(globset::Glob::new(g).map_err(|e| format!("glob {g:?}: {e}"))?);
        }
        b.build().map_err(|e| e.to_string())
    };
    let (include, exclude) = (set(&o.include)?, set(&o.exclude)?);
    let mut out = Vec::new();
    for r in repos {
        if (!o.include.is_empty() && !include.is_match(&r.path))
            || exclude.is_match(&r.path)
            || (o.no_forks && r.fork)
            || (o.no_archived && r.archived)
        {
            continue;
        }
        if let (Some(wiki), false) = (&r.wiki, o.no_wikis) {
            out.push((format!("{}.wiki", r.path), wiki.clone()));
        }
        out.push((r.path, r.clone_url));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_is_found_among_the_others() {
        let v = r#"<https://api.github.com/orgs/a/repos?page=1>; rel="prev", <https://api.github.com/orgs/a/repos?page=3>; rel="next", <https://api.github.com/orgs/a/repos?page=9>; rel="last""#;
        assert_eq!(
            next_link(v).as_deref(),
            Some("https://api.github.com/orgs/a/repos?page=3")
        );
        assert_eq!(next_link(r#"<x>; rel="last""#), None);
    }

    #[test]
    fn rate_limits_say_when_to_come_back() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-remaining", "0".parse().expect("v"));
        h.insert("x-ratelimit-reset", "2000".parse().expect("v"));
        let forbidden = reqwest::StatusCode::FORBIDDEN;
        assert_eq!(rate_limited(forbidden, &h, 1_000_000), Some(2_000_000));
        let mut retry = reqwest::header::HeaderMap::new();
        retry.insert("retry-after", "7".parse().expect("v"));
        assert_eq!(
            rate_limited(reqwest::StatusCode::TOO_MANY_REQUESTS, &retry, 0),
            Some(7000)
        );
        // A plain 403 (no quota spent) is a refusal, not a wait.
        assert_eq!(
            rate_limited(forbidden, &reqwest::header::HeaderMap::new(), 0),
            None
        );
    }

    #[test]
    fn options_choose_repositories_and_add_wikis() {
        let repo = |path: &str, fork: bool, archived: bool, wiki: bool| Repo {
            path: path.into(),
            clone_url: format!("https://f.example/acme/{path}.git"),
            fork,
            archived,
            wiki: wiki.then(|| wiki_of(&format!("https://f.example/acme/{path}.git"))),
        };
        let repos = vec![
            repo("tools-a", false, false, true),
            repo("tools-old", false, true, false),
            repo("tools-fork", true, false, false),
            repo("site", false, false, false),
        ];
        let o = ark_proto::AccountOptions {
            include: vec!["tools-*".into()],
            exclude: vec!["*-old".into()],
            no_forks: true,
            ..Default::default()
        };
        let chosen = chosen(repos, &o).expect("chosen");
        assert_eq!(
            chosen,
            [
                (
                    "tools-a.wiki".to_string(),
                    "https://f.example/acme/tools-a.wiki.git".to_string()
                ),
                (
                    "tools-a".to_string(),
                    "https://f.example/acme/tools-a.git".to_string()
                ),
            ]
        );
    }

    #[test]
    fn the_forge_comes_from_the_flag_or_the_host() {
        let url = |u: &str| u.parse::<reqwest::Url>().expect("url");
        assert_eq!(
            Forge::choose("", &url("https://github.com/acme")),
            Ok(Forge::GitHub)
        );
        assert_eq!(
            Forge::choose("forgejo", &url("http://git.home/acme")),
            Ok(Forge::Gitea)
        );
        assert!(Forge::choose("", &url("http://git.home/acme")).is_err());
        assert!(Forge::choose("sourcehut", &url("http://git.home/acme")).is_err());
    }
}
