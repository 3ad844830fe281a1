//! Why no plan could be made ([`PlanError`]), and why one disk could not be adapted
//! ([`Refusal`], which the orchestrator turns into a `PlanError` naming the disk and target).

use ferry_format::units::human_bytes;

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

/// Why one disk cannot be adapted; `plan()` adds the disk and target names.
#[derive(Debug)]
pub(crate) enum Refusal {
    Layout(String),
    SectorSize(String),
    Grow { what: String, reason: String },
}
