//! Small file system helpers: atomic writes, directory fsync, advisory locks, mtime touches.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{io_err, Result, StoreError};

/// Prefix of temporary files; never a valid chunk, snapshot or session name.
pub const TMP_PREFIX: &str = ".tmp-";

/// `n` random bytes from the OS.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| StoreError::Key("read random bytes from the OS: failed".into()))?;
    Ok(buf)
}

pub fn random_hex(n: usize) -> Result<String> {
    Ok(hex::encode(random_bytes(n)?))
}

/// Write `data` to `path` atomically: a temporary file in the same directory, fsync, rename.
/// `mode` is the new file's permission bits (0o600 for private keys).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!("{TMP_PREFIX}{}", random_hex(8)?));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// fsync a directory so the renames and creations in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Flush every dirty file of the file system holding `path` (syncfs(2)): makes the chunks a
/// snapshot refers to durable before the snapshot becomes visible.
pub fn sync_fs(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(io_err("open", path))?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc != 0 {
        return Err(io_err("syncfs", path)(io::Error::last_os_error()));
    }
    Ok(())
}

pub fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))
}

/// Set the mtime of `path` to now. `Ok(false)` when the file does not exist.
pub fn touch(path: &Path) -> Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StoreError::Invalid(format!("path {} contains a NUL byte", path.display())))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: `c` is a valid NUL-terminated path and `times` two valid timespecs, both alive
    // for the duration of the call.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::NotFound {
        Ok(false)
    } else {
        Err(io_err("set mtime of", path)(e))
    }
}

/// How an advisory lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// An flock(2) on a lock file, released on drop. Each lock opens the file anew, so locks taken
/// by threads of one process conflict with each other just as those of two processes do.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Block until the lock is held.
    pub fn acquire(path: &Path, mode: LockMode) -> Result<FileLock> {
        Self::lock(path, mode, true)?.ok_or_else(|| StoreError::Conflict("lock not taken".into()))
    }

    /// Take the lock if it is free; `Ok(None)` when someone else holds it.
    pub fn try_acquire(path: &Path, mode: LockMode) -> Result<Option<FileLock>> {
        Self::lock(path, mode, false)
    }

    fn lock(path: &Path, mode: LockMode, block: bool) -> Result<Option<FileLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io_err("open lock file", path))?;
        let mut op = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        if !block {
            op |= libc::LOCK_NB;
        }
        loop {
            // SAFETY: flock on a descriptor `file` keeps open.
            let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
            if rc == 0 {
                return Ok(Some(FileLock { _file: file }));
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !block => return Ok(None),
                _ => return Err(io_err("lock", path)(e)),
            }
        }
    }
}

/// Ids of the `<id>.json` records in `dir` (none if it does not exist yet); dot-files are
/// temporary writes and are skipped.
pub(crate) fn json_record_ids(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut ids = Vec::new();
    for e in entries {
        let name = e
            .map_err(io_err("list", dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(id) = name
            .strip_suffix(".json")
            .filter(|_| !name.starts_with('.'))
        {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}
