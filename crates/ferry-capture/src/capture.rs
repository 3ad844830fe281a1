//! [`Capture`]: one consistent view of the source disks, as a list of named steps —
//! lock the run directory, pre hook, discover, snapshot or freeze; then at the end thaw,
//! remove snapshots, post hook.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use ferry_format::consistency::{Consistency, Method, NotFrozen};
use serde::{Deserialize, Serialize};

use crate::extents::{self, Substitution};
use crate::freeze::{self, AfterSignal, FreezeError, FreezeGuard, FreezeTarget};
use crate::hooks::{self, HookError, HookStage, Hooks};
use crate::lvm::{self, Lvm, LvmError, NoSnapshot, SnapshotPlan, SnapshotSizing};
use crate::mountinfo::{self, DevId, MountinfoError};
use crate::state::{RunDir, StateError};
use crate::topology::{self, DevKind, DiskStack, SourceFs, TopologyError};

/// How consistent the capture must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every filesystem on the disks captured at one instant.
    PointInTime,
    /// Read while the source writes.
    Live,
}

/// Whether point-in-time may use LVM snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LvmPolicy {
    /// Freeze only (the default until the backup reader applies [`Capture::substitutions`];
    /// docs/consistency.md).
    Off,
    /// Snapshot LVs whose VG has room and whose extents map to plain partitions of the disks;
    /// the reader must then read [`Capture::substitutions`] from the snapshot devices.
    Snapshot(SnapshotSizing),
}

/// What to capture and how.
#[derive(Debug, Clone)]
pub struct CaptureRequest {
    /// Whole source disks (`/dev/sda`).
    pub disks: Vec<PathBuf>,
    pub mode: Mode,
    pub hooks: Hooks,
    /// Lock and state file (`/run/ferry`); must be on a filesystem that is never frozen.
    pub run_dir: PathBuf,
    pub lvm: LvmPolicy,
    /// Where /sys and /proc are (`/` in production; tests may point elsewhere).
    pub root: PathBuf,
    /// A freeze held longer than this is thawed by a watchdog and the capture fails
    /// ([`FreezeError::Overran`]); `None`: no limit.
    pub max_freeze: Option<Duration>,
}

/// Default [`CaptureRequest::max_freeze`]: a generous bound on an incremental's read, short
/// enough that a stuck agent does not hold a production server's writes for a day.
pub const DEFAULT_MAX_FREEZE: Duration = Duration::from_secs(3600);

impl CaptureRequest {
    pub fn new(disks: Vec<PathBuf>, mode: Mode, run_dir: PathBuf) -> CaptureRequest {
        CaptureRequest {
            disks,
            mode,
            hooks: Hooks::default(),
            run_dir,
            lvm: LvmPolicy::Off,
            root: PathBuf::from("/"),
            max_freeze: Some(DEFAULT_MAX_FREEZE),
        }
    }
}

/// The disks to read and what replaces part of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRead {
    /// The disk to read (the original device in every mode).
    pub disk: PathBuf,
    /// Its stack, for the reader to map LV extents to snapshot devices.
    pub stack: DiskStack,
    pub filesystems: Vec<SourceFs>,
}

/// Why a capture could not begin or end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{disk}: {source}")]
    Disk {
        disk: PathBuf,
        source: std::io::Error,
    },
    #[error("{disk} is not a block device; give the whole source disk (/dev/sda)")]
    NotBlock { disk: PathBuf },
    #[error("run directory {run_dir} is on {mount_point}, a filesystem being frozen; use a tmpfs such as /run/ferry")]
    RunDirOnSource {
        run_dir: PathBuf,
        mount_point: PathBuf,
    },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mountinfo(#[from] MountinfoError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("snapshot {vg}/{lv}: {source}")]
    Lvm {
        vg: String,
        lv: String,
        source: Box<LvmError>,
    },
    #[error("snapshot of {vg}/{lv} ran out of space during the read, so the capture is not point-in-time; give snapshots more room (LvmPolicy percent) or let it freeze")]
    SnapshotOverflowed { vg: String, lv: String },
    #[error("list LVs: {0}")]
    Lvs(Box<LvmError>),
    #[error("install the thaw-on-signal handler: {0}")]
    Signals(String),
    #[error("{first}; then also: {then}")]
    Also {
        first: Box<CaptureError>,
        then: Box<CaptureError>,
    },
}

impl CaptureError {
    /// `self`, with `then` (a later failure of the cleanup) attached.
    fn and(self, then: Option<CaptureError>) -> CaptureError {
        match then {
            None => self,
            Some(then) => CaptureError::Also {
                first: Box::new(self),
                then: Box::new(then),
            },
        }
    }
}

/// What a finished capture reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureReport {
    pub consistency: Consistency,
    /// How long filesystems were frozen (zero when none was).
    pub freeze: Duration,
}

/// A running capture: read [`Capture::sources`] (and [`Capture::snapshots`]), then
/// [`Capture::end`]. Dropped without `end`, it thaws, removes snapshots and runs the post hook
/// all the same, logging failures.
pub struct Capture {
    freeze: Option<FreezeGuard>,
    snapshots: Vec<SnapshotPlan>,
    /// When the first snapshot was created.
    snapshotted_at: Option<Instant>,
    substitutions: Vec<Substitution>,
    sources: Vec<SourceRead>,
    mode: Mode,
    read_only: Vec<PathBuf>,
    not_frozen: Vec<NotFrozen>,
    post: Option<hooks::Hook>,
    ended: bool,
    /// Locked until the capture is dropped.
    run: Arc<RunDir>,
}

impl Capture {
    /// Take the consistent view the request asks for.
    pub fn begin(req: &CaptureRequest) -> Result<Capture, CaptureError> {
        let run = Arc::new(RunDir::lock(&req.run_dir)?);
        let mut cap = Capture {
            freeze: None,
            snapshots: Vec::new(),
            snapshotted_at: None,
            substitutions: Vec::new(),
            sources: Vec::new(),
            mode: req.mode,
            read_only: Vec::new(),
            not_frozen: Vec::new(),
            post: None,
            ended: false,
            run,
        };
        if let Some(pre) = &req.hooks.pre {
            // From here on the post hook runs whatever happens, also when the pre hook itself
            // fails half-way (Drop runs it on error): the source must serve again.
            cap.post = req.hooks.post.clone();
            hooks::run(pre, HookStage::PreCapture)?;
        }
        cap.sources = discover(req)?;
        if req.mode == Mode::PointInTime {
            cap.hold_still(req)?;
        }
        Ok(cap)
    }

    /// Snapshot what can be, freeze the rest.
    fn hold_still(&mut self, req: &CaptureRequest) -> Result<(), CaptureError> {
        // A filesystem on several source disks (an LV spanning two) is frozen once.
        let mut seen = std::collections::BTreeSet::new();
        let all: Vec<SourceFs> = self
            .sources
            .iter()
            .flat_map(|s| s.filesystems.iter().cloned())
            .filter(|f| seen.insert(f.fs_dev))
            .collect();
        let (read_only, writable): (Vec<_>, Vec<_>) = all.into_iter().partition(|f| f.read_only);
        self.read_only = read_only.into_iter().map(|f| f.mount_point).collect();
        let snapshotted = match req.lvm {
            LvmPolicy::Snapshot(sizing) => self.snapshot(&writable, sizing)?,
            LvmPolicy::Off => Vec::new(),
        };
        let to_freeze: Vec<FreezeTarget> = writable
            .iter()
            .filter(|f| !f.lv.as_ref().is_some_and(|lv| snapshotted.contains(lv)))
            .map(|f| FreezeTarget {
                mount_point: f.mount_point.clone(),
                fs_dev: f.fs_dev,
                fstype: f.fstype.clone(),
            })
            .collect();
        if to_freeze.is_empty() {
            return Ok(());
        }
        check_run_dir(&req.run_dir, &to_freeze)?;
        freeze::install_signal_thaw(AfterSignal::Terminate).map_err(CaptureError::Signals)?;
        let (mut guard, unsupported) = FreezeGuard::freeze_all(Arc::clone(&self.run), &to_freeze)?;
        if let Some(limit) = req.max_freeze {
            guard.set_limit(limit)?;
        }
        self.freeze = Some(guard);
        for e in unsupported {
            if let FreezeError::Unsupported {
                mount_point,
                fstype,
            } = e
            {
                tracing::warn!("{mount_point:?} ({fstype}) cannot be frozen: read live");
                self.not_frozen.push(NotFrozen {
                    mount_point,
                    fstype,
                });
            }
        }
        Ok(())
    }

    /// Create the snapshots that fit; returns the (vg, lv) snapshotted.
    fn snapshot(
        &mut self,
        writable: &[SourceFs],
        sizing: SnapshotSizing,
    ) -> Result<Vec<(String, String)>, CaptureError> {
        let wanted: Vec<(String, String)> = writable.iter().filter_map(|f| f.lv.clone()).collect();
        if wanted.is_empty() || !Lvm.available() {
            return Ok(Vec::new());
        }
        let rows = Lvm.lvs().map_err(|e| CaptureError::Lvs(Box::new(e)))?;
        let (plans, refused) = lvm::plan_snapshots(&rows, &wanted, sizing);
        for ((vg, lv), why) in &refused {
            if !matches!(why, NoSnapshot::Unknown) {
                tracing::info!("{vg}/{lv}: no snapshot ({why:?}); its filesystem is frozen");
            }
        }
        let segments = Lvm.segments().map_err(|e| CaptureError::Lvs(Box::new(e)))?;
        let pvs = Lvm.pvs().map_err(|e| CaptureError::Lvs(Box::new(e)))?;
        let mut done = Vec::new();
        for p in plans {
            let locate = |pv: &str| self.locate_pv(pv);
            let map =
                match extents::extent_map(&p.vg, &p.origin, &p.device(), &segments, &pvs, locate) {
                    Ok(m) => m,
                    Err(why) => {
                        tracing::info!("no snapshot: {why}; its filesystem is frozen");
                        continue;
                    }
                };
            Lvm.create(&p).map_err(|source| CaptureError::Lvm {
                vg: p.vg.clone(),
                lv: p.origin.clone(),
                source: Box::new(source),
            })?;
            self.snapshotted_at.get_or_insert_with(Instant::now);
            done.push((p.vg.clone(), p.origin.clone()));
            self.snapshots.push(p);
            self.substitutions.extend(map);
        }
        Ok(done)
    }

    /// The source disk a PV is on, and its start there: the disk itself or one of its
    /// partitions (a PV inside dm-crypt or md does not map).
    fn locate_pv(&self, pv: &str) -> Option<(PathBuf, u64)> {
        let dev = block_dev(Path::new(pv)).ok()?;
        self.sources.iter().find_map(|s| {
            s.stack
                .devices
                .iter()
                .find(|d| d.dev == dev)
                .and_then(|d| match d.kind {
                    DevKind::Disk => Some((s.disk.clone(), 0)),
                    DevKind::Partition { start } => Some((s.disk.clone(), start)),
                    _ => None,
                })
        })
    }

    /// Byte ranges of the source disks to read from snapshot devices instead (empty unless
    /// [`LvmPolicy::Snapshot`] took snapshots).
    pub fn substitutions(&self) -> &[Substitution] {
        &self.substitutions
    }

    /// The disks to read.
    pub fn sources(&self) -> &[SourceRead] {
        &self.sources
    }

    /// LV snapshots whose devices hold the point-in-time content of their origins.
    pub fn snapshots(&self) -> &[SnapshotPlan] {
        &self.snapshots
    }

    /// How long the freeze has lasted so far.
    pub fn frozen_for(&self) -> Duration {
        self.freeze
            .as_ref()
            .map(|g| g.elapsed())
            .unwrap_or_default()
    }

    /// Thaw, remove snapshots, run the post hook; every step runs even when one fails.
    pub fn end(mut self) -> Result<CaptureReport, CaptureError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<CaptureReport, CaptureError> {
        self.ended = true;
        let mut first: Option<CaptureError> = None;
        let mut note = |e: CaptureError| match first.take() {
            None => first = Some(e),
            Some(f) => first = Some(f.and(Some(e))),
        };
        let frozen = self
            .freeze
            .as_ref()
            .map(|g| g.mount_points())
            .unwrap_or_default();
        let mut took = Duration::ZERO;
        if let Some(g) = self.freeze.take() {
            match g.thaw() {
                Ok(d) => took = d,
                Err(e) => note(e.into()),
            }
        }
        let snapshots: Vec<String> = self
            .snapshots
            .iter()
            .map(|p| format!("{}/{}", p.vg, p.origin))
            .collect();
        if !self.snapshots.is_empty() {
            match Lvm.lvs() {
                Ok(rows) => {
                    for p in &self.snapshots {
                        if lvm::snapshot_invalid(&rows, &p.vg, &p.name) {
                            note(CaptureError::SnapshotOverflowed {
                                vg: p.vg.clone(),
                                lv: p.origin.clone(),
                            });
                        }
                    }
                }
                Err(e) => note(CaptureError::Lvs(Box::new(e))),
            }
        }
        self.substitutions.clear();
        let snapshot_held = self
            .snapshotted_at
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        for p in std::mem::take(&mut self.snapshots) {
            if let Err(source) = Lvm.remove(&p.vg, &p.name) {
                note(CaptureError::Lvm {
                    vg: p.vg,
                    lv: p.name,
                    source: Box::new(source),
                });
            }
        }
        if let Some(post) = self.post.take() {
            if let Err(e) = hooks::run(&post, HookStage::PostCapture) {
                note(e.into());
            }
        }
        if let Some(e) = first {
            return Err(e);
        }
        let consistency = match self.mode {
            Mode::Live => Consistency::Live,
            Mode::PointInTime => Consistency::PointInTime {
                method: match (frozen.is_empty(), snapshots.is_empty()) {
                    (false, true) => Method::Freeze,
                    (true, false) => Method::LvmSnapshot,
                    (false, false) => Method::LvmSnapshotAndFreeze,
                    (true, true) => Method::NoneNeeded,
                },
                frozen,
                snapshots,
                read_only: std::mem::take(&mut self.read_only),
                not_frozen: std::mem::take(&mut self.not_frozen),
                freeze_ms: millis(took),
                snapshot_ms: millis(snapshot_held),
            },
        };
        Ok(CaptureReport {
            consistency,
            freeze: took,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if !self.ended {
            if let Err(e) = self.finish() {
                tracing::error!("end the capture: {e}");
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Find the filesystems on each disk.
fn discover(req: &CaptureRequest) -> Result<Vec<SourceRead>, CaptureError> {
    let sys = req.root.join("sys");
    let mountinfo_path = req.root.join("proc/self/mountinfo");
    let text = std::fs::read_to_string(&mountinfo_path).map_err(|source| CaptureError::Read {
        path: mountinfo_path.clone(),
        source,
    })?;
    let mounts = mountinfo::parse(&text)?;
    let mut out = Vec::new();
    for disk in &req.disks {
        let dev = block_dev(disk)?;
        let stack = topology::disk_stack(&sys, disk, dev)?;
        let filesystems = topology::filesystems_on(&mounts, &stack.devices, |src| {
            block_dev(Path::new(src)).ok()
        });
        out.push(SourceRead {
            disk: disk.clone(),
            stack,
            filesystems,
        });
    }
    Ok(out)
}

fn block_dev(path: &Path) -> Result<DevId, CaptureError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).map_err(|source| CaptureError::Disk {
        disk: path.to_path_buf(),
        source,
    })?;
    if !m.file_type().is_block_device() {
        return Err(CaptureError::NotBlock {
            disk: path.to_path_buf(),
        });
    }
    Ok(DevId::from_raw(m.rdev()))
}

/// The run directory must not be on a filesystem about to be frozen (its state file is
/// written while they are).
fn check_run_dir(run_dir: &Path, targets: &[FreezeTarget]) -> Result<(), CaptureError> {
    let dev = freeze::fs_dev(run_dir).map_err(|source| CaptureError::Read {
        path: run_dir.to_path_buf(),
        source,
    })?;
    match targets.iter().find(|t| t.fs_dev == dev) {
        Some(t) => Err(CaptureError::RunDirOnSource {
            run_dir: run_dir.to_path_buf(),
            mount_point: t.mount_point.clone(),
        }),
        None => Ok(()),
    }
}

/// What [`cleanup_stale`] undid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub thawed: Vec<PathBuf>,
    pub removed_snapshots: Vec<String>,
}

/// Undo what a crashed capture left: thaw the filesystems in the run directory's state file
/// (those still mounted where they were), and remove LVM snapshots with our prefix and tag.
/// Refused while another capture holds the run directory. Call it when the agent starts.
pub fn cleanup_stale(run_dir: &Path) -> Result<CleanupReport, CaptureError> {
    let run = RunDir::lock(run_dir)?;
    let mut report = CleanupReport::default();
    let mut errors: Option<CaptureError> = None;
    if let Some(state) = run.read()? {
        for r in &state.frozen {
            match freeze::thaw_record(r) {
                Ok(true) => report.thawed.push(r.mount_point.clone()),
                Ok(false) => {}
                // Unmounted since, or another filesystem there now: nothing of ours to thaw.
                Err(FreezeError::Open { .. } | FreezeError::Moved { .. }) => {}
                Err(e) => errors = Some(CaptureError::from(e).and(errors.take())),
            }
        }
        if errors.is_none() {
            run.clear()?;
        }
    }
    if Lvm.available() {
        let rows = Lvm.lvs().map_err(|e| CaptureError::Lvs(Box::new(e)))?;
        for (vg, name) in lvm::stale_snapshots(&rows) {
            match Lvm.remove(&vg, &name) {
                Ok(()) => report.removed_snapshots.push(format!("{vg}/{name}")),
                Err(source) => {
                    let e = CaptureError::Lvm {
                        vg,
                        lv: name,
                        source: Box::new(source),
                    };
                    errors = Some(e.and(errors.take()));
                }
            }
        }
    }
    match errors {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Capture>();
        send::<CaptureError>();
    }

    #[test]
    fn consistency_serializes_for_the_manifest() {
        let c = Consistency::PointInTime {
            method: Method::Freeze,
            frozen: vec!["/".into()],
            snapshots: vec![],
            read_only: vec![],
            not_frozen: vec![NotFrozen {
                mount_point: "/boot/efi".into(),
                fstype: "vfat".into(),
            }],
            freeze_ms: 1234,
            snapshot_ms: 0,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert!(
            text.starts_with(r#"{"mode":"point-in-time","method":"freeze""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Consistency>(&text).unwrap(), c);
        assert_eq!(
            serde_json::to_string(&Consistency::Live).unwrap(),
            r#"{"mode":"live"}"#
        );
    }

    #[test]
    fn a_run_dir_on_a_frozen_filesystem_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dev = freeze::fs_dev(t.path()).unwrap();
        let target = FreezeTarget {
            mount_point: "/x".into(),
            fs_dev: dev,
            fstype: "ext4".into(),
        };
        let e = check_run_dir(t.path(), &[target]).unwrap_err();
        assert!(matches!(e, CaptureError::RunDirOnSource { .. }), "{e}");
        check_run_dir(t.path(), &[]).unwrap();
    }

    #[test]
    fn a_disk_that_is_not_a_block_device_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let mut req = CaptureRequest::new(vec![t.path().into()], Mode::Live, t.path().join("run"));
        req.root = "/".into();
        let e = Capture::begin(&req).err().unwrap();
        assert!(matches!(e, CaptureError::NotBlock { .. }), "{e}");
    }
}
