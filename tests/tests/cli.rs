//! The operator's command line, through the real binaries. What belongs
//! here: exit codes, `--json` listings, `show-config`, and error messages
//! that say what failed and what to do.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Result};
use ark_tests::*;
use serde_json::Value;

fn commander_cli(data: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(bin("ark-commander")?)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()?)
}

fn ok_json(out: Output) -> Result<Value> {
    ensure!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn failed_with(out: &Output, needle: &str) -> Result<()> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "succeeded, expected an error containing {needle:?}"
    );
    ensure!(
        stderr.contains(needle),
        "error does not contain {needle:?}: {stderr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_cli_drives_a_running_commander() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");

    // Before the commander ever ran: the error says how to start it.
    failed_with(&commander_cli(&cdata, &["agents"])?, "serve`")?;

    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    origin.put("notes.txt", b"hello ark".to_vec());

    // enroll prints a token the agent binary accepts.
    let out = commander_cli(&cdata, &["enroll", "laptop"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)?.trim().to_string();
    ensure!(token.starts_with("ark1-"), "{token}");
    let adata = tmp.path().join("laptop");
    let url = ark_commander::server::endpoint(&cdata)?;
    let out = Command::new(bin("ark-agent")?)
        .arg("--data")
        .arg(&adata)
        .args(["enroll", "--commander", &url, "--token", &token])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _agent = spawn_agent(&adata)?;

    let added = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "file",
            &origin.url("notes.txt"),
            "--every",
            "1h",
        ],
    )?;
    ensure!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let targets = ok_json(commander_cli(&cdata, &["target", "ls", "--json"])?)?;
    ensure!(
        targets[0]["name"] == "notes.txt" && targets[0]["every_ms"] == 3_600_000,
        "{targets}"
    );

    wait_until(
        std::time::Duration::from_secs(30),
        "the run to succeed",
        || {
            let cdata = cdata.clone();
            async move {
                let runs = ok_json(commander_cli(&cdata, &["runs", "--json"])?)?;
                Ok(runs[0]["state"] == "succeeded")
            }
        },
    )
    .await?;
    let runs = ok_json(commander_cli(&cdata, &["runs", "--json"])?)?;
    ensure!(
        runs[0]["size_bytes"] == 9 && runs[0]["agent"] == "laptop",
        "{runs}"
    );
    let agents = ok_json(commander_cli(&cdata, &["agents", "--json"])?)?;
    ensure!(
        agents[0]["name"] == "laptop" && agents[0]["state"] == "online",
        "{agents}"
    );
    ensure!(
        agents[0]["arch"] == std::env::consts::ARCH && agents[0]["memory_bytes"].as_u64() > Some(0),
        "{agents}"
    );
    let status = ok_json(commander_cli(&cdata, &["status", "--json"])?)?;
    ensure!(
        status["agents_online"] == 1
            && status["runs_succeeded"] == 1
            && status["archive_versions"] == 1
            && status["archive_bytes"] == 9
            && status["last_landed_at_ms"].as_i64() > Some(0),
        "{status}"
    );

    // run-now queues a second run of the same target.
    let queued = ok_json(commander_cli(&cdata, &["run-now", "notes.txt", "--json"])?)?;
    ensure!(
        queued["state"] == "queued" && queued["id"] != runs[0]["id"],
        "{queued}"
    );

    // Bad input: a clear message and a failing exit code.
    failed_with(
        &commander_cli(&cdata, &["target", "add", "gopher", "http://x/y"])?,
        "unknown target kind",
    )?;
    failed_with(
        &commander_cli(&cdata, &["target", "add", "file", "ftp://x/y"])?,
        "http:// or https://",
    )?;
    failed_with(
        &commander_cli(
            &cdata,
            &[
                "target",
                "add",
                "file",
                &origin.url("notes.txt"),
                "--name",
                "notes.txt",
            ],
        )?,
        "already exists",
    )?;
    failed_with(
        &commander_cli(
            &cdata,
            &["target", "add", "file", "http://x/y", "--name", "../etc"],
        )?,
        "not allowed",
    )?;
    failed_with(
        &commander_cli(&cdata, &["enroll", "bad name"])?,
        "not allowed",
    )?;
    failed_with(
        &commander_cli(&cdata, &["target", "rm", "nope"])?,
        "target ls",
    )?;
    failed_with(
        &commander_cli(&cdata, &["resume", "nope"])?,
        "ark-commander agents",
    )?;

    // The agent's own status works from its data dir.
    let status = Command::new(bin("ark-agent")?)
        .arg("--data")
        .arg(&adata)
        .args(["status", "--json"])
        .output()?;
    let status = ok_json(status)?;
    ensure!(
        status["name"] == "laptop" && status["link"] == "connected",
        "{status}"
    );
    Ok(())
}

#[test]
fn show_config_prints_the_effective_config_and_refuses_typos() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path();
    std::fs::write(data.join("commander.toml"), "lease-ttl = \"1m\"\n")?;
    let out = commander_cli(data, &["show-config", "--heartbeat", "7s"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    ensure!(
        text.contains("lease-ttl = \"1m\"")
            && text.contains("heartbeat = \"7s\"")
            && text.contains("http = \"127.0.0.1:8447\""),
        "{text}"
    );

    std::fs::write(data.join("commander.toml"), "lease_ttl = \"1m\"\n")?;
    failed_with(&commander_cli(data, &["show-config"])?, "commander.toml")?;
    std::fs::write(
        data.join("commander.toml"),
        "lease-ttl = \"2s\"\nheartbeat = \"5s\"\n",
    )?;
    failed_with(
        &commander_cli(data, &["show-config"])?,
        "must be longer than heartbeat",
    )?;

    let out = Command::new(bin("ark-agent")?)
        .arg("--data")
        .arg(data)
        .args(["show-config", "--max-jobs", "4"])
        .output()?;
    ensure!(String::from_utf8(out.stdout)?.contains("max-jobs = 4"));
    let out = Command::new(bin("ark-agent")?)
        .arg("--data")
        .arg(data)
        .arg("run")
        .output()?;
    failed_with(&out, "ark-agent enroll")?;
    let out = Command::new(bin("ark-agent")?)
        .arg("--data")
        .arg(data)
        .args([
            "enroll",
            "--commander",
            "https://127.0.0.1:1",
            "--token",
            "nonsense",
        ])
        .output()?;
    failed_with(&out, "malformed")?;
    Ok(())
}

/// Local time as HH:MM, `minutes` from now, the way the commander reads it.
fn local_hhmm(minutes: i64) -> Result<String> {
    let out = Command::new("date")
        .arg("+%H:%M")
        .arg(format!(
            "--date=@{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64
                + minutes * 60
        ))
        .output()?;
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_and_caps_set_from_the_cli_hold_and_release_work() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;
    let origin = Origin::start().await?;
    origin.put("night.bin", vec![7u8; 50_000]);

    // An agent window that is closed now: the run waits, queued.
    let closed = format!("{}-{}", local_hhmm(120)?, local_hhmm(180)?);
    let set = ok_json(commander_cli(
        &cdata,
        &[
            "agent",
            "set",
            "pi",
            "--bandwidth",
            "5MB/s",
            "--window",
            &closed,
            "--json",
        ],
    )?)?;
    ensure!(
        set["window"] == closed.as_str() && set["commander_bandwidth_cap"] == 5_000_000,
        "{set}"
    );
    failed_with(
        &commander_cli(&cdata, &["agent", "set", "pi", "--window", "25:00-01:00"])?,
        "HH:MM-HH:MM",
    )?;
    failed_with(
        &commander_cli(&cdata, &["agent", "set", "nobody", "--window", "always"])?,
        "no agent named",
    )?;
    let listed = ok_json(commander_cli(&cdata, &["agents", "--json"])?)?;
    ensure!(listed[0]["window"] == closed.as_str(), "{listed}");

    let open = format!("{}-{}", local_hhmm(-60)?, local_hhmm(60)?);
    let out = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "file",
            &origin.url("night.bin"),
            "--name",
            "night",
            "--window",
            &open,
        ],
    )?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = run_of(&cdata, "night").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ensure!(
        run(&cdata, id).await?.state == "queued",
        "the agent's window is closed"
    );

    // `always` opens it: the queued run is taken and lands.
    ok_json(commander_cli(
        &cdata,
        &["agent", "set", "pi", "--window", "always", "--json"],
    )?)?;
    wait_for_run(&cdata, id, "succeeded", Duration::from_secs(30)).await?;
    let targets = ok_json(commander_cli(&cdata, &["target", "ls", "--json"])?)?;
    ensure!(targets[0]["window"] == open.as_str(), "{targets}");
    Ok(())
}
