//! Growing a restored filesystem into the space a larger target gave it (`--grow`).
//!
//! The layout planner has already moved the partition's end (and the PV and LV); this step runs
//! the filesystem's own tool on exactly the grown range, reached through a read-write loop
//! device so it works the same on an image file, a whole disk and a partition of a disk whose
//! partitions the kernel has not scanned. Filesystems inside LVs need device-mapper: reported,
//! not attempted, with the command to run after boot.

use std::path::Path;
use std::process::Command;

use ferry_format::layout::ContentKind;
use ferry_layout::{Action, DiskMapping, FsGrow, GrowTarget};

/// What happened to one filesystem.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GrowOutcome {
    pub filesystem: String,
    pub grown: bool,
    pub detail: String,
}

/// Grow the filesystem `mapping.grow_fs` names on `target`, if any.
pub fn grow(target: &Path, mapping: &DiskMapping) -> Option<GrowOutcome> {
    let fs = mapping.grow_fs.as_ref()?;
    let name = format!("{} on {}", fs.fs.as_str(), describe(&fs.on));
    let range = match (&fs.on, &mapping.action) {
        (GrowTarget::Disk, _) => Some((0, mapping.target_size)),
        (GrowTarget::Partition { slot }, Action::Adapt(a)) => {
            a.partition.as_ref().filter(|p| p.slot == *slot).map(|p| {
                let ss = u64::from(mapping.target_sector_size);
                (p.first_lba * ss, (p.new_last_lba + 1 - p.first_lba) * ss)
            })
        }
        _ => None,
    };
    let outcome = |grown, detail: String| {
        Some(GrowOutcome {
            filesystem: name.clone(),
            grown,
            detail,
        })
    };
    let Some((offset, len)) = range else {
        return outcome(
            false,
            format!(
                "not grown here (needs device-mapper): after the first boot run `{}`",
                after_boot(fs)
            ),
        );
    };
    match run_grow(target, offset, len, fs) {
        Ok(detail) => outcome(true, detail),
        Err(e) => outcome(
            false,
            format!("{e}; after the first boot run `{}`", after_boot(fs)),
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

fn run_grow(target: &Path, offset: u64, len: u64, fs: &FsGrow) -> Result<String, String> {
    let tool = match fs.fs {
        ContentKind::Ext2 | ContentKind::Ext3 | ContentKind::Ext4 => "resize2fs",
        ContentKind::Xfs => "xfs_growfs",
        other => return Err(format!("growing {} is not supported", other.as_str())),
    };
    let loopdev = cmd(
        "losetup",
        &[
            "-f",
            "--show",
            "-o",
            &offset.to_string(),
            "--sizelimit",
            &len.to_string(),
            &target.display().to_string(),
        ],
    )
    .map_err(|e| format!("cannot attach a loop device to grow the filesystem: {e}"))?;
    let loopdev = loopdev.trim().to_string();
    let result = if tool == "resize2fs" {
        // resize2fs insists on a freshly checked filesystem; -p only fixes what is safe.
        cmd_ok("e2fsck", &["-f", "-p", &loopdev], &[0, 1])
            .and_then(|_| cmd("resize2fs", &[&loopdev]))
    } else {
        grow_xfs(&loopdev)
    };
    let _ = cmd("losetup", &["-d", &loopdev]);
    result.map(|out| {
        format!(
            "grown to {} bytes: {}",
            len,
            out.lines().last().unwrap_or("").trim()
        )
    })
}

fn grow_xfs(dev: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!("ferry-grow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let d = dir.display().to_string();
    let r = cmd("mount", &["-t", "xfs", dev, &d]).and_then(|_| {
        let out = cmd("xfs_growfs", &[&d]);
        let _ = cmd("umount", &[&d]);
        out
    });
    let _ = std::fs::remove_dir(&dir);
    r
}

fn cmd(prog: &str, args: &[&str]) -> Result<String, String> {
    cmd_ok(prog, args, &[0])
}

fn cmd_ok(prog: &str, args: &[&str], ok: &[i32]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{prog} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
