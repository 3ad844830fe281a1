//! Filesystem freeze (FIFREEZE/FITHAW) that is always undone.
//!
//! A [`FreezeGuard`] freezes filesystems one by one and thaws them all when it is dropped or
//! [`FreezeGuard::thaw`]ed; a failure part-way thaws what it had frozen. Every frozen
//! filesystem is also in a process-wide registry that a signal thread ([`install_signal_thaw`])
//! drains on SIGTERM, SIGINT or SIGHUP before the process ends, and in the run directory's
//! state file, which [`crate::cleanup_stale`] reads after a crash (SIGKILL, power loss of the
//! agent only, a panic in another thread).
//!
//! While frozen, every write to the filesystem blocks — including this process's own: nothing
//! in this crate writes to a source filesystem, and the state file must live on a tmpfs.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libc::c_int;
use nix::errno::Errno;

use crate::guardian::Guardian;
use crate::mountinfo::DevId;
use crate::state::{FrozenRecord, FrozenState, RunDir, StateError, STATE_VERSION};

mod ioctl {
    use super::c_int;

    // linux/fs.h: FIFREEZE = _IOWR('X', 119, int), FITHAW = _IOWR('X', 120, int); the int is
    // ignored by the kernel.
    nix::ioctl_readwrite!(fifreeze, b'X', 119, c_int);
    nix::ioctl_readwrite!(fithaw, b'X', 120, c_int);
}

/// FITHAW on a raw descriptor, for the guardian's child (no `File`, no allocation).
pub(crate) use ioctl::fithaw as fithaw_raw;

/// Freeze the filesystem that `dir` (an open file on it) belongs to.
pub fn freeze(dir: &File) -> io::Result<()> {
    let mut unused: c_int = 0;
    // SAFETY: FIFREEZE reads no argument; `unused` is a live int for the call all the same.
    unsafe { ioctl::fifreeze(dir.as_raw_fd(), &mut unused) }?;
    Ok(())
}

/// Thaw the filesystem that `dir` belongs to; `Ok(false)` when it was not frozen.
pub fn thaw(dir: &File) -> io::Result<bool> {
    let mut unused: c_int = 0;
    // SAFETY: FITHAW reads no argument; `unused` is a live int for the call all the same.
    match unsafe { ioctl::fithaw(dir.as_raw_fd(), &mut unused) } {
        Ok(_) => Ok(true),
        Err(Errno::EINVAL) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Why a filesystem could not be frozen or thawed.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("open {mount_point} to freeze it: {source}")]
    Open {
        mount_point: PathBuf,
        source: io::Error,
    },
    #[error("freeze {mount_point}: another filesystem is mounted over it now (device {found}, expected {expected}); retry the capture")]
    Moved {
        mount_point: PathBuf,
        expected: DevId,
        found: DevId,
    },
    #[error("freeze {mount_point}: it is frozen already by someone else (fsfreeze?); thaw it with `fsfreeze -u {mount_point}` or wait")]
    AlreadyFrozen { mount_point: PathBuf },
    #[error("freeze {mount_point} ({fstype}): the filesystem cannot be frozen")]
    Unsupported {
        mount_point: PathBuf,
        fstype: String,
    },
    #[error("freeze {mount_point}: {source}")]
    Freeze {
        mount_point: PathBuf,
        source: io::Error,
    },
    #[error("thaw {mount_point}: {source}; thaw it by hand with `fsfreeze -u {mount_point}`")]
    Thaw {
        mount_point: PathBuf,
        source: io::Error,
    },
    #[error("the freeze was held past its limit of {limit:?} and thawed during the read: the capture is not point-in-time; read less per capture, raise the limit, or use LVM snapshots")]
    Overran { limit: Duration },
    #[error("start the freeze watchdog: {0}")]
    Watchdog(io::Error),
    #[error("start the process that thaws the filesystems if the agent dies: {0}")]
    Guardian(io::Error),
    #[error(transparent)]
    State(#[from] StateError),
}

/// A filesystem to freeze.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeTarget {
    pub mount_point: PathBuf,
    /// `st_dev` expected at the mount point (mountinfo's `major:minor`).
    pub fs_dev: DevId,
    pub fstype: String,
}

/// One filesystem frozen by this process.
struct Registered {
    id: u64,
    mount_point: PathBuf,
    dir: File,
}

/// Every filesystem this process has frozen and not yet thawed. Global because a signal thread
/// must be able to thaw them whatever the thread that froze them is doing.
static FROZEN: Mutex<Vec<Registered>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The registry even when a thread panicked holding it: thawing must go on.
fn registry() -> MutexGuard<'static, Vec<Registered>> {
    FROZEN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Thaw every filesystem in the registry; returns the mount points thawed and the failures.
pub fn thaw_all_registered() -> (Vec<PathBuf>, Vec<FreezeError>) {
    let drained: Vec<Registered> = std::mem::take(&mut *registry());
    thaw_entries(drained)
}

/// Thaw the registered filesystems with these ids (those still registered).
fn thaw_ids(ids: &[u64]) -> (Vec<PathBuf>, Vec<FreezeError>) {
    let mine: Vec<Registered> = {
        let mut reg = registry();
        let (mine, rest) = std::mem::take(&mut *reg)
            .into_iter()
            .partition(|r| ids.contains(&r.id));
        *reg = rest;
        mine
    };
    thaw_entries(mine)
}

fn thaw_entries(entries: Vec<Registered>) -> (Vec<PathBuf>, Vec<FreezeError>) {
    let mut thawed = Vec::new();
    let mut errors = Vec::new();
    // Reverse order: the last frozen first (a filesystem mounted inside another thaws first).
    for r in entries.into_iter().rev() {
        match thaw(&r.dir) {
            Ok(_) => thawed.push(r.mount_point),
            Err(source) => errors.push(FreezeError::Thaw {
                mount_point: r.mount_point,
                source,
            }),
        }
    }
    (thawed, errors)
}

/// Filesystems frozen for one capture; dropping it thaws them.
pub struct FreezeGuard {
    run: Arc<RunDir>,
    ids: Vec<u64>,
    records: Vec<FrozenRecord>,
    started: Option<Instant>,
    watchdog: Option<Watchdog>,
    /// Thaws everything if this process dies frozen ([`crate::guardian`]).
    guardian: Option<Guardian>,
}

/// A thread that thaws a guard's filesystems when the freeze outlasts its limit (the agent
/// might be stuck, for instance writing a log line that a frozen filesystem holds up).
struct Watchdog {
    /// Dropped to stop the thread.
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
    fired: Arc<AtomicBool>,
    limit: Duration,
}

impl FreezeGuard {
    /// Freeze every target in order; on any failure thaw what was frozen and return the error.
    /// [`FreezeError::Unsupported`] targets are returned, not fatal: the caller records them.
    pub fn freeze_all(
        run: Arc<RunDir>,
        targets: &[FreezeTarget],
    ) -> Result<(FreezeGuard, Vec<FreezeError>), FreezeError> {
        // The guardian holds its own descriptors of every target (one that cannot be opened
        // fails in freeze_one, before any freeze of it).
        let dirs: Vec<File> = targets
            .iter()
            .filter_map(|t| File::open(&t.mount_point).ok())
            .collect();
        let guardian = Guardian::spawn(&dirs).map_err(FreezeError::Guardian)?;
        drop(dirs);
        let mut guard = FreezeGuard {
            run,
            ids: Vec::new(),
            records: Vec::new(),
            started: None,
            watchdog: None,
            guardian: Some(guardian),
        };
        let mut unsupported = Vec::new();
        for t in targets {
            match guard.freeze_one(t) {
                Ok(()) => {}
                Err(e @ FreezeError::Unsupported { .. }) => unsupported.push(e),
                // Dropping the guard thaws what was frozen so far.
                Err(e) => return Err(e),
            }
        }
        guard.forget_unfrozen()?;
        Ok((guard, unsupported))
    }

    fn freeze_one(&mut self, t: &FreezeTarget) -> Result<(), FreezeError> {
        let dir = File::open(&t.mount_point).map_err(|source| FreezeError::Open {
            mount_point: t.mount_point.clone(),
            source,
        })?;
        let found = dir
            .metadata()
            .map(|m| DevId::from_raw(m.dev()))
            .map_err(|source| FreezeError::Open {
                mount_point: t.mount_point.clone(),
                source,
            })?;
        if found != t.fs_dev {
            return Err(FreezeError::Moved {
                mount_point: t.mount_point.clone(),
                expected: t.fs_dev,
                found,
            });
        }
        // Recorded before the freeze: a crash right after it still leaves a record.
        self.records.push(FrozenRecord {
            mount_point: t.mount_point.clone(),
            fs_dev: t.fs_dev,
        });
        self.write_state()?;
        // Registered before the freeze too: a signal arriving just after it still thaws it
        // (thawing a filesystem that is not frozen is harmless).
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let registered = dir.try_clone().map_err(|source| FreezeError::Open {
            mount_point: t.mount_point.clone(),
            source,
        })?;
        registry().push(Registered {
            id,
            mount_point: t.mount_point.clone(),
            dir: registered,
        });
        let started = Instant::now();
        if let Err(e) = freeze(&dir) {
            registry().retain(|r| r.id != id);
            self.records.pop();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => FreezeError::AlreadyFrozen {
                    mount_point: t.mount_point.clone(),
                },
                Some(libc::EOPNOTSUPP) => FreezeError::Unsupported {
                    mount_point: t.mount_point.clone(),
                    fstype: t.fstype.clone(),
                },
                _ => FreezeError::Freeze {
                    mount_point: t.mount_point.clone(),
                    source: e,
                },
            });
        }
        self.started.get_or_insert(started);
        self.ids.push(id);
        Ok(())
    }

    /// Rewrite the state file to what is frozen (after skipped targets), or remove it.
    fn forget_unfrozen(&self) -> Result<(), FreezeError> {
        if self.records.is_empty() {
            self.run.clear()?;
            return Ok(());
        }
        self.write_state()
    }

    fn write_state(&self) -> Result<(), FreezeError> {
        Ok(self.run.write(&FrozenState {
            version: STATE_VERSION,
            pid: std::process::id(),
            frozen: self.records.clone(),
        })?)
    }

    /// The mount points frozen.
    pub fn mount_points(&self) -> Vec<PathBuf> {
        self.records.iter().map(|r| r.mount_point.clone()).collect()
    }

    /// How long the first filesystem has been frozen.
    pub fn elapsed(&self) -> Duration {
        self.started.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// Thaw everything; returns how long the freeze lasted.
    pub fn thaw(mut self) -> Result<Duration, FreezeError> {
        self.thaw_inner()
    }

    /// Thaw everything if the freeze lasts longer than `limit`; [`FreezeGuard::thaw`] then
    /// reports [`FreezeError::Overran`].
    pub fn set_limit(&mut self, limit: Duration) -> Result<(), FreezeError> {
        if self.ids.is_empty() || self.watchdog.is_some() {
            return Ok(());
        }
        let ids = self.ids.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let thread = std::thread::Builder::new()
            .name("ferry-freeze-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(limit) {
                    flag.store(true, Ordering::SeqCst);
                    let (thawed, errors) = thaw_ids(&ids);
                    tracing::error!("freeze held past {limit:?}: thawed {thawed:?}");
                    for e in errors {
                        tracing::error!("{e}");
                    }
                }
            })
            .map_err(FreezeError::Watchdog)?;
        self.watchdog = Some(Watchdog {
            stop,
            thread,
            fired,
            limit,
        });
        Ok(())
    }

    fn thaw_inner(&mut self) -> Result<Duration, FreezeError> {
        let mut took = self.elapsed();
        let mut overran = None;
        if let Some(w) = self.watchdog.take() {
            drop(w.stop);
            let _ = w.thread.join();
            if w.fired.load(Ordering::SeqCst) {
                overran = Some(w.limit);
                took = w.limit;
            }
        }
        let ids = std::mem::take(&mut self.ids);
        let (_, mut errors) = thaw_ids(&ids);
        match self.guardian.take() {
            Some(g) if errors.is_empty() => g.stand_down(),
            // Dropped: it tries the thaw too, then it is reaped.
            other => drop(other),
        }
        if errors.is_empty() {
            self.records.clear();
            self.run.clear()?;
            return match overran {
                Some(limit) => Err(FreezeError::Overran { limit }),
                None => Ok(took),
            };
        }
        // The state file stays: the next start retries the thaw.
        Err(errors.remove(0))
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            if let Some(g) = self.guardian.take() {
                g.stand_down();
            }
            // Nothing frozen (a failed first freeze): the record written before it goes.
            if let Err(e) = self.run.clear() {
                tracing::error!("{e}");
            }
            return;
        }
        if let Err(e) = self.thaw_inner() {
            tracing::error!("{e}");
        }
    }
}

/// What the signal thread does once it has thawed everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSignal {
    /// End the process as the signal would have (the default).
    Terminate,
    /// Carry on: the program has its own handler for the signal and ends the capture itself.
    Continue,
}

static SIGNAL_THREAD: OnceLock<Result<AfterSignal, String>> = OnceLock::new();

/// Start (once per process) a thread that, on SIGTERM, SIGINT or SIGHUP, thaws every
/// filesystem frozen by this process, then acts as `after` says. The first call's `after`
/// wins; later calls return it. [`crate::Capture::begin`] calls this with
/// [`AfterSignal::Terminate`] before it freezes anything.
pub fn install_signal_thaw(after: AfterSignal) -> Result<AfterSignal, String> {
    SIGNAL_THREAD
        .get_or_init(|| spawn_signal_thread(after).map(|()| after))
        .clone()
}

fn spawn_signal_thread(after: AfterSignal) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("install the thaw-on-signal handler: {e}"))?;
    std::thread::Builder::new()
        .name("ferry-thaw-on-signal".into())
        .spawn(move || {
            for sig in signals.forever() {
                let (thawed, errors) = thaw_all_registered();
                if !thawed.is_empty() {
                    tracing::warn!("signal {sig}: thawed {thawed:?}");
                }
                for e in errors {
                    tracing::error!("signal {sig}: {e}");
                }
                if after == AfterSignal::Terminate {
                    // The state file stays: harmless (everything is thawed), and the next start
                    // removes it.
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                }
            }
        })
        .map_err(|e| format!("start the thaw-on-signal thread: {e}"))?;
    Ok(())
}

/// Thaw the filesystem recorded at `r` if it is still the one mounted there.
pub fn thaw_record(r: &FrozenRecord) -> Result<bool, FreezeError> {
    let dir = File::open(&r.mount_point).map_err(|source| FreezeError::Open {
        mount_point: r.mount_point.clone(),
        source,
    })?;
    let found = dir
        .metadata()
        .map(|m| DevId::from_raw(m.dev()))
        .map_err(|source| FreezeError::Open {
            mount_point: r.mount_point.clone(),
            source,
        })?;
    if found != r.fs_dev {
        return Err(FreezeError::Moved {
            mount_point: r.mount_point.clone(),
            expected: r.fs_dev,
            found,
        });
    }
    thaw(&dir).map_err(|source| FreezeError::Thaw {
        mount_point: r.mount_point.clone(),
        source,
    })
}

/// `st_dev` of a path, for a freeze target.
pub fn fs_dev(path: &Path) -> io::Result<DevId> {
    Ok(DevId::from_raw(std::fs::metadata(path)?.dev()))
}
