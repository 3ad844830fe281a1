//! What is stacked on a source disk and which mounted filesystems live there, from sysfs and
//! mountinfo.
//!
//! A disk's stack is the disk, its partitions (`/sys/class/block/<disk>/<part>/partition`), and
//! every device holding one of those, transitively (`holders/`): LVM logical volumes, dm-crypt,
//! md. Device-mapper devices are named by `dm/name`; an LVM LV is a dm device whose `dm/uuid` is
//! `LVM-` followed by exactly 64 characters (internal layers such as `-real`, `-cow` or
//! `-tpool` carry a suffix and are not LVs one can snapshot).
//!
//! Everything that reads takes the sysfs root (`/sys` in production, a temp tree in tests); the
//! decisions are pure functions over what was read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mountinfo::{DevId, MountEntry};

/// Deepest stack followed (disk → partition → crypt → LV is 3).
pub const MAX_DEPTH: usize = 16;
/// Most devices in one disk's stack.
pub const MAX_DEVICES: usize = 4096;
/// Largest sysfs attribute read.
const MAX_ATTR: u64 = 4096;
/// `/sys/class/block/*/start` is in 512-byte units whatever the sector size.
const SYSFS_SECTOR: u64 = 512;

/// What a device in a disk's stack is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DevKind {
    Disk,
    /// A partition starting `start` bytes into its disk.
    Partition {
        start: u64,
    },
    /// An LVM logical volume.
    Lvm {
        vg: String,
        lv: String,
    },
    /// Another device-mapper device (dm-crypt, an LVM internal layer, multipath…).
    DeviceMapper {
        name: String,
    },
    /// md RAID or anything else holding a device.
    Other,
}

/// One device in a disk's stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackedDev {
    /// The kernel's name (`sda1`, `dm-0`).
    pub name: String,
    pub dev: DevId,
    pub kind: DevKind,
}

/// A source disk and everything stacked on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStack {
    pub disk: PathBuf,
    /// The disk first, then partitions and holders in discovery order.
    pub devices: Vec<StackedDev>,
}

impl DiskStack {
    pub fn devs(&self) -> BTreeSet<DevId> {
        self.devices.iter().map(|d| d.dev).collect()
    }
}

/// A mounted filesystem that lives on a source disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFs {
    pub mount_point: PathBuf,
    /// The block device the filesystem is on.
    pub dev: DevId,
    /// `st_dev` of files on it (mountinfo's number; anonymous for btrfs).
    pub fs_dev: DevId,
    /// Its kernel name (`sda2`, `dm-1`).
    pub device: String,
    pub fstype: String,
    pub source: String,
    /// The super block is read-only: nothing can change it.
    pub read_only: bool,
    /// The LV it is on, when it is on one.
    pub lv: Option<(String, String)>,
}

/// Why a disk's stack could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{disk}: the device stack is deeper than {MAX_DEPTH} or wider than {MAX_DEVICES}; check {sys}/class/block/*/holders", sys = "/sys")]
    TooDeep { disk: PathBuf },
}

/// Read `disk`'s stack under the sysfs root `sys`; `dev` is the disk's device number.
pub fn disk_stack(sys: &Path, disk: &Path, dev: DevId) -> Result<DiskStack, TopologyError> {
    let link = sys.join("dev/block").join(dev.to_string());
    let target = std::fs::read_link(&link).map_err(|source| TopologyError::Io {
        path: link.clone(),
        source,
    })?;
    let name = file_name(&target, &link)?;
    let mut devices = vec![StackedDev {
        name: name.clone(),
        dev,
        kind: DevKind::Disk,
    }];
    for part in partitions(sys, &name)? {
        devices.push(part);
    }
    let mut seen: BTreeSet<String> = devices.iter().map(|d| d.name.clone()).collect();
    let mut frontier: Vec<(String, usize)> = devices.iter().map(|d| (d.name.clone(), 0)).collect();
    while let Some((below, depth)) = frontier.pop() {
        for holder in list(&sys.join("class/block").join(&below).join("holders"))? {
            if !seen.insert(holder.clone()) {
                continue;
            }
            if depth + 1 > MAX_DEPTH || devices.len() >= MAX_DEVICES {
                return Err(TopologyError::TooDeep {
                    disk: disk.to_path_buf(),
                });
            }
            devices.push(holder_dev(sys, &holder)?);
            frontier.push((holder, depth + 1));
        }
    }
    Ok(DiskStack {
        disk: disk.to_path_buf(),
        devices,
    })
}

fn partitions(sys: &Path, disk: &str) -> Result<Vec<StackedDev>, TopologyError> {
    let dir = sys.join("class/block").join(disk);
    let mut out = Vec::new();
    for name in list(&dir)? {
        let part = dir.join(&name);
        if !part.join("partition").is_file() {
            continue;
        }
        let start_path = part.join("start");
        let sectors: u64 = parse_attr(&start_path, &read_attr(&start_path)?)?;
        let start = sectors
            .checked_mul(SYSFS_SECTOR)
            .ok_or_else(|| TopologyError::Malformed {
                path: start_path.clone(),
                what: format!("start sector {sectors} overflows"),
            })?;
        out.push(StackedDev {
            dev: read_dev(&part.join("dev"))?,
            name,
            kind: DevKind::Partition { start },
        });
    }
    Ok(out)
}

fn holder_dev(sys: &Path, name: &str) -> Result<StackedDev, TopologyError> {
    let dir = sys.join("class/block").join(name);
    let dev = read_dev(&dir.join("dev"))?;
    let dm_name = dir.join("dm/name");
    let kind = if dm_name.is_file() {
        let dm = read_attr(&dm_name)?;
        let uuid = read_attr(&dir.join("dm/uuid")).unwrap_or_default();
        classify_dm(dm.trim(), uuid.trim())
    } else {
        DevKind::Other
    };
    Ok(StackedDev {
        name: name.to_string(),
        dev,
        kind,
    })
}

/// A device-mapper device's kind from its `dm/name` and `dm/uuid`.
pub fn classify_dm(name: &str, uuid: &str) -> DevKind {
    let top_level_lv = uuid
        .strip_prefix("LVM-")
        .is_some_and(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
    match decode_lvm_name(name) {
        Some((vg, lv)) if top_level_lv => DevKind::Lvm { vg, lv },
        _ => DevKind::DeviceMapper {
            name: name.to_string(),
        },
    }
}

/// Split an LVM device-mapper name `vg-lv` (a `-` inside a name is doubled) into its VG and LV.
pub fn decode_lvm_name(name: &str) -> Option<(String, String)> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let (vg, lv) = (&name[..i], &name[i + 1..]);
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some((vg.replace("--", "-"), lv.replace("--", "-")));
        }
        i += 1;
    }
    None
}

/// The mounted filesystems on a disk's devices, one per filesystem (the first mount of each;
/// bind mounts and further mounts of the same device are the same filesystem). `resolve`
/// gives the device number of a `/dev/…` source, for filesystems whose mountinfo number is
/// anonymous (btrfs reports `0:N`).
pub fn filesystems_on(
    mounts: &[MountEntry],
    stack: &[StackedDev],
    resolve: impl Fn(&str) -> Option<DevId>,
) -> Vec<SourceFs> {
    let by_dev: BTreeMap<DevId, &StackedDev> = stack.iter().map(|d| (d.dev, d)).collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for m in mounts {
        let dev = if by_dev.contains_key(&m.dev) {
            m.dev
        } else if m.dev.major == 0 && m.source.starts_with("/dev/") {
            match resolve(&m.source) {
                Some(d) if by_dev.contains_key(&d) => d,
                _ => continue,
            }
        } else {
            continue;
        };
        if !seen.insert(dev) {
            continue;
        }
        let Some(sd) = by_dev.get(&dev) else { continue };
        out.push(SourceFs {
            mount_point: m.mount_point.clone(),
            dev,
            fs_dev: m.dev,
            device: sd.name.clone(),
            fstype: m.fstype.clone(),
            source: m.source.clone(),
            read_only: m.super_read_only(),
            lv: match &sd.kind {
                DevKind::Lvm { vg, lv } => Some((vg.clone(), lv.clone())),
                _ => None,
            },
        });
    }
    out
}

fn file_name(target: &Path, link: &Path) -> Result<String, TopologyError> {
    target
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| TopologyError::Malformed {
            path: link.to_path_buf(),
            what: format!("link target {} has no device name", target.display()),
        })
}

/// Entry names of a directory, sorted; a missing directory is empty.
fn list(dir: &Path) -> Result<Vec<String>, TopologyError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TopologyError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| TopologyError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_string());
        }
        if names.len() > MAX_DEVICES {
            return Err(TopologyError::Malformed {
                path: dir.to_path_buf(),
                what: format!("more than {MAX_DEVICES} entries"),
            });
        }
    }
    names.sort();
    Ok(names)
}

fn read_attr(path: &Path) -> Result<String, TopologyError> {
    let io = |source| TopologyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut s = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_ATTR)
        .read_to_string(&mut s)
        .map_err(io)?;
    Ok(s)
}

fn parse_attr<T: std::str::FromStr>(path: &Path, text: &str) -> Result<T, TopologyError> {
    text.trim().parse().map_err(|_| TopologyError::Malformed {
        path: path.to_path_buf(),
        what: format!("expected a number, found {:?}", text.trim()),
    })
}

fn read_dev(path: &Path) -> Result<DevId, TopologyError> {
    read_attr(path)?
        .parse()
        .map_err(|what| TopologyError::Malformed {
            path: path.to_path_buf(),
            what,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo;

    const LV_UUID: &str = "LVM-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn lvm_names_decode() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("vg0-root", Some(("vg0", "root"))),
            ("my--vg-my--lv", Some(("my-vg", "my-lv"))),
            ("vg-lv-real", Some(("vg", "lv-real"))),
            ("vg--x-a--b--c", Some(("vg-x", "a-b-c"))),
            ("nodash", None),
            ("-lv", None),
            ("vg-", None),
            ("vg--", None),
        ];
        for (name, want) in cases {
            let got = decode_lvm_name(name);
            let want = want.map(|(a, b)| (a.to_string(), b.to_string()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn only_top_level_lvs_are_lvs() {
        assert_eq!(
            classify_dm("vg0-root", LV_UUID),
            DevKind::Lvm {
                vg: "vg0".into(),
                lv: "root".into()
            }
        );
        let real = format!("{LV_UUID}-real");
        assert!(matches!(
            classify_dm("vg0-root-real", &real),
            DevKind::DeviceMapper { .. }
        ));
        assert!(matches!(
            classify_dm("luks-1234", "CRYPT-LUKS2-1234-luks-1234"),
            DevKind::DeviceMapper { .. }
        ));
    }

    /// A fake sysfs: sda with sda1 and sda2; sda2 holds dm-0 (crypt), which holds dm-1 (an LV).
    fn fake_sys() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let s = t.path();
        let w = |rel: &str, text: &str| {
            let p = s.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let d = |rel: &str| std::fs::create_dir_all(s.join(rel)).unwrap();
        std::fs::create_dir_all(s.join("dev/block")).unwrap();
        std::os::unix::fs::symlink("../../devices/pci/block/sda", s.join("dev/block/8:0")).unwrap();
        w("class/block/sda/dev", "8:0\n");
        d("class/block/sda/holders");
        for (p, dev, start) in [("sda1", "8:1", "2048"), ("sda2", "8:2", "1050624")] {
            w(&format!("class/block/sda/{p}/dev"), &format!("{dev}\n"));
            w(&format!("class/block/sda/{p}/partition"), "1\n");
            w(&format!("class/block/sda/{p}/start"), &format!("{start}\n"));
            d(&format!("class/block/{p}/holders"));
        }
        d("class/block/sda2/holders/dm-0");
        w("class/block/dm-0/dev", "254:0\n");
        w("class/block/dm-0/dm/name", "cryptroot\n");
        w("class/block/dm-0/dm/uuid", "CRYPT-LUKS2-x-cryptroot\n");
        d("class/block/dm-0/holders/dm-1");
        w("class/block/dm-1/dev", "254:1\n");
        w("class/block/dm-1/dm/name", "vg0-root\n");
        w("class/block/dm-1/dm/uuid", &format!("{LV_UUID}\n"));
        t
    }

    #[test]
    fn a_stack_follows_partitions_and_holders() {
        let t = fake_sys();
        let st = disk_stack(t.path(), Path::new("/dev/sda"), DevId::new(8, 0)).unwrap();
        let names: Vec<&str> = st.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "sda1", "sda2", "dm-0", "dm-1"]);
        assert_eq!(
            st.devices[2].kind,
            DevKind::Partition {
                start: 1050624 * 512
            }
        );
        assert_eq!(
            st.devices[4].kind,
            DevKind::Lvm {
                vg: "vg0".into(),
                lv: "root".into()
            }
        );
        assert!(st.devs().contains(&DevId::new(254, 1)));
    }

    #[test]
    fn a_malformed_attribute_names_its_file() {
        let t = fake_sys();
        std::fs::write(t.path().join("class/block/dm-1/dev"), "garbage").unwrap();
        let e = disk_stack(t.path(), Path::new("/dev/sda"), DevId::new(8, 0)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("dm-1/dev"), "{msg}");
        assert!(msg.contains("major:minor"), "{msg}");
    }

    #[test]
    fn a_holder_loop_is_not_followed_forever() {
        let t = fake_sys();
        // dm-1 claims to hold sda2's holder dm-0 again: seen already, skipped.
        std::fs::create_dir_all(t.path().join("class/block/dm-1/holders/dm-0")).unwrap();
        let st = disk_stack(t.path(), Path::new("/dev/sda"), DevId::new(8, 0)).unwrap();
        assert_eq!(st.devices.len(), 5);
    }

    #[test]
    fn filesystems_are_matched_by_device_once_each() {
        let t = fake_sys();
        let st = disk_stack(t.path(), Path::new("/dev/sda"), DevId::new(8, 0)).unwrap();
        let mounts = mountinfo::parse(
            "\
1 0 254:1 / / rw - ext4 /dev/mapper/vg0-root rw
2 1 8:1 / /boot ro - ext4 /dev/sda1 ro
3 1 0:40 / /proc rw - proc proc rw
4 1 8:17 / /other rw - ext4 /dev/sdb1 rw
5 1 254:1 /srv /srv rw - ext4 /dev/mapper/vg0-root rw
6 1 0:50 /@ /data rw - btrfs /dev/sda2 rw
",
        )
        .unwrap();
        let resolve = |s: &str| (s == "/dev/sda2").then_some(DevId::new(8, 2));
        let fs = filesystems_on(&mounts, &st.devices, resolve);
        let points: Vec<_> = fs.iter().map(|f| f.mount_point.to_str().unwrap()).collect();
        assert_eq!(points, ["/", "/boot", "/data"]);
        assert_eq!(fs[0].lv, Some(("vg0".into(), "root".into())));
        assert!(fs[1].read_only);
        assert_eq!(fs[2].device, "sda2");
    }
}
