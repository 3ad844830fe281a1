//! Open backup sessions: `sessions/<session>.json` (a record of [`Collection::Sessions`]: that
//! file, or a row in PostgreSQL), plus the indexes they uploaded (received in
//! `tmp/<session>/`, then kept by the data backend: there too on the local store, as
//! `sessions/<session>/<disk>.index` objects on S3). A session idle for more than [`SESSION_IDLE_LIMIT`] is dead: it no longer
//! holds back garbage collection, and GC deletes its files.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_format::chunk::check_chunk_size;
use ferry_format::index::Entry;
use ferry_format::names::{check_name, NameKind};
use ferry_format::{ChunkId, DiskIndex};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, StoreError};
use crate::fsx;
use crate::index_file::scan_index;
use crate::meta::Collection;
use crate::Store;

/// A session without activity for this long is dead.
pub const SESSION_IDLE_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// How far back from its last activity a live session protects the chunks it touched from GC
/// (see [`SessionRecord::gc_pin`]).
pub const SESSION_PIN_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// `last_activity` is rewritten at most this often.
const ACTIVITY_GRANULARITY: u64 = 60;

/// `sessions/<session>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRecord {
    pub machine: String,
    pub chunk_size: u32,
    /// Unix seconds.
    pub started: u64,
    /// Unix seconds of the last request that named the session.
    pub last_activity: u64,
    /// Public id of the token that opened the session: only it may use the session, and the
    /// snapshot records it (`origin.json`). Absent in sessions opened before tokens had ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The snapshot this session's commit makes: recorded just before the commit's rename and
    /// kept after it, so a commit retried because its reply was lost (the appliance restarted)
    /// answers with the same snapshot instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<String>,
}

impl SessionRecord {
    pub fn is_live(&self, now: SystemTime) -> bool {
        unix_secs(now).saturating_sub(self.last_activity) <= SESSION_IDLE_LIMIT.as_secs()
    }

    /// The oldest touch GC must respect for this session: its start, moved up to
    /// [`SESSION_PIN_WINDOW`] before its last activity. A session that keeps sending a request a
    /// day stays live, but chunks it touched more than a window before its latest request are no
    /// longer protected (its index upload and commit re-check them; docs/store.md).
    pub fn gc_pin(&self) -> SystemTime {
        let pin = self.started.max(
            self.last_activity
                .saturating_sub(SESSION_PIN_WINDOW.as_secs()),
        );
        UNIX_EPOCH + Duration::from_secs(pin)
    }
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// The session's record file on a store whose records are local.
    pub fn session_path(&self, session: &str) -> PathBuf {
        self.sessions_dir().join(format!("{session}.json"))
    }

    pub fn session_tmp_dir(&self, session: &str) -> PathBuf {
        self.tmp_dir().join(session)
    }

    /// Open a session; it is on disk (and so holds back GC) before this returns.
    pub fn start_session(&self, machine: &str, chunk_size: u32, now: SystemTime) -> Result<String> {
        self.start_session_for(machine, chunk_size, None, now)
    }

    /// Open a session bound to the token with public id `token`.
    pub fn start_session_for(
        &self,
        machine: &str,
        chunk_size: u32,
        token: Option<&str>,
        now: SystemTime,
    ) -> Result<String> {
        check_name(NameKind::Machine, machine)?;
        check_chunk_size(chunk_size)?;
        let session = fsx::random_hex(16)?;
        let t = unix_secs(now);
        let rec = SessionRecord {
            machine: machine.to_string(),
            chunk_size,
            started: t,
            last_activity: t,
            token: token.map(str::to_string),
            committed: None,
        };
        self.write_session(&session, &rec)?;
        Ok(session)
    }

    pub(crate) fn write_session(&self, session: &str, rec: &SessionRecord) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.records().put(Collection::Sessions, session, &bytes)
    }

    /// Read a live session and record activity on it.
    pub fn session(&self, session: &str, now: SystemTime) -> Result<SessionRecord> {
        check_name(NameKind::Session, session)?;
        let gone = || {
            StoreError::NotFound(format!(
                "backup session {session} does not exist or has expired: start a new backup"
            ))
        };
        let Some(bytes) = self.records().get(Collection::Sessions, session)? else {
            return Err(gone());
        };
        let mut rec: SessionRecord = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Invalid(format!("parse session record {session}: {e}")))?;
        if !rec.is_live(now) {
            return Err(gone());
        }
        let t = unix_secs(now);
        if t.saturating_sub(rec.last_activity) >= ACTIVITY_GRANULARITY {
            rec.last_activity = t;
            self.write_session(session, &rec)?;
        }
        Ok(rec)
    }

    /// Every session record, live or dead, with its id. Unreadable ones are skipped with a
    /// warning.
    pub fn list_sessions(&self) -> Result<Vec<(String, SessionRecord)>> {
        let mut out = Vec::new();
        for (id, bytes) in self.records().all(Collection::Sessions)? {
            if check_name(NameKind::Session, &id).is_err() {
                continue;
            }
            match serde_json::from_slice(&bytes) {
                Ok(rec) => out.push((id, rec)),
                Err(e) => tracing::warn!("skipping unreadable session record {id}: {e}"),
            }
        }
        Ok(out)
    }

    /// Abandon a session: nothing it uploaded becomes visible (its chunks stay until GC).
    pub fn abandon_session(&self, session: &str) -> Result<()> {
        check_name(NameKind::Session, session)?;
        self.data().remove_session_data(session)?;
        if self.records().delete(Collection::Sessions, session)? {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!(
                "backup session {session} does not exist"
            )))
        }
    }

    /// Store a disk's index held in memory (see [`Store::begin_index_upload`] to stream one).
    pub fn put_index(
        &self,
        session: &str,
        disk: &str,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<()> {
        let mut upload = self.begin_index_upload(session, disk, now)?;
        upload.write(bytes)?;
        self.finish_index_upload(upload, now)
    }

    /// Start receiving a disk's index for a live session: a temporary file in `tmp/<session>/`
    /// that [`IndexUpload::write`] appends to, at most [`MAX_INDEX_BYTES`]. The index is checked
    /// from the file by [`Store::finish_index_upload`] (so no upload is held in memory while it
    /// arrives), then handed to the data backend.
    pub fn begin_index_upload(
        &self,
        session: &str,
        disk: &str,
        now: SystemTime,
    ) -> Result<IndexUpload> {
        check_name(NameKind::Disk, disk)?;
        self.session(session, now)?;
        // The session file exists before its tmp directory (GC relies on that order).
        let dir = self.session_tmp_dir(session);
        fsx::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{}{}", fsx::TMP_PREFIX, fsx::random_hex(8)?));
        let file = fsx::create_private(&tmp, 0o600)?;
        Ok(IndexUpload {
            session: session.to_string(),
            disk: disk.to_string(),
            tmp,
            file: Some(file),
            written: 0,
            done: false,
        })
    }

    /// Check a received index from its file (header, length, chunk size = the session's, every
    /// data chunk present: those are touched) and move it into place, durably. Missing chunks
    /// give [`StoreError::MissingChunks`] (at most [`MAX_MISSING_REPORTED`] of them) and store
    /// nothing.
    pub fn finish_index_upload(&self, mut upload: IndexUpload, now: SystemTime) -> Result<()> {
        let rec = self.session(&upload.session, now)?;
        let Some(mut file) = upload.file.take() else {
            return Err(StoreError::Invalid(
                "the index upload was already finished".into(),
            ));
        };
        file.sync_all().map_err(io_err("fsync", &upload.tmp))?;
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("rewind", &upload.tmp))?;
        let disk = &upload.disk;
        let mut missing = Vec::new();
        let what = format!("the index of disk {disk}");
        let scan = scan_index(file, upload.written, &upload.tmp, &what, |ids| {
            // Touched a block at a time: the shared chunk lock is never held for long.
            let gone = self.touch_chunks(ids)?;
            let room = MAX_MISSING_REPORTED - missing.len();
            missing.extend(gone.into_iter().take(room));
            Ok(())
        })?;
        if scan.header.chunk_size != rec.chunk_size {
            return Err(StoreError::Invalid(format!(
                "the index of disk {disk} uses chunk size {} but the session was started with {}",
                scan.header.chunk_size, rec.chunk_size
            )));
        }
        if !missing.is_empty() {
            tracing::warn!(
                "session {}: the index of disk {disk} references {} chunks the store lacks                  (first {}): asked for them",
                upload.session,
                missing.len(),
                missing[0]
            );
            return Err(StoreError::MissingChunks(missing));
        }
        self.data()
            .put_session_index(&upload.session, disk, &upload.tmp)?;
        upload.done = true;
        Ok(())
    }
}

/// Most bytes an index may have: 512 MiB is 16 M entries (1 TiB at 64 KiB chunks, 64 TiB at
/// 4 MiB).
pub const MAX_INDEX_BYTES: u64 = 512 << 20;
/// Most missing chunk ids one 409 answer names; the agent uploads them and tries again.
pub const MAX_MISSING_REPORTED: usize = 1 << 20;

/// An index being received into `tmp/<session>/.tmp-…`; removed unless finished.
#[derive(Debug)]
pub struct IndexUpload {
    session: String,
    disk: String,
    tmp: PathBuf,
    file: Option<File>,
    written: u64,
    done: bool,
}

impl IndexUpload {
    /// Append received bytes; more than [`MAX_INDEX_BYTES`] in all is refused.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let total = self.written + data.len() as u64;
        if total > MAX_INDEX_BYTES {
            return Err(StoreError::TooLarge(format!(
                "the index of disk {} is larger than {MAX_INDEX_BYTES} bytes: no disk needs that many \
                 entries; check the agent",
                self.disk
            )));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(StoreError::Invalid(
                "the index upload was already finished".into(),
            ));
        };
        file.write_all(data).map_err(io_err("write", &self.tmp))?;
        self.written = total;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }
}

impl Drop for IndexUpload {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The distinct data chunk ids of an index, in first-use order.
pub fn unique_data_chunks(index: &DiskIndex) -> Vec<ChunkId> {
    let mut seen = HashSet::new();
    index
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Data(id) if seen.insert(*id) => Some(*id),
            _ => None,
        })
        .collect()
}
