//! The dashboard and `/metrics` with the real binaries: the metrics parse
//! with an independent Prometheus parser and move when runs land, the HTTP
//! server's protection holds from loopback (the policy for other peers is
//! unit-tested in `commander/src/web/auth.rs`), and a headless Chromium
//! sees the swarm live and pauses it. What belongs here: anything a person
//! or a scraper does through the commander's HTTP port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_demo::sample_bytes;
use ark_tests::webdriver::Browser;
use ark_tests::*;
use prometheus_parse::{Scrape, Value};

/// Generous bound for anything that should take a few heartbeats.
const SOON: Duration = Duration::from_secs(20);

/// A commander serving its dashboard on a free loopback port; returns the
/// process and the dashboard's base URL.
async fn commander_with_dashboard(cdata: &Path) -> Result<(Proc, String)> {
    let proc = spawn_commander_with(cdata, "127.0.0.1:0", &["--http", "127.0.0.1:0"], &[]).await?;
    let url = ark_commander::web::endpoint(cdata)?;
    ensure!(url.starts_with("http://127.0.0.1:"), "dashboard at {url}");
    Ok((proc, url))
}

fn http() -> reqwest::Client {
    ark_agent::link::install_crypto_provider();
    reqwest::Client::new()
}

async fn scrape(base: &str) -> Result<Scrape> {
    let resp = http().get(format!("{base}/metrics")).send().await?;
    ensure!(resp.status() == 200, "/metrics: {}", resp.status());
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = resp.text().await?;
    Ok(Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?)
}

/// The value of the sample `name` whose labels include `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .with_context(|| format!("no sample {name}{labels:?}"))?;
    Ok(match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map(|b| b.count).unwrap_or(0.0),
        Value::Summary(_) => anyhow::bail!("{name} is a summary"),
    })
}

async fn api_state(base: &str) -> Result<serde_json::Value> {
    let resp = http().get(format!("{base}/api/state")).send().await?;
    ensure!(resp.status() == 200, "/api/state: {}", resp.status());
    Ok(serde_json::from_str(&resp.text().await?)?)
}

/// A POST as the page sends it (with the CSRF header); returns the status.
async fn page_post(base: &str, path: &str) -> Result<reqwest::Response> {
    Ok(http()
        .post(format!("{base}{path}"))
        .header(ark_commander::web::CSRF_HEADER, "1")
        .send()
        .await?)
}

fn swarm_paused(cdata: &Path) -> Result<bool> {
    let (ok, stdout, stderr) = commander_cli(cdata, &["status", "--json"])?;
    ensure!(ok, "status failed: {stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout)?;
    status["swarm_paused"]
        .as_bool()
        .context("no swarm_paused in status --json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_when_runs_land() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let (_commander, base) = commander_with_dashboard(&cdata).await?;

    let before = scrape(&base).await?;
    for family in ark_commander::web::metrics::FAMILIES {
        ensure!(before.docs.contains_key(*family), "no # HELP for {family}");
    }
    ensure!(value(&before, "ark_bytes_harvested_total", &[])? == 0.0);
    ensure!(value(&before, "ark_agents", &[("state", "online")])? == 0.0);
    ensure!(
        value(
            &before,
            "ark_verification_failures_total",
            &[("reason", "zim")]
        )? == 0.0
    );

    let origin = Origin::start().await?;
    let bytes = sample_bytes(345_678, 3);
    origin.put("a/one.bin", bytes.clone());
    origin.put("b/same.bin", bytes.clone());
    let adata = tmp.path().join("picker");
    enroll_agent(&cdata, &adata, "picker").await?;
    let _agent = spawn_agent(&adata)?;
    add_file_target(&cdata, "one", &origin.url("a/one.bin")).await?;
    let first = run_of(&cdata, "one").await?;
    wait_for_run(&cdata, first, "succeeded", SOON).await?;

    let landed = scrape(&base).await?;
    let size = bytes.len() as f64;
    ensure!(value(&landed, "ark_agents", &[("state", "online")])? == 1.0);
    ensure!(
        value(
            &landed,
            "ark_runs",
            &[("state", "succeeded"), ("kind", "file")]
        )? == 1.0
    );
    ensure!(value(&landed, "ark_bytes_harvested_total", &[])? == size);
    ensure!(value(&landed, "ark_bytes_deduplicated_total", &[])? == 0.0);
    ensure!(
        value(&landed, "ark_landing_seconds", &[])? == 1.0,
        "one landing observed"
    );
    ensure!(
        value(&landed, "ark_upload_seconds", &[])? == 1.0,
        "one upload observed"
    );

    // The same bytes under a second target land as a link: deduplicated,
    // not harvested again.
    add_file_target(&cdata, "two", &origin.url("b/same.bin")).await?;
    let second = run_of(&cdata, "two").await?;
    wait_for_run(&cdata, second, "succeeded", SOON).await?;
    let linked = scrape(&base).await?;
    ensure!(
        value(
            &linked,
            "ark_runs",
            &[("state", "succeeded"), ("kind", "file")]
        )? == 2.0
    );
    ensure!(value(&linked, "ark_bytes_harvested_total", &[])? == size);
    ensure!(value(&linked, "ark_bytes_deduplicated_total", &[])? == size);
    ensure!(value(&linked, "ark_landing_seconds", &[])? == 2.0);

    // The JSON the page renders says the same.
    let state = api_state(&base).await?;
    ensure!(state["swarm_paused"] == false);
    ensure!(state["agents"][0]["name"] == "picker" && state["agents"][0]["state"] == "online");
    ensure!(state["agents"][0]["arch"]
        .as_str()
        .is_some_and(|a| !a.is_empty()));
    let runs = state["runs"].as_array().context("runs")?;
    ensure!(
        runs.len() == 2 && runs.iter().all(|r| r["state"] == "succeeded"),
        "{runs:?}"
    );
    let file = &state["archive"][0];
    ensure!(file["kind"] == "file" && file["versions"] == 2, "{file}");
    ensure!(file["bytes"] == 2 * bytes.len() as u64, "{file}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_need_the_csrf_header_or_the_token_and_foreign_hosts_are_refused() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let (_commander, base) = commander_with_dashboard(&cdata).await?;
    enroll_agent(&cdata, &tmp.path().join("solo"), "solo").await?;
    let http = http();

    // The token: 32 random bytes in hex, readable by the owner only.
    let token_path = cdata.join(ark_commander::web::TOKEN_FILE);
    let token = std::fs::read_to_string(&token_path)?;
    ensure!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token:?}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path)?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "web-token is {mode:o}");
    }

    // A POST as a cross-site form would send it: refused, nothing paused.
    let bare = http.post(format!("{base}/api/pause")).send().await?;
    ensure!(
        bare.status() == 403,
        "pause without the header: {}",
        bare.status()
    );
    ensure!(bare.text().await?.contains("X-Ark-Csrf"));
    ensure!(!swarm_paused(&cdata)?, "a refused pause paused the swarm");

    // With the header (what the page sends): paused, as the CLI sees it.
    let paused = page_post(&base, "/api/pause").await?;
    ensure!(paused.status() == 200, "pause: {}", paused.status());
    ensure!(swarm_paused(&cdata)?, "the swarm is not paused");
    ensure!(api_state(&base).await?["swarm_paused"] == true);
    let resumed = page_post(&base, "/api/resume").await?;
    ensure!(resumed.status() == 200, "resume: {}", resumed.status());
    ensure!(!swarm_paused(&cdata)?, "the swarm is still paused");

    // One agent; an unknown one is a 404 that says so.
    let one = page_post(&base, "/api/pause?agent=solo").await?;
    ensure!(one.status() == 200, "pause solo: {}", one.status());
    ensure!(agents(&cdata)
        .await?
        .iter()
        .any(|a| a.name == "solo" && a.paused));
    ensure!(!swarm_paused(&cdata)?, "pausing one agent paused the swarm");
    let unknown = page_post(&base, "/api/pause?agent=nobody").await?;
    ensure!(
        unknown.status() == 404,
        "unknown agent: {}",
        unknown.status()
    );
    ensure!(unknown.text().await?.contains("nobody"));

    // The admin token allows a change without the header; a wrong one is
    // refused even from loopback.
    let with_token = http
        .post(format!("{base}/api/resume?agent=solo"))
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(with_token.status() == 200, "{}", with_token.status());
    ensure!(agents(&cdata)
        .await?
        .iter()
        .any(|a| a.name == "solo" && !a.paused));
    let wrong = http
        .get(format!("{base}/metrics"))
        .bearer_auth("0".repeat(64))
        .send()
        .await?;
    ensure!(wrong.status() == 401, "wrong token: {}", wrong.status());

    // A page reached under another name (DNS rebinding) reads nothing.
    let rebound = http
        .get(format!("{base}/api/state"))
        .header("host", "evil.example")
        .send()
        .await?;
    ensure!(
        rebound.status() == 403,
        "foreign Host: {}",
        rebound.status()
    );
    let rebound_with_token = http
        .get(format!("{base}/api/state"))
        .header("host", "evil.example")
        .bearer_auth(&token)
        .send()
        .await?;
    ensure!(rebound_with_token.status() == 200);

    // The page itself holds no data; it forbids framing and inline sources
    // other than its own.
    let page = http.get(format!("{base}/")).send().await?;
    ensure!(page.status() == 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(csp.contains("frame-ancestors 'none'"), "{csp}");
    ensure!(page.text().await?.contains("/api/state"));
    Ok(())
}

/// Where the screenshot goes: `$ARK_DASHBOARD_SCREENSHOT` (the README's
/// `docs/dashboard.png` is made with it), else the test's temp dir.
fn screenshot_path(tmp: &Path) -> PathBuf {
    std::env::var_os("ARK_DASHBOARD_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.join("dashboard.png"))
}

/// Waits until the first element matching `selector` shows `text`.
async fn wait_for_text(browser: &Browser, selector: &str, text: &str) -> Result<()> {
    let what = format!("{selector} to show {text:?}");
    let waited = wait_until(SOON, &what, || async move {
        Ok(browser.text(selector).await?.as_deref() == Some(text))
    })
    .await;
    if waited.is_err() {
        let last = browser.text(selector).await;
        let page = browser.source().await;
        return waited.with_context(|| format!("last seen: {last:?}; the page: {page:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sees_the_swarm_live_and_its_buttons_pause_and_resume() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let (_commander, base) = commander_with_dashboard(&cdata).await?;
    let origin = Origin::start().await?;
    let mut agents = Vec::new();
    for name in ["kitchen-pi", "attic-laptop"] {
        let adata = tmp.path().join(name);
        enroll_agent(&cdata, &adata, name).await?;
        agents.push(spawn_agent(&adata)?);
    }

    let browser = Browser::start(1280, 900).await?;
    browser.goto(&format!("{base}/")).await?;
    wait_for_text(&browser, "#swarm-state", "running").await?;
    for name in ["kitchen-pi", "attic-laptop"] {
        wait_for_text(
            &browser,
            &format!("#agents tr[data-agent=\"{name}\"] td.state"),
            "online",
        )
        .await?;
    }

    // Runs land while the page stays open: it shows them without a reload.
    let files = [
        ("wikipedia_en_top.zim", 900_000),
        ("podcast-ep42.mp3", 420_000),
        ("notes.txt", 12_000),
    ];
    for (i, (name, size)) in files.iter().enumerate() {
        origin.put(name, sample_bytes(*size, i as u8));
        add_file_target(
            &cdata,
            name.split('.').next().unwrap_or(name),
            &origin.url(name),
        )
        .await?;
    }
    let mut ids = Vec::new();
    for (name, _) in &files {
        ids.push(run_of(&cdata, name.split('.').next().unwrap_or(name)).await?);
    }
    for id in &ids {
        wait_for_text(
            &browser,
            &format!("#runs tr[data-run=\"{id}\"] td.state"),
            "succeeded",
        )
        .await?;
        // Every decision is explained: who was chosen, and why.
        let placed = browser
            .text(&format!("#runs tr[data-run=\"{id}\"] td.placement"))
            .await?
            .unwrap_or_default();
        ensure!(placed.starts_with("placed on "), "run {id}: {placed:?}");
    }
    wait_for_text(
        &browser,
        "#archive .kind[data-kind=\"file\"] .total",
        "3 versions · 1.3 MiB",
    )
    .await?;
    let png = screenshot_path(tmp.path());
    browser.save_screenshot(&png).await?;
    let head = std::fs::read(&png)?;
    ensure!(
        head.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );

    // The buttons do what `ark-commander pause`/`resume` do.
    browser.click("#pause").await?;
    wait_until(SOON, "the swarm to be paused", || {
        let cdata = cdata.clone();
        async move { swarm_paused(&cdata) }
    })
    .await?;
    wait_for_text(&browser, "#swarm-state", "paused").await?;
    browser.click("#resume").await?;
    wait_until(SOON, "the swarm to be resumed", || {
        let cdata = cdata.clone();
        async move { Ok(!swarm_paused(&cdata)?) }
    })
    .await?;
    wait_for_text(&browser, "#swarm-state", "running").await?;
    browser.quit().await?;
    Ok(())
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// Not a check, a measurement (`--ignored --nocapture`): the commander's
/// resident memory with the dashboard open and polling, against without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn commander_rss_with_the_dashboard_open() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let (commander, base) = commander_with_dashboard(&cdata).await?;
    let origin = Origin::start().await?;
    let adata = tmp.path().join("agent");
    enroll_agent(&cdata, &adata, "agent").await?;
    let _agent = spawn_agent(&adata)?;
    for i in 0..20u8 {
        let name = format!("file-{i}");
        origin.put(&name, sample_bytes(50_000, i));
        add_file_target(&cdata, &name, &origin.url(&name)).await?;
        let id = run_of(&cdata, &name).await?;
        wait_for_run(&cdata, id, "succeeded", SOON).await?;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = rss_kib(commander.pid())?;
    let browser = Browser::start(1280, 900).await?;
    browser.goto(&format!("{base}/")).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let polled = rss_kib(commander.pid())?;
    browser.quit().await?;
    println!(
        "commander VmRSS: {idle} KiB without the dashboard, {polled} KiB after 10 s with it open"
    );
    Ok(())
}

#[test]
fn the_grafana_dashboard_parses_and_uses_only_metrics_the_commander_serves() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/grafana/ark-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let panels = dashboard["panels"].as_array().context("no panels")?;
    ensure!(panels.len() >= 4, "only {} panels", panels.len());
    let served = |name: &str| {
        ark_commander::web::metrics::FAMILIES
            .iter()
            .any(|f| name == *f || name.strip_suffix("_bucket") == Some(f))
    };
    for panel in panels {
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        for target in targets {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("ark_"));
            for name in names {
                ensure!(
                    served(name),
                    "{:?} uses {name}, which /metrics lacks",
                    panel["title"]
                );
            }
        }
    }
    Ok(())
}

/// Freshness (issue 12): a target past its `--max-age` is stale in
/// `/metrics` (`ark_targets_stale`, `ark_target_age_seconds`), `status`,
/// `target ls` and the dashboard's JSON, and makes `ingest` exit 1 naming
/// it; a fresh one is not. A target whose last runs all fail is stale too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_past_its_max_age_is_stale_everywhere_and_fails_ingest() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let (_commander, base) = commander_with_dashboard(&cdata).await?;
    let origin = Origin::start().await?;
    origin.put("old.bin", sample_bytes(10_000, 1));
    origin.put("new.bin", sample_bytes(10_000, 2));
    let adata = tmp.path().join("pi");
    enroll_agent(&cdata, &adata, "pi").await?;
    let _agent = spawn_agent(&adata)?;
    for (name, max_age) in [("old", "1s"), ("new", "1h")] {
        let url = origin.url(&format!("{name}.bin"));
        let (ok, _, err) = commander_cli(
            &cdata,
            &[
                "target",
                "add",
                "file",
                &url,
                "--name",
                name,
                "--max-age",
                max_age,
            ],
        )?;
        ensure!(ok, "{err}");
        wait_for_run(&cdata, run_of(&cdata, name).await?, "succeeded", SOON).await?;
    }
    // Fresh at first (ingest passes), stale once a second has gone by.
    let (ok, out, err) = commander_cli(&cdata, &["ingest"])?;
    ensure!(ok, "ingest of a fresh archive failed: {out}{err}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, out, err) = commander_cli(&cdata, &["ingest"])?;
    ensure!(
        !ok && err.contains("stale") && err.contains("old:") && !err.contains("new:"),
        "ingest should fail naming the stale target only: {out}{err}"
    );
    let scraped = scrape(&base).await?;
    ensure!(value(&scraped, "ark_targets_stale", &[])? == 1.0);
    ensure!(value(&scraped, "ark_target_age_seconds", &[("target", "old")])? >= 1.0);
    let (_, status, _) = commander_cli(&cdata, &["status"])?;
    ensure!(status.contains("STALE     old:"), "{status}");
    let (_, ls, _) = commander_cli(&cdata, &["target", "ls"])?;
    ensure!(ls.contains("STALE: last confirmed current"), "{ls}");
    let state: serde_json::Value = serde_json::from_str(
        &http()
            .get(format!("{base}/api/state"))
            .send()
            .await?
            .text()
            .await?,
    )?;
    ensure!(
        state["stale"][0]["target"] == "old" && state["stale"].as_array().map(Vec::len) == Some(1),
        "{}",
        state["stale"]
    );

    // Three failures in a row make a target stale whatever its age.
    origin.put("gone.bin", sample_bytes(100, 3));
    let (ok, _, err) = commander_cli(
        &cdata,
        &[
            "target",
            "add",
            "file",
            &origin.url("missing.bin"),
            "--name",
            "gone",
        ],
    )?;
    ensure!(ok, "{err}");
    for _ in 0..3 {
        let id = run_now(&cdata, "gone").await?;
        wait_for_run(&cdata, id, "failed", Duration::from_secs(60)).await?;
    }
    let (_, status, _) = commander_cli(&cdata, &["status"])?;
    ensure!(status.contains("STALE     gone: failing"), "{status}");
    Ok(())
}

/// The dashboard's history as `/api/history?hours=1` answers it.
async fn api_history(base: &str) -> Result<serde_json::Value> {
    let resp = http()
        .get(format!("{base}/api/history?hours=1"))
        .send()
        .await?;
    ensure!(resp.status() == 200, "/api/history: {}", resp.status());
    Ok(serde_json::from_str(&resp.text().await?)?)
}

/// The values of a series of `[ms, value]` points.
fn values(series: &serde_json::Value) -> Vec<f64> {
    series
        .as_array()
        .map(|points| points.iter().filter_map(|p| p[1].as_f64()).collect())
        .unwrap_or_default()
}

/// The `points` of the polylines matching `selector`, each as its pairs.
async fn polylines(browser: &Browser, selector: &str) -> Result<Vec<Vec<(f64, f64)>>> {
    Ok(browser
        .attributes(selector, "points")
        .await?
        .into_iter()
        .map(|points| {
            points
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|pair| {
                    let (x, y) = pair.split_once(',')?;
                    Some((x.parse().ok()?, y.parse().ok()?))
                })
                .collect()
        })
        .collect())
}

/// History (issue 13): with a commander sampling every 300 ms, Chromium
/// draws the agent's throughput and temperature, the swarm's rate with a
/// pause rule's period shaded and named, the archive by kind and the
/// target's age; the lines gain points as samples arrive, and follow what
/// the agent reports (a capped harvest, a device warming up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_draws_the_history_and_it_moves_with_pauses_shaded_and_named() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let film = tmp.path().join("film-playing");
    write_commander_config_with(
        &cdata,
        &format!(
            "history-every = \"300ms\"\npause-check = \"200ms\"\n\n[[pause_when]]\n\
             name = \"film night\"\ncommand = \"test -e '{}'\"\nhold_down = \"500ms\"\n",
            film.display()
        ),
    )?;
    let _commander =
        start_commander(&cdata, "127.0.0.1:0", &["--http", "127.0.0.1:0"], &[]).await?;
    let base = ark_commander::web::endpoint(&cdata)?;
    let origin = Origin::start().await?;
    let adata = tmp.path().join("pi");
    let sysfs = tmp.path().join("sys");
    fake_sysfs(&sysfs, 48.0, false)?;
    enroll_agent(&cdata, &adata, "pi").await?;
    std::fs::write(
        adata.join(ark_agent::config::CONFIG_FILE),
        format!("sysfs = \"{}\"\n", sysfs.display()),
    )?;
    let _agent = spawn_agent(&adata)?;

    let browser = Browser::start(1280, 1400).await?;
    browser.goto(&format!("{base}/")).await?;
    let throughput = "#chart-throughput polyline[data-series=\"pi\"]";
    let swarm = "#chart-swarm polyline[data-series=\"swarm\"]";
    wait_until(SOON, "the agent's throughput line", || async {
        Ok(polylines(&browser, throughput)
            .await?
            .first()
            .is_some_and(|p| p.len() >= 2))
    })
    .await?;

    // The charts move: the swarm's line gains points as samples arrive.
    let before = polylines(&browser, swarm).await?.concat().len();
    ensure!(before >= 2, "the swarm's line has {before} points");
    wait_until(SOON, "the swarm's line to gain points", || async {
        Ok(polylines(&browser, swarm).await?.concat().len() > before)
    })
    .await?;

    // A harvest capped at 100 KB/s reports its rate for a few seconds:
    // the agent's line leaves zero, and the archive's line for the kind
    // reaches the bytes that landed.
    let size = 500_000;
    origin.put("big.bin", sample_bytes(size, 7));
    let capped = ark_proto::AddTargetRequest {
        bandwidth_cap: 100_000,
        ..file_target("big", &origin.url("big.bin"))
    };
    add_target_with(&cdata, capped).await?;
    wait_until(SOON, "a transfer rate in the agent's history", || async {
        let h = api_history(&base).await?;
        Ok(values(&h["agents"][0]["rate"]).iter().any(|v| *v > 0.0))
    })
    .await?;
    wait_until(SOON, "the agent's line to leave zero", || async {
        let lines = polylines(&browser, throughput).await?;
        let Some(line) = lines.first() else {
            return Ok(false);
        };
        let floor = line.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        Ok(line.iter().any(|p| p.1 < floor))
    })
    .await?;
    wait_for_run(&cdata, run_of(&cdata, "big").await?, "succeeded", SOON).await?;
    wait_until(
        SOON,
        "the landed bytes in the archive's history",
        || async {
            let h = api_history(&base).await?;
            let file = h["archive"]
                .as_array()
                .and_then(|kinds| kinds.iter().find(|k| k["kind"] == "file"))
                .map(|k| values(&k["bytes"]))
                .unwrap_or_default();
            Ok(file.last() == Some(&(size as f64)))
        },
    )
    .await?;
    for (chart, series) in [("archive", "file"), ("temperature", "pi")] {
        let line = format!("#chart-{chart} polyline[data-series=\"{series}\"]");
        wait_until(SOON, &format!("a {chart} line for {series}"), || async {
            Ok(!polylines(&browser, &line).await?.concat().is_empty())
        })
        .await?;
    }

    // The device warms up: its temperature follows.
    fake_sysfs(&sysfs, 71.0, false)?;
    wait_until(SOON, "the warmer reading in the history", || async {
        let h = api_history(&base).await?;
        Ok(values(&h["agents"][0]["temperature"]).last() == Some(&71.0))
    })
    .await?;
    wait_for_text(
        &browser,
        "#chart-temperature + .legend span[data-series=\"pi\"]",
        "pi: 71 °C",
    )
    .await?;

    // A film starts: the swarm yields, and the period is shaded under the
    // rule's name; it stops: the period closes.
    std::fs::write(&film, b"")?;
    let shaded = "#chart-swarm rect.pause[data-rule=\"film night\"]";
    wait_until(SOON, "a shaded pause period", || async {
        Ok(!browser.find_all(shaded).await?.is_empty())
    })
    .await?;
    wait_for_text(
        &browser,
        "#chart-swarm .pause-label",
        "yielding to film night",
    )
    .await?;
    let width: f64 = browser
        .attributes(shaded, "width")
        .await?
        .first()
        .cloned()
        .flatten()
        .context("the shaded period has no width")?
        .parse()?;
    ensure!(width > 0.0, "the shaded period is {width} wide");
    std::fs::remove_file(&film)?;
    wait_until(SOON, "the pause period to close", || async {
        let h = api_history(&base).await?;
        let pauses = h["pauses"].as_array().cloned().unwrap_or_default();
        Ok(pauses.len() == 1
            && pauses[0]["rule"] == "film night"
            && pauses[0]["ongoing"] == false
            && pauses[0]["to_ms"].as_i64() > pauses[0]["from_ms"].as_i64())
    })
    .await?;

    // The target's age is a bar against its maximum.
    let bars = browser
        .attributes("#chart-targets rect.age[data-target=\"big\"]", "width")
        .await?;
    ensure!(
        bars.len() == 1 && bars[0].as_deref().and_then(|w| w.parse::<f64>().ok()) > Some(0.0),
        "{bars:?}"
    );
    browser
        .save_screenshot(
            &std::env::var_os("ARK_HISTORY_SCREENSHOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| tmp.path().join("history.png")),
        )
        .await?;
    browser.quit().await?;
    Ok(())
}

/// The history table (issue 13) through the real binary: it keeps no more
/// than its retention while the commander runs, and what it kept is still
/// there after a `kill -9` and a new start on the same data dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_is_bounded_by_its_retention_and_survives_a_restart() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let cdata = tmp.path().join("commander");
    let (every_ms, retention_ms) = (100, 1_500);
    write_commander_config_with(
        &cdata,
        &format!("history-every = \"{every_ms}ms\"\nhistory-retention = \"{retention_ms}ms\"\n"),
    )?;
    let args = ["--http", "127.0.0.1:0"];
    let mut commander = start_commander(&cdata, "127.0.0.1:0", &args, &[]).await?;
    let db = cdata.join(ark_commander::server::STATE_FILE);
    // (rows, oldest sample, newest sample) as the file holds them.
    let table = || -> Result<(i64, i64, i64)> {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(conn.query_row(
            "SELECT COUNT(*), COALESCE(MIN(at), 0), COALESCE(MAX(at), 0) FROM history",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    };
    let started = ark_core::unix_ms();
    // Twice the retention: the first samples must be gone by then.
    tokio::time::sleep(Duration::from_millis(2 * retention_ms as u64)).await;
    let (rows, oldest, newest) = table()?;
    ensure!(
        oldest > started + retention_ms / 2,
        "samples from {} ms after the start are still kept past a {retention_ms} ms retention",
        oldest - started
    );
    ensure!(
        newest - oldest <= retention_ms && rows <= retention_ms / every_ms + 1,
        "{rows} rows over {} ms",
        newest - oldest
    );
    ensure!(
        rows >= 3,
        "only {rows} rows: is the sampler running every {every_ms} ms?"
    );

    // A longer retention from the restart on, so what was kept is not
    // pruned at once.
    commander.kill9();
    let (_, _, before) = table()?;
    write_commander_config_with(
        &cdata,
        &format!("history-every = \"{every_ms}ms\"\nhistory-retention = \"1h\"\n"),
    )?;
    let restarted = ark_core::unix_ms();
    let _commander = start_commander(&cdata, "127.0.0.1:0", &args, &[]).await?;
    let (_, oldest_after, _) = table()?;
    ensure!(
        oldest_after <= before,
        "the samples before the restart are gone: the oldest is {} ms after the last of them",
        oldest_after - before
    );
    // The page's JSON shows them (averaged with their neighbours when the
    // window holds more than one point's worth).
    let base = ark_commander::web::endpoint(&cdata)?;
    let h = api_history(&base).await?;
    let kept: Vec<i64> = h["swarm_rate"]
        .as_array()
        .context("no swarm_rate")?
        .iter()
        .filter_map(|p| p[0].as_i64())
        .collect();
    ensure!(
        kept.iter().filter(|at| **at < restarted).count() >= 3,
        "/api/history lost the samples from before the restart at {restarted}: {kept:?}"
    );
    Ok(())
}
