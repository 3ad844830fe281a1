//! How a backup holds its sources still, and what it records: the consistency request
//! (`live`, `point-in-time`, `auto`) turned into a `ferry_capture::Capture` over the source block
//! devices, a check that image files did not change, and the manifest's `Consistency`.
//!
//! [`Hold::begin`] runs before the first read of any source (the layout probe and the used-space
//! map included: a block allocated after them would otherwise be skipped), [`Hold::end`] after
//! the last. Dropped without `end` (an error, a panic), the capture still thaws, removes its
//! snapshots and runs the post hook. docs/consistency.md.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ferry_capture::extents::Substitution;
use ferry_capture::{
    Capture, CaptureError, CaptureRequest, Consistency, Hooks, LvmPolicy, Method, Mode,
};
use serde::{Deserialize, Serialize};

/// Where the capture keeps its lock and state file: a tmpfs that is never frozen.
pub const DEFAULT_RUN_DIR: &str = "/run/ferry";

/// What consistency a backup asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsistencyRequest {
    /// Read while the source writes; record `live`.
    Live,
    /// Every filesystem on the sources held at one instant, or fail.
    PointInTime,
    /// Point-in-time when the source allows it, else live with a warning saying why.
    #[default]
    Auto,
    /// The source's OS is not running (a backup job of the rescue image): nothing on the
    /// sources may be mounted read-write; record `offline`.
    Offline,
}

impl FromStr for ConsistencyRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(ConsistencyRequest::Live),
            "point-in-time" => Ok(ConsistencyRequest::PointInTime),
            "auto" => Ok(ConsistencyRequest::Auto),
            "offline" => Ok(ConsistencyRequest::Offline),
            _ => Err(format!(
                "{s:?} is not a consistency; use live, point-in-time or auto"
            )),
        }
    }
}

impl std::fmt::Display for ConsistencyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConsistencyRequest::Live => "live",
            ConsistencyRequest::PointInTime => "point-in-time",
            ConsistencyRequest::Auto => "auto",
            ConsistencyRequest::Offline => "offline",
        })
    }
}

/// Why the sources could not be held still or released cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ConsistencyError {
    #[error("point-in-time capture: {0}")]
    Capture(#[from] CaptureError),
    #[error("{path} changed while it was read (modified or resized), so the backup is not point-in-time; stop what writes it (the VM using the image) and back up again, or use --consistency live")]
    ImageChanged { path: PathBuf },
    #[error("stat {path}: {source}")]
    Stat {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Substitute(#[from] super::substitute::SubstituteError),
    #[error("an offline backup reads only disks nothing has mounted, and {mount_point} ({fstype}) on them is mounted read-write: unmount it and run the job again")]
    MountedOffline {
        mount_point: PathBuf,
        fstype: String,
    },
}

/// What a backup needs to hold its sources: the request, the operator's hooks, the run
/// directory and whether LVM snapshots may be used.
pub struct HoldRequest<'a> {
    pub sources: Vec<&'a Path>,
    pub consistency: ConsistencyRequest,
    pub hooks: &'a Hooks,
    pub run_dir: &'a Path,
    pub lvm: LvmPolicy,
}

/// An image file's identity and last change, to prove nothing wrote it during the read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Result<Stamp, ConsistencyError> {
    let m = std::fs::metadata(path).map_err(|source| ConsistencyError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Stamp {
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// The sources held still (or not) for the read.
pub struct Hold {
    capture: Option<Capture>,
    /// The mode actually held: `Live` after an `auto` fallback.
    mode: Mode,
    /// Image files and their stamps at the start.
    images: Vec<(PathBuf, Stamp)>,
    /// `auto` records a changed image as live instead of failing.
    lenient: bool,
    /// Record `offline`, and fail if the capture found a filesystem it had to hold.
    offline: bool,
}

impl Hold {
    /// Hold the sources as `req` asks, before anything reads them.
    pub fn begin(req: &HoldRequest<'_>) -> Result<Hold, ConsistencyError> {
        let mut devices = Vec::new();
        let mut images = Vec::new();
        for path in &req.sources {
            // A path that cannot be stat'ed is left to the open that follows, which names it.
            match std::fs::metadata(path) {
                Ok(m) if m.file_type().is_block_device() => devices.push(path.to_path_buf()),
                Ok(_) => images.push((path.to_path_buf(), stamp(path)?)),
                Err(_) => {}
            }
        }
        let hooked = req.hooks.pre.is_some() || req.hooks.post.is_some();
        let capture_req = |mode| {
            let mut c = CaptureRequest::new(devices.clone(), mode, req.run_dir.to_path_buf());
            c.hooks = req.hooks.clone();
            c.lvm = req.lvm;
            c
        };
        let (capture, mode) = match req.consistency {
            ConsistencyRequest::Live if !hooked => (None, Mode::Live),
            ConsistencyRequest::Live => {
                (Some(Capture::begin(&capture_req(Mode::Live))?), Mode::Live)
            }
            // Image files alone need no capture, unless hooks must run around the read.
            _ if devices.is_empty() && !hooked => (None, Mode::PointInTime),
            ConsistencyRequest::PointInTime | ConsistencyRequest::Offline => (
                Some(Capture::begin(&capture_req(Mode::PointInTime))?),
                Mode::PointInTime,
            ),
            ConsistencyRequest::Auto => match Capture::begin(&capture_req(Mode::PointInTime)) {
                Ok(c) => (Some(c), Mode::PointInTime),
                Err(e) if must_fail(&e) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(
                        "cannot capture point-in-time ({e}); reading live, and the snapshot \
                         records it as live"
                    );
                    // The hooks run again around the live read (their first pair ran
                    // around the failed attempt).
                    let capture = if hooked {
                        Some(Capture::begin(&capture_req(Mode::Live))?)
                    } else {
                        None
                    };
                    (capture, Mode::Live)
                }
            },
        };
        Ok(Hold {
            capture,
            mode,
            images,
            lenient: req.consistency == ConsistencyRequest::Auto,
            offline: req.consistency == ConsistencyRequest::Offline,
        })
    }

    /// Byte ranges of the source disks to read from LVM snapshot devices instead.
    pub fn substitutions(&self) -> &[Substitution] {
        self.capture
            .as_ref()
            .map(Capture::substitutions)
            .unwrap_or_default()
    }

    /// How long the freeze has lasted so far.
    pub fn frozen_for(&self) -> Duration {
        self.capture
            .as_ref()
            .map(Capture::frozen_for)
            .unwrap_or_default()
    }

    /// Release the sources (thaw, remove snapshots, post hook) and say how they were read.
    pub fn end(mut self) -> Result<Consistency, ConsistencyError> {
        let report = match self.capture.take() {
            Some(c) => Some(c.end()?),
            None => None,
        };
        let changed = self.changed_image()?;
        if self.mode == Mode::Live {
            return Ok(Consistency::Live);
        }
        if let Some(path) = changed {
            if !self.lenient {
                return Err(ConsistencyError::ImageChanged { path });
            }
            tracing::warn!(
                "{} changed while it was read; the snapshot records it as live",
                path.display()
            );
            return Ok(Consistency::Live);
        }
        let held = match report {
            Some(r) => r.consistency,
            // Only image files, none of which changed.
            None => Consistency::PointInTime {
                method: Method::NoneNeeded,
                frozen: Vec::new(),
                snapshots: Vec::new(),
                read_only: Vec::new(),
                not_frozen: Vec::new(),
                freeze_ms: 0,
                snapshot_ms: 0,
            },
        };
        if !self.offline {
            return Ok(held);
        }
        match held {
            Consistency::PointInTime {
                method: Method::NoneNeeded,
                ..
            } => Ok(Consistency::Offline),
            Consistency::PointInTime {
                frozen, not_frozen, ..
            } => {
                let (mount_point, fstype) = match (frozen.first(), not_frozen.first()) {
                    (Some(m), _) => (m.clone(), "frozen for the read".to_owned()),
                    (None, Some(n)) => (n.mount_point.clone(), n.fstype.clone()),
                    (None, None) => (PathBuf::from("a filesystem"), "held by a snapshot".into()),
                };
                Err(ConsistencyError::MountedOffline {
                    mount_point,
                    fstype,
                })
            }
            other => Ok(other),
        }
    }

    /// The first image file whose stamp changed since [`Hold::begin`].
    fn changed_image(&self) -> Result<Option<PathBuf>, ConsistencyError> {
        for (path, before) in &self.images {
            if stamp(path)? != *before {
                return Ok(Some(path.clone()));
            }
        }
        Ok(None)
    }
}

/// Errors `auto` does not paper over by reading live: a failed operator hook (the operator
/// asked for it to gate the backup) and another capture holding the run directory.
fn must_fail(e: &CaptureError) -> bool {
    match e {
        CaptureError::Hook(_) => true,
        CaptureError::State(ferry_capture::state::StateError::Busy { .. }) => true,
        CaptureError::Also { first, then } => must_fail(first) || must_fail(then),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_capture::{Hook, HookCommand};

    fn request<'a>(
        sources: Vec<&'a Path>,
        consistency: ConsistencyRequest,
        hooks: &'a Hooks,
        run_dir: &'a Path,
    ) -> HoldRequest<'a> {
        HoldRequest {
            sources,
            consistency,
            hooks,
            run_dir,
            lvm: LvmPolicy::Off,
        }
    }

    #[test]
    fn requests_parse_and_print() {
        for r in [
            ConsistencyRequest::Live,
            ConsistencyRequest::PointInTime,
            ConsistencyRequest::Auto,
            ConsistencyRequest::Offline,
        ] {
            assert_eq!(r.to_string().parse::<ConsistencyRequest>().unwrap(), r);
        }
        let e = "frozen".parse::<ConsistencyRequest>().unwrap_err();
        assert!(e.contains("live, point-in-time or auto"), "{e}");
        assert_eq!(ConsistencyRequest::default(), ConsistencyRequest::Auto);
    }

    #[test]
    fn an_unchanged_image_is_point_in_time_and_a_changed_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.img");
        std::fs::write(&img, vec![1u8; 4096]).unwrap();
        let run = t.path().join("run");
        let none = Hooks::default();
        for mode in [ConsistencyRequest::PointInTime, ConsistencyRequest::Auto] {
            let hold = Hold::begin(&request(vec![&img], mode, &none, &run)).unwrap();
            let c = hold.end().unwrap();
            assert_eq!(c.to_string(), "point-in-time (none-needed)", "{mode}");
        }
        let offline = Hold::begin(&request(
            vec![&img],
            ConsistencyRequest::Offline,
            &none,
            &run,
        ));
        assert_eq!(offline.unwrap().end().unwrap(), Consistency::Offline);
        let live = Hold::begin(&request(vec![&img], ConsistencyRequest::Live, &none, &run));
        assert_eq!(live.unwrap().end().unwrap(), Consistency::Live);

        let change = |hold: Hold| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::write(&img, vec![2u8; 8192]).unwrap();
            hold.end()
        };
        let strict = request(vec![&img], ConsistencyRequest::PointInTime, &none, &run);
        let e = change(Hold::begin(&strict).unwrap()).unwrap_err();
        assert!(matches!(e, ConsistencyError::ImageChanged { .. }), "{e}");
        let auto = request(vec![&img], ConsistencyRequest::Auto, &none, &run);
        assert_eq!(
            change(Hold::begin(&auto).unwrap()).unwrap(),
            Consistency::Live
        );
    }

    #[test]
    fn a_failing_pre_hook_fails_every_mode_and_post_still_runs() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("disk.img");
        std::fs::write(&img, vec![1u8; 4096]).unwrap();
        let post_ran = t.path().join("post-ran");
        let hooks = Hooks {
            pre: Some(Hook::new(
                HookCommand::Shell("exit 3".into()),
                Duration::from_secs(5),
            )),
            post: Some(Hook::new(
                HookCommand::Shell(format!("echo >> {}", post_ran.display())),
                Duration::from_secs(5),
            )),
        };
        let run = t.path().join("run");
        for mode in [
            ConsistencyRequest::Live,
            ConsistencyRequest::PointInTime,
            ConsistencyRequest::Auto,
        ] {
            let e = Hold::begin(&request(vec![&img], mode, &hooks, &run))
                .err()
                .unwrap();
            assert!(e.to_string().contains("pre-capture hook"), "{mode}: {e}");
        }
        let runs = std::fs::read_to_string(&post_ran).unwrap();
        assert_eq!(
            runs.lines().count(),
            3,
            "post hook runs after each failed pre"
        );
    }
}
