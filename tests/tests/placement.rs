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

/// An agent whose staging disk fills up mid-download (a 40 MiB tmpfs that
/// something else fills while the run transfers at 4 MiB/s) hands the run
/// back with the reason, keeps nothing of it, is then refused the run by
/// placement for want of room, and the run lands on the agent that has
/// room, with no attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_disk_fills_mid_run_hands_it_back_and_it_lands_elsewhere() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let (small, roomy) = (tmp.path().join("small"), tmp.path().join("roomy"));
    enroll_agent(&cdata, &small, "small").await?;
    enroll_agent(&cdata, &roomy, "roomy").await?;
    let staging = small.join("staging");
    let Some(disk) = SmallDisk::mount(&staging, "40m") else {
        return Ok(());
    };
    let _small = spawn_agent(&small)?;
    wait_for_agents_online(&cdata, 1).await?;

    let body = ark_demo::sample_bytes(24 << 20, 3);
    origin.put("big.bin", body.clone());
    let capped = ark_proto::AddTargetRequest {
        bandwidth_cap: 4 << 20,
        ..file_target("big", &origin.url("big.bin"))
    };
    add_target_with(&cdata, capped).await?;
    let id = run_of(&cdata, "big").await?;
    wait_until(SOON, "the small agent to be a few MiB in", || async {
        let r = run(&cdata, id).await?;
        Ok(r.agent == "small" && r.bytes_done > 4 << 20)
    })
    .await?;
    // Something else on the device takes the rest of its disk.
    disk.fill("filler", 0)?;

    let back = wait_for_event(&cdata, id, "handed_back").await?;
    ensure!(
        back.agent == "small" && back.message.contains("No space left on device"),
        "{back:?}"
    );
    let mut waiting = run(&cdata, id).await?;
    let deadline = std::time::Instant::now() + SOON;
    while !waiting.reason.contains("small: 0.0 GiB free <") {
        ensure!(std::time::Instant::now() < deadline, "{waiting:?}");
        tokio::time::sleep(TEST_HEARTBEAT).await;
        waiting = run(&cdata, id).await?;
    }
    ensure!(
        waiting.state == "queued" && waiting.attempts == 0,
        "{waiting:?}"
    );
    let kept: Vec<_> = std::fs::read_dir(&staging)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "filler")
        .collect();
    ensure!(kept.is_empty(), "the handed-back run left {kept:?} staged");

    let _roomy = spawn_agent(&roomy)?;
    let done = wait_for_run(&cdata, id, "succeeded", SOON).await?;
    ensure!(done.agent == "roomy" && done.attempts == 0, "{done:?}");
    let landed = archive_files(&cdata);
    ensure!(
        landed.iter().any(|(_, bytes)| *bytes == body),
        "the whole body landed"
    );
    Ok(())
}
