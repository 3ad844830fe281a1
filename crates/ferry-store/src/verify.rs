//! `appliance verify`: re-check the whole store, resumably and at a bounded read rate, while
//! `serve` (and GC) may run in other processes.
//!
//! 1. Take `verify.lock` (one verify at a time). Load `verify.state` unless starting over.
//! 2. Chunks, in id order: read each stored frame, check it ([`check_chunk`]: one canonical
//!    zstd frame of data whose BLAKE3 is the id). A bad one is re-read and re-checked holding
//!    `chunks/.lock` exclusive (a PUT may have just replaced it), then moved to
//!    `damaged/<id>`: known-chunks then reports it missing and the next backup that still has
//!    the data uploads it again. After each chunk, sleep so the bytes read stay under the rate;
//!    every [`CHECKPOINT_CHUNKS`] chunks or [`CHECKPOINT_INTERVAL`] write `verify.state`
//!    atomically (the last id done, counts, bad chunks found), so a killed run resumes there.
//! 3. Snapshots: each manifest's signature against the store's signing key, each index
//!    against the digest in its manifest, each chunk an index references present (else
//!    quarantined or missing). Damaged snapshots are named with their machine and what to do.
//! 4. Remove `verify.state`: the next run starts over.
//!
//! Safe with `serve` and GC: chunks are only read without the lock; the one write (the move to
//! `damaged/`) happens under the exclusive lock after a re-check, so a good chunk a PUT just
//! stored is never moved, and a backup that was told the chunk is present finds it missing at
//! index upload or commit (409) and uploads it, as when GC races it. A chunk GC deletes
//! mid-run is counted as gone.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use ferry_format::{ChunkId, DiskIndex, Manifest};
use serde::{Deserialize, Serialize};

use crate::chunks::check_chunk;
use crate::data::LockMode;
use crate::error::{Result, StoreError};
use crate::sessions::unique_data_chunks;
use crate::snapshots::rfc3339;
use crate::state::StateDoc;
use crate::Store;

/// The checkpoint of an interrupted run, at the store's root with local records
/// ([`StateDoc::VerifyCheckpoint`]).
pub const VERIFY_STATE: &str = "verify.state";
/// flock, with local records: one verify at a time (the lock of
/// [`crate::meta::Collection::StoreState`]).
pub const VERIFY_LOCK: &str = "verify.lock";
/// Where bad chunks are moved (kept for inspection; safe to delete).
pub const DAMAGED_DIR: &str = "damaged";
/// Write a checkpoint after this many chunks...
pub const CHECKPOINT_CHUNKS: u64 = 256;
/// ...or this long, whichever comes first (slow rates still checkpoint often).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
const STATE_VERSION: u32 = 1;

/// Where a run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Continue an interrupted run if there is a checkpoint, else start over.
    Auto,
    /// Continue an interrupted run; fail if there is none.
    Resume,
    /// Ignore any checkpoint.
    Restart,
}

#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// Bytes read per second at most (None: as fast as the disk goes).
    pub rate: Option<u64>,
    pub start: Start,
}

/// A stored chunk that failed its check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadChunk {
    pub id: ChunkId,
    /// What is wrong with it ([`crate::chunks::ChunkFault`], as text).
    pub fault: String,
    /// Where it was moved (a path, or an S3 key).
    pub moved_to: String,
}

/// `verify.state`: JSON, written atomically.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Checkpoint {
    version: u32,
    /// When the first of the runs that make up this verify started (RFC 3339).
    started: String,
    /// The last chunk checked; everything up to it (in id order) is done.
    after: Option<ChunkId>,
    checked: u64,
    bytes: u64,
    bad: Vec<BadChunk>,
}

/// What is wrong with one snapshot, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotDamage {
    pub snapshot: String,
    /// Empty when the manifest cannot be read.
    pub machine: String,
    /// The manifest or its signature cannot be read, or the signature does not verify.
    pub manifest_error: Option<String>,
    /// Disks whose index is missing, unreadable or not the one the manifest names.
    pub index_errors: Vec<String>,
    /// Referenced chunks that are in `damaged/`.
    pub bad_chunks: u64,
    /// Referenced chunks that are nowhere.
    pub missing_chunks: u64,
    pub action: String,
}

/// What a verify run found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// When the verify began (the first run, when this one resumed).
    pub started: String,
    pub resumed: bool,
    /// Chunks an interrupted earlier run had verified; not read again.
    pub chunks_skipped: u64,
    /// Chunks this run read and checked.
    pub chunks_checked: u64,
    pub bytes_checked: u64,
    /// Chunks deleted (by GC) between the listing and the read.
    pub chunks_gone: u64,
    pub seconds: f64,
    /// Measured read rate of this run's chunk pass, bytes per second.
    pub rate: f64,
    pub bad_chunks: Vec<BadChunk>,
    /// Chunks a snapshot references that are neither stored nor in `damaged/`.
    pub missing_chunks: Vec<ChunkId>,
    pub snapshots_checked: u64,
    pub damaged_snapshots: Vec<SnapshotDamage>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.bad_chunks.is_empty()
            && self.missing_chunks.is_empty()
            && self.damaged_snapshots.is_empty()
    }
}

/// How a referenced chunk stands, computed once per id.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    Stored,
    Damaged,
    Missing,
}

impl Store {
    /// The local layout's `damaged/` (tests of the local backend use it).
    pub fn damaged_dir(&self) -> PathBuf {
        self.root().join(DAMAGED_DIR)
    }

    /// Where verify moves bad chunks (a directory, or an S3 prefix), for messages.
    pub fn damaged_location(&self) -> String {
        self.data().quarantine_location()
    }

    /// Run `verify` (see the module doc).
    pub fn verify(&self, opts: VerifyOptions) -> Result<VerifyReport> {
        let _lock = self.try_lock_verify()?.ok_or_else(|| {
            StoreError::Conflict(
                "another verify is running on this store: wait for it or stop it".into(),
            )
        })?;
        let mut cp = self.load_checkpoint(opts.start)?;
        let mut report = VerifyReport {
            started: cp.started.clone(),
            resumed: cp.after.is_some(),
            chunks_skipped: cp.checked,
            ..VerifyReport::default()
        };
        let t0 = Instant::now();
        let pass = self.chunk_pass(&mut cp, opts.rate, &mut report);
        if pass.is_err() {
            // Keep what was done for the next run; the error is what the caller sees.
            let _ = self.save_checkpoint(&cp);
        }
        pass?;
        report.seconds = t0.elapsed().as_secs_f64();
        report.rate = report.bytes_checked as f64 / report.seconds.max(1e-6);
        report.bad_chunks = cp.bad.clone();
        self.snapshot_pass(&mut report)?;
        self.state_delete(StateDoc::VerifyCheckpoint)?;
        Ok(report)
    }

    fn load_checkpoint(&self, start: Start) -> Result<Checkpoint> {
        let path = self.state_location(StateDoc::VerifyCheckpoint);
        let fresh = Checkpoint {
            version: STATE_VERSION,
            started: rfc3339(SystemTime::now()),
            after: None,
            checked: 0,
            bytes: 0,
            bad: Vec::new(),
        };
        if start == Start::Restart {
            return Ok(fresh);
        }
        let Some(bytes) = self.state_get(StateDoc::VerifyCheckpoint)? else {
            if start == Start::Resume {
                return Err(StoreError::NotFound(format!(
                    "no interrupted verify to resume ({path} does not exist): run verify \
                     without --resume"
                )));
            }
            return Ok(fresh);
        };
        let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Invalid(format!(
                "parse the verify checkpoint {path}: {e}; run verify with --restart"
            ))
        })?;
        if cp.version != STATE_VERSION {
            return Err(StoreError::Invalid(format!(
                "the verify checkpoint {path} has version {}: run verify with --restart",
                cp.version
            )));
        }
        Ok(cp)
    }

    fn save_checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(cp).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.state_put(StateDoc::VerifyCheckpoint, &bytes)
    }

    /// Step 2: every stored chunk after the checkpoint, in id order.
    fn chunk_pass(
        &self,
        cp: &mut Checkpoint,
        rate: Option<u64>,
        report: &mut VerifyReport,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last_save = (Instant::now(), 0u64);
        let after = cp.after;
        let first_prefix = after.map(|a| a.store_prefix()).unwrap_or_default();
        let data = self.data();
        let prefixes: Vec<String> = data
            .chunk_prefixes()?
            .into_iter()
            .filter(|p| p.as_str() >= first_prefix.as_str())
            .collect();
        for prefix in prefixes {
            let ids: Vec<ChunkId> = data
                .stored_chunks(&prefix)?
                .into_iter()
                .filter(|id| after.is_none_or(|a| *id > a))
                .collect();
            for id in ids {
                let len = self.verify_one(&id, cp)?;
                match len {
                    Some(n) => {
                        report.bytes_checked += n;
                        cp.bytes += n;
                    }
                    None => report.chunks_gone += 1,
                }
                report.chunks_checked += 1;
                cp.checked += 1;
                cp.after = Some(id);
                pace(rate, report.bytes_checked, start);
                if cp.checked - last_save.1 >= CHECKPOINT_CHUNKS
                    || last_save.0.elapsed() >= CHECKPOINT_INTERVAL
                {
                    self.save_checkpoint(cp)?;
                    tracing::info!(
                        "verify: {} chunks checked ({} bytes), up to {id}",
                        cp.checked,
                        cp.bytes
                    );
                    last_save = (Instant::now(), cp.checked);
                }
            }
        }
        Ok(())
    }

    /// Check one stored chunk; a bad one is moved to `damaged/`. Returns the bytes read, or
    /// `None` when the chunk is gone.
    fn verify_one(&self, id: &ChunkId, cp: &mut Checkpoint) -> Result<Option<u64>> {
        let Some(frame) = self.data().read_chunk(id)? else {
            return Ok(None);
        };
        if check_chunk(id, &frame).is_ok() {
            return Ok(Some(frame.len() as u64));
        }
        if let Some(bad) = self.quarantine(id)? {
            tracing::warn!(
                "damaged chunk {id}: {}; moved it to {}",
                bad.fault,
                bad.moved_to
            );
            cp.bad.push(bad);
        }
        Ok(Some(frame.len() as u64))
    }

    /// Re-check `id` holding the chunk lock exclusive (no PUT, known-chunks or GC unlink runs
    /// meanwhile) and move it to `damaged/` if it is still bad.
    fn quarantine(&self, id: &ChunkId) -> Result<Option<BadChunk>> {
        let data = self.data();
        let _lock = data.lock_chunks(LockMode::Exclusive)?;
        let Some(frame) = data.read_chunk(id)? else {
            return Ok(None);
        };
        let Err(fault) = check_chunk(id, &frame) else {
            return Ok(None); // replaced by a good upload since the first read
        };
        let moved_to = data.quarantine_chunk(id)?;
        Ok(Some(BadChunk {
            id: *id,
            fault: fault.to_string(),
            moved_to,
        }))
    }

    /// Step 3: signatures, indexes and chunk references of every snapshot.
    fn snapshot_pass(&self, report: &mut VerifyReport) -> Result<()> {
        let key = self.load_signer()?.public_key();
        let mut seen: HashMap<ChunkId, Presence> = HashMap::new();
        let mut ids = self.snapshot_ids()?;
        ids.sort();
        for id in ids {
            let mut d = SnapshotDamage {
                snapshot: id.clone(),
                machine: String::new(),
                manifest_error: None,
                index_errors: Vec::new(),
                bad_chunks: 0,
                missing_chunks: 0,
                action: String::new(),
            };
            let manifest = match self.signed_manifest(&id, "") {
                Err(e) if e.is_not_found() && !self.data().snapshot_exists(&id)? => {
                    continue; // pruned meanwhile
                }
                Err(e) => {
                    d.manifest_error = Some(e.to_string());
                    None
                }
                Ok(s) => match key
                    .verify(s.manifest.as_bytes(), &s.signature)
                    .map_err(StoreError::from)
                    .and_then(|()| parse_manifest(&id, &s.manifest))
                {
                    Ok(m) => Some(m),
                    Err(e) => {
                        d.manifest_error = Some(e.to_string());
                        // The machine name still helps the operator, signed or not.
                        d.machine = self.manifest(&id).map(|m| m.machine).unwrap_or_default();
                        None
                    }
                },
            };
            report.snapshots_checked += 1;
            if let Some(m) = &manifest {
                d.machine = m.machine.clone();
                self.check_references(m, &mut seen, &mut d, report)?;
            }
            if d.manifest_error.is_some()
                || !d.index_errors.is_empty()
                || d.bad_chunks + d.missing_chunks > 0
            {
                d.action = advice(&d);
                report.damaged_snapshots.push(d);
            }
        }
        Ok(())
    }

    fn check_references(
        &self,
        m: &Manifest,
        seen: &mut HashMap<ChunkId, Presence>,
        d: &mut SnapshotDamage,
        report: &mut VerifyReport,
    ) -> Result<()> {
        for disk in &m.disks {
            let bytes = match self.snapshot_index(&m.snapshot, &disk.name) {
                Ok(b) => b,
                Err(e) => {
                    d.index_errors.push(format!("disk {}: {e}", disk.name));
                    continue;
                }
            };
            if ChunkId::of(&bytes) != disk.index_digest {
                d.index_errors.push(format!(
                    "disk {}: the index is not the one the manifest names (digest {})",
                    disk.name,
                    ChunkId::of(&bytes)
                ));
                continue;
            }
            let index = match DiskIndex::decode(&bytes) {
                Ok(i) => i,
                Err(e) => {
                    d.index_errors.push(format!("disk {}: {e}", disk.name));
                    continue;
                }
            };
            for chunk in unique_data_chunks(&index) {
                let p = match seen.get(&chunk) {
                    Some(p) => *p,
                    None => {
                        let p = self.presence(&chunk)?;
                        seen.insert(chunk, p);
                        if p == Presence::Missing {
                            report.missing_chunks.push(chunk);
                        }
                        p
                    }
                };
                match p {
                    Presence::Stored => {}
                    Presence::Damaged => d.bad_chunks += 1,
                    Presence::Missing => d.missing_chunks += 1,
                }
            }
        }
        Ok(())
    }

    fn presence(&self, id: &ChunkId) -> Result<Presence> {
        Ok(if self.data().has_chunk(id)? {
            Presence::Stored
        } else if self.data().is_quarantined(id)? {
            Presence::Damaged
        } else {
            Presence::Missing
        })
    }
}

fn parse_manifest(id: &str, text: &str) -> Result<Manifest> {
    let m: Manifest = serde_json::from_str(text)
        .map_err(|e| StoreError::Invalid(format!("parse manifest of {id}: {e}")))?;
    m.check()?;
    if m.snapshot != id {
        return Err(StoreError::Invalid(format!(
            "the manifest in {id} is that of snapshot {}",
            m.snapshot
        )));
    }
    Ok(m)
}

/// What the operator does about a damaged snapshot.
fn advice(d: &SnapshotDamage) -> String {
    let machine = if d.machine.is_empty() {
        "its machine".to_string()
    } else {
        format!("machine {}", d.machine)
    };
    if d.manifest_error.is_some() || !d.index_errors.is_empty() {
        format!(
            "do not restore it (agents refuse it): its manifest or index was altered or lost; \
             back up {machine} again"
        )
    } else {
        format!(
            "back up {machine} again: the next backup uploads the damaged or missing chunks its \
             disks still hold, which repairs this snapshot; then run `appliance verify` again. \
             Until then it cannot be restored whole"
        )
    }
}

/// Sleep so that `bytes` read since `start` stay within `rate` bytes per second.
fn pace(rate: Option<u64>, bytes: u64, start: Instant) {
    let Some(rate) = rate.filter(|&r| r > 0) else {
        return;
    };
    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(start.elapsed()) {
        std::thread::sleep(wait);
    }
}

impl fmt::Display for VerifyReport {
    /// The human report: counts, then each problem on its own line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Checked {} chunks ({} bytes) in {:.1} s, {:.1} MB/s",
            self.chunks_checked,
            self.bytes_checked,
            self.seconds,
            self.rate / 1e6
        )?;
        if self.resumed {
            writeln!(
                f,
                "Resumed the verify started {}: skipped {} chunks it had already verified",
                self.started, self.chunks_skipped
            )?;
        }
        if self.chunks_gone > 0 {
            writeln!(
                f,
                "{} chunks were removed by GC during the run",
                self.chunks_gone
            )?;
        }
        writeln!(f, "Checked {} snapshots", self.snapshots_checked)?;
        for b in &self.bad_chunks {
            writeln!(
                f,
                "BAD chunk {}: {}; moved to {}",
                b.id, b.fault, b.moved_to
            )?;
        }
        for id in &self.missing_chunks {
            writeln!(f, "MISSING chunk {id}")?;
        }
        for d in &self.damaged_snapshots {
            let mut what = Vec::new();
            if let Some(e) = &d.manifest_error {
                what.push(e.clone());
            }
            what.extend(d.index_errors.iter().cloned());
            if d.bad_chunks > 0 {
                what.push(format!("{} damaged chunks", d.bad_chunks));
            }
            if d.missing_chunks > 0 {
                what.push(format!("{} missing chunks", d.missing_chunks));
            }
            let machine = if d.machine.is_empty() {
                "?"
            } else {
                &d.machine
            };
            writeln!(
                f,
                "DAMAGED snapshot {} (machine {machine}): {}: {}",
                d.snapshot,
                what.join("; "),
                d.action
            )?;
        }
        if self.is_clean() {
            writeln!(f, "The store is intact")?;
        }
        Ok(())
    }
}
