//! Where the store's data lives: chunk bytes, the indexes an open session uploaded, and the
//! objects of committed snapshots (manifest.json, manifest.sig, origin.json, `<disk>.index`).
//! Two backends implement [`DataBackend`]: [`local::LocalData`], the store's own directory
//! (the layout of docs/store.md), and [`s3::S3Data`], an S3-compatible bucket.
//!
//! The checks stay above the trait and are shared by both backends: canonical frames and chunk
//! ids ([`crate::chunks`]), index scans, signing, the 409 missing-chunk answers, GC's cutoff
//! rule. A backend only stores, lists, marks and deletes, and keeps these promises:
//! - a chunk write is atomic (a reader sees the old bytes or the new ones) and marks the chunk
//!   in use now; [`DataBackend::touch_chunk`] marks it, [`ChunkEntry::marked`] reads the mark;
//! - a snapshot is visible ([`DataBackend::snapshot_ids`], reads) only once all of its objects
//!   are durable, and it disappears whole;
//! - chunk writes, touches and GC's deletions are ordered by the chunk lock
//!   ([`DataBackend::lock_chunks`]): shared for the server, exclusive for GC's unlink and
//!   verify's quarantine (the rule of [`crate::gc`]).
//!
//! Metadata (sessions' records, tokens, jobs, ...) is not here ([`crate::meta`]). An S3
//! store's chunk catalogue and its locks are [`catalogue`]'s: shared by several nodes when the
//! records are on PostgreSQL.

pub mod catalogue;
pub mod local;
pub mod s3;

use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::time::SystemTime;

use ferry_format::ChunkId;

use crate::chunks::ChunkUsage;
use crate::error::Result;
pub use crate::fsx::LockMode;

/// Bytes a reader streams: an open file (local store: the server sends it a block at a time)
/// or bytes already fetched (S3).
#[derive(Debug)]
pub enum Blob {
    /// An open file and its length when opened (a rename over it does not change what is sent).
    File {
        file: File,
        len: u64,
    },
    Bytes(Vec<u8>),
}

impl Blob {
    pub fn len(&self) -> u64 {
        match self {
            Blob::File { len, .. } => *len,
            Blob::Bytes(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read `buf.len()` bytes at `offset` (positional: the blob is shared by readers).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        match self {
            Blob::File { file, .. } => file.read_exact_at(buf, offset),
            Blob::Bytes(b) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let src = start
                    .checked_add(buf.len())
                    .and_then(|end| b.get(start..end))
                    .ok_or(std::io::ErrorKind::UnexpectedEof)?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// A reader of the bytes (the file from its current offset).
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        match self {
            Blob::File { file, .. } => Box::new(file),
            Blob::Bytes(b) => Box::new(Cursor::new(b)),
        }
    }
}

/// A lock of the store's data, released on drop: a file lock in the store's directory, or an
/// advisory lock in PostgreSQL when several nodes share one bucket. Released on the thread
/// that took it.
pub struct DataLock {
    _held: Box<dyn std::any::Any>,
}

impl DataLock {
    pub fn new(held: impl std::any::Any) -> DataLock {
        DataLock {
            _held: Box::new(held),
        }
    }
}

impl fmt::Debug for DataLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataLock")
    }
}

/// What GC found in one chunk prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// The chunk, or `None` for a leftover temporary write.
    pub chunk: Option<ChunkId>,
    /// The backend's name for the entry (a file name, an object key).
    pub name: String,
    /// Last use (GC's mark): a file's mtime, a marker's mtime, or an unmarked object's
    /// LastModified.
    pub marked: SystemTime,
    /// Stored bytes.
    pub len: u64,
    pub kind: EntryKind,
}

/// How a backend keeps an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A chunk whose mark the backend keeps with it (a local file; an object with its marker).
    Chunk,
    /// An S3 chunk object without a marker (a crash between its PUT and its marker): its mark
    /// is its LastModified.
    Unmarked,
    /// A temporary file of an interrupted write.
    Temp,
}

/// The objects a commit publishes, all but the indexes (those the session uploaded).
#[derive(Clone, Copy, Debug)]
pub struct SnapshotObjects<'a> {
    /// The disks whose `<disk>.index` the session uploaded and the snapshot keeps.
    pub disks: &'a [String],
    pub manifest: &'a [u8],
    pub signature: &'a [u8],
    /// `origin.json`, when the session's token is known.
    pub origin: Option<&'a [u8]>,
}

/// What [`DataBackend::publish_snapshot`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    Visible,
    /// Another snapshot has this id: try the next one.
    IdTaken,
}

/// The data half of the store (module doc). Synchronous: the server calls it from blocking
/// threads; the S3 backend blocks on its own runtime.
pub trait DataBackend: Send + Sync + fmt::Debug {
    /// Where the data lives, for messages: a directory, or `s3://bucket/prefix`.
    fn location(&self) -> String;
    /// The chunk catalogue, where the chunks are not files (S3).
    fn catalogue(&self) -> Option<&dyn catalogue::Catalogue> {
        None
    }

    /// The chunk lock (module doc).
    fn lock_chunks(&self, mode: LockMode) -> Result<DataLock>;
    /// One GC at a time: `None` when another holds it.
    fn try_lock_gc(&self) -> Result<Option<DataLock>>;

    /// Store a chunk (new, or replacing a damaged copy) atomically, marked now. Called under
    /// the shared chunk lock, after the frame was checked.
    fn write_chunk(&self, id: &ChunkId, frame: &[u8]) -> Result<()>;
    /// The stored frame, `None` when absent.
    fn read_chunk(&self, id: &ChunkId) -> Result<Option<Vec<u8>>>;
    /// The stored frame to stream, `None` when absent.
    fn open_chunk(&self, id: &ChunkId) -> Result<Option<Blob>>;
    /// Mark a chunk in use now; `false` when it is not stored.
    fn touch_chunk(&self, id: &ChunkId) -> Result<bool>;
    /// Mark these in use now (one round trip where the backend can); the ones not stored, in
    /// the order given.
    fn touch_chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let mut missing = Vec::new();
        for id in ids {
            if !self.touch_chunk(id)? {
                missing.push(*id);
            }
        }
        Ok(missing)
    }
    /// GC's mark of a chunk a snapshot references: [`DataBackend::touch_chunk`], and where the
    /// mark can be lost apart from the data (S3's local markers), recreated from the data.
    fn mark_chunk(&self, id: &ChunkId) -> Result<bool>;
    fn has_chunk(&self, id: &ChunkId) -> Result<bool>;
    /// The 4-hex-digit prefixes that may hold chunks, sorted.
    fn chunk_prefixes(&self) -> Result<Vec<String>>;
    /// Every chunk and temporary entry of a prefix, for GC.
    fn list_chunk_entries(&self, prefix: &str) -> Result<Vec<ChunkEntry>>;
    /// The entry as it is now (GC re-reads it under the exclusive lock); `None` when gone.
    fn recheck_entry(&self, entry: &ChunkEntry) -> Result<Option<ChunkEntry>>;
    /// Delete an entry (under the exclusive chunk lock); `false` when it was gone already.
    fn delete_entry(&self, entry: &ChunkEntry) -> Result<bool>;
    /// The stored chunk ids of a prefix, for verify (the data itself, not marks).
    fn stored_chunks(&self, prefix: &str) -> Result<Vec<ChunkId>>;
    /// Move a bad chunk out of the way (under the exclusive chunk lock), so it is missing to
    /// known-chunks; returns where it went.
    fn quarantine_chunk(&self, id: &ChunkId) -> Result<String>;
    /// Whether verify quarantined this chunk.
    fn is_quarantined(&self, id: &ChunkId) -> Result<bool>;
    /// The bytes of a quarantined chunk (kept for inspection), `None` when there are none.
    fn read_quarantined(&self, id: &ChunkId) -> Result<Option<Vec<u8>>>;
    /// Where quarantined chunks go, for messages.
    fn quarantine_location(&self) -> String;
    /// Chunks and their stored bytes (a figure for monitoring).
    fn chunk_usage(&self) -> Result<ChunkUsage>;

    /// Keep the index of `disk` a session uploaded: `staged` is a complete, fsynced file in the
    /// session's staging directory ([`crate::Store::session_tmp_dir`]), already checked.
    fn put_session_index(&self, session: &str, disk: &str, staged: &std::path::Path) -> Result<()>;
    /// A session's uploaded index, `None` when it uploaded none for `disk`.
    fn open_session_index(&self, session: &str, disk: &str) -> Result<Option<Blob>>;
    /// Sessions that have uploaded (or staged) anything.
    fn sessions_with_data(&self) -> Result<Vec<String>>;
    fn session_has_data(&self, session: &str) -> Result<bool>;
    /// Remove everything a session uploaded.
    fn remove_session_data(&self, session: &str) -> Result<()>;

    /// Make snapshot `id` visible with the session's indexes of `objects.disks` and the other
    /// objects, durably. `before_visible` runs once everything but the visibility step is
    /// durable (the commit records the id in its session there). The session's data is gone
    /// when this returns [`Published::Visible`].
    fn publish_snapshot(
        &self,
        session: &str,
        id: &str,
        objects: SnapshotObjects<'_>,
        before_visible: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Published>;
    /// Visible snapshots (ids that pass `check_name`), unsorted.
    fn snapshot_ids(&self) -> Result<Vec<String>>;
    fn snapshot_exists(&self, id: &str) -> Result<bool>;
    /// An object of a visible snapshot (`manifest.json`, `<disk>.index`, ...), `None` when the
    /// snapshot or the object is absent.
    fn read_snapshot_object(&self, id: &str, name: &str) -> Result<Option<Vec<u8>>>;
    /// The same, to stream.
    fn open_snapshot_object(&self, id: &str, name: &str) -> Result<Option<Blob>>;
    /// Make snapshots invisible at once (each whole), then delete their objects.
    fn delete_snapshots(&self, ids: &[String]) -> Result<()>;
    /// Remove what an interrupted deletion (or an abandoned publication older than
    /// `stale_before`) left behind.
    fn remove_leftovers(&self, stale_before: SystemTime) -> Result<()>;
}

/// The local directory or an S3 bucket, from config.json. An S3 store's chunk catalogue is
/// the records' when they are shared ([`crate::meta::Records::chunk_catalogue`]: PostgreSQL),
/// else local to this node.
pub fn open_backend(
    root: &std::path::Path,
    storage: &crate::config::Storage,
    records: &dyn crate::meta::Records,
) -> Result<std::sync::Arc<dyn DataBackend>> {
    Ok(match storage {
        crate::config::Storage::Local => std::sync::Arc::new(local::LocalData::new(root)),
        crate::config::Storage::S3(cfg) => {
            let catalogue = match records.chunk_catalogue() {
                Some(shared) => shared,
                None => std::sync::Arc::new(catalogue::LocalCatalogue::new(root)),
            };
            std::sync::Arc::new(s3::S3Data::open(root, cfg, catalogue)?)
        }
    })
}

/// `chunks/abcd/<hex>` without the leading directory.
pub(crate) fn chunk_rel(id: &ChunkId) -> PathBuf {
    PathBuf::from(id.store_prefix()).join(id.to_hex())
}

/// A chunk file name: 64 lowercase hex digits.
pub(crate) fn is_chunk_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A chunk prefix directory name: 4 lowercase hex digits.
pub(crate) fn is_prefix_name(name: &str) -> bool {
    name.len() == 4
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
