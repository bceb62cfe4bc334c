//! The S3 backend: an archive in an S3-compatible object store (a Garage
//! cluster across a few houses, or any S3), `archive = "s3://bucket/prefix"`
//! with `[s3]` in `commander.toml`.
//!
//! Guarantees, as on the filesystem:
//! - **Written once.** A version's key is unique (the ledger claims it
//!   before anything is written) and is checked absent before writing; a
//!   single `PUT` also carries `If-None-Match: *`, so a store that supports
//!   conditional writes refuses to overwrite even a key the check missed.
//!   (Garage 2.5 ignores the header: there the ledger's unique key and the
//!   check are the guard, and the commander is the bucket's only writer.)
//! - **Invisible until whole.** A file of more than one part goes up as a
//!   multipart upload whose parts are aligned to the verified chunk groups
//!   ([`PART_SIZE`] is a whole number of them): nothing is visible at the
//!   key until `CompleteMultipartUpload`, which is only sent once every
//!   byte read from quarantine hashed to the version's BLAKE3 root. The
//!   upload's id goes to the ledger first, so a recovery aborts what a
//!   crash left.
//! - **Bounded waits.** Requests are retried a few times within
//!   [`RETRY_TIMEOUT`]; a store that stays down is an error the landing
//!   turns into "try again later" (the upload stays verified in
//!   quarantine).
//!
//! The client is `object_store` (Apache Arrow's), not hand-written signing:
//! it signs SigV4, retries, streams and speaks multipart; it runs on a small
//! runtime of its own, so the blocking landing code can call it from any
//! thread. Credentials come from an AWS-style credentials file, never from
//! the config itself, and are never logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use super::{manifest_key, Backend, Expected, Stored};
use crate::config::S3Config;
use crate::{CommanderError, Result};

/// Bytes per multipart part: 512 chunk groups of 16 KiB, so a part ends on
/// a group boundary; above S3's 5 MiB minimum, and a few parts in flight
/// keep a gigabit link full with 32 MiB of memory.
pub const PART_SIZE: usize = 512 * ark_core::tree::GROUP_LEN;
// Parts end on chunk-group boundaries, and are no smaller than S3 allows.
const _: () = assert!(PART_SIZE.is_multiple_of(ark_core::tree::GROUP_LEN) && PART_SIZE >= 5 << 20);

/// Parts sent at once.
const PARTS_IN_FLIGHT: usize = 4;

/// How long one request may be retried before the store counts as down: a
/// node restarting comes back within it; a cluster that is down is
/// reported well before an agent's delivery gives up on the commander.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// An archive in an S3 bucket, under a prefix.
pub struct S3Backend {
    store: Arc<AmazonS3>,
    /// `s3://bucket/prefix`, for messages.
    url: String,
    /// The key prefix every version's key goes under (may be empty).
    prefix: String,
    /// The client's own runtime (taken on drop: a runtime may not be
    /// dropped inside another).
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("S3Backend").field("url", &self.url).finish()
    }
}

impl Drop for S3Backend {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `s3://bucket/prefix` split into (bucket, prefix without slashes).
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| {
        CommanderError::Invalid(format!(
            "archive {url:?}: an object store archive is written s3://bucket/prefix"
        ))
    })?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(CommanderError::Invalid(format!(
            "archive {url:?} names no bucket: write s3://bucket/prefix"
        )));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// The access key and secret of `profile` in an AWS-style credentials file
/// (`[profile]`, `aws_access_key_id = …`, `aws_secret_access_key = …`).
pub fn read_credentials(path: &Path, profile: &str) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(CommanderError::io("reading the S3 credentials file", path))?;
    let (mut section, mut id, mut secret) = (String::new(), None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().trim_start_matches("profile ").to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if section != profile {
            continue;
        }
        match key.trim() {
            "aws_access_key_id" => id = Some(value.trim().to_string()),
            "aws_secret_access_key" => secret = Some(value.trim().to_string()),
            _ => {}
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok((id, secret)),
        _ => Err(CommanderError::Config {
            path: path.to_path_buf(),
            message: format!(
                "no aws_access_key_id and aws_secret_access_key in profile [{profile}]: \
                 write both there (the file is read, never logged)"
            ),
        }),
    }
}

impl S3Backend {
    /// Connects to the archive at `url` (`s3://bucket/prefix`) with the
    /// `[s3]` settings; relative credential paths are under `base` (the
    /// data dir). Nothing is sent until the first call.
    pub fn open(url: &str, config: &S3Config, base: &Path) -> Result<Self> {
        let (bucket, prefix) = parse_url(url)?;
        if config.endpoint.is_empty() {
            return Err(CommanderError::Invalid(format!(
                "archive {url}: set [s3] endpoint in commander.toml (e.g. \"http://nas:3900\")"
            )));
        }
        let credentials = base.join(&config.credentials);
        if config.credentials.is_empty() {
            return Err(CommanderError::Invalid(format!(
                "archive {url}: set [s3] credentials to an AWS-style credentials file"
            )));
        }
        let (id, secret) = read_credentials(&credentials, &config.profile)?;
        let retry = object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 5,
            retry_timeout: RETRY_TIMEOUT,
        };
        let options = object_store::ClientOptions::new()
            .with_allow_http(config.endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(120));
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_region(&config.region)
            .with_bucket_name(&bucket)
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            .with_retry(retry)
            .with_client_options(options)
            .build()
            .map_err(|e| CommanderError::Invalid(format!("archive {url}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ark-s3")
            .enable_all()
            .build()
            .map_err(|e| CommanderError::Invalid(format!("starting the S3 client: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            url: url.trim_end_matches('/').to_string(),
            prefix,
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the client's runtime and waits for it, from any
    /// thread (the landing's blocking thread, a CLI command, a test).
    fn block<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().expect("the S3 task ran to completion")
    }

    /// The store's key of archive key `key`.
    fn key(&self, key: &str) -> Result<Key> {
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        };
        Key::parse(&full)
            .map_err(|e| CommanderError::Invalid(format!("{key:?} is no object key: {e}")))
    }

    fn io_key(&self, key: &str) -> std::io::Result<Key> {
        self.key(key)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
    }

    /// A store error as the commander says it: unreachable or failing
    /// stores are "try again later" (the upload stays verified in
    /// quarantine), anything else names what failed.
    fn error(&self, what: &str, key: &str, e: object_store::Error) -> CommanderError {
        match e {
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. } => CommanderError::AlreadyExists(format!(
                "{what} {}: the store already holds an object there, and Ark never overwrites one",
                self.locate(key)
            )),
            object_store::Error::NotFound { .. } => {
                CommanderError::NotFound(format!("{what} {}: no such object", self.locate(key)))
            }
            e if refused(&e) => CommanderError::StoreUnavailable(format!(
                "{what} {}: the object store refused the key in [s3] credentials ({e}); \
                     give the key read, write and delete on the bucket (`garage bucket allow`); \
                     nothing was committed and the verified upload stays in quarantine",
                self.locate(key)
            )),
            other => CommanderError::StoreUnavailable(format!(
                "{what} {}: the object store did not answer ({other}); nothing was committed and \
                 the verified upload stays in quarantine: it lands once the store is back",
                self.locate(key)
            )),
        }
    }

    /// Writes one of the commander's own objects under `.ark/` (the PKI's
    /// backup), replacing what was there: not a version, not listed.
    pub fn put_own(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        debug_assert!(key.starts_with(".ark/"));
        let path = self.key(key)?;
        let store = self.store.clone();
        self.block(async move { store.put(&path, PutPayload::from(bytes)).await })
            .map(|_| ())
            .map_err(|e| self.error("writing", key, e))
    }

    /// Reads one of the commander's own objects under `.ark/`.
    pub fn get_own(&self, key: &str) -> std::io::Result<Vec<u8>> {
        self.read(key)
    }

    /// Refuses to write where an object already is.
    fn ensure_absent(&self, key: &str) -> Result<()> {
        let path = self.key(key)?;
        let store = self.store.clone();
        match self.block(async move { store.head(&path).await }) {
            Ok(_) => Err(CommanderError::AlreadyExists(format!(
                "{} already exists: Ark never overwrites a stored object (a stray the ledger \
                 does not know? `archive verify` lists it)",
                self.locate(key)
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("checking", key, e)),
        }
    }

    /// Writes `bytes` at `key` in one request, only if nothing is there.
    fn put_new(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.ensure_absent(key)?;
        let path = self.key(key)?;
        let store = self.store.clone();
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.block(async move {
            store
                .put_opts(&path, PutPayload::from(bytes), options)
                .await
        })
        .map(|_| ())
        .map_err(|e| self.error("writing", key, e))
    }
}

/// Sends `file` to `path` as a multipart upload, hashing every byte read;
/// completes it only when the bytes are `expected`, aborts it otherwise.
async fn upload_file(
    store: Arc<AmazonS3>,
    path: Key,
    file: PathBuf,
    expected: Expected,
    id: String,
) -> std::result::Result<(), UploadError> {
    use std::io::Read;
    let result = async {
        let mut reader = std::fs::File::open(&file).map_err(UploadError::Read)?;
        let mut hasher = blake3::Hasher::new();
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut parts: Vec<PartId> = Vec::new();
        let mut index = 0;
        loop {
            let mut part = vec![0u8; PART_SIZE];
            let mut filled = 0;
            while filled < PART_SIZE {
                match reader
                    .read(&mut part[filled..])
                    .map_err(UploadError::Read)?
                {
                    0 => break,
                    n => filled += n,
                }
            }
            part.truncate(filled);
            if filled == 0 && index > 0 {
                break;
            }
            hasher.update(&part);
            let (store, path, id) = (store.clone(), path.clone(), id.clone());
            in_flight.push_back(async move {
                store
                    .put_part(&path, &id, index, PutPayload::from(part))
                    .await
            });
            index += 1;
            if in_flight.len() >= PARTS_IN_FLIGHT {
                if let Some(done) = in_flight.next().await {
                    parts.push(done.map_err(UploadError::Store)?);
                }
            }
            if filled < PART_SIZE {
                break;
            }
        }
        while let Some(done) = in_flight.next().await {
            parts.push(done.map_err(UploadError::Store)?);
        }
        // The fault-injection hook: a crash with every part sent and the
        // upload not completed (a recovery must abort it).
        crate::archive::crash_point("before-complete");
        let got = (hasher.count(), hasher.finalize());
        if got != (expected.size, expected.root) {
            return Err(UploadError::Changed(got.0, got.1));
        }
        store
            .complete_multipart(&path, &id, parts)
            .await
            .map_err(UploadError::Store)?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = store.abort_multipart(&path, &id).await;
    }
    result
}

#[derive(Debug)]
enum UploadError {
    Read(std::io::Error),
    Store(object_store::Error),
    Changed(u64, blake3::Hash),
}

impl Backend for S3Backend {
    fn locate(&self, key: &str) -> String {
        if key.is_empty() {
            self.url.clone()
        } else {
            format!("{}/{key}", self.url)
        }
    }

    fn local_root(&self) -> Option<&Path> {
        None
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.key(key)?;
        let store = self.store.clone();
        let found = self.block(async move {
            match store.head(&path).await {
                Ok(_) => return Ok(true),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            // Anything under `key/` (a version directory's name).
            match store.list(Some(&path)).next().await {
                None => Ok(false),
                Some(Ok(_)) => Ok(true),
                Some(Err(e)) => Err(e),
            }
        });
        found.map_err(|e| self.error("looking up", key, e))
    }

    fn put_manifest(&self, key: &str, manifest: &[u8], _shared_dir: bool) -> Result<()> {
        // No directories in a store: the manifest is the version's first
        // object, written once.
        self.put_new(&manifest_key(key), manifest.to_vec())
    }

    fn put_upload(
        &self,
        key: &str,
        quarantined: &Path,
        expected: Expected,
        started: &dyn Fn(&str) -> Result<()>,
    ) -> Result<()> {
        if expected.size <= PART_SIZE as u64 {
            // One request: the bytes are read and hashed first.
            let bytes = std::fs::read(quarantined)
                .map_err(CommanderError::io("reading quarantined", quarantined))?;
            let got = blake3::hash(&bytes);
            if bytes.len() as u64 != expected.size || got != expected.root {
                return Err(changed(quarantined, bytes.len() as u64, got));
            }
            return self.put_new(key, bytes);
        }
        self.ensure_absent(key)?;
        let path = self.key(key)?;
        let store = self.store.clone();
        let create = path.clone();
        let id = self
            .block(async move { store.create_multipart(&create).await })
            .map_err(|e| self.error("starting the upload of", key, e))?;
        if let Err(e) = started(&id) {
            let (store, path, id) = (self.store.clone(), path.clone(), id.clone());
            let _ = self.block(async move { store.abort_multipart(&path, &id).await });
            return Err(e);
        }
        let sent = self.block(upload_file(
            self.store.clone(),
            path,
            quarantined.to_path_buf(),
            expected,
            id,
        ));
        sent.map_err(|e| match e {
            UploadError::Read(e) => CommanderError::io("reading quarantined", quarantined)(e),
            UploadError::Store(e) => self.error("uploading", key, e),
            UploadError::Changed(size, root) => changed(quarantined, size, root),
        })
    }

    fn put_reference(&self, key: &str, from: &str) -> Result<()> {
        self.ensure_absent(key)?;
        let (from_path, to_path) = (self.key(from)?, self.key(key)?);
        let store = self.store.clone();
        self.block(async move { store.copy(&from_path, &to_path).await })
            .map_err(|e| self.error("copying to", key, e))
    }

    fn take_back(&self, _key: &str, _quarantined: &Path) {
        // The store copied the upload: the quarantine still holds it.
    }

    fn moves_upload(&self) -> bool {
        false
    }

    fn remove(&self, key: &str, _shared_dir: bool, multipart: Option<&str>) -> Result<()> {
        let (path, manifest) = (self.key(key)?, self.key(&manifest_key(key))?);
        let store = self.store.clone();
        let multipart = multipart.map(str::to_string);
        let removed = self.block(async move {
            if let Some(id) = multipart {
                match store.abort_multipart(&path, &id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            for path in [&path, &manifest] {
                match store.delete(path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        removed.map_err(|e| self.error("deleting", key, e))
    }

    fn ping(&self) -> Result<()> {
        let prefix = if self.prefix.is_empty() {
            None
        } else {
            Some(Key::from(self.prefix.as_str()))
        };
        let store = self.store.clone();
        let answered = self.block(async move {
            match store.list(prefix.as_ref()).next().await {
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            }
        });
        answered.map_err(|e| self.error("listing", "", e))
    }

    fn remove_upload(&self, key: &str, id: &str) -> Result<()> {
        let path = self.key(key)?;
        let (store, id) = (self.store.clone(), id.to_string());
        match self.block(async move { store.abort_multipart(&path, &id).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("aborting the upload of", key, e)),
        }
    }

    fn hash(&self, key: &str) -> std::io::Result<(u64, blake3::Hash)> {
        let path = self.io_key(key)?;
        let store = self.store.clone();
        self.block(async move {
            let mut stream = store.get(&path).await?.into_stream();
            let mut hasher = blake3::Hasher::new();
            while let Some(chunk) = stream.next().await {
                hasher.update(&chunk?);
            }
            Ok::<_, object_store::Error>((hasher.count(), hasher.finalize()))
        })
        .map_err(to_io)
    }

    fn size(&self, key: &str) -> std::io::Result<u64> {
        let path = self.io_key(key)?;
        let store = self.store.clone();
        self.block(async move { store.head(&path).await })
            .map(|meta| meta.size)
            .map_err(to_io)
    }

    fn read(&self, key: &str) -> std::io::Result<Vec<u8>> {
        let path = self.io_key(key)?;
        let store = self.store.clone();
        self.block(async move { store.get(&path).await?.bytes().await })
            .map(|bytes| bytes.to_vec())
            .map_err(to_io)
    }

    fn read_at(&self, key: &str, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let path = self.io_key(key)?;
        let store = self.store.clone();
        let range = offset..offset + len as u64;
        let bytes = self
            .block(async move { store.get_range(&path, range).await })
            .map_err(to_io)?;
        if bytes.len() != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{} is shorter than {} bytes",
                    self.locate(key),
                    offset + len as u64
                ),
            ));
        }
        Ok(bytes.to_vec())
    }

    fn local_file(&self, key: &str, scratch: &Path) -> Result<PathBuf> {
        use std::io::Write;
        let path = self.key(key)?;
        let store = self.store.clone();
        let target = scratch.to_path_buf();
        let fetched = self.block(async move {
            let mut file = std::fs::File::create(&target).map_err(FetchError::Write)?;
            let mut stream = store
                .get(&path)
                .await
                .map_err(FetchError::Store)?
                .into_stream();
            while let Some(chunk) = stream.next().await {
                file.write_all(&chunk.map_err(FetchError::Store)?)
                    .map_err(FetchError::Write)?;
            }
            file.sync_all().map_err(FetchError::Write)
        });
        match fetched {
            Ok(()) => Ok(scratch.to_path_buf()),
            Err(FetchError::Write(e)) => Err(CommanderError::io("writing", scratch)(e)),
            Err(FetchError::Store(e)) => Err(self.error("fetching", key, e)),
        }
    }

    fn list(&self) -> Result<Vec<Stored>> {
        let prefix = if self.prefix.is_empty() {
            None
        } else {
            Some(self.key("")?)
        };
        let store = self.store.clone();
        let listed = self.block(async move {
            let mut out = Vec::new();
            let mut stream = store.list(prefix.as_ref());
            while let Some(meta) = stream.next().await {
                let meta = meta?;
                out.push((meta.location.to_string(), meta.size));
            }
            Ok::<_, object_store::Error>(out)
        });
        let listed = listed.map_err(|e| self.error("listing", "", e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut out: Vec<Stored> = listed
            .into_iter()
            .filter_map(|(key, size)| {
                let key = key.strip_prefix(&strip)?.to_string();
                // The commander's own (the state's replica): not versions.
                (!key.starts_with(".ark/")).then_some(Stored { key, size })
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

enum FetchError {
    Write(std::io::Error),
    Store(object_store::Error),
}

fn changed(quarantined: &Path, size: u64, root: blake3::Hash) -> CommanderError {
    CommanderError::Aborted(format!(
        "the quarantined copy {} changed after it was verified ({size} bytes hashing to {root}): \
         nothing was committed; the upload is verified again from the agent",
        quarantined.display()
    ))
}

/// Whether the store refused the credentials (rather than being down).
/// Some requests (a list) come back as a generic error carrying the
/// store's 401/403 answer.
fn refused(e: &object_store::Error) -> bool {
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return true;
    }
    let text = e.to_string();
    [
        "403 Forbidden",
        "401 Unauthorized",
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
    ]
    .iter()
    .any(|said| text.contains(said))
}

fn to_io(e: object_store::Error) -> std::io::Error {
    match e {
        object_store::Error::NotFound { .. } => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string())
        }
        other => std::io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn archive_urls_name_a_bucket_and_a_prefix() {
        assert_eq!(
            parse_url("s3://ark/house/").unwrap(),
            ("ark".into(), "house".into())
        );
        assert_eq!(parse_url("s3://ark").unwrap(), ("ark".into(), "".into()));
        assert!(parse_url("s3:///x").is_err());
        assert!(parse_url("/srv/archive").is_err());
    }

    #[test]
    fn credentials_come_from_the_named_profile() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[other]\naws_access_key_id = X\naws_secret_access_key = Y\n\n[default]\naws_access_key_id=GK1\naws_secret_access_key = s3cr3t\n",
        )
        .unwrap();
        assert_eq!(
            read_credentials(&file, "default").unwrap(),
            ("GK1".into(), "s3cr3t".into())
        );
        assert_eq!(read_credentials(&file, "other").unwrap().0, "X");
        let missing = read_credentials(&file, "nope").unwrap_err().to_string();
        assert!(
            missing.contains("[nope]") && !missing.contains("s3cr3t"),
            "{missing}"
        );
    }
}
