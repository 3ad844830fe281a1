//! Records as files in the store directory: `<collection>/<id>.json`, the log beside it, an
//! flock on `<collection>/.lock`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Collection, RecordLock, Records};
use crate::error::{io_err, Result};
use crate::fsx::{self, FileLock, LockMode, PRIVATE_FILE_MASK};

#[derive(Clone, Debug)]
pub struct LocalRecords {
    root: PathBuf,
}

impl LocalRecords {
    pub fn new(root: &Path) -> LocalRecords {
        LocalRecords {
            root: root.to_path_buf(),
        }
    }

    fn dir(&self, c: Collection) -> PathBuf {
        self.root.join(c.name())
    }

    fn path(&self, c: Collection, id: &str) -> PathBuf {
        self.dir(c).join(format!("{id}.json"))
    }

    /// A job's log keeps the name it has always had (`<id>.events.jsonl`, docs/store.md).
    fn log_path(&self, c: Collection, id: &str) -> PathBuf {
        let suffix = match c {
            Collection::Jobs => "events.jsonl",
            _ => "log.jsonl",
        };
        self.dir(c).join(format!("{id}.{suffix}"))
    }
}

/// `Ok(None)` for a missing file.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// True if the file was there.
fn remove_optional(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

impl Records for LocalRecords {
    fn lock(&self, c: Collection) -> Result<RecordLock> {
        let dir = self.dir(c);
        fsx::create_dir_all(&dir)?;
        let lock = FileLock::acquire(&dir.join(".lock"), LockMode::Exclusive)?;
        Ok(RecordLock {
            _held: Box::new(lock),
        })
    }

    fn get(&self, c: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        read_optional(&self.path(c, id))
    }

    fn put(&self, c: Collection, id: &str, body: &[u8]) -> Result<()> {
        fsx::create_dir_all(&self.dir(c))?;
        fsx::write_atomic(&self.path(c, id), body, PRIVATE_FILE_MASK)
    }

    fn delete(&self, c: Collection, id: &str) -> Result<bool> {
        let had = remove_optional(&self.path(c, id))?;
        remove_optional(&self.log_path(c, id))?;
        if had {
            fsx::fsync_dir(&self.dir(c))?;
        }
        Ok(had)
    }

    fn ids(&self, c: Collection) -> Result<Vec<String>> {
        let mut ids = fsx::json_record_ids(&self.dir(c))?;
        ids.sort();
        Ok(ids)
    }

    fn append_log(&self, c: Collection, id: &str, data: &[u8]) -> Result<u64> {
        fsx::create_dir_all(&self.dir(c))?;
        let path = self.log_path(c, id);
        fsx::append_durable(&path, data)?;
        self.log_size(c, id)
    }

    fn read_log(&self, c: Collection, id: &str) -> Result<Vec<u8>> {
        Ok(read_optional(&self.log_path(c, id))?.unwrap_or_default())
    }

    fn log_size(&self, c: Collection, id: &str) -> Result<u64> {
        let path = self.log_path(c, id);
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }
}
