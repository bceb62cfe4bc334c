//! The soak (issue 15): a commander and four agents, a few hundred targets
//! of every kind on local origins that change at random, and a chaos
//! driver that every few seconds kills an agent or the commander (-9),
//! cuts a device's link, fills the archive disk or flips a byte at an
//! origin — for `ARK_SOAK_SECONDS` (default [`DEFAULT_SECONDS`]; longer on
//! demand). Then every fault is undone, the swarm settles, and the
//! invariant checker (`check.rs`) proves what must hold whatever happened:
//! every run final, every failure and refusal with its reason, every landed
//! version's bytes hashing to its ledger root and being bytes its origin
//! served, `archive verify` and `ingest` clean, no version landed twice, no
//! staged or quarantined file left. The counts are printed at the end.
//!
//! `ARK_SOAK_SEED` replays a run's faults (the seed is printed at the
//! start and in every failure); without it the seed is random.
//!
//! Modules: `swarm` (the processes and their devices), `origins` (the
//! targets and every version served), `chaos` (the faults), `check` (the
//! invariants and the counts).

mod chaos;
mod check;
mod origins;
mod swarm;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ark_tests::*;

/// Seconds of chaos by default: short enough for CI on a loaded machine
/// (the whole test, settling included, stays under five minutes).
const DEFAULT_SECONDS: u64 = 120;
/// How long the swarm may take to finish every run once the faults stop.
const SETTLE: Duration = Duration::from_secs(150);

fn budget() -> Duration {
    Duration::from_secs(
        std::env::var("ARK_SOAK_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_SECONDS),
    )
}

fn seed() -> u64 {
    std::env::var("ARK_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_under_random_faults_keeps_every_invariant() -> Result<()> {
    let (seed, budget) = (seed(), budget());
    eprintln!("soak: seed {seed} (ARK_SOAK_SEED={seed} replays its faults), {budget:?} of chaos");
    soak(seed, budget).await.with_context(|| {
        format!(
            "soak with ARK_SOAK_SEED={seed} ARK_SOAK_SECONDS={}",
            budget.as_secs()
        )
    })
}

async fn soak(seed: u64, budget: Duration) -> Result<()> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let tmp = tempfile::tempdir()?;
    if std::env::var_os("ARK_SOAK_KEEP").is_some() {
        eprintln!("soak: keeping {}", tmp.path().display());
    }
    let mut swarm = swarm::Swarm::start(tmp.path()).await?;
    for why in &swarm.missing {
        eprintln!("soak: SKIPPING the fault {why}");
    }
    let gateway = swarm.lan.as_ref().map(|lan| lan.gateway);
    let mut origins = origins::Origins::start(tmp.path(), gateway).await?;
    let targets = origins.populate(&mut rng)?;
    let origins = Arc::new(origins);
    let started = Instant::now();
    for target in &targets {
        add_target_with(
            &swarm.cdata,
            ark_proto::AddTargetRequest {
                kind: target.kind.into(),
                url: target.url.clone(),
                name: target.name.clone(),
                bandwidth_cap: target.bandwidth_cap,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("adding {}", target.name))?;
    }
    eprintln!(
        "soak: {} targets added in {:.1?}",
        targets.len(),
        started.elapsed()
    );

    // Chaos, with runs asked for all along.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = chaos::churn_task(
        swarm.cdata.clone(),
        origins.clone(),
        targets.clone(),
        rng.u64(..),
        stop.clone(),
    );
    let faults = chaos::drive(&mut swarm, &origins, &targets, &mut rng, budget).await;
    stop.store(true, Ordering::Relaxed);
    let churned = churn.await??;
    let faults = faults?;

    // Undo everything, put back what was left broken, and settle.
    swarm.mend().await?;
    if let Some(disk) = &swarm.disk {
        let _ = std::fs::remove_file(disk.at.join(".soak-filler"));
    }
    for path in origins.mend() {
        if let Some(target) = targets.iter().find(|t| t.url == origins.url(&path)) {
            chaos::ask_for_run(&swarm.cdata, &target.name).await;
        }
    }
    let settling = Instant::now();
    let settled = wait_until(SETTLE, "every run to end", || {
        let cdata = swarm.cdata.clone();
        async move { Ok(check::active_runs(&cdata)? == 0) }
    })
    .await;
    let settle_time = settling.elapsed();

    let books = check::books(&swarm.cdata)?;
    let agents: Vec<&std::path::Path> = swarm.agents.iter().map(|a| a.data.as_path()).collect();
    let wrong = check::violations(&swarm.cdata, &agents, &origins, &books)?;
    let landed = archive_ls(&swarm.cdata)?.len();

    println!(
        "soak: seed {seed}, {:?} of chaos, settled in {settle_time:.1?}",
        budget
    );
    println!("{} targets: {}", targets.len(), kinds_of(&targets));
    println!(
        "{} runs asked for and {} origin changes by the churn",
        churned.asked, churned.changed
    );
    println!("faults injected (and survived):");
    let kinds = chaos::by_kind(&faults);
    for kind in chaos::KINDS {
        let (n, held) = kinds.get(kind).copied().unwrap_or_default();
        println!("  {kind:<15} {n:>4}  held {:>6.1} s", held.as_secs_f64());
    }
    print!("{}", check::report(&books, landed));
    let logs: String = swarm.agents.iter().map(swarm::Member::log).collect();
    println!("what the agents did about cut transfers:");
    for (what, n) in check::resumes(&logs) {
        println!("  {what:<34} {n:>5}");
    }
    if settled.is_err() || !wrong.is_empty() {
        let log: Vec<String> = faults
            .iter()
            .map(|f| format!("  {:>6.1}s {} {}", f.at.as_secs_f64(), f.kind, f.what))
            .collect();
        bail!(
            "{} invariant(s) broken (seed {seed}){}:\n{}\nthe faults:\n{}\n{}",
            wrong.len(),
            if settled.is_err() {
                ", and the swarm did not settle"
            } else {
                ""
            },
            wrong.join("\n"),
            log.join("\n"),
            swarm.logs_tail(40)
        );
    }
    if std::env::var_os("ARK_SOAK_KEEP").is_some() {
        drop(swarm);
        let _ = tmp.keep();
    }
    Ok(())
}

/// "240 file, 6 rss, …".
fn kinds_of(targets: &[origins::Target]) -> String {
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for target in targets {
        *kinds.entry(target.kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}
