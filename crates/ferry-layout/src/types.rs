//! The planner's vocabulary: its inputs (snapshot disks, target inventory, job policy), the plan
//! value it returns, and what the orchestrator (`plan.rs`) and the partition-table modules
//! (`gpt`, `mbr`, `lvm`) hand each other. Plain data: this module imports no planner module but
//! the patch set, so the table modules and the display depend on it and not on the orchestrator.

use ferry_format::layout::{Content, ContentKind, DiskLayout, LvmUuid};
use ferry_format::manifest::DiskManifest;
use serde::{Deserialize, Serialize};

use crate::patch::{Patch, PatchSet};

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

// Between the orchestrator and the partition-table modules.

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
