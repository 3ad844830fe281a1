//! Where an LV's bytes lie on the source disks, so a reader of the whole disk can take them
//! from the LV's snapshot instead: the substitution that makes an LVM snapshot a point-in-time
//! capture of the disk.
//!
//! From `lvs --segments` (each linear segment: its offset in the LV, its size, and its physical
//! extents on one PV, `seg_pe_ranges` = `/dev/sda2:0-255`) and `pvs` (each PV's `pe_start`),
//! plus where each PV starts on a disk (a partition's start, or 0 for a whole-disk PV):
//!
//! ```text
//! disk offset = PV's start on the disk + pe_start + first extent * extent size
//! snapshot offset = the segment's offset in the LV
//! ```
//! Only plain PVs on the disk map: a PV inside dm-crypt or md holds transformed bytes, and a
//! striped segment interleaves several PVs; such LVs are frozen instead. The report text is
//! parsed like any tool output: bounded, typed errors, checked arithmetic.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::lvm::LvmError;

/// Largest report parsed.
const MAX_REPORT: usize = 16 << 20;

/// The columns [`parse_segments`] reads (`lvs --segments`).
pub const SEGMENT_COLUMNS: &str = "vg_name,lv_name,segtype,seg_start,seg_size,seg_pe_ranges";
/// The columns [`parse_pvs`] reads (`pvs`).
pub const PV_COLUMNS: &str = "pv_name,vg_name,pe_start,vg_extent_size";

/// One segment of an LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub vg: String,
    pub lv: String,
    pub segtype: String,
    /// Offset of the segment in the LV, bytes.
    pub start: u64,
    pub size: u64,
    /// `/dev/sda2:0-255` ranges, space-separated in the report.
    pub pe_ranges: Vec<PeRange>,
}

/// Physical extents `first..=last` on a PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeRange {
    pub pv: String,
    pub first: u64,
    pub last: u64,
}

/// A PV's data area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pv {
    pub name: String,
    pub vg: String,
    /// Where extent 0 starts, bytes into the PV.
    pub pe_start: u64,
    pub extent_size: u64,
}

/// A byte range of a source disk to read from a snapshot device instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Substitution {
    pub disk: PathBuf,
    pub disk_offset: u64,
    pub len: u64,
    pub device: PathBuf,
    pub device_offset: u64,
}

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<Section<T>>,
}

#[derive(Deserialize)]
struct Section<T> {
    #[serde(default = "Vec::new")]
    seg: Vec<T>,
    #[serde(default = "Vec::new")]
    pv: Vec<T>,
}

#[derive(Deserialize)]
struct RawSeg {
    vg_name: String,
    lv_name: String,
    segtype: String,
    seg_start: String,
    seg_size: String,
    seg_pe_ranges: String,
}

#[derive(Deserialize)]
struct RawPv {
    pv_name: String,
    vg_name: String,
    pe_start: String,
    vg_extent_size: String,
}

fn rows<T: for<'de> Deserialize<'de>>(text: &str) -> Result<Vec<T>, LvmError> {
    if text.len() > MAX_REPORT {
        return Err(LvmError::Report(format!(
            "{} bytes, more than {MAX_REPORT}",
            text.len()
        )));
    }
    let r: Report<T> = serde_json::from_str(text).map_err(|e| LvmError::Report(e.to_string()))?;
    Ok(r.report
        .into_iter()
        .flat_map(|s| s.seg.into_iter().chain(s.pv))
        .collect())
}

fn bytes(what: &str, v: &str) -> Result<u64, LvmError> {
    v.trim().parse().map_err(|_| {
        LvmError::Report(format!(
            "{what} {v:?} is not a byte count (run with --units b --nosuffix)"
        ))
    })
}

/// Parse `lvs --segments --reportformat json --units b --nosuffix -o SEGMENT_COLUMNS`.
pub fn parse_segments(text: &str) -> Result<Vec<Segment>, LvmError> {
    rows::<RawSeg>(text)?
        .into_iter()
        .map(|r| {
            let name = format!("{}/{}", r.vg_name, r.lv_name);
            Ok(Segment {
                start: bytes(&format!("{name}: seg_start"), &r.seg_start)?,
                size: bytes(&format!("{name}: seg_size"), &r.seg_size)?,
                pe_ranges: r
                    .seg_pe_ranges
                    .split_whitespace()
                    .map(|t| {
                        parse_pe_range(t).map_err(|e| LvmError::Report(format!("{name}: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
                vg: r.vg_name,
                lv: r.lv_name,
                segtype: r.segtype,
            })
        })
        .collect()
}

/// `/dev/sda2:0-255` (the PV name may itself contain ':', so split at the last one).
pub fn parse_pe_range(t: &str) -> Result<PeRange, String> {
    let bad = || format!("extent range {t:?} is not PV:FIRST-LAST");
    let (pv, range) = t.rsplit_once(':').ok_or_else(bad)?;
    let (a, b) = range.split_once('-').ok_or_else(bad)?;
    let first: u64 = a.parse().map_err(|_| bad())?;
    let last: u64 = b.parse().map_err(|_| bad())?;
    if pv.is_empty() || last < first {
        return Err(bad());
    }
    Ok(PeRange {
        pv: pv.to_string(),
        first,
        last,
    })
}

/// Parse `pvs --reportformat json --units b --nosuffix -o PV_COLUMNS`.
pub fn parse_pvs(text: &str) -> Result<Vec<Pv>, LvmError> {
    rows::<RawPv>(text)?
        .into_iter()
        .map(|r| {
            Ok(Pv {
                pe_start: bytes(&format!("{}: pe_start", r.pv_name), &r.pe_start)?,
                extent_size: bytes(&format!("{}: vg_extent_size", r.pv_name), &r.vg_extent_size)?,
                name: r.pv_name,
                vg: r.vg_name,
            })
        })
        .collect()
}

/// Why an LV's bytes cannot be substituted on the disks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{lv}: segment at {start} is {segtype}, only linear segments map to one PV")]
    NotLinear {
        lv: String,
        start: u64,
        segtype: String,
    },
    #[error("{lv}: PV {pv} is not a partition or whole source disk (dm-crypt, md?)")]
    PvNotOnDisk { lv: String, pv: String },
    #[error("{lv}: {what}")]
    Inconsistent { lv: String, what: String },
}

/// The byte ranges of `vg/lv` on the source disks and where they are on `snapshot`. `locate`
/// gives the source disk a PV is on and the PV's start on it; `None` (a PV inside dm-crypt or
/// md, or on a disk not being read) refuses the LV, which is then frozen instead.
pub fn extent_map(
    vg: &str,
    lv: &str,
    snapshot: &std::path::Path,
    segments: &[Segment],
    pvs: &[Pv],
    locate: impl Fn(&str) -> Option<(PathBuf, u64)>,
) -> Result<Vec<Substitution>, MapError> {
    let name = format!("{vg}/{lv}");
    let incons = |what: String| MapError::Inconsistent {
        lv: name.clone(),
        what,
    };
    let mut out = Vec::new();
    for s in segments.iter().filter(|s| s.vg == vg && s.lv == lv) {
        let [range] = s.pe_ranges.as_slice() else {
            return Err(MapError::NotLinear {
                lv: name.clone(),
                start: s.start,
                segtype: s.segtype.clone(),
            });
        };
        if s.segtype != "linear" && s.segtype != "striped" {
            return Err(MapError::NotLinear {
                lv: name.clone(),
                start: s.start,
                segtype: s.segtype.clone(),
            });
        }
        let pv = pvs
            .iter()
            .find(|p| p.name == range.pv)
            .ok_or_else(|| incons(format!("PV {} is not in the pvs report", range.pv)))?;
        let count = range.last - range.first + 1;
        let len = count
            .checked_mul(pv.extent_size)
            .ok_or_else(|| incons(format!("{count} extents overflow")))?;
        if len != s.size {
            return Err(incons(format!(
                "segment at {} is {} bytes but spans {count} extents of {}",
                s.start, s.size, pv.extent_size
            )));
        }
        let (disk, pv_start) = locate(&range.pv).ok_or_else(|| MapError::PvNotOnDisk {
            lv: name.clone(),
            pv: range.pv.clone(),
        })?;
        let disk_offset = range
            .first
            .checked_mul(pv.extent_size)
            .and_then(|o| o.checked_add(pv.pe_start))
            .and_then(|o| o.checked_add(pv_start))
            .ok_or_else(|| incons(format!("extent {} overflows", range.first)))?;
        out.push(Substitution {
            disk,
            disk_offset,
            len,
            device: snapshot.to_path_buf(),
            device_offset: s.start,
        });
    }
    if out.is_empty() {
        return Err(incons("no segments in the lvs report".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `lvs --segments`: root in two pieces on sda2 (a grown LV), data striped.
    const SEGS: &str = r#"{"report": [{"seg": [
        {"vg_name":"vg0", "lv_name":"root", "segtype":"linear", "seg_start":"0", "seg_size":"1073741824", "seg_pe_ranges":"/dev/sda2:0-255"},
        {"vg_name":"vg0", "lv_name":"root", "segtype":"linear", "seg_start":"1073741824", "seg_size":"41943040", "seg_pe_ranges":"/dev/sda2:300-309"},
        {"vg_name":"vg0", "lv_name":"data", "segtype":"striped", "seg_start":"0", "seg_size":"83886080", "seg_pe_ranges":"/dev/sda2:256-265 /dev/sdb:0-9"},
        {"vg_name":"vg1", "lv_name":"secret", "segtype":"linear", "seg_start":"0", "seg_size":"4194304", "seg_pe_ranges":"/dev/mapper/crypt:0-0"}
    ]}]}"#;
    const PVS: &str = r#"{"report": [{"pv": [
        {"pv_name":"/dev/sda2", "vg_name":"vg0", "pe_start":"1048576", "vg_extent_size":"4194304"},
        {"pv_name":"/dev/sdb", "vg_name":"vg0", "pe_start":"1048576", "vg_extent_size":"4194304"},
        {"pv_name":"/dev/mapper/crypt", "vg_name":"vg1", "pe_start":"1048576", "vg_extent_size":"4194304"}
    ]}]}"#;

    fn locate(pv: &str) -> Option<(PathBuf, u64)> {
        match pv {
            "/dev/sda2" => Some(("/dev/sda".into(), 512 << 20)),
            "/dev/sdb" => Some(("/dev/sdb".into(), 0)),
            _ => None,
        }
    }

    #[test]
    fn a_linear_lv_maps_each_segment_to_its_disk_bytes() {
        let segs = parse_segments(SEGS).unwrap();
        let pvs = parse_pvs(PVS).unwrap();
        let snap = Path::new("/dev/vg0/ferry-snap-root");
        let m = extent_map("vg0", "root", snap, &segs, &pvs, locate).unwrap();
        let part = 512u64 << 20;
        let mib = 1u64 << 20;
        assert_eq!(
            m,
            [
                Substitution {
                    disk: "/dev/sda".into(),
                    disk_offset: part + mib,
                    len: 1 << 30,
                    device: snap.into(),
                    device_offset: 0,
                },
                Substitution {
                    disk: "/dev/sda".into(),
                    disk_offset: part + mib + 300 * (4 * mib),
                    len: 40 * mib,
                    device: snap.into(),
                    device_offset: 1 << 30,
                },
            ]
        );
    }

    #[test]
    fn what_cannot_map_says_why() {
        let segs = parse_segments(SEGS).unwrap();
        let pvs = parse_pvs(PVS).unwrap();
        let snap = Path::new("/dev/x/y");
        let e = extent_map("vg0", "data", snap, &segs, &pvs, locate).unwrap_err();
        assert!(matches!(e, MapError::NotLinear { .. }), "{e}");
        let e = extent_map("vg1", "secret", snap, &segs, &pvs, locate).unwrap_err();
        assert!(matches!(e, MapError::PvNotOnDisk { .. }), "{e}");
        let e = extent_map("vg0", "gone", snap, &segs, &pvs, locate).unwrap_err();
        assert!(e.to_string().contains("no segments"), "{e}");
        let bad = SEGS.replace("\"41943040\"", "\"41943041\"");
        let e = extent_map(
            "vg0",
            "root",
            snap,
            &parse_segments(&bad).unwrap(),
            &pvs,
            locate,
        )
        .unwrap_err();
        assert!(e.to_string().contains("spans 10 extents"), "{e}");
    }

    #[test]
    fn extent_ranges_parse_strictly() {
        assert_eq!(
            parse_pe_range("/dev/disk/by-path/pci-0:0:1-part2:5-9").unwrap(),
            PeRange {
                pv: "/dev/disk/by-path/pci-0:0:1-part2".into(),
                first: 5,
                last: 9
            }
        );
        for bad in [
            "",
            "/dev/sda",
            "/dev/sda:5",
            "/dev/sda:9-5",
            ":0-1",
            "/dev/sda:a-b",
        ] {
            assert!(parse_pe_range(bad).is_err(), "{bad}");
        }
        assert!(parse_segments(&SEGS.replace("/dev/sda2:0-255", "/dev/sda2:0-x")).is_err());
        assert!(parse_pvs(&PVS.replace("\"1048576\"", "\"1m\"")).is_err());
    }
}
