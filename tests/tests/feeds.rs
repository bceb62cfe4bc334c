//! The feed kind through the real binaries: a podcast feed lands as a
//! snapshot, one file per entry and its enclosures (each a verified media
//! run); an unchanged feed costs one conditional request; a republished
//! entry is not new; hostile feeds are refused with their reason and
//! nothing lands outside the feed's directory.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_demo::sample_bytes;
use ark_proto::RunInfo;
use ark_tests::*;

const SOON: Duration = Duration::from_secs(60);

fn fixture(name: &str) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/feeds")
        .join(name);
    std::fs::read_to_string(&path).with_context(|| path.display().to_string())
}

/// The archive's files under `rss/<feed>/<sub>/`, by name.
fn feed_files(cdata: &Path, feed: &str, sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = cdata.join("archive/rss").join(feed).join(sub);
    files_in(&dir, |name| !name.ends_with(".manifest.json"))
}

/// Waits until every media run of `target` has ended; returns them.
async fn media_runs_done(cdata: &Path, target: &str, count: usize) -> Result<Vec<RunInfo>> {
    let what = format!("{count} media runs of {target} to end");
    wait_until(SOON, &what, || async move {
        let media: Vec<_> = runs(cdata)
            .await?
            .into_iter()
            .filter(|r| r.target == target && r.kind == "media")
            .collect();
        Ok(media.len() >= count
            && media
                .iter()
                .all(|r| matches!(r.state.as_str(), "succeeded" | "failed" | "unchanged")))
    })
    .await?;
    Ok(runs(cdata)
        .await?
        .into_iter()
        .filter(|r| r.target == target && r.kind == "media")
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_podcast_lands_entries_and_media_and_is_then_unchanged_and_deduped() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;

    let origin = Origin::start().await?;
    let (ep1, ep2) = (sample_bytes(50_000, 1), sample_bytes(80_000, 2));
    origin.put("media/episode-1.mp3", ep1.clone());
    origin.put("media/episode-2.mp3", ep2.clone());
    // Episode 1 declares its length right; episode 2 wrong (12345).
    let feed = fixture("podcast.xml")?
        .replace("MEDIA", &origin.url("media"))
        .replace("LEN1", "50000")
        .replace("LEN2", "12345");
    origin.put_typed(
        "podcast.xml",
        feed.clone().into_bytes(),
        "application/rss+xml",
    );
    add_target(&cdata, "rss", "garden", &origin.url("podcast.xml"), 0).await?;
    let id = run_of(&cdata, "garden").await?;
    wait_for_run(&cdata, id, "succeeded", SOON).await?;
    let media = media_runs_done(&cdata, "garden", 2).await?;
    ensure!(
        media.iter().all(|r| r.state == "succeeded"),
        "media runs: {media:?}"
    );

    // The snapshot, one file per entry, the media.
    let snapshots: Vec<_> = archive_files(&cdata)
        .into_iter()
        .filter(|(p, _)| p.ends_with("/podcast.xml"))
        .collect();
    ensure!(
        snapshots.len() == 1 && snapshots[0].1 == feed.as_bytes(),
        "{snapshots:?}"
    );
    let entries = feed_files(&cdata, "garden", "entries");
    ensure!(entries.len() == 2, "entries: {entries:?}");
    let (name, json) = &entries[1];
    ensure!(
        name.starts_with("2026-11-17-episode-2-compost-"),
        "entry name {name}"
    );
    let entry: serde_json::Value = serde_json::from_slice(json)?;
    ensure!(entry["id"] == "garden-talk-2" && entry["title"] == "Episode 2: Compost");
    ensure!(entry["content"]
        .as_str()
        .is_some_and(|c| c.contains("worms")));
    let file = entry["enclosures"][0]["file"]
        .as_str()
        .context("enclosure file")?;
    let landed = std::fs::read(cdata.join("archive/rss/garden/entries").join(file))?;
    ensure!(
        landed == ep2,
        "the entry's enclosure is not episode 2's bytes"
    );
    let media_files = feed_files(&cdata, "garden", "media");
    ensure!(media_files.len() == 2, "media: {media_files:?}");
    // The wrong declared length is recorded, the verified bytes kept.
    let ep2_run = media
        .iter()
        .find(|r| r.url.ends_with("episode-2.mp3"))
        .context("episode 2 run")?;
    let noted = events(&cdata, ep2_run.id)
        .await?
        .into_iter()
        .any(|e| e.kind == "length_mismatch" && e.message.contains("declares 12345 bytes"));
    ensure!(noted, "no length_mismatch event on run {}", ep2_run.id);

    // Unchanged: one conditional request, answered 304.
    let before = origin.log().len();
    let again = run_now(&cdata, "garden").await?;
    wait_for_run(&cdata, again, "unchanged", SOON).await?;
    let log = origin.log();
    let asked: Vec<_> = log[before..]
        .iter()
        .filter(|l| l.path.ends_with("podcast.xml"))
        .collect();
    ensure!(
        asked.len() == 1 && asked[0].conditional && asked[0].status == 304,
        "{asked:?}"
    );

    // Republished: episode 1 again under a new guid (not new), plus a new
    // episode 3 with its enclosure (new).
    let ep3 = sample_bytes(30_000, 3);
    origin.put("media/episode-3.mp3", ep3.clone());
    let item3 = format!(
        "<item><title>Episode 3: Seeds</title><guid isPermaLink=\"false\">garden-talk-3</guid>\
         <pubDate>Tue, 24 Nov 2026 06:00:00 +0000</pubDate><description>Saving seeds.</description>\
         <enclosure url=\"{}\" length=\"30000\" type=\"audio/mpeg\"/></item>",
        origin.url("media/episode-3.mp3")
    );
    let updated = feed.replace("<item>", &format!("{item3}<item>")).replacen(
        "garden-talk-1",
        "garden-talk-1-reposted",
        1,
    );
    ensure!(updated.contains("garden-talk-1-reposted") && updated.contains("garden-talk-3"));
    origin.put_typed("podcast.xml", updated.into_bytes(), "application/rss+xml");
    let third = run_now(&cdata, "garden").await?;
    wait_for_run(&cdata, third, "succeeded", SOON).await?;
    media_runs_done(&cdata, "garden", 3).await?;
    let entries = feed_files(&cdata, "garden", "entries");
    ensure!(
        entries.len() == 3,
        "one new entry expected, the repost is not new: {:?}",
        entries.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    let derived = event_of(&cdata, third, "feed_entries").await?;
    ensure!(
        derived.message.contains("1 new, 1 republished"),
        "{}",
        derived.message
    );
    ensure!(feed_files(&cdata, "garden", "media").len() == 3);

    let (clean, stdout, stderr) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "archive verify: {stdout}{stderr}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_feeds_are_refused_with_a_reason_and_nothing_lands_outside_the_feed() -> Result<()>
{
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander =
        spawn_commander_with(&cdata, "127.0.0.1:0", &["--max-attempts", "1"], &[]).await?;
    let adata = tmp.path().join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let _agent = spawn_agent(&adata)?;
    let origin = Origin::start().await?;

    // Entity expansion.
    let lol = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">\
        <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\
        <!ENTITY lol2 \"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;\">]>\
        <rss version=\"2.0\"><channel><title>&lol2;</title><item><title>&lol2;</title></item></channel></rss>";
    origin.put("lol.xml", lol.as_bytes().to_vec());
    // A 100 MB "feed".
    let mut huge = b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel>".to_vec();
    huge.resize(100_000_000, b' ');
    origin.put("huge.xml", huge);
    // An error page served as the feed.
    origin.put_typed(
        "gone.xml",
        b"<!DOCTYPE html><html><body>Moved</body></html>".to_vec(),
        "text/xml",
    );
    for (name, file) in [
        ("lol", "lol.xml"),
        ("huge", "huge.xml"),
        ("gone", "gone.xml"),
    ] {
        add_target(&cdata, "rss", name, &origin.url(file), 0).await?;
    }
    for (name, want) in [
        ("lol", "declares XML entities"),
        ("huge", "limit"),
        ("gone", "HTML page"),
    ] {
        let id = run_of(&cdata, name).await?;
        let failed = wait_for_run(&cdata, id, "failed", SOON).await?;
        ensure!(
            failed.reason.contains(want),
            "{name}: reason {:?} should say {want:?}",
            failed.reason
        );
    }

    // Enclosures that try to escape, and lengths over the target's limit.
    let base = origin.url("");
    let items: String = [
        ("dots", format!("{base}../../etc/passwd"), "100"),
        ("encoded", format!("{base}a/%2e%2e%2f%2e%2e%2fescape.mp3"), "100"),
        ("nul", format!("{base}x/%00nul.mp3"), "100"),
        ("abs", "file:///etc/passwd".to_string(), "100"),
        ("big", format!("{base}big.mp3"), "999999999999"),
    ]
    .iter()
    .map(|(id, url, len)| {
        format!(
            "<item><title>{id}</title><guid>{id}</guid><enclosure url=\"{url}\" length=\"{len}\" type=\"audio/mpeg\"/></item>"
        )
    })
    .collect();
    origin.put("a/%2e%2e%2f%2e%2e%2fescape.mp3", sample_bytes(100, 5));
    origin.put("x/%00nul.mp3", sample_bytes(100, 6));
    origin.put("etc/passwd", b"root:x:0:0".to_vec());
    let feed = format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>Sly</title>{items}</channel></rss>"
    );
    origin.put("sly.xml", feed.into_bytes());
    add_target(&cdata, "rss", "sly", &origin.url("sly.xml"), 1_000_000).await?;
    let id = run_of(&cdata, "sly").await?;
    wait_for_run(&cdata, id, "succeeded", SOON).await?;
    media_runs_done(&cdata, "sly", 3).await?;
    let skipped: Vec<String> = events(&cdata, id)
        .await?
        .into_iter()
        .filter(|e| e.kind == "enclosure_skipped")
        .map(|e| e.message)
        .collect();
    ensure!(
        skipped.len() == 2
            && skipped.iter().any(|m| m.contains("not an http(s) URL"))
            && skipped
                .iter()
                .any(|m| m.contains("over the target's limit")),
        "{skipped:?}"
    );
    let files = archive_files(&cdata);
    ensure!(!files.is_empty());
    for (path, _) in &files {
        ensure!(
            path.starts_with("rss/sly/") && !path.contains(".."),
            "{path} landed outside rss/sly/"
        );
    }
    ensure!(
        feed_files(&cdata, "sly", "media").len() == 3,
        "the three fetchable enclosures land inside the feed: {files:?}",
        files = files.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    ensure!(
        !tmp.path().join("etc").exists() && !cdata.join("archive/etc").exists(),
        "something escaped"
    );
    Ok(())
}

#[test]
fn check_feed_passes_every_real_world_shape_and_names_what_is_wrong_with_the_rest() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/feeds");
    let good = [
        "rss091.xml",
        "podcast.xml",
        "atom.xml",
        "feed.json",
        "broken-dates.xml",
        "rss1.rdf",
    ];
    let bomb = tmp.path().join("bomb.xml");
    std::fs::write(
        &bomb,
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaa\">]><rss version=\"2.0\"><channel>&a;</channel></rss>",
    )?;
    let page = tmp.path().join("page.xml");
    std::fs::write(&page, "<html><body>sorry</body></html>")?;
    let out = std::process::Command::new(bin("ark-commander")?)
        .args(["check", "feed"])
        .args(good.iter().map(|f| dir.join(f)))
        .arg(&bomb)
        .arg(&page)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(!out.status.success(), "two bad files must fail the check");
    let lines: Vec<&str> = stdout.lines().collect();
    ensure!(lines.len() == 8, "{stdout}");
    for (line, file) in lines.iter().zip(good) {
        ensure!(line.starts_with("ok ") && line.contains(file), "{line}");
    }
    ensure!(lines[1].contains("2 entries, 2 enclosures"), "{}", lines[1]);
    ensure!(lines[6].starts_with("FAIL") && lines[6].contains("declares XML entities"));
    ensure!(lines[7].starts_with("FAIL") && lines[7].contains("not a feed"));
    Ok(())
}
