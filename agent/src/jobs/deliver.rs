//! Delivering a staged body, the same for every kind: the dedupe registry,
//! `Have` with the signed manifest, and the verified upload (resumed where
//! the commander's verified bytes end), retried across link failures.

use super::*;

/// Uploads refused for a reason other than the lease (a cut, an error on
/// the commander) before the job fails and the run is retried.
const MAX_UPLOAD_FAILURES: u32 = 3;

/// Link failures (commander unreachable mid-delivery, still holding the
/// stream a partition cut, or its state database full) retried before they
/// count as an upload failure: a minute at [`COMPLETE_RETRY`], longer than a
/// commander restart and than the commander's reaping of a dead stream (its
/// HTTP/2 keepalive). The lease deadline still applies on top.
const MAX_LINK_RETRIES: u32 = 120;

/// Bytes per upload message: well under gRPC's 4 MiB message limit, large
/// enough that framing costs nothing.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// Environment variable naming a byte offset the agent flips in every
/// upload it sends: a fault-injection hook for tests of the commander's
/// verification (TLS makes a real in-transit flip impossible to stage).
pub const FAULT_FLIP_UPLOAD_BYTE: &str = "ARK_FAULT_FLIP_UPLOAD_BYTE";

/// Reads [`FAULT_FLIP_UPLOAD_BYTE`].
pub fn fault_flip_upload_byte() -> Option<u64> {
    let offset = std::env::var(FAULT_FLIP_UPLOAD_BYTE).ok()?.parse().ok()?;
    warn!(
        "fault injection: every upload will have byte {offset} flipped ({FAULT_FLIP_UPLOAD_BYTE})"
    );
    Some(offset)
}

/// Hands a fetched body to the commander: records it in the dedupe
/// registry, asks `Have` with the signed manifest, and uploads (resuming
/// where the commander's verified bytes end) unless the archive already
/// holds it. Ok carries the archive path now holding the bytes; the
/// commander has completed the run.
pub(super) async fn deliver(
    ctx: Arc<JobContext>,
    staged: PathBuf,
    manifest: Manifest,
) -> std::result::Result<String, Stop> {
    let fail = |reason: String| Stop::Fail(failure(reason, true));
    // The registry is this agent's hint; the commander has the last word
    // on dedupe. A registry that cannot be written (its disk full) costs
    // the hint, not the harvest.
    if let Err(e) = record_harvest(&ctx, &manifest) {
        warn!(
            run = manifest.run_id,
            "not recorded in the dedupe registry: {e}"
        );
    }
    let (bytes, signature) = manifest
        .sign(&ctx.credentials.key_pem)
        .map_err(|e| fail(e.to_string()))?;
    let lease = LeaseRef {
        run_id: manifest.run_id,
        generation: manifest.generation,
    };
    let (mut client, mut bulk) = (ctx.client.clone(), ctx.bulk.clone());
    let mut failures = 0u32;
    let mut link_failures = 0u32;
    loop {
        let attempt = async {
            let have = client
                .have(HaveRequest {
                    lease: Some(lease),
                    manifest: bytes.clone(),
                    signature: signature.clone(),
                })
                .await
                .map_err(|status| AgentError::rpc("have", status))?
                .into_inner();
            if have.held {
                info!(
                    run = manifest.run_id,
                    path = %have.path,
                    unchanged = have.unchanged,
                    "the archive already holds these bytes: not uploading"
                );
                return Ok(have.path);
            }
            upload(
                &mut bulk,
                lease,
                &staged,
                &manifest,
                have.resume_from,
                ctx.fault_flip_upload_byte,
            )
            .await
            .map(|landed| landed.path)
        };
        match attempt.await {
            Ok(path) => {
                if let Err(e) = ctx
                    .registry
                    .landed(manifest.run_id, &manifest.blake3, &path)
                {
                    warn!("dedupe registry: {e}");
                }
                return Ok(path);
            }
            Err(e) if e.is_refusal() => return Err(Stop::Abandon(Abandon::Refused(e.to_string()))),
            Err(e) if (e.is_link() || e.is_retry_later()) && link_failures < MAX_LINK_RETRIES => {
                link_failures += 1;
                warn!(run = manifest.run_id, "delivery interrupted, retrying: {e}");
                tokio::time::sleep(COMPLETE_RETRY).await;
            }
            Err(e) => {
                failures += 1;
                warn!(run = manifest.run_id, failures, "upload failed: {e}");
                give_up_after(&e, failures, &staged, &manifest).await?;
            }
        }
    }
}

/// Records the body in the dedupe registry (and says when it was harvested
/// and landed before: the commander is asked anyway, it may have pruned it).
fn record_harvest(ctx: &JobContext, manifest: &Manifest) -> Result<()> {
    let earlier = ctx.registry.record(&Harvest {
        blake3: manifest.blake3.clone(),
        size: manifest.size,
        target: manifest.target.clone(),
        url: manifest.url.clone(),
        etag: manifest.etag.clone(),
        last_modified: manifest.last_modified.clone(),
        run_id: manifest.run_id,
        at_ms: crate::unix_ms(),
        landed_path: None,
    })?;
    if let Some(earlier) = &earlier {
        info!(
            run = manifest.run_id,
            earlier_run = earlier.run_id,
            landed = earlier.landed_path.as_deref().unwrap_or(""),
            "duplicate: this body was harvested and landed before; asking the commander"
        );
    }
    Ok(())
}

/// Re-verifies the staged copy against its own outboard and the manifest's
/// root.
async fn check_staged(staged: &Path, manifest: &Manifest) -> std::result::Result<(), String> {
    let (staged, size, root) = (staged.to_path_buf(), manifest.size, manifest.blake3.clone());
    let checked = tokio::task::spawn_blocking(move || -> std::result::Result<(), String> {
        use std::io::Read;
        let root = blake3::Hash::from_hex(&root).map_err(|e| e.to_string())?;
        let outboard = std::fs::File::open(outboard_path(&staged)).map_err(|e| e.to_string())?;
        let mut verifier = GroupVerifier::new(root, size, std::io::BufReader::new(outboard))
            .map_err(|e| e.to_string())?;
        let mut file = std::fs::File::open(&staged).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        loop {
            let n = file.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            verifier.update(&buf[..n]).map_err(|e| e.to_string())?;
        }
        verifier.finish().map_err(|e| e.to_string())
    })
    .await;
    checked.unwrap_or_else(|e| Err(e.to_string()))
}

/// One upload: the header, the whole outboard, then the data from `offset`.
async fn upload(
    client: &mut AgentSessionClient<Channel>,
    lease: LeaseRef,
    staged: &Path,
    manifest: &Manifest,
    offset: u64,
    flip: Option<u64>,
) -> Result<UploadResponse> {
    if offset > 0 {
        info!(
            run = manifest.run_id,
            offset,
            "resuming the upload at byte {offset}: the commander verified the bytes before it"
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<UploadChunk>(4);
    let header = UploadChunk {
        part: Some(upload_chunk::Part::Header(UploadHeader {
            lease: Some(lease),
            blake3: manifest.blake3.clone(),
            offset,
        })),
    };
    let staged = staged.to_path_buf();
    // The files are read on a blocking thread of their own, into buffers
    // used again once the encoder has let go of them (see [`Pieces`]).
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::Seek;
        let send = |part| tx.blocking_send(UploadChunk { part: Some(part) }).is_ok();
        if !send(header.part.expect("header")) {
            return Ok(());
        }
        let outboard_at = outboard_path(&staged);
        let mut outboard = std::fs::File::open(&outboard_at)
            .map_err(AgentError::io("reading outboard", &outboard_at))?;
        let mut data =
            std::fs::File::open(&staged).map_err(AgentError::io("reading staged file", &staged))?;
        data.seek(std::io::SeekFrom::Start(offset))
            .map_err(AgentError::io("seeking staged file", &staged))?;
        let pieces = Pieces::new();
        let mut at = offset;
        for (file, path, is_data) in [
            (&mut outboard, &outboard_at, false),
            (&mut data, &staged, true),
        ] {
            loop {
                let piece = pieces
                    .next(file, |buf| {
                        let n = buf.len() as u64;
                        if let Some(flip) = flip.filter(|f| is_data && (at..at + n).contains(f)) {
                            buf[(flip - at) as usize] ^= 0x01;
                        }
                    })
                    .map_err(AgentError::io("reading for upload", path))?;
                if piece.is_empty() {
                    break;
                }
                let part = if is_data {
                    at += piece.len() as u64;
                    upload_chunk::Part::Data(piece)
                } else {
                    upload_chunk::Part::Outboard(piece)
                };
                if !send(part) {
                    return Ok(());
                }
            }
        }
        Ok::<(), AgentError>(())
    });
    let response = client
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    if let Ok(Err(e)) = reader.await {
        return Err(e);
    }
    Ok(response
        .map_err(|status| AgentError::rpc("upload", status))?
        .into_inner())
}

/// Buffers for the pieces of an upload, each back for the next piece once
/// the encoder has dropped the one sent from it. Without them every piece
/// is a fresh allocation of [`UPLOAD_CHUNK`] bytes: fresh pages, faulted in
/// and zeroed by the kernel, and on musl (the agent's static build) mapped
/// and unmapped again for each piece. A buffer that comes back is already
/// initialised, so it is read into as it is.
struct Pieces {
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    home: std::sync::mpsc::Sender<Vec<u8>>,
}

/// A piece on its way: its bytes, and where its buffer goes when the last
/// `Bytes` of it is dropped.
struct Piece {
    buf: Vec<u8>,
    len: usize,
    home: std::sync::mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        // The reader may be gone (the upload ended): the buffer is freed.
        let _ = self.home.send(std::mem::take(&mut self.buf));
    }
}

impl Pieces {
    fn new() -> Self {
        let (home, back) = std::sync::mpsc::channel();
        Pieces { back, home }
    }

    /// Reads up to [`UPLOAD_CHUNK`] bytes of `file` (fewer only at its end,
    /// none past it) into a buffer; `touch` may change them before they
    /// are sealed into `Bytes`.
    fn next(
        &self,
        file: &mut std::fs::File,
        touch: impl FnOnce(&mut [u8]),
    ) -> std::io::Result<bytes::Bytes> {
        use std::io::Read;
        let mut buf = self
            .back
            .try_recv()
            .unwrap_or_else(|_| vec![0u8; UPLOAD_CHUNK]);
        let mut len = 0;
        while len < UPLOAD_CHUNK {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(read) => len += read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        touch(&mut buf[..len]);
        Ok(bytes::Bytes::from_owner(Piece {
            buf,
            len,
            home: self.home.clone(),
        }))
    }
}

/// After a failed upload: fails the job when the staged copy itself no
/// longer verifies (it is fetched again) or after [`MAX_UPLOAD_FAILURES`].
async fn give_up_after(
    e: &AgentError,
    failures: u32,
    staged: &Path,
    manifest: &Manifest,
) -> std::result::Result<(), Stop> {
    let fail = |reason: String| Stop::Fail(failure(reason, true));
    if e.is_cut() {
        // Was it the copy on our disk, or the way to the commander?
        if let Err(bad) = check_staged(staged, manifest).await {
            return Err(fail(format!(
                "{e}; the staged copy itself no longer matches its hash ({bad}): it will be fetched again"
            )));
        }
    }
    if failures >= MAX_UPLOAD_FAILURES {
        return Err(fail(format!(
            "upload failed {failures} times; last: {e}{}",
            if e.is_cut() {
                " (the staged copy still verifies here, so the bytes changed between this agent and the commander's disk)"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces cover the file exactly, `touch` sees each before it is
    /// sealed, and a buffer dropped by the encoder is the next one read
    /// into (no fresh allocation, whatever it held before overwritten).
    #[test]
    fn pieces_cover_the_file_and_reuse_dropped_buffers() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("staged");
        let body: Vec<u8> = (0..UPLOAD_CHUNK * 2 + 1000)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &body)?;
        let mut file = std::fs::File::open(&path)?;
        let pieces = Pieces::new();
        let first = pieces.next(&mut file, |b| b[0] ^= 0xff)?;
        assert_eq!(first.len(), UPLOAD_CHUNK);
        assert_eq!(first[0], body[0] ^ 0xff);
        assert_eq!(first[1..], body[1..UPLOAD_CHUNK]);
        let held = first.as_ptr();
        drop(first);
        let second = pieces.next(&mut file, |_| {})?;
        assert_eq!(second.as_ptr(), held, "the dropped buffer was not reused");
        assert_eq!(second[..], body[UPLOAD_CHUNK..2 * UPLOAD_CHUNK]);
        // Still held: the next piece gets a buffer of its own.
        let last = pieces.next(&mut file, |_| {})?;
        assert_ne!(last.as_ptr(), second.as_ptr());
        assert_eq!(last[..], body[2 * UPLOAD_CHUNK..]);
        assert!(pieces.next(&mut file, |_| {})?.is_empty());
        Ok(())
    }
}
