//! Backup: read each disk chunk by chunk, skip zeros, hash, ask the appliance which chunks it
//! lacks, compress and upload only those, upload the disk's index, and commit the snapshot.
//!
//! Chunks the disk's filesystems do not use (`ferry_probe::used_map`) become "unused" entries
//! and are never read.
//!
//! Stages per disk: a reader thread (read, zero check, BLAKE3) → this thread (dedupe within the
//! run, batched `known-chunks` queries) → `parallel` upload workers (zstd, PUT). A snapshot only
//! becomes visible at commit; an interrupted backup leaves chunks the next run will not upload again.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_client::Client;
use ferry_format::api::CommitRequest;
use ferry_format::index::DiskIndex;
use ferry_format::manifest::{ChunkCounts, DiskManifest};
use ferry_format::names::{check_name, NameKind};
use ferry_format::{ChunkId, Entry};
use ferry_image::{DiskSource, ImageFormat};
use ferry_probe::UsedMap;
use serde::Serialize;

use crate::pipeline::{Abort, ChunkStore};
use crate::pool::Pool;
use crate::progress::Progress;
use crate::{EngineError, Refusal};

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

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub machine: String,
    pub disks: Vec<DiskSpec>,
    pub chunk_size: u32,
    pub parallel: usize,
    pub level: i32,
    pub quiet: bool,
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
    pub seconds: f64,
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
}

pub fn backup(client: &Client, opts: &BackupOptions) -> Result<BackupSummary, EngineError> {
    let start = Instant::now();
    check_name(NameKind::Machine, &opts.machine).map_err(Refusal::BadMachineName)?;
    ferry_format::chunk::check_chunk_size(opts.chunk_size).map_err(Refusal::BadChunkSize)?;
    // Open and probe every source before the appliance hears of this backup.
    let mut sources = Vec::new();
    for (i, d) in opts.disks.iter().enumerate() {
        check_name(NameKind::Disk, &d.name).map_err(Refusal::BadDiskName)?;
        if opts.disks[..i].iter().any(|o| o.name == d.name) {
            return Err(Refusal::DiskNamedTwice {
                name: d.name.clone(),
            }
            .into());
        }
        let src = ferry_image::open(&d.path)?;
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
    if sources.is_empty() {
        return Err(Refusal::NoDisks.into());
    }
    let session = client.start_backup(&opts.machine, opts.chunk_size)?;
    let result = run_session(client, opts, &session, sources);
    match result {
        Ok(mut summary) => {
            summary.seconds = start.elapsed().as_secs_f64();
            Ok(summary)
        }
        Err(e) => {
            // Best effort, and brief: the appliance may be what failed. The session's chunks
            // stay (a rerun skips them); nothing becomes visible.
            let _ = client.with_retry_window(ABANDON_RETRY).abandon(&session);
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

fn run_session(
    client: &Client,
    opts: &BackupOptions,
    session: &str,
    sources: Vec<Source<'_>>,
) -> Result<BackupSummary, EngineError> {
    let mut summary = BackupSummary {
        machine: opts.machine.clone(),
        ..Default::default()
    };
    let counters = Counters::default();
    let mut seen = HashSet::new();
    let mut disks = Vec::new();
    for (spec, src, layout, used) in sources {
        let progress = Progress::new();
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
        // The appliance answers with the chunks it lacks (a concurrent GC may have removed one
        // we were told it had): upload those from the source and try again.
        let mut missing = client.put_index(session, &spec.name, &encoded)?;
        for _ in 0..3 {
            if missing.is_empty() {
                break;
            }
            reupload(client, &*src, &index, &missing, opts.level, &counters)?;
            missing = client.put_index(session, &spec.name, &encoded)?;
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
    let req = CommitRequest {
        disks,
        os: None,
        agent: format!("backup-agent {}", env!("CARGO_PKG_VERSION")),
    };
    summary.snapshot = client.commit(session, &req)?;
    summary.bytes_read = counters.bytes_read.load(Ordering::Relaxed);
    summary.chunks_new = counters.new.load(Ordering::Relaxed);
    summary.chunks_present = seen.len() as u64 - summary.chunks_new;
    summary.bytes_uploaded = counters.bytes_uploaded.load(Ordering::Relaxed);
    Ok(summary)
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
    let pool = Pool::new(parallel + QUERY_BATCH.min(8) + 2, opts.chunk_size as usize);
    let abort = Abort::default();
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

    // Each stage owns its channel ends (see crate::pipeline): when one ends, for any reason,
    // the stages next to it see the disconnection or the abort flag and end too.
    std::thread::scope(|s| {
        let (item_tx, item_rx) = sync_channel::<Item>(4);
        let (up_tx, up_rx) = sync_channel::<Item>(parallel);
        let up_rx = Arc::new(Mutex::new(up_rx));
        let (pool, abort) = (&pool, &abort);
        let (ranges, unused) = (&ranges, &unused);
        s.spawn(move || {
            abort.guard("the disk reader", || {
                read_chunks(
                    src, ranges, unused, item_tx, pool, counters, abort, progress,
                )
            })
        });
        for _ in 0..parallel {
            let up_rx = Arc::clone(&up_rx);
            s.spawn(move || {
                abort.guard("an upload worker", || {
                    upload_worker(store, up_rx, pool, opts.level, counters, abort)
                })
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

/// Read every chunk that may hold data, skip zeros, hash, and pass it on.
#[allow(clippy::too_many_arguments)]
fn read_chunks(
    src: &dyn DiskSource,
    ranges: &[(usize, u64, usize)],
    unused: &[bool],
    tx: SyncSender<Item>,
    pool: &Pool,
    counters: &Counters,
    abort: &Abort,
    progress: &Progress,
) -> Result<(), EngineError> {
    for &(i, off, len) in ranges {
        if unused[i] || src.known_zero(off, len as u64) {
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

fn upload_worker(
    store: &dyn ChunkStore,
    rx: Arc<Mutex<Receiver<Item>>>,
    pool: &Pool,
    level: i32,
    counters: &Counters,
    abort: &Abort,
) -> Result<(), EngineError> {
    let mut cctx = zstd::bulk::Compressor::new(level)
        .map_err(|e| EngineError::Worker(format!("zstd: {e}")))?;
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
        let r = upload_one(store, &mut cctx, &mut out, &item.id, &item.buf, counters);
        pool.give(item.buf);
        r?;
    }
}

fn upload_one(
    store: &dyn ChunkStore,
    cctx: &mut zstd::bulk::Compressor<'_>,
    out: &mut Vec<u8>,
    id: &ChunkId,
    data: &[u8],
    counters: &Counters,
) -> Result<(), EngineError> {
    out.clear();
    out.reserve(zstd::zstd_safe::compress_bound(data.len()));
    cctx.compress_to_buffer(data, out)
        .map_err(|e| EngineError::Worker(format!("zstd: {e}")))?;
    if store.put_chunk(id, out)? {
        counters.new.fetch_add(1, Ordering::Relaxed);
    }
    counters
        .bytes_uploaded
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Upload chunks the appliance reports missing at index time, read again from the source.
fn reupload(
    client: &Client,
    src: &dyn DiskSource,
    index: &DiskIndex,
    missing: &[ChunkId],
    level: i32,
    counters: &Counters,
) -> Result<(), EngineError> {
    let missing: HashSet<&ChunkId> = missing.iter().collect();
    let mut cctx = zstd::bulk::Compressor::new(level)
        .map_err(|e| EngineError::Worker(format!("zstd: {e}")))?;
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
        upload_one(client, &mut cctx, &mut out, id, &buf, counters)?;
    }
    Ok(())
}
