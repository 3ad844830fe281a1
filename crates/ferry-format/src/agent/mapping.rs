//! Where each snapshot disk goes: [`Mapping`]s and their [`MapTarget`]s, and their pure
//! resolution against an agent's inventory ([`resolve_mappings`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Disk, Inventory};
use crate::names::{check_name, NameKind};

/// Where a snapshot disk goes: a device of the agent's machine, or the single blank disk that is
/// large enough, or the disk with a given serial number (both resolved by the appliance when the
/// agent picks the job up). JSON: `"auto"`, `"serial:<serial>"` or the device path `"/dev/vda"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum MapTarget {
    Auto,
    /// Kernel device name, without `/dev/`.
    Device(String),
    /// The disk whose serial number (as the inventory reports it) is this.
    Serial(String),
}

impl fmt::Display for MapTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapTarget::Auto => f.write_str("auto"),
            MapTarget::Device(d) => write!(f, "/dev/{d}"),
            MapTarget::Serial(s) => write!(f, "serial:{s}"),
        }
    }
}

impl From<MapTarget> for String {
    fn from(t: MapTarget) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for MapTarget {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for MapTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(MapTarget::Auto);
        }
        if let Some(serial) = s.strip_prefix("serial:") {
            let ok = !serial.is_empty()
                && serial.len() <= 128
                && serial.bytes().all(|b| b.is_ascii_graphic());
            return if ok {
                Ok(MapTarget::Serial(serial.to_string()))
            } else {
                Err(format!(
                    "{s:?}: a serial number is 1 to 128 printable characters"
                ))
            };
        }
        let name = s.strip_prefix("/dev/").unwrap_or(s);
        check_name(NameKind::Disk, name)
            .map(|()| MapTarget::Device(name.to_string()))
            .map_err(|_| {
                format!(
                    "{s:?} is not a target: use a device as the agent sees it (/dev/vda) or auto"
                )
            })
    }
}

/// One snapshot disk onto one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub disk: String,
    pub target: MapTarget,
}

/// `DISK=TARGET`, as [`Mapping::from_str`] reads it.
impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.disk, self.target)
    }
}

impl std::str::FromStr for Mapping {
    type Err = String;
    /// `DISK=TARGET`, e.g. `sda=/dev/vda` or `sda=auto`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (disk, target) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not DISK=TARGET (e.g. sda=/dev/vda or sda=auto)"))?;
        check_name(NameKind::Disk, disk).map_err(|e| e.to_string())?;
        Ok(Mapping {
            disk: disk.to_string(),
            target: target.parse()?,
        })
    }
}

/// A snapshot disk to place: its name and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskNeed {
    pub disk: String,
    pub size: u64,
}

/// Resolve a job's mappings against an agent's inventory, before anything is written. Explicit
/// targets must exist, be large enough and be blank unless `overwrite`; `auto` takes the single
/// blank, non-removable disk of at least the snapshot disk's size that no other mapping uses. Every failure is a
/// sentence that says what to do. `needs` holds each mapped disk's size (from the manifest).
pub fn resolve_mappings(
    mappings: &[Mapping],
    needs: &[DiskNeed],
    inv: &Inventory,
    overwrite: bool,
) -> Result<Vec<Mapping>, String> {
    let size_of = |disk: &str| {
        needs.iter().find(|n| n.disk == disk).map(|n| n.size).ok_or_else(|| {
            let names: Vec<&str> = needs.iter().map(|n| n.disk.as_str()).collect();
            format!("the snapshot has no disk {disk:?} (it has: {}): create the job again with --map for one of those", names.join(", "))
        })
    };
    let mut used: Vec<String> = Vec::new();
    let mut chosen: Vec<Option<String>> = vec![None; mappings.len()];
    // Explicit targets first, so `auto` never takes a disk that is named elsewhere.
    for (i, m) in mappings.iter().enumerate() {
        if mappings[..i].iter().any(|o| o.disk == m.disk) {
            return Err(format!(
                "disk {} is mapped twice: give one --map per disk",
                m.disk
            ));
        }
        let by_serial;
        let dev = match &m.target {
            MapTarget::Device(dev) => dev,
            MapTarget::Serial(serial) => {
                let Some(d) = inv
                    .disks
                    .iter()
                    .find(|d| d.serial.as_deref() == Some(serial))
                else {
                    return Err(format!(
                        "no disk with serial {serial:?} for disk {} on this machine (its disks: {}): create the job again with a serial from `appliance agents`, a device or auto",
                        m.disk,
                        disk_list(inv)
                    ));
                };
                by_serial = d.name.clone();
                &by_serial
            }
            MapTarget::Auto => continue,
        };
        let need = size_of(&m.disk)?;
        let Some(d) = inv.disk(dev) else {
            return Err(format!(
                "target /dev/{dev} for disk {} does not exist on this machine (its disks: {}): create the job again with one of those or auto",
                m.disk,
                disk_list(inv)
            ));
        };
        if d.size < need {
            return Err(format!(
                "target /dev/{dev} is too small for disk {}: {} bytes, the snapshot's disk needs {need} bytes ({} more); attach a larger disk or map another one",
                m.disk,
                d.size,
                need - d.size
            ));
        }
        if let Some(why) = &d.protected {
            return Err(format!(
                "target /dev/{dev} for disk {} is never written: {why}; map the disk onto another device",
                m.disk
            ));
        }
        if !d.blank && !overwrite {
            return Err(format!(
                "target /dev/{dev} for disk {} holds data ({}): if it may be overwritten, create the job again with --overwrite",
                m.disk,
                d.holds.as_deref().unwrap_or("it is not all zeros")
            ));
        }
        if used.contains(dev) {
            return Err(format!(
                "/dev/{dev} is the target of two disks: map each disk to its own device"
            ));
        }
        used.push(dev.clone());
        chosen[i] = Some(dev.clone());
    }
    for (i, m) in mappings.iter().enumerate() {
        if m.target != MapTarget::Auto {
            continue;
        }
        let need = size_of(&m.disk)?;
        let fits: Vec<&Disk> = inv
            .disks
            .iter()
            .filter(|d| {
                d.blank
                    && d.protected.is_none()
                    && !d.removable
                    && d.size >= need
                    && !used.contains(&d.name)
            })
            .collect();
        match fits.as_slice() {
            [one] => {
                used.push(one.name.clone());
                chosen[i] = Some(one.name.clone());
            }
            [] => {
                return Err(format!(
                    "auto: no blank disk of at least {need} bytes for disk {} (this machine has: {}): attach one, or name the target with --map {}=/dev/NAME --overwrite",
                    m.disk,
                    disk_list(inv),
                    m.disk
                ))
            }
            many => {
                let names: Vec<String> = many.iter().map(|d| format!("/dev/{}", d.name)).collect();
                return Err(format!(
                    "auto is ambiguous for disk {}: {} are all blank and large enough; name the target with --map {}=/dev/NAME",
                    m.disk,
                    names.join(", "),
                    m.disk
                ));
            }
        }
    }
    Ok(mappings
        .iter()
        .zip(chosen)
        .map(|(m, dev)| Mapping {
            disk: m.disk.clone(),
            target: MapTarget::Device(dev.unwrap_or_default()),
        })
        .collect())
}

fn disk_list(inv: &Inventory) -> String {
    if inv.disks.is_empty() {
        return "no disks".into();
    }
    let each: Vec<String> = inv
        .disks
        .iter()
        .map(|d| {
            format!(
                "/dev/{} {} bytes{}",
                d.name,
                d.size,
                if d.blank { " blank" } else { " holding data" }
            )
        })
        .collect();
    each.join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::testing::{disk, inv, map, GB};
    use super::*;

    #[test]
    fn the_boot_medium_is_never_a_target_whatever_the_flags() {
        let need = [DiskNeed {
            disk: "sda".into(),
            size: GB,
        }];
        let mut iso = disk("sdb", 2 * GB, false);
        iso.protected = Some("it holds an ISO 9660 filesystem (FERRY_RESCUE)".into());
        let machine = inv(vec![iso]);
        for overwrite in [false, true] {
            let e =
                resolve_mappings(&[map("sda=/dev/sdb")], &need, &machine, overwrite).unwrap_err();
            assert!(e.contains("never written") && e.contains("ISO 9660"), "{e}");
        }
        let e = resolve_mappings(&[map("sda=auto")], &need, &machine, true).unwrap_err();
        assert!(e.contains("no blank disk"), "{e}");
        let e = resolve_mappings(
            &[map("sda=/dev/vda")],
            &need,
            &inv(vec![disk("vda", GB, false)]),
            false,
        )
        .unwrap_err();
        assert!(
            e.contains("ext2/3/4 filesystem at offset 1 MiB") && e.contains("--overwrite"),
            "{e}"
        );
    }

    #[test]
    fn auto_resolution_table() {
        let need = [DiskNeed {
            disk: "sda".into(),
            size: 10 * GB,
        }];
        let auto = [map("sda=auto")];
        // (disks, Ok(target) or Err(fragment))
        let cases: Vec<(Vec<Disk>, Result<&str, &str>)> = vec![
            (vec![disk("vda", 20 * GB, true)], Ok("vda")),
            (vec![disk("vda", 10 * GB, true)], Ok("vda")),
            (
                vec![disk("vda", 20 * GB, false), disk("vdb", 20 * GB, true)],
                Ok("vdb"),
            ),
            (
                vec![disk("vda", 5 * GB, true), disk("vdb", 20 * GB, true)],
                Ok("vdb"),
            ),
            (vec![], Err("no blank disk")),
            (vec![disk("vda", 20 * GB, false)], Err("no blank disk")),
            (
                vec![disk("vda", 9 * GB, true)],
                Err("no blank disk of at least 10000000000 bytes"),
            ),
            (
                vec![disk("vda", 20 * GB, true), disk("vdb", 30 * GB, true)],
                Err("ambiguous for disk sda: /dev/vda, /dev/vdb"),
            ),
        ];
        for (disks, want) in cases {
            let got = resolve_mappings(&auto, &need, &inv(disks.clone()), false);
            match (want, got) {
                (Ok(dev), Ok(m)) => assert_eq!(
                    m,
                    vec![Mapping {
                        disk: "sda".into(),
                        target: MapTarget::Device(dev.into())
                    }],
                    "{disks:?}"
                ),
                (Err(frag), Err(e)) => assert!(e.contains(frag), "{disks:?}: {e}"),
                (want, got) => panic!("{disks:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn explicit_targets_are_checked() {
        let needs = [
            DiskNeed {
                disk: "sda".into(),
                size: 10 * GB,
            },
            DiskNeed {
                disk: "sdb".into(),
                size: GB,
            },
        ];
        let machine = inv(vec![
            disk("vda", 20 * GB, true),
            disk("vdb", 5 * GB, true),
            disk("vdc", 20 * GB, false),
        ]);
        let r = |maps: &[&str], overwrite: bool| {
            let maps: Vec<Mapping> = maps.iter().map(|m| map(m)).collect();
            resolve_mappings(&maps, &needs, &machine, overwrite)
        };
        let err = |maps: &[&str]| r(maps, false).unwrap_err();
        assert!(err(&["sda=/dev/vdb"]).contains("too small"));
        assert!(err(&["sda=/dev/vdx"]).contains("does not exist"));
        assert!(err(&["sda=/dev/vdc"]).contains("--overwrite"));
        assert!(r(&["sda=/dev/vdc"], true).is_ok());
        assert!(err(&["sdz=auto"]).contains("has no disk \"sdz\""));
        assert!(err(&["sda=vda", "sda=vdb"]).contains("mapped twice"));
        assert!(err(&["sda=vda", "sdb=vda"]).contains("two disks"));
        // auto never takes a disk named explicitly: vdb is then the only blank one that fits sdb.
        let ok = r(&["sdb=auto", "sda=/dev/vda"], false).unwrap();
        assert_eq!(ok[0].target, MapTarget::Device("vdb".into()));
        assert_eq!(ok[1].target, MapTarget::Device("vda".into()));
    }

    #[test]
    fn targets_by_serial() {
        let needs = [
            DiskNeed {
                disk: "sda".into(),
                size: 10 * GB,
            },
            DiskNeed {
                disk: "sdb".into(),
                size: GB,
            },
        ];
        let mut a = disk("vda", 20 * GB, true);
        a.serial = Some("SN-BIG".into());
        let mut b = disk("vdb", 20 * GB, true);
        b.serial = Some("SN-OTHER".into());
        let machine = inv(vec![a, b]);
        let maps = |m: &[&str]| -> Vec<Mapping> { m.iter().map(|x| map(x)).collect() };
        // By serial, in the opposite order of the device names; auto then takes what is left.
        let ok = resolve_mappings(
            &maps(&["sda=serial:SN-OTHER", "sdb=auto"]),
            &needs,
            &machine,
            false,
        )
        .unwrap();
        assert_eq!(ok[0].target, MapTarget::Device("vdb".into()));
        assert_eq!(ok[1].target, MapTarget::Device("vda".into()));
        let e = resolve_mappings(&maps(&["sda=serial:NOPE"]), &needs, &machine, false).unwrap_err();
        assert!(e.contains("no disk with serial \"NOPE\""), "{e}");
        let e = resolve_mappings(
            &maps(&["sda=serial:SN-BIG", "sdb=serial:SN-BIG"]),
            &needs,
            &machine,
            false,
        )
        .unwrap_err();
        assert!(e.contains("two disks"), "{e}");
    }

    #[test]
    fn targets_parse() {
        assert!("../etc".parse::<MapTarget>().is_err());
        assert_eq!(
            "serial:QM0001".parse::<MapTarget>().unwrap(),
            MapTarget::Serial("QM0001".into())
        );
        assert_eq!(
            MapTarget::Serial("QM0001".into()).to_string(),
            "serial:QM0001"
        );
        assert!("serial:".parse::<MapTarget>().is_err());
        assert!("serial:a b".parse::<MapTarget>().is_err());
        assert!("sda".parse::<Mapping>().is_err());
        assert_eq!(
            "/dev/nvme0n1".parse::<MapTarget>().unwrap(),
            MapTarget::Device("nvme0n1".into())
        );
    }
}
