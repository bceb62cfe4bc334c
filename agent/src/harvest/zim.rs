//! The `zim` kind on the agent: a Kiwix archive is a file with a streaming
//! check riding along ([`StreamCheck`]: the header as soon as it arrives,
//! the MD5 of the whole in the same pass as BLAKE3); a split archive
//! (`…zimaa`, `…zimab`, …) is one target, fetched part by part and joined
//! here.

use ark_core::formats::zim::StreamCheck;
use ark_core::BodyCheck;

use super::Plan;

#[derive(Debug, Default)]
pub struct Zim {
    check: StreamCheck,
}

impl Plan for Zim {
    fn check(&mut self) -> Option<&mut dyn BodyCheck> {
        Some(&mut self.check)
    }

    fn finish(&mut self, size: u64) -> Result<(), String> {
        // Layout and MD5 need the whole file: a mismatch is damage (worth
        // another fetch), caught before any upload.
        std::mem::take(&mut self.check)
            .finish(size)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn split(&mut self, url: &str) -> Option<&mut StreamCheck> {
        url.ends_with(".zimaa").then_some(&mut self.check)
    }
}

/// Fetches a split archive (`…zimaa`, `…zimab`, … until the origin has no
/// next part) into `dest` as one joined file: each part through the
/// resumable fetch into its own staging file, then joined in order through
/// the tree hasher, its outboard and the ZIM check. Validators are those of
/// the first part (Kiwix publishes the parts together).
pub async fn fetch_split(
    http: &reqwest::Client,
    first: &str,
    dest: &std::path::Path,
    conditional: &crate::fetch::Validators,
    limits: &crate::fetch::Limits,
    sinks: crate::fetch::Sinks<'_>,
    check: &mut StreamCheck,
) -> Result<crate::fetch::Fetched, crate::fetch::FetchError> {
    use crate::fetch::{FetchError, Fetched};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(Parts {
        parts,
        validators,
        resumes,
        restarts,
    }) = fetch_parts(http, first, dest, conditional, limits, sinks).await?
    else {
        return Ok(Fetched::NotModified);
    };
    let io = |source| FetchError::Io {
        path: dest.to_path_buf(),
        source,
    };
    let mut out = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(dest).await.map_err(io)?,
    );
    let outboard_at = ark_core::tree::outboard_path(dest);
    let mut outboard =
        tokio::io::BufWriter::new(tokio::fs::File::create(&outboard_at).await.map_err(io)?);
    let mut tree = ark_core::tree::TreeHasher::new();
    let mut cvs = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    // The check sees the joined stream, from its first byte.
    *check = StreamCheck::new();
    for part in &parts {
        let mut file = tokio::fs::File::open(part).await.map_err(io)?;
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            StreamCheck::update(check, &buf[..n]).map_err(|e| FetchError::Refused {
                url: first.into(),
                why: e.to_string(),
            })?;
            tree.update(&buf[..n]);
            cvs.clear();
            tree.drain_cvs_into(&mut cvs);
            out.write_all(&buf[..n]).await.map_err(io)?;
            outboard.write_all(&cvs).await.map_err(io)?;
        }
    }
    let size = tree.len();
    let (root, last) = tree.finalize();
    if let Some(last) = last {
        outboard.write_all(&last).await.map_err(io)?;
    }
    out.flush().await.map_err(io)?;
    out.get_ref().sync_all().await.map_err(io)?;
    outboard.flush().await.map_err(io)?;
    outboard.get_ref().sync_all().await.map_err(io)?;
    for part in &parts {
        crate::fetch::remove_staged(part).await;
    }
    Ok(Fetched::Body {
        size,
        root,
        validators,
        resumes,
        restarts,
        reused: 0,
    })
}

/// The parts of a split archive, fetched (each resumable on its own).
struct Parts {
    parts: Vec<std::path::PathBuf>,
    /// The first part's.
    validators: crate::fetch::Validators,
    resumes: u32,
    restarts: u32,
}

/// Fetches `…aa`, `…ab`, … until the origin has no next part; None when
/// the first part is unchanged.
async fn fetch_parts(
    http: &reqwest::Client,
    first: &str,
    dest: &std::path::Path,
    conditional: &crate::fetch::Validators,
    limits: &crate::fetch::Limits,
    sinks: crate::fetch::Sinks<'_>,
) -> Result<Option<Parts>, crate::fetch::FetchError> {
    use crate::fetch::{fetch, FetchError, Fetched, Validators};
    let mut parts = Vec::new();
    let (mut resumes, mut restarts) = (0, 0);
    let mut validators = Validators::default();
    for index in 0.. {
        let Some(url) = ark_core::formats::zim::split_part_url(first, index) else {
            break;
        };
        let part_dest = dest.with_extension(format!("split{index:03}"));
        let none = Validators::default();
        let asked = if index == 0 { conditional } else { &none };
        match fetch(http, &url, &part_dest, asked, limits, sinks).await {
            Ok(Fetched::NotModified) => return Ok(None),
            Ok(Fetched::Body {
                validators: v,
                resumes: r,
                restarts: s,
                ..
            }) => {
                if index == 0 {
                    validators = v;
                }
                resumes += r;
                restarts += s;
                parts.push(part_dest);
            }
            Err(FetchError::Status { status, .. })
                if index > 0 && status == reqwest::StatusCode::NOT_FOUND =>
            {
                break
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(Parts {
        parts,
        validators,
        resumes,
        restarts,
    }))
}
