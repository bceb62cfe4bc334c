//! `scripts/flash-agent.sh` against a real `sshd` (Debian openssh-server)
//! on loopback: it copies the agent, enrols it with a fresh one-time token,
//! writes the hardened systemd unit (checked with `systemd-analyze verify`:
//! systemd is not running here, so the agent starts in the background), and
//! the agent shows up online in `ark-commander agents`. Flashing again
//! upgrades in place and keeps the agent's identity.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use ark_tests::sshd::Sshd;
use ark_tests::*;

/// Runs the flash script; (success, stderr).
fn flash(sshd: &Sshd, cdata: &Path, device: &Path, url: &str) -> Result<(bool, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flash-agent.sh");
    let bin_dir = bin("ark-commander")?
        .parent()
        .context("bin dir")?
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg(script)
        .args([
            "root@127.0.0.1",
            "x86_64-unknown-linux-musl",
            url,
            "--name",
            "drawer-laptop",
        ])
        .arg("--port")
        .arg(sshd.port.to_string())
        .arg("--identity")
        .arg(&sshd.key)
        .arg("--binary")
        .arg(bin("ark-agent")?)
        .arg("--data")
        .arg(cdata)
        .arg("--root")
        .arg(device)
        .env("PATH", path)
        .env(
            "ARK_SSH_OPTS",
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        )
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Stops the agent the script started in the background on the "device".
struct DeviceAgent(PathBuf);

impl Drop for DeviceAgent {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("var/lib/ark-agent/agent.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flashing_over_ssh_installs_enrols_and_starts_and_a_reflash_keeps_the_identity(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let sshd = Sshd::start(&tmp.path().join("sshd")).await?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let url = ark_commander::server::endpoint(&cdata)?;
    let device = tmp.path().join("device");
    let _agent = DeviceAgent(device.clone());

    let (ok, log) = flash(&sshd, &cdata, &device, &url)?;
    ensure!(ok, "flash failed: {log}\nsshd: {}", sshd.log_text());
    ensure!(
        log.contains("enrolled (one-time token)") && log.contains("is online"),
        "{log}"
    );
    let online = agents(&cdata).await?;
    ensure!(
        online
            .iter()
            .any(|a| a.name == "drawer-laptop" && a.state == "online"),
        "{online:?}"
    );
    let unit = std::fs::read_to_string(device.join("etc/systemd/system/ark-agent.service"))?;
    for line in [
        "User=ark-agent",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=",
    ] {
        ensure!(unit.contains(line), "the unit lacks {line}: {unit}");
    }
    if Path::new("/usr/bin/systemd-analyze").exists() {
        ensure!(log.contains("unit checked with systemd-analyze"), "{log}");
    }
    let identity = device.join("var/lib/ark-agent/identity");
    let cert = |dir: &Path| -> Result<Vec<(String, Vec<u8>)>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        files.sort();
        Ok(files)
    };
    let before = cert(&identity)?;

    // Again: an upgrade in place, the same identity, online again.
    let (ok, log) = flash(&sshd, &cdata, &device, &url)?;
    ensure!(ok, "re-flash failed: {log}");
    ensure!(
        log.contains("upgrading in place, identity kept") && log.contains("is online"),
        "{log}"
    );
    ensure!(
        cert(&identity)? == before,
        "the re-flash changed the agent's identity"
    );
    let names: Vec<String> = agents(&cdata).await?.into_iter().map(|a| a.name).collect();
    ensure!(names == ["drawer-laptop"], "one agent, not two: {names:?}");

    // A wrong device class is refused with the classes there are.
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/flash-agent.sh"))
        .args(["root@127.0.0.1", "mips-unknown-linux-gnu", &url])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("aarch64-unknown-linux-musl"),
        "{err}"
    );
    Ok(())
}
