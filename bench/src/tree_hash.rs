//! `tree-hash FILE [OUTBOARD]`: hashes FILE the way the agent does while it
//! downloads — the chunked BLAKE3 tree hasher fed in 256 KiB reads, group
//! CVs written to an outboard — and prints the root and the wall time, for
//! comparison with `b3sum --num-threads 1` in bench/run.sh.

use std::io::{BufWriter, Read, Write};
use std::time::Instant;

use anyhow::Context;
use ark_core::tree::TreeHasher;

/// Read size: the agent's network chunks are of this order.
const READ: usize = 256 * 1024;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args.next().context("usage: tree-hash FILE [OUTBOARD]")?;
    let outboard = args.next().unwrap_or_else(|| format!("{path}.outboard"));
    let started = Instant::now();
    let mut file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    let mut out = BufWriter::new(
        std::fs::File::create(&outboard).with_context(|| format!("creating {outboard}"))?,
    );
    let mut hasher = TreeHasher::new();
    let mut buf = vec![0u8; READ];
    let mut cvs =
        Vec::with_capacity(READ / ark_core::tree::GROUP_LEN * ark_core::tree::CV_LEN + 64);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        cvs.clear();
        hasher.drain_cvs_into(&mut cvs);
        out.write_all(&cvs)?;
    }
    let (root, last) = hasher.finalize();
    if let Some(last) = last {
        out.write_all(&last)?;
    }
    out.flush()?;
    println!("{}  {:.3}", root.to_hex(), started.elapsed().as_secs_f64());
    Ok(())
}
