//! The chunk catalogue of a store whose chunks are objects in a bucket ([`super::s3`]): which
//! chunks are stored, their sizes and GC's marks, and the locks that order chunk writes against
//! GC. Known-chunk queries and marks must not cost a request per chunk, so they are answered
//! here, not by the bucket.
//!
//! Two implementations:
//! - [`LocalCatalogue`]: sparse marker files in the store's directory (`chunk-marks/abcd/<hex>`:
//!   length = stored size, mtime = mark) and flocks. One node owns the bucket prefix.
//! - `PgCatalogue` ([`crate::meta::PgRecords::chunk_catalogue`]): a table in the store's
//!   PostgreSQL schema and advisory locks, shared by every node of the store, so a chunk one node
//!   stored is known to the others and GC on any node sees every node's marks.
//!
//! The bucket stays the truth for the bytes: an object without an entry (a crash between its PUT
//! and the entry) is collected by GC once its LastModified is older than the cutoff, and an entry
//! lost apart from its object is made again by GC's mark from a HEAD of the object.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ferry_format::ChunkId;

use super::local::list_names;
use super::{is_prefix_name, DataLock, LockMode};
use crate::chunks::ChunkUsage;
use crate::error::{io_err, Result};
use crate::fsx::{self, FileLock};

/// The local catalogue's directory, under the store's directory.
pub const MARKS_DIR: &str = "chunk-marks";

/// One catalogued chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatalogueEntry {
    pub id: ChunkId,
    /// Stored bytes (the frame's length).
    pub len: u64,
    /// GC's mark: the last time the chunk was written or found in use.
    pub marked: SystemTime,
}

/// See the module doc. Every call is synchronous; the server makes them on blocking threads.
pub trait Catalogue: Send + Sync + fmt::Debug {
    /// Where it lives, for messages.
    fn describe(&self) -> String;
    /// The chunk lock ([`crate::gc`]): shared for writes and touches, exclusive for GC's
    /// deletions and verify's quarantine. Held on the thread that took it.
    fn lock_chunks(&self, mode: LockMode) -> Result<DataLock>;
    /// One GC at a time over the whole store: `None` when another holds it.
    fn try_lock_gc(&self) -> Result<Option<DataLock>>;
    /// The publication of snapshot `id`, one at a time (two commits of one machine in one
    /// second choose the same id, possibly on two nodes).
    fn lock_publish(&self, id: &str) -> Result<DataLock>;
    /// Record a stored chunk of `len` bytes, marked now (a new one or a rewrite).
    fn insert(&self, id: &ChunkId, len: u64) -> Result<()>;
    /// Set a chunk's mark to `when`; `false` when it is not catalogued.
    fn mark_at(&self, id: &ChunkId, when: SystemTime) -> Result<bool>;
    /// Mark a chunk now; `false` when it is not catalogued.
    fn touch(&self, id: &ChunkId) -> Result<bool> {
        self.mark_at(id, SystemTime::now())
    }
    /// Mark these now; the ones not catalogued, in the order given.
    fn touch_many(&self, ids: &[ChunkId]) -> Result<Vec<ChunkId>> {
        let mut missing = Vec::new();
        for id in ids {
            if !self.touch(id)? {
                missing.push(*id);
            }
        }
        Ok(missing)
    }
    fn get(&self, id: &ChunkId) -> Result<Option<CatalogueEntry>>;
    /// Forget a chunk (its object is gone); forgetting an absent one is no error.
    fn remove(&self, id: &ChunkId) -> Result<()>;
    /// The 4-hex-digit prefixes that hold entries, sorted.
    fn prefixes(&self) -> Result<Vec<String>>;
    /// Every entry of a prefix.
    fn list(&self, prefix: &str) -> Result<Vec<CatalogueEntry>>;
    /// Entries and their stored bytes.
    fn usage(&self) -> Result<ChunkUsage>;
}

/// Marker files and flocks in the store's directory (module doc).
#[derive(Debug, Clone)]
pub struct LocalCatalogue {
    root: PathBuf,
}

impl LocalCatalogue {
    pub fn new(root: &Path) -> LocalCatalogue {
        LocalCatalogue {
            root: root.to_path_buf(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(MARKS_DIR)
    }

    /// The marker file of a chunk.
    pub fn marker(&self, id: &ChunkId) -> PathBuf {
        self.dir().join(id.store_prefix()).join(id.to_hex())
    }

    fn entry(&self, id: ChunkId) -> Result<Option<CatalogueEntry>> {
        let path = self.marker(&id);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(CatalogueEntry {
                id,
                len: m.len(),
                marked: m.modified().map_err(io_err("stat", &path))?,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }
}

impl Catalogue for LocalCatalogue {
    fn describe(&self) -> String {
        format!("chunk markers in {}", self.dir().display())
    }

    fn lock_chunks(&self, mode: LockMode) -> Result<DataLock> {
        fsx::create_dir_all(&self.dir())?;
        FileLock::acquire(&self.dir().join(".lock"), mode).map(DataLock::new)
    }

    fn try_lock_gc(&self) -> Result<Option<DataLock>> {
        Ok(
            FileLock::try_acquire(&self.root.join("gc.lock"), LockMode::Exclusive)?
                .map(DataLock::new),
        )
    }

    fn lock_publish(&self, _id: &str) -> Result<DataLock> {
        // One node: one lock for every id is as good, and a publication here is quick.
        FileLock::acquire(&self.root.join("snapshots.lock"), LockMode::Exclusive).map(DataLock::new)
    }

    fn insert(&self, id: &ChunkId, len: u64) -> Result<()> {
        let path = self.marker(id);
        fsx::create_dir_all(&self.dir().join(id.store_prefix()))?;
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("create chunk marker", &path))?;
        // Sparse: the catalogue takes no data blocks, yet its lengths are the stored sizes.
        f.set_len(len).map_err(io_err("size chunk marker", &path))?;
        f.set_modified(SystemTime::now())
            .map_err(io_err("set mtime of", &path))
    }

    fn mark_at(&self, id: &ChunkId, when: SystemTime) -> Result<bool> {
        let path = self.marker(id);
        match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f
                .set_modified(when)
                .map(|()| true)
                .map_err(io_err("set mtime of", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    fn touch(&self, id: &ChunkId) -> Result<bool> {
        fsx::touch(&self.marker(id))
    }

    fn get(&self, id: &ChunkId) -> Result<Option<CatalogueEntry>> {
        self.entry(*id)
    }

    fn remove(&self, id: &ChunkId) -> Result<()> {
        let path = self.marker(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    fn prefixes(&self) -> Result<Vec<String>> {
        let mut all: Vec<String> = list_names(&self.dir())?
            .into_iter()
            .filter(|p| is_prefix_name(p))
            .collect();
        all.sort();
        Ok(all)
    }

    fn list(&self, prefix: &str) -> Result<Vec<CatalogueEntry>> {
        let mut out = Vec::new();
        for name in list_names(&self.dir().join(prefix))? {
            let Ok(id) = name.parse::<ChunkId>() else {
                continue;
            };
            if let Some(e) = self.entry(id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn usage(&self) -> Result<ChunkUsage> {
        let mut usage = ChunkUsage::default();
        for prefix in self.prefixes()? {
            let dir = self.dir().join(&prefix);
            for name in list_names(&dir)? {
                if let Ok(m) = fs::metadata(dir.join(&name)) {
                    usage.chunks += 1;
                    usage.bytes += m.len();
                }
            }
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_catalogue_keeps_sizes_and_marks_in_sparse_markers() {
        let dir = tempfile::tempdir().unwrap();
        let cat = LocalCatalogue::new(dir.path());
        let (a, b) = (ChunkId::of(b"a"), ChunkId::of(b"b"));
        assert!(!cat.touch(&a).unwrap());
        cat.insert(&a, 1000).unwrap();
        let e = cat.get(&a).unwrap().unwrap();
        assert_eq!((e.id, e.len), (a, 1000));
        // Sparse: no data blocks for the 1000 bytes it claims.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(cat.marker(&a)).unwrap().blocks(), 0);
        assert_eq!(cat.touch_many(&[b, a]).unwrap(), vec![b]);
        assert_eq!(cat.prefixes().unwrap(), vec![a.store_prefix()]);
        assert_eq!(cat.list(&a.store_prefix()).unwrap().len(), 1);
        assert_eq!(
            cat.usage().unwrap(),
            ChunkUsage {
                chunks: 1,
                bytes: 1000
            }
        );
        cat.remove(&a).unwrap();
        cat.remove(&a).unwrap();
        assert!(cat.get(&a).unwrap().is_none());
    }
}
