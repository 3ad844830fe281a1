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

use std::ffi::CString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_format::layout::ContentKind;
use ferry_layout::{Action, DiskMapping, FsGrow, GrowTarget};

use crate::loopdev::LoopDevice;

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
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    #[error("{tool} {args} failed ({status}): {stderr}")]
    Tool {
        tool: String,
        args: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Device(String),
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
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
fn region(mapping: &DiskMapping) -> Result<(u64, u64), GrowError> {
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
            run_ok("e2fsck", &["-f", "-p", &d], &[0, 1])?;
            let out = run("resize2fs", &[&d])?;
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
        let out = run("xfs_growfs", &[&dir.to_string_lossy()]);
        let umounted = umount(&dir);
        let out = out?;
        umounted?;
        Ok(last_line(&out))
    });
    let _ = std::fs::remove_dir(&dir);
    result
}

fn cstr(p: &Path) -> Result<CString, GrowError> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| GrowError::Device(format!("{} contains a NUL byte", p.display())))
}

fn mount_xfs(dev: &Path, dir: &Path) -> Result<(), GrowError> {
    let (src, dst) = (cstr(dev)?, cstr(dir)?);
    let fstype = c"xfs";
    // SAFETY: valid NUL-terminated strings that outlive the call; no data argument.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(GrowError::Device(format!(
            "mount {} (xfs) on {}: {e}",
            dev.display(),
            dir.display()
        )));
    }
    Ok(())
}

fn umount(dir: &Path) -> Result<(), GrowError> {
    let d = cstr(dir)?;
    // SAFETY: a valid NUL-terminated path that outlives the call.
    if unsafe { libc::umount2(d.as_ptr(), 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(GrowError::Device(format!("umount {}: {e}", dir.display())));
    }
    Ok(())
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
        modprobe("dm_mod");
        if !device_mapper_available() {
            return Err(GrowError::Unavailable(
                "device-mapper, which this kernel does not offer".into(),
            ));
        }
    }
    if find_tool("lvm").is_none() {
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
    run(
        "lvm",
        &[
            "lvchange",
            "-ay",
            "--ignoremonitoring",
            "--devices",
            &pv_path,
            &vg_lv,
        ],
    )?;
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
    let deactivated = run("lvm", &["lvchange", "-an", "--devices", &pv_path, &vg_lv]);
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

/// Best effort: load a module (the rescue image loads drivers by modalias only, and neither
/// dm_mod nor loop has hardware to match).
pub(crate) fn modprobe(module: &str) {
    if find_tool("modprobe").is_some() {
        let _ = run("modprobe", &[module]);
    }
}

/// Directories searched for tools besides $PATH: PID 1 of the rescue image starts with no PATH
/// at all, and a shell's PATH may lack the sbin directories.
const TOOL_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(TOOL_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn run(tool: &str, args: &[&str]) -> Result<String, GrowError> {
    run_ok(tool, args, &[0])
}

fn run_ok(tool: &str, args: &[&str], ok: &[i32]) -> Result<String, GrowError> {
    let program = find_tool(tool).unwrap_or_else(|| PathBuf::from(tool));
    let out = Command::new(&program)
        .args(args)
        .output()
        .map_err(|source| GrowError::Spawn {
            tool: tool.into(),
            source,
        })?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(GrowError::Tool {
            tool: tool.into(),
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn last_line(out: &str) -> String {
    out.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
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
        assert_eq!(last_line("a\nb\n\n"), "b");
    }
}
