//! The archive on a real three-node Garage cluster (S3, replication factor
//! 3, on loopback), with the real binaries: the demo's kinds land there and
//! verify, byte for byte what the filesystem backend lands; a commander
//! killed at every landing step recovers to a store that agrees with its
//! ledger; a node lost mid-landing costs nothing and a cluster lost costs a
//! retry; rot and strays in the store are found; a filesystem archive
//! migrates, interrupted and resumed; and the logic node is restored from
//! the state Litestream replicated.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ark_demo::sample_bytes;
use ark_proto::Event;
use ark_tests::garage::{litestream_bin, Garage};
use ark_tests::*;

const SOON: Duration = Duration::from_secs(60);

/// A commander config whose archive is `s3://ark/<prefix>` on `garage`
/// (Litestream off unless `replicate`).
fn s3_config(garage: &Garage, cdata: &Path, prefix: &str, replicate: bool) -> Result<String> {
    garage.credentials_file(&cdata.join("s3-credentials"))?;
    let litestream = if replicate {
        litestream_bin()?.display().to_string()
    } else {
        "off".into()
    };
    Ok(format!(
        "archive = \"s3://{}/{prefix}\"\n[s3]\nendpoint = \"{}\"\nregion = \"{}\"\ncredentials = \"s3-credentials\"\nlitestream = \"{litestream}\"\n",
        garage.bucket,
        garage.endpoint(),
        garage.region
    ))
}

/// Starts a commander on `listen` whose archive is in `garage` under
/// `prefix`.
async fn spawn_s3_commander(
    garage: &Garage,
    cdata: &Path,
    listen: &str,
    prefix: &str,
    env: &[(&str, &str)],
) -> Result<Proc> {
    write_commander_config_with(cdata, &s3_config(garage, cdata, prefix, false)?)?;
    start_commander(cdata, listen, &[], env).await
}

/// Every key the store holds under `prefix/` (outside `.ark/`), sorted.
fn store_keys(garage: &Garage, prefix: &str) -> Result<Vec<String>> {
    let out = garage.aws_ok(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        &garage.bucket,
        "--prefix",
        &format!("{prefix}/"),
        "--output",
        "json",
    ])?;
    let json: serde_json::Value = if out.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&out)?
    };
    let mut keys: Vec<String> = json["Contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["Key"].as_str())
        .filter_map(|k| k.strip_prefix(&format!("{prefix}/")).map(str::to_string))
        .filter(|k| !k.starts_with(".ark/"))
        .collect();
    keys.sort();
    Ok(keys)
}

/// Multipart uploads begun and neither completed nor aborted under `prefix/`.
fn open_uploads(garage: &Garage, prefix: &str) -> Result<usize> {
    let out = garage.aws_ok(&[
        "s3api",
        "list-multipart-uploads",
        "--bucket",
        &garage.bucket,
        "--prefix",
        &format!("{prefix}/"),
        "--output",
        "json",
    ])?;
    if out.trim().is_empty() {
        return Ok(0);
    }
    let json: serde_json::Value = serde_json::from_str(&out)?;
    Ok(json["Uploads"].as_array().map_or(0, Vec::len))
}

/// The object at `key` under `prefix/`.
fn get_object(garage: &Garage, prefix: &str, key: &str, to: &Path) -> Result<Vec<u8>> {
    garage.aws_ok(&[
        "s3",
        "cp",
        "--quiet",
        &format!("s3://{}/{prefix}/{key}", garage.bucket),
        &to.display().to_string(),
    ])?;
    Ok(std::fs::read(to)?)
}

/// The keys a ledger lists: each landed version and its manifest, sorted.
fn ledger_keys(cdata: &Path) -> Result<Vec<String>> {
    let mut keys: Vec<String> = archive_ls(cdata)?
        .iter()
        .filter_map(|v| v["path"].as_str())
        .flat_map(|p| [p.to_string(), format!("{p}.manifest.json")])
        .collect();
    keys.sort();
    Ok(keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_kinds_land_on_garage_verify_clean_and_match_the_filesystem_backend() -> Result<()>
{
    let tmp = tempfile::tempdir()?;
    let garage = Garage::start(&tmp.path().join("garage")).await?;
    let origin = ark_demo::origin::Origin::start().await?;
    let sources = ark_demo::start_sources(&tmp.path().join("origin"), &origin);
    ensure!(
        sources.skipped.is_empty(),
        "this machine has zim-tools and git: {:?}",
        sources.skipped
    );
    // The same targets harvested into an S3 archive and a filesystem one.
    let (s3, fs) = (tmp.path().join("s3"), tmp.path().join("fs"));
    // kiwix-serve reads the ZIMs through the bucket mounted here.
    let mount = tmp.path().join("mnt");
    let config = s3_config(&garage, &s3, "demo", false)?;
    write_commander_config_with(&s3, &format!("{config}mount = \"{}\"\n", mount.display()))?;
    let _s3_commander = start_commander(&s3, "127.0.0.1:0", &[], &[]).await?;
    let _fs_commander = spawn_commander(&fs, "127.0.0.1:0").await?;
    let mut agents = Vec::new();
    for (cdata, name) in [(&s3, "s3-agent"), (&fs, "fs-agent")] {
        agents.push(enrolled_agent(cdata, &tmp.path().join(name), name).await?);
        for t in &sources.targets {
            add_target(cdata, t.kind, t.name, &t.url, 0).await?;
        }
    }
    let expected = sources.targets.len() + sources.enclosures;
    for cdata in [&s3, &fs] {
        wait_until(SOON, "every demo run to land", || {
            let landed = archive_ls(cdata).map(|v| v.len()).unwrap_or(0);
            async move { Ok(landed >= expected) }
        })
        .await?;
    }
    let (on_s3, on_fs) = (archive_ls(&s3)?, archive_ls(&fs)?);
    ensure!(
        on_s3.len() == expected && on_fs.len() == expected,
        "{on_s3:?}"
    );
    // Nothing of the versions on the commander's disk: they are in the store.
    ensure!(
        archive_files(&s3)
            .iter()
            .all(|(p, _)| !on_s3.iter().any(|v| v["path"] == p.as_str())),
        "a version landed on the local disk"
    );
    ensure!(store_keys(&garage, "demo")? == ledger_keys(&s3)?);
    // Byte for byte what the filesystem backend landed, kind by kind.
    for v in &on_s3 {
        let fs_version = on_fs
            .iter()
            .find(|f| f["target"] == v["target"] && f["kind"] == v["kind"] && f["url"] == v["url"])
            .with_context(|| format!("the filesystem archive has no {v}"))?;
        let path = v["path"].as_str().unwrap_or_default();
        let object = get_object(&garage, "demo", path, &tmp.path().join("object"))?;
        let file = std::fs::read(
            fs.join("archive")
                .join(fs_version["path"].as_str().unwrap_or_default()),
        )?;
        ensure!(
            object == file && v["blake3"] == fs_version["blake3"],
            "{path}: {} bytes in the store, {} on the filesystem",
            object.len(),
            file.len()
        );
        ensure!(
            v["absolute_path"]
                .as_str()
                .is_some_and(|p| p == format!("s3://ark/demo/{path}")),
            "{v}"
        );
    }
    // The git mirror stays a bare repository on the commander's disk.
    let mirror = std::fs::read_dir(s3.join("archive/git"))?
        .flatten()
        .next()
        .context("no git host dir")?
        .path()
        .join("notes.git");
    let clone = ark_agent::git::fixture::fsck_and_clone(&mirror, &tmp.path().join("notes"))?;
    ensure!(clone.join("README").exists(), "the clone has no README");
    // Feed entries are derived locally from the snapshot read back.
    ensure!(
        archive_files(&s3)
            .iter()
            .filter(|(p, _)| p.starts_with("rss/ark-radio/entries/"))
            .count()
            == 2
    );
    let (clean, out, err) = commander_cli(&s3, &["archive", "verify"])?;
    ensure!(clean, "archive verify on S3: {out}{err}");
    ensure!(out.contains(&format!("{expected} versions ok")), "{out}");
    // The NAS job's pass over an S3 archive: every object re-hashed.
    let (clean, out, err) = commander_cli(&s3, &["ingest", "--full"])?;
    ensure!(
        clean && out.contains("ingest of s3://ark/demo"),
        "{out}{err}"
    );

    // kiwix-serve over the bucket mounted with rclone, from the library
    // the commander wrote.
    let _mounted = RcloneMount::start(&garage, "demo", &mount).await?;
    let library = s3.join("archive/zim/library.xml");
    let xml = std::fs::read_to_string(&library)?;
    ensure!(xml.contains(&mount.display().to_string()), "{xml}");
    let answers = kiwix_serve_get(&library, &["/catalog/v2/entries", "/ark-handbook/"]).await?;
    ensure!(
        answers[0].1.contains("handbook")
            && answers[1].0.is_success()
            && answers[1].1.contains("Ark handbook"),
        "kiwix-serve over the mounted bucket: {answers:?}"
    );
    Ok(())
}

/// `rclone mount` of `bucket/prefix` at a directory (read-only), unmounted
/// when dropped.
struct RcloneMount {
    at: std::path::PathBuf,
    child: std::process::Child,
}

impl RcloneMount {
    async fn start(garage: &Garage, prefix: &str, at: &Path) -> Result<Self> {
        std::fs::create_dir_all(at)?;
        let log = at.with_extension("rclone.log");
        let child = std::process::Command::new("rclone")
            .args([
                "mount",
                "--read-only",
                "--dir-cache-time",
                "1s",
                "-v",
                "--log-file",
            ])
            .arg(&log)
            .arg(format!("garage:{}/{prefix}", garage.bucket))
            .arg(at)
            .env("RCLONE_CONFIG_GARAGE_TYPE", "s3")
            .env("RCLONE_CONFIG_GARAGE_PROVIDER", "Other")
            .env("RCLONE_CONFIG_GARAGE_ENDPOINT", garage.endpoint())
            .env("RCLONE_CONFIG_GARAGE_REGION", &garage.region)
            .env("RCLONE_CONFIG_GARAGE_ACCESS_KEY_ID", &garage.access_key_id)
            .env(
                "RCLONE_CONFIG_GARAGE_SECRET_ACCESS_KEY",
                &garage.secret_access_key,
            )
            .env("RCLONE_CONFIG_GARAGE_FORCE_PATH_STYLE", "true")
            // The AWS SDK in rclone refuses a CA bundle with its transport.
            .env_remove("AWS_CA_BUNDLE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("rclone (apt-get install rclone)")?;
        let mount = Self {
            at: at.to_path_buf(),
            child,
        };
        wait_until(Duration::from_secs(20), "the bucket to be mounted", || {
            let ready = at.join("zim").is_dir();
            async move { Ok(ready) }
        })
        .await
        .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
        Ok(mount)
    }
}

impl Drop for RcloneMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fusermount")
            .arg("-u")
            .arg(&self.at)
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills the commander (abort, as `kill -9` would) at `step` of landing a
/// 10 MB file (two multipart parts) on S3, restarts it, and checks that the
/// run lands and that the store and the ledger agree: no object without
/// its row, no row without its object, no upload left open.
async fn crash_on_s3_at(garage: &Garage, root: &Path, step: &str) -> Result<()> {
    let cdata = root.join(step);
    let prefix = format!("crash-{step}");
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut commander = spawn_s3_commander(
        garage,
        &cdata,
        &listen,
        &prefix,
        &[("ARK_FAULT_CRASH_AT", step)],
    )
    .await?;
    let origin = Origin::start().await?;
    let bytes = sample_bytes(10_000_019, 9);
    origin.put("big.iso", bytes.clone());
    let _agent = enrolled_agent(&cdata, &root.join(format!("{step}-agent")), "agent").await?;
    add_file_target(&cdata, "iso", &origin.url("big.iso")).await?;
    wait_for_abort(&mut commander, step, SOON).await?;
    let _commander = start_commander(&cdata, &listen, &[], &[]).await?;
    let id = run_of(&cdata, "iso").await?;
    wait_for_run(&cdata, id, "succeeded", SOON).await?;
    let versions = archive_ls(&cdata)?;
    ensure!(versions.len() == 1, "after a crash at {step}: {versions:?}");
    let keys = store_keys(garage, &prefix)?;
    ensure!(
        keys == ledger_keys(&cdata)?,
        "after a crash at {step} the store holds {keys:?}, the ledger {versions:?}"
    );
    let path = versions[0]["path"].as_str().unwrap_or_default();
    ensure!(get_object(garage, &prefix, path, &root.join("got"))? == bytes);
    ensure!(
        open_uploads(garage, &prefix)? == 0,
        "an upload was left open after a crash at {step}"
    );
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "after a crash at {step}: {out}{err}");
    ensure!(
        quarantined(&cdata).is_empty(),
        "quarantine not cleaned after a crash at {step}: {:?}",
        quarantined(&cdata)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_killed_at_each_landing_step_recovers_to_a_store_that_agrees_with_its_ledger(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let garage = Garage::start(&tmp.path().join("garage")).await?;
    for step in [
        "before-rename",
        "before-complete",
        "after-rename",
        "after-derive",
        "after-ledger",
    ] {
        crash_on_s3_at(&garage, tmp.path(), step)
            .await
            .with_context(|| format!("crash at {step}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_mid_landing_costs_nothing_and_a_cluster_lost_costs_a_retry() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut garage = Garage::start(&tmp.path().join("garage")).await?;
    let cdata = tmp.path().join("commander");
    let listen = format!("127.0.0.1:{}", free_port()?);
    let mut commander = spawn_s3_commander(&garage, &cdata, &listen, "quorum", &[]).await?;
    let origin = Origin::start().await?;
    let _agent = enrolled_agent(&cdata, &tmp.path().join("agent"), "agent").await?;

    // 200 MB: a node (not the one the commander talks to) is killed while
    // the landing's parts are going up; quorum writes (2 of 3) carry on.
    let big = sample_bytes(200_000_000, 21);
    origin.put("big.img", big.clone());
    add_file_target(&cdata, "big", &origin.url("big.img")).await?;
    let id = run_of(&cdata, "big").await?;
    wait_until(SOON, "the landing's multipart upload to start", || {
        let open = open_uploads(&garage, "quorum").unwrap_or(0);
        async move { Ok(open > 0) }
    })
    .await?;
    garage.kill_node(2);
    wait_for_run(&cdata, id, "succeeded", Duration::from_secs(180)).await?;
    let versions = archive_ls(&cdata)?;
    ensure!(store_keys(&garage, "quorum")? == ledger_keys(&cdata)?);
    let path = versions[0]["path"].as_str().unwrap_or_default();
    ensure!(get_object(&garage, "quorum", path, &tmp.path().join("got"))? == big);
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    garage.restart_node(2).await?;

    // Every node down: the landing is deferred with a clear reason, nothing
    // half-lands, and the run lands once the cluster is back.
    garage.stop_all();
    let small = sample_bytes(3_000_000, 22);
    origin.put("small.bin", small.clone());
    add_file_target(&cdata, "small", &origin.url("small.bin")).await?;
    let small_id = run_of(&cdata, "small").await?;
    let deferred = deferral(&cdata, small_id).await?;
    ensure!(
        deferred.message.contains("the object store did not answer")
            && deferred.message.contains("lands once the store is back"),
        "{}",
        deferred.message
    );
    ensure!(
        archive_ls(&cdata)?.len() == 1,
        "a version landed with the store down"
    );
    // A commander that starts while the store is down (the NAS boots
    // slower than the logic node) serves, and recovers once it answers.
    commander.kill9();
    let _commander = start_commander(&cdata, &listen, &[], &[]).await?;
    garage.start_all().await?;
    wait_for_run(&cdata, small_id, "succeeded", Duration::from_secs(120)).await?;
    // The landings that failed while the store was down were taken back
    // by the sweep once it answered: no row but the landed ones.
    wait_until(SOON, "the failed landings to be taken back", || {
        let states = version_states(&cdata);
        async move { Ok(states? == vec!["landed".to_string(); 2]) }
    })
    .await?;
    ensure!(store_keys(&garage, "quorum")? == ledger_keys(&cdata)?);
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean, "{out}{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_store_refuses_defers_the_landing_with_what_to_fix() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let garage = Garage::start(&tmp.path().join("garage")).await?;
    let cdata = tmp.path().join("commander");
    let config = s3_config(&garage, &cdata, "denied", false)?;
    write_commander_config_with(&cdata, &config)?;
    // The right key id with a wrong secret.
    std::fs::write(
        cdata.join("s3-credentials"),
        format!(
            "[default]\naws_access_key_id={}\naws_secret_access_key={}\n",
            garage.access_key_id,
            "0".repeat(64)
        ),
    )?;
    let _commander = start_commander(&cdata, "127.0.0.1:0", &[], &[]).await?;
    let origin = Origin::start().await?;
    let _agent = enrolled_agent(&cdata, &tmp.path().join("agent"), "agent").await?;
    origin.put("doc.bin", sample_bytes(100_000, 4));
    add_file_target(&cdata, "doc", &origin.url("doc.bin")).await?;
    let id = run_of(&cdata, "doc").await?;
    let deferred = deferral(&cdata, id).await?;
    ensure!(
        deferred
            .message
            .contains("refused the key in [s3] credentials")
            && !deferred.message.contains(&"0".repeat(64)),
        "{}",
        deferred.message
    );
    ensure!(archive_ls(&cdata)?.is_empty() && store_keys(&garage, "denied")?.is_empty());
    Ok(())
}

/// The `landing_deferred` event of run `id`, once it is recorded.
async fn deferral(cdata: &Path, id: i64) -> Result<Event> {
    let deferred = |events: Vec<Event>| events.into_iter().find(|e| e.kind == "landing_deferred");
    wait_until(SOON, "the landing to be deferred", || {
        let cdata = cdata.to_path_buf();
        async move { Ok(deferred(events(&cdata, id).await?).is_some()) }
    })
    .await?;
    deferred(events(cdata, id).await?).context("no deferral")
}

/// The state of every row of the ledger, oldest first.
fn version_states(cdata: &Path) -> Result<Vec<String>> {
    let conn = rusqlite::Connection::open_with_flags(
        cdata.join("state.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut stmt = conn.prepare("SELECT state FROM versions ORDER BY id")?;
    let states = stmt.query_map([], |r| r.get(0))?;
    Ok(states.collect::<rusqlite::Result<_>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_changed_in_the_store_is_found_by_verify_and_a_stray_is_reported() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let garage = Garage::start(&tmp.path().join("garage")).await?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_s3_commander(&garage, &cdata, "127.0.0.1:0", "rot", &[]).await?;
    let origin = Origin::start().await?;
    let _agent = enrolled_agent(&cdata, &tmp.path().join("agent"), "agent").await?;
    let bytes = sample_bytes(9_000_000, 5);
    origin.put("a.bin", bytes.clone());
    origin.put("b.bin", sample_bytes(70_000, 6));
    for name in ["a", "b"] {
        add_file_target(&cdata, name, &origin.url(&format!("{name}.bin"))).await?;
        let id = run_of(&cdata, name).await?;
        wait_for_run(&cdata, id, "succeeded", SOON).await?;
    }
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean && out.contains("2 versions ok"), "{out}{err}");

    // One byte changed behind Ark's back, one object nobody landed.
    let versions = archive_ls(&cdata)?;
    let a = versions
        .iter()
        .find(|v| v["target"] == "a")
        .context("no a")?;
    let path = a["path"].as_str().unwrap_or_default();
    let local = tmp.path().join("rotten");
    let mut rotten = get_object(&garage, "rot", path, &local)?;
    rotten[4_444_444] ^= 0x10;
    std::fs::write(&local, &rotten)?;
    let url = |key: &str| format!("s3://{}/rot/{key}", garage.bucket);
    garage.aws_ok(&[
        "s3",
        "cp",
        "--quiet",
        &local.display().to_string(),
        &url(path),
    ])?;
    garage.aws_ok(&[
        "s3",
        "cp",
        "--quiet",
        &local.display().to_string(),
        &url("file/stray.bin"),
    ])?;
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(!clean, "verify passed a rotten store: {out}");
    let bad: Vec<&str> = out.lines().filter(|l| l.starts_with("BAD")).collect();
    ensure!(
        bad.len() == 1 && bad[0].contains(path) && bad[0].contains("BLAKE3 in the store"),
        "{out}"
    );
    ensure!(out.contains("STRAY file/stray.bin"), "{out}");
    ensure!(err.contains("run-now"), "the error names no fix: {err}");
    let (_, json, _) = commander_cli(&cdata, &["archive", "verify", "--json"])?;
    let report: serde_json::Value = serde_json::from_str(&json)?;
    ensure!(
        report["ok"] == 1 && report["stray"][0] == "file/stray.bin",
        "{report}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_after_the_new_version_and_dedupe_is_a_server_side_copy(
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let garage = Garage::start(&tmp.path().join("garage")).await?;
    let cdata = tmp.path().join("commander");
    let _commander = spawn_s3_commander(&garage, &cdata, "127.0.0.1:0", "keep", &[]).await?;
    let origin = Origin::start().await?;
    let _agent = enrolled_agent(&cdata, &tmp.path().join("agent"), "agent").await?;
    // Keeping one version: the second lands, then the first goes.
    origin.put("daily.bin", sample_bytes(9_500_000, 1));
    add_file_target_keeping(&cdata, "daily", &origin.url("daily.bin"), 1).await?;
    let first = run_of(&cdata, "daily").await?;
    wait_for_run(&cdata, first, "succeeded", SOON).await?;
    let newest = sample_bytes(9_500_000, 2);
    origin.put("daily.bin", newest.clone());
    let second = run_now(&cdata, "daily").await?;
    wait_for_run(&cdata, second, "succeeded", SOON).await?;
    // The same bytes under another target: copied inside the store.
    origin.put("copy.bin", newest.clone());
    add_file_target(&cdata, "copy", &origin.url("copy.bin")).await?;
    let copy = run_of(&cdata, "copy").await?;
    wait_for_run(&cdata, copy, "succeeded", SOON).await?;
    let versions = archive_ls(&cdata)?;
    ensure!(versions.len() == 2, "{versions:?}");
    let daily = versions
        .iter()
        .find(|v| v["target"] == "daily")
        .context("no daily")?;
    let copied = versions
        .iter()
        .find(|v| v["target"] == "copy")
        .context("no copy")?;
    ensure!(
        copied["source"] == "link" && copied["linked_from"] == daily["id"],
        "{copied}"
    );
    ensure!(store_keys(&garage, "keep")? == ledger_keys(&cdata)?);
    // Pruning the original leaves the copy whole.
    let newer = sample_bytes(9_500_000, 3);
    origin.put("daily.bin", newer);
    let third = run_now(&cdata, "daily").await?;
    wait_for_run(&cdata, third, "succeeded", SOON).await?;
    ensure!(store_keys(&garage, "keep")? == ledger_keys(&cdata)?);
    let path = copied["path"].as_str().unwrap_or_default();
    ensure!(get_object(&garage, "keep", path, &tmp.path().join("got"))? == newest);
    // A version's object deleted behind Ark's back: missing, with the version.
    garage.aws_ok(&[
        "s3",
        "rm",
        "--quiet",
        &format!("s3://{}/keep/{path}", garage.bucket),
    ])?;
    let (clean, out, _) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(
        !clean
            && out
                .lines()
                .any(|l| l.starts_with("BAD") && l.contains(path) && l.contains("missing")),
        "{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_archive_migrated_interrupted_and_resumed_ends_verified() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let garage = Garage::start(&tmp.path().join("garage")).await?;
    let cdata = tmp.path().join("commander");
    let origin = Origin::start().await?;
    {
        let _commander = spawn_commander(&cdata, "127.0.0.1:0").await?;
        let _agent = enrolled_agent(&cdata, &tmp.path().join("agent"), "agent").await?;
        let files = [
            ("big", sample_bytes(12_000_000, 1)),
            ("small", sample_bytes(50_000, 2)),
            // The same bytes as `small`: one hard-linked file on disk.
            ("twin", sample_bytes(50_000, 2)),
        ];
        for (name, bytes) in files {
            origin.put(&format!("{name}.bin"), bytes);
            add_file_target(&cdata, name, &origin.url(&format!("{name}.bin"))).await?;
            let id = run_of(&cdata, name).await?;
            wait_for_run(&cdata, id, "succeeded", SOON).await?;
        }
    }
    // `[s3]` for the migration, the archive still on the filesystem.
    let s3 = s3_config(&garage, &cdata, "moved", false)?;
    let s3_table = &s3[s3.find("[s3]").context("no [s3]")?..];
    write_commander_config_with(&cdata, s3_table)?;
    let to = format!("s3://{}/moved", garage.bucket);
    let migrate = |env: &[(&str, &str)]| -> Result<std::process::Output> {
        let mut cmd = std::process::Command::new(bin("ark-commander")?);
        cmd.arg("--data")
            .arg(&cdata)
            .args(["archive", "migrate", "--to", &to, "--json"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ok(cmd.output()?)
    };
    // Stopped with a multipart upload open, then after a copy not yet
    // recorded: each resume picks up where the last one stopped.
    for step in ["before-complete", "migrate-copied"] {
        let out = migrate(&[("ARK_FAULT_CRASH_AT", step)])?;
        ensure!(
            !out.status.success(),
            "the migration did not stop at {step}"
        );
    }
    let out = migrate(&[])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        report["copied"].as_u64().unwrap_or(0) + report["already"].as_u64().unwrap_or(0) == 3,
        "{report}"
    );
    ensure!(
        open_uploads(&garage, "moved")? == 0,
        "an upload was left open"
    );
    // Idempotent: nothing is copied twice.
    let again: serde_json::Value = serde_json::from_slice(&migrate(&[])?.stdout)?;
    ensure!(
        again["copied"] == 0 && again["already"] == 3 && again["bytes"] == 0,
        "{again}"
    );
    // Switched over, the store verifies whole.
    write_commander_config_with(&cdata, &s3)?;
    ensure!(store_keys(&garage, "moved")? == ledger_keys(&cdata)?);
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean && out.contains("3 versions ok"), "{out}{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logic_node_lost_is_restored_from_the_store_and_the_agents_carry_on() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let garage = Garage::start(&tmp.path().join("garage")).await?;
    let cdata = tmp.path().join("commander");
    let listen = format!("127.0.0.1:{}", free_port()?);
    write_commander_config_with(&cdata, &s3_config(&garage, &cdata, "house", true)?)?;
    let mut commander = start_commander(&cdata, &listen, &[], &[]).await?;
    let origin = Origin::start().await?;
    let _agent = enrolled_agent(&cdata, &tmp.path().join("agent"), "agent").await?;
    for (name, seed) in [("one", 1), ("two", 2)] {
        origin.put(&format!("{name}.bin"), sample_bytes(300_000, seed));
        add_file_target(&cdata, name, &origin.url(&format!("{name}.bin"))).await?;
        let id = run_of(&cdata, name).await?;
        wait_for_run(&cdata, id, "succeeded", SOON).await?;
    }
    let before = archive_ls(&cdata)?;
    // Litestream syncs every second: wait until the replica has the second
    // landing (a restore into a scratch dir shows it).
    let mut last = String::new();
    let replicated = wait_until(SOON, "the replica to hold both landings", || {
        let probe = tmp.path().join(format!("probe-{}", fastrand::u32(..)));
        let got = restored_versions(&garage, &probe);
        let ok = matches!(got, Ok(2));
        last = format!("{got:?}");
        async move { Ok(ok) }
    })
    .await;
    replicated.with_context(|| {
        format!(
            "last restore: {last}; litestream's log: {}",
            std::fs::read_to_string(cdata.join("litestream.log")).unwrap_or_default()
        )
    })?;

    // A landing the replica never hears of: the commander restarted without
    // Litestream lands "late", then the logic node is lost — the process
    // killed, its data dir gone.
    commander.kill9();
    write_commander_config_with(&cdata, &s3_config(&garage, &cdata, "house", false)?)?;
    let mut commander = start_commander(&cdata, &listen, &[], &[]).await?;
    origin.put("late.bin", sample_bytes(100_000, 9));
    add_file_target(&cdata, "late", &origin.url("late.bin")).await?;
    let late = run_of(&cdata, "late").await?;
    wait_for_run(&cdata, late, "succeeded", SOON).await?;
    ensure!(store_keys(&garage, "house")?.len() == 6);
    commander.kill9();
    std::fs::remove_dir_all(&cdata)?;
    write_commander_config_with(&cdata, &s3_config(&garage, &cdata, "house", true)?)?;
    let (ok, out, err) = commander_cli(&cdata, &["restore", "--from", "s3://ark/house"])?;
    ensure!(ok, "restore: {out}{err}");
    ensure!(
        out.contains("2 landed versions") && out.contains("6 PKI files"),
        "{out}"
    );
    let _standby = start_commander(&cdata, &listen, &[], &[]).await?;
    ensure!(archive_ls(&cdata)? == before, "the restored ledger differs");
    // Its first recovery removed the landing newer than the replica.
    ensure!(store_keys(&garage, "house")? == ledger_keys(&cdata)?);
    // The agent (same CA, same identity) carries on with the standby.
    origin.put("three.bin", sample_bytes(200_000, 3));
    add_file_target(&cdata, "three", &origin.url("three.bin")).await?;
    let id = run_of(&cdata, "three").await?;
    wait_for_run(&cdata, id, "succeeded", SOON).await?;
    ensure!(store_keys(&garage, "house")? == ledger_keys(&cdata)?);
    let (clean, out, err) = commander_cli(&cdata, &["archive", "verify"])?;
    ensure!(clean && out.contains("3 versions ok"), "{out}{err}");
    Ok(())
}

/// Restores the replica of `s3://ark/house` into scratch dir `dir` and
/// counts its landed versions.
fn restored_versions(garage: &Garage, dir: &Path) -> Result<usize> {
    write_commander_config_with(dir, &s3_config(garage, dir, "house", true)?)?;
    let (ok, out, err) = commander_cli(dir, &["restore", "--from", "s3://ark/house", "--json"])?;
    ensure!(ok, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out)?;
    Ok(json["landed_versions"].as_u64().unwrap_or(0) as usize)
}
