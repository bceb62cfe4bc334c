//! The harvest kinds on the agent: what each adds to the generic
//! fetch-and-deliver pipeline, one module per kind behind the one `match`
//! in [`plan`].
//!
//! A kind that fetches one URL (file, zim, rss, media) is a [`Plan`]: the
//! streaming check that rides along with the hasher, what is checked once
//! the whole body is in, whether the origin is asked for published digests,
//! and (split ZIMs) a fetch of its own. `git` harvests differently — a
//! mirror brought up to date, then a bundle of what the commander lacks —
//! and has its own entry point. Either way the result is a staged body and
//! its tree, delivered by [`crate::jobs`] the same way for every kind.
//!
//! Adding a kind on the agent: a module here (a [`Plan`] unless it does not
//! fetch a URL), its line in [`plan`] or [`harvest`], and the kind in
//! `ark_core::Kind`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ark_core::{BodyCheck, Kind};
use ark_proto::JobFailure;
use tracing::info;

use crate::fetch::{self, FetchError, Fetched, Limits, Progress, Sinks, Throttle};
use crate::lease::{failure, HeldLease, JobContext};

#[cfg(feature = "test-kind")]
mod echo;
mod feed;
mod file;
pub mod git;
mod lfs;
pub mod zim;

/// A harvested body and the digest its origin published, if any.
pub type Harvested = (Fetched, Option<(crate::digests::Published, String)>);

/// What a kind that fetches one URL adds to the fetch.
pub trait Plan: Send {
    /// The streaming check fed every byte as it arrives (the HTML sniff
    /// runs for every kind regardless).
    fn check(&mut self) -> Option<&mut dyn BodyCheck> {
        None
    }

    /// The whole body is in: what only the whole can tell. Err refuses it
    /// (worth another fetch: the bytes were damaged on the way).
    fn finish(&mut self, _size: u64) -> Result<(), String> {
        Ok(())
    }

    /// Whether to ask the origin for a digest published beside the body.
    fn digests(&self) -> bool {
        true
    }

    /// A split archive (`…zimaa`, `…zimab`, …) is fetched part by part and
    /// joined through this check instead of the one-URL fetch.
    fn split(&mut self, _url: &str) -> Option<&mut ark_core::formats::zim::StreamCheck> {
        None
    }
}

/// The plan of a fetched kind: the one `match` on the agent.
fn plan(kind: Kind) -> Box<dyn Plan> {
    match kind {
        Kind::File => Box::new(file::File),
        Kind::Media => Box::new(file::Media),
        Kind::Lfs => Box::new(lfs::Lfs),
        Kind::Zim => Box::new(zim::Zim::default()),
        Kind::Rss => Box::new(feed::Feed::default()),
        Kind::Git | Kind::GitAccount => {
            unreachable!("git and git-account do not fetch one URL: see harvest()")
        }
        #[cfg(feature = "test-kind")]
        Kind::Echo => Box::new(echo::Echo::default()),
    }
}

/// Harvests the lease's job into `dest`.
pub async fn harvest(
    ctx: Arc<JobContext>,
    lease: HeldLease,
    dest: PathBuf,
    progress: Arc<Progress>,
) -> Result<Harvested, JobFailure> {
    let kind: Kind = lease
        .kind
        .parse()
        .map_err(|e| failure(format!("{e}: this agent cannot harvest it"), false))?;
    if kind == Kind::Git {
        return git::harvest(&ctx, &lease, &dest).await.map(|f| (f, None));
    }
    if !Kind::HARVESTED.contains(&kind) {
        return Err(failure(
            format!(
                "{kind} is resolved by the commander, never leased to an agent: a commander bug"
            ),
            false,
        ));
    }
    let source = match kind {
        // An LFS object: the batch API says where it is, and its oid what
        // it must be.
        Kind::Lfs => {
            let guard = limits_of(&ctx, &lease).guard;
            let located = lfs::locate(&ctx.http, &guard, &lease.url).await?;
            Source {
                url: located.href,
                http: located.http,
                expected: Some(located.expected),
            }
        }
        _ => Source {
            url: lease.url.clone(),
            http: None,
            expected: None,
        },
    };
    fetched(&ctx, &lease, &dest, &progress, plan(kind), source).await
}

/// Where a fetched kind's body comes from.
struct Source {
    url: String,
    /// A client of its own (headers the origin asked for), else the
    /// agent's.
    http: Option<reqwest::Client>,
    /// The digest the body must have, known before the fetch (an LFS
    /// object's oid); else one the origin publishes beside it is looked for.
    expected: Option<crate::digests::Published>,
}

/// The limits of this job's fetch: the agent's, the job's size cap and
/// the destinations it may reach.
fn limits_of(ctx: &JobContext, lease: &HeldLease) -> Limits {
    let mut limits = ctx.limits.clone();
    limits.guard = lease.guard(ctx.commander_host.clone());
    if lease.max_size > 0 {
        limits.max_size = limits.max_size.min(lease.max_size);
    }
    limits
}

/// Fetches the lease's URL into `dest` with the kind's `plan` riding
/// along, then compares a digest the origin publishes beside the file.
async fn fetched(
    ctx: &JobContext,
    lease: &HeldLease,
    dest: &Path,
    progress: &Progress,
    mut plan: Box<dyn Plan>,
    source: Source,
) -> Result<Harvested, JobFailure> {
    let (http, url) = (source.http.as_ref().unwrap_or(&ctx.http), &source.url);
    let run_throttle = Throttle::new(lease.bandwidth_cap);
    let sinks = Sinks {
        throttle: &ctx.throttle,
        run_throttle: Some(&run_throttle),
        progress,
        counter: &ctx.bytes,
        self_yield: Some(&ctx.self_yield),
    };
    let (conditional, limits) = (&lease.conditional, &limits_of(ctx, lease));
    let fetch_failed = |e: FetchError| match e.out_of_space() {
        true => {
            let size = progress.total.load(std::sync::atomic::Ordering::Relaxed);
            crate::lease::hand_back(format!("{e}: handed back to an agent with room"), size)
        }
        false => failure(e.to_string(), e.retryable()),
    };
    let (fetched, split) = match plan.split(url) {
        Some(check) => (
            zim::fetch_split(http, url, dest, conditional, limits, sinks, check).await,
            true,
        ),
        None => (
            fetch::fetch_checked(http, url, dest, conditional, limits, sinks, plan.check()).await,
            false,
        ),
    };
    let fetched = fetched.map_err(fetch_failed)?;
    let Fetched::Body { size, .. } = &fetched else {
        return Ok((fetched, None));
    };
    plan.finish(*size)
        .map_err(|e| failure(format!("GET {url}: {e}"), true))?;
    let published = match source.expected {
        Some(expected) => expected,
        // A split archive's sidecars describe single parts.
        None if split || !plan.digests() => return Ok((fetched, None)),
        None => match crate::digests::discover(http, &limits.guard, url).await {
            Some(published) => published,
            None => {
                info!(%url, "the origin publishes no digest (.meta4, .sha256, .md5): BLAKE3 only");
                return Ok((fetched, None));
            }
        },
    };
    let hex = crate::digests::check(dest, *size, &published)
        .await
        .map_err(|e| failure(format!("GET {url}: {e}"), true))?;
    info!(%url, source = %published.source, algorithm = published.algorithm, "matches the published digest");
    Ok((fetched, Some((published, hex))))
}
