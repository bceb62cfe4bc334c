//! `household [SIZE_MIB]`: how fast the swarm reacts (issues 13 and 14).
//! A real release commander (production heartbeat, 5 s) and a real release
//! agent on loopback:
//!
//! - **Work starts at once**: a `run-now` of a small file on nginx, ten
//!   times; how long each run waited from `queued` to `leased` (before the
//!   `Watch` stream it waited for the agent's next heartbeat, 0–5 s).
//! - **Yielding to the household**: the agent harvests a SIZE_MIB file
//!   (default 1024) capped at 16 MiB/s (a household's WAN) through a
//!   counting TCP relay in front of nginx; a `[[pause_when]]` command rule
//!   (evaluated every second, hold-down 2 s) starts to hold; the relay's
//!   byte count, sampled every 20 ms, shows when the transfer reached the
//!   floor rate, and when it came back after the rule cleared.
//!
//! Prints a Markdown section body for bench/RESULTS.md; set
//! ARK_COMMANDER_BIN and ARK_AGENT_BIN to the release binaries.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ark_tests::*;

const MIB: u64 = 1 << 20;
const CAP: u64 = 16 * MIB;
const FLOOR: u64 = 32 << 10;

#[tokio::main]
async fn main() -> Result<()> {
    let size_mib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1024);
    let tmp = tempfile::tempdir()?;
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www)?;
    write_sample(&www.join("small.bin"), 64 << 10)?;
    write_sample(&www.join("big.bin"), size_mib * MIB)?;
    let nginx = Nginx::start(&tmp.path().join("nginx"), &www).await?;
    let relay = CountingRelay::start(nginx.addr).await?;
    let flag = tmp.path().join("film-night");

    let cdata = tmp.path().join("commander");
    std::fs::create_dir_all(&cdata)?;
    std::fs::write(
        cdata.join("commander.toml"),
        format!(
            "lease-ttl = \"30s\"\nheartbeat = \"5s\"\nhttp = \"off\"\npause-check = \"1s\"\n\
             yield-floor = {FLOOR}\n\n[[pause_when]]\nname = \"film night\"\n\
             command = \"test -e {}\"\nhold_down = \"2s\"\n",
            flag.display()
        ),
    )?;
    let _commander = start_commander(&cdata, "127.0.0.1:0", &[], &[]).await?;
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    wait_for_agents_online(&cdata, 1).await?;

    // Work starts at once.
    add_file_target(&cdata, "small", &format!("http://{}/small.bin", nginx.addr)).await?;
    let mut id = run_of(&cdata, "small").await?;
    let mut waits = Vec::new();
    for _ in 0..10 {
        // Landed, or unchanged (nginx's validators have 1 s resolution).
        wait_until(Duration::from_secs(60), "the small run to end", || async {
            let state = run(&cdata, id).await?.state;
            Ok(state == "succeeded" || state == "unchanged")
        })
        .await?;
        let queued = event_of(&cdata, id, "queued").await?;
        let leased = event_of(&cdata, id, "leased").await?;
        waits.push(leased.at_ms - queued.at_ms);
        // Idle again, somewhere in its heartbeat interval.
        tokio::time::sleep(Duration::from_millis(700)).await;
        id = run_now(&cdata, "small").await?;
    }
    waits.sort();
    println!("| run queued → leased (10 `run-now`s, heartbeat 5 s) | p50 | max |");
    println!("|---|---:|---:|");
    println!(
        "| woken over the `Watch` stream | {} ms | {} ms |",
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    println!("| waiting for the next heartbeat (before; expected) | 2500 ms | 5000 ms |\n");

    // Yielding: full rate, the rule holds, the floor, the rule clears.
    let capped = ark_proto::AddTargetRequest {
        bandwidth_cap: CAP,
        ..file_target("big", &format!("http://{}/big.bin", relay.addr))
    };
    add_target_with(&cdata, capped).await?;
    wait_until(Duration::from_secs(30), "the transfer to start", || async {
        Ok(relay.received() > 4 * MIB)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rate_over(&relay, Duration::from_secs(1)).await;
    let fired = unix_ms();
    std::fs::write(&flag, b"")?;
    let (floor_ms, at_floor) = until(&relay, fired, (25, true), |rate| rate <= 4 * FLOOR).await?;
    let yielded = first_event(&cdata, "yield", fired).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = rate_over(&relay, Duration::from_secs(2)).await;
    let cleared = unix_ms();
    std::fs::remove_file(&flag)?;
    let (back_ms, _) = until(&relay, cleared, (5, false), |rate| rate >= before / 2).await?;
    let resumed = first_event(&cdata, "yield", cleared).await?;

    println!("| a pause rule (checked every 1 s, hold-down 2 s) | after the change |");
    println!("|---|---:|");
    println!(
        "| the rule holds (its `yield` event) | {} ms |",
        yielded - fired
    );
    println!("| the transfer at the floor (≤ 4× floor over 500 ms) | {floor_ms} ms |");
    println!(
        "| on the wire, before → at the floor (2 s) | {:.1} MiB/s → {:.0} KiB/s (floor {} KiB/s; {:.0} KiB/s in the first 500 ms) |",
        before as f64 / MIB as f64,
        held as f64 / 1024.0,
        FLOOR >> 10,
        at_floor as f64 / 1024.0
    );
    println!(
        "| the rule clears (its `yield` event, after the hold-down) | {} ms |",
        resumed - cleared
    );
    println!("| the transfer back above half its rate (100 ms window) | {back_ms} ms |");
    Ok(())
}

fn unix_ms() -> i64 {
    ark_core::unix_ms()
}

/// Bytes/s through the relay over `window`.
async fn rate_over(relay: &CountingRelay, window: Duration) -> u64 {
    let start = relay.received();
    tokio::time::sleep(window).await;
    ((relay.received() - start) as f64 / window.as_secs_f64()) as u64
}

/// Samples the relay every 20 ms from `since` (ms) until the rate over a
/// window of `window` samples passes `reached`: (ms from `since` to the
/// window's start when `at_start`, else to its end; the rate in it). A drop
/// is dated by the window that is all floor (it began by then), a return
/// by the short window that saw it (it came by then): socket buffers move
/// megabytes in a burst, so a long window would date a return too early.
async fn until(
    relay: &CountingRelay,
    since: i64,
    (window, at_start): (usize, bool),
    reached: impl Fn(u64) -> bool,
) -> Result<(i64, u64)> {
    let mut samples: Vec<(i64, u64)> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        samples.push((unix_ms(), relay.received()));
        if samples.len() > window {
            let (t0, b0) = samples[samples.len() - 1 - window];
            let (t1, b1) = samples[samples.len() - 1];
            let rate = (b1 - b0) * 1000 / (t1 - t0).max(1) as u64;
            if reached(rate) {
                return Ok((if at_start { t0 } else { t1 } - since, rate));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("the rate never changed within 60 s")
}

/// When the first swarm event of `kind` at or after `since` (ms) happened.
async fn first_event(cdata: &Path, kind: &str, since: i64) -> Result<i64> {
    let started = Instant::now();
    loop {
        let found = events(cdata, 0)
            .await?
            .into_iter()
            .filter(|e| e.kind == kind && e.at_ms >= since)
            .map(|e| e.at_ms)
            .min();
        if let Some(at) = found {
            return Ok(at);
        }
        if started.elapsed() > Duration::from_secs(30) {
            return None.context(format!("no {kind} event after {since}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
