//! The seeded sync of one disk (the [`super::Step::Sync`] step, and the two steps that finish
//! it: [`super::Step::LayoutPatches`] and [`super::Step::FirstChunkLast`]).
//!
//! For each chunk of the snapshot's index the scanner looks at what the target already holds:
//! a hole in a sparse file or a fresh file is known zero without reading; anything else is read
//! and hashed. Equal chunks are skipped; differing data chunks are fetched by `parallel` workers,
//! decompressed, checked against their id and only then handed to the single writer thread.
//! The same loop gives a full restore, a resume after any interruption, and an incremental
//! catch-up onto a target that holds an older snapshot.
//!
//! A delta from a known basis ([`super::Step::DeltaFromBasis`]) runs the same fetch workers and
//! writer, fed from the planner's list of differing chunks instead of the scanner: the target
//! is not read ([`Compare::Basis`]).
//!
//! Fail closed: the target's first chunk (MBR, GPT header, boot loader) is wiped before any other
//! write when it is going to change, and the snapshot's first chunk is held back by the writer
//! and written last ([`write_first_chunk`]), after everything else is durable.

use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use ferry_format::{ChunkId, DiskIndex, Entry};
use ferry_layout::Patch;
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};

use super::basis::Delta;
use super::{DiskPlan, DiskStats};
use crate::pipeline::{Abort, ChunkStore};
use crate::pool::Pool;
use crate::progress::Progress;
use crate::target::{Target, TargetKind};
use crate::{io_err, EngineError};

/// What the target holds at a chunk, as far as it can be known without reading.
struct LocalState {
    created: bool,
    /// Data extents of a sparse file (sorted); `None` for block devices.
    extents: Option<Vec<(u64, u64)>>,
}

impl LocalState {
    fn new(file: &std::fs::File, kind: TargetKind, size: u64) -> Self {
        match kind {
            TargetKind::File { created: true } => LocalState {
                created: true,
                extents: None,
            },
            TargetKind::File { created: false } => LocalState {
                created: false,
                extents: data_extents(file, size),
            },
            TargetKind::BlockDevice => LocalState {
                created: false,
                extents: None,
            },
        }
    }

    fn known_zero(&self, off: u64, len: u64) -> bool {
        if self.created {
            return true;
        }
        match &self.extents {
            Some(ext) => {
                let i = ext.partition_point(|&(_, end)| end <= off);
                ext.get(i).is_none_or(|&(start, _)| start >= off + len)
            }
            None => false,
        }
    }
}

/// Data extents of a file via SEEK_DATA/SEEK_HOLE; `None` if the filesystem cannot tell.
fn data_extents(file: &std::fs::File, size: u64) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // Moves this descriptor's offset only; every read and write here is positional.
        let data = match lseek(file, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(Errno::ENXIO) => return Some(out),
            Err(_) => return None,
        };
        let hole = lseek(file, data, Whence::SeekHole).ok()?;
        out.push((data as u64, hole as u64));
        pos = hole;
    }
    Some(out)
}

enum Work {
    Data(usize, Vec<u8>),
    Zero(usize),
}

/// Counters the stages share.
#[derive(Default)]
struct Counters {
    present: AtomicU64,
    fetched: AtomicU64,
    zero_skipped: AtomicU64,
    zero_written: AtomicU64,
    bytes_fetched: AtomicU64,
    bytes_written: AtomicU64,
    bytes_skipped: AtomicU64,
    target_read: AtomicU64,
}

/// How a sync decides which chunks to write.
#[derive(Clone, Copy)]
pub(super) enum Compare<'a> {
    /// Read and hash the target (the seeded sync).
    Target,
    /// The planner's delta from a basis the target holds exactly: nothing is read.
    Basis(&'a Delta),
}

/// The dry run of a sync: what it would fetch, skip and zero, reading the target only.
pub(super) fn dry_scan(d: &DiskPlan) -> Result<DiskStats, EngineError> {
    let mut stats = DiskStats {
        disk: d.disk.clone(),
        target: d.target.path.clone(),
        size: d.size,
        ..Default::default()
    };
    stats.chunks_total = d.index.entries.len() as u64;
    let file = if d.target.exists {
        Some(std::fs::File::open(&d.target.path).map_err(io_err(&d.target.path, "open", 0))?)
    } else {
        None
    };
    let local = match &file {
        Some(f) => LocalState::new(f, d.target.kind, d.target.size),
        None => LocalState {
            created: true,
            extents: None,
        },
    };
    // What the target holds now: a file may be shorter than the size it will be given.
    let held_len = match (&file, d.target.kind) {
        (Some(f), TargetKind::File { .. }) => f
            .metadata()
            .map_err(io_err(&d.target.path, "stat", 0))?
            .len(),
        _ => d.target.size,
    };
    let mut buf = Vec::new();
    for (i, e) in d.index.entries.iter().enumerate() {
        let (off, len) = d.index.range(i);
        let held = match &file {
            Some(f) if !local.known_zero(off, len as u64) && off + len as u64 <= held_len => {
                Some(read_local(f, &d.target.path, &mut buf, off, len)?)
            }
            _ => None,
        };
        if held.is_some() {
            stats.target_bytes_read += len as u64;
        }
        match (e, held) {
            (Entry::Data(id), Some(b)) if ChunkId::of(b) == *id => stats.chunks_present += 1,
            (Entry::Data(_), _) => stats.chunks_fetched += 1,
            (_, Some(b)) if !ferry_format::chunk::is_zero(b) => stats.chunks_zero_written += 1,
            _ => stats.chunks_zero_skipped += 1,
        }
    }
    Ok(stats)
}

/// The dry run of a delta: its counts, straight from the plan (nothing is read).
pub(super) fn dry_delta(d: &DiskPlan, delta: &Delta) -> DiskStats {
    let mut stats = DiskStats {
        disk: d.disk.clone(),
        target: d.target.path.clone(),
        size: d.size,
        chunks_total: d.index.entries.len() as u64,
        ..Default::default()
    };
    let refreshed = delta.refresh_first.then_some(0);
    for i in delta.fetch.iter().copied().chain(refreshed) {
        match d.index.entries.get(i) {
            Some(Entry::Data(_)) => stats.chunks_fetched += 1,
            _ => stats.chunks_zero_written += 1,
        }
    }
    stats.chunks_zero_written += delta.zero.len() as u64;
    let written = stats.chunks_fetched + stats.chunks_zero_written;
    for (i, e) in d.index.entries.iter().enumerate() {
        let touched = delta.fetch.binary_search(&i).is_ok()
            || delta.zero.binary_search(&i).is_ok()
            || (i == 0 && delta.refresh_first);
        if !touched {
            match e {
                Entry::Data(_) => stats.chunks_present += 1,
                _ => stats.chunks_zero_skipped += 1,
            }
        }
    }
    debug_assert_eq!(
        written + stats.chunks_present + stats.chunks_zero_skipped,
        stats.chunks_total
    );
    stats
}

fn read_local<'a>(
    f: &std::fs::File,
    path: &std::path::Path,
    buf: &'a mut Vec<u8>,
    off: u64,
    len: usize,
) -> Result<&'a [u8], EngineError> {
    buf.resize(len, 0);
    f.read_exact_at(buf, off)
        .map_err(io_err(path, "read", off))?;
    Ok(&buf[..])
}

/// What the sync of one disk left for the steps that finish it.
pub(super) struct Synced {
    pub(super) stats: DiskStats,
    /// The snapshot's first chunk when it differs from what the target held: written last.
    pub(super) held_first: Option<HeldFirst>,
}

/// The snapshot's first chunk, held back by the writer.
pub(super) struct HeldFirst(Work);

/// Scan → fetch workers → writer for every chunk but the first, then fdatasync: everything but
/// the boot-critical first chunk is durable when this returns.
pub(super) fn sync_data(
    store: &dyn ChunkStore,
    disk: &str,
    index: &DiskIndex,
    compare: Compare,
    t: &Target,
    parallel: usize,
    progress: &Progress,
) -> Result<Synced, EngineError> {
    let chunk_size = index.chunk_size as usize;
    let counters = Counters::default();
    let abort = Abort::default();
    let pool = Pool::new(parallel + 2, chunk_size);
    // With a marker the first chunk is always rewritten: the wipe that precedes every other
    // write puts the marker there, and only the snapshot's first chunk, last, replaces it.
    // A delta knows already whether it writes the first chunk (super::basis has the rule).
    let first_dirty = AtomicBool::new(match compare {
        Compare::Target => t.marker.is_some(),
        Compare::Basis(d) => d.writes_first(),
    });

    // Each stage owns its channel ends (see crate::pipeline): when one ends, for any reason,
    // the stages next to it see the disconnection or the abort flag and end too.
    let held_first = std::thread::scope(|s| {
        let (fetch_tx, fetch_rx) = sync_channel::<(usize, ChunkId)>(parallel * 2);
        let fetch_rx = Arc::new(Mutex::new(fetch_rx));
        let (work_tx, work_rx) = sync_channel::<Work>(parallel + 2);
        let (counters, abort, pool, first_dirty) = (&counters, &abort, &pool, &first_dirty);
        {
            let work_tx = work_tx.clone();
            s.spawn(move || match compare {
                Compare::Target => abort.guard("the target scanner", || {
                    let local = LocalState::new(&t.file, t.kind, t.size);
                    scan(
                        index,
                        t,
                        &local,
                        fetch_tx,
                        work_tx,
                        counters,
                        abort,
                        first_dirty,
                        progress,
                    )
                }),
                Compare::Basis(delta) => abort.guard("the delta feeder", || {
                    feed_delta(index, delta, fetch_tx, work_tx, counters, abort, progress);
                    Ok(())
                }),
            });
        }
        for _ in 0..parallel {
            let (work_tx, fetch_rx) = (work_tx.clone(), Arc::clone(&fetch_rx));
            s.spawn(move || {
                abort.guard("a chunk fetch worker", || {
                    fetch_worker(store, disk, index, fetch_rx, work_tx, pool, counters, abort)
                })
            });
        }
        drop((work_tx, fetch_rx));
        abort
            .guard("the target writer", || {
                Ok(write_loop(
                    t,
                    index,
                    work_rx,
                    pool,
                    counters,
                    abort,
                    first_dirty,
                    progress,
                ))
            })
            .flatten()
    });
    if let Some(e) = abort.take() {
        return Err(e);
    }
    fdatasync(t)?;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let stats = DiskStats {
        disk: disk.to_string(),
        target: t.path.clone(),
        size: index.disk_size,
        chunks_total: index.entries.len() as u64,
        chunks_present: c(&counters.present),
        chunks_fetched: c(&counters.fetched),
        chunks_zero_skipped: c(&counters.zero_skipped),
        chunks_zero_written: c(&counters.zero_written),
        bytes_fetched: c(&counters.bytes_fetched),
        bytes_written: c(&counters.bytes_written),
        bytes_skipped: c(&counters.bytes_skipped),
        target_bytes_read: c(&counters.target_read),
    };
    Ok(Synced {
        stats,
        held_first: held_first.map(HeldFirst),
    })
}

fn fdatasync(t: &Target) -> Result<(), EngineError> {
    t.file.sync_data().map_err(io_err(&t.path, "fdatasync", 0))
}

#[allow(clippy::too_many_arguments)]
fn scan(
    index: &DiskIndex,
    t: &Target,
    local: &LocalState,
    fetch_tx: SyncSender<(usize, ChunkId)>,
    work_tx: SyncSender<Work>,
    counters: &Counters,
    abort: &Abort,
    first_dirty: &AtomicBool,
    progress: &Progress,
) -> Result<(), EngineError> {
    let mut buf = Vec::with_capacity(index.chunk_size as usize);
    for (i, entry) in index.entries.iter().enumerate() {
        if abort.is_set() {
            break;
        }
        let (off, len) = index.range(i);
        let held = if local.known_zero(off, len as u64) {
            None
        } else {
            counters
                .target_read
                .fetch_add(len as u64, Ordering::Relaxed);
            Some(read_local(&t.file, &t.path, &mut buf, off, len)?)
        };
        let skip = match (entry, held) {
            (Entry::Data(id), Some(b)) => ChunkId::of(b) == *id,
            (Entry::Data(_), None) => false,
            (_, None) => true,
            (_, Some(b)) => ferry_format::chunk::is_zero(b),
        };
        // A wiped (marked) first chunk is rewritten even if the target held it before.
        let skip = skip && !(i == 0 && first_dirty.load(Ordering::SeqCst));
        if skip {
            let c = if matches!(entry, Entry::Data(_)) {
                &counters.present
            } else {
                &counters.zero_skipped
            };
            c.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes_skipped
                .fetch_add(len as u64, Ordering::Relaxed);
            progress.add(len as u64);
            continue;
        }
        if i == 0 {
            first_dirty.store(true, Ordering::SeqCst);
        }
        let sent = match entry {
            Entry::Data(id) => fetch_tx.send((i, *id)).is_ok(),
            _ => work_tx.send(Work::Zero(i)).is_ok(),
        };
        if !sent {
            break;
        }
    }
    Ok(())
}

/// The delta's scanner: hands the planner's differing chunks (and the refreshed first chunk) to
/// the fetch workers and the writer in disk order, and counts the rest as in place. Reads
/// nothing.
fn feed_delta(
    index: &DiskIndex,
    delta: &Delta,
    fetch_tx: SyncSender<(usize, ChunkId)>,
    work_tx: SyncSender<Work>,
    counters: &Counters,
    abort: &Abort,
    progress: &Progress,
) {
    let (mut fetch, mut zero) = (delta.fetch.iter().peekable(), delta.zero.iter().peekable());
    for (i, entry) in index.entries.iter().enumerate() {
        if abort.is_set() {
            break;
        }
        let listed_fetch = fetch.next_if_eq(&&i).is_some();
        let listed_zero = zero.next_if_eq(&&i).is_some();
        let write = listed_fetch || listed_zero || (i == 0 && delta.refresh_first);
        if !write {
            let len = index.range(i).1 as u64;
            let c = if matches!(entry, Entry::Data(_)) {
                &counters.present
            } else {
                &counters.zero_skipped
            };
            c.fetch_add(1, Ordering::Relaxed);
            counters.bytes_skipped.fetch_add(len, Ordering::Relaxed);
            progress.add(len);
            continue;
        }
        let sent = match entry {
            Entry::Data(id) => fetch_tx.send((i, *id)).is_ok(),
            _ => work_tx.send(Work::Zero(i)).is_ok(),
        };
        if !sent {
            break;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fetch_worker(
    store: &dyn ChunkStore,
    disk: &str,
    index: &DiskIndex,
    rx: Arc<Mutex<Receiver<(usize, ChunkId)>>>,
    work_tx: SyncSender<Work>,
    pool: &Pool,
    counters: &Counters,
    abort: &Abort,
) -> Result<(), EngineError> {
    let mut compressed = Vec::new();
    let mut dctx =
        zstd::bulk::Decompressor::new().map_err(|e| EngineError::Worker(format!("zstd: {e}")))?;
    let limit = zstd::zstd_safe::compress_bound(index.chunk_size as usize) as u64;
    loop {
        // A poisoned lock means another worker panicked; its panic is the error.
        let next = match rx.lock() {
            Ok(g) => g.recv(),
            Err(_) => return Ok(()),
        };
        let Ok((i, id)) = next else { return Ok(()) };
        if abort.is_set() {
            return Ok(());
        }
        let (off, len) = index.range(i);
        store.get_chunk(&id, &mut compressed, limit)?;
        counters
            .bytes_fetched
            .fetch_add(compressed.len() as u64, Ordering::Relaxed);
        let Some(mut buf) = pool.take(abort) else {
            return Ok(());
        };
        let corrupt = |detail: String| EngineError::CorruptChunk {
            id,
            disk: disk.to_string(),
            offset: off,
            detail,
        };
        match dctx.decompress_to_buffer(&compressed, &mut buf) {
            Ok(n) if n == len => {}
            Ok(n) => {
                pool.give(buf);
                return Err(corrupt(format!(
                    "it holds {n} bytes where {len} are expected"
                )));
            }
            Err(e) => {
                pool.give(buf);
                return Err(corrupt(format!("it does not decompress: {e}")));
            }
        }
        let got = ChunkId::of(&buf);
        if got != id {
            pool.give(buf);
            return Err(corrupt(format!("its content hashes to {got}")));
        }
        counters.fetched.fetch_add(1, Ordering::Relaxed);
        if work_tx.send(Work::Data(i, buf)).is_err() {
            return Ok(());
        }
    }
}

/// The single writer. Returns the held-back first chunk, written by the caller last.
#[allow(clippy::too_many_arguments)]
fn write_loop(
    t: &Target,
    index: &DiskIndex,
    rx: Receiver<Work>,
    pool: &Pool,
    counters: &Counters,
    abort: &Abort,
    first_dirty: &AtomicBool,
    progress: &Progress,
) -> Option<Work> {
    let mut held = None;
    let mut first_wiped = false;
    // Keep draining after an error so no stage waits forever for a buffer.
    for w in rx {
        let i = match &w {
            Work::Data(i, _) | Work::Zero(i) => *i,
        };
        if i == 0 {
            held = Some(w);
            continue;
        }
        if !abort.is_set() {
            if !first_wiped && first_dirty.load(Ordering::SeqCst) {
                // The old boot sectors must not point into a half-written disk.
                first_wiped = true;
                if let Err(e) = write_work(t, index, &Work::Zero(0), &Counters::default())
                    .and_then(|()| write_marker(t))
                {
                    abort.set(e);
                }
            }
            match write_work(t, index, &w, counters) {
                Ok(()) => progress.add(index.range(i).1 as u64),
                Err(e) => abort.set(e),
            }
        }
        if let Work::Data(_, buf) = w {
            pool.give(buf);
        }
    }
    if let Some(w) = &held {
        progress.add(index.range(0).1 as u64);
        let _ = w;
    }
    held
}

fn write_work(
    t: &Target,
    index: &DiskIndex,
    w: &Work,
    counters: &Counters,
) -> Result<(), EngineError> {
    match w {
        Work::Data(i, buf) => {
            let (off, _) = index.range(*i);
            t.file
                .write_all_at(buf, off)
                .map_err(io_err(&t.path, "write", off))?;
            start_writeback(t, off, buf.len() as u64);
            counters
                .bytes_written
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        Work::Zero(i) => {
            let (off, len) = index.range(*i);
            zero_range(t, off, len as u64)?;
            counters.zero_written.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes_written
                .fetch_add(len as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The in-progress marker at offset 0, durable before the data it announces is written.
fn write_marker(t: &Target) -> Result<(), EngineError> {
    if let Some(m) = &t.marker {
        t.file
            .write_all_at(m, 0)
            .map_err(io_err(&t.path, "write the in-progress marker", 0))?;
        t.file
            .sync_data()
            .map_err(io_err(&t.path, "fdatasync", 0))?;
    }
    Ok(())
}

/// The layout patches that end past the first chunk (a patch that straddles its end: only the
/// part past it), written once everything but the first chunk is durable. Returns the bytes
/// written; [`write_first_chunk`] makes them durable before it writes the first chunk.
pub(super) fn write_patches(
    t: &Target,
    first_len: u64,
    patches: &[Patch],
) -> Result<u64, EngineError> {
    let mut written = 0;
    for p in patches.iter().filter(|p| p.end() > first_len) {
        let skip = first_len.saturating_sub(p.offset) as usize;
        let off = p.offset + skip as u64;
        t.file.write_all_at(&p.bytes[skip..], off).map_err(io_err(
            &t.path,
            "write layout patch",
            off,
        ))?;
        written += (p.bytes.len() - skip) as u64;
    }
    Ok(written)
}

/// What [`write_first_chunk`] did to the target.
pub(super) struct FirstWrite {
    pub(super) written: u64,
    /// The first chunk was read back to patch it (the target held it already).
    pub(super) read: u64,
}

/// Last of all: the first chunk, with the patches that fall inside it merged in, between two
/// fdatasyncs. Nothing is written when the target already held the snapshot's first chunk and
/// no patch touches it.
pub(super) fn write_first_chunk(
    t: &Target,
    first_len: u64,
    patches: &[Patch],
    held: Option<HeldFirst>,
) -> Result<FirstWrite, EngineError> {
    let first_patches: Vec<&Patch> = patches.iter().filter(|p| p.offset < first_len).collect();
    let mut read = 0;
    if held.is_none() && first_patches.is_empty() {
        return Ok(FirstWrite { written: 0, read });
    }
    fdatasync(t)?;
    let first_len = first_len as usize;
    let mut first = match held {
        Some(HeldFirst(Work::Data(_, buf))) => buf,
        Some(HeldFirst(Work::Zero(_))) => vec![0u8; first_len],
        // The target already held the snapshot's first chunk: patch what is there.
        None => {
            let mut b = vec![0u8; first_len];
            t.file
                .read_exact_at(&mut b, 0)
                .map_err(io_err(&t.path, "read", 0))?;
            read = first_len as u64;
            b
        }
    };
    for p in first_patches {
        p.apply_to(0, &mut first);
    }
    t.file
        .write_all_at(&first, 0)
        .map_err(io_err(&t.path, "write", 0))?;
    fdatasync(t)?;
    Ok(FirstWrite {
        written: first.len() as u64,
        read,
    })
}

/// The whole sync of one disk as one call (the pipeline's fault tests use it).
#[cfg(test)]
pub(crate) fn sync_chunks(
    store: &dyn ChunkStore,
    disk: &str,
    index: &DiskIndex,
    patches: &[Patch],
    t: &Target,
    parallel: usize,
    progress: &Progress,
) -> Result<DiskStats, EngineError> {
    let Synced {
        mut stats,
        held_first,
    } = sync_data(store, disk, index, Compare::Target, t, parallel, progress)?;
    let first_len = index.range(0).1 as u64;
    stats.bytes_written += write_patches(t, first_len, patches)?;
    let first = write_first_chunk(t, first_len, patches, held_first)?;
    stats.bytes_written += first.written;
    stats.target_bytes_read += first.read;
    Ok(stats)
}

/// Start writing this range to the device now (without waiting), so the final fdatasync finds
/// little left to do: writeback overlaps fetching instead of following it.
fn start_writeback(t: &Target, off: u64, len: u64) {
    // nix has no sync_file_range.
    // SAFETY: sync_file_range on a valid fd with in-range arguments; it only schedules I/O.
    unsafe {
        libc::sync_file_range(
            t.file.as_raw_fd(),
            off as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Make a range read as zeros: punch a hole in a file, BLKZEROOUT on a device, else write zeros.
fn zero_range(t: &Target, off: u64, len: u64) -> Result<(), EngineError> {
    let done = match t.kind {
        TargetKind::File { .. } => fallocate(
            &t.file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            off as i64,
            len as i64,
        )
        .is_ok(),
        // A discard is not a zeroing, BLKZEROOUT is.
        TargetKind::BlockDevice => ferry_sys::blk::zero_out(&t.file, off, len).is_ok(),
    };
    if !done {
        let zeros = vec![0u8; len as usize];
        t.file
            .write_all_at(&zeros, off)
            .map_err(io_err(&t.path, "write zeros", off))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_zero_follows_extents() {
        let l = LocalState {
            created: false,
            extents: Some(vec![(4096, 8192), (65536, 70000)]),
        };
        assert!(l.known_zero(0, 4096));
        assert!(!l.known_zero(0, 4097));
        assert!(l.known_zero(8192, 4096));
        assert!(!l.known_zero(60000, 6000));
        assert!(l.known_zero(70000, 100));
        let none = LocalState {
            created: false,
            extents: None,
        };
        assert!(!none.known_zero(0, 1));
    }
}
