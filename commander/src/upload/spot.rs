//! Commander spot checks (`--spot-check K`): after an upload is verified
//! and before it lands, the commander asks the origin itself for K random
//! 16 KiB chunk groups (HTTP Range, `If-Range` with the agent's validator
//! so a changed origin answers 200 instead of other bytes) and compares them
//! with its own verified copy — K × 16 KiB a run, almost nothing for the
//! logic node, and a lie about any byte is caught with probability growing
//! with K. For git: one `git ls-remote` and every ref of the bundle must be
//! what the origin advertises. An origin that cannot answer (no Range, no
//! strong validator, a redirect, unreachable) makes the check *impossible*:
//! recorded, not a failure.

use std::io::{Read, Seek};
use std::path::Path;

use ark_core::tree::GROUP_LEN;

use crate::archive::NewVersion;

/// What a spot check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spot {
    Passed(String),
    Impossible(String),
    Failed(String),
}

/// How long one spot-check request may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Spot-checks `v` (its verified bytes at `data`) against the origin with
/// `k` chunk groups. Blocking: call from a blocking thread of the runtime.
pub fn spot_check(v: &NewVersion, data: &Path, k: u32) -> Spot {
    let handle = match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => return Spot::Impossible("no runtime to fetch from".into()),
    };
    if v.kind.parse() == Ok(ark_core::Kind::Git) {
        return refs_check(v, data);
    }
    handle.block_on(ranges_check(v, data, k))
}

/// `k` distinct random group indices out of `groups` (all when fewer).
fn pick(groups: u64, k: u32) -> Vec<u64> {
    use ring::rand::SecureRandom;
    let rng = ring::rand::SystemRandom::new();
    let mut picked = std::collections::BTreeSet::new();
    let wanted = groups.min(u64::from(k));
    while (picked.len() as u64) < wanted {
        let mut bytes = [0u8; 8];
        let _ = rng.fill(&mut bytes);
        picked.insert(u64::from_le_bytes(bytes) % groups);
    }
    picked.into_iter().collect()
}

async fn ranges_check(v: &NewVersion, data: &Path, k: u32) -> Spot {
    let validator = if !v.etag.is_empty() && !v.etag.starts_with("W/") {
        v.etag.clone()
    } else if !v.last_modified.is_empty() {
        v.last_modified.clone()
    } else {
        return Spot::Impossible(
            "spot check impossible: the origin gave no strong validator for If-Range".into(),
        );
    };
    ark_link::tls::install_crypto_provider();
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ark-commander/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Spot::Impossible(format!("spot check impossible: {e}")),
    };
    let Ok(mut file) = std::fs::File::open(data) else {
        return Spot::Impossible("spot check impossible: the verified copy is gone".into());
    };
    let groups = v.size.div_ceil(GROUP_LEN as u64).max(1);
    let picked = pick(groups, k);
    let started = std::time::Instant::now();
    let mut fetched = 0u64;
    for &group in &picked {
        let start = group * GROUP_LEN as u64;
        let end = (start + GROUP_LEN as u64).min(v.size).saturating_sub(1);
        let answer = client
            .get(&v.url)
            .header(reqwest::header::RANGE, format!("bytes={start}-{end}"))
            .header(reqwest::header::IF_RANGE, &validator)
            .send()
            .await;
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                return Spot::Impossible(format!("spot check impossible: GET {}: {e}", v.url))
            }
        };
        if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
            return Spot::Impossible(format!(
                "spot check impossible: the origin answered {} to a range request with If-Range \
                 (it does not serve ranges, or the version changed since the agent fetched it)",
                response.status()
            ));
        }
        let expected_range = format!("bytes {start}-{end}/{}", v.size);
        let range = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if range != expected_range {
            return Spot::Failed(format!(
                "spot check failed: the origin sent {range:?} for group {group}, the upload claims {expected_range:?}"
            ));
        }
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Spot::Impossible(format!(
                    "spot check impossible: reading group {group}: {e}"
                ))
            }
        };
        let mut ours = vec![0u8; (end + 1 - start) as usize];
        let read = file
            .seek(std::io::SeekFrom::Start(start))
            .and_then(|_| file.read_exact(&mut ours));
        if read.is_err() {
            return Spot::Impossible("spot check impossible: reading the verified copy".into());
        }
        if bytes.as_ref() != ours.as_slice() {
            return Spot::Failed(format!(
                "spot check failed: bytes {start}-{end} (group {group}) at the origin differ from the upload's"
            ));
        }
        fetched += bytes.len() as u64;
    }
    Spot::Passed(format!(
        "spot check passed: {} random groups ({fetched} bytes, {} ms) fetched from the origin match",
        picked.len(),
        started.elapsed().as_millis()
    ))
}

/// Git: the origin's advertised refs against the bundle's.
fn refs_check(v: &NewVersion, data: &Path) -> Spot {
    let refs = match crate::git_check::bundle_refs(data) {
        Ok(refs) => refs,
        Err(e) => return Spot::Failed(format!("spot check failed: the bundle's refs: {e}")),
    };
    let output = std::process::Command::new("git")
        .args(["ls-remote", "--", &v.url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            return Spot::Impossible(format!(
                "spot check impossible: git ls-remote {}: {}",
                v.url,
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
        Err(e) => return Spot::Impossible(format!("spot check impossible: running git: {e}")),
    };
    let advertised: std::collections::BTreeMap<String, String> =
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(id, name)| (name.to_string(), id.to_string()))
            .collect();
    for (name, id) in &refs {
        if advertised.get(name) != Some(id) {
            return Spot::Failed(format!(
                "spot check failed: the bundle has {name} at {id}, the origin advertises {}",
                advertised
                    .get(name)
                    .map(String::as_str)
                    .unwrap_or("no such ref")
            ));
        }
    }
    Spot::Passed(format!(
        "spot check passed: the bundle's {} refs are what the origin advertises",
        refs.len()
    ))
}
