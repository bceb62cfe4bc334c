//! A real `sshd` (Debian openssh-server) on loopback for what goes over
//! SSH: flashing an agent (tests/tests/flash.rs) and the manual way of
//! copying a file to the NAS that the whole-path benchmark compares with.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::{free_port, spawn_logged, wait_until, Proc};

/// sshd on 127.0.0.1 with its own host key, accepting `key` for root.
#[derive(Debug)]
pub struct Sshd {
    pub port: u16,
    /// The client key root may log in with.
    pub key: PathBuf,
    proc: Proc,
}

fn keygen(path: &Path) -> Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .context("ssh-keygen (apt-get install openssh-client)")?;
    ensure!(status.success(), "ssh-keygen failed");
    Ok(())
}

impl Sshd {
    /// Starts it with fresh host and client keys under `dir`.
    pub async fn start(dir: &Path) -> Result<Self> {
        let sshd = Path::new("/usr/sbin/sshd");
        ensure!(
            sshd.exists(),
            "/usr/sbin/sshd not found (apt-get install openssh-server, or scripts/setup.sh)"
        );
        std::fs::create_dir_all(dir)?;
        std::fs::create_dir_all("/run/sshd")?; // privilege separation dir
        let (host, key) = (dir.join("host_key"), dir.join("client_key"));
        keygen(&host)?;
        keygen(&key)?;
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
        let port = free_port()?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nPidFile {pid}\n",
                host = host.display(),
                keys = dir.join("authorized_keys").display(),
                pid = dir.join("sshd.pid").display(),
            ),
        )?;
        let mut cmd = Command::new(sshd);
        cmd.arg("-D").arg("-e").arg("-f").arg(&config);
        let proc = spawn_logged(cmd, dir.join("sshd.log"))?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        wait_until(Duration::from_secs(10), "sshd to listen", || async move {
            Ok(tokio::net::TcpStream::connect(addr).await.is_ok())
        })
        .await?;
        Ok(Self { port, key, proc })
    }
}

impl Sshd {
    /// Options for `ssh` (or `rsync -e`) to reach it as root with its key,
    /// without asking about or remembering the throwaway host key.
    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -p {} -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.port,
            self.key.display()
        )
    }

    /// What sshd logged (`-e`: to stderr, kept in a file).
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }
}
