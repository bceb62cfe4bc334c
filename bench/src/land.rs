//! `land FILE ARCHIVE_DIR [TARGET]`: the commander's receiving side on its
//! own — the outboard (FILE.outboard, as `fetch-file` left it, or made here
//! first when there is none) checked against the
//! root, every 16 KiB group of FILE verified as it arrives in 256 KiB
//! pieces, written to quarantine, fsynced, renamed into the archive, the
//! directory fsynced and the ledger row committed — and prints the landed
//! path and the wall time, for comparison with `dd conv=fsync` in
//! bench/run.sh. The gRPC/TLS transport is not included. Landing many files
//! into one ARCHIVE_DIR, each as its own TARGET (default `big`), builds an
//! archive for `archive verify` to re-hash (bench/verify.sh). With a
//! `commander.toml` in ARCHIVE_DIR, the archive is the one it names (an
//! `s3://` archive: bench/s3.sh), and the landing includes the upload to
//! the store.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use ark_commander::archive::{Archive, NewVersion};
use ark_commander::config::CommanderConfig;
use ark_commander::scheduler::Scheduler;
use ark_commander::state::{self, Store};
use ark_commander::upload::{receive, Pending, Piece};
use ark_proto::upload_chunk::Part;

const PIECE: usize = 256 * 1024;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(file), Some(dir)) = (args.next(), args.next()) else {
        bail!("usage: land FILE ARCHIVE_DIR [TARGET]");
    };
    let name = args.next().unwrap_or_else(|| "big".into());
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let outboard_at = ark_core::tree::outboard_path(std::path::Path::new(&file));
    if !outboard_at.exists() {
        ark_core::tree::hash_with_outboard(std::path::Path::new(&file))?;
    }
    let outboard = std::fs::read(&outboard_at)
        .with_context(|| format!("reading {}", outboard_at.display()))?;
    let size = std::fs::metadata(&file)?.len();
    // The claimed root: from the outboard's own tree is not enough for a
    // benchmark's honesty, so hash the file once up front (not timed).
    let root = {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(&file)?)?;
        hasher.finalize()
    };
    let store = Arc::new(Store::open(&dir.join("state.sqlite"))?);
    let scheduler = Scheduler::new(store.clone(), CommanderConfig::default());
    let archive = if dir.join(ark_commander::config::CONFIG_FILE).exists() {
        Archive::open(&CommanderConfig::load(&dir)?, &dir)?
    } else {
        Archive::new(dir.join("archive"), 3)
    };
    let url = format!("http://127.0.0.1/{name}.bin");
    store.tx(|tx| {
        let target = ark_proto::AddTargetRequest {
            kind: "file".into(),
            url: url.clone(),
            name: name.clone(),
            ..Default::default()
        };
        state::add_target(tx, &target, 1)?;
        // What lands must come from an enrolled agent that is not revoked.
        if !state::still_trusted(tx, "bench", "")? {
            state::enroll_agent(tx, "bench", "", 1)?;
        }
        Ok(())
    })?;
    let run = scheduler.run_now(&name, 1)?.id;
    let pending = Pending {
        generation: 1,
        version: NewVersion {
            target: name.clone(),
            kind: "file".into(),
            run_id: run,
            agent: "bench".into(),
            cert_sha256: String::new(),
            manifest: b"{}".to_vec(),
            signature: Vec::new(),
            url,
            etag: String::new(),
            last_modified: String::new(),
            size,
            blake3: root.to_hex().to_string(),
        },
    };
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let sender = std::thread::spawn(move || -> anyhow::Result<()> {
        for part in outboard.chunks(PIECE) {
            tx.blocking_send(Piece::Part(Part::Outboard(part.to_vec().into())))?;
        }
        let mut f = std::fs::File::open(&file)?;
        loop {
            let mut buf = vec![0u8; PIECE];
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            tx.blocking_send(Piece::Part(Part::Data(buf.into())))?;
        }
        tx.blocking_send(Piece::End)?;
        Ok(())
    });
    let landed = receive(&scheduler, &archive, &pending, 0, rx)?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    println!("{} {:.3}", landed.path, started.elapsed().as_secs_f64());
    Ok(())
}
