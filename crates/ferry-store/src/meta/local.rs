//! Records as files in the store directory: `<collection>/<id>.json`, the log beside it, an
//! flock on `<collection>/.lock`. Two collections keep the names they had before this trait
//! (docs/store.md): a beacon is `jobs/<job>.beacon`, the token table `tokens.json` (lock
//! `tokens.lock`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Collection, RecordLock, Records, TOKENS_RECORD};
use crate::error::{io_err, Result, StoreError};
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

    /// The directory a collection's files are in.
    fn dir(&self, c: Collection) -> PathBuf {
        match c {
            Collection::Beacons => self.root.join(Collection::Jobs.name()),
            Collection::Tokens | Collection::StoreState => self.root.clone(),
            _ => self.root.join(c.name()),
        }
    }

    fn suffix(c: Collection) -> &'static str {
        match c {
            Collection::Beacons => ".beacon",
            _ => ".json",
        }
    }

    fn path(&self, c: Collection, id: &str) -> Result<PathBuf> {
        if c == Collection::Tokens {
            if id != TOKENS_RECORD {
                return Err(StoreError::Invalid(format!(
                    "the token table is one record, {TOKENS_RECORD:?}, not {id:?}"
                )));
            }
            return Ok(self.root.join("tokens.json"));
        }
        if c == Collection::StoreState {
            // A fixed set of file names, not ids of the caller's choosing.
            return match crate::state::StateDoc::from_id(id) {
                Some(doc) => Ok(self.root.join(doc.id())),
                None => Err(StoreError::Invalid(format!(
                    "no store-state document {id:?}"
                ))),
            };
        }
        Ok(self.dir(c).join(format!("{id}{}", Self::suffix(c))))
    }

    fn lock_path(&self, c: Collection) -> PathBuf {
        match c.lock_owner() {
            Collection::Tokens => self.root.join("tokens.lock"),
            Collection::StoreState => self.root.join(crate::verify::VERIFY_LOCK),
            owner => self.dir(owner).join(".lock"),
        }
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
        fsx::create_dir_all(&self.dir(c.lock_owner()))?;
        let lock = FileLock::acquire(&self.lock_path(c), LockMode::Exclusive)?;
        Ok(RecordLock {
            _held: Box::new(lock),
        })
    }

    fn try_lock(&self, c: Collection) -> Result<Option<RecordLock>> {
        fsx::create_dir_all(&self.dir(c.lock_owner()))?;
        let lock = FileLock::try_acquire(&self.lock_path(c), LockMode::Exclusive)?;
        Ok(lock.map(|l| RecordLock { _held: Box::new(l) }))
    }

    fn get(&self, c: Collection, id: &str) -> Result<Option<Vec<u8>>> {
        read_optional(&self.path(c, id)?)
    }

    fn put(&self, c: Collection, id: &str, body: &[u8]) -> Result<()> {
        fsx::create_dir_all(&self.dir(c))?;
        fsx::write_atomic(&self.path(c, id)?, body, PRIVATE_FILE_MASK)
    }

    fn delete(&self, c: Collection, id: &str) -> Result<bool> {
        let had = remove_optional(&self.path(c, id)?)?;
        remove_optional(&self.log_path(c, id))?;
        if had {
            fsx::fsync_dir(&self.dir(c))?;
        }
        Ok(had)
    }

    fn ids(&self, c: Collection) -> Result<Vec<String>> {
        if c == Collection::Tokens {
            let path = self.path(c, TOKENS_RECORD)?;
            let present = fs::symlink_metadata(&path).is_ok();
            return Ok(present
                .then(|| TOKENS_RECORD.to_string())
                .into_iter()
                .collect());
        }
        if c == Collection::StoreState {
            let mut ids = Vec::new();
            for doc in crate::state::StateDoc::ALL {
                if fs::symlink_metadata(self.root.join(doc.id())).is_ok() {
                    ids.push(doc.id().to_string());
                }
            }
            ids.sort();
            return Ok(ids);
        }
        let mut ids = fsx::record_ids(&self.dir(c), Self::suffix(c))?;
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

    fn stamp(&self, c: Collection, id: &str) -> Result<Option<String>> {
        use std::os::unix::fs::MetadataExt;
        let path = self.path(c, id)?;
        match fs::metadata(&path) {
            // Every write renames a new file over the old one: a new inode.
            Ok(m) => Ok(Some(format!(
                "{}:{}.{}:{}",
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.len()
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &path)(e)),
        }
    }

    fn describe(&self) -> String {
        format!("the store directory {}", self.root.display())
    }
}
