//! Network namespaces for tests that need a second host: a namespace with
//! a veth pair to this one, addresses on both ends, and `tc` on the far
//! end. Removed when the guard drops, whatever the test did (deleting the
//! namespace deletes its veth end, and with it the pair).

use std::process::Command;

use anyhow::{bail, Context, Result};

/// A network namespace joined to this one by a veth pair: this side is
/// `10.X.Y.1/24` on `host_if`, the namespace's side `10.X.Y.2/24` on
/// `ns_if`.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub ns_if: String,
    /// This side's address.
    pub host_ip: std::net::Ipv4Addr,
    /// The namespace's address.
    pub ns_ip: std::net::Ipv4Addr,
}

/// Runs `ip ARGS…` (or another iproute2 tool); fails with its stderr.
pub fn ip(tool: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running {tool} (iproute2)"))?;
    if !out.status.success() {
        bail!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Creates namespace `ark-<tag>-<pid>` and its veth pair. Err when the
    /// machine cannot (not root, no netns support): the caller decides
    /// whether that is a skip.
    pub fn create(tag: &str) -> Result<Self> {
        let pid = std::process::id();
        let name = format!("ark-{tag}-{pid}");
        ip("ip", &["netns", "add", &name])?;
        // From here on the guard removes whatever was made.
        let (x, y) = (100 + (pid / 250) % 100, pid % 250);
        let ns = Self {
            host_if: format!("ah{pid}"),
            ns_if: format!("an{pid}"),
            host_ip: std::net::Ipv4Addr::new(10, x as u8, y as u8, 1),
            ns_ip: std::net::Ipv4Addr::new(10, x as u8, y as u8, 2),
            name,
        };
        let (n, h, o) = (ns.name.as_str(), ns.host_if.as_str(), ns.ns_if.as_str());
        ip(
            "ip",
            &[
                "link", "add", h, "type", "veth", "peer", "name", o, "netns", n,
            ],
        )?;
        ip(
            "ip",
            &["addr", "add", &format!("{}/24", ns.host_ip), "dev", h],
        )?;
        ip("ip", &["link", "set", h, "up"])?;
        ip(
            "ip",
            &[
                "-n",
                n,
                "addr",
                "add",
                &format!("{}/24", ns.ns_ip),
                "dev",
                o,
            ],
        )?;
        ip("ip", &["-n", n, "link", "set", o, "up"])?;
        ip("ip", &["-n", n, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `sysctl -w KEY=VALUE` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        ip(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ],
        )
    }

    /// `tc ARGS…` inside the namespace.
    pub fn tc(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip("tc", &all)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip("ip", &["netns", "delete", &self.name]);
        let _ = ip("ip", &["link", "delete", &self.host_if]);
    }
}
