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

/// One churn step in this many changes a target at its origin.
pub const CHANGE_EVERY: usize = 6;

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

/// What the churn did: runs asked for, origins changed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Churned {
    pub asked: usize,
    pub changed: usize,
}

/// Until `stop`: asks for runs of random targets, and one step in
/// [`CHANGE_EVERY`] changes a random target at its origin first (the
/// origins change at random, not only when the chaos flips a byte).
pub fn churn_task(
    cdata: std::path::PathBuf,
    origins: Arc<Origins>,
    targets: Vec<Target>,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<Churned>> {
    tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut churned = Churned::default();
        while !stop.load(Ordering::Relaxed) {
            // One ask in eight for a big file, changed half the time, so
            // that big transfers are nearly always on their way when a
            // fault comes.
            let big: Vec<&Target> = targets.iter().filter(|t| t.bandwidth_cap > 0).collect();
            let (target, change_every) = match rng.usize(..8) {
                0 if !big.is_empty() => (big[rng.usize(..big.len())], 2),
                _ => (&targets[rng.usize(..targets.len())], CHANGE_EVERY),
            };
            if rng.usize(..change_every) == 0 {
                origins.flip(target, &mut rng)?;
                churned.changed += 1;
            }
            if ask_for_run(&cdata, &target.name).await {
                churned.asked += 1;
            }
            tokio::time::sleep(between(&mut rng, 50, 250)).await;
        }
        Ok(churned)
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

/// An agent to hit: half the time one in the middle of a big file (when
/// one is), so that downloads and uploads are cut mid-way and resumed.
fn pick_agent(swarm: &Swarm, rng: &mut fastrand::Rng) -> usize {
    let busy: Vec<usize> = crate::check::holding_big(&swarm.cdata)
        .unwrap_or_default()
        .iter()
        .filter_map(|name| swarm.agents.iter().position(|a| &a.name == name))
        .collect();
    match rng.bool() {
        true if !busy.is_empty() => busy[rng.usize(..busy.len())],
        _ => rng.usize(..swarm.agents.len()),
    }
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
            let n = pick_agent(swarm, rng);
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
            let member = match rng.usize(..=swarm.agents.len()) {
                0 => &swarm.commander,
                _ => &swarm.agents[pick_agent(swarm, rng)],
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
            // Half the flips hit a big file, likely mid-transfer: a resume
            // must then not append bytes of the new version to the old.
            let big: Vec<&Target> = targets.iter().filter(|t| t.bandwidth_cap > 0).collect();
            let target = match rng.bool() {
                true if !big.is_empty() => big[rng.usize(..big.len())],
                _ => &targets[rng.usize(..targets.len())],
            };
            let what = origins.flip(target, rng)?;
            // Asked for at once (the commander may be away: then later).
            ask_for_run(&swarm.cdata, &target.name).await;
            return Ok((what, Duration::ZERO));
        }
        other => anyhow::bail!("no fault {other}"),
    };
    Ok((what, start.elapsed()))
}
