//! The run directory (`/run/ferry` on a source): an exclusive lock held for the whole capture,
//! and the state file `frozen` naming every filesystem this capture may have frozen, so the
//! next start thaws what a killed agent left frozen ([`crate::cleanup_stale`]).
//!
//! The state file is written before each freeze and removed after the last thaw: a crash at
//! any point leaves a superset of what is frozen (thawing a filesystem that is not frozen is
//! harmless). It is JSON of our own (`deny_unknown_fields`), replaced atomically (temp file,
//! fsync, rename). The run directory must be on a filesystem that is never frozen (a tmpfs):
//! writing the state file to a frozen filesystem would block forever.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::mountinfo::DevId;

/// The state file's name in the run directory.
pub const STATE_FILE: &str = "frozen";
/// The lock file's name in the run directory.
pub const LOCK_FILE: &str = "capture.lock";
/// Version of the state file's format (frozen: bump on any change).
pub const STATE_VERSION: u32 = 1;
/// Largest state file read (a few hundred bytes per filesystem).
const MAX_STATE: u64 = 1 << 20;

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenState {
    pub version: u32,
    /// The agent that froze them (for the operator; not trusted).
    pub pid: u32,
    pub frozen: Vec<FrozenRecord>,
}

/// One filesystem that may be frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrozenRecord {
    pub mount_point: PathBuf,
    /// `st_dev` of the mount point when it was frozen: a different filesystem mounted there
    /// since is left alone.
    pub fs_dev: DevId,
}

/// Why the run directory or its state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another capture holds {path}; wait for it, or stop the other agent")]
    Busy { path: PathBuf },
    #[error("state file {path}: {what}; thaw by hand with `fsfreeze -u <mount point>` if needed, then remove it")]
    Malformed { path: PathBuf, what: String },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
}

/// Encode a state file.
pub fn encode(state: &FrozenState) -> String {
    // Serializing plain structs of strings and numbers cannot fail; the fallback keeps the
    // function total (and a state file that fails to decode is reported, not trusted).
    serde_json::to_string_pretty(state).unwrap_or_default()
}

/// Decode a state file; anything but a version-1 state is refused.
pub fn decode(text: &str) -> Result<FrozenState, String> {
    let state: FrozenState = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if state.version != STATE_VERSION {
        return Err(format!(
            "version {}, this agent reads {STATE_VERSION}",
            state.version
        ));
    }
    Ok(state)
}

/// The locked run directory.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl RunDir {
    /// Create `path` (0700) if needed and take its lock without waiting.
    pub fn lock(path: &Path) -> Result<RunDir, StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io("create", path))?;
        let lock_path = path.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, Errno::EWOULDBLOCK)) => return Err(StateError::Busy { path: lock_path }),
            Err((_, e)) => return Err(io("lock", &lock_path)(e.into())),
        };
        Ok(RunDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn state_path(&self) -> PathBuf {
        self.path.join(STATE_FILE)
    }

    /// The state file, if there is one.
    pub fn read(&self) -> Result<Option<FrozenState>, StateError> {
        read_state(&self.state_path())
    }

    /// Replace the state file atomically.
    pub fn write(&self, state: &FrozenState) -> Result<(), StateError> {
        write_state(&self.state_path(), state)
    }

    /// Remove the state file (nothing is frozen any more).
    pub fn clear(&self) -> Result<(), StateError> {
        clear_state(&self.state_path())
    }
}

/// Read a state file; `None` when there is none.
pub fn read_state(path: &Path) -> Result<Option<FrozenState>, StateError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open", path)(e)),
    };
    let mut text = String::new();
    file.take(MAX_STATE + 1)
        .read_to_string(&mut text)
        .map_err(io("read", path))?;
    if text.len() as u64 > MAX_STATE {
        return Err(StateError::Malformed {
            path: path.to_path_buf(),
            what: format!("larger than {MAX_STATE} bytes"),
        });
    }
    decode(&text)
        .map(Some)
        .map_err(|what| StateError::Malformed {
            path: path.to_path_buf(),
            what,
        })
}

/// Replace a state file atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_state(path: &Path, state: &FrozenState) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(encode(state).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    sync_parent(path)
}

/// Remove a state file; a missing one is fine.
pub fn clear_state(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}

fn sync_parent(path: &Path) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FrozenState {
        FrozenState {
            version: STATE_VERSION,
            pid: 42,
            frozen: vec![FrozenRecord {
                mount_point: "/var/lib/db dir".into(),
                fs_dev: DevId::new(254, 1),
            }],
        }
    }

    #[test]
    fn a_state_round_trips_through_the_file() {
        let t = tempfile::tempdir().unwrap();
        let run = RunDir::lock(&t.path().join("run/ferry")).unwrap();
        assert_eq!(run.read().unwrap(), None);
        run.write(&state()).unwrap();
        assert_eq!(run.read().unwrap(), Some(state()));
        run.clear().unwrap();
        assert_eq!(run.read().unwrap(), None);
        run.clear().unwrap();
    }

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let t = tempfile::tempdir().unwrap();
        let first = RunDir::lock(t.path()).unwrap();
        let e = RunDir::lock(t.path()).unwrap_err();
        assert!(matches!(e, StateError::Busy { .. }), "{e}");
        drop(first);
        RunDir::lock(t.path()).unwrap();
    }

    #[test]
    fn bad_state_files_are_refused_naming_the_file() {
        let cases: &[(&str, &str)] = &[
            ("", "EOF"),
            ("{\"version\":2,\"pid\":1,\"frozen\":[]}", "version 2"),
            (
                "{\"version\":1,\"pid\":1,\"frozen\":[],\"extra\":1}",
                "unknown field",
            ),
            (
                "{\"version\":1,\"pid\":1,\"frozen\":[{\"mount_point\":\"/\"}]}",
                "fs_dev",
            ),
        ];
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join(STATE_FILE);
        for (text, want) in cases {
            std::fs::write(&path, text).unwrap();
            let msg = read_state(&path).unwrap_err().to_string();
            assert!(msg.contains("state file"), "{text}: {msg}");
            assert!(msg.contains(want), "{text}: {msg}");
        }
        std::fs::write(&path, " ".repeat(MAX_STATE as usize + 1)).unwrap();
        let msg = read_state(&path).unwrap_err().to_string();
        assert!(msg.contains("larger than"), "{msg}");
    }
}
