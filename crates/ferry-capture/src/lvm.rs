//! LVM snapshots for a capture: which LVs can have one (their VG has the free extents), the
//! `lvcreate`/`lvremove` command lines, and the leftovers of a crashed agent.
//!
//! A snapshot is named [`SNAPSHOT_PREFIX`]`<origin>` and tagged [`SNAPSHOT_TAG`]; only LVs
//! with both are ever removed by [`stale_snapshots`]. Creating the snapshot suspends the origin
//! and freezes its filesystem for that instant (device-mapper's suspend does so unless
//! `--nolockfs`), so the snapshot holds a consistent filesystem.
//!
//! The planning and the parsing of `lvs --reportformat json` are pure; [`Lvm`] runs the tools
//! through `ferry_sys::tool`.

use std::process::Command;

use ferry_sys::tool::{self, ToolError};
use serde::{Deserialize, Serialize};

/// Name prefix of every snapshot this crate creates.
pub const SNAPSHOT_PREFIX: &str = "ferry-snap-";
/// LVM tag on every snapshot this crate creates.
pub const SNAPSHOT_TAG: &str = "ferry-capture";
/// LV names are at most 127 bytes; the origin's part of a snapshot name is cut to this.
const MAX_ORIGIN_IN_NAME: usize = 100;
/// Largest `lvs` report parsed.
const MAX_REPORT: usize = 16 << 20;
/// The columns [`parse_lvs`] reads.
pub const LVS_COLUMNS: &str =
    "vg_name,lv_name,lv_size,lv_attr,lv_tags,segtype,vg_free,vg_extent_size";

/// One row of `lvs --reportformat json --units b --nosuffix -o LVS_COLUMNS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvRow {
    pub vg: String,
    pub lv: String,
    pub size: u64,
    pub attr: String,
    pub tags: Vec<String>,
    pub segtype: String,
    pub vg_free: u64,
    pub extent_size: u64,
}

/// Why LVM could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    #[error("parse `lvs` report: {0}")]
    Report(String),
    #[error(transparent)]
    Tool(#[from] ToolError),
}

#[derive(Deserialize)]
struct Report {
    report: Vec<ReportSection>,
}

#[derive(Deserialize)]
struct ReportSection {
    #[serde(default)]
    lv: Vec<RawRow>,
}

#[derive(Deserialize)]
struct RawRow {
    vg_name: String,
    lv_name: String,
    lv_size: String,
    lv_attr: String,
    lv_tags: String,
    segtype: String,
    vg_free: String,
    vg_extent_size: String,
}

/// Parse `lvs` JSON output (sizes in bytes without suffix).
pub fn parse_lvs(text: &str) -> Result<Vec<LvRow>, LvmError> {
    if text.len() > MAX_REPORT {
        return Err(LvmError::Report(format!(
            "{} bytes, more than {MAX_REPORT}",
            text.len()
        )));
    }
    let report: Report = serde_json::from_str(text).map_err(|e| LvmError::Report(e.to_string()))?;
    let mut out = Vec::new();
    for raw in report.report.into_iter().flat_map(|s| s.lv) {
        let num = |what: &str, v: &str| {
            v.trim().parse::<u64>().map_err(|_| {
                LvmError::Report(format!(
                    "{}/{}: {what} {v:?} is not a byte count (run lvs with --units b --nosuffix)",
                    raw.vg_name, raw.lv_name
                ))
            })
        };
        out.push(LvRow {
            size: num("lv_size", &raw.lv_size)?,
            vg_free: num("vg_free", &raw.vg_free)?,
            extent_size: num("vg_extent_size", &raw.vg_extent_size)?,
            tags: raw
                .lv_tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            vg: raw.vg_name,
            lv: raw.lv_name,
            attr: raw.lv_attr,
            segtype: raw.segtype,
        });
    }
    Ok(out)
}

/// The arguments of the `lvs` call whose output [`parse_lvs`] reads.
pub fn lvs_args() -> Vec<&'static str> {
    vec![
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        LVS_COLUMNS,
    ]
}

/// How big a snapshot is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSizing {
    /// Copy-on-write space as a percentage of the origin's size.
    pub percent: u64,
    /// At least this many bytes.
    pub min_bytes: u64,
}

impl Default for SnapshotSizing {
    /// 20 % of the origin, at least 256 MiB: room for the writes of a long read.
    fn default() -> Self {
        SnapshotSizing {
            percent: 20,
            min_bytes: 256 << 20,
        }
    }
}

/// A snapshot to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPlan {
    pub vg: String,
    pub origin: String,
    pub name: String,
    pub size: u64,
}

impl SnapshotPlan {
    /// The device to read the snapshot from.
    pub fn device(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/dev/{}/{}", self.vg, self.name))
    }
}

/// Why an LV gets no snapshot (its filesystem is frozen instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoSnapshot {
    /// `lvs` does not list it.
    Unknown,
    /// A thin LV, or itself a snapshot, or not active.
    Unsuitable { segtype: String, attr: String },
    /// Its VG lacks the free space for the snapshots of all its LVs on the disks.
    VgFull { vg: String, needed: u64, free: u64 },
}

/// An LV by VG and LV name.
pub type LvName = (String, String);

/// Plan snapshots of the `wanted` LVs (vg, lv): for each VG, all of its wanted LVs get one when
/// the VG's free space holds them all; otherwise none of them does.
pub fn plan_snapshots(
    rows: &[LvRow],
    wanted: &[(String, String)],
    sizing: SnapshotSizing,
) -> (Vec<SnapshotPlan>, Vec<(LvName, NoSnapshot)>) {
    let mut plans: Vec<SnapshotPlan> = Vec::new();
    let mut refused = Vec::new();
    let mut vgs: Vec<&str> = wanted.iter().map(|(vg, _)| vg.as_str()).collect();
    vgs.sort_unstable();
    vgs.dedup();
    for vg in vgs {
        let mut vg_plans = Vec::new();
        let mut needed: u64 = 0;
        let mut free = 0;
        for (wvg, wlv) in wanted.iter().filter(|(v, _)| v == vg) {
            let Some(row) = rows.iter().find(|r| &r.vg == wvg && &r.lv == wlv) else {
                refused.push(((wvg.clone(), wlv.clone()), NoSnapshot::Unknown));
                continue;
            };
            free = row.vg_free;
            // lv_attr: [0] volume type ('s' snapshot, 'V' thin…), [4] state ('a' active).
            let kind = row.attr.chars().next().unwrap_or('?');
            let active = row.attr.chars().nth(4) == Some('a');
            if row.segtype != "linear" && row.segtype != "striped" || !active || kind == 's' {
                refused.push((
                    (wvg.clone(), wlv.clone()),
                    NoSnapshot::Unsuitable {
                        segtype: row.segtype.clone(),
                        attr: row.attr.clone(),
                    },
                ));
                continue;
            }
            let size = snapshot_size(row.size, row.extent_size, sizing);
            needed = needed.saturating_add(size);
            vg_plans.push(SnapshotPlan {
                vg: row.vg.clone(),
                origin: row.lv.clone(),
                name: snapshot_name(&row.lv),
                size,
            });
        }
        if needed <= free {
            plans.extend(vg_plans);
        } else {
            for p in vg_plans {
                refused.push((
                    (p.vg, p.origin),
                    NoSnapshot::VgFull {
                        vg: vg.to_string(),
                        needed,
                        free,
                    },
                ));
            }
        }
    }
    (plans, refused)
}

/// `percent` of `origin` bytes, at least `min_bytes`, rounded up to whole extents.
pub fn snapshot_size(origin: u64, extent: u64, sizing: SnapshotSizing) -> u64 {
    let want = (origin / 100)
        .saturating_mul(sizing.percent)
        .max(sizing.min_bytes);
    if extent == 0 {
        return want;
    }
    want.div_ceil(extent).saturating_mul(extent)
}

/// The snapshot's LV name for `origin`.
pub fn snapshot_name(origin: &str) -> String {
    // LVM names are ASCII ([a-zA-Z0-9+_.-]), so cutting at a byte count splits no character.
    let cut = origin
        .char_indices()
        .nth(MAX_ORIGIN_IN_NAME)
        .map_or(origin.len(), |(i, _)| i);
    format!("{SNAPSHOT_PREFIX}{}", &origin[..cut])
}

/// `lvcreate` arguments for a plan.
pub fn lvcreate_args(p: &SnapshotPlan) -> Vec<String> {
    vec![
        "--snapshot".into(),
        "--name".into(),
        p.name.clone(),
        "--size".into(),
        format!("{}b", p.size),
        "--addtag".into(),
        SNAPSHOT_TAG.into(),
        format!("{}/{}", p.vg, p.origin),
    ]
}

/// `lvremove` arguments for a snapshot.
pub fn lvremove_args(vg: &str, name: &str) -> Vec<String> {
    vec!["-f".into(), format!("{vg}/{name}")]
}

/// `EXTRA… --reportformat json --units b --nosuffix -o COLUMNS`.
fn report_args(extra: &[&str], columns: &str) -> Vec<String> {
    let common = [
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        columns,
    ];
    extra.iter().chain(&common).map(|a| a.to_string()).collect()
}

/// A snapshot that ran out of copy-on-write space: LVM marks it invalid (`lv_attr` state `I`)
/// and it no longer holds the origin's earlier content.
pub fn snapshot_invalid(rows: &[LvRow], vg: &str, name: &str) -> bool {
    rows.iter()
        .any(|r| r.vg == vg && r.lv == name && r.attr.chars().nth(4) == Some('I'))
}

/// Snapshots a crashed agent left behind: our prefix and our tag, both.
pub fn stale_snapshots(rows: &[LvRow]) -> Vec<(String, String)> {
    rows.iter()
        .filter(|r| r.lv.starts_with(SNAPSHOT_PREFIX) && r.tags.iter().any(|t| t == SNAPSHOT_TAG))
        .map(|r| (r.vg.clone(), r.lv.clone()))
        .collect()
}

/// The LVM tools, run through `ferry_sys::tool`.
pub struct Lvm;

impl Lvm {
    fn run(&self, name: &str, args: &[String]) -> Result<String, LvmError> {
        let path = tool::find(name).unwrap_or_else(|| name.into());
        let mut cmd = Command::new(path);
        cmd.args(args).env("LVM_SUPPRESS_FD_WARNINGS", "1");
        let out = tool::output(&mut cmd, "lvm2", &[0])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether the LVM tools are installed.
    pub fn available(&self) -> bool {
        tool::find("lvs").is_some()
    }

    pub fn lvs(&self) -> Result<Vec<LvRow>, LvmError> {
        parse_lvs(&self.run("lvs", &report_args(&[], LVS_COLUMNS))?)
    }

    /// `lvs --segments` rows ([`crate::extents::parse_segments`]).
    pub fn segments(&self) -> Result<Vec<crate::extents::Segment>, LvmError> {
        let args = report_args(&["--segments"], crate::extents::SEGMENT_COLUMNS);
        crate::extents::parse_segments(&self.run("lvs", &args)?)
    }

    /// `pvs` rows ([`crate::extents::parse_pvs`]).
    pub fn pvs(&self) -> Result<Vec<crate::extents::Pv>, LvmError> {
        let args = report_args(&[], crate::extents::PV_COLUMNS);
        crate::extents::parse_pvs(&self.run("pvs", &args)?)
    }

    pub fn create(&self, p: &SnapshotPlan) -> Result<(), LvmError> {
        self.run("lvcreate", &lvcreate_args(p)).map(drop)
    }

    pub fn remove(&self, vg: &str, name: &str) -> Result<(), LvmError> {
        self.run("lvremove", &lvremove_args(vg, name)).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `lvs --reportformat json --units b --nosuffix -o LVS_COLUMNS` on a VG with a leftover.
    const REPORT: &str = r#"{
      "report": [
          {
              "lv": [
                  {"vg_name":"vg0", "lv_name":"root", "lv_size":"10737418240", "lv_attr":"owi-aos---", "lv_tags":"", "segtype":"linear", "vg_free":"4294967296", "vg_extent_size":"4194304"},
                  {"vg_name":"vg0", "lv_name":"data", "lv_size":"1073741824", "lv_attr":"-wi-ao----", "lv_tags":"", "segtype":"linear", "vg_free":"4294967296", "vg_extent_size":"4194304"},
                  {"vg_name":"vg0", "lv_name":"ferry-snap-root", "lv_size":"2147483648", "lv_attr":"swi-a-s---", "lv_tags":"ferry-capture", "segtype":"linear", "vg_free":"4294967296", "vg_extent_size":"4194304"},
                  {"vg_name":"vg0", "lv_name":"ferry-snap-mine", "lv_size":"4194304", "lv_attr":"-wi-a-----", "lv_tags":"keep,other", "segtype":"linear", "vg_free":"4294967296", "vg_extent_size":"4194304"},
                  {"vg_name":"vg1", "lv_name":"big", "lv_size":"107374182400", "lv_attr":"-wi-ao----", "lv_tags":"", "segtype":"linear", "vg_free":"0", "vg_extent_size":"4194304"},
                  {"vg_name":"vg1", "lv_name":"thin1", "lv_size":"1073741824", "lv_attr":"Vwi-aotz--", "lv_tags":"", "segtype":"thin", "vg_free":"0", "vg_extent_size":"4194304"}
              ]
          }
      ]
      ,
      "log": []
  }"#;

    fn w(vg: &str, lv: &str) -> (String, String) {
        (vg.into(), lv.into())
    }

    #[test]
    fn the_report_parses() {
        let rows = parse_lvs(REPORT).unwrap();
        assert_eq!(rows.len(), 6);
        assert_eq!(rows[0].size, 10 << 30);
        assert_eq!(rows[3].tags, ["keep", "other"]);
        assert!(rows[0].tags.is_empty());
    }

    #[test]
    fn bad_reports_are_refused() {
        assert!(parse_lvs("not json").is_err());
        let suffixed = REPORT.replace("\"10737418240\"", "\"10.00g\"");
        let e = parse_lvs(&suffixed).unwrap_err().to_string();
        assert!(e.contains("vg0/root: lv_size \"10.00g\""), "{e}");
        assert!(parse_lvs(&" ".repeat(MAX_REPORT + 1)).is_err());
    }

    #[test]
    fn an_overflowed_snapshot_is_seen() {
        let mut rows = parse_lvs(REPORT).unwrap();
        assert!(!snapshot_invalid(&rows, "vg0", "ferry-snap-root"));
        rows[2].attr = "swi-I-s---".into();
        assert!(snapshot_invalid(&rows, "vg0", "ferry-snap-root"));
    }

    #[test]
    fn only_our_tagged_and_prefixed_snapshots_are_stale() {
        let rows = parse_lvs(REPORT).unwrap();
        assert_eq!(stale_snapshots(&rows), [w("vg0", "ferry-snap-root")]);
    }

    #[test]
    fn snapshots_are_planned_per_vg_by_free_space() {
        let rows = parse_lvs(REPORT).unwrap();
        let wanted = [
            w("vg0", "root"),
            w("vg0", "data"),
            w("vg1", "big"),
            w("vg1", "thin1"),
            w("vg2", "gone"),
        ];
        let (plans, refused) = plan_snapshots(&rows, &wanted, SnapshotSizing::default());
        let names: Vec<_> = plans.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ferry-snap-root", "ferry-snap-data"]);
        // 20 % of 10 GiB rounded up to 4 MiB extents; 1 GiB gets the 256 MiB minimum.
        assert_eq!(plans[0].size, 2147483648);
        assert_eq!(plans[1].size, 256 << 20);
        assert_eq!(
            plans[0].device(),
            std::path::PathBuf::from("/dev/vg0/ferry-snap-root")
        );
        let why: Vec<_> = refused.iter().map(|(lv, r)| (lv.1.as_str(), r)).collect();
        assert!(
            matches!(why[1], ("big", NoSnapshot::VgFull { .. })),
            "{why:?}"
        );
        assert!(
            matches!(why[0], ("thin1", NoSnapshot::Unsuitable { .. })),
            "{why:?}"
        );
        assert!(matches!(why[2], ("gone", NoSnapshot::Unknown)), "{why:?}");
    }

    #[test]
    fn a_vg_without_room_for_all_gets_none() {
        let mut rows = parse_lvs(REPORT).unwrap();
        for r in rows.iter_mut().filter(|r| r.vg == "vg0") {
            r.vg_free = 2147483648; // root's snapshot fits alone, not with data's
        }
        let (plans, refused) = plan_snapshots(
            &rows,
            &[w("vg0", "root"), w("vg0", "data")],
            SnapshotSizing::default(),
        );
        assert!(plans.is_empty());
        assert_eq!(refused.len(), 2);
    }

    #[test]
    fn command_lines_are_exact() {
        assert_eq!(report_args(&[], LVS_COLUMNS), lvs_args());
        assert_eq!(
            report_args(&["--segments"], "a,b").join(" "),
            "--segments --reportformat json --units b --nosuffix -o a,b"
        );
        let p = SnapshotPlan {
            vg: "vg0".into(),
            origin: "root".into(),
            name: snapshot_name("root"),
            size: 8 << 20,
        };
        assert_eq!(
            lvcreate_args(&p).join(" "),
            "--snapshot --name ferry-snap-root --size 8388608b --addtag ferry-capture vg0/root"
        );
        assert_eq!(
            lvremove_args("vg0", "ferry-snap-root").join(" "),
            "-f vg0/ferry-snap-root"
        );
        assert_eq!(
            lvs_args().join(" "),
            format!("--reportformat json --units b --nosuffix -o {LVS_COLUMNS}")
        );
    }

    #[test]
    fn long_origin_names_fit_lvms_limit() {
        let n = snapshot_name(&"x".repeat(127));
        assert!(n.len() <= 127, "{}", n.len());
        assert!(n.starts_with(SNAPSHOT_PREFIX));
    }
}
