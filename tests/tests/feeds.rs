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

/// An RSS 2.0 feed titled `title` with one item per enclosure URL (the
/// first item is the newest, as feeds list them).
fn podcast(title: &str, enclosures: &[String]) -> Vec<u8> {
    let items: String = enclosures
        .iter()
        .enumerate()
        .map(|(i, url)| {
            format!(
                "<item><title>{title} {i}</title><guid>{title}-{i}</guid>\
                 <enclosure url=\"{url}\" length=\"1000\" type=\"audio/mpeg\"/></item>"
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>{title}</title>\
         <link>http://example.org/</link><description>d</description>{items}</channel></rss>"
    )
    .into_bytes()
}

/// The OPML fixture `name` with its feeds pointing at `origin`, written
/// into `dir`; its path.
fn opml_fixture(dir: &Path, name: &str, origin: &Origin) -> Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/opml")
        .join(name);
    let text =
        std::fs::read_to_string(&path)?.replace("ORIGIN", origin.url("").trim_end_matches('/'));
    let out = dir.join(name);
    std::fs::write(&out, text)?;
    Ok(out.to_string_lossy().into_owned())
}

/// Feed lists (issue 12): the OPML exports of four readers (Miniflux,
/// FreshRSS, Feedly, AntennaPod) import through the real CLI with their
/// categories, a feed already present is skipped, `--media newest:2` and
/// `--keep-media 1` hold, hostile lists change nothing, and `export opml`
/// gives the list back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opml_lists_import_with_categories_and_media_policy_refuse_hostile_ones_and_export(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;
    let origin = Origin::start().await?;
    let episodes: Vec<String> = (1..=3)
        .map(|i| origin.url(&format!("media/ep-{i}.mp3")))
        .collect();
    for i in 1..=3 {
        origin.put(&format!("media/ep-{i}.mp3"), sample_bytes(1000, i as u8));
    }
    // Newest first: ep-3, ep-2, ep-1.
    let newest_first: Vec<String> = episodes.iter().rev().cloned().collect();
    origin.put_typed(
        "podcast.xml",
        podcast("weekly", &newest_first),
        "application/rss+xml",
    );
    for feed in ["news", "tech", "science", "radio"] {
        origin.put_typed(
            &format!("{feed}.xml"),
            podcast(feed, &[]),
            "application/rss+xml",
        );
    }
    let cli = |args: &[&str]| commander_cli(&cdata, args);
    let count = || async { Ok::<_, anyhow::Error>(runs(&cdata).await?.len()) };

    let miniflux = opml_fixture(tmp.path(), "miniflux.opml", &origin)?;
    let (ok, out, err) = cli(&[
        "target",
        "import",
        "opml",
        &miniflux,
        "--media",
        "newest:2",
        "--keep-media",
        "1",
    ])?;
    ensure!(ok && out.contains("2 added, 0 skipped"), "{out}{err}");
    // The podcast: the newest 2 enclosures are fetched, the oldest never;
    // retention then keeps 1 landed enclosure.
    media_runs_done(&cdata, "the-weekly-show", 2).await?;
    let media = runs(&cdata)
        .await?
        .into_iter()
        .filter(|r| r.kind == "media")
        .count();
    ensure!(media == 2, "{media} enclosures fetched, the policy says 2");
    let feed_run = runs(&cdata)
        .await?
        .into_iter()
        .find(|r| r.target == "the-weekly-show" && r.kind == "rss")
        .context("the feed's run")?;
    let skipped = events(&cdata, feed_run.id)
        .await?
        .into_iter()
        .filter(|e| e.kind == "enclosure_skipped")
        .collect::<Vec<_>>();
    ensure!(
        skipped.len() == 1
            && skipped[0].message.contains("ep-1")
            && skipped[0].message.contains("newest 2"),
        "{skipped:?}"
    );
    let kept = feed_files(&cdata, "the-weekly-show", "media");
    ensure!(kept.len() == 1, "--keep-media 1 kept {}", kept.len());

    for (list, says) in [
        ("freshrss.opml", "1 added, 1 skipped"),
        ("feedly.opml", "1 added, 0 skipped"),
        ("antennapod.opml", "1 added, 0 skipped"),
    ] {
        let (ok, out, err) = cli(&[
            "target",
            "import",
            "opml",
            &opml_fixture(tmp.path(), list, &origin)?,
        ])?;
        ensure!(ok && out.contains(says), "{list}: {out}{err}");
    }
    let (_, ls, _) = cli(&["target", "ls", "--json"])?;
    let targets: Vec<serde_json::Value> = serde_json::from_str(&ls)?;
    let categories: std::collections::BTreeMap<String, String> = targets
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().into(),
                t["category"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    ensure!(targets.len() == 5, "{categories:?}");
    ensure!(
        categories["science-daily"] == "Reading/Science",
        "{categories:?}"
    );
    ensure!(categories["local-regional"] == "News", "{categories:?}");
    ensure!(categories["night-radio"].is_empty(), "{categories:?}");

    // Hostile lists: a clear error, nothing added.
    let before = (count().await?, targets.len());
    let hostile = [
        ("entities", "<?xml version=\"1.0\"?><!DOCTYPE opml [<!ENTITY a \"aaaaaaaa\">]><opml><body><outline text=\"&a;\" xmlUrl=\"http://x.example/a\"/></body></opml>".to_string(), "DOCTYPE"),
        ("many", format!("<opml><body>{}</body></opml>", "<outline text=\"x\" xmlUrl=\"http://x.example/a\"/>".repeat(100_000)), "more than 10000 outlines"),
        ("script", format!("<opml><body><outline text=\"ok\" xmlUrl=\"{}\"/><outline text=\"evil\" xmlUrl=\"javascript:alert(1)\"/></body></opml>", origin.url("new.xml")), "javascript:"),
        ("file", "<opml><body><outline text=\"local\" xmlUrl=\"file:///etc/passwd\"/></body></opml>".to_string(), "file:"),
    ];
    for (name, text, says) in hostile {
        let path = tmp.path().join(format!("{name}.opml"));
        std::fs::write(&path, text)?;
        let (ok, out, err) = cli(&["target", "import", "opml", &path.to_string_lossy()])?;
        ensure!(
            !ok && err.contains(says) && err.contains("nothing was imported"),
            "{name}: {out}{err}"
        );
    }
    let (_, ls, _) = cli(&["target", "ls", "--json"])?;
    let after: Vec<serde_json::Value> = serde_json::from_str(&ls)?;
    ensure!(
        (count().await?, after.len()) == before,
        "a hostile list changed something"
    );

    // A dry run says what it would add and adds nothing.
    let fresh = tmp.path().join("fresh.opml");
    std::fs::write(
        &fresh,
        format!(
            "<opml><body><outline text=\"Fresh\" xmlUrl=\"{}\"/></body></opml>",
            origin.url("fresh.xml")
        ),
    )?;
    let (ok, out, _) = cli(&[
        "target",
        "import",
        "opml",
        &fresh.to_string_lossy(),
        "--dry-run",
    ])?;
    ensure!(ok && out.contains("would add fresh"), "{out}");
    let (_, ls, _) = cli(&["target", "ls", "--json"])?;
    ensure!(serde_json::from_str::<Vec<serde_json::Value>>(&ls)?.len() == 5);

    // The export gives every feed back, with its category.
    let exported = tmp.path().join("export.opml");
    let (ok, _, err) = cli(&[
        "target",
        "export",
        "opml",
        "--out",
        &exported.to_string_lossy(),
    ])?;
    ensure!(ok, "{err}");
    let listed = ark_commander::opml::parse(&std::fs::read_to_string(&exported)?)?;
    let mut got: Vec<(String, String)> = listed.into_iter().map(|f| (f.url, f.category)).collect();
    let mut want: Vec<(String, String)> = after
        .iter()
        .map(|t| {
            (
                t["url"].as_str().unwrap_or_default().into(),
                t["category"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    got.sort();
    want.sort();
    ensure!(got == want, "export {got:?} != targets {want:?}");
    Ok(())
}
