//! Fuzzing entry points: one function per fuzz target body, run both by
//! `fuzz/` (cargo-fuzz, nightly) and by the stable replay tests over
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, so a target and
//! its replay never differ. Not an API: hidden from the docs.

use std::path::Path;

/// A fixed agent key and its self-signed certificate, for fuzzing only: the
/// manifest target signs its input with it so the parse behind the
/// signature check is reached.
const AGENT_KEY_PEM: &str = include_str!("agent_key.pem");
pub const AGENT_CERT_DER: &[u8] = include_bytes!("agent_cert.der");

/// The ZIM streaming check (header, layout, MD5 trailer), fed in pieces
/// whose sizes the input's first byte chooses.
pub fn zim_stream(bytes: &[u8]) {
    use crate::formats::zim::{Header, StreamCheck};
    let step = usize::from(bytes.first().copied().unwrap_or(0)).max(1) * 7;
    let mut check = StreamCheck::new();
    let fed = bytes.chunks(step).try_for_each(|piece| check.update(piece));
    if fed.is_ok() {
        let _ = check.finish(bytes.len() as u64);
    }
    if let Ok(header) = Header::parse(bytes) {
        let _ = header.check_layout(bytes.len() as u64);
        let _ = header.has_title_index();
    }
}

/// The signed manifest: the input verified as a manifest signed by the
/// fixed key (reaching the parse), and as signature and certificate
/// (reaching the certificate parser).
pub fn manifest(bytes: &[u8]) {
    use crate::manifest::Manifest;
    if let Some((signature, bytes)) = sign(bytes) {
        if let Ok(m) = Manifest::verify(&bytes, &signature, AGENT_CERT_DER) {
            let _ = m.to_bytes();
        }
    }
    let (cert, rest) = bytes.split_at(bytes.len() / 2);
    let _ = Manifest::verify(rest, rest, cert);
}

fn sign(bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    use rustls_pki_types::pem::PemObject;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(AGENT_KEY_PEM.as_bytes()).ok()?;
    let rng = ring::rand::SystemRandom::new();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.secret_der(), &rng).ok()?;
    let signature = pair.sign(&rng, bytes).ok()?;
    Some((signature.as_ref().to_vec(), bytes.to_vec()))
}

/// Runs `body` on every input of `target` kept in the repository (its
/// corpus and its regressions) under `fuzz` (the `fuzz/` folder); returns
/// how many inputs ran. The replay tests call it: seconds, on stable.
pub fn replay(fuzz: &Path, target: &str, body: fn(&[u8])) -> std::io::Result<usize> {
    let mut ran = 0;
    for folder in ["corpus", "regressions"] {
        let dir = fuzz.join(folder).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_file() {
                body(&std::fs::read(&path)?);
                ran += 1;
            }
        }
    }
    Ok(ran)
}
