//! Moving a store onto other backends (`appliance move-store`, docs/operations.md, "Moving a
//! store"): every record, then every snapshot with the chunks it references, each chunk read
//! from the source and checked (decompressed, its BLAKE3 compared with its id) before it is
//! written, each snapshot published under its own id with its signed manifest byte for byte
//! once all of its chunks and indexes are in place. The source is only read.
//!
//! A move is resumable: a snapshot already in the target is skipped, a chunk the target holds
//! is touched rather than copied, records are written over. A damaged or missing chunk in the
//! source stops the move before the snapshot that references it is published, naming both.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use ferry_format::ChunkId;
use serde::Serialize;

use crate::chunks::check_chunk;
use crate::data::SnapshotObjects;
use crate::error::{Result, StoreError};
use crate::index_file::scan_index;
use crate::meta::Collection;
use crate::prune::ORIGIN_FILE;
use crate::snapshots::{MANIFEST_FILE, SIGNATURE_FILE};
use crate::{fsx, Store};

/// Chunks copied at once: S3 requests are latency-bound, so a few in flight keep the link busy.
pub const COPY_THREADS: usize = 4;

/// What a move will do: counted from the source before anything is written (`--dry-run`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MovePlan {
    /// Records per collection.
    pub records: BTreeMap<String, usize>,
    /// Snapshots, oldest first, and which of them the target already holds.
    pub snapshots: Vec<String>,
    pub snapshots_in_target: usize,
    /// Distinct chunks the snapshots reference, and their stored bytes in the source.
    pub chunks: u64,
    pub chunk_bytes: u64,
}

/// What a move did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct MoveReport {
    pub records: usize,
    pub snapshots_moved: usize,
    /// Already in the target (an earlier, interrupted move).
    pub snapshots_skipped: usize,
    /// Chunks read from the source, checked and written.
    pub chunks_copied: u64,
    /// Chunks the target held already (touched).
    pub chunks_present: u64,
    /// Stored bytes written.
    pub bytes_copied: u64,
    pub seconds: f64,
}

/// Refuse to move a store that a backup is writing to: its session would be lost.
pub fn refuse_live_sessions(src: &Store, now: SystemTime) -> Result<()> {
    let live: Vec<String> = src
        .list_sessions()?
        .into_iter()
        .filter(|(_, r)| r.committed.is_none() && r.is_live(now))
        .map(|(id, r)| format!("{id} (machine {})", r.machine))
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "backup sessions are open on {}: {}; stop `appliance serve` on it (or let the backups \
         finish), then move the store",
        src.root().display(),
        live.join(", ")
    )))
}

/// Every chunk of every disk of snapshot `id`, in index order, once each.
fn snapshot_chunks(src: &Store, id: &str) -> Result<Vec<ChunkId>> {
    let manifest = src.manifest(id)?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for disk in &manifest.disks {
        let blob = src.open_snapshot_index(id, &disk.name)?;
        let len = blob.len();
        let path = src.snapshots_dir().join(id);
        let what = format!("the index of disk {} of snapshot {id}", disk.name);
        scan_index(blob.into_reader(), len, &path, &what, |ids| {
            out.extend(ids.iter().filter(|c| seen.insert(**c)));
            Ok(())
        })?;
    }
    Ok(out)
}

/// Snapshot ids, oldest first (ids sort by machine; `created` orders them).
fn snapshots_oldest_first(src: &Store) -> Result<Vec<String>> {
    let mut all = src.list_snapshots(None)?;
    all.sort_by(|a, b| (&a.created, &a.snapshot).cmp(&(&b.created, &b.snapshot)));
    Ok(all.into_iter().map(|s| s.snapshot).collect())
}

/// Count what a move of `src` into `dst` will do, reading only.
pub fn plan(src: &Store, dst: Option<&Store>) -> Result<MovePlan> {
    let mut plan = MovePlan::default();
    for c in Collection::ALL {
        plan.records
            .insert(c.name().to_string(), src.records().ids(c)?.len());
    }
    plan.snapshots = snapshots_oldest_first(src)?;
    let mut seen = HashSet::new();
    for id in &plan.snapshots {
        if let Some(dst) = dst {
            if dst.data().snapshot_exists(id)? {
                plan.snapshots_in_target += 1;
            }
        }
        for c in snapshot_chunks(src, id)? {
            if seen.insert(c) {
                plan.chunks += 1;
                if let Some(frame) = src.data().open_chunk(&c)? {
                    plan.chunk_bytes += frame.len();
                }
            }
        }
    }
    Ok(plan)
}

/// Copy every record of `src` into `dst` (written over: a move resumes).
pub fn copy_records(src: &Store, dst: &Store) -> Result<usize> {
    let mut n = 0;
    for c in Collection::ALL {
        for (id, body) in src.records().all(c)? {
            dst.records().put(c, &id, &body)?;
            // A record's log (a job's events) goes whole, once: not appended twice on resume.
            let log = src.records().read_log(c, &id)?;
            if !log.is_empty() && dst.records().log_size(c, &id)? == 0 {
                dst.records().append_log(c, &id, &log)?;
            }
            n += 1;
        }
    }
    Ok(n)
}

/// Move every snapshot of `src` into `dst` (records first, [`copy_records`]). `progress` hears
/// of each snapshot as it is published or skipped.
pub fn move_snapshots(
    src: &Store,
    dst: &Store,
    mut progress: impl FnMut(&str, &MoveReport),
) -> Result<MoveReport> {
    let t0 = Instant::now();
    let mut report = MoveReport::default();
    let mut done: HashSet<ChunkId> = HashSet::new();
    for id in snapshots_oldest_first(src)? {
        if dst.data().snapshot_exists(&id)? {
            report.snapshots_skipped += 1;
            progress(&id, &report);
            continue;
        }
        let todo: Vec<ChunkId> = snapshot_chunks(src, &id)?
            .into_iter()
            .filter(|c| !done.contains(c))
            .collect();
        let (copied, present, bytes) = copy_chunks(src, dst, &id, &todo)?;
        done.extend(todo);
        report.chunks_copied += copied;
        report.chunks_present += present;
        report.bytes_copied += bytes;
        publish(src, dst, &id)?;
        report.snapshots_moved += 1;
        report.seconds = t0.elapsed().as_secs_f64();
        progress(&id, &report);
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// Copy `ids` (chunks of snapshot `snapshot`) on [`COPY_THREADS`] threads: (copied, present,
/// bytes).
fn copy_chunks(
    src: &Store,
    dst: &Store,
    snapshot: &str,
    ids: &[ChunkId],
) -> Result<(u64, u64, u64)> {
    let next = AtomicUsize::new(0);
    let (copied, present, bytes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let failed: Mutex<Option<StoreError>> = Mutex::new(None);
    let worker = || -> Result<()> {
        loop {
            if failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                return Ok(());
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(id) = ids.get(i) else {
                return Ok(());
            };
            // Under the shared chunk lock: a GC on the target cannot take a chunk between its
            // touch (or write) and the snapshot that will reference it.
            let _lock = dst.lock_chunks_shared()?;
            if dst.data().touch_chunk(id)? {
                present.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let frame = src.data().read_chunk(id)?.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "chunk {id} of snapshot {snapshot} is missing from the source store {}: \
                     run `appliance gc --data {0}` to list what is missing, back the machine up \
                     again (or delete the snapshot), then move again",
                    src.root().display()
                ))
            })?;
            check_chunk(id, &frame).map_err(|fault| {
                StoreError::BadChunk(format!(
                    "chunk {id} of snapshot {snapshot} in the source store {} is damaged \
                     ({fault}): nothing of that snapshot was published in the target; run \
                     `appliance verify --data {0}` (it quarantines the chunk and names the \
                     snapshots), back the machine up again, then move again",
                    src.root().display()
                ))
            })?;
            dst.data().write_chunk(id, &frame)?;
            copied.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
    };
    std::thread::scope(|s| {
        for _ in 0..COPY_THREADS.min(ids.len().max(1)) {
            s.spawn(|| {
                if let Err(e) = worker() {
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = failed.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok((
        copied.into_inner(),
        present.into_inner(),
        bytes.into_inner(),
    ))
}

/// Publish snapshot `id` in `dst` with the source's indexes, manifest, signature and origin,
/// byte for byte (the signing key moves with the store).
fn publish(src: &Store, dst: &Store, id: &str) -> Result<()> {
    let object = |name: &str| -> Result<Vec<u8>> {
        src.data().read_snapshot_object(id, name)?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "{name} of snapshot {id} in {}",
                src.root().display()
            ))
        })
    };
    let manifest_bytes = object(MANIFEST_FILE)?;
    let signature = object(SIGNATURE_FILE)?;
    let origin = src.data().read_snapshot_object(id, ORIGIN_FILE)?;
    let manifest = src.manifest(id)?;
    let disks: Vec<String> = manifest.disks.iter().map(|d| d.name.clone()).collect();
    // The indexes go the way a backup's do: staged in a session directory of the target, then
    // published with the snapshot.
    let session = format!("move-{}", fsx::random_hex(8)?);
    let staging = dst.session_tmp_dir(&session);
    fsx::create_dir_all(&staging)?;
    let result = (|| {
        for disk in &disks {
            let index = object(&format!("{disk}.index"))?;
            let staged = staging.join(format!("{}{disk}.index", fsx::TMP_PREFIX));
            fsx::write_atomic(&staged, &index, 0o600)?;
            dst.data().put_session_index(&session, disk, &staged)?;
        }
        let objects = SnapshotObjects {
            disks: &disks,
            manifest: &manifest_bytes,
            signature: &signature,
            origin: origin.as_deref(),
        };
        match dst
            .data()
            .publish_snapshot(&session, id, objects, &mut || Ok(()))?
        {
            crate::data::Published::Visible => Ok(()),
            crate::data::Published::IdTaken => Err(StoreError::Conflict(format!(
                "snapshot {id} appeared in the target while it was being moved: is another \
                 move or a backup writing to it?"
            ))),
        }
    })();
    if result.is_err() {
        if let Err(e) = dst.data().remove_session_data(&session) {
            tracing::warn!("remove the staged indexes of snapshot {id}: {e}");
        }
    }
    result
}
