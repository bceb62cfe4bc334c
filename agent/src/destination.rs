//! Where a fetch may go. An agent sits inside the household's network: a
//! hostile page or feed must not make it read the router, the NAS, a printer
//! or the commander's own dashboard and hand that to the archive. So by
//! default every destination — the target's URL, every redirect, every
//! enclosure, every sidecar — is resolved first and refused when an address
//! it resolves to is loopback, link-local, private, unique-local, shared
//! (CGNAT), multicast or otherwise not a public unicast address, or when it
//! is one of the commander's own endpoints.
//!
//! The operator's exceptions arrive with each job (the commander decides):
//! - the target's own origin (scheme host and port of the URL the operator
//!   gave) is allowed whatever it resolves to: pointing Ark at a NAS is a
//!   choice, being redirected there is not;
//! - networks from `commander.toml` (`fetch.allow = ["192.168.1.0/24"]`).
//!
//! The check runs again at connect time: the HTTP client's resolver (see
//! [`GuardedResolver`]) hands out only public addresses or the addresses a
//! check approved for that host, so a name that re-binds to a private
//! address between the check and the connect still cannot be reached.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock, Mutex};

use ipnet::IpNet;

/// Private addresses a check approved, per host name: what the connect-time
/// resolver may hand out for that name besides public addresses. Process
/// wide, because the HTTP client (and its resolver) is shared by every job;
/// each job still checks every destination itself before it connects.
static APPROVED: LazyLock<Mutex<HashMap<String, Vec<IpAddr>>>> = LazyLock::new(Default::default);

/// `git://`'s port when the URL names none.
const GIT_DAEMON_PORT: u16 = 9418;

/// Where one job may fetch from.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    inner: Arc<GuardRules>,
}

#[derive(Debug, Default)]
struct GuardRules {
    /// Networks the operator allows (`fetch.allow`).
    allow: Vec<IpNet>,
    /// The target's own origin, `host:port` (lower-case host): allowed
    /// whatever it resolves to.
    own_origin: Option<String>,
    /// The commander's endpoints as `host:port`; a host of `*` stands for
    /// the commander's machine (a listener on every interface).
    commander: Vec<String>,
    /// The host the agent reaches the commander at, for `*` above.
    commander_host: Option<String>,
}

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl Guard {
    /// The rules of one job. `allow` holds CIDR networks (or single
    /// addresses); an unreadable one is skipped with a warning (the
    /// commander validated them when it loaded its config).
    pub fn new(
        allow: &[String],
        own_origin: Option<String>,
        commander: Vec<String>,
        commander_host: Option<String>,
    ) -> Self {
        let allow = allow
            .iter()
            .filter_map(|net| match parse_net(net) {
                Some(net) => Some(net),
                None => {
                    tracing::warn!(%net, "ignoring an unreadable fetch.allow network");
                    None
                }
            })
            .collect();
        Self {
            inner: Arc::new(GuardRules {
                allow,
                own_origin: own_origin.map(|o| o.to_ascii_lowercase()),
                commander,
                commander_host,
            }),
        }
    }

    /// A guard that allows these networks and nothing else beyond public
    /// addresses (tests on loopback: `Guard::allowing(&["127.0.0.0/8"])`).
    pub fn allowing(networks: &[&str]) -> Self {
        let nets: Vec<String> = networks.iter().map(|s| s.to_string()).collect();
        Self::new(&nets, None, Vec::new(), None)
    }

    /// Checks `url` before a request to it: its scheme, then every address
    /// its host resolves to. Ok carries nothing; the approved private
    /// addresses are remembered for the connect-time resolver.
    pub async fn check(&self, url: &reqwest::Url) -> Result<(), Refusal> {
        let host = url
            .host_str()
            .ok_or_else(|| Refusal(format!("{url} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url
            .port()
            .or_else(|| (url.scheme() == "git").then_some(GIT_DAEMON_PORT))
            .or_else(|| url.port_or_known_default())
            .ok_or_else(|| Refusal(format!("{url}: no port for scheme {}", url.scheme())))?;
        let addrs = resolve(&host, port).await?;
        self.check_addrs(url.as_str(), &host, port, &addrs).await
    }

    /// The rules applied to what `host:port` resolved to.
    async fn check_addrs(
        &self,
        url: &str,
        host: &str,
        port: u16,
        addrs: &[IpAddr],
    ) -> Result<(), Refusal> {
        let rules = &self.inner;
        let own = rules.own_origin.as_deref().is_some_and(|own| {
            own == format!("{host}:{port}") || own == format!("[{host}]:{port}")
        });
        if !own {
            if let Some(which) = self.commander_endpoint(host, port, addrs).await {
                return Err(Refusal(format!(
                    "{url} is the commander's own endpoint ({which}): Ark never harvests its commander"
                )));
            }
        }
        let mut approved = Vec::new();
        for &ip in addrs {
            if is_public(ip) {
                continue;
            }
            if own || rules.allow.iter().any(|net| net.contains(&canonical(ip))) {
                approved.push(ip);
                continue;
            }
            return Err(Refusal(format!(
                "{url} resolves to {ip}, a {} address: Ark does not fetch from the household's own network \
                 unless allowed (add the network to fetch.allow in commander.toml, e.g. \
                 fetch.allow = [\"{}\"], or make it the target's own URL)",
                class(ip),
                suggestion(ip)
            )));
        }
        if !approved.is_empty() {
            let mut map = APPROVED.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(host.to_string()).or_default();
            for ip in approved {
                if !entry.contains(&ip) {
                    entry.push(ip);
                }
            }
        }
        Ok(())
    }

    /// Which of the commander's endpoints `host:port` is, if any.
    async fn commander_endpoint(&self, host: &str, port: u16, addrs: &[IpAddr]) -> Option<String> {
        for endpoint in &self.inner.commander {
            let Some((ep_host, ep_port)) = split_host_port(endpoint) else {
                continue;
            };
            if ep_port != port {
                continue;
            }
            let mut theirs: Vec<IpAddr> = Vec::new();
            if ep_host == "*" {
                // Listening on every interface: its machine's addresses as
                // this agent knows them, and loopback when it is this one.
                theirs.extend([
                    IpAddr::from([127, 0, 0, 1]),
                    IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                ]);
                if let Some(h) = &self.inner.commander_host {
                    theirs.extend(resolve(h, port).await.unwrap_or_default());
                }
            } else if ep_host.eq_ignore_ascii_case(host) {
                return Some(endpoint.clone());
            } else {
                theirs.extend(resolve(&ep_host, port).await.unwrap_or_default());
            }
            let theirs: Vec<IpAddr> = theirs.into_iter().map(canonical).collect();
            if addrs.iter().any(|ip| {
                let ip = canonical(*ip);
                theirs.contains(&ip) || (ep_host == "*" && ip.is_loopback())
            }) {
                return Some(endpoint.clone());
            }
        }
        None
    }
}

fn split_host_port(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

/// Parses `10.0.0.0/8` or a single address.
pub fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The host's addresses (an IP literal is its own).
async fn resolve(host: &str, port: u16) -> Result<Vec<IpAddr>, Refusal> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Refusal(format!("cannot resolve {host}: {e}")))?;
    let addrs: Vec<IpAddr> = found.map(|a| a.ip()).collect();
    if addrs.is_empty() {
        return Err(Refusal(format!("{host} resolves to no address")));
    }
    Ok(addrs)
}

/// An IPv4-mapped IPv6 address is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A public unicast address: the only kind fetched without an allowance.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0 // site local (deprecated)
                || first == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || first == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64: may hide a private v4
        }
    }
}

fn class(ip: IpAddr) -> &'static str {
    match canonical(ip) {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        IpAddr::V4(v4) if v4.is_private() => "private",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "unique-local",
        _ => "non-public",
    }
}

/// The narrowest sensible network to suggest for `ip` in a refusal.
fn suggestion(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

/// The HTTP client's resolver: resolves as the system does, then hands out
/// only public addresses, or private ones a [`Guard::check`] approved for
/// that very name.
#[derive(Debug, Default)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let approved = APPROVED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&host)
                .cloned()
                .unwrap_or_default();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| is_public(a.ip()) || approved.contains(&a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "refused to connect to {host}: it resolves to no public address this job may reach"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_is_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:192.168.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn private_destinations_need_an_allowance_and_the_commander_never_passes() {
        let url = |u: &str| reqwest::Url::parse(u).expect("url");
        let none = Guard::default();
        let refused = none
            .check(&url("http://192.168.1.1/admin"))
            .await
            .expect_err("router reached");
        assert!(
            refused.0.contains("private") && refused.0.contains("fetch.allow"),
            "{refused}"
        );
        assert!(none.check(&url("http://localhost:8080/")).await.is_err());
        assert!(none.check(&url("http://[::1]/")).await.is_err());
        assert!(none.check(&url("http://[::ffff:10.0.0.1]/")).await.is_err());

        let lan = Guard::allowing(&["192.168.1.0/24"]);
        assert!(lan.check(&url("http://192.168.1.7/f")).await.is_ok());
        assert!(lan.check(&url("http://192.168.2.7/f")).await.is_err());

        // The target's own origin is allowed, other ports of that host not.
        let own = Guard::new(
            &[],
            Some("127.0.0.1:8000".into()),
            vec!["*:8447".into()],
            None,
        );
        assert!(own.check(&url("http://127.0.0.1:8000/x")).await.is_ok());
        assert!(own.check(&url("http://127.0.0.1:9000/x")).await.is_err());

        // The commander is refused even where the network is allowed.
        let wide = Guard::new(
            &["127.0.0.0/8".into()],
            None,
            vec!["*:8447".into(), "127.0.0.1:7443".into()],
            Some("localhost".into()),
        );
        assert!(wide.check(&url("http://127.0.0.1:8000/x")).await.is_ok());
        for endpoint in [
            "http://127.0.0.1:8447/metrics",
            "http://127.0.0.2:8447/api/state",
            "https://localhost:7443/",
        ] {
            let refused = wide.check(&url(endpoint)).await.expect_err(endpoint);
            assert!(refused.0.contains("commander"), "{refused}");
        }
    }
}
