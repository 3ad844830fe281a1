//! What is on the restored disks: blkid records, partitions by slot, the device names the old
//! machine may have used for them, and the fstab entries to mount before the chroot step.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::tools::tool_ok;
use crate::linux::transform::{is_unstable_device, DeviceMap};

/// A block device as `blkid -o export` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDev {
    pub dev: String,
    pub fstype: String,
    pub uuid: String,
    pub label: String,
    pub partuuid: String,
}

/// Parses `blkid -o export` output for several devices (blank-line separated).
pub fn parse_blkid(text: &str) -> Vec<BlockDev> {
    let mut out = Vec::new();
    let mut cur = BlockDev::default();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.is_empty() {
            // A record without DEVNAME gets its device from the caller.
            if cur != BlockDev::default() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim_matches('"').to_owned();
        match k {
            "DEVNAME" => cur.dev = v,
            "TYPE" => cur.fstype = v,
            "UUID" => cur.uuid = v,
            "LABEL" => cur.label = v,
            "PARTUUID" => cur.partuuid = v,
            _ => {}
        }
    }
    out
}

/// The names the old machine may have given disk number `index` (0-based, snapshot order) whose
/// source was `source`: its own name when it was read from a device, and the usual SCSI/IDE/
/// virtio/Xen names by position.
pub fn old_disk_names(index: usize, source: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(name) = source.strip_prefix("/dev/") {
        if !name.contains('/') {
            out.push(name.to_owned());
        }
    }
    if let Some(letter) = u8::try_from(index)
        .ok()
        .filter(|i| *i < 26)
        .map(|i| (b'a' + i) as char)
    {
        for p in ["sd", "hd", "vd", "xvd"] {
            let n = format!("{p}{letter}");
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// `/dev/<disk><N>` (or `<disk>p<N>` when the disk name ends in a digit, like nvme0n1).
pub fn partition_name(disk: &str, slot: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("/dev/{disk}p{slot}")
    } else {
        format!("/dev/{disk}{slot}")
    }
}

/// One restored disk: every name the old machine may have used for it, and its partitions by
/// slot (`T` is a device node or a filesystem UUID).
pub type DiskPartitions<T> = (Vec<String>, Vec<(u32, T)>);

/// Old device names → filesystem UUIDs: each restored disk's partitions under every name the
/// old machine may have used for it.
pub fn device_map(disks: &[DiskPartitions<String>]) -> DeviceMap {
    let mut map = DeviceMap::new();
    for (names, parts) in disks {
        for name in names {
            for (slot, uuid) in parts {
                map.insert(partition_name(name, *slot), uuid.clone());
            }
        }
    }
    map
}

/// An fstab entry to mount before the chroot step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FstabMount {
    pub spec: String,
    pub dir: String,
    pub fstype: String,
}

/// The on-disk filesystems of fstab that the boot tools write to or read from (/boot, /boot/efi,
/// /usr, /var and below), parents before children; swap, network, virtual and noauto entries are
/// left out.
pub fn fstab_mounts(fstab: &str) -> Vec<FstabMount> {
    let mut out: Vec<FstabMount> = fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (spec, dir, fstype) = (*f.first()?, *f.get(1)?, *f.get(2)?);
            let opts = f.get(3).copied().unwrap_or("defaults");
            let wanted = ["/boot", "/usr", "/var"]
                .iter()
                .any(|p| dir == *p || dir.starts_with(&format!("{p}/")));
            let disk_fs = matches!(
                fstype,
                "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "vfat" | "auto"
            );
            (wanted && disk_fs && !opts.split(',').any(|o| o == "noauto")).then(|| FstabMount {
                spec: spec.to_owned(),
                dir: dir.to_owned(),
                fstype: fstype.to_owned(),
            })
        })
        .collect();
    out.sort_by_key(|m| m.dir.matches('/').count());
    out
}

/// Resolves an fstab device spec against the restored devices.
pub fn resolve_spec(spec: &str, devs: &[BlockDev], old: &DeviceMap) -> Option<String> {
    let spec = spec.trim_matches('"');
    let by = |f: &dyn Fn(&BlockDev) -> &str, v: &str| {
        devs.iter()
            .find(|d| !v.is_empty() && f(d).eq_ignore_ascii_case(v))
            .map(|d| d.dev.clone())
    };
    for (tag, path) in [
        ("UUID=", "/dev/disk/by-uuid/"),
        ("LABEL=", "/dev/disk/by-label/"),
        ("PARTUUID=", "/dev/disk/by-partuuid/"),
    ] {
        if let Some(v) = spec.strip_prefix(tag).or_else(|| spec.strip_prefix(path)) {
            let v = v.trim_matches('"');
            return match tag {
                "UUID=" => by(&|d| &d.uuid, v),
                "LABEL=" => by(&|d| &d.label, v),
                _ => by(&|d| &d.partuuid, v),
            };
        }
    }
    if let Some(uuid) = old.get(spec) {
        return by(&|d| &d.uuid, uuid);
    }
    devs.iter()
        .find(|d| d.dev == spec)
        .map(|d| d.dev.clone())
        .or_else(|| {
            (!is_unstable_device(spec) && Path::new(spec).exists()).then(|| spec.to_owned())
        })
}

/// Partitions of a whole-disk device, from sysfs, waiting briefly for their nodes.
pub(super) fn partitions(device: &Path) -> Vec<(u32, PathBuf)> {
    let Some(name) = std::fs::canonicalize(device)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return Vec::new();
    };
    let sys = Path::new("/sys/class/block").join(&name);
    let Ok(rd) = std::fs::read_dir(&sys) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let slot = std::fs::read_to_string(e.path().join("partition")).ok()?;
            Some((slot.trim().parse().ok()?, Path::new("/dev").join(n)))
        })
        .collect();
    out.sort();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.iter().any(|(_, n)| !n.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    out
}

/// Probes each node; the errors of nodes that could not be probed at all come back too.
pub(super) fn blkid(nodes: &[String]) -> (Vec<BlockDev>, Vec<String>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for n in nodes {
        // -p: probe the device itself, not a cache that predates the restore. 2: nothing found.
        match tool_ok("blkid", &["-p", "-o", "export", n], &[0, 2]) {
            Ok(text) => {
                let mut d = parse_blkid(&text);
                for x in &mut d {
                    if x.dev.is_empty() {
                        x.dev = n.clone();
                    }
                    // blkid -p reports PART_ENTRY_UUID rather than PARTUUID.
                    if x.partuuid.is_empty() {
                        x.partuuid = text
                            .lines()
                            .find_map(|l| l.strip_prefix("PART_ENTRY_UUID="))
                            .unwrap_or("")
                            .to_owned();
                    }
                }
                out.extend(d.into_iter().filter(|d| !d.fstype.is_empty()));
            }
            Err(e) => errors.push(e),
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkid_export_parses_several_devices() {
        let text = "DEVNAME=/dev/vda1\nUUID=1111\nTYPE=ext4\nPARTUUID=aaaa-01\n\nDEVNAME=/dev/vda5\nUUID=pv-uuid\nTYPE=LVM2_member\n\nDEVNAME=/dev/mapper/vg-root\nLABEL=\"my root\"\nUUID=2222\nTYPE=xfs\n";
        let d = parse_blkid(text);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].partuuid, "aaaa-01");
        assert_eq!(d[1].fstype, "LVM2_member");
        assert_eq!(d[2].label, "my root");
    }

    #[test]
    fn old_names_and_device_map() {
        assert_eq!(
            old_disk_names(0, "/srv/web.raw"),
            ["sda", "hda", "vda", "xvda"]
        );
        assert_eq!(
            old_disk_names(1, "/dev/sdc")[..2],
            ["sdc".to_string(), "sdb".into()]
        );
        assert_eq!(old_disk_names(0, "/dev/nvme0n1")[0], "nvme0n1");
        let map = device_map(&[(
            old_disk_names(0, "x"),
            vec![(1, "u1".into()), (5, "u5".into())],
        )]);
        assert_eq!(map["/dev/sda1"], "u1");
        assert_eq!(map["/dev/vda5"], "u5");
        assert_eq!(partition_name("nvme0n1", 2), "/dev/nvme0n1p2");
    }

    #[test]
    fn fstab_mounts_keep_boot_paths_in_order() {
        let fstab = "/dev/mapper/vg-root / xfs defaults 0 1\n\
                     UUID=E1 /boot/efi vfat umask=0077 0 1\n\
                     /dev/sda1 /boot ext4 defaults 0 2\n\
                     /dev/mapper/vg-swap none swap sw 0 0\n\
                     srv:/x /var/nfs nfs defaults 0 0\n\
                     /dev/sdb1 /var/lib ext4 noauto 0 0\n\
                     tmpfs /tmp tmpfs defaults 0 0\n";
        let m = fstab_mounts(fstab);
        let dirs: Vec<&str> = m.iter().map(|m| m.dir.as_str()).collect();
        assert_eq!(dirs, ["/boot", "/boot/efi"]);
    }

    #[test]
    fn specs_resolve_by_tag_old_name_or_mapper_path() {
        let devs = parse_blkid(
            "DEVNAME=/dev/vda1\nUUID=AB-CD\nTYPE=vfat\nPARTUUID=p-1\n\nDEVNAME=/dev/vda2\nUUID=u2\nTYPE=ext4\nLABEL=boot\n",
        );
        let old = device_map(&[(old_disk_names(0, "img"), vec![(2, "u2".into())])]);
        assert_eq!(
            resolve_spec("UUID=ab-cd", &devs, &old).as_deref(),
            Some("/dev/vda1")
        );
        assert_eq!(
            resolve_spec("LABEL=boot", &devs, &old).as_deref(),
            Some("/dev/vda2")
        );
        assert_eq!(
            resolve_spec("PARTUUID=p-1", &devs, &old).as_deref(),
            Some("/dev/vda1")
        );
        assert_eq!(
            resolve_spec("/dev/sda2", &devs, &old).as_deref(),
            Some("/dev/vda2")
        );
        assert_eq!(
            resolve_spec("/dev/disk/by-uuid/u2", &devs, &old).as_deref(),
            Some("/dev/vda2")
        );
        assert_eq!(resolve_spec("/dev/sdc1", &devs, &old), None);
        assert_eq!(resolve_spec("UUID=nope", &devs, &old), None);
    }
}
