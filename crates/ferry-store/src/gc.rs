//! Garbage collection: mark and sweep by mtime, safe while backups run in another process. The
//! steps and rules are the data backend's business only where they touch chunks: on S3 the
//! mtime is a marker's in the local chunk catalogue, and an object without a marker is swept by
//! its LastModified ([`crate::data::s3`]).
//!
//! 1. T0 = start time. Dead sessions (idle > 24 h) and their `tmp/` directories are removed;
//!    `trash/` is emptied.
//! 2. cutoff = min(T0, pin of every live session) - [`GC_MARGIN`], where a session's pin is
//!    [`crate::sessions::SessionRecord::gc_pin`]: its start, but never more than [`crate::sessions::SESSION_PIN_WINDOW`] before its
//!    last activity. A session kept alive by a request a day therefore holds back GC by a day at
//!    most, not forever.
//! 3. Mark: the mtime of every chunk a committed snapshot references is set to now.
//! 4. Sweep: prefix by prefix, chunk files (and stale temporary files) with mtime < cutoff are
//!    listed; every [`DELETE_BATCH`] of them (and the rest at the end) are re-stated and
//!    unlinked while `chunks/.lock` is held exclusive.
//!
//! Why it is safe: the server sets a chunk's mtime to now, holding `chunks/.lock` shared,
//! whenever a session learns the chunk is present (known-chunks, index upload, PUT of a present
//! chunk), and a new chunk is born with mtime now. Every such touch by a session happens after the
//! session started, hence after the cutoff; the lock orders "check present + touch" against
//! "re-stat + unlink", so GC either sees the new mtime or the server sees the chunk gone (and the
//! agent uploads it). Snapshots committed during GC consist of chunks their session touched.
//!
//! A session that relies on a chunk it touched more than [`crate::sessions::SESSION_PIN_WINDOW`] before its latest
//! request may find it collected; nothing is lost: the index upload and the commit touch every
//! chunk they name again under the shared lock and answer 409 with the missing ones (the agent
//! uploads them and retries), and the commit's touch follows its own `last_activity` update, so
//! it is never older than the cutoff of a GC that can still see the session.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::data::local::list_names;
use crate::data::{ChunkEntry, LockMode};
use crate::error::{io_err, Result, StoreError};
use crate::fsx::TMP_PREFIX;
use crate::index_file::scan_index;
use crate::meta::Collection;
use crate::snapshots::rfc3339;
use crate::state::StateDoc;
use crate::Store;

/// Candidates re-checked and deleted per hold of the exclusive chunk lock: uploads wait for one
/// batch at a time, and on several nodes each hold costs the other nodes a drain of their
/// uploads (the PostgreSQL chunk catalogue), so not one hold per prefix either.
const DELETE_BATCH: usize = 512;

/// Slack between the cutoff and the oldest thing GC must respect (clock steps, coarse mtimes).
pub const GC_MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long the record of a committed session stays (to answer a commit retried after its reply
/// was lost).
pub const COMMITTED_SESSION_KEEP: Duration = Duration::from_secs(3600);

/// What a GC run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub cutoff: String,
    pub snapshots: u64,
    pub live_sessions: u64,
    pub dead_sessions_removed: u64,
    pub kept_chunks: u64,
    pub kept_bytes: u64,
    pub removed_chunks: u64,
    pub removed_bytes: u64,
    /// Chunks a snapshot references that are not in the store (damage: such snapshots cannot be
    /// restored whole).
    pub missing_chunks: u64,
}

/// The last GC run's outcome (`DIR/gc.last.json`), whoever ran it: `serve`'s schedule, the
/// admin API or `appliance gc`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcRun {
    /// RFC 3339 UTC.
    pub started: String,
    pub finished: String,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<GcReport>,
    /// Why it failed (then `report` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /gc`, `appliance gc --status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcStatus {
    /// A GC holds the store's GC lock now.
    pub running: bool,
    pub last: Option<GcRun>,
}

impl Store {
    /// Run garbage collection with `now` as its start time T0, and record its outcome for
    /// [`Store::gc_status`] (a run refused because another holds the lock records nothing).
    pub fn gc(&self, now: SystemTime) -> Result<GcReport> {
        let _gc_lock = self.data().try_lock_gc()?.ok_or_else(|| {
            StoreError::Conflict(
                "another gc is running on this store: wait for it to finish".into(),
            )
        })?;
        let clock = std::time::Instant::now();
        let result = self.gc_locked(now);
        let run = GcRun {
            started: rfc3339(now),
            finished: rfc3339(SystemTime::now()),
            seconds: clock.elapsed().as_secs_f64(),
            report: result.as_ref().ok().cloned(),
            error: result.as_ref().err().map(ToString::to_string),
        };
        // The record is for operators: failing to write it does not fail the GC.
        if let Err(e) = serde_json::to_vec_pretty(&run)
            .map_err(|e| StoreError::Invalid(e.to_string()))
            .and_then(|b| self.state_put(StateDoc::GcLast, &b))
        {
            let at = self.state_location(StateDoc::GcLast);
            tracing::warn!("record the gc run in {at}: {e}");
        }
        result
    }

    /// Whether a GC runs now and how the last one went.
    pub fn gc_status(&self) -> Result<GcStatus> {
        let running = self.data().try_lock_gc()?.is_none();
        let last = match self.state_get(StateDoc::GcLast)? {
            Some(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                let at = self.state_location(StateDoc::GcLast);
                StoreError::Invalid(format!("parse {at}: {e}"))
            })?),
            None => None,
        };
        Ok(GcStatus { running, last })
    }

    fn gc_locked(&self, now: SystemTime) -> Result<GcReport> {
        let mut report = GcReport::default();
        let oldest_live = self.remove_dead_sessions(now, &mut report)?;
        self.empty_trash(now.checked_sub(GC_MARGIN).unwrap_or(SystemTime::UNIX_EPOCH))?;
        let cutoff = oldest_live
            .min(now)
            .checked_sub(GC_MARGIN)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        report.cutoff = rfc3339(cutoff);
        self.mark(&mut report)?;
        self.sweep(cutoff, &mut report)?;
        Ok(report)
    }

    /// Delete a session's record; a failure leaves it for the next GC.
    fn forget_session(&self, id: &str) {
        if let Err(e) = self.records().delete(Collection::Sessions, id) {
            tracing::warn!("remove the record of backup session {id}: {e}");
        }
    }

    /// Remove dead sessions and orphaned tmp directories; return the earliest pin of a live
    /// session (or `now`).
    fn remove_dead_sessions(&self, now: SystemTime, report: &mut GcReport) -> Result<SystemTime> {
        // List the sessions' data before sessions/: a session file is written before any of its
        // data, so data listed here whose session is not live below is not in use.
        let tmp_names = self.data().sessions_with_data()?;
        let mut live = HashSet::new();
        let mut oldest = now;
        for (id, rec) in self.list_sessions()? {
            if self.is_committed(&id, &rec) {
                // Its snapshot holds (and GC marks) its chunks: it pins nothing. The record only
                // answers a retried commit, for an hour.
                let idle = now
                    .duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(rec.last_activity))
                    .unwrap_or_default();
                if idle > COMMITTED_SESSION_KEEP {
                    self.forget_session(&id);
                }
                continue;
            }
            if rec.is_live(now) {
                oldest = oldest.min(rec.gc_pin());
                live.insert(id);
            } else {
                tracing::info!("removing dead backup session {id} of {}", rec.machine);
                self.forget_session(&id);
                report.dead_sessions_removed += 1;
            }
        }
        report.live_sessions = live.len() as u64;
        // A record write the appliance died in leaves a temporary file nobody else removes.
        let root = self.root();
        for dir in [
            self.sessions_dir(),
            root.join("agents"),
            root.join("jobs"),
            self.sources_dir(),
            root.into(),
        ] {
            remove_stale_temps(&dir, now)?;
        }
        for name in tmp_names.iter().filter(|n| !live.contains(*n)) {
            self.data().remove_session_data(name)?;
        }
        Ok(oldest)
    }

    /// Whether the session's commit is done: it recorded a snapshot id and its data was
    /// published, so none is left (the snapshot may have been pruned since). The id alone is not
    /// enough: it is recorded before the snapshot becomes visible, which may still fail over to
    /// the next id.
    fn is_committed(&self, session: &str, rec: &crate::sessions::SessionRecord) -> bool {
        rec.committed.is_some() && !self.data().session_has_data(session).unwrap_or(true)
    }

    fn mark(&self, report: &mut GcReport) -> Result<()> {
        let mut marked = HashSet::new();
        let data = self.data();
        for id in self.snapshot_ids()? {
            let manifest = match self.manifest(&id) {
                Ok(m) => m,
                // Pruned since listed.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            report.snapshots += 1;
            for disk in &manifest.disks {
                let blob = match self.open_snapshot_index(&id, &disk.name) {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e),
                };
                // Streamed: a 512 MiB index is never decoded whole.
                let path = self.snapshots_dir().join(&id);
                let what = format!("the index of disk {} of snapshot {id}", disk.name);
                let len = blob.len();
                scan_index(blob.into_reader(), len, &path, &what, |ids| {
                    for chunk in ids {
                        if marked.insert(*chunk) && !data.mark_chunk(chunk)? {
                            tracing::warn!(
                                "snapshot {id} disk {} references missing chunk {chunk}",
                                disk.name
                            );
                            report.missing_chunks += 1;
                        }
                    }
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    fn sweep(&self, cutoff: SystemTime, report: &mut GcReport) -> Result<()> {
        let data = self.data();
        let mut candidates = Vec::new();
        for prefix in data.chunk_prefixes()? {
            for entry in data.list_chunk_entries(&prefix)? {
                if entry.marked < cutoff {
                    candidates.push(entry);
                } else if entry.chunk.is_some() {
                    report.kept_chunks += 1;
                    report.kept_bytes += entry.len;
                }
            }
            if candidates.len() >= DELETE_BATCH {
                self.delete_old(&candidates, cutoff, report)?;
                candidates.clear();
            }
        }
        if !candidates.is_empty() {
            self.delete_old(&candidates, cutoff, report)?;
        }
        Ok(())
    }

    /// Re-read and delete candidates under the exclusive chunk lock (a batch at a time, so the
    /// server waits at most that long).
    fn delete_old(
        &self,
        candidates: &[ChunkEntry],
        cutoff: SystemTime,
        report: &mut GcReport,
    ) -> Result<()> {
        let data = self.data();
        let _lock = data.lock_chunks(LockMode::Exclusive)?;
        for candidate in candidates {
            let Some(entry) = data.recheck_entry(candidate)? else {
                continue;
            };
            if entry.marked >= cutoff {
                if entry.chunk.is_some() {
                    report.kept_chunks += 1;
                    report.kept_bytes += entry.len;
                }
                continue;
            }
            if data.delete_entry(&entry)? && entry.chunk.is_some() {
                report.removed_chunks += 1;
                report.removed_bytes += entry.len;
            }
        }
        Ok(())
    }
}

/// Remove `.tmp-` files of `dir` older than [`GC_MARGIN`]: writes interrupted by a crash (a write
/// in progress takes milliseconds).
fn remove_stale_temps(dir: &Path, now: SystemTime) -> Result<()> {
    let stale = now.checked_sub(GC_MARGIN).unwrap_or(SystemTime::UNIX_EPOCH);
    for name in list_names(dir)? {
        let path = dir.join(&name);
        let stale_temp = name.starts_with(TMP_PREFIX)
            && path.is_file()
            && stat(&path)?.is_some_and(|(t, _)| t < stale);
        if !stale_temp {
            continue;
        }
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &path)(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// mtime and size, or `None` if the file is gone.
fn stat(path: &Path) -> Result<Option<(SystemTime, u64)>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some((m.modified().map_err(io_err("stat", path))?, m.len()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}
