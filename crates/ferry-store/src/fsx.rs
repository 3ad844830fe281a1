//! Small file system helpers: atomic writes, directory fsync, advisory locks, mtime touches.
//!
//! Every file and directory these helpers create under a store is private to the appliance's
//! user: files at most 0600 ([`PRIVATE_FILE_MASK`] clears group and other bits of any mode a
//! caller asks for), directories 0700. A record replaced by [`write_atomic`] is durable when it
//! returns: the file is fsynced before the rename and its directory after it, so a power loss
//! leaves the old record or the new one, never neither (a new name lives in the directory's
//! entries, which only the directory's fsync makes durable).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, AT_FDCWD};
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{io_err, Result, StoreError};

/// Prefix of temporary files; never a valid chunk, snapshot or session name.
pub const TMP_PREFIX: &str = ".tmp-";
/// Permission bits a store file may have at most: backup data, records and tokens are nobody
/// else's business (the trust bundle is public, but it is copied out, not read in place).
pub const PRIVATE_FILE_MASK: u32 = 0o600;
/// Mode of every directory the store creates.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

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

/// Write `data` to `path` atomically and durably: a temporary file in the same directory,
/// fsync, rename, fsync of the directory. `mode` is masked by [`PRIVATE_FILE_MASK`].
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_tmp_and_rename(path, data, mode)?;
    fsync_dir(parent_of(path))
}

/// A temporary file in `path`'s directory, written, fsynced and renamed over `path`.
fn write_tmp_and_rename(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = parent_of(path);
    let tmp = dir.join(format!("{TMP_PREFIX}{}", random_hex(8)?));
    let res = (|| {
        let mut f = create_private(&tmp, mode)?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// [`write_atomic`] without the directory fsync, for files a later `syncfs` makes durable before
/// anything refers to them: chunks (a commit syncs the file system before its snapshot becomes
/// visible, docs/store.md). A directory fsync per chunk doubled the cost of a 1 MiB chunk write
/// on a virtio disk (10 -> 21 ms); records, which nothing else makes durable, use
/// [`write_atomic`].
pub fn write_atomic_nodirsync(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    write_tmp_and_rename(path, data, mode)
}

/// Create a new file (never an existing one), open for reading and writing, with `mode`
/// masked by [`PRIVATE_FILE_MASK`].
pub fn create_private(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode & PRIVATE_FILE_MASK)
        .open(path)
        .map_err(io_err("create", path))
}

/// Rename a file written and fsynced under a temporary name over `path`, then fsync the
/// directory: the last step of a streamed atomic write ([`write_atomic`] for data in memory).
pub fn rename_durable(tmp: &Path, path: &Path) -> Result<()> {
    fs::rename(tmp, path).map_err(io_err("rename into place", path))?;
    fsync_dir(parent_of(path))
}

/// Append `data` to `path` (created 0600 if absent) and fdatasync it; a file this call creates
/// also has its directory fsynced, so the new name survives a power loss.
pub fn append_durable(path: &Path, data: &[u8]) -> Result<()> {
    let (mut f, created) = match OpenOptions::new().append(true).open(path) {
        Ok(f) => (f, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(PRIVATE_FILE_MASK)
                .open(path)
                .map_err(io_err("create", path))?;
            (f, true)
        }
        Err(e) => return Err(io_err("open", path)(e)),
    };
    f.write_all(data).map_err(io_err("append to", path))?;
    f.sync_data().map_err(io_err("fsync", path))?;
    if created {
        fsync_dir(parent_of(path))?;
    }
    Ok(())
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Remove a directory tree; one that is not there is fine.
pub fn remove_tree(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", dir)(e)),
        _ => Ok(()),
    }
}

/// fsync a directory so the renames and creations in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    tests::DIR_SYNCS.with(|n| n.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Flush every dirty file of the file system holding `path` (syncfs(2)): makes the chunks a
/// snapshot refers to durable before the snapshot becomes visible.
pub fn sync_fs(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(io_err("open", path))?;
    nix::unistd::syncfs(&f).map_err(|e| io_err("syncfs", path)(e.into()))
}

/// Create `dir` and its missing parents with mode 0700 ([`PRIVATE_DIR_MODE`]); existing ones
/// keep their mode. The parent of each new directory is fsynced, so a record written into it
/// later (and fsynced by [`write_atomic`]) cannot lose its directory to a power loss.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => fsync_dir(parent_of(dir)),
        // Another thread or process made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_err("create directory", dir)(e)),
    }
}

/// Set the mtime of `path` to now. `Ok(false)` when the file does not exist.
pub fn touch(path: &Path) -> Result<bool> {
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(StoreError::Invalid(format!(
            "path {} contains a NUL byte",
            path.display()
        )));
    }
    let (atime, mtime) = (TimeSpec::UTIME_OMIT, TimeSpec::UTIME_NOW);
    match utimensat(
        AT_FDCWD,
        path,
        &atime,
        &mtime,
        UtimensatFlags::FollowSymlink,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(io_err("set mtime of", path)(e.into())),
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
    _lock: Flock<File>,
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
        let op = match (mode, block) {
            (LockMode::Shared, true) => FlockArg::LockShared,
            (LockMode::Shared, false) => FlockArg::LockSharedNonblock,
            (LockMode::Exclusive, true) => FlockArg::LockExclusive,
            (LockMode::Exclusive, false) => FlockArg::LockExclusiveNonblock,
        };
        let mut file = file;
        loop {
            match Flock::lock(file, op) {
                Ok(lock) => return Ok(Some(FileLock { _lock: lock })),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, Errno::EWOULDBLOCK)) if !block => return Ok(None),
                Err((_, e)) => return Err(io_err("lock", path)(e.into())),
            }
        }
    }
}

/// Ids of the `<id><suffix>` records in `dir` (`.json`, `.beacon`; none if it does not exist
/// yet); dot-files are temporary writes and are skipped.
pub(crate) fn record_ids(dir: &Path, suffix: &str) -> Result<Vec<String>> {
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
        if let Some(id) = name.strip_suffix(suffix).filter(|_| !name.starts_with('.')) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    thread_local! {
        /// Directories [`fsync_dir`] synced on this thread (tests run one per thread).
        pub(super) static DIR_SYNCS: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    fn synced() -> Vec<PathBuf> {
        DIR_SYNCS.with(|n| std::mem::take(&mut *n.borrow_mut()))
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn write_atomic_is_private_and_syncs_its_directory() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("rec.json");
        synced();
        // A caller asking for 0644 still gets a private file.
        write_atomic(&path, b"one", 0o644).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(synced(), [t.path().to_path_buf()]);
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(synced(), [t.path().to_path_buf()]);
        let names: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn chunk_writes_leave_the_directory_to_the_commits_syncfs() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("chunk");
        synced();
        write_atomic_nodirsync(&path, b"frame", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"frame");
        assert_eq!(mode(&path), 0o600);
        assert!(synced().is_empty());
    }

    #[test]
    fn failed_write_leaves_nothing_and_syncs_nothing() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("no-such-dir").join("rec.json");
        synced();
        assert!(write_atomic(&missing, b"x", 0o600).is_err());
        assert!(synced().is_empty());
    }

    #[test]
    fn create_dir_all_makes_private_directories_and_syncs_parents() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a").join("b");
        synced();
        create_dir_all(&deep).unwrap();
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(synced(), [t.path().to_path_buf(), t.path().join("a")]);
        create_dir_all(&deep).unwrap();
        assert!(synced().is_empty(), "an existing directory needs no sync");
    }

    #[test]
    fn append_durable_creates_private_and_syncs_directory_once() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("events.jsonl");
        synced();
        append_durable(&log, b"a\n").unwrap();
        assert_eq!(synced(), [t.path().to_path_buf()]);
        append_durable(&log, b"b\n").unwrap();
        assert!(synced().is_empty());
        assert_eq!(fs::read(&log).unwrap(), b"a\nb\n");
        assert_eq!(mode(&log), 0o600);
    }

    #[test]
    fn rename_durable_syncs_the_destination_directory() {
        let t = tempfile::tempdir().unwrap();
        let tmp = t.path().join(".tmp-x");
        create_private(&tmp, 0o644).unwrap();
        assert_eq!(mode(&tmp), 0o600);
        synced();
        rename_durable(&tmp, &t.path().join("x")).unwrap();
        assert_eq!(synced(), [t.path().to_path_buf()]);
    }
}
