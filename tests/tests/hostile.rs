//! The defects issue 15 found when Ark was tried as a hostile origin would
//! try it, each with a regression test named after it, run against the real
//! binaries. What belongs here: a whole-swarm behaviour a hostile origin,
//! feed or disk used to break. (The fetch-level halves of defects 1 and 3
//! are in `fetch.rs`.)

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use ark_tests::*;

/// A commander serving its dashboard too (its endpoints are what a hostile
/// redirect aims at), with `extra` in its config, and one agent.
async fn swarm(dir: &Path, extra: &str) -> Result<(std::path::PathBuf, Proc, Proc, String)> {
    let cdata = dir.join("commander");
    write_commander_config_with(&cdata, extra)?;
    let commander = start_commander(&cdata, "127.0.0.1:0", &["--http", "127.0.0.1:0"], &[]).await?;
    let dashboard = std::fs::read_to_string(cdata.join("http-endpoint"))?;
    let adata = dir.join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let agent = spawn_agent(&adata)?;
    Ok((cdata, commander, agent, dashboard.trim().to_string()))
}

async fn final_state(cdata: &Path, target: &str) -> Result<ark_proto::RunInfo> {
    let id = run_of(cdata, target).await?;
    wait_until(Duration::from_secs(40), "the run to end", || async move {
        let r = run(cdata, id).await?;
        Ok(matches!(
            r.state.as_str(),
            "succeeded" | "failed" | "unchanged"
        ))
    })
    .await?;
    run(cdata, id).await
}

/// Issue 15, defect 2: a redirect or an enclosure that leads into the
/// household's network (loopback here, the other side of the test) or to
/// the commander's own dashboard is refused by default with the fix in the
/// reason; `fetch.allow` lets the network in, never the commander.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_agents_never_fetch_the_household_network_or_the_commander() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cdata, _commander, _agent, dashboard) = swarm(tmp.path(), "").await?;
    let origin = Origin::start().await?;
    // Another service of the household, on another port of loopback.
    let router = Origin::start().await?;
    router.put("admin", b"router admin page: password=hunter2".to_vec());
    origin.hostile(
        "to-metrics",
        Hostile::RedirectTo(format!("{dashboard}/metrics")),
    );
    origin.hostile(
        "to-state",
        Hostile::RedirectTo(format!("{dashboard}/api/state")),
    );
    origin.hostile("to-router", Hostile::RedirectTo(router.url("admin")));
    let localhost = router.url("admin").replace("127.0.0.1", "localhost");
    origin.hostile("to-localhost", Hostile::RedirectTo(localhost.clone()));
    origin.put("fine.bin", ark_demo::sample_bytes(5000, 1));
    origin.hostile("to-fine", Hostile::RedirectTo("fine.bin".into()));
    let feed = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Sly</title>\
         <item><guid>1</guid><title>one</title><enclosure url=\"{}\" type=\"audio/mpeg\"/></item>\
         <item><guid>2</guid><title>two</title><enclosure url=\"{dashboard}/metrics\" type=\"audio/mpeg\"/></item>\
         <item><guid>3</guid><title>three</title><enclosure url=\"{}\" type=\"audio/mpeg\"/></item>\
         </channel></rss>",
        router.url("admin"),
        origin.url("fine.bin")
    );
    origin.put_typed("feed.xml", feed.into_bytes(), "application/rss+xml");

    let cases = [
        ("metrics", "to-metrics", "commander's own endpoint"),
        ("state", "to-state", "commander's own endpoint"),
        ("router", "to-router", "loopback"),
        ("localhost", "to-localhost", "loopback"),
    ];
    for (name, path, _) in &cases {
        add_file_target(&cdata, name, &origin.url(path)).await?;
    }
    add_file_target(&cdata, "same-origin", &origin.url("to-fine")).await?;
    add_target(&cdata, "rss", "sly", &origin.url("feed.xml"), 0).await?;
    for (name, _, why) in &cases {
        let r = final_state(&cdata, name).await?;
        ensure!(
            r.state == "failed" && r.reason.contains(why),
            "{name}: {} — {}",
            r.state,
            r.reason
        );
        if *why == "loopback" {
            ensure!(
                r.reason.contains("fetch.allow"),
                "{name}: no fix named: {}",
                r.reason
            );
        }
    }
    // A redirect within the target's own origin is the operator's choice.
    let r = final_state(&cdata, "same-origin").await?;
    ensure!(
        r.state == "succeeded",
        "same origin: {} {}",
        r.state,
        r.reason
    );
    // The feed lands; of its enclosures only the one on its own origin.
    wait_until(Duration::from_secs(40), "the enclosures to end", || {
        let cdata = cdata.clone();
        async move {
            let media: Vec<_> = runs(&cdata)
                .await?
                .into_iter()
                .filter(|r| r.kind == "media")
                .collect();
            Ok(media.len() == 3
                && media
                    .iter()
                    .all(|r| r.state == "succeeded" || r.state == "failed"))
        }
    })
    .await?;
    let media: Vec<_> = runs(&cdata)
        .await?
        .into_iter()
        .filter(|r| r.kind == "media")
        .collect();
    let landed: Vec<&str> = media
        .iter()
        .filter(|r| r.state == "succeeded")
        .map(|r| r.url.as_str())
        .collect();
    ensure!(
        landed == [origin.url("fine.bin")],
        "enclosures landed: {landed:?}"
    );
    for r in media.iter().filter(|r| r.state == "failed") {
        ensure!(r.reason.contains("refused"), "{}: {}", r.url, r.reason);
    }
    let files = archive_files(&cdata);
    for (path, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        ensure!(
            !text.contains("hunter2")
                && !text.contains("ark_agents")
                && !text.contains("\"agents\""),
            "{path} holds what the household or the commander served"
        );
    }
    Ok(())
}

/// The same household service becomes reachable once its network is in
/// `fetch.allow`; the commander's endpoints stay refused even then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_fetch_allow_opens_a_network_but_never_the_commander() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cdata, _commander, _agent, dashboard) =
        swarm(tmp.path(), "[fetch]\nallow = [\"127.0.0.0/8\"]\n").await?;
    let origin = Origin::start().await?;
    let nas = Origin::start().await?;
    nas.put("photo.jpg", ark_demo::sample_bytes(9000, 3));
    origin.hostile("to-nas", Hostile::RedirectTo(nas.url("photo.jpg")));
    origin.hostile(
        "to-metrics",
        Hostile::RedirectTo(format!("{dashboard}/metrics")),
    );
    add_file_target(&cdata, "nas", &origin.url("to-nas")).await?;
    add_file_target(&cdata, "metrics", &origin.url("to-metrics")).await?;
    let r = final_state(&cdata, "nas").await?;
    ensure!(
        r.state == "succeeded",
        "allowed network: {} {}",
        r.state,
        r.reason
    );
    let r = final_state(&cdata, "metrics").await?;
    ensure!(
        r.state == "failed" && r.reason.contains("commander's own endpoint"),
        "{} {}",
        r.state,
        r.reason
    );
    // And a bad network in the config is refused at start with the fix.
    let bad = tmp.path().join("bad");
    write_commander_config_with(&bad, "[fetch]\nallow = [\"192.168.1.0/33\"]\n")?;
    let (ok, _, stderr) = commander_cli(&bad, &["show-config"])?;
    ensure!(!ok && stderr.contains("fetch.allow"), "{stderr}");
    Ok(())
}

/// A feed of `items` entries (no enclosures) as the origin serves it.
fn big_feed(items: usize) -> Vec<u8> {
    let mut feed =
        String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Big</title>");
    for i in 0..items {
        feed.push_str(&format!(
            "<item><guid>entry-{i}</guid><title>Entry number {i}</title>\
             <description>Body of entry {i}</description></item>"
        ));
    }
    feed.push_str("</channel></rss>");
    feed.into_bytes()
}

fn entry_files(cdata: &Path, feed: &str) -> usize {
    std::fs::read_dir(cdata.join("archive/rss").join(feed).join("entries"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// Issue 15, defect 4: a feed run reads `succeeded` only once every entry
/// it derives is on disk and recorded, and `archive verify` run while the
/// entries are being written never takes them for strays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_feed_run_succeeds_only_once_its_entries_exist() -> Result<()> {
    const ITEMS: usize = 3000;
    let tmp = tempfile::tempdir()?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;
    let origin = Origin::start().await?;
    origin.put_typed("big.xml", big_feed(ITEMS), "application/rss+xml");
    add_target(&cdata, "rss", "big", &origin.url("big.xml"), 0).await?;
    let id = run_of(&cdata, "big").await?;
    // Verify over and over while the run lands: never a stray entry.
    let mut verifies = 0;
    loop {
        let (clean, out, err) = commander_cli(&cdata, &["archive", "verify", "--json"])?;
        verifies += 1;
        let report: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        // (The snapshot itself reads as a stray for the instant between its
        // rename and its ledger row, as a half-landed file does; its
        // entries never do.)
        let entry_strays = report["stray"].as_array().map_or(0, |s| {
            s.iter()
                .filter(|p| p.as_str().is_some_and(|p| p.contains("/entries/")))
                .count()
        });
        ensure!(
            entry_strays == 0,
            "verify during landing saw entry strays: {out}{err}"
        );
        let r = run(&cdata, id).await?;
        if r.state == "succeeded" {
            let files = entry_files(&cdata, "big");
            ensure!(
                files == ITEMS,
                "succeeded with {files} of {ITEMS} entry files"
            );
            break;
        }
        ensure!(r.state != "failed", "{}", r.reason);
        if !clean {
            ensure!(report["bad"].as_array().is_none_or(Vec::is_empty), "{out}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "after {verifies} verifies: {out}{err}");
    Ok(())
}

/// The commander killed after the entry files are written but before the
/// ledger records them: the run is not `succeeded` meanwhile, the restart
/// finishes the landing with every entry recorded, and nothing is a stray.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_crash_between_deriving_and_recording_a_feed_is_finished_on_restart(
) -> Result<()> {
    const ITEMS: usize = 500;
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut commander = spawn_commander_with(
        &cdata,
        &listen,
        &[],
        &[("ARK_FAULT_CRASH_AT", "after-derive")],
    )
    .await?;
    let adata = tmp.path().join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let _agent = spawn_agent(&adata)?;
    let origin = Origin::start().await?;
    origin.put_typed("big.xml", big_feed(ITEMS), "application/rss+xml");
    add_target(&cdata, "rss", "big", &origin.url("big.xml"), 0).await?;
    let id = run_of(&cdata, "big").await?;
    wait_for_abort(&mut commander, "after-derive", Duration::from_secs(30)).await?;
    ensure!(
        entry_files(&cdata, "big") == ITEMS,
        "the entries were not derived before the crash"
    );
    let _commander = spawn_commander(&cdata, &listen).await?;
    let r = wait_for_run(&cdata, id, "succeeded", Duration::from_secs(30)).await?;
    ensure!(entry_files(&cdata, "big") == ITEMS, "{}", r.reason);
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    Ok(())
}

/// Issue 15, defect 5: an archive disk that is full is reported as such
/// (which disk, how much is free and needed), the run waits instead of
/// failing, no quarantine is left behind, and once space is freed the run
/// lands. Here the commander's space check before an upload catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_full_archive_disk_is_reported_leaks_nothing_and_lands_once_freed(
) -> Result<()> {
    full_disk(false).await
}

/// The same when the disk fills in the middle of an upload (the space
/// check turned off by its test hook, as if another writer took the space
/// after it ran): ENOSPC removes the partial upload and defers the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_disk_that_fills_mid_upload_frees_the_partial_upload_and_lands_later(
) -> Result<()> {
    full_disk(true).await
}

async fn full_disk(mid_upload: bool) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let Some(disk) = SmallDisk::mount(&tmp.path().join("nas"), "12m") else {
        return Ok(());
    };
    let archive = disk.at.join("archive");
    let cdata = tmp.path().join("commander");
    write_commander_config_with(&cdata, &format!("archive = \"{}\"\n", archive.display()))?;
    let env: &[(&str, &str)] = if mid_upload {
        &[("ARK_FAULT_SKIP_SPACE_CHECK", "1")]
    } else {
        &[]
    };
    let _commander = start_commander(&cdata, "127.0.0.1:0", &[], env).await?;
    let adata = tmp.path().join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let _agent = spawn_agent(&adata)?;
    // Leave 5 MiB (the check) or 2 MiB (mid-upload) for 3 MiB files.
    let leave = if mid_upload { 2 << 20 } else { 5 << 20 };
    let filler = disk.fill("filler", leave)?;
    let origin = Origin::start().await?;
    let (a, b) = (
        ark_demo::sample_bytes(3 << 20, 1),
        ark_demo::sample_bytes(3 << 20, 2),
    );
    origin.put("a.iso", a.clone());
    origin.put("b.iso", b.clone());
    add_file_target(&cdata, "a", &origin.url("a.iso")).await?;
    let ra = run_of(&cdata, "a").await?;
    let (waiting, wanted) = if mid_upload {
        (ra, vec![a])
    } else {
        // One lands, the other is told the disk is full and waits.
        wait_for_run(&cdata, ra, "succeeded", Duration::from_secs(30)).await?;
        add_file_target(&cdata, "b", &origin.url("b.iso")).await?;
        (run_of(&cdata, "b").await?, vec![a, b])
    };
    wait_until(Duration::from_secs(30), "the run to be deferred", || {
        let cdata = cdata.clone();
        async move {
            let r = run(&cdata, waiting).await?;
            ensure!(
                r.state != "failed",
                "a full disk failed the run: {}",
                r.reason
            );
            Ok(events(&cdata, waiting)
                .await?
                .iter()
                .any(|e| e.kind == "no_space"))
        }
    })
    .await?;
    let no_space = event_of(&cdata, waiting, "no_space").await?;
    ensure!(
        no_space.message.contains("full") && no_space.message.contains("free"),
        "{}",
        no_space.message
    );
    if mid_upload {
        ensure!(
            no_space.message.contains("partial upload was removed"),
            "{}",
            no_space.message
        );
    } else {
        ensure!(
            no_space.message.contains(&archive.display().to_string())
                && no_space.message.contains("needs"),
            "{}",
            no_space.message
        );
    }
    // It keeps waiting (with backoff), never failing, and leaks nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = run(&cdata, waiting).await?;
    ensure!(
        r.state == "queued" || r.state == "leased",
        "{} {}",
        r.state,
        r.reason
    );
    ensure!(
        r.attempts == 0,
        "a full disk counted {} attempts",
        r.attempts
    );
    let quarantine = || -> Vec<(String, u64)> {
        std::fs::read_dir(archive.join(".ark/quarantine"))
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                        (e.file_name().to_string_lossy().into_owned(), len)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // (Mid-upload, a retry may be writing right now; never more than one.)
    let held: u64 = quarantine().iter().map(|(_, len)| len).sum();
    ensure!(held <= 3 << 20, "quarantine leaked: {:?}", quarantine());
    // Space is freed: the run lands.
    std::fs::remove_file(&filler)?;
    wait_for_run(&cdata, waiting, "succeeded", Duration::from_secs(60)).await?;
    let landed: Vec<Vec<u8>> = ark_commander::archive::walk_files(&archive)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "iso"))
        .map(|p| std::fs::read(p).unwrap_or_default())
        .collect();
    ensure!(
        wanted.iter().all(|w| landed.contains(w)),
        "the files landed whole"
    );
    ensure!(quarantine().is_empty(), "{:?}", quarantine());
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    Ok(())
}
