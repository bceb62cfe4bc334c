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
//! queue adds delay and whose tail drops lose packets, and says so. For
//! random loss and a fixed delay, [`Lan::lossy_device`] joins a device by
//! a link of its own instead of a veth pair: two TAP devices with a
//! forwarder between them (a small Python program, [`LOSSY_LINK`]) that
//! drops each frame with a probability and delays the rest, as netem would.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

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
    /// The veth (or TAP) end on the switch (in this namespace).
    port: String,
    /// The forwarder of a lossy link, and the file it keeps its counts in.
    lossy: Option<(std::process::Child, std::path::PathBuf)>,
}

/// The forwarder of a lossy link: opens TAP devices `A` and `B` (in this
/// namespace; the caller moves one into the device's), prints `ready`, then
/// passes every frame from one to the other, dropping it with probability
/// `LOSS` or delivering it `DELAY_MS` later, from a seeded generator. Every
/// second it writes `forwarded dropped` to `STATS`.
pub const LOSSY_LINK: &str = r#"
import fcntl, heapq, os, random, select, struct, sys, time
a_name, b_name, loss, delay, seed, stats = sys.argv[1:7]
def tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0002 | 0x1000))
    return fd
a, b = tap(a_name), tap(b_name)
peer = {a: b, b: a}
rng, loss, delay = random.Random(int(seed)), float(loss), float(delay) / 1000
queue, seq, forwarded, dropped, noted = [], 0, 0, 0, 0.0
print("ready", flush=True)
while True:
    wait = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
    ready, _, _ = select.select([a, b], [], [], min(wait, 1.0))
    now = time.monotonic()
    for fd in ready:
        frame = os.read(fd, 65536)
        if rng.random() < loss:
            dropped += 1
        else:
            heapq.heappush(queue, (now + delay, seq, peer[fd], frame))
            seq += 1
    while queue and queue[0][0] <= time.monotonic():
        _, _, fd, frame = heapq.heappop(queue)
        try:
            os.write(fd, frame)
            forwarded += 1
        except OSError:
            dropped += 1
    if now - noted >= 1.0:
        with open(stats + ".tmp", "w") as f:
            f.write(f"{forwarded} {dropped}\n")
        os.replace(stats + ".tmp", stats)
        noted = now
"#;

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
            lossy: None,
        };
        let (ns, port) = (device.ns.as_str(), device.port.as_str());
        ip(
            "ip",
            &[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        self.plug(device)
    }

    /// Adds device number `n` as [`Self::device`] does, joined to the switch
    /// by a lossy link: each frame either way is dropped with probability
    /// `loss` (0…1) and the rest delayed by `delay_ms` (netem's `loss` and
    /// `delay` on both ends), from `seed`. The counts are in
    /// [`Device::lossy_counts`].
    pub fn lossy_device(
        &self,
        name: &str,
        n: u8,
        loss: f64,
        delay_ms: u32,
        seed: u64,
    ) -> Result<Device> {
        let ns = format!("ark-{}-{name}", self.tag);
        let pid = std::process::id();
        let (port, inner) = (format!("akp{pid}-{n}"), format!("aki{pid}-{n}"));
        let stats = std::env::temp_dir().join(format!("ark-lossy-{pid}-{n}"));
        let mut forwarder = Command::new("python3")
            .args(["-c", LOSSY_LINK, &inner, &port])
            .args([loss.to_string(), delay_ms.to_string(), seed.to_string()])
            .arg(&stats)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the lossy link's forwarder (python3)")?;
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(forwarder.stdout.take().context("no stdout")?),
            &mut ready,
        )?;
        // From here the device's Drop removes what was made.
        let device = Device {
            ns,
            ip: Ipv4Addr::new(10, self.subnet.0, self.subnet.1, n),
            port,
            lossy: Some((forwarder, stats)),
        };
        anyhow::ensure!(
            ready.trim() == "ready",
            "the lossy link's forwarder did not start"
        );
        ip("ip", &["netns", "add", &device.ns])?;
        let ns = device.ns.as_str();
        ip("ip", &["link", "set", &inner, "netns", ns])?;
        ip("ip", &["-n", ns, "link", "set", &inner, "name", "eth0"])?;
        self.plug(device)
    }
}

impl Lan {
    /// Plugs `device` (its port here, its `eth0` in its namespace) into the
    /// switch and brings it up at its address.
    fn plug(&self, device: Device) -> Result<Device> {
        let (ns, port) = (device.ns.as_str(), device.port.as_str());
        ip("ip", &["link", "set", port, "master", &self.bridge])?;
        ip("ip", &["link", "set", port, "up"])?;
        let addr = format!("{}/24", device.ip);
        ip("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"])?;
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

    /// Frames a lossy link forwarded and dropped so far (None for a veth).
    pub fn lossy_counts(&self) -> Option<(u64, u64)> {
        let (_, stats) = self.lossy.as_ref()?;
        let text = std::fs::read_to_string(stats).ok()?;
        let mut counts = text.split_whitespace().map(|n| n.parse().ok());
        Some((counts.next()??, counts.next()??))
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
        if let Some((forwarder, stats)) = self.lossy.as_mut() {
            let _ = forwarder.kill();
            let _ = forwarder.wait();
            let _ = std::fs::remove_file(stats);
        }
        // Deleting the namespace deletes its veth end, and with it the pair.
        let _ = ip("ip", &["netns", "delete", &self.ns]);
        let _ = ip("ip", &["link", "delete", &self.port]);
    }
}
