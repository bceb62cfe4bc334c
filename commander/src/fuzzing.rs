//! Fuzzing entry points of the commander's deep checks and of the messages
//! its services accept: one function per target in `fuzz/`, run by the fuzz
//! targets and by the stable replay test alike. Not an API: hidden from the
//! docs. The checks that read a file get the input written to a scratch
//! file of this process (they take paths, as landing does).

use std::path::PathBuf;

/// A scratch path of this process (fuzzers and tests run one input at a
/// time per process).
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ark-fuzz-{}-{name}", std::process::id()))
}

fn written(name: &str, bytes: &[u8]) -> Option<PathBuf> {
    let path = scratch(name);
    std::fs::write(&path, bytes).ok()?;
    Some(path)
}

/// The ZIM header and streaming check (as the agent runs it), then the deep
/// check on a file of these bytes.
pub fn zim(bytes: &[u8]) {
    ark_core::fuzzing::zim_stream(bytes);
    let Some(path) = written("zim", bytes) else {
        return;
    };
    if let Ok(report) = crate::zim_check::check(&path) {
        let _ = (report.ok(), report.reason());
    }
    let _ = std::fs::remove_file(&path);
}

/// The feed's streaming sniff, the commander's check, and the derivation of
/// each entry's names and content hash.
pub fn feed(bytes: &[u8]) {
    use ark_core::BodyCheck;
    let mut sniff = ark_core::formats::feed::FeedSniff::default();
    let _ = bytes.chunks(512).try_for_each(|piece| sniff.update(piece));
    let Ok(parsed) = crate::feed::parse(bytes, "https://feeds.example.org/a/feed.xml") else {
        return;
    };
    for entry in &parsed.entries {
        let _ = crate::feed::content_hash(entry);
        let _ = crate::feed::entry_file_name(entry);
        for enclosure in &entry.enclosures {
            let _ = crate::feed::media_file_name(&enclosure.url);
        }
    }
}

/// An OPML feed list as `target import opml` reads it, and each feed's
/// target name; a list it accepts must write back to one it reads as the
/// same feeds.
pub fn opml(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(feeds) = crate::opml::parse(text) else {
        return;
    };
    for feed in &feeds {
        let _ = crate::opml::name_for(&feed.title, &feed.url);
    }
    // Ark writes a list sorted by category and title: the same feeds,
    // perhaps in another order.
    let written = crate::opml::write(&feeds, "Sat, 05 Dec 2026 00:00:00 GMT");
    let mut again = crate::opml::parse(&written).expect("Ark cannot read the OPML it wrote");
    let mut feeds = feeds;
    let key = |f: &crate::opml::Feed| (f.category.clone(), f.title.clone(), f.url.clone());
    feeds.sort_by_key(key);
    again.sort_by_key(key);
    assert_eq!(again, feeds, "the OPML Ark wrote reads back differently");
}

/// The git bundle's header parser and the full check against no mirror
/// (every object indexed, hashed and connected).
pub fn git_bundle(bytes: &[u8]) {
    let_gix_pack_panics_unwind();
    let Some(bundle) = written("bundle", bytes) else {
        return;
    };
    let work = scratch("git");
    let _ = std::fs::remove_dir_all(&work);
    if std::fs::create_dir_all(&work).is_ok() {
        let _ = crate::git_check::bundle_refs(&bundle);
        let _ = crate::git_check::check_bundle(&bundle, &work.join("mirror"), &work);
    }
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_file(&bundle);
}

/// A panic inside gix-pack's decoder (its known shift overflow on an entry
/// header of more than nine size bytes, gix-pack 0.64; gix-features' varint
/// decoder's "would overflow") is caught by
/// `check_bundle` and refuses the bundle as corrupt: production behaviour
/// the regression test `regression_fuzz_git_bundle_pack_entry_header_shift_overflow`
/// holds. libFuzzer's panic hook would abort on it before it unwinds to
/// that catch, and the target could go no further; so panics located in
/// gix-pack unwind silently here, and every other panic still reaches the
/// hook (a crash).
fn let_gix_pack_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_gix_pack = info.location().is_some_and(|l| {
                let file = l.file();
                file.contains("/gix-pack-") || file.contains("/gix-features-")
            });
            if !in_gix_pack {
                previous(info);
            }
        }));
    });
}

/// The messages the commander's services accept: the first byte picks the
/// request type, the rest is decoded as it, then the commander's own pure
/// checks of its fields run (names, kinds, URLs, windows, the manifest).
pub fn proto(bytes: &[u8]) {
    use ark_proto as p;
    use prost::Message;
    let Some((&which, body)) = bytes.split_first() else {
        return;
    };
    match which % 9 {
        0 => {
            if let Ok(req) = p::AddTargetRequest::decode(body) {
                let _ = req.kind.parse::<ark_core::Kind>();
                let _ = req.url.parse::<tonic::transport::Uri>();
                let name = crate::service::name_from_url(&req.url);
                let _ = crate::service::validate_name(&name, "target");
                let _ = crate::service::validate_name(&req.name, "target");
                let _ = ark_core::path::is_reserved(&req.name);
                let _ = crate::window::Window::parse(&req.window);
            }
        }
        1 => {
            if let Ok(req) = p::HaveRequest::decode(body) {
                let cert = ark_core::fuzzing::AGENT_CERT_DER;
                let _ = crate::upload::verify_manifest(&req.manifest, &req.signature, cert);
            }
        }
        2 => drop(p::UploadChunk::decode(body)),
        3 => drop(p::RegisterRequest::decode(body)),
        4 => drop(p::HeartbeatRequest::decode(body)),
        5 => drop(p::ProgressRequest::decode(body)),
        6 => drop(p::CompleteRequest::decode(body)),
        7 => drop(p::EnrollRequest::decode(body)),
        _ => {
            if let Ok(req) = p::SetAgentRequest::decode(body) {
                let _ = crate::service::validate_name(&req.name, "agent");
            }
        }
    }
}
