//! Whole-swarm behaviour with the real binaries: a commander process,
//! agent processes, a local origin. What belongs here: leasing, losing a
//! device (`kill -9`), commander restarts, pause/resume, edge builds.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use ark_demo::origin::Logged;
use ark_demo::sample_bytes;
use ark_tests::*;

/// Generous bound for anything that should take a few heartbeats.
const SOON: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_runs_on_three_agents_each_complete_exactly_once() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let mut agents = Vec::new();
    for i in 0..3 {
        let adata = tmp.path().join(format!("agent-{i}"));
        enroll_agent(&cdata, &adata, &format!("agent-{i}")).await?;
        agents.push((adata.clone(), spawn_agent(&adata)?));
    }
    let mut expected = HashMap::new();
    for i in 0..10u8 {
        let bytes = sample_bytes(50_000 + usize::from(i) * 7_919, i);
        let name = format!("file-{i}");
        origin.put(&name, bytes.clone());
        add_file_target(&cdata, &name, &origin.url(&name)).await?;
        expected.insert(name, bytes);
    }
    wait_until(SOON, "10 succeeded runs", || {
        let cdata = cdata.clone();
        async move {
            Ok(runs(&cdata)
                .await?
                .iter()
                .filter(|r| r.state == "succeeded")
                .count()
                == 10)
        }
    })
    .await?;

    let all = runs(&cdata).await?;
    ensure!(all.len() == 10, "one run per target, got {}", all.len());
    for run in &all {
        let events = events(&cdata, run.id).await?;
        let leased = events.iter().filter(|e| e.kind == "leased").count();
        let succeeded = events.iter().filter(|e| e.kind == "run_succeeded").count();
        ensure!(
            leased == 1 && succeeded == 1,
            "run {} leased {leased}x, succeeded {succeeded}x: {:?}",
            run.id,
            events
                .iter()
                .map(|e| format!("{} {}: {}", e.kind, e.agent, e.message))
                .collect::<Vec<_>>()
        );
        ensure!(
            run.size_bytes == expected[&run.target].len() as u64,
            "run {} size",
            run.id
        );
    }
    // Each file landed exactly once in the archive, byte for byte, in its
    // target's directory, and every agent dropped its staging copy.
    let landed = archive_files(&cdata);
    ensure!(landed.len() == 10, "{} files landed, not 10", landed.len());
    for (path, bytes) in &landed {
        let target = path.split('/').nth(1).unwrap_or("");
        ensure!(
            expected.get(target) == Some(bytes),
            "{path} does not match its origin"
        );
    }
    let targets: HashSet<&str> = landed
        .iter()
        .map(|(p, _)| p.split('/').nth(1).unwrap_or(""))
        .collect();
    ensure!(targets.len() == 10, "a target landed twice: {landed:?}");
    for (adata, _) in &agents {
        ensure!(
            staged_files(adata).is_empty(),
            "{} kept a staging copy after landing",
            adata.display()
        );
    }
    let busy_agents: HashSet<&str> = all.iter().map(|r| r.agent.as_str()).collect();
    ensure!(
        busy_agents.len() >= 2,
        "work was not spread: {busy_agents:?} did everything"
    );
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "archive verify: {out}{err}");
    Ok(())
}

/// Waits for `run` to be leased and returns (agent, generation).
async fn leased(cdata: &std::path::Path, run_id: i64) -> Result<(String, u64)> {
    let r = wait_for_run(cdata, run_id, "leased", SOON).await?;
    Ok((r.agent, r.generation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_loses_its_run_and_is_refused_on_the_old_lease() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    // 1 MiB at 128 KiB/s: ~8 s per attempt, long enough to kill mid-way.
    origin.put("slow.bin", sample_bytes(1 << 20, 7));
    origin.throttle(128 * 1024);
    let mut procs = HashMap::new();
    for name in ["alpha", "beta"] {
        let adata = tmp.path().join(name);
        enroll_agent(&cdata, &adata, name).await?;
        procs.insert(name.to_string(), (adata.clone(), spawn_agent(&adata)?));
    }
    add_file_target(&cdata, "slow", &origin.url("slow.bin")).await?;
    let run_id = run_of(&cdata, "slow").await?;
    let (holder, generation) = leased(&cdata, run_id).await?;
    ensure!(generation == 1);
    // Let it stage some bytes, then pull the plug.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (holder_data, mut holder_proc) = procs.remove(&holder).expect("holder is one of ours");
    holder_proc.kill9();
    let killed_at = Instant::now();

    wait_until(SOON, "the run to move to the other agent", || {
        let cdata = cdata.clone();
        let holder = holder.clone();
        async move {
            let r = run(&cdata, run_id).await?;
            Ok(r.state == "leased" && r.agent != holder)
        }
    })
    .await?;
    let moved_after = killed_at.elapsed();
    // TTL plus one heartbeat, plus the sweep period and scheduling slack.
    let bound = TEST_LEASE_TTL + TEST_HEARTBEAT + Duration::from_secs(2);
    ensure!(
        moved_after <= bound,
        "reassigned after {moved_after:?}, bound {bound:?}"
    );
    let r = run(&cdata, run_id).await?;
    ensure!(
        r.generation == 2 && r.attempts == 1,
        "generation {} attempts {}",
        r.generation,
        r.attempts
    );

    // The lost device comes back and reports on its old lease: refused.
    ensure!(
        holder_data
            .join("leases")
            .join(format!("{run_id}.json"))
            .exists(),
        "the killed agent left no lease file to report on"
    );
    let _back = spawn_agent(&holder_data)?;
    wait_until(SOON, "the stale report to be refused", || {
        let cdata = cdata.clone();
        let holder = holder.clone();
        async move {
            Ok(events(&cdata, run_id)
                .await?
                .iter()
                .any(|e| e.kind == "refused" && e.agent == holder && e.message.contains("lease 1")))
        }
    })
    .await?;
    wait_until(SOON, "the returning agent to clean up", || {
        let gone = staged_files(&holder_data).is_empty()
            && !holder_data
                .join("leases")
                .join(format!("{run_id}.json"))
                .exists();
        async move { Ok(gone) }
    })
    .await?;
    origin.throttle(0);
    wait_for_run(&cdata, run_id, "succeeded", SOON).await?;
    let done = run(&cdata, run_id).await?;
    ensure!(done.agent != holder && done.generation == 2, "{done:?}");
    ensure!(done.size_bytes == 1 << 20);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_new_leases_within_a_heartbeat_and_resume_restarts_them() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    origin.put("a", sample_bytes(1000, 1));
    origin.put("b", sample_bytes(1000, 2));
    let adata = tmp.path().join("solo");
    enroll_agent(&cdata, &adata, "solo").await?;
    let _agent = spawn_agent(&adata)?;
    wait_until(SOON, "the agent to come online", || {
        let cdata = cdata.clone();
        async move {
            let agents = agents(&cdata).await?;
            Ok(agents.iter().any(|a| a.state == "online"))
        }
    })
    .await?;

    for agent in ["", "solo"] {
        let target = if agent.is_empty() { "a" } else { "b" };
        admin(&cdata)?
            .pause(ark_proto::PauseRequest {
                agent: agent.into(),
            })
            .await?;
        // One heartbeat for the pause to reach the agent's status file.
        wait_until(TEST_HEARTBEAT * 4, "the agent to see the pause", || {
            let paused = ark_agent::status::AgentStatus::load(&adata)
                .ok()
                .flatten()
                .is_some_and(|s| s.paused);
            async move { Ok(paused) }
        })
        .await?;
        add_file_target(&cdata, target, &origin.url(target)).await?;
        tokio::time::sleep(TEST_HEARTBEAT * 4).await;
        let queued = runs(&cdata).await?;
        let r = queued
            .iter()
            .find(|r| r.target == target)
            .expect("run queued");
        ensure!(
            r.state == "queued",
            "paused ({agent:?}) but the run is {}",
            r.state
        );

        admin(&cdata)?
            .resume(ark_proto::ResumeRequest {
                agent: agent.into(),
            })
            .await?;
        let id = r.id;
        wait_for_run(&cdata, id, "succeeded", SOON).await?;
    }
    // Pausing an agent that does not exist names the problem.
    let err = admin(&cdata)?
        .pause(ark_proto::PauseRequest {
            agent: "nobody".into(),
        })
        .await
        .expect_err("unknown agent paused");
    ensure!(
        err.code() == tonic::Code::NotFound && err.message().contains("nobody"),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commander_killed_while_runs_are_leased_keeps_state_and_honours_leases() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let SlowJob {
        cdata,
        listen,
        mut commander,
        agent,
        origin,
        run_id,
        ..
    } = SlowJob::start(tmp.path(), 1 << 20, 192 * 1024).await?;
    // Progress reports carry the declared size and the rate.
    wait_until(SOON, "a progress report with total and rate", || {
        let cdata = cdata.clone();
        async move {
            let r = run(&cdata, run_id).await?;
            Ok(r.bytes_total == 1 << 20 && r.bytes_per_second > 0 && r.bytes_done > 0)
        }
    })
    .await?;
    let leased_run = run(&cdata, run_id).await?;
    let (holder, generation) = (leased_run.agent, leased_run.generation);

    commander.kill9();
    // Down for less than a TTL; the agent keeps downloading meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _commander = spawn_commander(&cdata, &listen).await?;

    let targets = admin(&cdata)?
        .list_targets(ark_proto::ListTargetsRequest {})
        .await?
        .into_inner()
        .targets;
    ensure!(
        targets.len() == 1 && targets[0].name == "slow",
        "targets after restart: {targets:?}"
    );
    let after = run(&cdata, run_id).await?;
    ensure!(
        after.state == "leased" && after.agent == holder && after.generation == generation,
        "{after:?}"
    );

    wait_until(
        SOON,
        "the leased run to complete under its original lease",
        || {
            let cdata = cdata.clone();
            async move { Ok(run(&cdata, run_id).await?.state == "succeeded") }
        },
    )
    .await?;
    let done = run(&cdata, run_id).await?;
    ensure!(
        done.generation == generation && done.attempts == 0,
        "lease not honoured: {done:?}"
    );
    ensure!(events(&cdata, run_id)
        .await?
        .iter()
        .all(|e| e.kind != "lease_expired"));

    // And a lease whose agent is gone too expires normally after a restart.
    origin.put("second.bin", sample_bytes(1 << 20, 3));
    add_file_target(&cdata, "second", &origin.url("second.bin")).await?;
    let second = run_of(&cdata, "second").await?;
    leased(&cdata, second).await?;
    drop(agent);
    wait_until(SOON, "the orphaned lease to expire", || {
        let cdata = cdata.clone();
        async move {
            Ok(events(&cdata, second)
                .await?
                .iter()
                .any(|e| e.kind == "lease_expired"))
        }
    })
    .await?;
    ensure!(run(&cdata, second).await?.state == "queued");
    Ok(())
}

/// The aarch64 agent, under qemu-user, against this machine's commander.
/// Run by `scripts/test.sh`, which builds the agent and sets
/// `ARK_AGENT_BIN` and `ARK_AGENT_RUNNER=qemu-aarch64-static`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the aarch64 agent and qemu-user: run through scripts/test.sh"]
async fn aarch64_agent_under_qemu_enrols_heartbeats_and_completes_a_run() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    let bytes = sample_bytes(300_000, 5);
    origin.put("edge.bin", bytes.clone());
    let adata = tmp.path().join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let _agent = spawn_agent(&adata)?;
    wait_until(
        Duration::from_secs(60),
        "the emulated agent to heartbeat",
        || {
            let cdata = cdata.clone();
            async move {
                let agents = agents(&cdata).await?;
                Ok(agents
                    .iter()
                    .any(|a| a.state == "online" && a.telemetry.is_some()))
            }
        },
    )
    .await?;
    let agents = agents(&cdata).await?;
    let arch = agents[0].capabilities.clone().unwrap_or_default().arch;
    let expected = std::env::var("ARK_EXPECT_ARCH").unwrap_or_else(|_| "aarch64".into());
    ensure!(
        arch == expected,
        "agent reports arch {arch}, expected {expected}"
    );
    add_file_target(&cdata, "edge", &origin.url("edge.bin")).await?;
    wait_until(Duration::from_secs(60), "the run to succeed", || {
        let cdata = cdata.clone();
        async move {
            Ok(runs(&cdata)
                .await?
                .first()
                .is_some_and(|r| r.state == "succeeded"))
        }
    })
    .await?;
    let landed = archive_files(&cdata);
    ensure!(
        landed.len() == 1 && landed[0].1 == bytes,
        "landed bytes differ from the origin"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_a_short_outage_and_past_its_lease_keeps_its_bytes_to_resume() -> Result<()>
{
    let tmp = tempfile::tempdir()?;
    // ~16 s at this rate: the job cannot finish during the outage, nor
    // reach its first checkpoint (4 MiB).
    let mut job = SlowJob::start(tmp.path(), 2 << 20, 128 * 1024).await?;
    let lease_file = job.lease_file();
    ensure!(lease_file.exists());
    let (cdata, run_id) = (job.cdata.clone(), job.run_id);
    wait_until(SOON, "the agent to have bytes to keep", || {
        let cdata = cdata.clone();
        async move { Ok(run(&cdata, run_id).await?.bytes_done >= 256 << 10) }
    })
    .await?;

    job.commander.kill9();
    // Within the TTL the job keeps going...
    tokio::time::sleep(TEST_LEASE_TTL / 2).await;
    ensure!(
        lease_file.exists() && !staged_files(&job.adata).is_empty(),
        "job stopped during a short outage"
    );
    // ...past it, the agent gives the lease up but keeps the staged bytes:
    // a partition is not a failure of the job.
    wait_until(SOON, "the agent to give the lease up", || {
        let gone = !lease_file.exists();
        async move { Ok(gone) }
    })
    .await?;
    let log = job.agent.log_text();
    ensure!(log.contains("the lease ran out"), "{log}");
    ensure!(
        !staged_files(&job.adata).is_empty(),
        "the agent dropped its staged bytes when the lease ran out"
    );
    let before = job.origin.log().len();

    // When the commander returns, the run goes back to the agent that kept
    // its bytes, and the fetch resumes where they end.
    job.origin.throttle(0);
    let _commander = spawn_commander(&job.cdata, &job.listen).await?;
    wait_for_run(&cdata, run_id, "succeeded", SOON).await?;
    let done = run(&cdata, run_id).await?;
    ensure!(done.generation == 2 && done.attempts == 1, "{done:?}");
    let after = job.origin.log();
    let asked: Vec<_> = after[before..]
        .iter()
        .filter(|l| l.method == "GET" && l.path == "/slow.bin")
        .collect();
    // It resumes where the bytes it kept end, though the lease ran out
    // before any checkpoint: not from the start.
    let from = |l: &&Logged| -> Option<u64> {
        l.range
            .as_deref()?
            .strip_prefix("bytes=")?
            .trim_end_matches('-')
            .parse()
            .ok()
    };
    ensure!(
        !asked.is_empty()
            && asked
                .iter()
                .all(|l| from(l).is_some_and(|at| at >= 128 << 10)),
        "the fetch started over instead of resuming: {asked:?}"
    );
    wait_until(SOON, "the landed run's bytes to leave the agent", || {
        let empty = staged_files(&job.adata).is_empty();
        async move { Ok(empty) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_origin_costs_one_conditional_request_and_the_run_ends_unchanged() -> Result<()>
{
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    origin.put("feed.bin", sample_bytes(200_000, 1));
    let adata = tmp.path().join("only");
    enroll_agent(&cdata, &adata, "only").await?;
    let _agent = spawn_agent(&adata)?;
    add_file_target(&cdata, "feed", &origin.url("feed.bin")).await?;
    let first = run_of(&cdata, "feed").await?;
    let state_of = |id: i64| {
        let cdata = cdata.clone();
        async move { Ok::<_, anyhow::Error>(run(&cdata, id).await?.state) }
    };
    wait_until(SOON, "the first harvest", || async {
        Ok(state_of(first).await? == "succeeded")
    })
    .await?;

    let before = origin.log().len();
    let again = run_now(&cdata, "feed").await?;
    wait_until(SOON, "the second run to end", || async {
        Ok(state_of(again).await? != "queued" && state_of(again).await? != "leased")
    })
    .await?;
    ensure!(
        state_of(again).await? == "unchanged",
        "second run: {}",
        state_of(again).await?
    );
    let log = origin.log();
    ensure!(
        log.len() == before + 1,
        "{} requests for an unchanged origin",
        log.len() - before
    );
    ensure!(
        log[before].conditional && log[before].status == 304,
        "{:?}",
        log[before]
    );
    ensure!(
        staged_files(&adata).is_empty() && archive_files(&cdata).len() == 1,
        "an unchanged run staged or landed something"
    );
    let status = admin(&cdata)?
        .status(ark_proto::StatusRequest {})
        .await?
        .into_inner();
    ensure!(
        status.runs_unchanged == 1 && status.runs_succeeded == 1,
        "{status:?}"
    );

    // One byte flipped at the origin is a new version beside the old one.
    let mut changed = sample_bytes(200_000, 1);
    changed[123_457] ^= 0x20;
    origin.put("feed.bin", changed.clone());
    let third = run_now(&cdata, "feed").await?;
    wait_until(SOON, "the third run", || async {
        Ok(state_of(third).await? == "succeeded")
    })
    .await?;
    let landed = archive_files(&cdata);
    ensure!(
        landed.len() == 2
            && landed.iter().any(|(_, b)| *b == sample_bytes(200_000, 1))
            && landed.iter().any(|(_, b)| *b == changed),
        "expected the old and the new version side by side: {:?}",
        landed.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    // The agent's registry remembers both harvests and where they landed.
    let out = agent_command()?
        .arg("--data")
        .arg(&adata)
        .args(["harvests", "--json"])
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let harvests: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    let mut registered: Vec<&str> = harvests
        .iter()
        .filter_map(|h| h["landed_path"].as_str())
        .collect();
    registered.sort();
    let mut in_archive: Vec<&str> = landed.iter().map(|(p, _)| p.as_str()).collect();
    in_archive.sort();
    ensure!(
        registered == in_archive,
        "registry {registered:?} vs archive {in_archive:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_download_resumes_from_verified_bytes_and_refetches_a_flipped_group(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let size = 12 << 20;
    let mut job = SlowJob::start(tmp.path(), size, 4 << 20).await?;
    // Past the first durable checkpoint (4 MiB) before the plug is pulled.
    wait_until(SOON, "6 MiB on disk", || {
        let done = ark_agent::status::AgentStatus::load(&job.adata)
            .ok()
            .flatten()
            .and_then(|s| s.jobs.first().map(|j| j.bytes_done))
            .unwrap_or(0);
        async move { Ok(done >= 6 << 20) }
    })
    .await?;
    job.agent.kill9();
    let part = staged_files(&job.adata);
    ensure!(part.len() == 1, "no staged file after the kill");
    let part_path = job.adata.join("staging").join(&part[0].0);
    // A byte rots on the card while the agent is down.
    let mut on_disk = std::fs::read(&part_path)?;
    on_disk[(1 << 20) + 77] ^= 0x01;
    std::fs::write(&part_path, on_disk)?;
    let before = job.origin.log().len();
    job.origin.throttle(0);
    job.agent = spawn_agent(&job.adata)?;

    let (cdata, run_id) = (job.cdata.clone(), job.run_id);
    wait_for_run(&cdata, run_id, "succeeded", SOON).await?;
    let done = run(&cdata, run_id).await?;
    ensure!(
        done.generation == 1 && done.attempts == 0,
        "the lease was not honoured across the restart: {done:?}"
    );
    let expected = sample_bytes(size, 9);
    ensure!(
        done.blake3 == blake3::hash(&expected).to_hex().as_str(),
        "wrong root reported"
    );
    // (Requests for published digests beside the file are not fetches.)
    let resumed: Vec<_> = job.origin.log()[before..]
        .iter()
        .filter(|l| {
            !l.path.ends_with(".meta4") && !l.path.ends_with(".sha256") && !l.path.ends_with(".md5")
        })
        .map(|l| l.range.clone())
        .collect();
    ensure!(
        resumed == vec![Some(format!("bytes={}-", 1 << 20))],
        "expected one range request from the flipped group, got {resumed:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_bandwidth_cap_from_the_commander_holds_its_run_down() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    let origin = Origin::start().await?;
    origin.put("big.iso", sample_bytes(400_000, 6));
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    let (ok, out, err) = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "file",
            &origin.url("big.iso"),
            "--name",
            "capped",
            "--bandwidth",
            "200KB/s",
        ],
    )?;
    ensure!(ok, "{out}{err}");
    let (_, listing, _) = commander_cli(&cdata, &["target", "ls", "--json"])?;
    let targets: Vec<serde_json::Value> = serde_json::from_str(&listing)?;
    ensure!(targets[0]["bandwidth_cap"] == 200_000, "{listing}");
    let id = run_of(&cdata, "capped").await?;
    let done = wait_for_run(&cdata, id, "succeeded", SOON).await?;
    let leased_at = events(&cdata, id)
        .await?
        .iter()
        .find(|e| e.kind == "leased")
        .map(|e| e.at_ms)
        .unwrap_or(done.created_at_ms);
    // 400 kB at 200 kB/s from an empty bucket: at least ~2 s of fetching.
    let took = done.finished_at_ms - leased_at;
    ensure!(
        took >= 1_800,
        "a 200 kB/s cap let 400 kB through in {took} ms"
    );
    let (ok, _, err) = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "file",
            &origin.url("x"),
            "--bandwidth",
            "fast",
        ],
    )?;
    ensure!(!ok && err.contains("not a rate"), "{err}");
    Ok(())
}

/// Work starts at once (issue 14): with a 30 s heartbeat, a run that is
/// queued (a new target, then `run-now` twice) is leased to the idle agent
/// within a few seconds, not at its next heartbeat, and a pause and resume
/// reach it as fast: the commander wakes it over its `Watch` stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_wakes_an_idle_agent_before_its_next_heartbeat() -> Result<()> {
    const HEARTBEAT: Duration = Duration::from_secs(30);
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    std::fs::create_dir_all(&cdata)?;
    std::fs::write(
        cdata.join("commander.toml"),
        "lease-ttl = \"120s\"\nheartbeat = \"30s\"\nhttp = \"off\"\n",
    )?;
    let _commander = start_commander(&cdata, "127.0.0.1:0", &[], &[]).await?;
    let origin = Origin::start().await?;
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "idle").await?;
    let _agent = spawn_agent(&adata)?;
    wait_for_agents_online(&cdata, 1).await?;
    // Its first heartbeat is behind it; the next is 30 s away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    origin.put("f", sample_bytes(20_000, 1));
    add_file_target(&cdata, "f", &origin.url("f")).await?;
    let mut id = run_of(&cdata, "f").await?;
    for round in 0..3 {
        let done = wait_for_run(&cdata, id, "succeeded", HEARTBEAT / 2).await?;
        let queued = event_of(&cdata, id, "queued").await?;
        let leased = event_of(&cdata, id, "leased").await?;
        let waited = leased.at_ms - queued.at_ms;
        ensure!(
            done.agent == "idle" && waited < 5_000,
            "round {round}: leased {waited} ms after it was queued (heartbeat 30 s)"
        );
        origin.put("f", sample_bytes(20_000, round + 2));
        id = run_now(&cdata, "f").await?;
    }
    // A pause and a resume reach it at once too, not 30 s later.
    for (verb, paused) in [("pause", true), ("resume", false)] {
        let (ok, _, err) = commander_cli(&cdata, &[verb])?;
        ensure!(ok, "{err}");
        wait_until(HEARTBEAT / 6, &format!("the agent to hear {verb}"), || {
            let adata = adata.clone();
            async move {
                let status = ark_agent::status::AgentStatus::load(&adata)?;
                Ok(status.is_some_and(|s| s.paused == paused))
            }
        })
        .await?;
    }
    Ok(())
}
