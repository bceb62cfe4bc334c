//! The `lfs` kind on the agent: one Git LFS object of a mirrored
//! repository. The job's URL names the object in the repository's LFS API
//! (`<endpoint>/objects/<oid>?size=<n>`, see `ark_core::formats::lfs`); the
//! agent asks the batch API where to download it (`POST
//! <endpoint>/objects/batch`, the basic transfer), fetches that like any
//! file, and checks the bytes against the oid before uploading. The
//! commander checks them again: it trusts neither the agent nor the server.

use std::time::Duration;

use ark_core::formats::lfs::{parse_object_url, BatchRequest, BatchResponse, Pointer, MEDIA_TYPE};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};

use super::Plan;
use crate::destination::Guard;
use crate::digests::Published;
use crate::lease::failure;
use ark_proto::JobFailure;

/// Largest batch answer read: one object's answer is a few hundred bytes.
const ANSWER_LIMIT: usize = 1024 * 1024;
const BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// An LFS object is a plain file once found: no sidecars (its digest is
/// its name).
pub struct Lfs;

impl Plan for Lfs {
    fn digests(&self) -> bool {
        false
    }
}

/// Where to fetch the object of `url` and with which client (the agent's,
/// or one sending the headers the server asks for), and the digest the
/// bytes must have.
pub struct Located {
    pub href: String,
    pub http: Option<reqwest::Client>,
    pub expected: Published,
}

/// Asks the LFS batch API where the object of the job's `url` is.
pub async fn locate(
    http: &reqwest::Client,
    guard: &Guard,
    url: &str,
) -> Result<Located, JobFailure> {
    let (endpoint, pointer) = parse_object_url(url).ok_or_else(|| {
        failure(
            format!(
                "{url} is not a Git LFS object URL (…/objects/<sha256>?size=<n>): a commander bug"
            ),
            false,
        )
    })?;
    let batch = format!("{endpoint}/objects/batch");
    let body = serde_json::to_vec(&BatchRequest::download(vec![pointer.clone()]))
        .map_err(|e| failure(format!("encoding the LFS batch request: {e}"), false))?;
    let answer = tokio::time::timeout(BATCH_TIMEOUT, ask(http, guard, &batch, body))
        .await
        .map_err(|_| {
            failure(
                format!("the LFS batch API at {batch} did not answer within {BATCH_TIMEOUT:?}"),
                true,
            )
        })??;
    let action = answer
        .download_of(&pointer)
        .map_err(|why| failure(format!("POST {batch}: {why}"), true))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &action.header {
        let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) else {
            return Err(failure(
                format!(
                    "POST {batch}: the download of {} names an unusable header {name:?}",
                    pointer.oid
                ),
                true,
            ));
        };
        headers.insert(name, value);
    }
    let http =
        match headers.is_empty() {
            true => None,
            false => Some(crate::fetch::http_client_with(headers).map_err(|e| {
                failure(format!("building the HTTP client for {batch}: {e}"), false)
            })?),
        };
    Ok(Located {
        href: action.href.clone(),
        http,
        expected: expected(&pointer, url),
    })
}

/// The digest the object's bytes must have: its oid.
fn expected(pointer: &Pointer, url: &str) -> Published {
    Published {
        algorithm: "sha256",
        hex: pointer.oid.clone(),
        source: format!("the Git LFS pointer ({url})"),
        size: Some(pointer.size),
    }
}

/// POSTs a batch request; the parsed answer.
async fn ask(
    http: &reqwest::Client,
    guard: &Guard,
    batch: &str,
    body: Vec<u8>,
) -> Result<BatchResponse, JobFailure> {
    let failed = |why: String| failure(format!("POST {batch}: {why}"), true);
    let mut response = crate::fetch::send_as(http, reqwest::Method::POST, batch, guard, |r| {
        r.header(ACCEPT, MEDIA_TYPE)
            .header(CONTENT_TYPE, MEDIA_TYPE)
            .body(body.clone())
    })
    .await
    .map_err(|e| failure(e.to_string(), e.retryable()))?;
    if !response.status().is_success() {
        return Err(failed(format!(
            "HTTP {}: the server has no LFS batch API for this repository, or refuses it",
            response.status()
        )));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > ANSWER_LIMIT {
            return Err(failed(format!("the answer is over {ANSWER_LIMIT} bytes")));
        }
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| failed(format!("the answer is not an LFS batch answer: {e}")))
}
