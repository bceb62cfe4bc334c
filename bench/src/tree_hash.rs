//! `tree-hash [--threads N | --piece BYTES | --plain] FILE [OUTBOARD]`:
//! hashes FILE the way Ark does and prints the root and the wall time, for
//! comparison with `b3sum` in bench/hash.sh (section 4).
//!
//! - no flag: the agent's download path — the chunked BLAKE3 tree hasher
//!   fed 256 KiB reads, group CVs written to an outboard;
//! - `--piece BYTES`: the same reads handed to the hasher in pieces of
//!   BYTES, the way a network stream hands them over (1460: one TCP
//!   segment);
//! - `--threads N`: `ark_core::tree::hash_file` on N threads, the path for
//!   a file already on disk;
//! - `--plain`: `blake3::Hasher::update` over the same 256 KiB reads, no
//!   tree and no outboard: the floor the tree hasher is held to.

use std::io::{BufWriter, Read, Write};
use std::time::Instant;

use anyhow::Context;
use ark_core::tree::{TreeHasher, CV_LEN, GROUP_LEN};

/// Read size: the agent's network chunks are of this order.
const READ: usize = 256 * 1024;

const USAGE: &str = "usage: tree-hash [--threads N | --piece BYTES | --plain] FILE [OUTBOARD]";

/// How the file is hashed.
enum Mode {
    Tree { piece: usize },
    Threads(usize),
    Plain,
}

fn main() -> anyhow::Result<()> {
    let mut mode = Mode::Tree { piece: READ };
    let mut paths = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> anyhow::Result<usize> {
            let value = args.next().context(USAGE)?;
            let n: usize = value
                .parse()
                .with_context(|| format!("{what} takes a number, not '{value}'"))?;
            anyhow::ensure!(n > 0, "{what} must be at least 1");
            Ok(n)
        };
        mode = match arg.as_str() {
            "--threads" => Mode::Threads(number("--threads")?),
            "--piece" => Mode::Tree {
                piece: number("--piece")?,
            },
            "--plain" => Mode::Plain,
            _ => {
                paths.push(arg);
                continue;
            }
        };
    }
    let path = paths.first().context(USAGE)?;
    let outboard = paths
        .get(1)
        .cloned()
        .unwrap_or_else(|| format!("{path}.outboard"));
    let started = Instant::now();
    let file = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let root = match mode {
        Mode::Plain => plain(file)?,
        Mode::Tree { piece } => {
            let out = create(&outboard)?;
            tree(file, piece, out)?
        }
        Mode::Threads(threads) => {
            let mut out = create(&outboard)?;
            let (_, root) = ark_core::tree::hash_file(&file, threads, &mut out)?;
            out.flush()?;
            root
        }
    };
    println!("{}  {:.3}", root.to_hex(), started.elapsed().as_secs_f64());
    Ok(())
}

fn create(outboard: &str) -> anyhow::Result<BufWriter<std::fs::File>> {
    let file = std::fs::File::create(outboard).with_context(|| format!("creating {outboard}"))?;
    Ok(BufWriter::new(file))
}

/// The agent's download path: reads handed over in pieces of `piece`.
fn tree(
    mut file: std::fs::File,
    piece: usize,
    mut out: BufWriter<std::fs::File>,
) -> anyhow::Result<blake3::Hash> {
    let mut hasher = TreeHasher::new();
    let mut buf = vec![0u8; READ];
    let mut cvs = Vec::with_capacity(READ / GROUP_LEN * CV_LEN + 64);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for bytes in buf[..n].chunks(piece) {
            hasher.update(bytes);
            cvs.clear();
            hasher.drain_cvs_into(&mut cvs);
            out.write_all(&cvs)?;
        }
    }
    let (root, last) = hasher.finalize();
    if let Some(last) = last {
        out.write_all(&last)?;
    }
    out.flush()?;
    Ok(root)
}

/// BLAKE3 alone over the same reads.
fn plain(mut file: std::fs::File) -> anyhow::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; READ];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}
