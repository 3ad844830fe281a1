//! The store's own directory (docs/store.md, "Layout"): `chunks/abcd/<hex>` files whose mtime
//! is GC's mark, `tmp/<session>/<disk>.index`, `snapshots/<id>/` made visible by renaming a
//! complete directory, `trash/` and `damaged/`. The locks are flocks: `chunks/.lock`, `gc.lock`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ferry_format::names::{check_name, NameKind};
use ferry_format::ChunkId;

use super::{
    chunk_rel, is_chunk_name, is_prefix_name, Blob, ChunkEntry, DataBackend, DataLock, EntryKind,
    LockMode, Published, SnapshotObjects,
};
use crate::chunks::ChunkUsage;
use crate::error::{io_err, Result};
use crate::fsx::{self, FileLock, TMP_PREFIX};
use crate::prune::ORIGIN_FILE;
use crate::snapshots::{MANIFEST_FILE, SIGNATURE_FILE};
use crate::verify::DAMAGED_DIR;

#[derive(Clone, Debug)]
pub struct LocalData {
    root: PathBuf,
}

impl LocalData {
    pub fn new(root: &Path) -> LocalData {
        LocalData {
            root: root.to_path_buf(),
        }
    }

    fn chunks_dir(&self) -> PathBuf {
        self.root.join("chunks")
    }

    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.chunks_dir().join(chunk_rel(id))
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    fn session_dir(&self, session: &str) -> PathBuf {
        self.root.join("tmp").join(session)
    }
}

impl DataBackend for LocalData {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn lock_chunks(&self, mode: LockMode) -> Result<DataLock> {
        FileLock::acquire(&self.chunks_dir().join(".lock"), mode).map(DataLock::new)
    }

    fn try_lock_gc(&self) -> Result<Option<DataLock>> {
        Ok(
            FileLock::try_acquire(&self.root.join("gc.lock"), LockMode::Exclusive)?
                .map(DataLock::new),
        )
    }

    fn write_chunk(&self, id: &ChunkId, frame: &[u8]) -> Result<()> {
        let path = self.chunk_path(id);
        fsx::create_dir_all(&self.chunks_dir().join(id.store_prefix()))?;
        // A rename over a damaged copy: readers see the old file or the new one. Durable at
        // the commit's syncfs, before any snapshot refers to it.
        fsx::write_atomic_nodirsync(&path, frame, 0o600)
    }

    fn read_chunk(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        read_if_present(&self.chunk_path(id))
    }

    fn open_chunk(&self, id: &ChunkId) -> Result<Option<Blob>> {
        open_with_len(&self.chunk_path(id))
    }

    fn touch_chunk(&self, id: &ChunkId) -> Result<bool> {
        fsx::touch(&self.chunk_path(id))
    }

    fn mark_chunk(&self, id: &ChunkId) -> Result<bool> {
        fsx::touch(&self.chunk_path(id))
    }

    fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.chunk_path(id).is_file())
    }

    fn chunk_prefixes(&self) -> Result<Vec<String>> {
        let chunks = self.chunks_dir();
        let mut out: Vec<String> = list_names(&chunks)?
            .into_iter()
            .filter(|p| is_prefix_name(p) && chunks.join(p).is_dir())
            .collect();
        out.sort();
        Ok(out)
    }

    fn list_chunk_entries(&self, prefix: &str) -> Result<Vec<ChunkEntry>> {
        let chunks = self.chunks_dir();
        let mut out = Vec::new();
        for name in list_names(&chunks.join(prefix))? {
            if let Some(e) = entry_of(&chunks, &format!("{prefix}/{name}"))? {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn recheck_entry(&self, entry: &ChunkEntry) -> Result<Option<ChunkEntry>> {
        entry_of(&self.chunks_dir(), &entry.name)
    }

    fn delete_entry(&self, entry: &ChunkEntry) -> Result<bool> {
        let path = self.chunks_dir().join(&entry.name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    fn stored_chunks(&self, prefix: &str) -> Result<Vec<ChunkId>> {
        let mut ids: Vec<ChunkId> = list_names(&self.chunks_dir().join(prefix))?
            .into_iter()
            .filter(|n| n.starts_with(prefix) && !n.starts_with(TMP_PREFIX))
            .filter_map(|n| n.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn quarantine_chunk(&self, id: &ChunkId) -> Result<String> {
        let path = self.chunk_path(id);
        let damaged = self.root.join(DAMAGED_DIR);
        fsx::create_dir_all(&damaged)?;
        let moved_to = damaged.join(id.to_hex());
        fs::rename(&path, &moved_to).map_err(io_err("move to damaged/", &path))?;
        if let Some(dir) = path.parent() {
            fsx::fsync_dir(dir)?;
        }
        fsx::fsync_dir(&damaged)?;
        Ok(moved_to.display().to_string())
    }

    fn is_quarantined(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.root.join(DAMAGED_DIR).join(id.to_hex()).is_file())
    }

    fn read_quarantined(&self, id: &ChunkId) -> Result<Option<Vec<u8>>> {
        read_if_present(&self.root.join(DAMAGED_DIR).join(id.to_hex()))
    }

    fn quarantine_location(&self) -> String {
        self.root.join(DAMAGED_DIR).display().to_string()
    }

    fn chunk_usage(&self) -> Result<ChunkUsage> {
        let mut usage = ChunkUsage::default();
        let mut stack = vec![self.chunks_dir()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &dir)(e)),
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    stack.push(entry.path());
                } else if meta.is_file() {
                    usage.chunks += 1;
                    usage.bytes += meta.len();
                }
            }
        }
        Ok(usage)
    }

    fn put_session_index(&self, session: &str, disk: &str, staged: &Path) -> Result<()> {
        let dest = self.session_dir(session).join(format!("{disk}.index"));
        fsx::rename_durable(staged, &dest)
    }

    fn open_session_index(&self, session: &str, disk: &str) -> Result<Option<Blob>> {
        open_with_len(&self.session_dir(session).join(format!("{disk}.index")))
    }

    fn sessions_with_data(&self) -> Result<Vec<String>> {
        list_names(&self.root.join("tmp"))
    }

    fn session_has_data(&self, session: &str) -> Result<bool> {
        Ok(self.session_dir(session).exists())
    }

    fn remove_session_data(&self, session: &str) -> Result<()> {
        let dir = self.session_dir(session);
        fsx::remove_tree(&dir)
    }

    fn publish_snapshot(
        &self,
        session: &str,
        id: &str,
        objects: SnapshotObjects<'_>,
        before_visible: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Published> {
        let tmp = self.session_dir(session);
        let dest = self.snapshots_dir().join(id);
        if dest.exists() {
            return Ok(Published::IdTaken);
        }
        remove_strays(&tmp, objects.disks)?;
        if let Some(origin) = objects.origin {
            fsx::write_atomic(&tmp.join(ORIGIN_FILE), origin, 0o644)?;
        }
        fsx::write_atomic(&tmp.join(MANIFEST_FILE), objects.manifest, 0o644)?;
        fsx::write_atomic(&tmp.join(SIGNATURE_FILE), objects.signature, 0o644)?;
        // Chunks, indexes and manifest durable before the snapshot becomes visible.
        fsx::sync_fs(&tmp)?;
        before_visible()?;
        match fs::rename(&tmp, &dest) {
            Ok(()) => {
                fsx::fsync_dir(&self.snapshots_dir())?;
                Ok(Published::Visible)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                Ok(Published::IdTaken)
            }
            Err(e) => Err(io_err("rename snapshot into place", &dest)(e)),
        }
    }

    fn snapshot_ids(&self) -> Result<Vec<String>> {
        let dir = self.snapshots_dir();
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if check_name(NameKind::Snapshot, &name).is_ok() && entry.path().is_dir() {
                ids.push(name);
            }
        }
        Ok(ids)
    }

    fn snapshot_exists(&self, id: &str) -> Result<bool> {
        Ok(self.snapshots_dir().join(id).is_dir())
    }

    fn read_snapshot_object(&self, id: &str, name: &str) -> Result<Option<Vec<u8>>> {
        read_if_present(&self.snapshots_dir().join(id).join(name))
    }

    fn open_snapshot_object(&self, id: &str, name: &str) -> Result<Option<Blob>> {
        open_with_len(&self.snapshots_dir().join(id).join(name))
    }

    fn delete_snapshots(&self, ids: &[String]) -> Result<()> {
        fsx::create_dir_all(&self.trash_dir())?;
        for id in ids {
            let from = self.snapshots_dir().join(id);
            let to = self
                .trash_dir()
                .join(format!("{id}.{}", fsx::random_hex(4)?));
            fs::rename(&from, &to).map_err(io_err("move to trash", &from))?;
        }
        fsx::fsync_dir(&self.snapshots_dir())?;
        self.remove_leftovers(SystemTime::now())
    }

    /// Empties `trash/`: every entry there is a whole snapshot already invisible.
    fn remove_leftovers(&self, _stale_before: SystemTime) -> Result<()> {
        let dir = self.trash_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let path = entry.map_err(io_err("list", &dir))?.path();
            let res = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            res.map_err(io_err("remove", &path))?;
        }
        Ok(())
    }
}

/// The chunk or temporary file `rel` (`abcd/<name>`, relative to `chunks/`) as GC sees it;
/// `None` for other names and for files that are gone.
fn entry_of(chunks: &Path, rel: &str) -> Result<Option<ChunkEntry>> {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let (chunk, kind) = if is_chunk_name(file) {
        (file.parse().ok(), EntryKind::Chunk)
    } else if file.starts_with(TMP_PREFIX) {
        (None, EntryKind::Temp)
    } else {
        return Ok(None);
    };
    let path = chunks.join(rel);
    match fs::symlink_metadata(&path) {
        Ok(m) => Ok(Some(ChunkEntry {
            chunk,
            name: rel.to_string(),
            marked: m.modified().map_err(io_err("stat", &path))?,
            len: m.len(),
            kind,
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("stat", &path)(e)),
    }
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// The file open with its length taken from the open file, `None` when absent.
pub(crate) fn open_with_len(path: &Path) -> Result<Option<Blob>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let meta = file.metadata().map_err(io_err("stat", path))?;
    if !meta.is_file() {
        // A directory opens fine and fails only at the first read, mid-body: say so up front.
        return Err(io_err("read", path)(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file: the store is damaged here; run `appliance verify`",
        )));
    }
    Ok(Some(Blob::File {
        file,
        len: meta.len(),
    }))
}

pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    entries
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(io_err("list", dir))
        })
        .collect()
}

/// Remove files of a session's directory that the commit does not name (indexes of disks
/// left out, temporary files of interrupted writes).
fn remove_strays(tmp: &Path, disks: &[String]) -> Result<()> {
    for entry in fs::read_dir(tmp).map_err(io_err("list", tmp))? {
        let entry = entry.map_err(io_err("list", tmp))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = disks.iter().any(|d| name == format!("{d}.index"));
        if !wanted {
            let p = entry.path();
            let res = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            res.map_err(io_err("remove", &p))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_where_a_file_belongs_is_an_error_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_with_len(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").unwrap();
        assert_eq!(open_with_len(&f).unwrap().unwrap().len(), 3);
        assert!(open_with_len(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn gc_entries_are_chunks_and_temporary_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = LocalData::new(dir.path());
        let id = ChunkId::of(b"x");
        let prefix = id.store_prefix();
        data.write_chunk(&id, b"frame").unwrap();
        let pdir = dir.path().join("chunks").join(&prefix);
        fs::write(pdir.join(".tmp-0011"), b"t").unwrap();
        fs::write(pdir.join("README"), b"not ours").unwrap();
        let mut entries = data.list_chunk_entries(&prefix).unwrap();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let kinds: Vec<_> = entries.iter().map(|e| (e.kind, e.len)).collect();
        assert_eq!(kinds, [(EntryKind::Temp, 1), (EntryKind::Chunk, 5)]);
        for e in &entries {
            assert_eq!(data.recheck_entry(e).unwrap().as_ref(), Some(e));
            assert!(data.delete_entry(e).unwrap());
            assert_eq!(data.recheck_entry(e).unwrap(), None);
            assert!(!data.delete_entry(e).unwrap());
        }
        assert!(pdir.join("README").exists());
    }
}
