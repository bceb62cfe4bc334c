//! `quorum [SIZE_MIB] [HARVESTS]`: what zero trust (issue 11) costs on the
//! household's LAN. A real release commander and real release agents
//! harvest one file of SIZE_MIB (default 1024) from nginx on loopback with
//! quorum 1, 2 and 3, and with quorum 1 and `--spot-check 8`. A counting
//! TCP relay sits between the agents and the commander, so every byte the
//! agents send the NAS (gRPC over mTLS: manifests, uploads, heartbeats) is
//! counted; nginx's access log counts what the origin sent and what the
//! commander's spot check asked for. Then HARVESTS (default 30) harvests of
//! a 1 MiB file that changes every time, under `--quorum adaptive` and
//! under `--quorum 2`: the fetches and uploads adaptive replication saves.
//! Prints a Markdown section for bench/RESULTS.md; set ARK_COMMANDER_BIN
//! and ARK_AGENT_BIN to the release binaries (bench/run.sh does).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ark_tests::*;

const MIB: u64 = 1 << 20;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let size_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let harvests: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(30);
    let tmp = tempfile::tempdir()?;
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www)?;
    write_sample(&www.join("big.bin"), size_mib * MIB)?;
    let nginx = Nginx::start(&tmp.path().join("nginx"), &www).await?;
    let url = format!("http://{}/big.bin", nginx.addr);

    println!("| quorum | agents → NAS (relay) | origin → agents (nginx) | last confirmation → landed | harvest wall |");
    println!("|---|---:|---:|---:|---:|");
    for (label, quorum, spot) in [
        ("1", 1, 0),
        ("2", 2, 0),
        ("3", 3, 0),
        ("1, --spot-check 8", 1, 8),
    ] {
        let dir = tmp.path().join(format!("q{quorum}-{spot}"));
        let m = harvest_once(&dir, &nginx, &url, quorum, spot).await?;
        println!(
            "| {label} | {} | {} | {} ms | {:.1} s |",
            mib(m.to_nas),
            mib(m.from_origin),
            m.confirm_to_land_ms,
            m.wall.as_secs_f64()
        );
        if spot > 0 {
            println!(
                "\nSpot check, K = {spot}: {} bytes in {} request(s) from the commander to the origin; {}\n",
                m.spot_bytes, m.spot_requests, m.spot_message
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    println!("\n| {harvests} harvests of a changing 1 MiB file | groups confirmed | origin → agents | agents → NAS |");
    println!("|---|---:|---:|---:|");
    for quorum in ["2", "adaptive"] {
        let dir = tmp.path().join(format!("repeat-{quorum}"));
        let (confirmed, from_origin, to_nas) = repeated(&dir, quorum, harvests).await?;
        println!(
            "| --quorum {quorum} | {confirmed} of {harvests} | {} | {} |",
            mib(from_origin),
            mib(to_nas)
        );
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB as f64)
}

/// A commander in `dir` and `n` agents that reach it through a counting
/// relay.
async fn swarm(dir: &Path, n: usize) -> Result<(Vec<Proc>, CountingRelay)> {
    let cdata = dir.join("commander");
    let mut procs = vec![spawn_commander(&cdata, "127.0.0.1:0").await?];
    let endpoint = ark_commander::server::endpoint(&cdata)?;
    let addr: std::net::SocketAddr = endpoint
        .trim_start_matches("https://")
        .parse()
        .with_context(|| format!("the commander's endpoint {endpoint}"))?;
    let relay = CountingRelay::start(addr).await?;
    for i in 0..n {
        let data = dir.join(format!("agent-{i}"));
        enroll_agent(&cdata, &data, &format!("agent-{i}")).await?;
        std::fs::write(
            data.join(ark_agent::config::CONFIG_FILE),
            format!("commander = \"https://{}\"\n", relay.addr),
        )?;
        procs.push(spawn_agent(&data)?);
    }
    wait_for_agents_online(&cdata, n).await?;
    Ok((procs, relay))
}

struct Measured {
    to_nas: u64,
    from_origin: u64,
    confirm_to_land_ms: i64,
    wall: Duration,
    spot_bytes: u64,
    spot_requests: usize,
    spot_message: String,
}

/// nginx's access log after `skip` lines: (bytes sent to agents, bytes and
/// requests sent to the commander's spot check).
fn origin_bytes(log: &str, skip: usize) -> (u64, u64, usize) {
    let (mut agents, mut spot, mut spot_requests) = (0, 0, 0);
    for line in log.lines().skip(skip) {
        // ... "GET /big.bin HTTP/1.1" 206 16384 "-" "ark-commander/0.1.0"
        let Some((_, after)) = line.split_once("\" ") else {
            continue;
        };
        let bytes: u64 = after
            .split_whitespace()
            .nth(1)
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        if line.contains("ark-commander/") {
            spot += bytes;
            spot_requests += 1;
        } else {
            agents += bytes;
        }
    }
    (agents, spot, spot_requests)
}

/// One harvest of `url` at `quorum` (and `spot` groups spot-checked).
async fn harvest_once(
    dir: &Path,
    nginx: &Nginx,
    url: &str,
    quorum: usize,
    spot: u32,
) -> Result<Measured> {
    let (_procs, relay) = swarm(dir, quorum).await?;
    let cdata = dir.join("commander");
    let log_before = nginx.access_log().lines().count();
    let (sent_before, started) = (relay.sent(), Instant::now());
    add_target_with(
        &cdata,
        ark_proto::AddTargetRequest {
            kind: "file".into(),
            url: url.into(),
            name: "big".into(),
            quorum: quorum.to_string(),
            spot_check: spot,
            ..Default::default()
        },
    )
    .await?;
    let cd = cdata.clone();
    wait_until(Duration::from_secs(900), "the harvest to land", || {
        let cd = cd.clone();
        async move { Ok(runs(&cd).await?.iter().any(|r| r.state == "succeeded")) }
    })
    .await?;
    let wall = started.elapsed();
    let all = runs(&cdata).await?;
    let landed = all
        .iter()
        .find(|r| r.state == "succeeded")
        .context("landed")?;
    let mut last_vote = 0;
    let mut spot_message = String::new();
    for r in &all {
        for e in events(&cdata, r.id).await? {
            if e.kind == "voted" {
                last_vote = last_vote.max(e.at_ms);
            }
            if e.kind.starts_with("spot_check") {
                spot_message = e.message;
            }
        }
    }
    let confirm_to_land_ms = if quorum > 1 {
        landed.finished_at_ms - last_vote
    } else {
        0
    };
    if quorum > 1 && last_vote == 0 {
        bail!("no vote recorded in a quorum-{quorum} group");
    }
    let (from_origin, spot_bytes, spot_requests) = origin_bytes(&nginx.access_log(), log_before);
    Ok(Measured {
        to_nas: relay.sent() - sent_before,
        from_origin,
        confirm_to_land_ms,
        wall,
        spot_bytes,
        spot_requests,
        spot_message,
    })
}

/// `harvests` harvests of a file that changes before each, on two agents,
/// at `quorum`: (groups confirmed, bytes from the origin, bytes to the NAS).
async fn repeated(dir: &Path, quorum: &str, harvests: usize) -> Result<(usize, u64, u64)> {
    let origin_dir = dir.join("www");
    std::fs::create_dir_all(&origin_dir)?;
    let nginx = Nginx::start(&dir.join("nginx"), &origin_dir).await?;
    let (_procs, relay) = swarm(dir, 2).await?;
    let cdata = dir.join("commander");
    let file = origin_dir.join("changing.bin");
    let sent_before = relay.sent();
    for n in 0..harvests {
        write_sample(&file, MIB)?;
        // Each version differs: the first 8 bytes carry the harvest number.
        let mut bytes = std::fs::read(&file)?;
        bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
        std::fs::write(&file, &bytes)?;
        // nginx's ETag is the mtime (to the second) and the size: give each
        // version its own second, or a fast rewrite answers 304.
        let dated = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + 10 * n as u64);
        std::fs::File::options()
            .write(true)
            .open(&file)?
            .set_modified(dated)?;
        if n == 0 {
            add_target_with(
                &cdata,
                ark_proto::AddTargetRequest {
                    kind: "file".into(),
                    url: format!("http://{}/changing.bin", nginx.addr),
                    name: "changing".into(),
                    quorum: quorum.into(),
                    keep: 1,
                    ..Default::default()
                },
            )
            .await?;
        } else {
            run_now(&cdata, "changing").await?;
        }
        let want = n + 1;
        let cd = cdata.clone();
        wait_until(Duration::from_secs(120), "the harvest to land", || {
            let cd = cd.clone();
            async move {
                let landed = runs(&cd)
                    .await?
                    .iter()
                    .filter(|r| r.state == "succeeded")
                    .count();
                Ok(landed >= want)
            }
        })
        .await?;
    }
    let all = runs(&cdata).await?;
    let mut groups: Vec<i64> = all
        .iter()
        .map(|r| r.quorum_group)
        .filter(|g| *g != 0)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let (from_origin, _, _) = origin_bytes(&nginx.access_log(), 0);
    Ok((groups.len(), from_origin, relay.sent() - sent_before))
}
