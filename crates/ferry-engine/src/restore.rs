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
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_client::Client;
use ferry_format::units::human_bytes;
use ferry_format::{ChunkId, DiskIndex, Entry, Manifest};
use serde::Serialize;

use ferry_layout::{GrowLv, LayoutPlan, Mapping, Patch, Policy, SourceDisk, TargetDisk};
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags};
use nix::unistd::{lseek, Whence};

use crate::pipeline::{Abort, ChunkStore};
use crate::pool::Pool;
use crate::progress::Progress;
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
    /// Grow the last partition, the PV and LV on it, and its filesystem onto a larger target.
    pub grow: bool,
    /// The LV to grow, `VG/LV`; default: the one the planner picks (see ferry-layout).
    pub grow_lv: Option<String>,
    /// An unattended job: each target gets this job's in-progress marker before anything else
    /// changes on it, and a target that carries it may be written without `overwrite`.
    pub job: Option<JobMark>,
}

/// The job and proof an in-progress marker names ([`ferry_format::marker`]).
#[derive(Debug, Clone)]
pub struct JobMark {
    pub job: String,
    pub proof: String,
}

/// What a restore will do, decided before anything is written.
pub struct RestorePlan {
    pub manifest: Manifest,
    pub disks: Vec<DiskPlan>,
    /// Disk mapping and the bytes that change when a target differs from its source.
    pub layout: LayoutPlan,
}

pub struct DiskPlan {
    pub disk: String,
    pub size: u64,
    pub index: DiskIndex,
    pub target: TargetCheck,
    /// Written after the data, boot-critical ones (inside the first chunk) last of all.
    pub patches: Vec<Patch>,
}

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        writeln!(
            f,
            "restore plan: snapshot {} of machine {} (taken {})",
            m.snapshot, m.machine, m.created
        )?;
        for d in &self.disks {
            let (data, zero, unused) = d.index.counts();
            let t = &d.target;
            let what = match (t.exists, t.kind) {
                (false, _) => "new image file".to_string(),
                (true, TargetKind::BlockDevice) => {
                    format!("block device of {}", human_bytes(t.size))
                }
                (true, TargetKind::File { .. }) => {
                    format!("existing file of {}", human_bytes(t.size))
                }
            };
            writeln!(
                f,
                "  disk {} ({}, {} chunks: {data} data, {zero} zero, {unused} unused) -> {} ({what}{})",
                d.disk,
                human_bytes(d.size),
                d.index.entries.len(),
                t.path.display(),
                match (&t.holds, t.resumes) {
                    (_, true) => "; holds this job's partial restore, resumed".to_string(),
                    (Some(h), false) => format!("; holds {h}, will be overwritten"),
                    (None, false) => String::new(),
                }
            )?;
        }
        writeln!(f, "{}", self.layout)?;
        write!(f, "  order: compare target with index, fetch and verify differing chunks, write; layout patches; first chunk last")
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
    /// Filesystems grown into a larger target (`--grow`).
    pub grown: Vec<crate::grow::GrowOutcome>,
}

/// Fetch and verify the manifest and indexes, and check every target. Writes nothing.
pub fn plan(client: &Client, opts: &RestoreOptions) -> Result<RestorePlan, EngineError> {
    if opts.targets.is_empty() {
        return Err(EngineError::Refused(
            "no --target given: name DISK=DEST for each disk to restore".into(),
        ));
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
            return Err(EngineError::Refused(format!(
                "disk {disk} is given two targets"
            )));
        }
        if opts.targets[..i].iter().any(|(_, p)| p == dest) {
            return Err(EngineError::Refused(format!(
                "{} is the target of two disks",
                dest.display()
            )));
        }
        let index = client.index(&manifest, disk)?;
        if index.disk_size != d.size {
            return Err(EngineError::Refused(format!(
                "the index of disk {disk} disagrees with the manifest on its size"
            )));
        }
        let permit = target::Permit {
            overwrite: opts.overwrite,
            marker: opts.job.as_ref().map(|j| {
                ferry_format::marker::RestoreMarker::new(&j.job, &manifest.snapshot, disk, &j.proof)
            }),
        };
        let target = target::check(dest, d.size, &permit)?;
        disks.push(DiskPlan {
            disk: disk.clone(),
            size: d.size,
            index,
            target,
            patches: Vec::new(),
        });
    }
    let layout = plan_layout(&manifest, &disks, opts)?;
    for (d, m) in disks.iter_mut().zip(&layout.mappings) {
        d.patches = m.patches.clone();
        d.target.size = m.target_size;
    }
    Ok(RestorePlan {
        manifest,
        disks,
        layout,
    })
}

/// The pure layout planner over what the manifest recorded and what the targets are.
fn plan_layout(
    manifest: &Manifest,
    disks: &[DiskPlan],
    opts: &RestoreOptions,
) -> Result<LayoutPlan, EngineError> {
    let mut sources = Vec::new();
    let mut targets = Vec::new();
    let mut pairs = Vec::new();
    for d in disks {
        let m = manifest
            .disk(&d.disk)
            .ok_or_else(|| EngineError::Refused(format!("no disk {}", d.disk)))?;
        sources.push(SourceDisk::from_manifest(m, manifest.chunk_size));
        let t = &d.target;
        let path = t.path.display().to_string();
        // An image file takes the source's sector size; a device reports its own.
        let lss = if t.logical_sector_size == 0 {
            m.logical_sector_size
        } else {
            t.logical_sector_size
        };
        let pss = if t.physical_sector_size == 0 {
            lss
        } else {
            t.physical_sector_size
        };
        targets.push(TargetDisk {
            path: path.clone(),
            size: t.size,
            logical_sector_size: lss,
            physical_sector_size: pss,
            serial: None,
            model: None,
            // Its own partial restore counts as blank: the job may write it.
            blank: t.holds.is_none() || t.resumes,
        });
        pairs.push((d.disk.clone(), path));
    }
    let grow_lv = match &opts.grow_lv {
        None => GrowLv::Auto,
        Some(s) => match s.split_once('/') {
            Some((vg, lv)) if !vg.is_empty() && !lv.is_empty() => GrowLv::Named {
                vg: vg.into(),
                lv: lv.into(),
            },
            _ => {
                return Err(EngineError::Refused(format!(
                    "--grow-lv {s:?} is not VG/LV"
                )))
            }
        },
    };
    let policy = Policy {
        mapping: Mapping::Explicit(pairs),
        grow: opts.grow,
        grow_lv,
        overwrite: opts.overwrite,
    };
    let plan = ferry_layout::plan(&sources, &targets, &policy)
        .map_err(|e| EngineError::Refused(e.to_string()))?;
    // The planner returns mappings in the order of the explicit pairs; keep that invariant checked.
    if plan.mappings.len() != disks.len()
        || plan
            .mappings
            .iter()
            .zip(disks)
            .any(|(m, d)| m.disk != d.disk)
    {
        return Err(EngineError::Worker(
            "the layout plan does not follow the requested mapping".into(),
        ));
    }
    Ok(plan)
}

/// Execute a plan (or, with `dry_run`, only compare the targets with it).
pub fn apply(
    client: &Client,
    plan: &RestorePlan,
    opts: &RestoreOptions,
) -> Result<RestoreSummary, EngineError> {
    apply_observed(client, plan, opts, None)
}

/// [`apply`], also counting every byte made right (written or found in place) into `overall`,
/// whose `total` is set to the sum of the plan's disk sizes: a caller reads its counters from
/// another thread to report progress (disks are restored in plan order).
pub fn apply_observed(
    client: &Client,
    plan: &RestorePlan,
    opts: &RestoreOptions,
    overall: Option<&Arc<Progress>>,
) -> Result<RestoreSummary, EngineError> {
    let start = Instant::now();
    if let Some(o) = overall {
        o.total
            .store(plan.disks.iter().map(|d| d.size).sum(), Ordering::Relaxed);
    }
    let mut disks = Vec::new();
    let mut grown = Vec::new();
    for (d, mapping) in plan.disks.iter().zip(&plan.layout.mappings) {
        let progress = overall.map_or_else(Progress::new, Progress::with_parent);
        progress.total.store(d.size, Ordering::Relaxed);
        let verb = if opts.dry_run { "compare" } else { "restore" };
        let reporter = progress.report(
            format!("{verb} {} -> {}", d.disk, d.target.path.display()),
            opts.quiet,
        );
        let result = if opts.dry_run {
            dry_scan(d)
        } else {
            target::open(&d.target)
                .and_then(|t| sync_disk(client, d, &t, opts.parallel.max(1), &progress))
        };
        progress.finish(reporter);
        disks.push(result?);
        if !opts.dry_run && d.target.kind == TargetKind::BlockDevice {
            // The data is durable; the kernel must see the new table before grow and fix-up
            // look for partitions. Never a reason to fail the restore.
            match target::reread_partitions(&d.target.path) {
                Ok(r) => {
                    if let Some(w) = &r.warning {
                        tracing::warn!("{}: {w}", d.target.path.display());
                    }
                    let nodes: Vec<String> = r
                        .partitions
                        .iter()
                        .map(|p| p.node.display().to_string())
                        .collect();
                    tracing::info!(
                        "{}: partition table re-read ({}): {}",
                        d.target.path.display(),
                        r.method,
                        if nodes.is_empty() {
                            "no partitions".into()
                        } else {
                            nodes.join(" ")
                        }
                    );
                }
                Err(e) => tracing::warn!(
                    "{}: the kernel did not re-read the partition table: {e}",
                    d.target.path.display()
                ),
            }
        }
        if !opts.dry_run {
            if let Some(g) = crate::grow::grow(&d.target.path, mapping) {
                tracing::info!("{}: {}", g.filesystem, g.detail);
                grown.push(g);
            }
        }
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
        grown,
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
}

fn dry_scan(d: &DiskPlan) -> Result<DiskStats, EngineError> {
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
        match (e, held) {
            (Entry::Data(id), Some(b)) if ChunkId::of(b) == *id => stats.chunks_present += 1,
            (Entry::Data(_), _) => stats.chunks_fetched += 1,
            (_, Some(b)) if !ferry_format::chunk::is_zero(b) => stats.chunks_zero_written += 1,
            _ => stats.chunks_zero_skipped += 1,
        }
    }
    Ok(stats)
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

fn sync_disk(
    store: &dyn ChunkStore,
    d: &DiskPlan,
    t: &Target,
    parallel: usize,
    progress: &Progress,
) -> Result<DiskStats, EngineError> {
    sync_chunks(store, &d.disk, &d.index, &d.patches, t, parallel, progress)
}

/// The seeded sync of one disk onto an opened target: scan → fetch workers → writer, then the
/// boot-critical first chunk.
pub(crate) fn sync_chunks(
    store: &dyn ChunkStore,
    disk: &str,
    index: &DiskIndex,
    patches: &[Patch],
    t: &Target,
    parallel: usize,
    progress: &Progress,
) -> Result<DiskStats, EngineError> {
    let chunk_size = index.chunk_size as usize;
    let local = LocalState::new(&t.file, t.kind, t.size);
    let counters = Counters::default();
    let abort = Abort::default();
    let pool = Pool::new(parallel + 2, chunk_size);
    // With a marker the first chunk is always rewritten: the wipe that precedes every other
    // write puts the marker there, and only the snapshot's first chunk, last, replaces it.
    let first_dirty = AtomicBool::new(t.marker.is_some());

    // Each stage owns its channel ends (see crate::pipeline): when one ends, for any reason,
    // the stages next to it see the disconnection or the abort flag and end too.
    let held_first = std::thread::scope(|s| {
        let (fetch_tx, fetch_rx) = sync_channel::<(usize, ChunkId)>(parallel * 2);
        let fetch_rx = Arc::new(Mutex::new(fetch_rx));
        let (work_tx, work_rx) = sync_channel::<Work>(parallel + 2);
        let (counters, abort, pool, local, first_dirty) =
            (&counters, &abort, &pool, &local, &first_dirty);
        {
            let work_tx = work_tx.clone();
            s.spawn(move || {
                abort.guard("the target scanner", || {
                    scan(
                        index,
                        t,
                        local,
                        fetch_tx,
                        work_tx,
                        counters,
                        abort,
                        first_dirty,
                        progress,
                    )
                })
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
    finish_boot_critical(t, index, patches, held_first, &counters)?;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(DiskStats {
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
        let held = if local.known_zero(off, len as u64) {
            None
        } else {
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

/// Everything but the first chunk is in place: make it durable, write the layout patches outside
/// the first chunk, make those durable, then write the first chunk with its patches merged in.
fn finish_boot_critical(
    t: &Target,
    index: &DiskIndex,
    patches: &[Patch],
    held: Option<Work>,
    counters: &Counters,
) -> Result<(), EngineError> {
    let sync = || t.file.sync_data().map_err(io_err(&t.path, "fdatasync", 0));
    sync()?;
    let (_, first_len) = index.range(0);
    let first_end = first_len as u64;
    for p in patches.iter().filter(|p| p.end() > first_end) {
        // A patch may straddle the first chunk's end: write only its part past it here.
        let skip = first_end.saturating_sub(p.offset) as usize;
        let off = p.offset + skip as u64;
        t.file.write_all_at(&p.bytes[skip..], off).map_err(io_err(
            &t.path,
            "write layout patch",
            off,
        ))?;
        counters
            .bytes_written
            .fetch_add((p.bytes.len() - skip) as u64, Ordering::Relaxed);
    }
    let first_patches: Vec<&Patch> = patches.iter().filter(|p| p.offset < first_end).collect();
    if held.is_none() && first_patches.is_empty() {
        return Ok(());
    }
    sync()?;
    let mut first = match held {
        Some(Work::Data(_, buf)) => buf,
        Some(Work::Zero(_)) => vec![0u8; first_len],
        // The target already held the snapshot's first chunk: patch what is there.
        None => {
            let mut b = vec![0u8; first_len];
            t.file
                .read_exact_at(&mut b, 0)
                .map_err(io_err(&t.path, "read", 0))?;
            b
        }
    };
    for p in first_patches {
        p.apply_to(0, &mut first);
    }
    t.file
        .write_all_at(&first, 0)
        .map_err(io_err(&t.path, "write", 0))?;
    counters
        .bytes_written
        .fetch_add(first.len() as u64, Ordering::Relaxed);
    sync()
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

/// Plan, print nothing, apply: the whole restore for callers that need no dry-run step.
pub fn restore(
    client: &Client,
    opts: &RestoreOptions,
) -> Result<(RestorePlan, RestoreSummary), EngineError> {
    let plan = plan(client, opts)?;
    let summary = apply(client, &plan, opts)?;
    Ok((plan, summary))
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
