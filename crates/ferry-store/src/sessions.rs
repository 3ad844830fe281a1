//! Open backup sessions: `sessions/<session>.json`, plus the indexes they uploaded in
//! `tmp/<session>/`. A session idle for more than [`SESSION_IDLE_LIMIT`] is dead: it no longer
//! holds back garbage collection, and GC deletes its files.

use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_format::chunk::check_chunk_size;
use ferry_format::index::Entry;
use ferry_format::names::{check_name, NameKind};
use ferry_format::{ChunkId, DiskIndex};
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Result, StoreError};
use crate::fsx;
use crate::Store;

/// A session without activity for this long is dead.
pub const SESSION_IDLE_LIMIT: Duration = Duration::from_secs(24 * 3600);
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
}

impl SessionRecord {
    pub fn is_live(&self, now: SystemTime) -> bool {
        unix_secs(now).saturating_sub(self.last_activity) <= SESSION_IDLE_LIMIT.as_secs()
    }
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
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
        };
        self.write_session(&session, &rec)?;
        Ok(session)
    }

    fn write_session(&self, session: &str, rec: &SessionRecord) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(rec).map_err(|e| StoreError::Invalid(e.to_string()))?;
        fsx::write_atomic(&self.session_path(session), &bytes, 0o644)
    }

    /// Read a live session and record activity on it.
    pub fn session(&self, session: &str, now: SystemTime) -> Result<SessionRecord> {
        check_name(NameKind::Session, session)?;
        let gone = || {
            StoreError::NotFound(format!(
                "backup session {session} does not exist or has expired: start a new backup"
            ))
        };
        let path = self.session_path(session);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let mut rec: SessionRecord = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Invalid(format!("parse {}: {e}", path.display())))?;
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

    /// Every session file, live or dead, with its id. Unreadable ones are skipped with a warning.
    pub fn list_sessions(&self) -> Result<Vec<(String, SessionRecord)>> {
        let dir = self.sessions_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if check_name(NameKind::Session, id).is_err() {
                continue;
            }
            match fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(rec) => out.push((id.to_string(), rec)),
                None => tracing::warn!(
                    "skipping unreadable session file {}",
                    entry.path().display()
                ),
            }
        }
        Ok(out)
    }

    /// Abandon a session: nothing it uploaded becomes visible (its chunks stay until GC).
    pub fn abandon_session(&self, session: &str) -> Result<()> {
        check_name(NameKind::Session, session)?;
        let tmp = self.session_tmp_dir(session);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        }
        let path = self.session_path(session);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound(
                format!("backup session {session} does not exist"),
            )),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Store a disk's index for a session after checking it and that every data chunk it names is
    /// present (those are touched). Missing chunks give [`StoreError::MissingChunks`].
    pub fn put_index(
        &self,
        session: &str,
        disk: &str,
        bytes: &[u8],
        now: SystemTime,
    ) -> Result<()> {
        check_name(NameKind::Disk, disk)?;
        let rec = self.session(session, now)?;
        let index = DiskIndex::decode(bytes)?;
        if index.chunk_size != rec.chunk_size {
            return Err(StoreError::Invalid(format!(
                "the index of disk {disk} uses chunk size {} but the session was started with {}",
                index.chunk_size, rec.chunk_size
            )));
        }
        let missing = self.touch_chunks(&unique_data_chunks(&index))?;
        if !missing.is_empty() {
            return Err(StoreError::MissingChunks(missing));
        }
        let dir = self.session_tmp_dir(session);
        fsx::create_dir_all(&dir)?;
        fsx::write_atomic(&dir.join(format!("{disk}.index")), bytes, 0o644)
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
