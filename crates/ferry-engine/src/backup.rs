//! Backup: read each disk chunk by chunk, skip zeros, hash, ask the appliance which chunks it
//! lacks, compress and upload only those, upload the disk's index, and commit the snapshot.
//!
//! Chunks the disk's filesystems do not use (`ferry_probe::used_map`) become "unused" entries
//! and are never read.
//!
//! Stages per disk: `reads_in_flight` reader threads (read, zero check, BLAKE3) → this thread
//! (dedupe within the run, batched `known-chunks` queries) → `parallel` upload workers (zstd,
//! PUT through one shared [`Throttle`]). A snapshot only becomes visible at commit; an
//! interrupted backup leaves chunks the next run will not upload again.
//!
//! Before the first read the sources are held still as `opts.consistency` asks
//! ([`consistency::Hold`]: a `ferry_capture::Capture` over the source block devices, a stamp of
//! each image file); after the last read (index uploads and re-uploads included) they are
//! released, and the commit records how they were read. LVM snapshot ranges are read from the
//! snapshot devices ([`substitute`]). The pre and post hooks run on the caller's thread, at its
//! priorities.
//!
//! The reading and uploading runs on a thread of its own at the priorities [`SourceLimits`] asks for
//! (idle I/O class, nice 19 by default), which every stage inherits; the caller's thread keeps
//! its own. Sources are opened with `drop_cache` as asked ([`crate::source_load`]).

mod consistency;
mod substitute;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_client::Client;
use ferry_format::api::CommitRequest;
use ferry_format::index::DiskIndex;
use ferry_format::manifest::{ChunkCounts, DiskManifest};
use ferry_format::names::{check_name, NameKind};
use ferry_format::network::NetworkConfig;
use ferry_format::{ChunkId, Entry};
use ferry_image::{DiskSource, ImageFormat, OpenOptions};
use ferry_probe::UsedMap;
use serde::Serialize;

use crate::pipeline::{Abort, ChunkStore};
use crate::pool::Pool;
use crate::progress::Progress;
pub use crate::source_load::SourceLimits;
use crate::source_load::{lower_priorities, Usage};
use crate::throttle::Throttle;
use crate::{EngineError, Refusal};
pub use consistency::{ConsistencyError, ConsistencyRequest, Hold, HoldRequest, DEFAULT_RUN_DIR};
pub use ferry_capture::{Hook, HookCommand, Hooks, LvmPolicy};
pub use ferry_format::consistency::Consistency;
pub use substitute::{SubstituteError, Substituted};

/// Undo what a capture stopped mid-way left on this machine (the agent was killed or crashed
/// while filesystems were frozen or LVM snapshots existed): thaw the filesystems its run
/// directory's state file names and remove our tagged snapshots. Call it when an agent starts;
/// refused (and logged) while another capture holds the run directory. Logs what it undid.
pub fn recover_capture(run_dir: &std::path::Path) {
    match ferry_capture::cleanup_stale(run_dir) {
        Ok(r) => {
            for m in &r.thawed {
                tracing::warn!(
                    "thawed {}: an agent stopped while it was frozen for a capture",
                    m.display()
                );
            }
            for s in &r.removed_snapshots {
                tracing::warn!("removed LVM snapshot {s}: an agent stopped while it existed");
            }
        }
        Err(e) => tracing::error!(
            "undo what a stopped capture left in {}: {e}; check `fsfreeze -u` and `lvs` by hand",
            run_dir.display()
        ),
    }
}

/// zstd level for uploads: level 3 compresses OS data well at several hundred MB/s per core.
pub const DEFAULT_LEVEL: i32 = 3;
pub use ferry_format::DEFAULT_CHUNK_SIZE;
/// Most chunk ids asked about in one `known-chunks` round trip while streaming.
const QUERY_BATCH: usize = 32;
/// How long a failed backup tries to tell the appliance to drop its session: the failure may
/// be the appliance's, and the session expires there anyway.
const ABANDON_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub name: String,
    pub path: PathBuf,
}

/// What to back up and how. Build it with `..Default::default()` for the fields you leave.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub machine: String,
    pub disks: Vec<DiskSpec>,
    pub chunk_size: u32,
    pub parallel: usize,
    pub level: i32,
    pub quiet: bool,
    /// How hard the backup may press on the source (rate cap, reads in flight, priorities,
    /// page cache); the default is the field's ([`SourceLimits::default`]).
    pub limits: SourceLimits,
    /// Live, point-in-time, or point-in-time when possible (the default).
    pub consistency: ConsistencyRequest,
    /// Operator commands around the capture (from the agent's own config, never the appliance).
    pub hooks: Hooks,
    /// The capture's lock and state file; a tmpfs never frozen ([`DEFAULT_RUN_DIR`]).
    pub run_dir: PathBuf,
    /// Whether point-in-time may take LVM snapshots instead of freezing (off by default until
    /// the device-mapper path has run in the guest tier; docs/consistency.md).
    pub lvm: LvmPolicy,
    /// The source's network configuration, recorded in the manifest (the agent gathers it;
    /// `None` records nothing).
    pub network: Option<NetworkConfig>,
    /// Every disk's bytes read also count here (its total is set to the disks' sizes): the
    /// whole backup's progress, for an observer such as the rescue agent's job events.
    pub progress: Option<std::sync::Arc<Progress>>,
    /// What the agent found of the OS on the disks (a backup job: the Windows facts), recorded
    /// in the manifest.
    pub os: Option<ferry_format::manifest::OsFacts>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            machine: String::new(),
            disks: Vec::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            parallel: 4,
            level: DEFAULT_LEVEL,
            quiet: false,
            limits: SourceLimits::default(),
            consistency: ConsistencyRequest::default(),
            hooks: Hooks::default(),
            run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            lvm: LvmPolicy::Off,
            network: None,
            progress: None,
            os: None,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupSummary {
    pub snapshot: String,
    pub machine: String,
    pub bytes_read: u64,
    pub chunks_total: u64,
    pub chunks_zero: u64,
    pub chunks_unused: u64,
    /// Data chunks the appliance lacked and that were uploaded.
    pub chunks_new: u64,
    /// Data chunks (counted once per run) the appliance already had.
    pub chunks_present: u64,
    /// Bytes sent as chunk bodies (compressed).
    pub bytes_uploaded: u64,
    /// Payload bytes sent to the appliance: chunk bodies and disk indexes (what the rate cap
    /// counts; HTTP and TLS framing add well under 1%).
    pub bytes_sent: u64,
    /// CPU seconds (user + system) the agent process spent during the backup.
    pub cpu_seconds: f64,
    /// Peak resident set size of the agent process (its whole life so far), in bytes.
    pub peak_rss_bytes: u64,
    pub seconds: f64,
    /// How the disks were read, as the snapshot's manifest records it.
    pub consistency: Consistency,
    /// How long the source's filesystems were frozen (0 when none was).
    pub freeze_seconds: f64,
    /// Interfaces of the network configuration recorded in the manifest (0 when none was).
    pub network_interfaces: usize,
}

/// Name a disk after its source path (`/dev/sda` → `sda`, `web.qcow2` → `web`).
pub fn default_disk_name(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Raw => "raw",
        ImageFormat::BlockDevice => "block-device",
        ImageFormat::Qcow2 => "qcow2",
        ImageFormat::VmdkMonolithicSparse => "vmdk-sparse",
        ImageFormat::VmdkStreamOptimized => "vmdk-stream",
        ImageFormat::VmdkFlat => "vmdk-flat",
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    bytes_read: AtomicU64,
    new: AtomicU64,
    bytes_uploaded: AtomicU64,
    bytes_sent: AtomicU64,
}

/// Back up `opts.disks` as one snapshot: hold the sources still as asked, read and upload on a
/// thread of its own at the priorities `opts.limits` asks for, release the sources, commit.
pub fn backup(client: &Client, opts: &BackupOptions) -> Result<BackupSummary, EngineError> {
    let start = Instant::now();
    let before = Usage::now();
    check_options(opts)?;
    let hold = Hold::begin(&HoldRequest {
        sources: opts.disks.iter().map(|d| d.path.as_path()).collect(),
        consistency: opts.consistency,
        hooks: &opts.hooks,
        run_dir: &opts.run_dir,
        lvm: opts.lvm,
    })?;
    let read = std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .name("backup".into())
            .spawn_scoped(s, || {
                lower_priorities(&opts.limits);
                read_here(client, opts, hold.substitutions())
            })
            .map_err(|e| EngineError::Worker(format!("start the backup thread: {e}")))?;
        worker
            .join()
            .map_err(|_| EngineError::Worker("the backup thread panicked".into()))?
    });
    // The last read is done (or failed): release the sources before anything else.
    let ended = hold.end();
    let (session, disks, mut summary) = match (read, ended) {
        (Ok(read), Ok(consistency)) => {
            let (session, disks, mut summary) = read;
            summary.consistency = consistency;
            (session, disks, summary)
        }
        (Ok((session, ..)), Err(e)) => {
            abandon(client, &session);
            return Err(e.into());
        }
        (Err(e), ended) => {
            if let Err(also) = ended {
                tracing::error!("release the sources: {also}");
            }
            return Err(e);
        }
    };
    let req = CommitRequest {
        disks,
        os: opts.os.clone(),
        agent: format!("backup-agent {}", env!("CARGO_PKG_VERSION")),
        consistency: summary.consistency.clone(),
        network: opts.network.clone(),
    };
    summary.snapshot = match client.commit(&session, &req) {
        Ok(id) => id,
        Err(e) => {
            abandon(client, &session);
            return Err(e.into());
        }
    };
    summary.network_interfaces = req.network.as_ref().map_or(0, |n| n.interfaces.len());
    if let Consistency::PointInTime { freeze_ms, .. } = &summary.consistency {
        summary.freeze_seconds = *freeze_ms as f64 / 1000.0;
    }
    let after = Usage::now();
    summary.cpu_seconds = after.cpu_seconds_since(&before);
    summary.peak_rss_bytes = after.peak_rss_bytes;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Best effort, and brief: the appliance may be what failed. The session's chunks stay (a
/// rerun skips them); nothing becomes visible.
fn abandon(client: &Client, session: &str) {
    let _ = client.with_retry_window(ABANDON_RETRY).abandon(session);
}

/// What can be refused before any hook runs or any source is touched.
fn check_options(opts: &BackupOptions) -> Result<(), EngineError> {
    check_name(NameKind::Machine, &opts.machine).map_err(Refusal::BadMachineName)?;
    ferry_format::chunk::check_chunk_size(opts.chunk_size).map_err(Refusal::BadChunkSize)?;
    for (i, d) in opts.disks.iter().enumerate() {
        check_name(NameKind::Disk, &d.name).map_err(Refusal::BadDiskName)?;
        if opts.disks[..i].iter().any(|o| o.name == d.name) {
            return Err(Refusal::DiskNamedTwice {
                name: d.name.clone(),
            }
            .into());
        }
    }
    if opts.disks.is_empty() {
        return Err(Refusal::NoDisks.into());
    }
    Ok(())
}

/// Open and probe every source, then read and upload each disk and its index: the session
/// id, the disks for the commit and the figures so far. The session is abandoned on failure.
fn read_here(
    client: &Client,
    opts: &BackupOptions,
    subs: &[ferry_capture::extents::Substitution],
) -> Result<(String, Vec<DiskManifest>, BackupSummary), EngineError> {
    // Open and probe every source before the appliance hears of this backup.
    let mut sources = Vec::new();
    for d in &opts.disks {
        let open = OpenOptions {
            drop_cache: opts.limits.drop_cache,
        };
        let src = Substituted::over(ferry_image::open_with(&d.path, open)?, &d.path, subs)
            .map_err(ConsistencyError::from)?;
        let layout = match ferry_probe::probe(&*src) {
            Ok(l) => Some(l),
            Err(e) => {
                // Safe fallback: a raw image restores byte for byte; only resizing needs a layout.
                tracing::warn!(
                    "disk {} ({}): layout not captured: {e}. Backing it up as raw data: every \
                     chunk is backed up and a restore copies it unchanged (not resized or \
                     restructured)",
                    d.name,
                    d.path.display()
                );
                None
            }
        };
        let used = layout.as_ref().and_then(|l| used_map(d, &*src, l));
        sources.push((d, src, layout, used));
    }
    let session = client.start_backup(&opts.machine, opts.chunk_size)?;
    match run_session(client, opts, &session, sources) {
        Ok((disks, summary)) => Ok((session, disks, summary)),
        Err(e) => {
            abandon(client, &session);
            Err(e)
        }
    }
}

type Source<'a> = (
    &'a DiskSpec,
    Box<dyn DiskSource>,
    Option<ferry_format::layout::DiskLayout>,
    Option<UsedMap>,
);

/// The bytes the disk's filesystems use; `None` (back up every chunk) when it cannot be read.
fn used_map(
    d: &DiskSpec,
    src: &dyn DiskSource,
    layout: &ferry_format::layout::DiskLayout,
) -> Option<UsedMap> {
    match ferry_probe::used_map(src, layout) {
        Ok(map) => {
            for note in &map.notes {
                tracing::info!("disk {}: {note}", d.name);
            }
            tracing::info!(
                "disk {}: {} of {} bytes in use",
                d.name,
                map.used_bytes(),
                map.size()
            );
            Some(map)
        }
        Err(e) => {
            tracing::warn!(
                "disk {} ({}): used space not read, backing up every chunk: {e}",
                d.name,
                d.path.display()
            );
            None
        }
    }
}

/// Read and upload every disk and its index; the disks for the commit and the figures.
fn run_session(
    client: &Client,
    opts: &BackupOptions,
    session: &str,
    sources: Vec<Source<'_>>,
) -> Result<(Vec<DiskManifest>, BackupSummary), EngineError> {
    let mut summary = BackupSummary {
        machine: opts.machine.clone(),
        ..Default::default()
    };
    let counters = Counters::default();
    // For what is sent outside the per-disk pipelines: indexes and re-uploads.
    let throttle = Throttle::new(opts.limits.rate());
    let mut seen = HashSet::new();
    let mut disks = Vec::new();
    if let Some(p) = &opts.progress {
        let total = sources.iter().map(|(_, src, _, _)| src.size()).sum();
        p.total.store(total, Ordering::Relaxed);
    }
    for (spec, src, layout, used) in sources {
        let progress = match &opts.progress {
            Some(p) => Progress::with_parent(p),
            None => Progress::new(),
        };
        progress.total.store(src.size(), Ordering::Relaxed);
        let reporter = progress.report(format!("backup {}", spec.name), opts.quiet);
        let r = backup_disk(
            client,
            opts,
            session,
            &*src,
            used.as_ref(),
            &counters,
            &mut seen,
            &progress,
        );
        progress.finish(reporter);
        let index = r?;
        let encoded = index.encode();
        let put_index = || {
            throttle.acquire(encoded.len() as u64);
            counters
                .bytes_sent
                .fetch_add(encoded.len() as u64, Ordering::Relaxed);
            client.put_index(session, &spec.name, &encoded)
        };
        // The appliance answers with the chunks it lacks (a concurrent GC may have removed one
        // we were told it had): upload those from the source and try again.
        let mut missing = put_index()?;
        for _ in 0..3 {
            if missing.is_empty() {
                break;
            }
            let up = Uploader {
                store: client,
                level: opts.level,
                counters: &counters,
                throttle: &throttle,
            };
            reupload(&up, &*src, &index, &missing)?;
            missing = put_index()?;
        }
        if !missing.is_empty() {
            return Err(Refusal::ChunksKeepMissing {
                count: missing.len(),
                disk: spec.name.clone(),
            }
            .into());
        }
        let (data, zero, unused) = index.counts();
        summary.chunks_total += index.entries.len() as u64;
        summary.chunks_zero += zero;
        summary.chunks_unused += unused;
        disks.push(DiskManifest {
            name: spec.name.clone(),
            size: src.size(),
            logical_sector_size: src.logical_sector_size(),
            source: spec.path.display().to_string(),
            source_format: format_name(src.format()).to_string(),
            index_digest: ChunkId::of(&encoded),
            chunks: ChunkCounts { data, zero, unused },
            layout,
        });
    }
    summary.bytes_read = counters.bytes_read.load(Ordering::Relaxed);
    summary.chunks_new = counters.new.load(Ordering::Relaxed);
    summary.chunks_present = seen.len() as u64 - summary.chunks_new;
    summary.bytes_uploaded = counters.bytes_uploaded.load(Ordering::Relaxed);
    summary.bytes_sent = counters.bytes_sent.load(Ordering::Relaxed);
    Ok((disks, summary))
}

struct Item {
    i: usize,
    id: ChunkId,
    buf: Vec<u8>,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backup_disk(
    store: &dyn ChunkStore,
    opts: &BackupOptions,
    session: &str,
    src: &dyn DiskSource,
    used: Option<&UsedMap>,
    counters: &Counters,
    seen: &mut HashSet<ChunkId>,
    progress: &Progress,
) -> Result<DiskIndex, EngineError> {
    let mut index =
        DiskIndex::new_zero(src.size(), opts.chunk_size).map_err(Refusal::Unindexable)?;
    let parallel = opts.parallel.max(1);
    let readers = opts.limits.reads_in_flight.max(1);
    let pool = Pool::new(parallel + QUERY_BATCH.min(8) + 2, opts.chunk_size as usize);
    let abort = Abort::default();
    let throttle = Throttle::new(opts.limits.rate());
    let up = Uploader {
        store,
        level: opts.level,
        counters,
        throttle: &throttle,
    };
    let ranges: Vec<(usize, u64, usize)> = (0..index.entries.len())
        .map(|i| {
            let (o, l) = index.range(i);
            (i, o, l)
        })
        .collect();
    // Chunks no filesystem uses are recorded as such and never read.
    let unused: Vec<bool> = ranges
        .iter()
        .map(|&(_, o, l)| used.is_some_and(|u| u.chunk_unused(o, l as u64)))
        .collect();
    for (e, _) in index.entries.iter_mut().zip(&unused).filter(|(_, &u)| u) {
        *e = Entry::Unused;
    }
    let next = AtomicUsize::new(0);
    let reader = Reader {
        src,
        ranges: &ranges,
        unused: &unused,
        next: &next,
    };

    // Each stage owns its channel ends (see crate::pipeline): when one ends, for any reason,
    // the stages next to it see the disconnection or the abort flag and end too.
    std::thread::scope(|s| {
        let (item_tx, item_rx) = sync_channel::<Item>(4);
        let (up_tx, up_rx) = sync_channel::<Item>(parallel);
        let up_rx = Arc::new(Mutex::new(up_rx));
        let (pool, abort, up, reader) = (&pool, &abort, &up, &reader);
        for _ in 0..readers {
            let item_tx = item_tx.clone();
            s.spawn(move || {
                abort.guard("a disk reader", || {
                    reader.run(item_tx, pool, counters, abort, progress)
                })
            });
        }
        drop(item_tx);
        for _ in 0..parallel {
            let up_rx = Arc::clone(&up_rx);
            s.spawn(move || {
                abort.guard("an upload worker", || upload_worker(up, up_rx, pool, abort))
            });
        }
        drop(up_rx);
        abort.guard("the upload dispatcher", || {
            dispatch(
                store, session, item_rx, up_tx, &mut index, seen, pool, abort,
            )
        });
    });
    match abort.take() {
        Some(e) => Err(e),
        None => Ok(index),
    }
}

/// The chunks of one disk, shared by its reader threads: each takes the next range in turn, so
/// at most one read per reader is in flight and the disk is read nearly in order.
struct Reader<'a> {
    src: &'a dyn DiskSource,
    ranges: &'a [(usize, u64, usize)],
    unused: &'a [bool],
    next: &'a AtomicUsize,
}

impl Reader<'_> {
    /// Read every chunk that may hold data, skip zeros, hash, and pass it on.
    fn run(
        &self,
        tx: SyncSender<Item>,
        pool: &Pool,
        counters: &Counters,
        abort: &Abort,
        progress: &Progress,
    ) -> Result<(), EngineError> {
        let src = self.src;
        while let Some(&(i, off, len)) = self.ranges.get(self.next.fetch_add(1, Ordering::Relaxed))
        {
            if self.unused[i] || src.known_zero(off, len as u64) {
                progress.add(len as u64);
                continue;
            }
            let Some(mut buf) = pool.take(abort) else {
                return Ok(());
            };
            buf.resize(len, 0);
            src.read_at(&mut buf, off)?;
            counters.bytes_read.fetch_add(len as u64, Ordering::Relaxed);
            progress.add(len as u64);
            if ferry_format::chunk::is_zero(&buf) {
                pool.give(buf);
                continue;
            }
            let id = ChunkId::of(&buf);
            if tx.send(Item { i, id, buf }).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Record each item in the index; query in batches which new ids the appliance lacks; send those
/// to the upload workers and recycle the rest. Ends when the reader is done, or at once when
/// any stage failed (the error is in `abort`).
#[allow(clippy::too_many_arguments)]
fn dispatch(
    store: &dyn ChunkStore,
    session: &str,
    rx: Receiver<Item>,
    up_tx: SyncSender<Item>,
    index: &mut DiskIndex,
    seen: &mut HashSet<ChunkId>,
    pool: &Pool,
    abort: &Abort,
) -> Result<(), EngineError> {
    let mut batch: Vec<Item> = Vec::new();
    // Disconnected: the reader is done (or failed, which `abort` holds).
    while let Ok(first) = rx.recv() {
        let mut take = |item: Item, batch: &mut Vec<Item>| {
            index.entries[item.i] = Entry::Data(item.id);
            if seen.insert(item.id) {
                batch.push(item);
            } else {
                pool.give(item.buf);
            }
        };
        take(first, &mut batch);
        while batch.len() < QUERY_BATCH.min(8) {
            match rx.try_recv() {
                Ok(item) => take(item, &mut batch),
                Err(_) => break,
            }
        }
        if abort.is_set() {
            return Ok(());
        }
        let ids: Vec<ChunkId> = batch.iter().map(|b| b.id).collect();
        let missing: HashSet<ChunkId> = store.missing_chunks(session, &ids)?.into_iter().collect();
        for item in batch.drain(..) {
            if !missing.contains(&item.id) {
                pool.give(item.buf);
            } else if abort.is_set() || up_tx.send(item).is_err() {
                // Every upload worker has ended: one of them failed.
                return Ok(());
            }
        }
    }
    Ok(())
}

/// What every upload needs: the appliance, the zstd level, the counters and the run's rate cap.
struct Uploader<'a> {
    store: &'a dyn ChunkStore,
    level: i32,
    counters: &'a Counters,
    throttle: &'a Throttle,
}

fn upload_worker(
    up: &Uploader<'_>,
    rx: Arc<Mutex<Receiver<Item>>>,
    pool: &Pool,
    abort: &Abort,
) -> Result<(), EngineError> {
    let mut cctx = compressor(up.level)?;
    let mut out = Vec::new();
    loop {
        // A poisoned lock means another worker panicked; its panic is the error.
        let next = match rx.lock() {
            Ok(g) => g.recv(),
            Err(_) => return Ok(()),
        };
        let Ok(item) = next else { return Ok(()) };
        if abort.is_set() {
            pool.give(item.buf);
            return Ok(());
        }
        let r = upload_one(up, &mut cctx, &mut out, &item.id, &item.buf);
        pool.give(item.buf);
        r?;
    }
}

fn compressor(level: i32) -> Result<zstd::bulk::Compressor<'static>, EngineError> {
    zstd::bulk::Compressor::new(level).map_err(|e| EngineError::Worker(format!("zstd: {e}")))
}

/// Compress one chunk, wait for the rate cap to allow its frame, and upload it.
fn upload_one(
    up: &Uploader<'_>,
    cctx: &mut zstd::bulk::Compressor<'_>,
    out: &mut Vec<u8>,
    id: &ChunkId,
    data: &[u8],
) -> Result<(), EngineError> {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress_to_buffer(data, out)
        .map_err(|e| EngineError::Worker(format!("zstd: {e}")))?;
    let n = out.len() as u64;
    up.throttle.acquire(n);
    if up.store.put_chunk(id, out)? {
        up.counters.new.fetch_add(1, Ordering::Relaxed);
    }
    up.counters.bytes_uploaded.fetch_add(n, Ordering::Relaxed);
    up.counters.bytes_sent.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

/// Upload chunks the appliance reports missing at index time, read again from the source.
fn reupload(
    up: &Uploader<'_>,
    src: &dyn DiskSource,
    index: &DiskIndex,
    missing: &[ChunkId],
) -> Result<(), EngineError> {
    let missing: HashSet<&ChunkId> = missing.iter().collect();
    let mut cctx = compressor(up.level)?;
    let mut out = Vec::new();
    let mut done = HashSet::new();
    let mut buf = Vec::new();
    for (i, e) in index.entries.iter().enumerate() {
        let Entry::Data(id) = e else { continue };
        if !missing.contains(id) || !done.insert(*id) {
            continue;
        }
        let (off, len) = index.range(i);
        buf.resize(len, 0);
        src.read_at(&mut buf, off)?;
        if ChunkId::of(&buf) != *id {
            return Err(Refusal::SourceChanged { offset: off }.into());
        }
        upload_one(up, &mut cctx, &mut out, id, &buf)?;
    }
    Ok(())
}
