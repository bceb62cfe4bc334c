//! Several hosts for real (issue 15): the commander, each agent and the
//! origin in network namespaces of their own, joined by a switch
//! (`ark_tests::lan`), so a test cuts one device's link and nothing else.
//! Where the machine refuses namespaces (not root, no `ip netns`), the tests
//! print why and skip; on these machines they run.
//!
//! - An agent cut off in the middle of a download and again in the middle
//!   of its upload resumes the download where its bytes end and the upload
//!   from the last group the commander verified; the version lands once.
//! - The commander cut off for two lease TTLs: the agents' leases run out,
//!   and the runs land once when it is back; an agent whose run went to
//!   another agent meanwhile is fenced and drops its copy.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ark_tests::lan::{Device, Lan};
use ark_tests::*;

/// Size of the file the cut test fetches (`ARK_PARTITION_MIB`, default
/// 500 MiB as the issue asks).
fn size() -> u64 {
    std::env::var("ARK_PARTITION_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
        << 20
}

/// One chunk group: what a resume may fetch or send again.
const GROUP: u64 = 16 * 1024;
/// How long each cut lasts.
const CUT: Duration = Duration::from_secs(30);
/// The agent's link while it fetches and uploads: slow enough that a cut
/// falls in the middle of each (on a debug build on a shared machine).
const LINK: &str = "400mbit";

/// The switch, or why this machine cannot have one.
fn lan(tag: &str) -> Option<Lan> {
    match Lan::create(tag) {
        Ok(lan) => Some(lan),
        Err(e) => {
            eprintln!("SKIP: cannot build a network of namespaces ({e:#}): this test needs root, `ip netns` and bridges");
            None
        }
    }
}

/// The commander on `device`, its leases lasting `lease_ttl`.
async fn commander_on(device: &Device, data: &Path, lease_ttl: Duration) -> Result<Proc> {
    write_commander_config_ttl(data, lease_ttl, "")?;
    let listen = format!("{}:0", device.ip);
    start_commander_on(Some(device), data, &listen, &[], &[]).await
}

/// The origin: nginx on its own device, serving `root`, logging every
/// request's range (`ranges.log`: method, path, status, bytes sent, Range).
async fn origin_on(device: &Device, dir: &Path, root: &Path) -> Result<Nginx> {
    let addr = format!("{}:8080", device.ip).parse()?;
    let log = format!("access_log {}/ranges.log ark;", dir.display());
    Nginx::start_in(dir, root, &log, addr, &device.ns).await
}

/// One request nginx logged: who asked, the answer's status, the bytes
/// sent, the Range asked for ("-": none).
#[derive(Debug, Clone)]
struct Asked {
    from: String,
    status: u16,
    sent: u64,
    range: String,
}

impl Asked {
    /// Where a range request started; 0 for a whole-body request.
    fn start(&self) -> u64 {
        self.range
            .trim_start_matches("bytes=")
            .trim_end_matches('-')
            .parse()
            .unwrap_or(0)
    }
}

/// Every request nginx logged for `path`, in the order they were asked.
/// nginx logs a request when it ends (a cut one late, once its connection
/// dies), so they are ordered by where they start: each resume of one
/// fetch asks for bytes after the last.
fn requests_for(nginx: &Nginx, path: &str) -> Vec<Asked> {
    let mut asked: Vec<Asked> = std::fs::read_to_string(nginx.dir.join("ranges.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(6, ' ');
            let (from, _, uri) = (parts.next()?, parts.next()?, parts.next()?);
            let asked = Asked {
                from: from.to_string(),
                status: parts.next()?.parse().ok()?,
                sent: parts.next()?.parse().ok()?,
                range: parts.next()?.trim_matches('"').to_string(),
            };
            (uri == path).then_some(asked)
        })
        .collect();
    asked.sort_by_key(Asked::start);
    asked
}

/// The size of the largest quarantined upload of the commander (an upload
/// in flight).
fn uploading(cdata: &Path) -> u64 {
    let dir = cdata.join("archive").join(".ark").join("quarantine");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_mid_download_and_mid_upload_resumes_both_and_lands_once() -> Result<()> {
    let Some(lan) = lan("cut") else {
        return Ok(());
    };
    let (commander_dev, origin_dev, pi_dev) = (
        lan.device("commander", 2)?,
        lan.device("origin", 3)?,
        lan.device("pi", 10)?,
    );
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("www");
    std::fs::create_dir_all(&root)?;
    let size = size();
    write_sample(&root.join("big.bin"), size)?;
    let origin = origin_on(&origin_dev, &tmp.path().join("nginx"), &root).await?;

    // Leases outlive a cut, so the agent keeps its job through it.
    let cdata = tmp.path().join("commander");
    let commander = commander_on(&commander_dev, &cdata, Duration::from_secs(60)).await?;
    let adata = tmp.path().join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let shaped = pi_dev.throttle(LINK, 50)?;
    let agent = spawn_agent_on(Some(&pi_dev), &adata, &[])?;
    let url = format!("http://{}/big.bin", origin.addr);
    add_file_target(&cdata, "big", &url).await?;
    let id = run_of(&cdata, "big").await?;

    // Cut in the middle of the download.
    wait_until(
        Duration::from_secs(120),
        "the download to pass 30 %",
        || async { Ok(run(&cdata, id).await?.bytes_done > size * 3 / 10) },
    )
    .await
    .with_context(|| agent.log_text())?;
    let had = run(&cdata, id).await?.bytes_done;
    pi_dev.cut()?;
    let cut_at = Instant::now();
    tokio::time::sleep(CUT).await;
    pi_dev.mend()?;
    eprintln!("download cut for {:?} ({shaped})", cut_at.elapsed());

    // Cut in the middle of the upload.
    wait_until(
        Duration::from_secs(180),
        "the upload to pass 30 %",
        || async { Ok(uploading(&cdata) > size * 3 / 10) },
    )
    .await
    .with_context(|| agent.log_text())?;
    pi_dev.cut()?;
    tokio::time::sleep(CUT).await;
    pi_dev.mend()?;

    wait_for_run(&cdata, id, "succeeded", Duration::from_secs(240))
        .await
        .with_context(|| agent.log_text())?;
    let landed = archive_ls(&cdata)?;
    ensure!(landed.len() == 1, "landed more than once: {landed:?}");

    // The download: every request after the first asked for the bytes
    // after those the agent already had, never from the start.
    let asked = requests_for(&origin, "/big.bin");
    eprintln!("origin requests: {asked:?}");
    ensure!(asked.first().is_some_and(|a| a.range == "-"), "{asked:?}");
    ensure!(
        asked[1..].iter().all(|a| a.status == 206 && a.start() > 0),
        "a resume started over: {asked:?}\n{}",
        agent.log_text()
    );
    // What the agent had reported before the cut is a floor of what it had
    // received: it resumed at or after it, less than one chunk group back.
    let resumed_at = asked[1].start();
    ensure!(
        resumed_at + GROUP >= had,
        "resumed at {resumed_at}, but {had} bytes had arrived before the cut"
    );
    // The upload: the commander kept what it verified and the agent
    // resumed from there.
    let events = events(&cdata, id).await?;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    eprintln!("events: {kinds:?}");
    let kept = events
        .iter()
        .find(|e| e.kind == "upload_interrupted")
        .and_then(|e| {
            e.message
                .split(", ")
                .last()?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .with_context(|| {
            let said: Vec<String> = events
                .iter()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .collect();
            format!(
                "no interrupted upload recorded: {said:#?}\nagent log:\n{}\ncommander log:\n{}",
                agent.log_text(),
                commander.log_text()
            )
        })?;
    let log = agent.log_text();
    let upload_resumed: u64 = log
        .lines()
        .find_map(|l| {
            l.split("resuming the upload at byte ")
                .nth(1)?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| format!("the upload did not resume:\n{log}"))?;
    ensure!(
        upload_resumed > 0 && upload_resumed <= kept && upload_resumed + GROUP >= kept,
        "the upload resumed at {upload_resumed}; the commander kept {kept} verified bytes"
    );
    ensure!(quarantined(&cdata).is_empty(), "{:?}", quarantined(&cdata));
    Ok(())
}

/// An agent of the partition test: its device, data dir and process.
struct Member {
    name: &'static str,
    dev: Device,
    data: std::path::PathBuf,
    proc: Proc,
}

/// The staged files (`*.part`) in an agent's staging dir.
fn staged_parts(agent_data: &Path) -> Vec<String> {
    std::fs::read_dir(agent_data.join("staging"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".part"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commander_cut_off_for_two_lease_ttls_gets_every_run_landed_once() -> Result<()> {
    let Some(lan) = lan("away") else {
        return Ok(());
    };
    let (commander_dev, origin_dev) = (lan.device("commander", 2)?, lan.device("origin", 3)?);
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("www");
    std::fs::create_dir_all(&root)?;
    let size = 96u64 << 20;
    write_sample(&root.join("one.bin"), size)?;
    write_sample(&root.join("two.bin"), size + 1)?;
    let origin = origin_on(&origin_dev, &tmp.path().join("nginx"), &root).await?;
    let cdata = tmp.path().join("commander");
    let _commander = commander_on(&commander_dev, &cdata, TEST_LEASE_TTL).await?;

    // Two agents, one job each, on links slow enough that both are mid-way
    // when the commander goes away.
    let mut members = Vec::new();
    for (name, n) in [("pi", 10), ("laptop", 11)] {
        let dev = lan.device(name, n)?;
        let data = tmp.path().join(name);
        enroll_agent(&cdata, &data, name).await?;
        std::fs::write(data.join(ark_agent::config::CONFIG_FILE), "max-jobs = 1\n")?;
        dev.throttle("80mbit", 50)?;
        let proc = spawn_agent_on(Some(&dev), &data, &[])?;
        members.push(Member {
            name,
            dev,
            data,
            proc,
        });
    }
    wait_for_agents_online(&cdata, 2).await?;
    for name in ["one", "two"] {
        add_file_target(&cdata, name, &format!("http://{}/{name}.bin", origin.addr)).await?;
    }
    let ids = [run_of(&cdata, "one").await?, run_of(&cdata, "two").await?];
    wait_until(
        Duration::from_secs(60),
        "both runs a fifth fetched",
        || async {
            let mut ok = true;
            for id in ids {
                let r = run(&cdata, id).await?;
                ok &= r.state == "leased" && r.bytes_done > size / 5;
            }
            Ok(ok)
        },
    )
    .await?;
    let holder = |r: &ark_proto::RunInfo| members.iter().position(|m| m.name == r.agent);
    let first = run(&cdata, ids[0]).await?;
    let (a, b) = match holder(&first) {
        Some(0) => (0, 1),
        Some(_) => (1, 0),
        None => anyhow::bail!("run one is held by {:?}", first.agent),
    };
    ensure!(
        holder(&run(&cdata, ids[1]).await?) == Some(b),
        "each agent should hold one run"
    );

    // The commander away for two lease TTLs; B away too, and longer: its
    // run goes to A meanwhile.
    commander_dev.cut()?;
    members[b].dev.cut()?;
    tokio::time::sleep(TEST_LEASE_TTL * 2 + Duration::from_secs(1)).await;
    ensure!(
        staged_parts(&members[a].data).len() == 1,
        "A dropped its bytes when its lease ran out: {:?}",
        staged_parts(&members[a].data)
    );
    commander_dev.mend()?;

    // A gets its own run back and resumes it; then B's, from the start.
    wait_for_run(&cdata, ids[0], "succeeded", Duration::from_secs(120))
        .await
        .with_context(|| members[a].proc.log_text())?;
    wait_until(
        Duration::from_secs(60),
        "run two to be leased to A",
        || async {
            let r = run(&cdata, ids[1]).await?;
            Ok(r.state == "leased" && r.agent == members[a].name)
        },
    )
    .await?;

    // B comes back: its run went to A, so it is fenced and drops its bytes.
    ensure!(
        !staged_parts(&members[b].data).is_empty(),
        "B kept nothing to drop"
    );
    members[b].dev.mend()?;
    wait_until(
        Duration::from_secs(30),
        "B to drop its kept bytes",
        || async { Ok(staged_parts(&members[b].data).is_empty()) },
    )
    .await
    .with_context(|| members[b].proc.log_text())?;
    ensure!(members[b]
        .proc
        .log_text()
        .contains("dropping its kept bytes"));
    wait_for_run(&cdata, ids[1], "succeeded", Duration::from_secs(120)).await?;

    // Each lands once; A resumed run one (never fetching it from the start
    // twice) and fetched run two whole.
    let landed = archive_ls(&cdata)?;
    ensure!(landed.len() == 2, "{landed:?}");
    let a_ip = members[a].dev.ip.to_string();
    let one = requests_for(&origin, "/one.bin");
    eprintln!("run one: {one:?}");
    ensure!(
        one.iter().filter(|r| r.start() == 0).count() == 1
            && one.iter().any(|r| r.from == a_ip && r.start() > 0),
        "run one was not resumed from A's kept bytes: {one:?}\n{}",
        members[a].proc.log_text()
    );
    let served: u64 = one.iter().map(|r| r.sent).sum();
    eprintln!("run one: {served} bytes served for {size}");
    let events = events(&cdata, ids[0]).await?;
    ensure!(
        events
            .iter()
            .any(|e| e.kind == "placed" && e.message.contains("kept this run's staged bytes")),
        "run one was not placed by its kept bytes: {:?}",
        events.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    Ok(())
}

/// Frames lost on the lossy agent's link, each way (netem's `loss`).
const LOSS: f64 = 0.30;
/// Delay of every frame on it, each way (netem's `delay`).
const DELAY_MS: u32 = 300;

/// One agent's link loses 30 % of its frames and delays the rest by 300 ms
/// (a userspace link of two TAP devices: this kernel has no netem). Its
/// jobs finish on it or move to the others when its lease runs out, each
/// lands once and verifies; the other agents' heartbeats go on as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_lossy_slow_link_finishes_or_hands_over_its_jobs_and_the_others_beat_on(
) -> Result<()> {
    let Some(lan) = lan("lossy") else {
        return Ok(());
    };
    let (commander_dev, origin_dev) = (lan.device("commander", 2)?, lan.device("origin", 3)?);
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("www");
    std::fs::create_dir_all(&root)?;
    let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        write_sample(&root.join(format!("{name}.bin")), (3 << 20) + i as u64)?;
    }
    let origin = origin_on(&origin_dev, &tmp.path().join("nginx"), &root).await?;
    let cdata = tmp.path().join("commander");
    let _commander = commander_on(&commander_dev, &cdata, Duration::from_secs(10)).await?;
    let add = |name: &str| {
        let (cdata, url) = (cdata.clone(), format!("http://{}/{name}.bin", origin.addr));
        let name = name.to_string();
        async move { add_file_target(&cdata, &name, &url).await }
    };

    // The lossy agent alone first, so that it takes jobs.
    let seed = std::process::id() as u64;
    let wifi = lan.lossy_device("wifi", 10, LOSS, DELAY_MS, seed)?;
    let wifi_data = tmp.path().join("wifi");
    enroll_agent(&cdata, &wifi_data, "wifi").await?;
    std::fs::write(
        wifi_data.join(ark_agent::config::CONFIG_FILE),
        "max-jobs = 2\n",
    )?;
    let wifi_agent = spawn_agent_on(Some(&wifi), &wifi_data, &[])?;
    wait_for_agents_online(&cdata, 1)
        .await
        .with_context(|| wifi_agent.log_text())?;
    for name in &names[..2] {
        add(name).await?;
    }
    let mut ids = Vec::new();
    for name in &names[..2] {
        ids.push(run_of(&cdata, name).await?);
    }
    wait_until(
        Duration::from_secs(60),
        "the lossy agent to hold both runs",
        || async {
            let mut held = true;
            for id in &ids {
                held &= run(&cdata, *id).await?.agent == "wifi";
            }
            Ok(held)
        },
    )
    .await
    .with_context(|| wifi_agent.log_text())?;

    // Then two agents on good links, and more work.
    let mut others = Vec::new();
    for (name, n) in [("pi", 11), ("laptop", 12)] {
        let dev = lan.device(name, n)?;
        let data = tmp.path().join(name);
        enroll_agent(&cdata, &data, name).await?;
        let proc = spawn_agent_on(Some(&dev), &data, &[])?;
        others.push((name, dev, proc));
    }
    wait_until(
        Duration::from_secs(30),
        "the good agents online",
        || async {
            let online = agents(&cdata).await?;
            Ok(["pi", "laptop"]
                .iter()
                .all(|n| online.iter().any(|a| a.name == *n && a.state == "online")))
        },
    )
    .await?;
    for name in &names[2..] {
        add(name).await?;
        ids.push(run_of(&cdata, name).await?);
    }

    // Until every run ends: the good agents' heartbeats, sampled.
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    loop {
        let listed = agents(&cdata).await?;
        // Taken after the listing: a heartbeat recorded meanwhile is not
        // in the future.
        let now = ark_core::unix_ms();
        for a in listed {
            if a.name != "wifi" && a.last_seen_ms > 0 {
                worst = worst.max(Duration::from_millis(
                    now.saturating_sub(a.last_seen_ms).max(0) as u64,
                ));
            }
        }
        let mut open = 0;
        for id in &ids {
            let state = run(&cdata, *id).await?.state;
            ensure!(
                state != "failed",
                "run {id} failed: {:?}",
                run(&cdata, *id).await?
            );
            open += usize::from(state != "succeeded");
        }
        if open == 0 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "{open} runs still open after 300 s\n{}",
            wifi_agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = started.elapsed();

    // Each landed once, and verifies.
    let landed = archive_ls(&cdata)?;
    ensure!(landed.len() == names.len(), "{landed:?}");
    let (ok, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(ok, "archive verify: {out}{err}");
    // Where the lossy agent's runs ended.
    let mut on_wifi = 0;
    for id in &ids[..2] {
        on_wifi += usize::from(run(&cdata, *id).await?.agent == "wifi");
    }
    let (forwarded, dropped) = wifi.lossy_counts().unwrap_or_default();
    eprintln!(
        "all {} runs landed in {took:?}; of the lossy agent's 2, {on_wifi} finished on it, {} moved; \
         its link forwarded {forwarded} frames and dropped {dropped} ({:.0} %); \
         the good agents' longest silence {worst:?}",
        ids.len(),
        2 - on_wifi,
        100.0 * dropped as f64 / (forwarded + dropped).max(1) as f64
    );
    ensure!(
        dropped > 0 && forwarded > 0,
        "the lossy link carried nothing ({forwarded} forwarded, {dropped} dropped)"
    );
    // Heartbeats every 500 ms: a good agent is never silent for a lease
    // TTL's worth of them, whatever the lossy one suffers.
    ensure!(
        worst < Duration::from_secs(3),
        "a good agent went {worst:?} without a heartbeat"
    );
    Ok(())
}
