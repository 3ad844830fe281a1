//! Restore as a seeded sync (ARCHITECTURE §4).
//!
//! For each chunk of the snapshot's index the scanner looks at what the target already holds:
//! a hole in a sparse file or a fresh file is known zero without reading; anything else is read
//! and hashed. Equal chunks are skipped; differing data chunks are fetched by `parallel` workers,
//! decompressed, checked against their id and only then handed to the single writer thread.
//! The same loop gives a full restore, a resume after any interruption, and an incremental
//! catch-up onto a target that holds an older snapshot.
//!
//! Fail closed: the target's first chunk (MBR, GPT header, boot loader) is wiped before any other
//! write when it is going to change, and the snapshot's first chunk is written last, after
//! everything else is durable. A restore that stops half-way leaves a disk that does not boot.

use std::fmt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::Instant;

use ferry_client::Client;
use ferry_format::{ChunkId, DiskIndex, Entry, Manifest};
use serde::Serialize;

use crate::pool::Pool;
use crate::progress::{human, Progress};
use crate::target::{self, Target, TargetCheck, TargetKind};
use crate::{io_err, EngineError};

/// Default number of chunk fetches in flight.
pub const DEFAULT_PARALLEL: usize = 4;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub snapshot: String,
    /// (disk name in the snapshot, target path)
    pub targets: Vec<(String, PathBuf)>,
    pub overwrite: bool,
    pub dry_run: bool,
    pub parallel: usize,
    pub quiet: bool,
}

/// What a restore will do, decided before anything is written.
pub struct RestorePlan {
    pub manifest: Manifest,
    pub disks: Vec<DiskPlan>,
}

pub struct DiskPlan {
    pub disk: String,
    pub size: u64,
    pub index: DiskIndex,
    pub target: TargetCheck,
}

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        writeln!(f, "restore plan: snapshot {} of machine {} (taken {})", m.snapshot, m.machine, m.created)?;
        for d in &self.disks {
            let (data, zero, unused) = d.index.counts();
            let t = &d.target;
            let what = match (t.exists, t.kind) {
                (false, _) => "new image file".to_string(),
                (true, TargetKind::BlockDevice) => format!("block device of {}", human(t.size)),
                (true, TargetKind::File { .. }) => format!("existing file of {}", human(t.size)),
            };
            writeln!(
                f,
                "  disk {} ({}, {} chunks: {data} data, {zero} zero, {unused} unused) -> {} ({what}{})",
                d.disk,
                human(d.size),
                d.index.entries.len(),
                t.path.display(),
                t.holds.as_ref().map(|h| format!("; holds {h}, will be overwritten")).unwrap_or_default()
            )?;
        }
        write!(f, "  order: compare target with index, fetch and verify differing chunks, write; first chunk last")
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct DiskStats {
    pub disk: String,
    pub target: PathBuf,
    pub size: u64,
    pub chunks_total: u64,
    /// Data chunks the target already held.
    pub chunks_present: u64,
    pub chunks_fetched: u64,
    /// Zero/unused chunks the target already read as zeros.
    pub chunks_zero_skipped: u64,
    pub chunks_zero_written: u64,
    /// Bytes received from the appliance (compressed).
    pub bytes_fetched: u64,
    /// Bytes written to the target (data and zeros).
    pub bytes_written: u64,
    /// Bytes left alone because the target already held them.
    pub bytes_skipped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreSummary {
    pub snapshot: String,
    pub dry_run: bool,
    pub disks: Vec<DiskStats>,
    pub bytes_fetched: u64,
    pub bytes_written: u64,
    pub bytes_skipped: u64,
    pub chunks_fetched: u64,
    pub chunks_present: u64,
    pub chunks_zero_skipped: u64,
    pub chunks_zero_written: u64,
    pub seconds: f64,
    /// Disk bytes made right per second (written + skipped).
    pub mb_per_s: f64,
}

/// Fetch and verify the manifest and indexes, and check every target. Writes nothing.
pub fn plan(client: &Client, opts: &RestoreOptions) -> Result<RestorePlan, EngineError> {
    if opts.targets.is_empty() {
        return Err(EngineError::Refused("no --target given: name DISK=DEST for each disk to restore".into()));
    }
    let manifest = client.manifest(&opts.snapshot)?;
    let mut disks = Vec::new();
    for (i, (disk, dest)) in opts.targets.iter().enumerate() {
        let Some(d) = manifest.disk(disk) else {
            let names: Vec<_> = manifest.disks.iter().map(|d| d.name.as_str()).collect();
            return Err(EngineError::Refused(format!(
                "snapshot {} has no disk {disk:?}; its disks are: {}",
                manifest.snapshot,
                names.join(", ")
            )));
        };
        if opts.targets[..i].iter().any(|(o, _)| o == disk) {
            return Err(EngineError::Refused(format!("disk {disk} is given two targets")));
        }
        if opts.targets[..i].iter().any(|(_, p)| p == dest) {
            return Err(EngineError::Refused(format!("{} is the target of two disks", dest.display())));
        }
        let index = client.index(&manifest, disk)?;
        if index.disk_size != d.size {
            return Err(EngineError::Refused(format!("the index of disk {disk} disagrees with the manifest on its size")));
        }
        let target = target::check(dest, d.size, opts.overwrite)?;
        disks.push(DiskPlan { disk: disk.clone(), size: d.size, index, target });
    }
    Ok(RestorePlan { manifest, disks })
}

/// Execute a plan (or, with `dry_run`, only compare the targets with it).
pub fn apply(client: &Client, plan: &RestorePlan, opts: &RestoreOptions) -> Result<RestoreSummary, EngineError> {
    let start = Instant::now();
    let mut disks = Vec::new();
    for d in &plan.disks {
        let progress = Progress::new();
        progress.total.store(d.size, Ordering::Relaxed);
        let verb = if opts.dry_run { "compare" } else { "restore" };
        let reporter = progress.report(format!("{verb} {} -> {}", d.disk, d.target.path.display()), opts.quiet);
        let result = if opts.dry_run {
            dry_scan(d)
        } else {
            target::open(&d.target, d.size).and_then(|t| sync_disk(client, d, &t, opts.parallel.max(1), &progress))
        };
        progress.finish(reporter);
        disks.push(result?);
    }
    let seconds = start.elapsed().as_secs_f64();
    let sum = |f: fn(&DiskStats) -> u64| disks.iter().map(f).sum::<u64>();
    let (bytes_written, bytes_skipped) = (sum(|d| d.bytes_written), sum(|d| d.bytes_skipped));
    Ok(RestoreSummary {
        snapshot: plan.manifest.snapshot.clone(),
        dry_run: opts.dry_run,
        bytes_fetched: sum(|d| d.bytes_fetched),
        bytes_written,
        bytes_skipped,
        chunks_fetched: sum(|d| d.chunks_fetched),
        chunks_present: sum(|d| d.chunks_present),
        chunks_zero_skipped: sum(|d| d.chunks_zero_skipped),
        chunks_zero_written: sum(|d| d.chunks_zero_written),
        mb_per_s: (bytes_written + bytes_skipped) as f64 / 1e6 / seconds.max(1e-6),
        seconds,
        disks,
    })
}

/// What the target holds at a chunk, as far as it can be known without reading.
struct LocalState {
    created: bool,
    /// Data extents of a sparse file (sorted); `None` for block devices.
    extents: Option<Vec<(u64, u64)>>,
}

impl LocalState {
    fn new(file: &std::fs::File, kind: TargetKind, size: u64) -> Self {
        match kind {
            TargetKind::File { created: true } => LocalState { created: true, extents: None },
            TargetKind::File { created: false } => LocalState { created: false, extents: data_extents(file, size) },
            TargetKind::BlockDevice => LocalState { created: false, extents: None },
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
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek on a valid fd; it only moves this descriptor's offset.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENXIO) { Some(out) } else { None };
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return None;
        }
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
}

/// First error wins; every stage stops when one is set.
#[derive(Default)]
struct Abort {
    flag: AtomicBool,
    error: Mutex<Option<EngineError>>,
}

impl Abort {
    fn set(&self, e: EngineError) {
        if let Ok(mut g) = self.error.lock() {
            g.get_or_insert(e);
        }
        self.flag.store(true, Ordering::SeqCst);
    }
    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

fn dry_scan(d: &DiskPlan) -> Result<DiskStats, EngineError> {
    let mut stats = DiskStats { disk: d.disk.clone(), target: d.target.path.clone(), size: d.size, ..Default::default() };
    stats.chunks_total = d.index.entries.len() as u64;
    let file = if d.target.exists { Some(std::fs::File::open(&d.target.path).map_err(io_err(&d.target.path, "open", 0))?) } else { None };
    let local = match &file {
        Some(f) => LocalState::new(f, d.target.kind, d.target.size),
        None => LocalState { created: true, extents: None },
    };
    let mut buf = Vec::new();
    for (i, e) in d.index.entries.iter().enumerate() {
        let (off, len) = d.index.range(i);
        let held = match &file {
            Some(f) if !local.known_zero(off, len as u64) && off + len as u64 <= d.target.size => {
                Some(read_local(f, &d.target.path, &mut buf, off, len)?)
            }
            _ => None,
        };
        match (e, held) {
            (Entry::Data(id), Some(b)) if ChunkId::of(b) == *id => stats.chunks_present += 1,
            (Entry::Data(_), _) => stats.chunks_fetched += 1,
            (_, Some(b)) if !ferry_format::chunk::is_zero(b) => stats.chunks_zero_written += 1,
            _ => stats.chunks_zero_skipped += 1,
        }
    }
    Ok(stats)
}

fn read_local<'a>(f: &std::fs::File, path: &std::path::Path, buf: &'a mut Vec<u8>, off: u64, len: usize) -> Result<&'a [u8], EngineError> {
    buf.resize(len, 0);
    f.read_exact_at(buf, off).map_err(io_err(path, "read", off))?;
    Ok(&buf[..])
}

fn sync_disk(client: &Client, d: &DiskPlan, t: &Target, parallel: usize, progress: &Progress) -> Result<DiskStats, EngineError> {
    let index = &d.index;
    let chunk_size = index.chunk_size as usize;
    let local = LocalState::new(&t.file, t.kind, t.size);
    let counters = Counters::default();
    let abort = Abort::default();
    let pool = Pool::new(parallel + 2, chunk_size);
    let first_dirty = AtomicBool::new(false);
    let (fetch_tx, fetch_rx) = sync_channel::<(usize, ChunkId)>(parallel * 2);
    let fetch_rx = Mutex::new(fetch_rx);
    let (work_tx, work_rx) = sync_channel::<Work>(parallel + 2);

    let mut held_first: Option<Work> = None;
    std::thread::scope(|s| {
        {
            let work_tx = work_tx.clone();
            let (counters, abort, local, first_dirty) = (&counters, &abort, &local, &first_dirty);
            s.spawn(move || {
                if let Err(e) = scan(index, t, local, fetch_tx, work_tx, counters, abort, first_dirty, progress) {
                    abort.set(e);
                }
            });
        }
        for _ in 0..parallel {
            let work_tx = work_tx.clone();
            let (counters, abort, pool, fetch_rx) = (&counters, &abort, &pool, &fetch_rx);
            s.spawn(move || {
                if let Err(e) = fetch_worker(client, &d.disk, index, fetch_rx, work_tx, pool, counters, abort) {
                    abort.set(e);
                }
            });
        }
        drop(work_tx);
        held_first = write_loop(t, index, work_rx, &pool, &counters, &abort, &first_dirty, progress);
    });
    if let Some(e) = abort.error.lock().ok().and_then(|mut g| g.take()) {
        return Err(e);
    }
    // Everything but the first chunk is in place: make it durable, then write the first chunk.
    t.file.sync_data().map_err(io_err(&t.path, "fdatasync", 0))?;
    if let Some(w) = held_first {
        write_work(t, index, &w, &counters)?;
        t.file.sync_data().map_err(io_err(&t.path, "fdatasync", 0))?;
    }
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(DiskStats {
        disk: d.disk.clone(),
        target: t.path.clone(),
        size: d.size,
        chunks_total: index.entries.len() as u64,
        chunks_present: c(&counters.present),
        chunks_fetched: c(&counters.fetched),
        chunks_zero_skipped: c(&counters.zero_skipped),
        chunks_zero_written: c(&counters.zero_written),
        bytes_fetched: c(&counters.bytes_fetched),
        bytes_written: c(&counters.bytes_written),
        bytes_skipped: c(&counters.bytes_skipped),
    })
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
        let held = if local.known_zero(off, len as u64) { None } else { Some(read_local(&t.file, &t.path, &mut buf, off, len)?) };
        let skip = match (entry, held) {
            (Entry::Data(id), Some(b)) => ChunkId::of(b) == *id,
            (Entry::Data(_), None) => false,
            (_, None) => true,
            (_, Some(b)) => ferry_format::chunk::is_zero(b),
        };
        if skip {
            let c = if matches!(entry, Entry::Data(_)) { &counters.present } else { &counters.zero_skipped };
            c.fetch_add(1, Ordering::Relaxed);
            counters.bytes_skipped.fetch_add(len as u64, Ordering::Relaxed);
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

#[allow(clippy::too_many_arguments)]
fn fetch_worker(
    client: &Client,
    disk: &str,
    index: &DiskIndex,
    rx: &Mutex<Receiver<(usize, ChunkId)>>,
    work_tx: SyncSender<Work>,
    pool: &Pool,
    counters: &Counters,
    abort: &Abort,
) -> Result<(), EngineError> {
    let mut compressed = Vec::new();
    let mut dctx = zstd::bulk::Decompressor::new().map_err(|e| EngineError::Worker(format!("zstd: {e}")))?;
    let limit = zstd::zstd_safe::compress_bound(index.chunk_size as usize) as u64;
    loop {
        let next = match rx.lock() {
            Ok(g) => g.recv(),
            Err(_) => return Ok(()),
        };
        let Ok((i, id)) = next else { return Ok(()) };
        if abort.is_set() {
            return Ok(());
        }
        let (off, len) = index.range(i);
        client.get_chunk(&id, &mut compressed, limit)?;
        counters.bytes_fetched.fetch_add(compressed.len() as u64, Ordering::Relaxed);
        let Some(mut buf) = pool.take() else { return Ok(()) };
        let corrupt = |detail: String| EngineError::CorruptChunk { id, disk: disk.to_string(), offset: off, detail };
        match dctx.decompress_to_buffer(&compressed, &mut buf) {
            Ok(n) if n == len => {}
            Ok(n) => {
                pool.give(buf);
                return Err(corrupt(format!("it holds {n} bytes where {len} are expected")));
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
                if let Err(e) = write_work(t, index, &Work::Zero(0), &Counters::default()) {
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

fn write_work(t: &Target, index: &DiskIndex, w: &Work, counters: &Counters) -> Result<(), EngineError> {
    match w {
        Work::Data(i, buf) => {
            let (off, _) = index.range(*i);
            t.file.write_all_at(buf, off).map_err(io_err(&t.path, "write", off))?;
            counters.bytes_written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        Work::Zero(i) => {
            let (off, len) = index.range(*i);
            zero_range(t, off, len as u64)?;
            counters.zero_written.fetch_add(1, Ordering::Relaxed);
            counters.bytes_written.fetch_add(len as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Make a range read as zeros: punch a hole in a file, BLKZEROOUT on a device, else write zeros.
fn zero_range(t: &Target, off: u64, len: u64) -> Result<(), EngineError> {
    let fd = t.file.as_raw_fd();
    let done = match t.kind {
        TargetKind::File { .. } => {
            // SAFETY: fallocate on a valid fd with in-range arguments.
            unsafe { libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, off as i64, len as i64) == 0 }
        }
        TargetKind::BlockDevice => {
            // BLKZEROOUT = _IO(0x12, 127); a discard is not a zeroing, this is.
            const BLKZEROOUT: libc::c_ulong = 0x127f;
            let range: [u64; 2] = [off, len];
            // SAFETY: the ioctl reads two u64 from `range`, which outlives the call.
            unsafe { libc::ioctl(fd, BLKZEROOUT as _, range.as_ptr()) == 0 }
        }
    };
    if !done {
        let zeros = vec![0u8; len as usize];
        t.file.write_all_at(&zeros, off).map_err(io_err(&t.path, "write zeros", off))?;
    }
    Ok(())
}

/// Plan, print nothing, apply: the whole restore for callers that need no dry-run step.
pub fn restore(client: &Client, opts: &RestoreOptions) -> Result<(RestorePlan, RestoreSummary), EngineError> {
    let plan = plan(client, opts)?;
    let summary = apply(client, &plan, opts)?;
    Ok((plan, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_zero_follows_extents() {
        let l = LocalState { created: false, extents: Some(vec![(4096, 8192), (65536, 70000)]) };
        assert!(l.known_zero(0, 4096));
        assert!(!l.known_zero(0, 4097));
        assert!(l.known_zero(8192, 4096));
        assert!(!l.known_zero(60000, 6000));
        assert!(l.known_zero(70000, 100));
        let none = LocalState { created: false, extents: None };
        assert!(!none.known_zero(0, 1));
    }
}
