//! The ingest pipeline of one body: what the fetch task receives is hashed
//! (the BLAKE3 tree and its outboard), written to the staging file and made
//! durable on threads of its own, so that receiving, hashing and writing
//! overlap and a fetch costs the slowest of the wire, the hash and the disk
//! rather than their sum. It does not talk to the origin, apply limits or
//! run the checks: that stays with the fetch task ([`super::download`]),
//! which hands over bytes it has accepted, in order.
//!
//! ## Design
//!
//! ```text
//!  fetch task ──Work──▶ hasher ──Written──▶ writer ──Sync──▶ syncer
//!  (async)     DEPTH    thread   DEPTH      thread   1       thread
//!                       TreeHasher          data file,       fdatasync of both files,
//!                                           outboard         then the resume state
//! ```
//!
//! - Bounded: each channel holds at most [`DEPTH`] batches of
//!   [`BATCH_BYTES`], and the writer hands each buffer back to the fetch
//!   task, which copies the next pieces into it: the same few buffers
//!   circulate. (Holding the HTTP client's own pieces instead saves that
//!   copy but makes it allocate fresh memory for every read, whose page
//!   faults cost more, on a VM far more.) A slow disk fills the writer's channel, then the hasher's, and
//!   the fetch task waits on its send: back-pressure reaches the socket and
//!   memory stays a few batches whatever the body's size.
//! - Two cores overlap: the hasher hashes batch n+1 while the writer copies
//!   batch n into the page cache and the fetch task receives batch n+2.
//! - Write-back starts early: every [`WRITEBACK_BYTES`] the writer asks the
//!   syncer for an `fdatasync` of the data, which runs while the writer goes
//!   on (skipped while the previous one still runs). The disk writes while
//!   the network receives, and the durability point at the end waits for
//!   about one interval's bytes, not the whole body's.
//! - Checkpoints stay durable: when one is due (the policy of
//!   [`super::resume`]) the writer flushes the outboard and asks for a
//!   recorded sync naming the groups it has written. The syncer makes data
//!   and outboard durable first, then writes the resume state: the state
//!   never names a group whose bytes or CV could still be lost.
//! - Failures: a failed write or sync ends the writer, which reports the
//!   error through [`Pipeline::finish`] or [`Pipeline::failure`]; the
//!   stages before it see their channel closed and stop, so the fetch task
//!   sees its next send fail instead of waiting forever.
//! - Dropping the pipeline (the fetch future dropped, a restart from zero)
//!   tells every stage to stop and joins them: once it is gone no thread
//!   touches the files, so a fetch that starts again on them never races an
//!   old one. That costs at most one write and one fsync in progress. What
//!   the stages held and never wrote is simply fetched again: a resume
//!   starts after the groups whose bytes and CVs both reached the files and
//!   agree (at least the last recorded checkpoint).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::resume::{
    ResumeState, CHECKPOINT_BYTES, CHECKPOINT_EVERY, CHECKPOINT_MAX_BYTES, OUTBOARD_BUFFER,
};
use crate::tree::{TreeHasher, CV_LEN};

/// Bytes the fetch task gathers before handing a batch over: large enough
/// that a thread wake-up per batch costs nothing measurable (8,192 for
/// 2 GiB), small enough that [`DEPTH`] of them in each channel keep the
/// agent's memory to a few MiB. (Measured on 2 GiB from nginx: 512 KiB
/// batches four deep peaked at 22 MiB RSS and were no faster.)
pub const BATCH_BYTES: usize = 256 * 1024;

/// Batches each channel holds: enough to ride over a hiccup of one stage
/// (an fsync's journal commit, a scheduling delay) without stalling the
/// others, few enough that memory stays bounded.
pub(super) const DEPTH: usize = 3;

/// Bytes between two write-back requests: the page cache holds at most
/// about this much of the body not yet on its way to the disk, which is
/// what the final sync waits for. Smaller asks the disk for more flushes
/// (each `fdatasync` is a cache flush and often a journal commit).
pub const WRITEBACK_BYTES: u64 = 16 << 20;

/// Bytes the fetch task has accepted and not yet handed over, in one of
/// the pipeline's buffers: at most [`BATCH_BYTES`], never reallocated.
#[derive(Debug, Default)]
pub(super) struct Batch {
    bytes: Vec<u8>,
}

impl Batch {
    /// Takes what fits of `piece`; returns how much it took.
    pub(super) fn fill(&mut self, piece: &[u8]) -> usize {
        let take = piece.len().min(BATCH_BYTES - self.bytes.len());
        self.bytes.extend_from_slice(&piece[..take]);
        take
    }

    pub(super) fn is_full(&self) -> bool {
        self.bytes.len() >= BATCH_BYTES
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// What the fetch task sends the hasher.
enum Work {
    Data(Batch),
    /// Make everything sent before durable and record it; answer when done.
    Checkpoint(oneshot::Sender<io::Result<()>>),
    /// The body is whole: the root, the last CV, everything durable.
    Finish,
}

/// What the hasher sends the writer.
enum Written {
    /// A batch with the outboard bytes of the groups it completed.
    Data(Batch, Vec<u8>),
    Checkpoint(oneshot::Sender<io::Result<()>>),
    Finish {
        root: blake3::Hash,
        last: Option<[u8; CV_LEN]>,
    },
}

/// What the writer asks the syncer: make the data durable and, when
/// `record` says how many groups (their bytes and CVs written before this
/// request), the outboard too and then the resume state naming them.
struct Sync {
    record: Option<u64>,
    ack: Option<oneshot::Sender<io::Result<()>>>,
}

/// Where a pipeline starts: files positioned after what they keep, and the
/// tree of the kept groups.
#[derive(Debug)]
pub(super) struct Start {
    pub data: File,
    pub outboard: File,
    pub tree: TreeHasher,
    /// Groups whose CVs the outboard already holds (durable: a resume
    /// re-verified them, a fresh body has none).
    pub groups: u64,
    /// The resume state the syncer writes, its `groups` filled in each time.
    pub state: ResumeState,
    pub resume_at: PathBuf,
}

/// A running pipeline. Why each field exists: `work` feeds the hasher (None
/// once finishing or stopping); `spare` brings written batches' buffers
/// back, so the same few buffers circulate and no fresh memory is touched
/// per batch; `done` brings the writer's outcome; `stop` tells the stages
/// to drop what they hold; `threads` are joined on drop.
#[derive(Debug)]
pub(super) struct Pipeline {
    work: Option<mpsc::Sender<Work>>,
    spare: mpsc::UnboundedReceiver<Vec<u8>>,
    done: Option<oneshot::Receiver<io::Result<blake3::Hash>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts the hasher, writer and syncer threads.
    pub(super) fn start(start: Start) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (work_tx, work_rx) = mpsc::channel(DEPTH);
        let (written_tx, written_rx) = sync_channel(DEPTH);
        let (sync_tx, sync_rx) = sync_channel(1);
        let (done_tx, done_rx) = oneshot::channel();
        // Unbounded in type only: it holds no more buffers than were
        // handed over, and those are bounded by the channels above.
        let (spare_tx, spare_rx) = mpsc::unbounded_channel();
        let syncer = Syncer {
            data: start.data.try_clone()?,
            outboard: start.outboard.try_clone()?,
            state: start.state,
            at: start.resume_at,
        };
        let syncer = spawn("ark-ingest-sync", move || syncer.run(sync_rx))?;
        let writer = Writer {
            data: start.data,
            outboard: BufWriter::with_capacity(OUTBOARD_BUFFER, start.outboard),
            groups: start.groups,
            written: 0,
            synced_at: 0,
            checkpoint: (0, Instant::now()),
            record_due: false,
            syncer: Some((sync_tx, syncer)),
            spare: spare_tx,
            stop: stop.clone(),
        };
        let hasher_stop = stop.clone();
        let mut threads = Vec::with_capacity(2);
        threads.push(spawn("ark-ingest-write", move || {
            writer.run(written_rx, done_tx)
        })?);
        let mut tree = start.tree;
        threads.push(spawn("ark-ingest-hash", move || {
            hash(&mut tree, work_rx, written_tx, &hasher_stop)
        })?);
        Ok(Self {
            work: Some(work_tx),
            spare: spare_rx,
            done: Some(done_rx),
            stop,
            threads,
        })
    }

    /// An empty batch to fill: a buffer the writer is done with, or a new
    /// one while fewer are in circulation than the pipeline holds.
    pub(super) fn batch(&mut self) -> Batch {
        let bytes = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BATCH_BYTES));
        Batch { bytes }
    }

    /// Hands a batch over, waiting while the pipeline is full. Fails with
    /// the error that stopped the pipeline.
    pub(super) async fn send(&mut self, batch: Batch) -> io::Result<()> {
        self.submit(Work::Data(batch)).await
    }

    /// Makes everything handed over durable and records it in the resume
    /// state: the kept bytes of a cut body survive a crash.
    pub(super) async fn checkpoint(&mut self) -> io::Result<()> {
        let (ack, answer) = oneshot::channel();
        self.submit(Work::Checkpoint(ack)).await?;
        match answer.await {
            Ok(done) => done,
            Err(_) => Err(self.failure().await),
        }
    }

    /// The body is whole: returns its root once data and outboard (with the
    /// last group's CV) are durable. No resume state is written after this.
    pub(super) async fn finish(mut self) -> io::Result<blake3::Hash> {
        self.submit(Work::Finish).await?;
        self.work = None;
        match self.done.take() {
            Some(done) => done.await.unwrap_or_else(|_| Err(stopped())),
            None => Err(stopped()),
        }
    }

    async fn submit(&mut self, work: Work) -> io::Result<()> {
        let sent = match &self.work {
            Some(tx) => tx.send(work).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            Err(self.failure().await)
        }
    }

    /// Why the pipeline stopped taking work: the writer's or syncer's error.
    async fn failure(&mut self) -> io::Error {
        self.work = None;
        match self.done.take() {
            Some(done) => match done.await {
                Ok(Err(e)) => e,
                _ => stopped(),
            },
            None => stopped(),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.work = None;
        for thread in self.threads.drain(..) {
            // A stage that panicked has nothing left to stop.
            let _ = thread.join();
        }
    }
}

/// The error when a stage ended without saying why (it panicked).
fn stopped() -> io::Error {
    io::Error::other("the ingest pipeline stopped unexpectedly (a stage panicked)")
}

/// An `io::Error` for a second listener: it is not `Clone`.
fn copy(e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// The hasher stage: feeds the tree, passes each batch on with the CVs it
/// completed. Ends when the fetch task stops sending, or the writer stops
/// taking (it failed: the fetch task learns why from the writer).
fn hash(
    tree: &mut TreeHasher,
    mut from: mpsc::Receiver<Work>,
    to: SyncSender<Written>,
    stop: &AtomicBool,
) {
    while let Some(work) = from.blocking_recv() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let next = match work {
            Work::Data(batch) => {
                tree.update(&batch.bytes);
                let mut cvs = Vec::new();
                tree.drain_cvs_into(&mut cvs);
                Written::Data(batch, cvs)
            }
            Work::Checkpoint(ack) => Written::Checkpoint(ack),
            Work::Finish => {
                let (root, last) = std::mem::take(tree).finalize();
                Written::Finish { root, last }
            }
        };
        if to.send(next).is_err() {
            return;
        }
    }
}

/// The writer stage. Why each field exists: the files it appends to;
/// `groups` is how many CVs the outboard holds (what a checkpoint names);
/// `written` counts this body's bytes written, `synced_at` where the last
/// write-back request stood; `checkpoint` is (bytes, time) of the last
/// recorded one and `record_due` a checkpoint that waits for an idle
/// syncer; `syncer` is its channel and thread (joined before the outcome is
/// reported, so no resume state is written after it); `spare` takes the
/// written buffers back to the fetch task.
struct Writer {
    data: File,
    outboard: BufWriter<File>,
    groups: u64,
    written: u64,
    synced_at: u64,
    checkpoint: (u64, Instant),
    record_due: bool,
    syncer: Option<(SyncSender<Sync>, JoinHandle<io::Result<()>>)>,
    spare: mpsc::UnboundedSender<Vec<u8>>,
    stop: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, from: Receiver<Written>, done: oneshot::Sender<io::Result<blake3::Hash>>) {
        let outcome = self.write(&from);
        // The syncer goes first: its error is the outcome if the writing
        // went well, and nothing may record a checkpoint after the end.
        let synced = self.stop_syncer();
        let outcome = match outcome {
            Ok(Some(root)) => synced.and_then(|()| self.make_durable()).map(|()| root),
            // Stopped or abandoned: the fetch is gone, nobody listens.
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let _ = done.send(outcome);
    }

    /// Writes until the end of the body (its root), the hasher's end (None)
    /// or an error.
    fn write(&mut self, from: &Receiver<Written>) -> io::Result<Option<blake3::Hash>> {
        while let Ok(written) = from.recv() {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            match written {
                Written::Data(mut batch, cvs) => {
                    ark_core::fs::write_in_pieces(&mut self.data, &batch.bytes)?;
                    self.outboard.write_all(&cvs)?;
                    self.groups += (cvs.len() / CV_LEN) as u64;
                    self.written += batch.bytes.len() as u64;
                    batch.bytes.clear();
                    // The fetch task may have stopped taking buffers back.
                    let _ = self.spare.send(batch.bytes);
                    self.pace()?;
                }
                Written::Checkpoint(ack) => {
                    self.outboard.flush()?;
                    self.request(Some(self.groups), Some(ack), true)?;
                    self.checkpoint = (self.written, Instant::now());
                    self.record_due = false;
                }
                Written::Finish { root, last } => {
                    if let Some(last) = last {
                        self.outboard.write_all(&last)?;
                    }
                    return Ok(Some(root));
                }
            }
        }
        Ok(None)
    }

    /// After each batch: a write-back request every [`WRITEBACK_BYTES`], a
    /// recorded one when a checkpoint is due; neither waits for the syncer
    /// (a busy syncer is asked again after the next batch).
    fn pace(&mut self) -> io::Result<()> {
        let (at, when) = self.checkpoint;
        let since = self.written - at;
        self.record_due |= since >= CHECKPOINT_MAX_BYTES
            || (since >= CHECKPOINT_BYTES && when.elapsed() >= CHECKPOINT_EVERY);
        if !self.record_due && self.written - self.synced_at < WRITEBACK_BYTES {
            return Ok(());
        }
        let record = if self.record_due {
            self.outboard.flush()?;
            Some(self.groups)
        } else {
            None
        };
        if self.request(record, None, false)? {
            self.synced_at = self.written;
            if self.record_due {
                self.checkpoint = (self.written, Instant::now());
                self.record_due = false;
            }
        }
        Ok(())
    }

    /// Asks the syncer for a sync; `wait` blocks for a free slot, else a
    /// busy syncer means Ok(false). A syncer that stopped has failed: its
    /// error is returned.
    fn request(
        &mut self,
        record: Option<u64>,
        ack: Option<oneshot::Sender<io::Result<()>>>,
        wait: bool,
    ) -> io::Result<bool> {
        let Some((tx, _)) = &self.syncer else {
            return Err(stopped());
        };
        let sync = Sync { record, ack };
        let sent = if wait {
            tx.send(sync).map_err(|_| ())
        } else {
            match tx.try_send(sync) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => return Ok(false),
                Err(TrySendError::Disconnected(_)) => Err(()),
            }
        };
        match sent {
            Ok(()) => Ok(true),
            Err(()) => Err(self.stop_syncer().err().unwrap_or_else(stopped)),
        }
    }

    /// Closes the syncer's channel and waits for it: its first error.
    fn stop_syncer(&mut self) -> io::Result<()> {
        match self.syncer.take() {
            Some((tx, thread)) => {
                drop(tx);
                thread.join().unwrap_or_else(|_| Err(stopped()))
            }
            None => Ok(()),
        }
    }

    /// The end of the body: data and outboard durable.
    fn make_durable(&mut self) -> io::Result<()> {
        self.data.sync_all()?;
        self.outboard.flush()?;
        self.outboard.get_ref().sync_all()
    }
}

/// The syncer stage: its own handles on the two files (an `fdatasync` on
/// them covers every write made before it, through any handle) and the
/// resume state it records.
struct Syncer {
    data: File,
    outboard: File,
    state: ResumeState,
    at: PathBuf,
}

impl Syncer {
    /// Serves requests until the writer closes the channel or one fails;
    /// that first error is the thread's result (and each waiting ack's).
    fn run(mut self, from: Receiver<Sync>) -> io::Result<()> {
        while let Ok(Sync { record, ack }) = from.recv() {
            let synced = self.sync(record);
            let failed = synced.as_ref().err().map(copy);
            if let Some(ack) = ack {
                let _ = ack.send(synced);
            }
            if let Some(e) = failed {
                tracing::warn!(path = %self.at.display(), error = %e, "syncing a staged file failed");
                return Err(e);
            }
        }
        Ok(())
    }

    fn sync(&mut self, record: Option<u64>) -> io::Result<()> {
        self.data.sync_data()?;
        let Some(groups) = record else {
            return Ok(());
        };
        self.outboard.sync_data()?;
        self.state.groups = groups;
        let json = serde_json::to_vec(&self.state).map_err(io::Error::other)?;
        crate::write_atomic(&self.at, &json, 0o600)
    }
}
