//! The soak's origins and targets: a few hundred plain files (a few of
//! them several MiB, capped so that a fault lands mid-transfer), podcast
//! feeds with their enclosures, ZIMs (Kiwix's fixtures) and git
//! repositories over smart HTTP. Every version an origin ever served is
//! recorded by URL with its BLAKE3 root, so the invariant checker can prove
//! that every landed file is one of them (a splice of two versions is not).
//!
//! The HTTP origin ignores `If-Range` (as a broken cache does), so a
//! resume across a flip is offered bytes of the new version.
//!
//! What a "flip" is per kind: a plain file gets one byte changed (a new
//! version that lands); a feed one letter of its description (a new
//! snapshot); a ZIM one byte anywhere (a corrupt file the swarm must
//! refuse with a reason); a git repository a new commit. Mending puts back
//! the ZIMs' original bytes, so none is left broken at the end.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};
use ark_agent::git::fixture::Upstream;
use ark_tests::git_origin::GitHttp;
use ark_tests::*;

/// Plain file targets of a few KiB.
pub const SMALL_FILES: usize = 240;
/// Plain file targets of [`BIG_SIZE`], fetched at [`BIG_CAP`]: long enough
/// that kills and cuts land in the middle of their transfers.
pub const BIG_FILES: usize = 3;
pub const BIG_SIZE: usize = 12 << 20;
pub const BIG_CAP: u64 = 2 << 20;
/// Podcast feeds, two enclosures each.
pub const FEEDS: usize = 6;
pub const GIT_REPOS: usize = 2;
/// The ZIM fixtures served (each a target of its own).
pub const ZIMS: [&str; 2] = ["small.zim", "wikibooks_be_all_nopic_2017-02.zim"];

/// What a target is, for flipping it.
#[derive(Debug, Clone)]
pub enum Source {
    /// A path on the HTTP origin.
    Http { path: String },
    /// A git repository (index into `Origins::upstreams`).
    Git(usize),
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub kind: &'static str,
    pub url: String,
    pub source: Source,
    pub bandwidth_cap: u64,
}

/// The origins, reachable from every device, and what they served.
pub struct Origins {
    http: Origin,
    /// Kept serving until the soak ends.
    _git: GitHttp,
    /// Relays on the LAN's gateway in front of the loopback origins (none
    /// without a LAN: the devices share this namespace's loopback).
    _relays: Vec<CountingRelay>,
    http_base: String,
    git_base: String,
    upstreams: Vec<Upstream>,
    /// Current bytes of each HTTP path (what a flip starts from).
    current: Mutex<HashMap<String, Vec<u8>>>,
    /// The first bytes of each ZIM path (what mending puts back).
    originals: HashMap<String, Vec<u8>>,
    /// URL → the BLAKE3 roots of every version served there.
    served: Mutex<HashMap<String, HashSet<String>>>,
    commits: Mutex<usize>,
}

impl Origins {
    /// Starts the origins; `gateway` is the LAN's (None: loopback only).
    pub async fn start(dir: &Path, gateway: Option<std::net::Ipv4Addr>) -> Result<Self> {
        let http = Origin::start().await?;
        // A broken cache's answer to a resume: the range of whatever is
        // there now, whatever `If-Range` says. With the flips, a resume
        // then meets bytes of another version, which must never be
        // appended (issue 15, defect 1).
        http.ignore_if_range(true);
        let repos = dir.join("repos");
        std::fs::create_dir_all(&repos)?;
        let mut upstreams = Vec::new();
        for n in 0..GIT_REPOS {
            upstreams.push(Upstream::populated(&repos, &format!("repo{n}"))?);
        }
        let git = GitHttp::start(&repos)?;
        let mut relays = Vec::new();
        let (http_addr, git_addr) = match gateway {
            Some(ip) => {
                for upstream in [http.addr, git.addr] {
                    relays.push(
                        CountingRelay::start_at(SocketAddr::new(ip.into(), 0), upstream).await?,
                    );
                }
                (relays[0].addr, relays[1].addr)
            }
            None => (http.addr, git.addr),
        };
        Ok(Self {
            http,
            _git: git,
            _relays: relays,
            http_base: format!("http://{http_addr}"),
            git_base: format!("http://{git_addr}"),
            upstreams,
            current: Mutex::default(),
            originals: HashMap::new(),
            served: Mutex::default(),
            commits: Mutex::new(0),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.http_base)
    }

    /// Serves `bytes` at `path` and records the version.
    pub fn put(&self, path: &str, bytes: Vec<u8>, content_type: &str) {
        let root = blake3::hash(&bytes).to_hex().to_string();
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(self.url(path))
            .or_default()
            .insert(root);
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_string(), bytes.clone());
        self.http.put_typed(path, bytes, content_type);
    }

    /// Whether the origin at `url` ever served bytes with root `blake3`.
    pub fn served(&self, url: &str, blake3: &str) -> bool {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .is_some_and(|roots| roots.contains(blake3))
    }

    /// Serves every target's first version; returns the targets.
    pub fn populate(&mut self, rng: &mut fastrand::Rng) -> Result<Vec<Target>> {
        let mut targets = Vec::new();
        let http_target = |origins: &Self, name: String, kind, path: String, cap| Target {
            name,
            kind,
            url: origins.url(&path),
            source: Source::Http { path },
            bandwidth_cap: cap,
        };
        for n in 0..SMALL_FILES {
            let size = rng.usize(1..48 * 1024);
            let path = format!("files/f{n:03}.bin");
            self.put(
                &path,
                ark_demo::sample_bytes(size, n as u8),
                "application/octet-stream",
            );
            targets.push(http_target(self, format!("f{n:03}"), "file", path, 0));
        }
        for n in 0..BIG_FILES {
            let path = format!("big/b{n}.iso");
            self.put(
                &path,
                ark_demo::sample_bytes(BIG_SIZE + n, 100 + n as u8),
                "application/octet-stream",
            );
            targets.push(http_target(self, format!("big{n}"), "file", path, BIG_CAP));
        }
        let podcast = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/feeds/podcast.xml"),
        )?;
        for n in 0..FEEDS {
            let media = format!("media/feed{n}");
            let (ep1, ep2) = (
                ark_demo::sample_bytes(20_000 + n, 10 + n as u8),
                ark_demo::sample_bytes(30_000 + n, 40 + n as u8),
            );
            let (len1, len2) = (ep1.len().to_string(), ep2.len().to_string());
            self.put(&format!("{media}/episode-1.mp3"), ep1, "audio/mpeg");
            self.put(&format!("{media}/episode-2.mp3"), ep2, "audio/mpeg");
            let feed = podcast
                .replace("MEDIA", &self.url(&media))
                .replace("LEN1", &len1)
                .replace("LEN2", &len2);
            let path = format!("feeds/feed{n}.xml");
            self.put(&path, feed.into_bytes(), "application/rss+xml");
            targets.push(http_target(self, format!("feed{n}"), "rss", path, 0));
        }
        let fixtures = zim_fixtures()?;
        for zim in ZIMS {
            let bytes = std::fs::read(fixtures.join(zim)).with_context(|| zim.to_string())?;
            let path = format!("wiki/{zim}");
            self.originals.insert(path.clone(), bytes.clone());
            self.put(&path, bytes, "application/octet-stream");
            let name = zim.split(['.', '_']).next().unwrap_or(zim).to_string();
            targets.push(http_target(self, format!("zim-{name}"), "zim", path, 0));
        }
        for n in 0..GIT_REPOS {
            targets.push(Target {
                name: format!("repo{n}"),
                kind: "git",
                url: format!("{}/repo{n}.git", self.git_base),
                source: Source::Git(n),
                bandwidth_cap: 0,
            });
        }
        Ok(targets)
    }

    /// Changes `target` at its origin (see the module doc); what was done.
    pub fn flip(&self, target: &Target, rng: &mut fastrand::Rng) -> Result<String> {
        let path = match &target.source {
            Source::Git(n) => {
                let mut commits = self.commits.lock().unwrap_or_else(|p| p.into_inner());
                *commits += 1;
                let up = &self.upstreams[*n];
                up.commit(
                    &format!("soak/{}.txt", *commits),
                    &format!("change {}\n", rng.u64(..)),
                )?;
                up.push()?;
                return Ok(format!("a new commit on {}", target.name));
            }
            Source::Http { path } => path,
        };
        let bytes = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
            .with_context(|| format!("nothing served at {path}"))?;
        // A flip never brings back a version served before: a landed
        // version seen twice is then a duplicate landing, not a revert.
        for _ in 0..100 {
            let mut flipped = bytes.clone();
            let at = if target.kind == "rss" {
                // A letter of the channel's description: still a feed.
                let text = "Half an hour in the garden.";
                let start = String::from_utf8_lossy(&bytes)
                    .find("<description>")
                    .context("a feed without a description")?
                    + "<description>".len();
                let at = start + rng.usize(..text.len() - 1);
                flipped[at] = rng.u8(b'a'..=b'z');
                at
            } else {
                let at = rng.usize(..flipped.len());
                flipped[at] ^= rng.u8(1..=255);
                at
            };
            let root = blake3::hash(&flipped).to_hex().to_string();
            if flipped == bytes || self.served(&target.url, &root) {
                continue;
            }
            let content_type = if target.kind == "rss" {
                "application/rss+xml"
            } else {
                "application/octet-stream"
            };
            self.put(path, flipped, content_type);
            return Ok(format!("byte {at} of {path}"));
        }
        anyhow::bail!("no new version of {path} in 100 tries")
    }

    /// Puts back the original bytes of every ZIM whose current bytes are
    /// not them (flipped: corrupt); the paths put back.
    pub fn mend(&self) -> Vec<String> {
        let mut mended = Vec::new();
        for (path, original) in &self.originals {
            let current = self
                .current
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(path)
                .cloned();
            if current.as_ref() != Some(original) {
                self.put(path, original.clone(), "application/octet-stream");
                mended.push(path.clone());
            }
        }
        mended
    }
}
