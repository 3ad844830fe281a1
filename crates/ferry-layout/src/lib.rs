//! Restore layout planning: which snapshot disk goes onto which target disk, and what has to
//! change in the restored bytes when the target differs from the source.
//!
//! A backup is a full block image of each disk, so restoring onto a disk of the same size and
//! sector size reproduces the partition table, the EBR chain and the LVM metadata byte for byte:
//! the plan is then [`Action::Identical`] and carries no patches. When the target is larger, or
//! has another logical sector size, [`plan`] returns the exact bytes to write *after* the
//! snapshot's data ([`Patch`]es with disk offsets), computed only from the layout recorded in the
//! manifest ([`ferry_format::layout::DiskLayout`]):
//!
//! - GPT: the primary header and entry array rewritten (same disk GUID, slots, type and unique
//!   GUIDs, names, attributes; AlternateLBA and LastUsableLBA at the new end; CRC-32s
//!   recomputed), the backup entry array and header written at the new end, the old backup header
//!   erased, the protective MBR's 0xEE size updated; with grow, the last partition's last LBA
//!   moved to the last 1 MiB boundary before the backup array. Across sector sizes every LBA is
//!   re-encoded (refused unless every partition boundary is a multiple of the larger sector).
//! - MBR: with grow, the last partition (a primary, or the last logical partition with its EBR,
//!   the link in the EBR before it and the extended container) grown to the end (never past
//!   2^32 sectors).
//! - LVM2 on the grown partition (or disk): the PV header's device size, the metadata text
//!   (`dev_size` and `pe_count` of the PV, the chosen LV's last segment extended or a linear
//!   segment appended, `seqno` + 1) regenerated in LVM's text format, written into the metadata
//!   area's ring after its header, with the area header's raw location and all LVM CRCs.
//!
//! Filesystems are not touched: [`FsGrow`] says what the rescue image grows afterwards
//! (resize2fs, xfs_growfs) on the mounted filesystem.
//!
//! Everything here is pure: no I/O, every layout value is treated as hostile (checked
//! arithmetic, overlaps and loops refused with [`PlanError::Layout`]), and nothing panics.
//! docs/layout.md ("Restoring onto different disks") describes every patch.

#![forbid(unsafe_code)]

// Module dependencies run one way: `plan` (the orchestrator) uses `assign` and the table modules
// `gpt`, `mbr`, `lvm`; those and `display` use only `types`, `error` and `patch`.
mod assign;
mod display;
mod error;
mod gpt;
mod lvm;
mod mbr;
mod patch;
mod plan;
mod types;

pub use error::PlanError;
pub use patch::Patch;
pub use plan::plan;
pub use types::{
    Action, Adaptation, DiskMapping, FsGrow, GptChange, GrowLv, GrowTarget, LayoutPlan, LvGrow,
    Mapping, PartitionGrow, Policy, PvGrow, SourceDisk, TargetDisk,
};

/// Bytes in a MiB; partitions are grown to a multiple of it.
pub const MIB: u64 = 1 << 20;
