//! Placement by device health (issue 13) through the real binaries: three
//! agents whose thermal zones and power supplies are files the test writes
//! (`sysfs` in agent.toml). The hot one and the one on battery get nothing
//! while a cool, plugged-in one can take the work; `runs show` says why
//! each other agent was not chosen; a hot agent that cools down gets work
//! again, and an agent on battery does once the operator allows it.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use ark_tests::*;

const SOON: Duration = Duration::from_secs(40);

/// Adds a file target `name` and waits for its run to land; the run.
async fn harvest(cdata: &Path, origin: &Origin, name: &str) -> Result<ark_proto::RunInfo> {
    origin.put(
        &format!("{name}.bin"),
        ark_demo::sample_bytes(50_000, name.len() as u8),
    );
    add_file_target(cdata, name, &origin.url(&format!("{name}.bin"))).await?;
    let id = run_of(cdata, name).await?;
    wait_for_run(cdata, id, "succeeded", SOON).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_and_unplugged_agents_get_no_work_and_runs_show_says_why() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let mut procs = std::collections::HashMap::new();
    for (name, celsius, battery) in [
        ("cool", 40.0, false),
        ("hot", 90.0, false),
        ("laptop", 40.0, true),
    ] {
        let data = tmp.path().join(name);
        let sysfs = tmp.path().join(format!("sys-{name}"));
        fake_sysfs(&sysfs, celsius, battery)?;
        enroll_agent(&cdata, &data, name).await?;
        std::fs::write(
            data.join(ark_agent::config::CONFIG_FILE),
            format!("sysfs = \"{}\"\n", sysfs.display()),
        )?;
        procs.insert(name, spawn_agent(&data)?);
    }
    wait_for_agents_online(&cdata, 3).await?;
    let telemetry = agents(&cdata).await?;
    let hot = telemetry
        .iter()
        .find(|a| a.name == "hot")
        .and_then(|a| a.telemetry);
    ensure!(
        hot.and_then(|t| t.temperature_celsius) == Some(90.0),
        "the fake sysfs was not read"
    );

    for n in 0..3 {
        let placed = harvest(&cdata, &origin, &format!("t{n}")).await?;
        ensure!(placed.agent == "cool", "t{n} went to {}", placed.agent);
    }
    let (ok, shown, err) = commander_cli(
        &cdata,
        &["runs", "show", &run_of(&cdata, "t0").await?.to_string()],
    )?;
    ensure!(ok, "{err}");
    ensure!(
        shown.contains("placement: placed on cool")
            && shown.contains("not hot: 90 °C ≥ cap 75 °C")
            && shown.contains(
                "not laptop: on battery (allow with `agent set laptop --on-battery allow`)"
            ),
        "{shown}"
    );

    // The hot one cools down and the cool one goes: the work goes to it.
    fake_sysfs(&tmp.path().join("sys-hot"), 45.0, false)?;
    drop(procs.remove("cool"));
    tokio::time::sleep(TEST_HEARTBEAT * 2).await;
    let cooled = harvest(&cdata, &origin, "after-cooling").await?;
    ensure!(cooled.agent == "hot", "went to {}", cooled.agent);

    // Only the laptop on battery is left (once the commander has seen the
    // others go): nothing until it is allowed.
    drop(procs.remove("hot"));
    let gone = std::time::Instant::now();
    while agents(&cdata)
        .await?
        .iter()
        .any(|a| a.state == "online" && a.name != "laptop")
    {
        ensure!(gone.elapsed() < SOON, "the stopped agents never went lost");
        tokio::time::sleep(TEST_HEARTBEAT).await;
    }
    origin.put("unplugged.bin", ark_demo::sample_bytes(10_000, 9));
    add_file_target(&cdata, "unplugged", &origin.url("unplugged.bin")).await?;
    let id = run_of(&cdata, "unplugged").await?;
    let mut waiting = run(&cdata, id).await?;
    for _ in 0..20 {
        if waiting.reason.contains("laptop: on battery") {
            break;
        }
        tokio::time::sleep(TEST_HEARTBEAT).await;
        waiting = run(&cdata, id).await?;
    }
    ensure!(
        waiting.state == "queued" && waiting.reason.contains("laptop: on battery"),
        "{waiting:?}"
    );
    let (ok, _, err) = commander_cli(&cdata, &["agent", "set", "laptop", "--on-battery", "allow"])?;
    ensure!(ok, "{err}");
    let done = wait_for_run(&cdata, id, "succeeded", SOON).await?;
    ensure!(done.agent == "laptop", "{done:?}");
    Ok(())
}
