//! Git LFS, as its public specification gives it: the pointer file a
//! repository holds in place of a large file (`docs/spec.md` of git-lfs),
//! the endpoint a repository's objects are served from, and the batch API's
//! download request and answer (`docs/api/batch.md`).
//!
//! The commander reads pointers out of a mirror it verified and queues one
//! `lfs` run per object it lacks; the agent asks the batch API where an
//! object is and fetches it; the commander holds the bytes to the pointer's
//! SHA-256 oid before they land. Nothing here trusts the answer of a server.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Largest pointer file: the specification keeps pointers under 1024
/// bytes, so larger blobs are never read as pointers.
pub const POINTER_MAX: u64 = 1024;

/// The media type of batch requests and answers.
pub const MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

/// The version lines a pointer may start with (the second is the
/// pre-release name git-lfs still reads).
const VERSIONS: &[&str] = &[
    "version https://git-lfs.github.com/spec/v1",
    "version https://hawser.github.com/spec/v1",
];

/// One LFS object a pointer names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pointer {
    /// SHA-256 of the object's bytes, 64 lowercase hex digits.
    pub oid: String,
    pub size: u64,
}

impl Pointer {
    /// Parses a blob as a pointer file; `None` for anything else (a plain
    /// file, a malformed pointer, an oid that is not a SHA-256).
    pub fn parse(blob: &[u8]) -> Option<Self> {
        if blob.len() as u64 >= POINTER_MAX {
            return None;
        }
        let text = std::str::from_utf8(blob).ok()?;
        let mut lines = text.lines();
        if !VERSIONS.contains(&lines.next()?) {
            return None;
        }
        let (mut oid, mut size) = (None, None);
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            match key {
                "oid" => oid = Some(value.strip_prefix("sha256:")?),
                "size" => size = Some(value.parse::<u64>().ok()?),
                _ => {}
            }
        }
        let (oid, size) = (oid?, size?);
        is_oid(oid).then(|| Self {
            oid: oid.to_string(),
            size,
        })
    }

    /// Where git-lfs keeps this object in a repository's directory (and so
    /// where Ark lands it beside a bare mirror): `lfs/objects/ab/cd/<oid>`.
    pub fn store_path(&self) -> String {
        format!(
            "lfs/objects/{}/{}/{}",
            &self.oid[0..2],
            &self.oid[2..4],
            self.oid
        )
    }
}

/// The LFS endpoint of a repository at `git_url`, as git-lfs derives it
/// when no `lfs.url` is configured: `<url>.git/info/lfs` (a `git://` URL's
/// objects are served over https).
pub fn endpoint(git_url: &str) -> String {
    let url = git_url.trim_end_matches('/');
    let url = match url.strip_prefix("git://") {
        Some(rest) => format!("https://{rest}"),
        None => url.to_string(),
    };
    if url.ends_with(".git") {
        format!("{url}/info/lfs")
    } else {
        format!("{url}.git/info/lfs")
    }
}

/// The URL an `lfs` run names its object by:
/// `<endpoint>/objects/<oid>?size=<n>` — the object's address in the LFS
/// API with the size the batch request must state. The agent resolves it
/// through the batch API rather than fetching it directly.
pub fn object_url(git_url: &str, pointer: &Pointer) -> String {
    format!(
        "{}/objects/{}?size={}",
        endpoint(git_url),
        pointer.oid,
        pointer.size
    )
}

/// The endpoint and the object of an `lfs` run's URL ([`object_url`]).
pub fn parse_object_url(url: &str) -> Option<(&str, Pointer)> {
    let (rest, size) = url.rsplit_once("?size=")?;
    let (endpoint, oid) = rest.rsplit_once("/objects/")?;
    let pointer = Pointer {
        oid: oid.to_string(),
        size: size.parse().ok()?,
    };
    is_oid(oid).then_some((endpoint, pointer))
}

/// Whether `oid` is a SHA-256 as LFS writes it: 64 lowercase hex digits.
fn is_oid(oid: &str) -> bool {
    oid.len() == 64
        && oid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A batch request (`POST <endpoint>/objects/batch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRequest {
    /// "download" or "upload".
    pub operation: String,
    #[serde(default)]
    pub transfers: Vec<String>,
    pub objects: Vec<Pointer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_algo: Option<String>,
}

impl BatchRequest {
    /// The download of `objects` over the basic transfer.
    pub fn download(objects: Vec<Pointer>) -> Self {
        Self {
            operation: "download".into(),
            transfers: vec!["basic".into()],
            objects,
            hash_algo: Some("sha256".into()),
        }
    }
}

/// A batch answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
    pub objects: Vec<BatchObject>,
}

/// One object of a batch answer: where to fetch it, or why not.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchObject {
    pub oid: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ObjectError>,
}

/// An action of a batch answer: a URL and the headers to send with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub href: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A per-object error of a batch answer (404: the server lacks it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectError {
    pub code: u16,
    #[serde(default)]
    pub message: String,
}

impl BatchResponse {
    /// Where to download `pointer` from, or why the server will not say.
    pub fn download_of(&self, pointer: &Pointer) -> Result<&Action, String> {
        let object = self
            .objects
            .iter()
            .find(|o| o.oid == pointer.oid)
            .ok_or_else(|| format!("the LFS server's answer does not mention {}", pointer.oid))?;
        if let Some(e) = &object.error {
            return Err(format!(
                "the LFS server refuses {} ({}: {})",
                pointer.oid, e.code, e.message
            ));
        }
        if object.size != pointer.size {
            return Err(format!(
                "the LFS server says {} is {} bytes, the pointer says {}",
                pointer.oid, object.size, pointer.size
            ));
        }
        object.actions.get("download").ok_or_else(|| {
            format!(
                "the LFS server gives no download action for {}",
                pointer.oid
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

    #[test]
    fn pointers_parse_as_the_specification_writes_them_and_nothing_else_does() {
        let text =
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n");
        let p = Pointer::parse(text.as_bytes()).expect("a pointer");
        assert_eq!((p.oid.as_str(), p.size), (OID, 12345));
        assert_eq!(p.store_path(), format!("lfs/objects/4d/7a/{OID}"));
        // Extensions are kept in the pointer and passed over here.
        let ext = format!(
            "version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{OID}\noid sha256:{OID}\nsize 1\n"
        );
        assert_eq!(Pointer::parse(ext.as_bytes()).map(|p| p.size), Some(1));
        for bad in [
            "hello world\n".to_string(),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\n"),
            format!("version https://git-lfs.github.com/spec/v1\noid md5:{OID}\nsize 1\n"),
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 1\n",
                OID.to_uppercase()
            ),
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 1\n",
                &OID[1..]
            ),
            format!("version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize -1\n"),
            format!("version https://git-lfs.github.com/spec/v2\noid sha256:{OID}\nsize 1\n"),
            format!(
                "version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 1\n{}",
                "x".repeat(1024)
            ),
        ] {
            assert_eq!(Pointer::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn the_endpoint_and_the_object_url_follow_git_lfs() {
        assert_eq!(endpoint("https://h/o/r.git"), "https://h/o/r.git/info/lfs");
        assert_eq!(endpoint("https://h/o/r"), "https://h/o/r.git/info/lfs");
        assert_eq!(endpoint("git://h/o/r.git"), "https://h/o/r.git/info/lfs");
        let pointer = Pointer {
            oid: OID.into(),
            size: 7,
        };
        let url = object_url("http://h:1/r.git", &pointer);
        assert_eq!(
            url,
            format!("http://h:1/r.git/info/lfs/objects/{OID}?size=7")
        );
        assert_eq!(
            parse_object_url(&url),
            Some(("http://h:1/r.git/info/lfs", pointer))
        );
        assert_eq!(
            parse_object_url("http://h/r.git/info/lfs/objects/batch?size=1"),
            None
        );
        assert_eq!(parse_object_url(&format!("http://h/objects/{OID}")), None);
    }

    #[test]
    fn a_batch_answer_gives_the_download_or_a_reason() -> Result<(), Box<dyn std::error::Error>> {
        let pointer = Pointer {
            oid: OID.into(),
            size: 3,
        };
        let answer: BatchResponse = serde_json::from_str(&format!(
            r#"{{"transfer":"basic","objects":[{{"oid":"{OID}","size":3,"authenticated":true,
               "actions":{{"download":{{"href":"https://cdn/x","header":{{"Authorization":"Basic a"}},"expires_in":3600}}}}}}]}}"#
        ))?;
        let action = answer.download_of(&pointer)?;
        assert_eq!(action.href, "https://cdn/x");
        assert_eq!(action.header["Authorization"], "Basic a");
        let missing: BatchResponse = serde_json::from_str(&format!(
            r#"{{"objects":[{{"oid":"{OID}","size":3,"error":{{"code":404,"message":"Object does not exist"}}}}]}}"#
        ))?;
        let why = missing.download_of(&pointer).err().unwrap_or_default();
        assert!(
            why.contains("404") && why.contains("Object does not exist"),
            "{why}"
        );
        let lying: BatchResponse = serde_json::from_str(&format!(
            r#"{{"objects":[{{"oid":"{OID}","size":4,"actions":{{"download":{{"href":"x"}}}}}}]}}"#
        ))?;
        let why = lying.download_of(&pointer).err().unwrap_or_default();
        assert!(why.contains("4 bytes"), "{why}");
        let request = serde_json::to_value(BatchRequest::download(vec![pointer]))?;
        assert_eq!(request["operation"], "download");
        assert_eq!(request["objects"][0]["size"], 3);
        Ok(())
    }
}
