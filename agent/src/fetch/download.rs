//! One fetch of one URL into a staging file, as a small state machine: the
//! bytes on disk and their tree, where the body stands, and what the origin
//! said about its version. [`fetch_checked`] drives it: resume what a
//! previous attempt left (re-hashed, never trusted), then request, accept
//! or refuse the answer, stream its body through the checks, the hasher and
//! the ingest pipeline ([`super::pipeline`]: hasher, file and outboard,
//! durable checkpoints, on threads of their own), and either finish or
//! resume after a cut.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use reqwest::header;
use reqwest::StatusCode;
use tokio::io::AsyncSeekExt;

use super::pipeline::{Batch, Pipeline, Start};
use super::resume::{verify_on_disk, ResumeState};
use super::{
    content_range, html_instead_of_file, remove_staged, resume_path, send, BodyCheck, FetchError,
    Fetched, Limits, Sinks, Validators,
};
use crate::sniff::HtmlSniff;
use crate::tree::{outboard_path, TreeHasher, CV_LEN, GROUP_LEN};

/// Fetches `url` into `dest` (created, truncated or resumed) with `check`
/// riding along with the hasher.
pub async fn fetch_checked(
    http: &reqwest::Client,
    url: &str,
    dest: &Path,
    conditional: &Validators,
    limits: &Limits,
    sinks: Sinks<'_>,
    check: Option<&mut dyn BodyCheck>,
) -> Result<Fetched, FetchError> {
    let mut d = Download::new(url, dest, limits, sinks, check);
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| d.io(e))?;
    }
    d.resume_from_disk().await?;
    d.replay_kept().await?;
    loop {
        let first = d.pipeline.is_none();
        let (offset, if_range) = (d.offset, d.validators.if_range().map(str::to_string));
        let build = |mut request: reqwest::RequestBuilder| {
            if first {
                if let Some(etag) = &conditional.etag {
                    request = request.header(header::IF_NONE_MATCH, etag);
                }
                if let Some(date) = &conditional.last_modified {
                    request = request.header(header::IF_MODIFIED_SINCE, date);
                }
            } else {
                request = request.header(header::RANGE, format!("bytes={offset}-"));
                if let Some(v) = &if_range {
                    request = request.header(header::IF_RANGE, v);
                }
            }
            request
        };
        let sent = send(http, url, &limits.guard, build);
        let response = match tokio::time::timeout(limits.read_timeout, sent).await {
            // A resume that cannot reach the origin yet (the link that cut
            // the body is still down, or just came back) is one more cut,
            // after a pause that grows: the kept bytes stay kept.
            Err(_) if !first => {
                d.cut().await?;
                tokio::time::sleep(resume_pause(d.resumes)).await;
                continue;
            }
            Ok(Err(FetchError::Transport { .. })) if !first => {
                d.cut().await?;
                tokio::time::sleep(resume_pause(d.resumes)).await;
                continue;
            }
            Err(_) => return Err(d.stalled()),
            Ok(result) => result?,
        };
        let asked_conditionally = conditional.etag.is_some() || conditional.last_modified.is_some();
        let mut response = match d.accept(response, first, asked_conditionally).await? {
            Answer::NotModified => return Ok(Fetched::NotModified),
            Answer::Again => continue,
            Answer::Body(response) => response,
        };
        if !d.stream(&mut response).await? {
            return d.finish().await;
        }
        d.cut().await?;
    }
}

/// The pause before the `resumes`-th attempt to reach an origin that
/// could not be reached on a resume: 1, 2, 4 … seconds, at most 30.
fn resume_pause(resumes: u32) -> Duration {
    Duration::from_secs(1u64 << resumes.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// What an answer means for the fetch.
enum Answer {
    /// 304 to a conditional request.
    NotModified,
    /// Ask again (from zero): the answer could not be used.
    Again,
    /// Stream this body.
    Body(reqwest::Response),
}

/// The fetch in progress. Why each field exists: the pipeline hashes,
/// writes and checkpoints what the body brings (None until a body starts);
/// `batch` gathers accepted pieces until a batch is worth handing over;
/// `offset` is where the next byte goes, `total` what the origin declared;
/// `validators` name the version the kept bytes belong to (a resume must
/// match them); the counters go into the result; `window` measures the
/// minimum-rate rule.
struct Download<'a, 'c> {
    url: &'a str,
    dest: &'a Path,
    limits: &'a Limits,
    sinks: Sinks<'a>,
    check: Option<&'c mut dyn BodyCheck>,
    /// Every body is sniffed for an HTML page, unless the URL asks for one.
    sniff: Option<HtmlSniff>,
    pipeline: Option<Pipeline>,
    batch: Batch,
    offset: u64,
    total: Option<u64>,
    validators: Validators,
    resumes: u32,
    restarts: u32,
    reused: u64,
    resume_at: PathBuf,
    outboard_at: PathBuf,
    window: (Instant, u64),
}

impl<'a, 'c> Download<'a, 'c> {
    fn new(
        url: &'a str,
        dest: &'a Path,
        limits: &'a Limits,
        sinks: Sinks<'a>,
        check: Option<&'c mut dyn BodyCheck>,
    ) -> Self {
        Self {
            url,
            dest,
            limits,
            sinks,
            check,
            sniff: (!crate::sniff::url_wants_html(url)).then(HtmlSniff::default),
            pipeline: None,
            batch: Batch::default(),
            offset: 0,
            total: None,
            validators: Validators::default(),
            resumes: 0,
            restarts: 0,
            reused: 0,
            resume_at: resume_path(dest),
            outboard_at: outboard_path(dest),
            window: (Instant::now(), 0),
        }
    }

    fn io(&self, source: std::io::Error) -> FetchError {
        FetchError::Io {
            path: self.dest.to_path_buf(),
            source,
        }
    }

    fn refuse(&self, why: String) -> FetchError {
        FetchError::Refused {
            url: self.url.into(),
            why,
        }
    }

    fn stalled(&self) -> FetchError {
        FetchError::Stalled {
            url: self.url.into(),
            after: self.limits.read_timeout,
        }
    }

    /// Starts the pipeline on `data` and `outboard`, positioned after the
    /// `groups` whole groups `tree` already holds.
    async fn start(
        &mut self,
        data: tokio::fs::File,
        outboard: tokio::fs::File,
        tree: TreeHasher,
        groups: u64,
    ) -> Result<(), FetchError> {
        // The stages must be gone before new ones write the same files.
        self.pipeline = None;
        if groups == 0 {
            // The version is on record from the body's first byte: a job
            // stopped before its first checkpoint (its lease lost, the
            // process killed) still resumes from what its data and
            // outboard agree on.
            let state = ResumeState {
                url: self.url.into(),
                validators: self.validators.clone(),
                total: self.total,
                groups: 0,
            };
            let at = self.resume_at.clone();
            let json = serde_json::to_vec(&state).map_err(|e| self.io(std::io::Error::other(e)))?;
            tokio::task::spawn_blocking(move || crate::write_atomic(&at, &json, 0o600))
                .await
                .map_err(|e| self.io(std::io::Error::other(e)))?
                .map_err(|e| self.io(e))?;
        }
        let start = Start {
            data: data.into_std().await,
            outboard: outboard.into_std().await,
            tree,
            groups,
            state: ResumeState {
                url: self.url.into(),
                validators: self.validators.clone(),
                total: self.total,
                groups,
            },
            resume_at: self.resume_at.clone(),
        };
        let mut pipeline = Pipeline::start(start).map_err(|e| self.io(e))?;
        self.batch = pipeline.batch();
        self.pipeline = Some(pipeline);
        Ok(())
    }

    /// Stops the pipeline (joining its threads) and removes what is staged.
    async fn discard(&mut self) {
        self.pipeline = None;
        remove_staged(self.dest).await;
    }

    /// Takes up what a previous attempt left on disk: only the groups that
    /// still hash to their recorded CVs are kept. That is every group whose
    /// data and outboard CV agree, past the last checkpoint too: a job
    /// stopped between checkpoints (its process not the machine gone)
    /// left them in the files, and a torn or lost write cannot hash to the
    /// CV beside it, so the first disagreement ends what is kept.
    async fn resume_from_disk(&mut self) -> Result<(), FetchError> {
        let previous = std::fs::read(&self.resume_at)
            .ok()
            .and_then(|json| serde_json::from_slice::<ResumeState>(&json).ok())
            .filter(|state| state.url == self.url);
        let Some(state) = previous else {
            return Ok(());
        };
        let (data, ob, groups) = (
            self.dest.to_path_buf(),
            self.outboard_at.clone(),
            state.groups,
        );
        let cvs = tokio::task::spawn_blocking(move || verify_on_disk(&data, &ob, u64::MAX))
            .await
            .map_err(|e| self.io(std::io::Error::other(e)))?
            .unwrap_or_default();
        if (cvs.len() as u64) < groups {
            tracing::warn!(
                url = %self.url,
                group = cvs.len(),
                "bytes on disk no longer match their recorded hash: re-fetching from that group"
            );
        }
        if cvs.is_empty() {
            return Ok(());
        }
        let verified = cvs.len() as u64;
        let offset = verified * GROUP_LEN as u64;
        let data = self.reopen(self.dest, offset).await?;
        let ob = self
            .reopen(&self.outboard_at, verified * CV_LEN as u64)
            .await?;
        self.validators = state.validators;
        self.total = state.total;
        self.start(data, ob, TreeHasher::from_verified_groups(&cvs), verified)
            .await?;
        self.offset = offset;
        self.reused = offset;
        self.window = (Instant::now(), offset);
        let progress = self.sinks.progress;
        progress
            .total
            .store(self.total.unwrap_or(0), Ordering::Relaxed);
        progress.done.store(offset, Ordering::Relaxed);
        tracing::info!(url = %self.url, offset, "resuming after re-verifying the bytes already on disk");
        Ok(())
    }

    /// Opens `path` for appending after its first `len` bytes.
    async fn reopen(&self, path: &Path, len: u64) -> Result<tokio::fs::File, FetchError> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .await
            .map_err(|e| self.io(e))?;
        file.set_len(len).await.map_err(|e| self.io(e))?;
        file.seek(std::io::SeekFrom::End(0))
            .await
            .map_err(|e| self.io(e))?;
        Ok(file)
    }

    /// The bytes kept from disk go through the checks first, read in
    /// pieces (memory stays bounded whatever was kept).
    async fn replay_kept(&mut self) -> Result<(), FetchError> {
        use tokio::io::AsyncReadExt;
        if self.offset == 0 || (self.check.is_none() && self.sniff.is_none()) {
            return Ok(());
        }
        let file = tokio::fs::File::open(self.dest)
            .await
            .map_err(|e| self.io(e))?;
        let mut kept = file.take(self.offset);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = kept.read(&mut buf).await.map_err(|e| self.io(e))?;
            if n == 0 {
                return Ok(());
            }
            if let Some(Err(why)) = self.sniff.as_mut().map(|s| s.update(&buf[..n])) {
                return Err(self.refuse(why));
            }
            match self.check.as_deref_mut() {
                Some(check) => {
                    if let Err(why) = check.update(&buf[..n]) {
                        return Err(self.refuse(why));
                    }
                }
                None if self.sniff.as_ref().is_none_or(HtmlSniff::decided) => return Ok(()),
                None => {}
            }
        }
    }

    /// Forgets the kept bytes: the next answer starts from byte 0.
    async fn start_over(&mut self) {
        // Stopped first: its syncer must not record the old bytes again.
        self.pipeline = None;
        let _ = tokio::fs::remove_file(&self.resume_at).await;
        self.offset = 0;
        self.reused = 0;
        self.sinks.progress.done.store(0, Ordering::Relaxed);
    }

    /// Decides what an answer means. A 206 must continue exactly the kept
    /// bytes' version; a 200 starts the body (again) from zero.
    async fn accept(
        &mut self,
        response: reqwest::Response,
        first: bool,
        asked_conditionally: bool,
    ) -> Result<Answer, FetchError> {
        let status = response.status();
        match status {
            StatusCode::NOT_MODIFIED if first && asked_conditionally => {
                // Whatever an earlier attempt left (bytes that no longer
                // verified) is of no use now.
                remove_staged(self.dest).await;
                Ok(Answer::NotModified)
            }
            StatusCode::PARTIAL_CONTENT if !first => self.accept_range(response).await,
            StatusCode::OK => {
                if !first {
                    // The origin ignored the range or the file changed
                    // (If-Range): the only honest course is from zero.
                    self.restarts += 1;
                    tracing::warn!(url = %self.url, offset = self.offset, "origin cannot resume: starting again from byte 0");
                    self.start_over().await;
                }
                self.begin_body(&response).await?;
                Ok(Answer::Body(response))
            }
            status if status.is_success() => Err(self.refuse(format!(
                "unexpected HTTP {status} (asked {})",
                if first { "the file" } else { "a range" }
            ))),
            status => Err(FetchError::Status {
                url: self.url.into(),
                status,
            }),
        }
    }

    /// A 206: the range must start where the kept bytes end, and be of
    /// their version — appending another version's bytes would splice two
    /// into a file that never existed at the origin.
    async fn accept_range(&mut self, response: reqwest::Response) -> Result<Answer, FetchError> {
        let headers = response.headers();
        let (start, _end, announced) = content_range(headers)
            .ok_or_else(|| self.refuse("a 206 answer without a usable Content-Range".into()))?;
        if start != self.offset {
            return Err(self.refuse(format!(
                "asked for bytes {}- of {:?}, got Content-Range {start}-…/{announced:?}",
                self.offset, self.total
            )));
        }
        let got = Validators::from_headers(headers);
        let resized = announced.is_some() && self.total.is_some() && announced != self.total;
        if !resized && self.validators.same_version(&got) {
            return Ok(Answer::Body(response));
        }
        self.restarts += 1;
        tracing::warn!(
            url = %self.url, offset = self.offset, kept = ?self.validators, sent = ?got,
            "the origin answered the range with bytes of another version: starting again from byte 0"
        );
        if self.restarts > self.limits.max_resumes {
            return Err(self.refuse(format!(
                "the origin answered {} range requests with another version's bytes",
                self.restarts
            )));
        }
        self.start_over().await;
        Ok(Answer::Again)
    }

    /// A 200: refusals that need no byte, then a fresh file, outboard,
    /// tree and checks.
    async fn begin_body(&mut self, response: &reqwest::Response) -> Result<(), FetchError> {
        let headers = response.headers();
        if html_instead_of_file(self.url, headers) {
            return Err(self.refuse(
                "the origin sent an HTML page instead of the file (an error page?)".into(),
            ));
        }
        let declared = response.content_length();
        if declared.is_some_and(|d| d > self.limits.max_size) {
            return Err(FetchError::TooLarge {
                url: self.url.into(),
                limit: self.limits.max_size,
                declared,
            });
        }
        self.total = declared;
        self.sinks
            .progress
            .total
            .store(declared.unwrap_or(0), Ordering::Relaxed);
        // The body and its outboard (a 32-byte hash per 16 KiB group) must
        // fit beside what is staged already: refuse now, not at ENOSPC.
        if let Some(size) = declared {
            let needed = size + size / 512;
            let dir = self.dest.parent().unwrap_or(self.dest);
            let free = ark_core::fs::free_space(dir).unwrap_or(u64::MAX);
            if free < needed {
                return Err(FetchError::NoSpace {
                    url: self.url.into(),
                    dir: dir.to_path_buf(),
                    free,
                    needed,
                });
            }
        }
        self.validators = Validators::from_headers(headers);
        // No stage may write the files once they are truncated.
        self.pipeline = None;
        let opened = tokio::fs::File::create(self.dest)
            .await
            .map_err(|e| self.io(e))?;
        let outboard = tokio::fs::File::create(&self.outboard_at)
            .await
            .map_err(|e| self.io(e))?;
        self.start(opened, outboard, TreeHasher::new(), 0).await?;
        if let Some(check) = self.check.as_deref_mut() {
            check.reset();
        }
        if let Some(sniff) = self.sniff.as_mut() {
            sniff.reset();
        }
        Ok(())
    }

    /// Streams the answer's body; Ok(true) when it was cut short.
    async fn stream(&mut self, response: &mut reqwest::Response) -> Result<bool, FetchError> {
        // While the body streams, self-yield watches the path to where it
        // comes from (the address already connected, so already checked).
        let _transfer = match self.sinks.self_yield.zip(response.remote_addr()) {
            Some((self_yield, origin)) => Some(self_yield.transfer(origin).await),
            None => None,
        };
        loop {
            let cut = match tokio::time::timeout(self.limits.read_timeout, response.chunk()).await {
                Err(_) => return Err(self.stalled()),
                Ok(Err(_)) => true,
                Ok(Ok(None)) => self.total.is_some_and(|t| self.offset < t),
                Ok(Ok(Some(chunk))) => {
                    self.take_chunk(&chunk).await?;
                    continue;
                }
            };
            // Cut or whole: what was accepted goes on to the pipeline.
            self.hand_over().await?;
            return Ok(cut);
        }
    }

    /// Hands the gathered batch to the pipeline and takes an empty one.
    async fn hand_over(&mut self) -> Result<(), FetchError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let sent = match self.pipeline.as_mut() {
            Some(pipeline) => {
                let full = std::mem::replace(&mut self.batch, pipeline.batch());
                pipeline.send(full).await
            }
            None => Err(std::io::Error::other("no body in progress to write")),
        };
        sent.map_err(|e| self.io(e))
    }

    /// One piece of the body: limits, checks, on to the pipeline (hasher,
    /// file, outboard, durable checkpoints), progress, the caps and the
    /// rate rule.
    async fn take_chunk(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        let len = chunk.len() as u64;
        if self.offset + len > self.limits.max_size {
            return Err(FetchError::TooLarge {
                url: self.url.into(),
                limit: self.limits.max_size,
                declared: self.total,
            });
        }
        if let Some(Err(why)) = self.sniff.as_mut().map(|s| s.update(chunk)) {
            self.discard().await;
            return Err(self.refuse(why));
        }
        if let Some(check) = self.check.as_deref_mut() {
            if let Err(why) = check.update(chunk) {
                return Err(self.refuse(why));
            }
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            rest = &rest[self.batch.fill(rest)..];
            if self.batch.is_full() {
                self.hand_over().await?;
            }
        }
        self.offset += len;
        self.sinks
            .progress
            .done
            .store(self.offset, Ordering::Relaxed);
        self.sinks.counter.add(len);
        self.sinks.throttle.take(len).await;
        if let Some(run) = self.sinks.run_throttle {
            run.take(len).await;
        }
        self.rate_rule()
    }

    /// The minimum average rate over a window: a drip meant to hold a
    /// lease forever fails.
    fn rate_rule(&mut self) -> Result<(), FetchError> {
        let (since, at) = self.window;
        let elapsed = since.elapsed();
        if self.limits.min_rate == 0 || elapsed < self.limits.min_rate_window {
            return Ok(());
        }
        let rate = (self.offset.saturating_sub(at) as f64 / elapsed.as_secs_f64()) as u64;
        if rate < self.limits.min_rate {
            return Err(FetchError::TooSlow {
                url: self.url.into(),
                rate,
                min: self.limits.min_rate,
                window: self.limits.min_rate_window,
            });
        }
        self.window = (Instant::now(), self.offset);
        Ok(())
    }

    /// The body was cut: checkpoint (everything accepted made durable and
    /// recorded), count the resume, and go on (or give up past the limit).
    async fn cut(&mut self) -> Result<(), FetchError> {
        if let Some(pipeline) = self.pipeline.as_mut() {
            let checkpointed = pipeline.checkpoint().await;
            checkpointed.map_err(|e| self.io(e))?;
        }
        self.resumes += 1;
        if self.resumes > self.limits.max_resumes {
            return Err(FetchError::Interrupted {
                url: self.url.into(),
                resumes: self.resumes - 1,
                offset: self.offset,
            });
        }
        tracing::info!(url = %self.url, offset = self.offset, resumes = self.resumes, "body cut: resuming with a range request");
        Ok(())
    }

    /// The whole body is in: the last check, then the pipeline's end (root,
    /// file and outboard durable) and the resume state dropped.
    async fn finish(mut self) -> Result<Fetched, FetchError> {
        if let Some(Err(why)) = self.sniff.as_mut().map(HtmlSniff::finish) {
            self.discard().await;
            return Err(self.refuse(why));
        }
        let Some(pipeline) = self.pipeline.take() else {
            return Err(self.io(std::io::Error::other("no body in progress to finish")));
        };
        let root = pipeline.finish().await.map_err(|e| self.io(e))?;
        let _ = tokio::fs::remove_file(&self.resume_at).await;
        Ok(Fetched::Body {
            size: self.offset,
            root,
            validators: self.validators,
            resumes: self.resumes,
            restarts: self.restarts,
            reused: self.reused,
        })
    }
}
