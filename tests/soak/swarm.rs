//! The soak's swarm: a commander and four agents, each on a device of its
//! own on a LAN of network namespaces when the machine allows one (so a
//! fault can cut one link), the archive on a small tmpfs (so a fault can
//! fill it). What the machine refuses is left out, with the reason, and
//! the chaos driver then skips the faults that need it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use ark_tests::lan::{Device, Lan};
use ark_tests::*;

/// Agents in the swarm.
pub const AGENTS: usize = 4;
/// The archive disk: room for every target's versions with a margin, so
/// that only the filler fills it.
pub const ARCHIVE_DISK: &str = "256m";
/// The commander's port on its own device (its address must survive a
/// restart: the agents were enrolled with it).
const COMMANDER_PORT: u16 = 7443;

/// A process of the swarm and where it lives.
pub struct Member {
    pub name: String,
    /// Its device on the LAN (None: this namespace).
    pub dev: Option<Device>,
    pub data: PathBuf,
    /// None while it is down.
    pub proc: Option<Proc>,
    /// The logs of its earlier lives (a restart starts a new log).
    pub history: String,
}

impl Member {
    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill9();
            self.history.push_str(&proc.log_text());
        }
    }

    /// Every line it logged, over all its lives.
    pub fn log(&self) -> String {
        let current = self.proc.as_ref().map(Proc::log_text).unwrap_or_default();
        format!("{}{current}", self.history)
    }
}

pub struct Swarm {
    pub cdata: PathBuf,
    listen: String,
    pub commander: Member,
    pub agents: Vec<Member>,
    pub disk: Option<SmallDisk>,
    /// Why faults are left out on this machine, by fault.
    pub missing: Vec<String>,
    /// Dropped last: the devices above leave it first.
    pub lan: Option<Lan>,
}

impl Swarm {
    pub async fn start(dir: &Path) -> Result<Self> {
        let mut missing = Vec::new();
        let lan = match Lan::create("soak") {
            Ok(lan) => Some(lan),
            Err(e) => {
                missing.push(format!(
                    "cut: no network of namespaces here ({e:#}); it needs root, `ip netns` and bridges"
                ));
                None
            }
        };
        let device = |name: &str, n: u8| -> Result<Option<Device>> {
            lan.as_ref().map(|lan| lan.device(name, n)).transpose()
        };
        let cdata = dir.join("commander");
        let disk = SmallDisk::mount(&cdata.join("archive"), ARCHIVE_DISK);
        if disk.is_none() {
            missing.push("fill: cannot mount a small tmpfs for the archive (needs root)".into());
        }
        write_commander_config_ttl(
            &cdata,
            TEST_LEASE_TTL,
            "retry-backoff-max = \"8s\"\n[fetch]\nallow = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n",
        )?;
        let commander_dev = device("commander", 2)?;
        let listen = match &commander_dev {
            Some(dev) => format!("{}:{COMMANDER_PORT}", dev.ip),
            None => format!("127.0.0.1:{}", free_port()?),
        };
        let proc = start_commander_on(commander_dev.as_ref(), &cdata, &listen, &[], &[]).await?;
        let commander = Member {
            name: "commander".into(),
            dev: commander_dev,
            data: cdata.clone(),
            proc: Some(proc),
            history: String::new(),
        };
        let mut agents = Vec::new();
        for n in 0..AGENTS {
            let name = format!("agent{n}");
            let data = dir.join(&name);
            enroll_agent(&cdata, &data, &name).await?;
            let dev = device(&name, 10 + n as u8)?;
            let proc = spawn_agent_on(dev.as_ref(), &data, &[])?;
            agents.push(Member {
                name,
                dev,
                data,
                proc: Some(proc),
                history: String::new(),
            });
        }
        wait_for_agents_online(&cdata, AGENTS).await?;
        Ok(Self {
            cdata,
            listen,
            commander,
            agents,
            disk,
            missing,
            lan,
        })
    }

    /// Starts `member` again (the commander, or an agent) if it is down.
    pub async fn restart(&mut self, agent: Option<usize>) -> Result<()> {
        let member = match agent {
            Some(n) => &mut self.agents[n],
            None => &mut self.commander,
        };
        if member.proc.is_some() {
            return Ok(());
        }
        member.proc = Some(match agent {
            Some(_) => spawn_agent_on(member.dev.as_ref(), &member.data, &[])?,
            None => {
                start_commander_on(member.dev.as_ref(), &self.cdata, &self.listen, &[], &[]).await?
            }
        });
        Ok(())
    }

    /// Every process up and every link mended.
    pub async fn mend(&mut self) -> Result<()> {
        for member in std::iter::once(&self.commander).chain(&self.agents) {
            if let Some(dev) = &member.dev {
                dev.mend()?;
            }
        }
        self.restart(None).await?;
        for n in 0..self.agents.len() {
            self.restart(Some(n)).await?;
        }
        Ok(())
    }

    /// The logs of every process, for a failure message.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for member in std::iter::once(&self.commander).chain(&self.agents) {
            let log =
                std::fs::read_to_string(member.data.with_extension("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {} (last {lines} lines)\n", member.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// How long a call of the test to the commander may take before it counts
/// as failed (the commander may be down or cut off).
pub const CALL: Duration = Duration::from_secs(3);
