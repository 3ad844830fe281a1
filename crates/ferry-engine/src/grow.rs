//! Growing a restored filesystem into the space a larger target gave it (`--grow`).
//!
//! The layout planner has already moved the partition's end (and the PV and LV); this step runs
//! the filesystem's own tool on exactly the grown range: the partition's device node when the
//! kernel shows one with that range, else a loop device over the range (an image file, or a
//! disk whose partitions the kernel does not scan).
//!
//! A filesystem in an LV needs device-mapper: the LV is activated from the restored PV alone
//! (`lvm lvchange -ay --devices PV`), so a VG of the same name or the same UUIDs elsewhere on
//! the machine — the restore's own source, say — is never looked at; an LV of that name that is
//! already active is refused rather than touched. The LV is deactivated afterwards. Without
//! device-mapper or LVM tools the outcome says what to run after the first boot.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_format::layout::ContentKind;
use ferry_layout::{Action, DiskMapping, FsGrow, GrowTarget};
use ferry_sys::loopdev::{LoopDevice, LoopError};
use ferry_sys::tool::{self, last_line, Tool, ToolError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

const E2FSCK: Tool = Tool::new("e2fsck", "e2fsprogs");
const RESIZE2FS: Tool = Tool::new("resize2fs", "e2fsprogs");
const XFS_GROWFS: Tool = Tool::new("xfs_growfs", "xfsprogs");
const LVM: Tool = Tool::new("lvm", "lvm2");

/// What happened to one filesystem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrowOutcome {
    pub filesystem: String,
    pub grown: bool,
    pub detail: String,
}

/// Why a filesystem was not grown.
#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    /// Growing cannot be attempted on this machine (no device-mapper, no LVM tools).
    #[error("not grown here (needs {0})")]
    Unavailable(String),
    #[error("growing {0} is not supported")]
    Unsupported(&'static str),
    #[error("the plan names no grown range for {0}")]
    NoRange(String),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{0}")]
    Device(String),
    #[error(transparent)]
    Loop(#[from] LoopError),
}

/// Grow the filesystem `mapping.grow_fs` names on `target`, if any.
pub fn grow(target: &Path, mapping: &DiskMapping) -> Option<GrowOutcome> {
    let fs = mapping.grow_fs.as_ref()?;
    let name = format!("{} on {}", fs.fs.as_str(), describe(&fs.on));
    let result = region(mapping).and_then(|(offset, len)| match &fs.on {
        GrowTarget::Lv { vg, lv } => grow_in_lv(target, offset, len, vg, lv, fs),
        _ => {
            let dev = RegionDevice::open(target, offset, len)?;
            grow_fs(dev.path(), fs).map(|d| format!("grown to {len} bytes: {d}"))
        }
    });
    Some(match result {
        Ok(detail) => GrowOutcome {
            filesystem: name,
            grown: true,
            detail,
        },
        Err(e) => GrowOutcome {
            filesystem: name,
            grown: false,
            detail: format!("{e}: after the first boot run `{}`", after_boot(fs)),
        },
    })
}

/// The byte range of the disk that holds the grown filesystem (for an LV: its PV).
pub(crate) fn region(mapping: &DiskMapping) -> Result<(u64, u64), GrowError> {
    let fs = mapping
        .grow_fs
        .as_ref()
        .ok_or_else(|| GrowError::NoRange("nothing".into()))?;
    let adapt = match &mapping.action {
        Action::Adapt(a) => Some(a),
        Action::Identical => None,
    };
    let ss = u64::from(mapping.target_sector_size);
    match &fs.on {
        GrowTarget::Disk => Some((0, mapping.target_size)),
        GrowTarget::Partition { slot } => adapt
            .and_then(|a| a.partition.as_ref())
            .filter(|p| p.slot == *slot)
            .map(|p| (p.first_lba * ss, (p.new_last_lba + 1 - p.first_lba) * ss)),
        GrowTarget::Lv { .. } => adapt
            .and_then(|a| a.pv.as_ref())
            .map(|pv| (pv.offset, pv.new_size)),
    }
    .ok_or_else(|| GrowError::NoRange(describe(&fs.on)))
}

/// The tools [`grow`] runs for `fs`, for the plan's text.
pub(crate) fn tools(fs: &FsGrow) -> String {
    match fs.fs {
        ContentKind::Ext2 | ContentKind::Ext3 | ContentKind::Ext4 => {
            "e2fsck -f -p, then resize2fs".into()
        }
        ContentKind::Xfs => "mount it in a private directory, xfs_growfs, unmount".into(),
        other => format!(
            "not grown here ({} is not supported): `{}` after the first boot",
            other.as_str(),
            after_boot(fs)
        ),
    }
}

fn describe(on: &GrowTarget) -> String {
    match on {
        GrowTarget::Disk => "the whole disk".into(),
        GrowTarget::Partition { slot } => format!("partition {slot}"),
        GrowTarget::Lv { vg, lv } => format!("LV {vg}/{lv}"),
    }
}

fn after_boot(fs: &FsGrow) -> String {
    let dev = match &fs.on {
        GrowTarget::Lv { vg, lv } => format!("/dev/{vg}/{lv}"),
        _ => "<device>".into(),
    };
    match fs.fs {
        ContentKind::Xfs => "xfs_growfs <mount point>".into(),
        ContentKind::Btrfs => "btrfs filesystem resize max <mount point>".into(),
        ContentKind::Ntfs => format!("ntfsresize {dev}"),
        _ => format!("resize2fs {dev}"),
    }
}

/// A device for a byte range of the target: the whole target, a partition node of exactly
/// that range, or a loop device (detached on drop).
enum RegionDevice {
    Node(PathBuf),
    Loop(LoopDevice),
}

impl RegionDevice {
    fn open(target: &Path, offset: u64, len: u64) -> Result<RegionDevice, GrowError> {
        let is_block = std::fs::metadata(target)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false);
        if is_block {
            if offset == 0 && block_len(target) == Some(len) {
                return Ok(RegionDevice::Node(target.to_path_buf()));
            }
            // A stale kernel table shows another range: then the loop device is the truth.
            let parts = crate::blockdev::partitions(target).unwrap_or_default();
            if let Some(p) = parts
                .iter()
                .find(|p| p.start == offset && p.size == len && p.node.exists())
            {
                return Ok(RegionDevice::Node(p.node.clone()));
            }
        }
        Ok(RegionDevice::Loop(LoopDevice::attach(target, offset, len)?))
    }

    fn path(&self) -> &Path {
        match self {
            RegionDevice::Node(p) => p,
            RegionDevice::Loop(l) => l.path(),
        }
    }
}

fn block_len(dev: &Path) -> Option<u64> {
    let meta = std::fs::metadata(dev).ok()?;
    let rdev = meta.rdev();
    let sys = format!(
        "/sys/dev/block/{}:{}/size",
        libc::major(rdev),
        libc::minor(rdev)
    );
    let sectors: u64 = std::fs::read_to_string(sys).ok()?.trim().parse().ok()?;
    Some(sectors * 512)
}

/// Grow the filesystem on `dev` (unmounted) with its own tool.
fn grow_fs(dev: &Path, fs: &FsGrow) -> Result<String, GrowError> {
    let d = dev.to_string_lossy();
    match fs.fs {
        ContentKind::Ext2 | ContentKind::Ext3 | ContentKind::Ext4 => {
            // resize2fs insists on a freshly checked filesystem; -p only fixes what is safe.
            E2FSCK.run_ok(&["-f", "-p", &d], &[0, 1])?;
            let out = RESIZE2FS.run(&[&d])?;
            Ok(last_line(&out))
        }
        ContentKind::Xfs => grow_xfs(dev),
        other => Err(GrowError::Unsupported(other.as_str())),
    }
}

/// xfs grows only while mounted: mount in a private directory, xfs_growfs, unmount.
fn grow_xfs(dev: &Path) -> Result<String, GrowError> {
    let dir = std::env::temp_dir().join(format!("ferry-grow-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| GrowError::Device(format!("create {}: {e}", dir.display())))?;
    let result = mount_xfs(dev, &dir).and_then(|()| {
        let out = XFS_GROWFS.run(&[&dir.to_string_lossy()]);
        let umounted = umount(&dir);
        let out = out?;
        umounted?;
        Ok(last_line(&out))
    });
    let _ = std::fs::remove_dir(&dir);
    result
}

fn mount_xfs(dev: &Path, dir: &Path) -> Result<(), GrowError> {
    mount(Some(dev), dir, Some("xfs"), MsFlags::empty(), None::<&str>).map_err(|e| {
        GrowError::Device(format!(
            "mount {} (xfs) on {}: {}",
            dev.display(),
            dir.display(),
            std::io::Error::from(e)
        ))
    })
}

fn umount(dir: &Path) -> Result<(), GrowError> {
    umount2(dir, MntFlags::empty()).map_err(|e| {
        GrowError::Device(format!(
            "umount {}: {}",
            dir.display(),
            std::io::Error::from(e)
        ))
    })
}

/// The device-mapper name of an LV: dashes in either name doubled, joined by one dash.
pub fn dm_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// Activate `vg/lv` from the PV at `offset..offset+len` of `target` only, grow its filesystem,
/// deactivate it.
fn grow_in_lv(
    target: &Path,
    offset: u64,
    len: u64,
    vg: &str,
    lv: &str,
    fs: &FsGrow,
) -> Result<String, GrowError> {
    if !device_mapper_available() {
        tool::modprobe("dm_mod");
        if !device_mapper_available() {
            return Err(GrowError::Unavailable(
                "device-mapper, which this kernel does not offer".into(),
            ));
        }
    }
    if LVM.find().is_none() {
        return Err(GrowError::Unavailable(
            "the lvm tool, not installed here".into(),
        ));
    }
    let mapper = Path::new("/dev/mapper").join(dm_name(vg, lv));
    if mapper.exists() {
        return Err(GrowError::Device(format!(
            "{} already exists: an LV {vg}/{lv} is active on this machine (another disk, or the restore's source); \
             deactivate it (`vgchange -an {vg}`) and grow again, or grow after the first boot",
            mapper.display()
        )));
    }
    let pv = RegionDevice::open(target, offset, len)?;
    let pv_path = pv.path().to_string_lossy().into_owned();
    let vg_lv = format!("{vg}/{lv}");
    LVM.run(&[
        "lvchange",
        "-ay",
        "--ignoremonitoring",
        "--devices",
        &pv_path,
        &vg_lv,
    ])?;
    // Without udev, LVM makes the node itself; with udev it may lag a little.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !mapper.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !mapper.exists() {
        // Nothing of ours is active under that name: leave whatever LVM did alone.
        return Err(GrowError::Device(format!(
            "activating {vg_lv} from {pv_path} made no {}",
            mapper.display()
        )));
    }
    let result = match maps_onto(&mapper, pv.path()) {
        Ok(true) => grow_fs(&mapper, fs),
        Ok(false) => Err(GrowError::Device(format!(
            "{} does not map onto {pv_path}: not touched",
            mapper.display()
        ))),
        Err(e) => Err(e),
    };
    let deactivated = LVM.run(&["lvchange", "-an", "--devices", &pv_path, &vg_lv]);
    drop(pv);
    let detail = result?;
    deactivated?;
    Ok(format!(
        "{vg_lv} activated from {pv_path} only, grown, deactivated: {detail}"
    ))
}

/// True when the device-mapper device `mapper` sits directly on `dev` (sysfs `slaves`).
fn maps_onto(mapper: &Path, dev: &Path) -> Result<bool, GrowError> {
    let sys_of = |p: &Path| -> Result<PathBuf, GrowError> {
        let m = std::fs::metadata(p)
            .map_err(|e| GrowError::Device(format!("stat {}: {e}", p.display())))?;
        let r = m.rdev();
        let link = format!("/sys/dev/block/{}:{}", libc::major(r), libc::minor(r));
        std::fs::canonicalize(&link).map_err(|e| GrowError::Device(format!("{link}: {e}")))
    };
    let (dm, under) = (sys_of(mapper)?, sys_of(dev)?);
    let Some(name) = under.file_name() else {
        return Ok(false);
    };
    Ok(dm.join("slaves").join(name).exists())
}

/// /proc/misc lists device-mapper once the driver is loaded (a /dev/mapper/control node alone
/// proves nothing: it can exist without the driver).
fn device_mapper_available() -> bool {
    std::fs::read_to_string("/proc/misc")
        .map(|s| s.lines().any(|l| l.trim().ends_with(" device-mapper")))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_format::layout::LvmUuid;
    use ferry_layout::{Adaptation, PartitionGrow, PvGrow};

    #[test]
    fn dm_names_double_dashes() {
        assert_eq!(dm_name("vg0", "root"), "vg0-root");
        assert_eq!(dm_name("my-vg", "lv-1"), "my--vg-lv--1");
    }

    fn mapping(on: GrowTarget, a: Adaptation) -> DiskMapping {
        DiskMapping {
            disk: "d".into(),
            target: "/t".into(),
            source_size: 1 << 30,
            target_size: 3 << 29,
            source_sector_size: 512,
            target_sector_size: 4096,
            table: String::new(),
            overwrites_data: false,
            action: Action::Adapt(Box::new(a)),
            patches: Vec::new(),
            grow_fs: Some(FsGrow {
                on,
                fs: ContentKind::Xfs,
                uuid: None,
                new_size: 0,
            }),
        }
    }

    #[test]
    fn regions_come_from_the_plan() {
        let part = PartitionGrow {
            slot: 5,
            first_lba: 256,
            old_last_lba: 1000,
            new_last_lba: 2047,
            extended: None,
        };
        let pv = PvGrow {
            vg: "vg0".into(),
            pv_uuid: LvmUuid::from_raw(&[b'a'; 32]).unwrap(),
            offset: 1 << 20,
            old_size: 10,
            new_size: 7 << 20,
            old_pe_count: 1,
            new_pe_count: 2,
            seqno: 3,
        };
        let a = Adaptation {
            partition: Some(part),
            pv: Some(pv),
            ..Adaptation::default()
        };
        let m = mapping(GrowTarget::Partition { slot: 5 }, a.clone());
        assert_eq!(region(&m).unwrap(), (256 * 4096, 1792 * 4096));
        let m = mapping(GrowTarget::Partition { slot: 4 }, a.clone());
        assert!(region(&m).is_err());
        let lv = GrowTarget::Lv {
            vg: "vg0".into(),
            lv: "root".into(),
        };
        assert_eq!(region(&mapping(lv.clone(), a)).unwrap(), (1 << 20, 7 << 20));
        assert!(region(&mapping(lv, Adaptation::default())).is_err());
        let m = mapping(GrowTarget::Disk, Adaptation::default());
        assert_eq!(region(&m).unwrap(), (0, 3 << 29));
    }

    #[test]
    fn failures_say_what_to_run_after_boot() {
        let lv = GrowTarget::Lv {
            vg: "vg0".into(),
            lv: "root".into(),
        };
        let out = grow(
            Path::new("/nonexistent"),
            &mapping(lv, Adaptation::default()),
        )
        .unwrap();
        assert!(!out.grown);
        assert!(
            out.detail.contains("after the first boot run `xfs_growfs"),
            "{}",
            out.detail
        );
    }
}
