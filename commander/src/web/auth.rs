//! Who may use the dashboard's HTTP server: one pure function,
//! [`authorize`], from the peer address and the request's method and
//! headers to a verdict, so the whole policy is unit-tested here without
//! staging a non-loopback peer. The admin token itself is made and read by
//! [`super::load_or_create_token`].

use std::net::IpAddr;

use axum::http::{header, HeaderMap, Method};

/// The header the dashboard's own page sends with every POST. A cross-site
/// form cannot set a header, and a cross-site `fetch` that sets one needs a
/// CORS preflight this server never answers: a page on another site cannot
/// pause the swarm through a browser on the commander's host.
pub const CSRF_HEADER: &str = "x-ark-csrf";

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// No (or a wrong) admin token where one is needed: 401.
    Unauthorized,
    /// Credentials are not the problem, the request is: 403, with why.
    Forbidden(&'static str),
}

/// The policy (see the module doc of [`crate::web`]):
/// - the right `Authorization: Bearer <token>` allows anything from anywhere;
/// - a wrong token is refused even from loopback (a mistake worth seeing);
/// - without a token, a loopback peer may read (GET/HEAD) when its `Host` is
///   a loopback name too (a DNS-rebinding page reaches us under its own
///   name), and may POST only with the [`CSRF_HEADER`] set to `1`;
/// - any other peer without the token gets 401.
pub fn authorize(peer: IpAddr, method: &Method, headers: &HeaderMap, token: &str) -> Access {
    match bearer(headers) {
        Some(presented) if tokens_equal(presented.as_bytes(), token.as_bytes()) => {
            return Access::Allowed
        }
        Some(_) => return Access::Unauthorized,
        None => {}
    }
    if !peer.to_canonical().is_loopback() {
        return Access::Unauthorized;
    }
    if !host_is_loopback(headers) {
        return Access::Forbidden(
            "the Host header is not a loopback name: without the admin token the dashboard \
             answers only to localhost, 127.0.0.1 or [::1]",
        );
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Access::Allowed;
    }
    let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if csrf == Some("1") {
        Access::Allowed
    } else {
        Access::Forbidden(
            "a change without the admin token needs the header `X-Ark-Csrf: 1` (the dashboard \
             sends it; a cross-site form cannot)",
        )
    }
}

/// The token of an `Authorization: Bearer …` header, if there is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Compares in time independent of where the first difference is (the
/// length is not secret: every token is 64 hex digits).
fn tokens_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True when the `Host` header names this machine (or is absent: only
/// clients that are not browsers omit it).
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn loopback_reads_without_credentials() {
        for peer in ["127.0.0.1", "127.0.0.53", "::1", "::ffff:127.0.0.1"] {
            for host in [
                "127.0.0.1:8447",
                "localhost:8447",
                "[::1]:8447",
                "localhost",
            ] {
                let h = headers(&[("host", host)]);
                assert_eq!(
                    authorize(ip(peer), &Method::GET, &h, TOKEN),
                    Access::Allowed,
                    "{peer} {host}"
                );
            }
        }
        assert_eq!(
            authorize(ip("127.0.0.1"), &Method::GET, &HeaderMap::new(), TOKEN),
            Access::Allowed
        );
    }

    #[test]
    fn other_peers_need_the_token_for_everything() {
        for peer in [
            "192.168.1.20",
            "10.0.0.1",
            "::ffff:192.168.1.20",
            "fe80::1",
            "0.0.0.0",
        ] {
            for method in [Method::GET, Method::POST] {
                let none = headers(&[("host", "127.0.0.1:8447"), (CSRF_HEADER, "1")]);
                assert_eq!(
                    authorize(ip(peer), &method, &none, TOKEN),
                    Access::Unauthorized,
                    "{peer} {method} without a token"
                );
                let right = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
                assert_eq!(
                    authorize(ip(peer), &method, &right, TOKEN),
                    Access::Allowed,
                    "{peer} {method} with the token"
                );
                let lower = headers(&[("authorization", &format!("bearer  {TOKEN} "))]);
                assert_eq!(authorize(ip(peer), &method, &lower, TOKEN), Access::Allowed);
            }
        }
    }

    #[test]
    fn a_wrong_or_malformed_token_is_refused_everywhere() {
        let mut wrong = TOKEN.to_string();
        wrong.replace_range(63.., "0");
        for value in [
            format!("Bearer {wrong}"),
            format!("Bearer {}", &TOKEN[..63]),
            format!("Bearer {TOKEN}0"),
            "Bearer ".to_string(),
        ] {
            let h = headers(&[("authorization", &value), ("host", "localhost")]);
            for peer in ["127.0.0.1", "192.168.1.20"] {
                assert_eq!(
                    authorize(ip(peer), &Method::GET, &h, TOKEN),
                    Access::Unauthorized,
                    "{peer} {value:?}"
                );
            }
        }
        // Not a bearer token at all: as if absent.
        let basic = headers(&[("authorization", "Basic YWRtaW46YWRtaW4=")]);
        assert_eq!(
            authorize(ip("127.0.0.1"), &Method::GET, &basic, TOKEN),
            Access::Allowed
        );
        assert_eq!(
            authorize(ip("192.168.1.20"), &Method::GET, &basic, TOKEN),
            Access::Unauthorized
        );
    }

    #[test]
    fn loopback_changes_need_the_csrf_header() {
        let peer = ip("127.0.0.1");
        let bare = headers(&[("host", "127.0.0.1:8447")]);
        assert!(matches!(
            authorize(peer, &Method::POST, &bare, TOKEN),
            Access::Forbidden(_)
        ));
        let wrong = headers(&[("host", "127.0.0.1:8447"), (CSRF_HEADER, "yes")]);
        assert!(matches!(
            authorize(peer, &Method::POST, &wrong, TOKEN),
            Access::Forbidden(_)
        ));
        let csrf = headers(&[("host", "127.0.0.1:8447"), (CSRF_HEADER, "1")]);
        assert_eq!(
            authorize(peer, &Method::POST, &csrf, TOKEN),
            Access::Allowed
        );
        let token = headers(&[("authorization", &format!("Bearer {TOKEN}"))]);
        assert_eq!(
            authorize(peer, &Method::POST, &token, TOKEN),
            Access::Allowed
        );
    }

    #[test]
    fn a_rebound_host_name_is_refused_without_the_token() {
        let peer = ip("127.0.0.1");
        for host in [
            "evil.example:8447",
            "evil.example",
            "192.168.1.20:8447",
            "[fe80::1]:8447",
        ] {
            let h = headers(&[("host", host), (CSRF_HEADER, "1")]);
            for method in [Method::GET, Method::POST] {
                assert!(
                    matches!(authorize(peer, &method, &h, TOKEN), Access::Forbidden(_)),
                    "{host} {method}"
                );
            }
            let with_token = headers(&[
                ("host", host),
                ("authorization", &format!("Bearer {TOKEN}")),
            ]);
            assert_eq!(
                authorize(peer, &Method::GET, &with_token, TOKEN),
                Access::Allowed
            );
        }
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_equal(b"abc", b"abc"));
        assert!(!tokens_equal(b"abc", b"abd"));
        assert!(!tokens_equal(b"abc", b"abcd"));
        assert!(tokens_equal(b"", b""));
    }
}
