//! Sources that move (issue 12) through the real binaries: a Kiwix book
//! followed to its newest release, from a Kiwix-style mirror directory
//! (nginx autoindex) and from an OPDS catalog, with the real Kiwix ZIM
//! fixtures renamed as dated releases. The published digest is required and
//! checked; a bad or missing one lands nothing and the previous release
//! stays current; `zim/library.xml` follows the landed release (kiwix-serve
//! reads it); a withdrawn release never downgrades the archive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_tests::*;

const BOOK: &str = "wikibooks_be_all_nopic";
const SOON: Duration = Duration::from_secs(60);

/// A swarm of one agent, nginx serving `www` as a Kiwix mirror (autoindex).
struct Mirror {
    cdata: PathBuf,
    www: PathBuf,
    nginx: Nginx,
    _procs: Vec<Proc>,
}

impl Mirror {
    async fn start(tmp: &Path) -> Result<Self> {
        let www = tmp.join("www");
        std::fs::create_dir_all(www.join("zim/wikibooks"))?;
        let nginx = Nginx::start_with(&tmp.join("nginx"), &www, "autoindex on;").await?;
        let (cdata, commander, agent) = swarm_of_one(tmp, "pi").await?;
        Ok(Self {
            cdata,
            www,
            nginx,
            _procs: vec![commander, agent],
        })
    }

    fn dir_url(&self) -> String {
        format!("http://{}/zim/wikibooks/", self.nginx.addr)
    }

    /// Publishes `fixture` as the release `date` of the book, with a
    /// `.sha256` of `digest_of` (the file itself when None).
    fn publish(&self, fixture: &str, date: &str, digest_of: Option<&[u8]>) -> Result<PathBuf> {
        let path = self.www.join(format!("zim/wikibooks/{BOOK}_{date}.zim"));
        std::fs::copy(zim_fixtures()?.join(fixture), &path)?;
        let bytes = std::fs::read(&path)?;
        let sum = sha256_hex(digest_of.unwrap_or(&bytes));
        let name = path
            .file_name()
            .context("name")?
            .to_string_lossy()
            .into_owned();
        std::fs::write(
            path.with_extension("zim.sha256"),
            format!("{sum}  {name}\n"),
        )?;
        Ok(path)
    }

    /// `target ls --json`'s row for the book.
    fn target(&self) -> Result<serde_json::Value> {
        let (ok, out, err) = commander_cli(&self.cdata, &["target", "ls", "--json"])?;
        ensure!(ok, "target ls failed: {err}");
        let rows: Vec<serde_json::Value> = serde_json::from_str(&out)?;
        rows.into_iter()
            .find(|t| t["name"] == BOOK)
            .context("the book's target is not listed")
    }

    /// Runs the book now and waits for the run to end in `state`.
    async fn run_to(&self, state: &str) -> Result<ark_proto::RunInfo> {
        ended(&self.cdata, run_now(&self.cdata, BOOK).await?, state).await
    }

    /// The landed release file names.
    fn landed(&self) -> Vec<String> {
        archive_files(&self.cdata)
            .into_iter()
            .filter(|(p, _)| p.ends_with(".zim"))
            .map(|(p, _)| p.rsplit('/').next().unwrap_or_default().to_string())
            .collect()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("b");
    std::fs::write(&path, bytes).expect("write");
    ark_core::digest::digest_file(&path, "sha256").expect("sha256")
}

/// `target add zim --book BOOK --from FROM` and `more` flags; the command
/// must succeed.
fn add_book(cdata: &Path, from: &str, more: &[&str]) -> Result<()> {
    let mut args = vec!["target", "add", "zim", "--book", BOOK, "--from", from];
    args.extend_from_slice(more);
    let (ok, _, err) = commander_cli(cdata, &args)?;
    ensure!(ok, "target add --book failed: {err}");
    Ok(())
}

/// Waits for run `id` to end in `state`; a timeout shows the run as it is.
async fn ended(cdata: &Path, id: i64, state: &str) -> Result<ark_proto::RunInfo> {
    match wait_for_run(cdata, id, state, SOON).await {
        Ok(run) => Ok(run),
        Err(e) => Err(e.context(format!("{:?}", run(cdata, id).await?))),
    }
}

/// What kiwix-serve's catalog lists from the archive's library.xml.
async fn kiwix_catalog(cdata: &Path) -> Result<String> {
    let library = cdata.join("archive/zim/library.xml");
    let answers = kiwix_serve_get(&library, &["/catalog/v2/entries"]).await?;
    Ok(answers.into_iter().next().context("no answer")?.1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiwix_book_follows_its_newest_release_from_a_mirror_directory() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let m = Mirror::start(tmp.path()).await?;
    // A release without a published digest does not land.
    let first = m.publish("wikibooks_be_all_nopic_2017-02.zim", "2017-02", None)?;
    std::fs::remove_file(first.with_extension("zim.sha256"))?;
    add_book(&m.cdata, &m.dir_url(), &["--keep", "3"])?;
    let refused = wait_for_run(&m.cdata, run_of(&m.cdata, BOOK).await?, "failed", SOON).await?;
    ensure!(
        refused.reason.contains("publishes no SHA-256"),
        "{}",
        refused.reason
    );
    ensure!(
        m.landed().is_empty(),
        "landed without a digest: {:?}",
        m.landed()
    );

    // With its digest it lands, under its dated name, and is the library's.
    m.publish("wikibooks_be_all_nopic_2017-02.zim", "2017-02", None)?;
    m.run_to("succeeded").await?;
    ensure!(
        m.landed() == [format!("{BOOK}_2017-02.zim")],
        "{:?}",
        m.landed()
    );
    let row = m.target()?;
    ensure!(
        row["release"] == format!("{BOOK}_2017-02.zim")
            && row["upstream_newest"] == format!("{BOOK}_2017-02")
            && row["checked_at_ms"].as_i64().unwrap_or(0) > 0,
        "{row}"
    );
    let old_uuid = zim_uuid(&std::fs::read(&first)?);
    ensure!(kiwix_catalog(&m.cdata).await?.contains(&old_uuid));

    // Nothing new: one request to the origin (the listing), no download.
    let before = m.nginx.access_log().lines().count();
    let same = m.run_to("unchanged").await?;
    let asked: Vec<String> = m
        .nginx
        .access_log()
        .lines()
        .skip(before)
        .map(String::from)
        .collect();
    ensure!(
        asked.len() == 1,
        "an unchanged book cost more than the listing: {asked:?}"
    );
    ensure!(same.reason.contains("has landed"), "{}", same.reason);

    // A new release whose published digest does not match: refused, the
    // previous release stays current.
    let next = m.publish("small.zim", "2017-03", Some(b"other bytes"))?;
    let bad = m.run_to("failed").await?;
    ensure!(
        bad.reason.to_lowercase().contains("sha-256") || bad.reason.contains("sha256"),
        "{}",
        bad.reason
    );
    ensure!(m.landed().len() == 1, "{:?}", m.landed());
    ensure!(m.target()?["release"] == format!("{BOOK}_2017-02.zim"));
    ensure!(kiwix_catalog(&m.cdata).await?.contains(&old_uuid));

    // Published correctly: it lands and the library moves to it.
    m.publish("small.zim", "2017-03", None)?;
    m.run_to("succeeded").await?;
    let mut landed = m.landed();
    landed.sort();
    ensure!(
        landed == [format!("{BOOK}_2017-02.zim"), format!("{BOOK}_2017-03.zim")],
        "{landed:?}"
    );
    let catalog = kiwix_catalog(&m.cdata).await?;
    let new_uuid = zim_uuid(&std::fs::read(&next)?);
    ensure!(
        catalog.contains(&new_uuid) && !catalog.contains(&old_uuid),
        "the library did not move to the new release: {catalog}"
    );

    // Withdrawn upstream: the archive keeps its newest, never downgrades.
    std::fs::remove_file(&next)?;
    let kept = m.run_to("unchanged").await?;
    ensure!(
        kept.reason.contains("older than the landed"),
        "{}",
        kept.reason
    );
    ensure!(m.target()?["release"] == format!("{BOOK}_2017-03.zim"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiwix_book_follows_its_newest_release_through_an_opds_catalog() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let m = Mirror::start(tmp.path()).await?;
    let files = format!("http://{}/zim/wikibooks", m.nginx.addr);
    // Releases with Metalinks only (no .sha256): the catalog names them.
    let release = |fixture: &str, date: &str| -> Result<String> {
        let path = m.publish(fixture, date, None)?;
        let sum = sha256_hex(&std::fs::read(&path)?);
        std::fs::remove_file(path.with_extension("zim.sha256"))?;
        let name = format!("{BOOK}_{date}.zim");
        std::fs::write(
            path.with_extension("zim.meta4"),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metalink xmlns=\"urn:ietf:params:xml:ns:metalink\">\n\
                 <file name=\"{name}\"><size>{}</size><hash type=\"sha-256\">{sum}</hash>\n\
                 <url>{files}/{name}</url></file></metalink>\n",
                std::fs::metadata(&path)?.len()
            ),
        )?;
        Ok(format!(
            "<entry><id>urn:uuid:{date}</id><title>Wikibooks</title><updated>{date}-01T00:00:00Z</updated>\
             <name>wikibooks_be_all</name><flavour>nopic</flavour>\
             <link rel=\"http://opds-spec.org/acquisition/open-access\" type=\"application/x-zim\" \
             href=\"{files}/{name}.meta4\" length=\"1\"/></entry>"
        ))
    };
    let catalog = |entries: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\" \
             xmlns:opds=\"https://specs.opds.io/opds-1.2\"><id>urn:ark:test</id><title>Catalog</title>{entries}</feed>"
        )
    };
    let first = release("wikibooks_be_all_nopic_2017-02.zim", "2017-02")?;
    std::fs::write(m.www.join("catalog.xml"), catalog(&first))?;
    let from = format!("http://{}/catalog.xml", m.nginx.addr);
    add_book(&m.cdata, &from, &[])?;
    wait_for_run(&m.cdata, run_of(&m.cdata, BOOK).await?, "succeeded", SOON).await?;
    ensure!(
        m.landed() == [format!("{BOOK}_2017-02.zim")],
        "{:?}",
        m.landed()
    );

    // The catalog keeps only the newest file of a book; the history is Ark's.
    let second = release("small.zim", "2017-03")?;
    std::fs::write(m.www.join("catalog.xml"), catalog(&second))?;
    // nginx's validators are the mtime (to the second) and the size, which
    // a catalog rewritten within the same second at the same length keeps:
    // date it later, as a real update would be.
    std::fs::File::options()
        .write(true)
        .open(m.www.join("catalog.xml"))?
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(5))?;
    let run = m.run_to("succeeded").await?;
    ensure!(
        run.url.ends_with(&format!("{BOOK}_2017-03.zim")),
        "{}",
        run.url
    );
    ensure!(m.landed().len() == 2, "{:?}", m.landed());
    let resolved = event_of(&m.cdata, run.id, "resolved").await?;
    ensure!(resolved.message.contains(".meta4"), "{}", resolved.message);
    Ok(())
}

/// `--book` is for a zim target, named without its date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_book_that_is_not_a_kiwix_book_name_is_refused_with_the_fix() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
    for (kind, book, says) in [
        (
            "zim",
            "wikipedia_en_all_nopic_2026-10.zim",
            "without the date",
        ),
        ("zim", "wikipedia_en_all_nopic_2026-10", "without the date"),
        ("zim", "../../etc", "without the date"),
        ("rss", "wikipedia_en_all_nopic", "only a zim target"),
    ] {
        let (ok, out, err) = commander_cli(
            &cdata,
            &[
                "target",
                "add",
                kind,
                "--book",
                book,
                "--from",
                "http://127.0.0.1:9/zim/",
            ],
        )?;
        ensure!(
            !ok && err.contains(says),
            "{kind} --book {book}: {out}{err}"
        );
    }
    ensure!(runs(&cdata).await?.is_empty());
    Ok(())
}

/// Kiwix's undated permalink is a fallback: with the mirror's listing
/// refused (no autoindex: 403), the book's `NAME.zim` redirects to the
/// dated release, which lands under its dated name with its published
/// digest checked; once the permalink breaks too, the run fails saying both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_undated_permalink_is_a_fallback_when_the_listing_cannot_be_read() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let www = tmp.path().join("www");
    std::fs::create_dir_all(www.join("zim/wikibooks"))?;
    let dated = format!("{BOOK}_2017-02.zim");
    let nginx = Nginx::start_with(
        &tmp.path().join("nginx"),
        &www,
        &format!("location = /zim/wikibooks/{BOOK}.zim {{ return 302 /zim/wikibooks/{dated}; }}"),
    )
    .await?;
    let (cdata, _commander, _agent) = swarm_of_one(tmp.path(), "pi").await?;
    let release = www.join("zim/wikibooks").join(&dated);
    std::fs::copy(
        zim_fixtures()?.join("wikibooks_be_all_nopic_2017-02.zim"),
        &release,
    )?;
    let sum = sha256_hex(&std::fs::read(&release)?);
    std::fs::write(
        release.with_extension("zim.sha256"),
        format!("{sum}  {dated}\n"),
    )?;
    let from = format!("http://{}/zim/wikibooks/", nginx.addr);
    add_book(&cdata, &from, &[])?;
    let landed = ended(&cdata, run_of(&cdata, BOOK).await?, "succeeded").await?;
    ensure!(landed.url.ends_with(&dated), "{landed:?}");
    ensure!(
        archive_files(&cdata)
            .iter()
            .any(|(p, _)| p.ends_with(&dated)),
        "the dated release did not land"
    );

    // The permalink breaks as well: nothing to harvest, and the run says
    // what it tried.
    std::fs::remove_file(&release)?;
    let id = run_now(&cdata, BOOK).await?;
    let failed = wait_for_run(&cdata, id, "failed", SOON).await?;
    ensure!(
        failed.reason.contains("403") && failed.reason.contains("permalink"),
        "{}",
        failed.reason
    );
    Ok(())
}

/// A release published split (`.zimaa`, `.zimab`, as Kiwix splits its
/// largest archives) with the digest of the joined file: the parts are
/// fetched in order and joined, the commander checks the joined bytes
/// against the published SHA-256, and the archive lands whole under the
/// release's `.zim` name, byte for byte the unsplit file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_release_lands_joined_and_checked_against_its_published_digest() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let m = Mirror::start(tmp.path()).await?;
    let whole = std::fs::read(zim_fixtures()?.join("wikibooks_be_all_nopic_2017-02.zim"))?;
    let dir = m.www.join("zim/wikibooks");
    let (first, second) = whole.split_at(whole.len() / 2);
    std::fs::write(dir.join(format!("{BOOK}_2017-03.zimaa")), first)?;
    std::fs::write(dir.join(format!("{BOOK}_2017-03.zimab")), second)?;
    std::fs::write(
        dir.join(format!("{BOOK}_2017-03.zim.sha256")),
        format!("{}  {BOOK}_2017-03.zim\n", sha256_hex(&whole)),
    )?;
    add_book(&m.cdata, &m.dir_url(), &[])?;
    let landed = ended(&m.cdata, run_of(&m.cdata, BOOK).await?, "succeeded").await?;
    ensure!(landed.url.ends_with(".zimaa"), "{landed:?}");
    let files = archive_files(&m.cdata);
    let zim = files
        .iter()
        .find(|(p, _)| p.ends_with(".zim"))
        .context("no .zim landed")?;
    ensure!(
        zim.0.ends_with(&format!("{BOOK}_2017-03.zim")) && zim.1 == whole,
        "{} landed ({} bytes), not the joined release",
        zim.0,
        zim.1.len()
    );

    // A newer release whose parts were swapped on the mirror: the joined
    // bytes are not the archive (the streaming ZIM check sees it at the
    // first bytes; the digest would at the last), and nothing of it lands.
    std::fs::write(dir.join(format!("{BOOK}_2017-04.zimaa")), second)?;
    std::fs::write(dir.join(format!("{BOOK}_2017-04.zimab")), first)?;
    std::fs::write(
        dir.join(format!("{BOOK}_2017-04.zim.sha256")),
        format!("{}  {BOOK}_2017-04.zim\n", sha256_hex(&whole)),
    )?;
    let refused = m.run_to("failed").await?;
    ensure!(
        refused.reason.contains("not a valid ZIM") || refused.reason.contains("SHA-256"),
        "{}",
        refused.reason
    );
    ensure!(
        !m.landed().iter().any(|f| f.contains("2017-04")),
        "a wrongly joined release landed: {:?}",
        m.landed()
    );
    Ok(())
}
