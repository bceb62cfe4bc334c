//! A Git LFS server beside `git http-backend` ([`crate::git_origin`]), as
//! git-lfs's public API documentation gives it: the batch API (`POST
//! <repo>.git/info/lfs/objects/batch`, basic transfer) answering where each
//! object is, and the objects themselves (`GET …/info/lfs/objects/<oid>`).
//! It serves what real git-lfs stored in the bare repository when a test
//! pushed to it by path (`<repo>.git/lfs/objects/ab/cd/<oid>`), so a test
//! can change or remove an object there to play a lying or forgetful
//! server. Downloads need the header the batch answer gives
//! ([`DOWNLOAD_HEADER`]), as a forge's signed downloads do.

use std::path::Path;

use ark_core::formats::lfs::{
    Action, BatchObject, BatchRequest, BatchResponse, ObjectError, Pointer,
};

/// The header (name, value) every download must carry: the batch answer
/// hands it out; a GET without it is refused with 401.
pub const DOWNLOAD_HEADER: (&str, &str) = ("authorization", "RemoteAuth ark-lfs-test");

/// An answer: status line, content type, body.
pub type Answer = (&'static str, &'static str, Vec<u8>);

/// Answers an LFS request of `method` on `path` (`host` names this server
/// in the hrefs), or `None` for a request that is not LFS.
pub fn answer(
    root: &Path,
    host: &str,
    method: &str,
    path: &str,
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
) -> Option<Answer> {
    let (repo, rest) = path.split_once("/info/lfs/objects")?;
    let store = root.join(repo.trim_start_matches('/'));
    Some(match (method, rest) {
        ("POST", "/batch") => batch(&store, host, repo, body),
        ("GET", oid) => download(&store, oid.trim_start_matches('/'), header),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            b"not an LFS request".to_vec(),
        ),
    })
}

fn batch(store: &Path, host: &str, repo: &str, body: &[u8]) -> Answer {
    let Ok(request) = serde_json::from_slice::<BatchRequest>(body) else {
        return (
            "422 Unprocessable Entity",
            "text/plain",
            b"not a batch request".to_vec(),
        );
    };
    if request.operation != "download" {
        return (
            "403 Forbidden",
            "text/plain",
            b"this server only serves downloads".to_vec(),
        );
    }
    let objects = request
        .objects
        .into_iter()
        .map(|Pointer { oid, size }| {
            let on_disk = object_file(store, &oid).and_then(|f| std::fs::metadata(f).ok());
            match on_disk {
                Some(_) => BatchObject {
                    actions: [(
                        "download".to_string(),
                        Action {
                            href: format!("http://{host}{repo}/info/lfs/objects/{oid}"),
                            header: [(
                                DOWNLOAD_HEADER.0.to_string(),
                                DOWNLOAD_HEADER.1.to_string(),
                            )]
                            .into(),
                            expires_in: Some(3600),
                            ..Default::default()
                        },
                    )]
                    .into(),
                    authenticated: Some(true),
                    oid,
                    size,
                    ..Default::default()
                },
                None => BatchObject {
                    error: Some(ObjectError {
                        code: 404,
                        message: "Object does not exist".into(),
                    }),
                    oid,
                    size,
                    ..Default::default()
                },
            }
        })
        .collect();
    let answer = BatchResponse {
        transfer: Some("basic".into()),
        objects,
    };
    (
        "200 OK",
        ark_core::formats::lfs::MEDIA_TYPE,
        serde_json::to_vec(&answer).unwrap_or_default(),
    )
}

fn download(store: &Path, oid: &str, header: impl Fn(&str) -> Option<String>) -> Answer {
    if header(DOWNLOAD_HEADER.0).as_deref() != Some(DOWNLOAD_HEADER.1) {
        return (
            "401 Unauthorized",
            "text/plain",
            b"the batch answer's header is missing".to_vec(),
        );
    }
    match object_file(store, oid).and_then(|f| std::fs::read(f).ok()) {
        Some(bytes) => ("200 OK", "application/octet-stream", bytes),
        None => ("404 Not Found", "text/plain", b"no such object".to_vec()),
    }
}

/// Where git-lfs keeps `oid` in a repository directory.
fn object_file(store: &Path, oid: &str) -> Option<std::path::PathBuf> {
    let hex = oid.len() == 64 && oid.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| store.join(format!("lfs/objects/{}/{}/{oid}", &oid[..2], &oid[2..4])))
}
