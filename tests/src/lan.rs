//! A household network for tests that need several hosts: a bridge in this
//! namespace (the "switch", with the test runner and the origins on its
//! `.1` address) and one network namespace per device (the commander, each
//! agent), each joined to the bridge by a veth pair. A test cuts, mends or
//! throttles one device's link — its port on the switch — without touching
//! the others. Everything is removed when the guards drop, whatever the
//! test did. Every address is on a subnet this harness made (10.200–249.y.0/24),
//! reachable from nowhere else.
//!
//! The kernel's `netem` (delay, loss) is not built into every kernel (this
//! machine's has none); [`Device::throttle`] shapes with `tbf`, whose
//! queue adds delay and whose tail drops lose packets, and says so.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::netns::ip;

/// The switch: a bridge with the runner's address.
#[derive(Debug)]
pub struct Lan {
    pub bridge: String,
    /// The runner's (and the origins') address on the LAN.
    pub gateway: Ipv4Addr,
    tag: String,
    subnet: (u8, u8),
}

/// One device on the LAN: a namespace, its address, its port on the switch.
#[derive(Debug)]
pub struct Device {
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The veth end on the switch (in this namespace).
    port: String,
}

impl Lan {
    /// Creates the switch. Err when the machine cannot (not root, no
    /// bridge or netns support): the caller decides whether that is a skip.
    pub fn create(tag: &str) -> Result<Self> {
        let pid = std::process::id();
        let subnet = (200 + ((pid / 250) % 50) as u8, (pid % 250) as u8);
        let lan = Self {
            bridge: format!("akb{pid}"),
            gateway: Ipv4Addr::new(10, subnet.0, subnet.1, 1),
            tag: format!("{tag}-{pid}"),
            subnet,
        };
        ip("ip", &["link", "add", &lan.bridge, "type", "bridge"])?;
        ip(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", lan.gateway),
                "dev",
                &lan.bridge,
            ],
        )?;
        ip("ip", &["link", "set", &lan.bridge, "up"])?;
        Ok(lan)
    }

    /// Adds device number `n` (2…254) named `name`: its namespace, its
    /// address `10.a.b.n`, its port on the switch.
    pub fn device(&self, name: &str, n: u8) -> Result<Device> {
        let ns = format!("ark-{}-{name}", self.tag);
        ip("ip", &["netns", "add", &ns])?;
        let pid = std::process::id();
        let device = Device {
            ns,
            ip: Ipv4Addr::new(10, self.subnet.0, self.subnet.1, n),
            port: format!("akp{pid}-{n}"),
        };
        let (ns, port) = (device.ns.as_str(), device.port.as_str());
        ip(
            "ip",
            &[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        ip("ip", &["link", "set", port, "master", &self.bridge])?;
        ip("ip", &["link", "set", port, "up"])?;
        ip(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", device.ip),
                "dev",
                "eth0",
            ],
        )?;
        ip("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        ip("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(device)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = ip("ip", &["link", "delete", &self.bridge]);
    }
}

impl Device {
    /// `program` to be run inside this device's namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }

    /// Cuts the device off the LAN (its port goes down: packets are lost,
    /// connections hang as they do when a cable is pulled).
    pub fn cut(&self) -> Result<()> {
        ip("ip", &["link", "set", &self.port, "down"])
    }

    /// Mends a cut.
    pub fn mend(&self) -> Result<()> {
        ip("ip", &["link", "set", &self.port, "up"])
    }

    /// A bad link both ways: `rate` (tc syntax, e.g. "2mbit") with a queue
    /// of `delay_ms`, whose overflow is dropped. Returns what was applied.
    pub fn throttle(&self, rate: &str, delay_ms: u32) -> Result<String> {
        let latency = format!("{delay_ms}ms");
        let tbf = [
            "root", "tbf", "rate", rate, "burst", "16kb", "latency", &latency,
        ];
        let mut outward = vec!["-n", self.ns.as_str(), "qdisc", "replace", "dev", "eth0"];
        outward.extend_from_slice(&tbf);
        ip("tc", &outward)?;
        let mut inward = vec!["qdisc", "replace", "dev", self.port.as_str()];
        inward.extend_from_slice(&tbf);
        ip("tc", &inward)?;
        Ok(format!(
            "tbf {rate}, queue {latency} both ways (tail drops past it; no netem in this kernel)"
        ))
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = ip("ip", &["netns", "delete", &self.ns]);
        let _ = ip("ip", &["link", "delete", &self.port]);
    }
}
