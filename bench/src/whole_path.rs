//! `whole-path [SIZE_MIB] [RUNS]`: the whole path a user waits for (issue
//! 14). A SIZE_MIB file (default 2048) goes from nginx to landed in the
//! archive through a real release commander and a real release agent over
//! mutual TLS on loopback (`run-now` → leased → fetched, hashed and staged
//! → uploaded, verified, landed), against the two steps a user would
//! otherwise take: `curl -o` into a download directory, then `rsync
//! --fsync` over SSH (a real sshd on 127.0.0.1) into the NAS directory.
//!
//! Every trial starts from the same state: outputs removed, the page cache's
//! memory warmed (see `warm_page_cache`), the source read into the page
//! cache, `sync`. Each Ark trial gets a fresh commander and
//! agent (a second harvest of the same bytes would be deduplicated, not
//! uploaded); their start and enrolment are not timed. The order
//! alternates; figures are medians of RUNS (default 3). Every landed or
//! copied file is checked against the source's BLAKE3.
//!
//! One more Ark trial, not timed, goes through a counting TCP relay
//! between agent and commander: the bytes on the wire both ways against the
//! file's size are TLS + HTTP/2 + gRPC framing (and heartbeats, progress
//! reports, `Have`, the manifest), as a percentage.
//!
//! `whole-path --ark-only [SIZE_MIB] [RUNS]` runs Ark's trials alone and
//! prints each (for an A/B of one change).
//!
//! Prints a Markdown section body for bench/RESULTS.md; set
//! ARK_COMMANDER_BIN and ARK_AGENT_BIN to the release binaries.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use ark_tests::sshd::Sshd;
use ark_tests::*;

const MIB: u64 = 1 << 20;

/// One Ark trial: wall from `run-now` to the run's end (the commander's
/// `finished_at`, same clock, no polling delay); when the agent's fetch
/// ended (its log line after the fetch, hash and staging); and the swarm's
/// events on the run as (kind, ms after `run-now`).
struct ArkTrial {
    wall: f64,
    fetched: f64,
    events: Vec<(String, i64)>,
    /// Through a counting relay: bytes agent → commander and back.
    wire: Option<(u64, u64)>,
    /// CPU seconds (user + system) the agent and the commander used in all.
    cpu: (f64, f64),
    /// Page faults (minor) the agent and the commander took in all.
    faults: (u64, u64),
}

/// CPU seconds (user + system) process `pid` has used so far, from
/// `/proc/PID/stat` (in clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let ticks = |i| stat_field(pid, i) as f64;
    (ticks(11) + ticks(12)) / 100.0
}

/// Minor page faults process `pid` has taken so far (`/proc/PID/stat`).
fn page_faults(pid: u32) -> u64 {
    stat_field(pid, 7)
}

/// Field `i` of `/proc/PID/stat` counted after the command's closing
/// parenthesis (state is 0, minflt 7, utime and stime 11 and 12); 0 when
/// unreadable.
fn stat_field(pid: u32, i: usize) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .nth(i)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// What the agent logs once a body is fetched, hashed and staged (it then
/// looks for published digests, which nginx here has none of).
const FETCHED_LINE: &str = "the origin publishes no digest";

/// One manual trial: the `curl -o` leg and the `rsync` leg.
struct ManualTrial {
    curl: f64,
    rsync: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--link") {
        args.next();
        let rate = args.next().context("--link RATE (tc syntax, e.g. 1gbit)")?;
        let size_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
        let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
        return link_main(&rate, size_mib, runs).await;
    }
    if args.peek().is_some_and(|a| a == "--ark-only") {
        args.next();
        let size_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2048);
        let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
        return ark_only_main(size_mib, runs).await;
    }
    let size_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2048);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let tmp = tempfile::tempdir()?;
    let (www, source, expected) = sample(tmp.path(), size_mib)?;
    let nginx = Nginx::start(&tmp.path().join("nginx"), &www).await?;
    let url = format!("http://{}/big.bin", nginx.addr);
    let sshd = Sshd::start(&tmp.path().join("sshd")).await?;
    // Either way takes two copies of the file in the page cache (staged and
    // landed, or downloaded and copied), and a little more.
    let warm = 3 * size_mib * MIB;

    let (mut ark, mut manual) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let ark_first = run % 2 == 0;
        for ark_turn in [ark_first, !ark_first] {
            settle(&source, tmp.path(), warm)?;
            if ark_turn {
                ark.push(ark_trial(tmp.path(), &url, &expected, false, None).await?);
            } else {
                manual.push(manual_trial(tmp.path(), &url, &sshd, &expected)?);
            }
        }
        eprintln!("whole-path: run {}/{runs} done", run + 1);
    }

    settle(&source, tmp.path(), warm)?;
    let wire = ark_trial(tmp.path(), &url, &expected, true, None)
        .await?
        .wire;
    // The disk on its own, in the same run: what the upload leg is held to.
    let mut disks = Vec::new();
    for _ in 0..3 {
        settle(&source, tmp.path(), warm)?;
        disks.push(disk_trial(tmp.path(), &source)?);
    }
    let disk = median(disks.clone());
    let ark_wall = median(ark.iter().map(|t| t.wall).collect());
    let ark_fetch = median(ark.iter().map(|t| t.fetched).collect());
    let ark_upload = median(ark.iter().map(|t| t.wall - t.fetched).collect());
    let curl = median(manual.iter().map(|t| t.curl).collect());
    let rsync = median(manual.iter().map(|t| t.rsync).collect());
    let both = median(manual.iter().map(|t| t.curl + t.rsync).collect());
    let rate = |s: f64| size_mib as f64 / s;
    println!("| path | includes | wall (median) | rate | vs the two steps |");
    println!("|---|---|---:|---:|---:|");
    println!(
        "| `curl -o` (step 1) | origin → download dir; no fsync | {curl:.2} s | {:.0} MiB/s | {:.2}× |",
        rate(curl),
        curl / both
    );
    println!(
        "| `rsync --fsync` over SSH (step 2) | download dir → NAS dir, fsync | {rsync:.2} s | {:.0} MiB/s | {:.2}× |",
        rate(rsync),
        rsync / both
    );
    println!(
        "| the two steps | | {both:.2} s | {:.0} MiB/s | 1.00× |",
        rate(both)
    );
    println!(
        "| Ark, `run-now` → fetched (agent log) | lease, fetch + hash + stage (fsync) | {ark_fetch:.2} s | {:.0} MiB/s | {:.2}× |",
        rate(ark_fetch),
        ark_fetch / both
    );
    println!(
        "| Ark, fetched → landed | upload over mTLS gRPC, verify every group, land (fsync, rename, ledger) | {ark_upload:.2} s | {:.0} MiB/s | {:.2}× ({:.2}× the rsync leg) |",
        rate(ark_upload),
        ark_upload / both,
        ark_upload / rsync
    );
    println!(
        "| **Ark: `run-now` → landed** | all of it | {ark_wall:.2} s | {:.0} MiB/s | {:.2}× |",
        rate(ark_wall),
        ark_wall / both
    );
    println!();
    let samples = |f: fn(&ArkTrial) -> f64| list(&ark.iter().map(f).collect::<Vec<_>>());
    println!(
        "Samples (s): ark {}; ark fetched {}; curl {}; rsync {}.",
        samples(|t| t.wall),
        samples(|t| t.fetched),
        list(&manual.iter().map(|t| t.curl).collect::<Vec<_>>()),
        list(&manual.iter().map(|t| t.rsync).collect::<Vec<_>>()),
    );
    println!();
    if let Some((up, down)) = wire {
        let size = size_mib * MIB;
        println!(
            "On the wire (one more Ark run through a counting TCP relay between agent and \
             commander, not timed): {up} bytes agent → commander for the {size}-byte file \
             (**{:+.2} %**: TLS records, HTTP/2 and gRPC framing, the outboard, heartbeats, \
             progress reports, `Have` and the manifest), {down} bytes back.",
            100.0 * (up as f64 / size as f64 - 1.0)
        );
        println!();
    }
    let (agent_cpu, commander_cpu) = (
        median(ark.iter().map(|t| t.cpu.0).collect()),
        median(ark.iter().map(|t| t.cpu.1).collect()),
    );
    println!(
        "CPU (user + system, median of the Ark runs, start-up and enrolment included): agent \
         {agent_cpu:.2} s, commander {commander_cpu:.2} s, together {:.2} s over {ark_wall:.2} s \
         of wall on {} cores.",
        agent_cpu + commander_cpu,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("The swarm's events on each Ark run, ms after `run-now`:");
    println!();
    for (i, trial) in ark.iter().enumerate() {
        let line = trial
            .events
            .iter()
            .map(|(kind, ms)| format!("{kind} {ms}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "- run {}: {line}; fetched {:.0} (agent log); ended {:.0}",
            i + 1,
            trial.fetched * 1000.0,
            trial.wall * 1000.0
        );
    }
    println!();
    println!(
        "The disk, in the same run: `dd bs=1M conv=fsync` of the same {size_mib} MiB (from the \
         page cache, after the same warm-up and `sync`) took {disk:.2} s (median of 3: {:.0} \
         MiB/s; samples {}). The link is loopback, faster than the disk, so the disk is the \
         slower of the two: the upload + verify + land leg ran at **{:.0} %** of it.",
        rate(disk),
        list(&disks),
        100.0 * disk / ark_upload
    );
    Ok(())
}

/// `--ark-only`: Ark's trials alone, one line each (wall, the fetch, the
/// upload leg, the two processes' CPU and page faults), for an A/B of one
/// change; the two binaries are whatever ARK_COMMANDER_BIN and
/// ARK_AGENT_BIN name.
async fn ark_only_main(size_mib: u64, runs: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (www, source, expected) = sample(tmp.path(), size_mib)?;
    let nginx = Nginx::start(&tmp.path().join("nginx"), &www).await?;
    let url = format!("http://{}/big.bin", nginx.addr);
    for _ in 0..runs {
        settle(&source, tmp.path(), 3 * size_mib * MIB)?;
        let t = ark_trial(tmp.path(), &url, &expected, false, None).await?;
        println!(
            "wall {:.2} s, fetched {:.2} s, leg {:.2} s, cpu agent {:.2} s, commander {:.2} s, \
             page faults agent {}, commander {}",
            t.wall,
            t.fetched,
            t.wall - t.fetched,
            t.cpu.0,
            t.cpu.1,
            t.faults.0,
            t.faults.1
        );
    }
    Ok(())
}

/// The origin's directory under `dir` with a random `big.bin` of
/// `size_mib` MiB in it: (the directory, the file, its BLAKE3).
fn sample(dir: &Path, size_mib: u64) -> Result<(std::path::PathBuf, std::path::PathBuf, String)> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    let source = www.join("big.bin");
    write_sample(&source, size_mib * MIB)?;
    let expected = b3sum(&source)?;
    Ok((www, source, expected))
}

/// The common state before a trial: the page cache's memory warm (see
/// [`warm_page_cache`]), the source in the page cache, every dirty page
/// (the previous trial's) flushed.
fn settle(source: &Path, scratch: &Path, warm: u64) -> Result<()> {
    warm_page_cache(scratch, warm)?;
    std::io::copy(&mut std::fs::File::open(source)?, &mut std::io::sink())?;
    run_ok(Command::new("sync"))
}

/// Writes `bytes` through the page cache into a scratch file under `dir`
/// and deletes it unflushed, so that the memory the next trial's files take
/// was just used. A VM whose host takes idle memory back (this one reports
/// free pages to it) pays about 40 µs for a page the guest has not touched
/// in a while — 10 s or more per GiB, dwarfing what is measured — and
/// nothing for one recycled from a file just deleted. Every trial, Ark's or
/// the manual one, starts from the same warm memory.
fn warm_page_cache(dir: &Path, bytes: u64) -> Result<()> {
    use std::io::Write;
    let path = dir.join("warm.scratch");
    let mut out = std::fs::File::create(&path)?;
    let block = vec![0x5a_u8; MIB as usize];
    for _ in 0..bytes.div_ceil(MIB) {
        out.write_all(&block)?;
    }
    drop(out);
    std::fs::remove_file(&path)?;
    Ok(())
}

/// A fresh commander and agent (production timings: 5 s heartbeat), one
/// `file` target, a `run-now` timed until the run succeeded; the landed
/// file is checked. With `relayed`, the agent reaches the commander through
/// a [`CountingRelay`], whose counts are returned. On a `household`, the
/// commander and the agent run on their devices.
async fn ark_trial(
    dir: &Path,
    url: &str,
    expected: &str,
    relayed: bool,
    household: Option<&Household>,
) -> Result<ArkTrial> {
    let trial = dir.join("ark");
    let _ = std::fs::remove_dir_all(&trial);
    let cdata = trial.join("commander");
    std::fs::create_dir_all(&cdata)?;
    std::fs::write(
        cdata.join("commander.toml"),
        "lease-ttl = \"30s\"\nheartbeat = \"5s\"\nhttp = \"off\"\n",
    )?;
    let commander = match household {
        Some(h) => {
            let listen = format!("{}:0", h.commander.ip);
            start_commander_on(Some(&h.commander), &cdata, &listen, &[], &[]).await?
        }
        None => start_commander(&cdata, "127.0.0.1:0", &[], &[]).await?,
    };
    let adata = trial.join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let relay = match relayed {
        true => {
            let endpoint = ark_commander::server::endpoint(&cdata)?;
            let addr = endpoint.trim_start_matches("https://").parse()?;
            let relay = CountingRelay::start(addr).await?;
            std::fs::write(
                adata.join(ark_agent::config::CONFIG_FILE),
                format!("commander = \"https://{}\"\n", relay.addr),
            )?;
            Some(relay)
        }
        false => None,
    };
    let agent = spawn_agent_on(household.map(|h| &h.pi), &adata, &[])?;
    wait_for_agents_online(&cdata, 1).await?;
    add_file_target(&cdata, "big", url).await?;
    // Enrolment and start-up wrote files: flushed before the clock starts.
    run_ok(Command::new("sync"))?;
    let start_ms = ark_core::unix_ms();
    let id = run_now(&cdata, "big").await?;
    let done = wait_for_run(&cdata, id, "succeeded", Duration::from_secs(900))
        .await
        .with_context(|| format!("agent log:\n{}", agent.log_text()))?;
    let wall = (done.finished_at_ms - start_ms) as f64 / 1000.0;
    ensure!(
        done.blake3 == expected,
        "the run's root {} differs",
        done.blake3
    );
    let landed = ark_commander::archive::walk_files(&cdata.join("archive"))
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "big.bin"))
        .context("nothing landed under the archive")?;
    ensure!(
        b3sum(&landed)? == expected,
        "the landed file differs from the source"
    );
    let fetched_ms = agent
        .log_text()
        .lines()
        .find(|l| l.contains(FETCHED_LINE))
        .and_then(|l| l.split_whitespace().next()?.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond())
        .context("the agent logged no end of its fetch")?;
    let fetched = (fetched_ms - start_ms) as f64 / 1000.0;
    let mut events: Vec<_> = events(&cdata, id)
        .await?
        .into_iter()
        .map(|e| (e.kind, e.at_ms - start_ms))
        .collect();
    events.sort_by_key(|(_, ms)| *ms);
    let wire = relay.map(|r| (r.sent(), r.received()));
    let cpu = (cpu_seconds(agent.pid()), cpu_seconds(commander.pid()));
    let faults = (page_faults(agent.pid()), page_faults(commander.pid()));
    drop((agent, commander));
    std::fs::remove_dir_all(&trial)?;
    Ok(ArkTrial {
        wall,
        fetched,
        events,
        wire,
        cpu,
        faults,
    })
}

/// `curl -o` into a download directory, then `rsync --fsync` over SSH into
/// the NAS directory; the copy is checked.
fn manual_trial(dir: &Path, url: &str, sshd: &Sshd, expected: &str) -> Result<ManualTrial> {
    let (download, nas) = (dir.join("download"), dir.join("nas"));
    for d in [&download, &nas] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d)?;
    }
    let file = download.join("big.bin");
    let started = Instant::now();
    let mut curl = Command::new("curl");
    curl.args(["-fsS", "-o"]).arg(&file).arg(url);
    run_ok(curl)?;
    let fetched = started.elapsed().as_secs_f64();
    let mut rsync = Command::new("rsync");
    rsync
        .args(["--fsync", "-e", &sshd.ssh_command()])
        .arg(&file)
        .arg(format!("root@127.0.0.1:{}/", nas.display()));
    run_ok(rsync).with_context(|| format!("sshd log:\n{}", sshd.log_text()))?;
    let total = started.elapsed().as_secs_f64();
    ensure!(
        b3sum(&nas.join("big.bin"))? == expected,
        "rsync's copy differs from the source"
    );
    // Gone before the next trial, as Ark's files are.
    for d in [&download, &nas] {
        std::fs::remove_dir_all(d)?;
    }
    Ok(ManualTrial {
        curl: fetched,
        rsync: total - fetched,
    })
}

fn run_ok(mut cmd: Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Samples as the tables list them: seconds, two decimals.
fn list(samples: &[f64]) -> String {
    samples
        .iter()
        .map(|s| format!("{s:.2}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The upload leg on a household link (`--link RATE`): the commander and
/// the agent on devices of a [`lan::Lan`] (network namespaces joined by a
/// bridge), the agent's port shaped to RATE both ways by `tbf`, the origin
/// (nginx) on a device of its own. The leg (fetched → landed) is held to
/// the slower of the link and the disk, each measured in the same run:
/// the link by a plain TCP `sendfile` of the same bytes from the agent's
/// device to a sink on the commander's (nothing written), the disk by `dd
/// conv=fsync` of the same bytes from the page cache.
struct Household {
    _lan: lan::Lan,
    commander: lan::Device,
    pi: lan::Device,
    _origin: lan::Device,
}

/// A TCP sink: `SINK IP PORT` reads one connection to its end, answers the
/// byte count, and exits.
const SINK: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
n = 0
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    n += len(b)
c.sendall(str(n).encode())
c.close()
"#;

/// The sender: `SEND IP PORT FILE` sends FILE with `sendfile`, waits for
/// the sink's count, prints the seconds from connect to that answer.
const SEND: &str = r#"
import socket, sys, time
f = open(sys.argv[3], "rb")
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
t = time.monotonic()
c.sendfile(f)
c.shutdown(socket.SHUT_WR)
n = int(c.recv(64))
print(f"{time.monotonic() - t:.3f} {n}")
"#;

async fn link_main(rate: &str, size_mib: u64, runs: usize) -> Result<()> {
    let lan = lan::Lan::create("leg").context("a household network needs root and `ip netns`")?;
    let (commander, origin, pi) = (
        lan.device("commander", 2)?,
        lan.device("origin", 3)?,
        lan.device("pi", 10)?,
    );
    let shaped = pi.throttle(rate, 20)?;
    let tmp = tempfile::tempdir()?;
    let (www, source, expected) = sample(tmp.path(), size_mib)?;
    let addr = format!("{}:8080", origin.ip).parse()?;
    let _nginx = Nginx::start_in(&tmp.path().join("nginx"), &www, "", addr, &origin.ns).await?;
    let url = format!("http://{addr}/big.bin");
    let household = Household {
        _lan: lan,
        commander,
        pi,
        _origin: origin,
    };
    let warm = 3 * size_mib * MIB;
    let (mut legs, mut links, mut disks) = (Vec::new(), Vec::new(), Vec::new());
    let mut cpus = Vec::new();
    for run in 0..runs {
        // Alternate the order: Ark, link, disk; then disk, link, Ark.
        let mut turns = [0, 1, 2];
        if run % 2 == 1 {
            turns.reverse();
        }
        for turn in turns {
            settle(&source, tmp.path(), warm)?;
            match turn {
                0 => {
                    let t = ark_trial(tmp.path(), &url, &expected, false, Some(&household)).await?;
                    legs.push(t.wall - t.fetched);
                    cpus.push(t.cpu);
                }
                1 => links.push(link_trial(&household, &source, size_mib * MIB)?),
                _ => disks.push(disk_trial(tmp.path(), &source)?),
            }
        }
        eprintln!("whole-path --link: run {}/{runs} done", run + 1);
    }
    let (leg, link, disk) = (
        median(legs.clone()),
        median(links.clone()),
        median(disks.clone()),
    );
    let rate_of = |s: f64| size_mib as f64 / s;
    let slower = link.max(disk);
    println!("| | includes | wall (median) | rate |");
    println!("|---|---|---:|---:|");
    println!(
        "| the link: TCP `sendfile`, agent's device → commander's | {shaped}; no TLS, nothing written | {link:.2} s | {:.0} MiB/s |",
        rate_of(link)
    );
    println!(
        "| the disk: `dd bs=1M conv=fsync` | the same bytes from the page cache | {disk:.2} s | {:.0} MiB/s |",
        rate_of(disk)
    );
    println!(
        "| **Ark, fetched → landed** | upload over mTLS gRPC across the link, verify every group, land (fsync, rename, ledger) | {leg:.2} s | {:.0} MiB/s |",
        rate_of(leg)
    );
    println!();
    println!(
        "Samples (s): Ark leg {}; link {}; disk {}.",
        list(&legs),
        list(&links),
        list(&disks)
    );
    println!();
    println!(
        "CPU (user + system, median of the Ark runs, the fetch included): agent {:.2} s, \
         commander {:.2} s.",
        median(cpus.iter().map(|c| c.0).collect()),
        median(cpus.iter().map(|c| c.1).collect()),
    );
    println!();
    println!(
        "The slower of the two is the {}: the leg ran at **{:.0} %** of it.",
        if link >= disk { "link" } else { "disk" },
        100.0 * slower / leg
    );
    Ok(())
}

/// One `sendfile` of `file` from the agent's device to a sink on the
/// commander's: the seconds it took.
fn link_trial(household: &Household, file: &Path, size: u64) -> Result<f64> {
    use std::io::BufRead;
    let ip = household.commander.ip.to_string();
    let mut sink = household.commander.command(Path::new("python3"));
    sink.args(["-c", SINK, &ip, "9009"])
        .stdout(std::process::Stdio::piped());
    let mut sink = sink.spawn().context("starting the TCP sink")?;
    let mut ready = String::new();
    std::io::BufReader::new(sink.stdout.take().context("sink stdout")?).read_line(&mut ready)?;
    ensure!(ready.trim() == "ready", "the TCP sink did not start");
    let mut send = household.pi.command(Path::new("python3"));
    send.args(["-c", SEND, &ip, "9009"]).arg(file);
    let out = send.output().context("running the TCP sender")?;
    let _ = sink.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let secs: f64 = fields.next().context("sender printed nothing")?.parse()?;
    let got: u64 = fields.next().context("no count")?.parse()?;
    ensure!(got == size, "the sink received {got} of {size} bytes");
    Ok(secs)
}

/// `dd bs=1M conv=fsync` of `source` (in the page cache) to a new file:
/// the seconds it took; the copy is removed.
fn disk_trial(dir: &Path, source: &Path) -> Result<f64> {
    let out = dir.join("dd.bin");
    let started = Instant::now();
    let mut dd = Command::new("dd");
    dd.arg(format!("if={}", source.display()))
        .arg(format!("of={}", out.display()))
        .args(["bs=1M", "conv=fsync", "status=none"]);
    run_ok(dd)?;
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_file(&out)?;
    Ok(secs)
}
