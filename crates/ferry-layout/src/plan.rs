//! The planner: inputs (snapshot disks, target inventory, job policy), the plan value, errors.

use ferry_format::layout::{Content, ContentKind, DiskLayout, LvmUuid, PartitionTable};
use ferry_format::manifest::DiskManifest;
use ferry_format::units::human_bytes;
use serde::{Deserialize, Serialize};

use crate::patch::{Patch, PatchSet};
use crate::{gpt, lvm, mbr};

/// A disk of the snapshot, as the manifest describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDisk {
    pub name: String,
    /// Bytes.
    pub size: u64,
    pub logical_sector_size: u32,
    /// The layout captured at backup time; `None` for snapshots taken without one.
    pub layout: Option<DiskLayout>,
    /// An estimate of the bytes in use (non-zero chunks × chunk size), for messages.
    pub used_bytes: u64,
}

impl SourceDisk {
    /// From a manifest entry; `used_bytes` counts the data chunks.
    pub fn from_manifest(d: &DiskManifest, chunk_size: u32) -> SourceDisk {
        SourceDisk {
            name: d.name.clone(),
            size: d.size,
            logical_sector_size: d.logical_sector_size,
            layout: d.layout.clone(),
            used_bytes: d
                .chunks
                .data
                .saturating_mul(u64::from(chunk_size))
                .min(d.size),
        }
    }
}

/// A disk of the target machine, as its inventory reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetDisk {
    /// Device path (`/dev/vda`) or image file; plans and jobs name targets by it.
    pub path: String,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// No partition table, filesystem or other signature was found on it.
    pub blank: bool,
}

/// How snapshot disks are matched with target disks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    /// (snapshot disk, target path) pairs; only the named disks are restored.
    Explicit(Vec<(String, String)>),
    /// The n-th snapshot disk onto the n-th target of the inventory; all disks are restored.
    ByOrder,
    /// Each disk (largest first) onto the smallest unused target it fits on; a tie between
    /// targets of that size is ambiguous. All disks are restored.
    BySize,
    /// (snapshot disk, target serial) pairs; only the named disks are restored.
    BySerial(Vec<(String, String)>),
}

/// Which LV grows into the new extents when a PV grows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrowLv {
    /// The LV holding "/" when the manifest knows it (it does not record mount points yet);
    /// until then the last LV of the VG, in metadata order, that holds a growable filesystem.
    Auto,
    /// This LV.
    Named { vg: String, lv: String },
    /// Grow the PV only; the new extents stay free.
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub mapping: Mapping,
    /// Grow the last partition (and the PV, LV and filesystem on it) to the end of a larger disk.
    pub grow: bool,
    pub grow_lv: GrowLv,
    /// Targets that are not blank may be written.
    pub overwrite: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            mapping: Mapping::ByOrder,
            grow: false,
            grow_lv: GrowLv::Auto,
            overwrite: false,
        }
    }
}

/// What will be written where. Prints itself (`Display`) for the operator and serialises for
/// the job's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayoutPlan {
    pub mappings: Vec<DiskMapping>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiskMapping {
    pub disk: String,
    pub target: String,
    pub source_size: u64,
    pub target_size: u64,
    /// The sector size the layout's LBAs count in.
    pub source_sector_size: u32,
    pub target_sector_size: u32,
    /// "GPT: 3 partitions", "MBR: 4 partitions", "no partition table (ext4)", ...
    pub table: String,
    /// The target is not blank and the policy allows overwriting it.
    pub overwrites_data: bool,
    pub action: Action,
    /// Written after the snapshot's data, sorted by offset, never overlapping.
    pub patches: Vec<Patch>,
    /// The filesystem the rescue image grows once the disk is restored.
    pub grow_fs: Option<FsGrow>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    /// Same size and sector size: the snapshot's bytes are the layout, nothing is patched.
    Identical,
    /// A larger target or another sector size: same byte offsets, tables adapted by patches.
    Adapt(Box<Adaptation>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Adaptation {
    pub gpt: Option<GptChange>,
    pub partition: Option<PartitionGrow>,
    pub pv: Option<PvGrow>,
    pub lv: Option<LvGrow>,
    /// Things not done and why ("partition 4 holds swap: not grown").
    pub notes: Vec<String>,
}

/// The GPT as it will be on the target (LBAs in target sectors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GptChange {
    /// Where the backup header was on the source (source sectors), erased on the target.
    pub old_backup_lba: Option<u64>,
    pub backup_lba: u64,
    pub backup_entries_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// The protective MBR's 0xEE entry's new sector count.
    pub protective_sectors: Option<u32>,
}

/// A partition's end moved (LBAs in target sectors, last inclusive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionGrow {
    pub slot: u32,
    pub first_lba: u64,
    pub old_last_lba: u64,
    pub new_last_lba: u64,
    /// The MBR extended partition around a grown logical partition: (slot, old, new count).
    pub extended: Option<(u32, u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PvGrow {
    pub vg: String,
    pub pv_uuid: LvmUuid,
    /// Byte offset of the PV on the disk.
    pub offset: u64,
    pub old_size: u64,
    pub new_size: u64,
    pub old_pe_count: u64,
    pub new_pe_count: u64,
    /// The metadata's new seqno.
    pub seqno: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LvGrow {
    pub vg: String,
    pub lv: String,
    pub old_extents: u64,
    pub new_extents: u64,
    /// A linear segment was appended (the last one could not be extended in place).
    pub new_segment: bool,
}

/// A filesystem to grow after the restore (resize2fs, xfs_growfs, btrfs filesystem resize,
/// ntfsresize) to fill `new_size` bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FsGrow {
    pub on: GrowTarget,
    pub fs: ContentKind,
    pub uuid: Option<String>,
    pub new_size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrowTarget {
    Disk,
    Partition { slot: u32 },
    Lv { vg: String, lv: String },
}

/// Why no plan could be made. Nothing has been written; each message names the thing and a fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("refusing to restore disk {disk} onto {target}: the target has {have} bytes ({}), the disk needs at least {needed} bytes ({}){hint}", human_bytes(*have), human_bytes(*needed))]
    TargetTooSmall {
        disk: String,
        target: String,
        needed: u64,
        have: u64,
        hint: String,
    },
    #[error("cannot restore disk {disk} ({from}-byte sectors) onto {target} ({to}-byte sectors): {reason}")]
    SectorSize {
        disk: String,
        target: String,
        from: u32,
        to: u32,
        reason: String,
    },
    #[error(
        "cannot map disk {disk} automatically: {reason}; map it explicitly (disk = target path)"
    )]
    Ambiguous { disk: String, reason: String },
    #[error(
        "disks {first} and {second} are both mapped onto {target}: give each disk its own target"
    )]
    TwoOnOne {
        first: String,
        second: String,
        target: String,
    },
    #[error("disk {disk} is mapped twice: map each disk once")]
    DiskTwice { disk: String },
    #[error(
        "target {target} is not in the target's inventory (it has: {known}): use one of those"
    )]
    UnknownTarget { target: String, known: String },
    #[error("the snapshot has no disk {disk} (it has: {known})")]
    UnknownDisk { disk: String, known: String },
    #[error("no target for disk {disk}: {reason}")]
    NoTarget { disk: String, reason: String },
    #[error("refusing to write {target} (for disk {disk}): it is not blank; allow overwriting in the job if its contents may be destroyed")]
    NotBlank { disk: String, target: String },
    #[error("disk {disk}: the layout recorded at backup time is inconsistent ({reason}); restore it onto a disk of exactly {size} bytes with {sector_size}-byte sectors (nothing is changed then) or take a new backup")]
    Layout {
        disk: String,
        reason: String,
        size: u64,
        sector_size: u32,
    },
    #[error("disk {disk}: cannot grow {what}: {reason}")]
    Grow {
        disk: String,
        what: String,
        reason: String,
    },
    #[error("the job grows LV {vg}/{lv}, but no restored disk holds volume group {vg}: name an LV of the snapshot or let the planner choose")]
    NoSuchVg { vg: String, lv: String },
    #[error("invalid target inventory: {0}")]
    Inventory(String),
    #[error("nothing to restore: the job maps no disk")]
    Nothing,
}

/// Why one disk cannot be adapted; [`plan`] adds the disk and target names.
#[derive(Debug)]
pub(crate) enum Refusal {
    Layout(String),
    SectorSize(String),
    Grow { what: String, reason: String },
}

/// Source and target geometry of one mapping.
pub(crate) struct Geometry {
    pub src_ss: u32,
    pub tgt_ss: u32,
    pub src_size: u64,
    pub tgt_size: u64,
    pub grow: bool,
}

/// What a partition-table module decided.
#[derive(Default)]
pub(crate) struct TableOutcome {
    pub patches: PatchSet,
    pub gpt: Option<GptChange>,
    pub grown: Option<Grown>,
    pub notes: Vec<String>,
}

/// A region (partition or whole disk) that grows, and what it holds.
pub(crate) struct Grown {
    pub partition: Option<PartitionGrow>,
    pub offset: u64,
    /// Bytes the region had on the source disk (an LVM PV's extents must fit them).
    pub old_len: u64,
    pub new_len: u64,
    pub content: Content,
}

/// Map `disks` onto `targets` by `policy` and decide, for each pair, what to patch.
pub fn plan(
    disks: &[SourceDisk],
    targets: &[TargetDisk],
    policy: &Policy,
) -> Result<LayoutPlan, PlanError> {
    check_inventory(targets)?;
    let pairs = assign(disks, targets, &policy.mapping)?;
    if pairs.is_empty() {
        return Err(PlanError::Nothing);
    }
    let mut mappings = Vec::new();
    for &(d, t) in &pairs {
        let (disk, target) = (&disks[d], &targets[t]);
        // A target too small says so first (plan_disk): that is the fix the operator needs.
        if !target.blank && !policy.overwrite && target.size >= disk.size {
            return Err(PlanError::NotBlank {
                disk: disk.name.clone(),
                target: target.path.clone(),
            });
        }
        mappings.push(plan_disk(disk, target, policy)?);
    }
    if let (true, GrowLv::Named { vg, lv }) = (policy.grow, &policy.grow_lv) {
        let restored = pairs.iter().any(|&(d, _)| {
            disks[d]
                .layout
                .as_ref()
                .is_some_and(|l| volume_groups(l).any(|name| name == vg))
        });
        if !restored {
            return Err(PlanError::NoSuchVg {
                vg: vg.clone(),
                lv: lv.clone(),
            });
        }
    }
    Ok(LayoutPlan { mappings })
}

/// Names of the volume groups whose PVs the layout shows.
fn volume_groups(l: &DiskLayout) -> impl Iterator<Item = &str> {
    let contents: Vec<&Content> = match &l.table {
        PartitionTable::Gpt(g) => g.partitions.iter().map(|p| &p.content).collect(),
        PartitionTable::Mbr(m) => m
            .partitions
            .iter()
            .filter_map(|p| p.content.as_ref())
            .collect(),
        PartitionTable::None => l.content.iter().collect(),
    };
    contents
        .into_iter()
        .filter_map(|c| Some(c.lvm.as_ref()?.vg.as_ref()?.summary.name.as_str()))
}

fn check_inventory(targets: &[TargetDisk]) -> Result<(), PlanError> {
    for (i, t) in targets.iter().enumerate() {
        if targets[..i].iter().any(|o| o.path == t.path) {
            return Err(PlanError::Inventory(format!("{} is listed twice", t.path)));
        }
        let ss = t.logical_sector_size;
        if !(512..=65536).contains(&ss) || !ss.is_power_of_two() {
            return Err(PlanError::Inventory(format!(
                "{} reports logical sector size {ss}",
                t.path
            )));
        }
    }
    Ok(())
}

/// (disk index, target index) pairs, in disk order.
fn assign(
    disks: &[SourceDisk],
    targets: &[TargetDisk],
    mapping: &Mapping,
) -> Result<Vec<(usize, usize)>, PlanError> {
    let disk_index = |name: &str| {
        disks
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| PlanError::UnknownDisk {
                disk: name.to_string(),
                known: disks
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    };
    let mut pairs: Vec<(usize, usize)> = match mapping {
        Mapping::Explicit(list) => list
            .iter()
            .map(|(disk, path)| {
                let t = targets
                    .iter()
                    .position(|t| t.path == *path)
                    .ok_or_else(|| PlanError::UnknownTarget {
                        target: path.clone(),
                        known: known_targets(targets),
                    })?;
                Ok((disk_index(disk)?, t))
            })
            .collect::<Result<_, PlanError>>()?,
        Mapping::BySerial(list) => list
            .iter()
            .map(|(disk, serial)| Ok((disk_index(disk)?, by_serial(disk, serial, targets)?)))
            .collect::<Result<_, PlanError>>()?,
        Mapping::ByOrder => {
            if let Some(d) = disks.get(targets.len()) {
                return Err(PlanError::NoTarget {
                    disk: d.name.clone(),
                    reason: format!(
                        "the snapshot has {} disks and the target {} ({}); map the disks explicitly to restore only some",
                        disks.len(),
                        targets.len(),
                        known_targets(targets)
                    ),
                });
            }
            (0..disks.len()).map(|i| (i, i)).collect()
        }
        Mapping::BySize => by_size(disks, targets)?,
    };
    for (i, &(d, t)) in pairs.iter().enumerate() {
        if let Some(&(other, _)) = pairs[..i].iter().find(|p| p.1 == t) {
            return Err(PlanError::TwoOnOne {
                first: disks[other].name.clone(),
                second: disks[d].name.clone(),
                target: targets[t].path.clone(),
            });
        }
        if pairs[..i].iter().any(|p| p.0 == d) {
            return Err(PlanError::DiskTwice {
                disk: disks[d].name.clone(),
            });
        }
    }
    pairs.sort_by_key(|p| p.0);
    Ok(pairs)
}

fn known_targets(targets: &[TargetDisk]) -> String {
    if targets.is_empty() {
        return "no disks".into();
    }
    targets
        .iter()
        .map(|t| format!("{} {}", t.path, human_bytes(t.size)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn by_serial(disk: &str, serial: &str, targets: &[TargetDisk]) -> Result<usize, PlanError> {
    let found: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].serial.as_deref().map(str::trim) == Some(serial.trim()))
        .collect();
    match found[..] {
        [one] => Ok(one),
        [] => Err(PlanError::NoTarget {
            disk: disk.to_string(),
            reason: format!(
                "no target disk has serial {serial:?} (serials: {})",
                targets
                    .iter()
                    .map(|t| format!("{} {:?}", t.path, t.serial.as_deref().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
        _ => Err(PlanError::Ambiguous {
            disk: disk.to_string(),
            reason: format!("{} target disks have serial {serial:?}", found.len()),
        }),
    }
}

/// Largest disk first, each onto the smallest unused target that holds it.
fn by_size(disks: &[SourceDisk], targets: &[TargetDisk]) -> Result<Vec<(usize, usize)>, PlanError> {
    let mut order: Vec<usize> = (0..disks.len()).collect();
    order.sort_by(|&a, &b| disks[b].size.cmp(&disks[a].size).then(a.cmp(&b)));
    let mut used = vec![false; targets.len()];
    let mut pairs = Vec::new();
    for d in order {
        let disk = &disks[d];
        let fits = |t: &&TargetDisk| t.size >= disk.size;
        let best = (0..targets.len())
            .filter(|&t| !used[t] && fits(&&targets[t]))
            .min_by_key(|&t| targets[t].size);
        let Some(best) = best else {
            return Err(PlanError::NoTarget {
                disk: disk.name.clone(),
                reason: format!(
                    "no unused target holds {} bytes ({}); targets: {}",
                    disk.size,
                    human_bytes(disk.size),
                    known_targets(targets)
                ),
            });
        };
        let tied: Vec<&str> = (0..targets.len())
            .filter(|&t| !used[t] && targets[t].size == targets[best].size)
            .map(|t| targets[t].path.as_str())
            .collect();
        if tied.len() > 1 {
            return Err(PlanError::Ambiguous {
                disk: disk.name.clone(),
                reason: format!(
                    "{} fit it equally well ({} each)",
                    tied.join(" and "),
                    human_bytes(targets[best].size)
                ),
            });
        }
        used[best] = true;
        pairs.push((d, best));
    }
    Ok(pairs)
}

/// Decide what restoring `disk` onto `target` changes.
fn plan_disk(
    disk: &SourceDisk,
    target: &TargetDisk,
    policy: &Policy,
) -> Result<DiskMapping, PlanError> {
    let layout = disk.layout.as_ref();
    let src_ss = layout.map_or(disk.logical_sector_size, |l| l.logical_sector_size);
    let mut mapping = DiskMapping {
        disk: disk.name.clone(),
        target: target.path.clone(),
        source_size: disk.size,
        target_size: target.size,
        source_sector_size: src_ss,
        target_sector_size: target.logical_sector_size,
        table: layout.map_or("layout not recorded".into(), table_summary),
        overwrites_data: !target.blank,
        action: Action::Identical,
        patches: Vec::new(),
        grow_fs: None,
    };
    if target.size < disk.size {
        return Err(PlanError::TargetTooSmall {
            disk: disk.name.clone(),
            target: target.path.clone(),
            needed: disk.size,
            have: target.size,
            hint: fit_hint(disk, target.size),
        });
    }
    if target.size == disk.size && src_ss == target.logical_sector_size {
        return Ok(mapping);
    }
    let refused = |r: Refusal| match r {
        Refusal::Layout(reason) => PlanError::Layout {
            disk: disk.name.clone(),
            reason,
            size: disk.size,
            sector_size: src_ss,
        },
        Refusal::SectorSize(reason) => PlanError::SectorSize {
            disk: disk.name.clone(),
            target: target.path.clone(),
            from: src_ss,
            to: target.logical_sector_size,
            reason,
        },
        Refusal::Grow { what, reason } => PlanError::Grow {
            disk: disk.name.clone(),
            what,
            reason,
        },
    };
    let Some(layout) = layout else {
        if src_ss != target.logical_sector_size {
            return Err(refused(Refusal::SectorSize(
                "no layout was recorded at backup time, so its sector numbers cannot be converted; restore onto a disk with the same sector size".into(),
            )));
        }
        mapping.action = Action::Adapt(Box::new(Adaptation {
            notes: vec![format!(
                "no layout was recorded: restored as is; the {} past the old end stay unused (a GPT keeps its backup header at the old end: `sgdisk -e` moves it)",
                human_bytes(target.size - disk.size)
            )],
            ..Adaptation::default()
        }));
        return Ok(mapping);
    };
    let geo = Geometry {
        src_ss,
        tgt_ss: target.logical_sector_size,
        src_size: disk.size,
        tgt_size: target.size,
        grow: policy.grow,
    };
    if layout.size != disk.size {
        return Err(refused(Refusal::Layout(format!(
            "the layout says the disk has {} bytes, the manifest {}",
            layout.size, disk.size
        ))));
    }
    let mut out = match &layout.table {
        PartitionTable::Gpt(g) => gpt::adapt(g, &geo),
        PartitionTable::Mbr(m) => mbr::adapt(m, &geo),
        PartitionTable::None => Ok(whole_disk(layout, &geo)),
    }
    .map_err(refused)?;
    let mut adaptation = Adaptation {
        gpt: out.gpt.take(),
        notes: std::mem::take(&mut out.notes),
        ..Adaptation::default()
    };
    if let Some(grown) = out.grown.take() {
        mapping.grow_fs =
            grow_contents(grown, policy, &mut adaptation, &mut out.patches).map_err(refused)?;
    }
    mapping.patches = out.patches.into_sorted();
    mapping.action = Action::Adapt(Box::new(adaptation));
    Ok(mapping)
}

/// A disk without a partition table: the filesystem or PV on it may grow to the new size.
fn whole_disk(layout: &DiskLayout, geo: &Geometry) -> TableOutcome {
    let mut out = TableOutcome::default();
    let content = layout.content.clone().unwrap_or_else(Content::unknown);
    if !geo.grow || geo.tgt_size == geo.src_size {
        return out;
    }
    match growable(&content) {
        Ok(()) => {
            out.grown = Some(Grown {
                partition: None,
                offset: 0,
                old_len: geo.src_size,
                new_len: geo.tgt_size,
                content,
            })
        }
        Err(why) => out
            .notes
            .push(format!("the disk's contents are not grown: {why}")),
    }
    out
}

/// The partition (or disk) grew: grow the PV/LV on it, or say which filesystem to grow.
fn grow_contents(
    grown: Grown,
    policy: &Policy,
    adaptation: &mut Adaptation,
    patches: &mut PatchSet,
) -> Result<Option<FsGrow>, Refusal> {
    let on = match &grown.partition {
        Some(p) => GrowTarget::Partition { slot: p.slot },
        None => GrowTarget::Disk,
    };
    adaptation.partition = grown.partition.clone();
    let content = &grown.content;
    if content.kind != ContentKind::Lvm2Member {
        return Ok(Some(FsGrow {
            on,
            fs: content.kind,
            uuid: content.uuid.clone(),
            new_size: grown.new_len,
        }));
    }
    let Some(pv) = &content.lvm else {
        adaptation
            .notes
            .push("the LVM PV's label was not recorded: PV not grown".into());
        return Ok(None);
    };
    let region = (grown.offset, grown.old_len, grown.new_len);
    let out = lvm::grow(pv, region, &policy.grow_lv, patches)?;
    adaptation.pv = out.pv;
    adaptation.lv = out.lv;
    adaptation.notes.extend(out.notes);
    Ok(out.fs)
}

/// Whether the restore grows a region holding `c` (and the filesystem in it), or why not.
pub(crate) fn growable(c: &Content) -> Result<(), String> {
    match c.kind {
        ContentKind::Ext2
        | ContentKind::Ext3
        | ContentKind::Ext4
        | ContentKind::Xfs
        | ContentKind::Btrfs
        | ContentKind::Ntfs
        | ContentKind::Lvm2Member => Ok(()),
        ContentKind::Swap => Err("it holds swap, which is not grown".into()),
        ContentKind::Vfat => Err("it holds vfat, which is not grown".into()),
        ContentKind::Unknown => Err("its contents were not recognised at backup time".into()),
    }
}

/// "GPT: 3 partitions" and the like.
fn table_summary(l: &DiskLayout) -> String {
    match &l.table {
        PartitionTable::Gpt(g) => format!("GPT: {} partitions", g.partitions.len()),
        PartitionTable::Mbr(m) => format!("MBR: {} partitions", m.partitions.len()),
        PartitionTable::None => match &l.content {
            Some(c) => format!("no partition table, {}", c.kind),
            None => "no partition table".into(),
        },
    }
}

/// For a target that is too small: whether the partitions would fit, and what to do.
fn fit_hint(disk: &SourceDisk, have: u64) -> String {
    let end = disk.layout.as_ref().and_then(data_end);
    let used = if disk.used_bytes > 0 {
        format!(" (about {} of it in use)", human_bytes(disk.used_bytes))
    } else {
        String::new()
    };
    match end {
        Some(end) if end <= have => format!(
            "; its partitions end at byte {end} ({}){used} and would fit, but shrinking a disk is not supported yet: use a target of at least {} bytes, or a file-level restore once it exists",
            human_bytes(end),
            disk.size
        ),
        Some(end) => format!(
            "; its partitions end at byte {end} ({}){used}, past the end of the target: use a target of at least {} bytes",
            human_bytes(end),
            disk.size
        ),
        None => format!("{used}: use a target of at least {} bytes", disk.size),
    }
}

/// The byte where the last partition ends (the end of what a shrink would have to keep).
fn data_end(l: &DiskLayout) -> Option<u64> {
    let ss = u64::from(l.logical_sector_size);
    match &l.table {
        PartitionTable::Gpt(g) => g
            .partitions
            .iter()
            .map(|p| p.last_lba.saturating_add(1))
            .max(),
        PartitionTable::Mbr(m) => m
            .partitions
            .iter()
            .map(|p| p.start_lba.saturating_add(p.sector_count))
            .max(),
        PartitionTable::None => None,
    }
    .map(|lba| lba.saturating_mul(ss))
}
