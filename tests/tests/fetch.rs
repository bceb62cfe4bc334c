//! The agent's streaming fetch against a real HTTP origin (the harness's
//! fault-injecting one). What belongs here: conditional GET, range resume,
//! restarts from zero, and every refusal of a hostile or broken origin.
//! Sizes walk the table every byte-handling test walks.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_agent::fetch::{fetch, FetchError, Fetched, Limits, Sinks, Validators};
use ark_agent::jobs::Throttle;
use ark_agent::telemetry::ByteCounter;
use ark_demo::sample_bytes;
use ark_tests::{b3sum, Hostile, Origin};

/// 0, 1, around the 16 KiB chunk group (group−1, group, group+1), several
/// MiB, and a size that is a multiple of nothing in particular.
const SIZES: &[usize] = &[
    0,
    1,
    16 * 1024 - 1,
    16 * 1024,
    16 * 1024 + 1,
    5 * 1024 * 1024 + 7,
    1_234_567,
];

struct Fixture {
    origin: Origin,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    throttle: Throttle,
    progress: ark_agent::fetch::Progress,
    counter: ByteCounter,
}

impl Fixture {
    async fn new() -> Result<Self> {
        Ok(Self {
            origin: Origin::start().await?,
            http: ark_agent::fetch::http_client()?,
            dir: tempfile::tempdir()?,
            throttle: Throttle::new(0),
            progress: ark_agent::fetch::Progress::default(),
            counter: ByteCounter::default(),
        })
    }

    async fn get(
        &self,
        name: &str,
        conditional: &Validators,
        limits: &Limits,
    ) -> Result<Fetched, FetchError> {
        self.get_checked(name, conditional, limits, None).await
    }

    /// [`get`](Self::get) with a format check riding along.
    async fn get_checked(
        &self,
        name: &str,
        conditional: &Validators,
        limits: &Limits,
        check: Option<&mut dyn ark_agent::fetch::BodyCheck>,
    ) -> Result<Fetched, FetchError> {
        let sinks = Sinks {
            throttle: &self.throttle,
            run_throttle: None,
            progress: &self.progress,
            counter: &self.counter,
            self_yield: None,
        };
        // Test origins listen on loopback, which only an allowance reaches.
        let limits = &Limits {
            guard: ark_tests::loopback_guard(),
            ..limits.clone()
        };
        ark_agent::fetch::fetch_checked(
            &self.http,
            &self.origin.url(name),
            &self.dest(name),
            conditional,
            limits,
            sinks,
            check,
        )
        .await
    }

    fn dest(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{name}.part"))
    }

    fn staged(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dest(name)).unwrap_or_default()
    }
}

#[tokio::test]
async fn every_size_arrives_whole_and_a_second_fetch_costs_one_conditional_request() -> Result<()> {
    let f = Fixture::new().await?;
    for (i, &size) in SIZES.iter().enumerate() {
        let name = format!("f{size}");
        let bytes = sample_bytes(size, i as u8);
        f.origin.put(&name, bytes.clone());
        let Fetched::Body {
            size: got,
            root,
            validators,
            resumes,
            restarts,
            ..
        } = f
            .get(&name, &Validators::default(), &Limits::default())
            .await?
        else {
            anyhow::bail!("size {size}: no body");
        };
        ensure!(
            got == size as u64 && f.staged(&name) == bytes,
            "size {size}: bytes differ"
        );
        ensure!(
            root == blake3::hash(&bytes),
            "size {size}: root differs from BLAKE3"
        );
        let outboard = std::fs::read(ark_core::tree::outboard_path(&f.dest(&name)))?;
        ensure!(
            outboard.len() as u64 == (size as u64).div_ceil(ark_core::tree::GROUP_LEN as u64) * 32,
            "size {size}: outboard of {} bytes",
            outboard.len()
        );
        if size == 5 * 1024 * 1024 + 7 {
            // The tool a user would reach for agrees.
            ensure!(
                b3sum(&f.dest(&name))? == root.to_hex().as_str(),
                "b3sum disagrees"
            );
        }
        ensure!(resumes == 0 && restarts == 0);
        ensure!(
            validators.etag.is_some() && validators.last_modified.is_some(),
            "{validators:?}"
        );
        let before = f.origin.requests();
        let again = f.get(&name, &validators, &Limits::default()).await?;
        ensure!(again == Fetched::NotModified, "size {size}: {again:?}");
        let log = f.origin.log();
        ensure!(
            log.len() as u64 == before + 1,
            "more than one request for an unchanged origin"
        );
        let last = log.last().expect("logged");
        ensure!(last.conditional && last.status == 304, "{last:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_changed_origin_is_fetched_again() -> Result<()> {
    let f = Fixture::new().await?;
    let mut bytes = sample_bytes(100_000, 1);
    f.origin.put("doc", bytes.clone());
    let Fetched::Body { validators, .. } = f
        .get("doc", &Validators::default(), &Limits::default())
        .await?
    else {
        anyhow::bail!("no body");
    };
    bytes[54_321] ^= 0x01;
    f.origin.put("doc", bytes.clone());
    let again = f.get("doc", &validators, &Limits::default()).await?;
    ensure!(
        matches!(again, Fetched::Body { size: 100_000, .. }),
        "{again:?}"
    );
    ensure!(f.staged("doc") == bytes, "the flipped byte did not arrive");
    Ok(())
}

#[tokio::test]
async fn a_body_cut_three_times_resumes_by_range_for_every_size() -> Result<()> {
    let f = Fixture::new().await?;
    for (i, &size) in SIZES.iter().enumerate().filter(|(_, s)| **s > 3) {
        let name = format!("cut{size}");
        let bytes = sample_bytes(size, i as u8 + 40);
        f.origin.put(&name, bytes.clone());
        let cut = (size as u64 / 4).max(1);
        f.origin.cut_after(cut, 3);
        let before = f.origin.log().len();
        let fetched = f
            .get(&name, &Validators::default(), &Limits::default())
            .await?;
        ensure!(
            matches!(
                fetched,
                Fetched::Body {
                    resumes: 3,
                    restarts: 0,
                    ..
                }
            ),
            "size {size}: {fetched:?}"
        );
        ensure!(
            f.staged(&name) == bytes,
            "size {size}: resumed bytes differ"
        );
        let log = f.origin.log();
        let ranges: Vec<_> = log[before..].iter().map(|l| l.range.clone()).collect();
        let expected: Vec<_> = [None, Some(cut), Some(2 * cut), Some(3 * cut)]
            .iter()
            .map(|o| o.map(|o| format!("bytes={o}-")))
            .collect();
        ensure!(ranges == expected, "size {size}: ranges asked {ranges:?}");
    }
    Ok(())
}

#[tokio::test]
async fn an_origin_that_cannot_resume_restarts_from_zero_and_says_so() -> Result<()> {
    let f = Fixture::new().await?;
    let bytes = sample_bytes(300_000, 3);
    f.origin.put("norange", bytes.clone());
    f.origin.ignore_range(true);
    f.origin.cut_after(100_000, 1);
    let fetched = f
        .get("norange", &Validators::default(), &Limits::default())
        .await?;
    ensure!(
        matches!(
            fetched,
            Fetched::Body {
                resumes: 1,
                restarts: 1,
                size: 300_000,
                ..
            }
        ),
        "{fetched:?}"
    );
    ensure!(f.staged("norange") == bytes);
    ensure!(
        matches!(fetched, Fetched::Body { root, .. } if root == blake3::hash(&bytes)),
        "a restart from zero left the first attempt's bytes in the hash"
    );
    Ok(())
}

#[tokio::test]
async fn a_file_that_changes_mid_resume_is_fetched_whole_again() -> Result<()> {
    let f = Fixture::new().await?;
    f.origin.put("moving", sample_bytes(200_000, 1));
    f.origin.cut_after(50_000, 1);
    // The first response takes ~0.5 s to reach its cut at 50 000 bytes.
    f.origin.throttle(100_000);
    let (none, limits) = (Validators::default(), Limits::default());
    let fetch = f.get("moving", &none, &limits);
    let change = async {
        // Replace the file once the first response is on the wire, before
        // the cut: the resume that follows must notice.
        while f.progress.done.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        f.origin.put("moving", sample_bytes(200_000, 2));
        f.origin.throttle(0);
    };
    let (fetched, ()) = tokio::join!(fetch, change);
    let fetched = fetched?;
    // If-Range no longer matches: the origin sends the new version whole.
    ensure!(
        matches!(fetched, Fetched::Body { restarts: 1, .. }),
        "{fetched:?}"
    );
    ensure!(
        f.staged("moving") == sample_bytes(200_000, 2),
        "a mix of two versions was staged"
    );
    Ok(())
}

#[tokio::test]
async fn hostile_and_broken_origins_are_refused_with_a_reason() -> Result<()> {
    let f = Fixture::new().await?;
    // An error page served with 200.
    f.origin.put_typed(
        "page",
        b"<html><body>Oops, we moved!</body></html>".to_vec(),
        "text/html; charset=utf-8",
    );
    let err = f
        .get("page", &Validators::default(), &Limits::default())
        .await
        .expect_err("HTML became the file");
    ensure!(
        err.to_string().contains("HTML page") && !err.retryable(),
        "{err}"
    );
    ensure!(!f.dest("page").exists(), "a refused body was written");

    // Larger than the limit: refused from its Content-Length, before a byte.
    f.origin.put("huge", sample_bytes(2 << 20, 1));
    let small = Limits {
        max_size: 1 << 20,
        ..Limits::default()
    };
    let err = f
        .get("huge", &Validators::default(), &small)
        .await
        .expect_err("too large accepted");
    ensure!(
        matches!(
            err,
            FetchError::TooLarge {
                declared: Some(_),
                ..
            }
        ),
        "{err}"
    );
    ensure!(!f.dest("huge").exists());

    // A missing file: a status error, not worth retrying.
    let err = f
        .get("absent", &Validators::default(), &Limits::default())
        .await
        .expect_err("404 accepted");
    ensure!(
        matches!(err, FetchError::Status { .. })
            && err.to_string().contains("404")
            && !err.retryable(),
        "{err}"
    );

    // A drip: 64 bytes/s against a 1 KiB/s minimum over one second.
    f.origin.put("drip", sample_bytes(100_000, 2));
    f.origin.throttle(64);
    let strict = Limits {
        min_rate: 1024,
        min_rate_window: Duration::from_secs(1),
        read_timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let err = f
        .get("drip", &Validators::default(), &strict)
        .await
        .expect_err("drip accepted");
    ensure!(
        matches!(err, FetchError::TooSlow { .. }) && err.retryable(),
        "{err}"
    );
    f.origin.throttle(0);

    // An origin that keeps cutting: gives up after the allowed resumes.
    f.origin.put("flaky", sample_bytes(100_000, 3));
    f.origin.cut_after(1_000, 100);
    let few = Limits {
        max_resumes: 2,
        ..Limits::default()
    };
    let err = f
        .get("flaky", &Validators::default(), &few)
        .await
        .expect_err("endless cuts accepted");
    ensure!(
        matches!(err, FetchError::Interrupted { resumes: 2, .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_later_attempt_reuses_verified_bytes_and_refetches_from_a_flipped_group() -> Result<()> {
    use ark_core::tree::GROUP_LEN;
    let f = Fixture::new().await?;
    let no_resume = Limits {
        max_resumes: 0,
        ..Limits::default()
    };
    let size = 20 * GROUP_LEN + 99;
    for (name, flip) in [("intact", None), ("flipped", Some(4 * GROUP_LEN + 1234))] {
        let bytes = sample_bytes(size, 11);
        f.origin.put(name, bytes.clone());
        // The first attempt dies 500 bytes into group 10.
        f.origin.cut_after(10 * GROUP_LEN as u64 + 500, 1);
        let err = f
            .get(name, &Validators::default(), &no_resume)
            .await
            .expect_err("cut accepted");
        ensure!(matches!(err, FetchError::Interrupted { .. }), "{err}");
        ensure!(
            ark_agent::fetch::resume_path(&f.dest(name)).exists(),
            "no resume state left"
        );
        if let Some(at) = flip {
            // A byte flipped on disk while nobody was looking.
            let mut on_disk = std::fs::read(f.dest(name))?;
            on_disk[at] ^= 0x20;
            std::fs::write(f.dest(name), on_disk)?;
        }
        let before = f.origin.log().len();
        let fetched = f
            .get(name, &Validators::default(), &Limits::default())
            .await?;
        let expected_reuse = flip.map_or(10 * GROUP_LEN, |at| at / GROUP_LEN * GROUP_LEN) as u64;
        let Fetched::Body { root, reused, .. } = fetched else {
            anyhow::bail!("{name}: no body");
        };
        ensure!(
            reused == expected_reuse,
            "{name}: reused {reused}, expected {expected_reuse}"
        );
        ensure!(
            root == blake3::hash(&bytes) && f.staged(name) == bytes,
            "{name}: wrong bytes"
        );
        let log = f.origin.log();
        ensure!(
            log[before].range == Some(format!("bytes={expected_reuse}-")),
            "{name}: resumed with {:?}",
            log[before].range
        );
        ensure!(
            !ark_agent::fetch::resume_path(&f.dest(name)).exists(),
            "resume state outlived the fetch"
        );
    }
    Ok(())
}

#[tokio::test]
async fn lying_endless_looping_and_compressed_origins() -> Result<()> {
    let f = Fixture::new().await?;
    let none = Validators::default();

    // Declares more than it sends, every time: cut, resumed, cut again…
    f.origin.hostile(
        "liar",
        Hostile::LieLength {
            declared: 100_000,
            bytes: std::sync::Arc::new(sample_bytes(60_000, 1)),
        },
    );
    let few = Limits {
        max_resumes: 2,
        ..Limits::default()
    };
    let err = f
        .get("liar", &none, &few)
        .await
        .expect_err("short body accepted");
    ensure!(
        matches!(err, FetchError::Interrupted { resumes: 2, .. }),
        "{err}"
    );

    // No length and no end: stopped at the size limit.
    f.origin.hostile("endless", Hostile::Endless);
    let capped = Limits {
        max_size: 1 << 20,
        ..Limits::default()
    };
    let err = f
        .get("endless", &none, &capped)
        .await
        .expect_err("endless body accepted");
    ensure!(
        matches!(err, FetchError::TooLarge { declared: None, .. }),
        "{err}"
    );

    // A redirect to itself: bounded, named, and not worth retrying.
    f.origin.hostile("loop", Hostile::RedirectTo("loop".into()));
    let before = f.origin.log().len();
    let err = f
        .get("loop", &none, &Limits::default())
        .await
        .expect_err("redirect loop followed");
    ensure!(
        err.to_string().contains("redirect") && !err.retryable(),
        "{err}"
    );
    let followed = f.origin.log().len() - before;
    // The first request, the redirects followed, and the one whose answer
    // tipped the count over: a loop costs a handful of requests, no more.
    ensure!(
        followed <= ark_agent::fetch::MAX_REDIRECTS + 2,
        "followed {followed} redirects"
    );

    // A gzip bomb: 100 MiB of zeros in ~100 KiB. Stored as sent, never expanded.
    let bomb = std::process::Command::new("sh")
        .args(["-c", "head -c 104857600 /dev/zero | gzip -9"])
        .output()?
        .stdout;
    ensure!(bomb.len() < 200_000, "the bomb is {} bytes", bomb.len());
    f.origin.hostile(
        "bomb.gz",
        Hostile::WithHeaders {
            headers: vec![
                ("Content-Encoding".into(), "gzip".into()),
                ("Content-Type".into(), "application/octet-stream".into()),
            ],
            bytes: std::sync::Arc::new(bomb.clone()),
        },
    );
    let fetched = f.get("bomb.gz", &none, &capped).await?;
    ensure!(
        matches!(fetched, Fetched::Body { size, .. } if size == bomb.len() as u64),
        "{fetched:?}"
    );
    ensure!(f.staged("bomb.gz") == bomb, "the body was decoded");
    Ok(())
}

/// The same fetch against a real server: Debian's nginx, behind a proxy
/// that drops the first connection mid-body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_as_the_origin_resumes_by_range_and_answers_conditional_requests() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www)?;
    let bytes = sample_bytes(3 * 1024 * 1024 + 333, 21);
    std::fs::write(www.join("archive.zim"), &bytes)?;
    let nginx = ark_tests::Nginx::start(&tmp.path().join("nginx"), &www).await?;
    let proxy = ark_tests::CuttingProxy::start(nginx.addr, 1_000_000, 1).await?;
    let url = format!("http://{}/archive.zim", proxy.addr);

    let http = ark_agent::fetch::http_client()?;
    let (throttle, progress, counter) = (
        Throttle::new(0),
        ark_agent::fetch::Progress::default(),
        ByteCounter::default(),
    );
    let sinks = Sinks {
        throttle: &throttle,
        run_throttle: None,
        progress: &progress,
        counter: &counter,
        self_yield: None,
    };
    let dest = tmp.path().join("staging/archive.zim.part");
    let fetched = fetch(
        &http,
        &url,
        &dest,
        &Validators::default(),
        &ark_tests::loopback_limits(),
        sinks,
    )
    .await?;
    let Fetched::Body {
        root,
        validators,
        resumes,
        restarts,
        ..
    } = fetched
    else {
        anyhow::bail!("no body: {fetched:?}");
    };
    ensure!(
        resumes == 1 && restarts == 0,
        "resumes {resumes}, restarts {restarts}"
    );
    ensure!(
        root == blake3::hash(&bytes) && std::fs::read(&dest)? == bytes,
        "bytes differ"
    );
    // nginx logs a request after answering it: give the line a moment.
    let logged = |status: &'static str| {
        let log = nginx.access_log();
        async move { Ok(log.lines().any(|l| l.contains(status))) }
    };
    ark_tests::wait_until(Duration::from_secs(5), "nginx to log a 206", || {
        logged("\" 206 ")
    })
    .await
    .with_context(|| nginx.access_log())?;

    let again = fetch(
        &http,
        &url,
        &dest,
        &validators,
        &ark_tests::loopback_limits(),
        sinks,
    )
    .await?;
    ensure!(again == Fetched::NotModified, "{again:?}");
    ark_tests::wait_until(Duration::from_secs(5), "nginx to log a 304", || {
        logged("\" 304 ")
    })
    .await
    .with_context(|| nginx.access_log())?;
    Ok(())
}

#[tokio::test]
async fn leftovers_that_no_longer_verify_are_removed_when_the_origin_is_unchanged() -> Result<()> {
    let f = Fixture::new().await?;
    f.origin.put("stale", sample_bytes(100_000, 5));
    let Fetched::Body { validators, .. } = f
        .get("stale", &Validators::default(), &Limits::default())
        .await?
    else {
        anyhow::bail!("no body");
    };
    // A later attempt dies part-way and its first group rots on disk.
    f.origin.cut_after(40_000, 1);
    let no_resume = Limits {
        max_resumes: 0,
        ..Limits::default()
    };
    f.get("stale", &Validators::default(), &no_resume)
        .await
        .expect_err("cut accepted");
    let mut on_disk = std::fs::read(f.dest("stale"))?;
    on_disk[0] ^= 1;
    std::fs::write(f.dest("stale"), on_disk)?;
    // Nothing verifies, so the fetch asks "changed since?" and gets 304.
    let fetched = f.get("stale", &validators, &Limits::default()).await?;
    ensure!(fetched == Fetched::NotModified, "{fetched:?}");
    let dest = f.dest("stale");
    for left in [
        dest.clone(),
        ark_core::tree::outboard_path(&dest),
        ark_agent::fetch::resume_path(&dest),
    ] {
        ensure!(!left.exists(), "{} left behind", left.display());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_cut_three_times_resumes_by_range_to_the_same_root_as_b3sum() -> Result<()> {
    const SIZE: usize = 1 << 30;
    let f = Fixture::new().await?;
    // Incompressible and cheap to make: xorshift64 words.
    let mut bytes = vec![0u8; SIZE];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for word in bytes.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
    let expected = blake3::hash(&bytes);
    f.origin.put("big.iso", bytes);
    // Cut at 300 MiB into each response: 300, 600 and 900 MiB.
    let cut = 300u64 << 20;
    f.origin.cut_after(cut, 3);
    let fetched = f
        .get("big.iso", &Validators::default(), &Limits::default())
        .await?;
    let Fetched::Body {
        size,
        root,
        resumes,
        restarts,
        ..
    } = fetched
    else {
        anyhow::bail!("no body: {fetched:?}");
    };
    ensure!(
        size == SIZE as u64 && resumes == 3 && restarts == 0,
        "size {size}, {resumes} resumes, {restarts} restarts"
    );
    let ranges: Vec<_> = f.origin.log().iter().map(|l| l.range.clone()).collect();
    ensure!(
        ranges
            == vec![
                None,
                Some(format!("bytes={cut}-")),
                Some(format!("bytes={}-", 2 * cut)),
                Some(format!("bytes={}-", 3 * cut)),
            ],
        "ranges asked: {ranges:?}"
    );
    ensure!(root == expected, "the agent's root differs from BLAKE3");
    ensure!(
        b3sum(&f.dest("big.iso"))? == root.to_hex().as_str(),
        "b3sum disagrees with the agent's root"
    );
    Ok(())
}

#[tokio::test]
async fn a_zim_cut_three_times_passes_its_streaming_check_and_a_damaged_one_does_not() -> Result<()>
{
    let dir = ark_tests::zim_fixtures()?;
    let small = std::fs::read(dir.join("wikibooks_be_all_nopic_2017-02.zim"))?;
    let f = Fixture::new().await?;
    let mut damaged = small.clone();
    damaged[100_000] ^= 0x08;
    for (name, bytes, sound) in [("good.zim", &small, true), ("bad.zim", &damaged, false)] {
        f.origin.put(name, bytes.clone());
        f.origin.cut_after(50_000, 3);
        let mut check = ark_core::formats::zim::StreamCheck::new();
        let fetched = f
            .get_checked(
                name,
                &Validators::default(),
                &Limits::default(),
                Some(&mut check),
            )
            .await?;
        let Fetched::Body { size, resumes, .. } = fetched else {
            anyhow::bail!("{name}: no body");
        };
        ensure!(resumes == 3, "{name}: {resumes} resumes");
        let verdict = check.finish(size);
        ensure!(verdict.is_ok() == sound, "{name}: {verdict:?}");
        if !sound {
            ensure!(format!("{verdict:?}").contains("MD5"), "{verdict:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_zim_resumed_from_disk_feeds_its_kept_bytes_to_the_check_first() -> Result<()> {
    let zim = std::fs::read(ark_tests::zim_fixtures()?.join("wikibooks_be_all_nopic_2017-02.zim"))?;
    let f = Fixture::new().await?;
    f.origin.put("w.zim", zim.clone());
    let checked = |limits: Limits| {
        let f = &f;
        async move {
            let mut check = ark_core::formats::zim::StreamCheck::new();
            let fetched = f
                .get_checked("w.zim", &Validators::default(), &limits, Some(&mut check))
                .await;
            (fetched, check)
        }
    };
    // The first attempt dies 100 kB in (an agent stopped, say) ...
    f.origin.cut_after(100_000, 1);
    let (first, _) = checked(Limits {
        max_resumes: 0,
        ..Limits::default()
    })
    .await;
    ensure!(
        matches!(first, Err(FetchError::Interrupted { .. })),
        "{first:?}"
    );
    // ... and a fresh attempt, with a fresh check, resumes from disk.
    let before = f.origin.log().len();
    let (second, check) = checked(Limits::default()).await;
    let Fetched::Body { size, reused, .. } = second? else {
        anyhow::bail!("no body");
    };
    ensure!(reused > 0, "nothing was kept from disk");
    ensure!(
        f.origin.log()[before].range == Some(format!("bytes={reused}-")),
        "{:?}",
        f.origin.log()[before]
    );
    // The MD5 covers the whole file only if the kept bytes went through it.
    let header = check.finish(size).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(header.entry_count == 123, "{header:?}");
    Ok(())
}

/// Issue 15, defect 1: a resume must never splice two versions. The origin
/// here answers every range from whatever it holds now, ignoring
/// `If-Range` (a broken cache or CDN): the agent must see from the
/// validators that the bytes are another version and begin again from zero.
#[tokio::test]
async fn regression_a_resume_never_splices_two_versions() -> Result<()> {
    let none = Validators::default();
    // (case, v2 length, hide the 206's validators)
    let cases = [
        ("same length, new ETag", 200_000, false),
        ("longer", 260_000, false),
        ("shorter", 120_000, false),
        ("206 without validators", 200_000, true),
    ];
    for (case, v2_len, hide) in cases {
        let f = Fixture::new().await?;
        let (v1, v2) = (sample_bytes(200_000, 1), sample_bytes(v2_len, 2));
        f.origin.put("moving", v1);
        f.origin.ignore_if_range(true);
        f.origin.hide_range_validators(hide);
        f.origin.cut_after(50_000, 1);
        f.origin.throttle(100_000);
        let limits = Limits::default();
        let fetch = f.get("moving", &none, &limits);
        let change = async {
            while f.progress.done.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // A new version appears before the resume.
            f.origin.put("moving", v2.clone());
            f.origin.throttle(0);
        };
        let (fetched, ()) = tokio::join!(fetch, change);
        let fetched = fetched.with_context(|| case.to_string())?;
        let Fetched::Body {
            root,
            restarts,
            size,
            ..
        } = fetched
        else {
            anyhow::bail!("{case}: no body");
        };
        ensure!(
            restarts >= 1,
            "{case}: the resume was appended ({fetched:?})"
        );
        ensure!(
            f.staged("moving") == v2 && root == blake3::hash(&v2) && size == v2_len as u64,
            "{case}: a file that never existed at the origin was staged"
        );
        let ranged_206 = f.origin.log().iter().filter(|l| l.status == 206).count();
        ensure!(
            ranged_206 >= 1,
            "{case}: the origin was never asked for a range"
        );
    }

    // The same after a crash: the kept bytes' validators come from their
    // resume state on disk, and the origin has moved on meanwhile.
    let f = Fixture::new().await?;
    f.origin.put("kept", sample_bytes(300_000, 3));
    f.origin.ignore_if_range(true);
    f.origin.cut_after(100_000, 1);
    let no_resume = Limits {
        max_resumes: 0,
        ..Limits::default()
    };
    let err = f
        .get("kept", &none, &no_resume)
        .await
        .expect_err("a cut with no resumes allowed succeeded");
    ensure!(matches!(err, FetchError::Interrupted { .. }), "{err}");
    let v2 = sample_bytes(300_000, 4);
    f.origin.put("kept", v2.clone());
    let fetched = f.get("kept", &none, &Limits::default()).await?;
    ensure!(
        matches!(fetched, Fetched::Body { restarts: 1, .. }),
        "{fetched:?}"
    );
    ensure!(
        f.origin.log().iter().any(|l| l.status == 206),
        "the kept bytes were never resumed from"
    );
    ensure!(
        f.staged("kept") == v2,
        "kept bytes of v1 were spliced with v2"
    );
    Ok(())
}

/// Issue 15, defect 3: an HTML page served with a non-HTML type never lands
/// as the file, whatever its first bytes look like; a URL that asks for a
/// page still gets it.
#[tokio::test]
async fn regression_an_html_page_served_as_a_file_is_refused_by_its_first_bytes() -> Result<()> {
    let f = Fixture::new().await?;
    let mut long_comment = b"<!-- ".to_vec();
    long_comment.extend(std::iter::repeat_n(b'-', 100_000));
    long_comment.extend_from_slice(b" -->\n<html><body>gone</body></html>");
    let pages: Vec<(&str, Vec<u8>, &str)> = vec![
        ("doctype", b"<!DOCTYPE html><html><body>We moved</body></html>".to_vec(), "application/octet-stream"),
        ("bom", b"\xEF\xBB\xBF\r\n  <HTML><HEAD><TITLE>404</TITLE>".to_vec(), "application/x-zim"),
        ("comment", b"<!-- cdn edge 17 -->\n<head><meta charset=utf-8>".to_vec(), "application/zip"),
        ("xhtml", b"<?xml version=\"1.0\"?>\n<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0//EN\">\n<html xmlns=\"http://www.w3.org/1999/xhtml\">".to_vec(), "application/xml"),
        ("untyped", b"<body onload=\"location='/login'\">".to_vec(), ""),
        ("long-comment", long_comment, "application/octet-stream"),
    ];
    for (name, page, content_type) in &pages {
        let file = format!("{name}.iso");
        if content_type.is_empty() {
            f.origin.hostile(
                &file,
                Hostile::WithHeaders {
                    headers: vec![],
                    bytes: std::sync::Arc::new(page.clone()),
                },
            );
        } else {
            f.origin.put_typed(&file, page.clone(), content_type);
        }
        let err = f
            .get(&file, &Validators::default(), &Limits::default())
            .await
            .expect_err("an HTML page became the file");
        ensure!(
            err.to_string().contains("HTML page") && !err.retryable(),
            "{name}: {err}"
        );
        ensure!(
            !f.dest(&file).exists(),
            "{name}: the refused page stayed staged"
        );
    }
    // Not HTML, though it starts with '<': kept.
    for (name, body) in [
        (
            "drawing.svg",
            &b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>"[..],
        ),
        (
            "notes.xml",
            b"<?xml version=\"1.0\"?><paragraphs><p>1</p></paragraphs>",
        ),
    ] {
        f.origin.put(name, body.to_vec());
        let fetched = f
            .get(name, &Validators::default(), &Limits::default())
            .await?;
        ensure!(
            matches!(fetched, Fetched::Body { .. }),
            "{name}: {fetched:?}"
        );
    }
    // A URL that asks for a page gets the page.
    f.origin
        .put_typed("index.html", pages[0].1.clone(), "text/html");
    let fetched = f
        .get("index.html", &Validators::default(), &Limits::default())
        .await?;
    ensure!(matches!(fetched, Fetched::Body { .. }), "{fetched:?}");
    Ok(())
}

// The ingest pipeline (issue 14): the fetch task hands what it accepts to a
// hasher, a writer and a syncer, each on a thread of its own, through
// bounded channels. What that can break: bytes lost or written twice
// around a cut, a stage writing on after the fetch is gone, a checkpoint
// ahead of what is written, an error that never reaches the fetch.

/// Cuts where the pipeline has work in flight: inside the first batch, just
/// past one, just past the first write-back request, just past a group.
/// Each resume starts exactly where the accepted bytes end, nothing is
/// appended twice, and the root is b3sum's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_under_a_cut_resumes_where_the_accepted_bytes_end() -> Result<()> {
    use ark_agent::fetch::{BATCH_BYTES, WRITEBACK_BYTES};
    use ark_core::tree::{outboard_path, GROUP_LEN};
    let f = Fixture::new().await?;
    let size = 3 * WRITEBACK_BYTES as usize + 12_345;
    let batch = BATCH_BYTES as u64;
    let cuts = [
        batch - 1,
        batch + 1,
        WRITEBACK_BYTES + 7,
        5 * GROUP_LEN as u64 + 3,
    ];
    for (seed, cut) in cuts.into_iter().enumerate() {
        let name = format!("cut-{cut}.bin");
        let bytes = sample_bytes(size, seed as u8 + 40);
        f.origin.put(&name, bytes.clone());
        // Every response is cut `cut` bytes in: at cut, 2·cut and 3·cut.
        f.origin.cut_after(cut, 3);
        let before = f.origin.log().len();
        let fetched = f
            .get(&name, &Validators::default(), &Limits::default())
            .await?;
        let Fetched::Body {
            size: got,
            root,
            resumes,
            restarts,
            ..
        } = fetched
        else {
            anyhow::bail!("{name}: no body: {fetched:?}");
        };
        ensure!(
            got == size as u64 && resumes == 3 && restarts == 0,
            "{name}: size {got}, {resumes} resumes, {restarts} restarts"
        );
        let ranges: Vec<_> = f.origin.log()[before..]
            .iter()
            .map(|l| l.range.clone())
            .collect();
        let expected: Vec<_> = (0..4u64)
            .map(|n| (n > 0).then(|| format!("bytes={}-", n * cut)))
            .collect();
        ensure!(ranges == expected, "{name}: ranges asked {ranges:?}");
        let staged = f.staged(&name);
        ensure!(
            staged.len() == size,
            "{name}: {} bytes staged for a body of {size}",
            staged.len()
        );
        ensure!(staged == bytes, "{name}: the staged bytes differ");
        ensure!(
            root == blake3::hash(&bytes) && b3sum(&f.dest(&name))? == root.to_hex().as_str(),
            "{name}: the root differs from b3sum's"
        );
        let outboard = std::fs::metadata(outboard_path(&f.dest(&name)))?.len();
        ensure!(
            outboard == (size as u64).div_ceil(GROUP_LEN as u64) * 32,
            "{name}: outboard of {outboard} bytes"
        );
        ensure!(
            !ark_agent::fetch::resume_path(&f.dest(&name)).exists(),
            "{name}: resume state outlived the fetch"
        );
    }
    Ok(())
}

/// A crash between the pipeline's stages: the fetch future is dropped while
/// the origin is still sending and batches are on their way from the fetch
/// task to the hasher and the writer. Once it is dropped no stage writes
/// the files; the recorded checkpoint names no group whose bytes or CV are
/// not written; the next attempt resumes from it — or past it, from every
/// group whose bytes and CV were both written and agree — and ends
/// byte-correct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_dropped_with_batches_in_flight_resumes_from_its_last_checkpoint() -> Result<()> {
    use ark_core::tree::{outboard_path, GROUP_LEN};
    use std::sync::atomic::Ordering;
    let f = Fixture::new().await?;
    let name = "dropped.bin";
    let size = 24 << 20;
    let bytes = sample_bytes(size, 77);
    f.origin.put(name, bytes.clone());
    // 8 MiB/s: a checkpoint is recorded after 4 MiB and a second.
    f.origin.throttle(8 << 20);
    let (dest, resume) = (f.dest(name), ark_agent::fetch::resume_path(&f.dest(name)));
    let (none, limits) = (Validators::default(), Limits::default());
    {
        let fetch = f.get(name, &none, &limits);
        tokio::pin!(fetch);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            tokio::select! {
                done = &mut fetch => anyhow::bail!("the fetch ended before it was dropped: {done:?}"),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            // While it runs, every recorded checkpoint is behind what is
            // written (read first: the files only grow).
            if let Ok(state) = std::fs::read(&resume) {
                let groups = recorded_groups(&state)?;
                let (data, cvs) = (
                    std::fs::metadata(&dest)?.len(),
                    std::fs::metadata(outboard_path(&dest))?.len(),
                );
                ensure!(
                    groups * GROUP_LEN as u64 <= data && groups * 32 <= cvs,
                    "a checkpoint names {groups} groups; {data} bytes and {cvs} bytes of outboard written"
                );
                if f.progress.done.load(Ordering::Relaxed) >= 12 << 20 {
                    break;
                }
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "no checkpoint recorded in 30 s"
            );
        }
    }
    let (len, state) = (std::fs::metadata(&dest)?.len(), std::fs::read(&resume)?);
    let outboard = std::fs::metadata(outboard_path(&dest))?.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ensure!(
        std::fs::metadata(&dest)?.len() == len
            && std::fs::metadata(outboard_path(&dest))?.len() == outboard
            && std::fs::read(&resume)? == state,
        "a stage went on writing after the fetch was dropped"
    );
    let groups = recorded_groups(&state)?;
    let recorded = groups * GROUP_LEN as u64;
    ensure!(
        recorded > 0 && recorded <= len && groups * 32 <= outboard,
        "the checkpoint names {groups} groups; {len} bytes and {outboard} bytes of outboard written"
    );
    f.origin.throttle(0);
    let before = f.origin.log().len();
    let fetched = f
        .get(name, &Validators::default(), &Limits::default())
        .await?;
    let Fetched::Body { root, reused, .. } = fetched else {
        anyhow::bail!("no body: {fetched:?}");
    };
    let written = len.min(outboard / 32 * GROUP_LEN as u64);
    ensure!(
        reused >= recorded && reused <= written && reused % GROUP_LEN as u64 == 0,
        "reused {reused}; the checkpoint named {recorded}, {written} bytes had their CVs written"
    );
    ensure!(
        f.origin.log()[before].range == Some(format!("bytes={reused}-")),
        "resumed with {:?}",
        f.origin.log()[before].range
    );
    ensure!(
        root == blake3::hash(&bytes) && f.staged(name) == bytes,
        "the resumed file differs"
    );
    Ok(())
}

/// The groups a resume state names.
fn recorded_groups(state: &[u8]) -> Result<u64> {
    serde_json::from_slice::<serde_json::Value>(state)?["groups"]
        .as_u64()
        .context("no groups in the resume state")
}

/// An I/O error in the writer stage ends the fetch with that error — the
/// disk is full, so another agent may do better — and not with a hang,
/// whether the body is smaller than the pipeline's buffers or larger. The
/// staging file is a link to /dev/full, which takes no byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_error_in_the_pipeline_is_the_fetchs_error_not_a_hang() -> Result<()> {
    let f = Fixture::new().await?;
    for size in [100, 8 << 20] {
        let name = format!("full-{size}.bin");
        f.origin.put(&name, sample_bytes(size, 5));
        std::os::unix::fs::symlink("/dev/full", f.dest(&name))?;
        let fetched = tokio::time::timeout(
            Duration::from_secs(30),
            f.get(&name, &Validators::default(), &Limits::default()),
        )
        .await
        .with_context(|| format!("{name}: the fetch hung after its writer failed"))?;
        let err = fetched.expect_err("a fetch into /dev/full succeeded");
        ensure!(
            matches!(err, FetchError::Io { .. }) && err.out_of_space() && err.retryable(),
            "{name}: {err}"
        );
        ensure!(err.to_string().contains(&name), "{name}: {err}");
    }
    Ok(())
}
