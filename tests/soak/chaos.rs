//! The chaos driver: every few seconds one fault, chosen and timed by the
//! seeded generator — an agent or the commander killed (-9) and started
//! again after a moment, a device's link cut and mended, the archive disk
//! filled and freed, a byte flipped at an origin — while a churn task asks
//! for runs of random targets. The seed fixes the sequence of faults and
//! their timing; the interleaving with the swarm's own timing is the
//! machine's, which is the point of a soak.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ark_tests::*;

use crate::origins::{Origins, Target};
use crate::swarm::{Swarm, CALL};

/// The kinds of fault, in the order the counts are printed.
pub const KINDS: [&str; 5] = ["kill-agent", "kill-commander", "cut", "fill", "flip"];

/// One fault injected.
#[derive(Debug, Clone)]
pub struct Injected {
    /// Since the chaos began.
    pub at: Duration,
    pub kind: &'static str,
    pub what: String,
    /// How long the fault held (a process down, a link cut, a disk full).
    pub held: Duration,
}

/// Faults injected, by kind: (count, total time held).
pub fn by_kind(log: &[Injected]) -> BTreeMap<&'static str, (usize, Duration)> {
    let mut kinds = BTreeMap::new();
    for fault in log {
        let entry = kinds.entry(fault.kind).or_insert((0, Duration::ZERO));
        entry.0 += 1;
        entry.1 += fault.held;
    }
    kinds
}

fn between(rng: &mut fastrand::Rng, lo_ms: u64, hi_ms: u64) -> Duration {
    Duration::from_millis(rng.u64(lo_ms..=hi_ms))
}

/// `run-now` for `target`, giving up after [`CALL`] (the commander may be
/// down or cut off: the run is then simply not asked for).
pub async fn ask_for_run(cdata: &std::path::Path, target: &str) -> bool {
    matches!(
        tokio::time::timeout(CALL, run_now(cdata, target)).await,
        Ok(Ok(_))
    )
}

/// Asks for runs of random targets until `stop`; how many were asked for.
pub fn churn_task(
    cdata: std::path::PathBuf,
    targets: Vec<Target>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut asked = 0;
        while !stop.load(Ordering::Relaxed) {
            let target = &targets[rng.usize(..targets.len())];
            if ask_for_run(&cdata, &target.name).await {
                asked += 1;
            }
            tokio::time::sleep(between(&mut rng, 150, 500)).await;
        }
        asked
    })
}

/// Injects faults for `budget`; the faults injected, in order.
pub async fn drive(
    swarm: &mut Swarm,
    origins: &Origins,
    targets: &[Target],
    rng: &mut fastrand::Rng,
    budget: Duration,
) -> Result<Vec<Injected>> {
    let kinds: Vec<&'static str> = KINDS
        .into_iter()
        .filter(|k| match *k {
            "cut" => swarm.lan.is_some(),
            "fill" => swarm.disk.is_some(),
            _ => true,
        })
        .collect();
    let began = Instant::now();
    let mut log = Vec::new();
    while began.elapsed() < budget {
        tokio::time::sleep(between(rng, 1500, 4000)).await;
        let kind = kinds[rng.usize(..kinds.len())];
        let at = began.elapsed();
        let (what, held) = inject(swarm, origins, targets, rng, kind)
            .await
            .with_context(|| format!("injecting {kind} at {at:?}"))?;
        eprintln!(
            "soak: {:>6.1}s {kind:<14} {what} ({held:.1?})",
            at.as_secs_f64()
        );
        log.push(Injected {
            at,
            kind,
            what,
            held,
        });
    }
    Ok(log)
}

/// One fault of `kind`, held and undone; what it was and how long it held.
async fn inject(
    swarm: &mut Swarm,
    origins: &Origins,
    targets: &[Target],
    rng: &mut fastrand::Rng,
    kind: &'static str,
) -> Result<(String, Duration)> {
    let start = Instant::now();
    let what = match kind {
        "kill-agent" => {
            let n = rng.usize(..swarm.agents.len());
            swarm.agents[n].kill();
            tokio::time::sleep(between(rng, 1000, 3000)).await;
            swarm.restart(Some(n)).await?;
            swarm.agents[n].name.clone()
        }
        "kill-commander" => {
            swarm.commander.kill();
            tokio::time::sleep(between(rng, 1000, 3000)).await;
            swarm.restart(None).await?;
            "the commander".to_string()
        }
        "cut" => {
            let n = rng.usize(..=swarm.agents.len());
            let member = match n {
                0 => &swarm.commander,
                n => &swarm.agents[n - 1],
            };
            let dev = member.dev.as_ref().context("a cut without a LAN")?;
            dev.cut()?;
            tokio::time::sleep(between(rng, 2000, 8000)).await;
            dev.mend()?;
            format!("{}'s link", member.name)
        }
        "fill" => {
            let disk = swarm.disk.as_ref().context("a fill without a small disk")?;
            let leave = rng.u64(..2 << 20);
            let filler = disk.fill(".soak-filler", leave)?;
            let free = disk.free();
            tokio::time::sleep(between(rng, 3000, 6000)).await;
            std::fs::remove_file(&filler)?;
            format!("the archive disk, {free} bytes left free")
        }
        "flip" => {
            let target = &targets[rng.usize(..targets.len())];
            let what = origins.flip(target, rng)?;
            // Asked for at once (the commander may be away: then later).
            ask_for_run(&swarm.cdata, &target.name).await;
            return Ok((what, Duration::ZERO));
        }
        other => anyhow::bail!("no fault {other}"),
    };
    Ok((what, start.elapsed()))
}
