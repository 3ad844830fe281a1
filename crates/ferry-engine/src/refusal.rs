//! Why the engine refuses to start a backup or a restore: typed, with the data each case needs,
//! rendered to text only by `Display` (the operator's message names the thing and the fix).
//! Nothing has been written when one of these is returned.

use std::path::PathBuf;

use ferry_format::FormatError;

/// A refusal before anything is written ([`crate::EngineError::Refused`]).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    // Restore options and the snapshot.
    #[error("no --target given: name DISK=DEST for each disk to restore")]
    NoTargets,
    #[error("snapshot {snapshot} has no disk {disk:?}; its disks are: {}", available.join(", "))]
    NoSuchDisk {
        snapshot: String,
        disk: String,
        available: Vec<String>,
    },
    #[error("disk {disk} is given two targets")]
    DiskTwice { disk: String },
    #[error("{} is the target of two disks", path.display())]
    TargetTwice { path: PathBuf },
    #[error("the index of disk {disk} disagrees with the manifest on its size")]
    IndexSizeMismatch {
        disk: String,
        index_size: u64,
        manifest_size: u64,
    },
    #[error("--grow-lv {given:?} is not VG/LV")]
    BadGrowLv { given: String },
    /// A delta from a known basis (`--basis`) cannot be applied to this disk.
    #[error("snapshot {basis} cannot be the basis of disk {disk}: {why}. Nothing was written: restore without --basis (a full seeded sync reads the target and is correct whatever it holds)")]
    BasisUnusable {
        basis: String,
        disk: String,
        why: BasisMismatch,
    },

    // Targets.
    #[error("cannot create {}: its directory {} does not exist", path.display(), parent.display())]
    NoParentDir { path: PathBuf, parent: PathBuf },
    #[error("{} is neither a block device nor a regular file: give a disk (/dev/…) or an image file path", path.display())]
    NotADiskOrFile { path: PathBuf },
    #[error("{} is in use (mounted, an LVM/RAID member, or open by another program): refusing to restore onto it", path.display())]
    InUse { path: PathBuf },
    #[error("{} is never written: {why}", path.display())]
    Protected { path: PathBuf, why: String },
    #[error("{} holds data ({what}): refusing to overwrite it. If this is the right target, run again with --overwrite", path.display())]
    HoldsData { path: PathBuf, what: String },
    #[error("{} is not a block device: it has no partitions for the kernel to read", path.display())]
    NotADevice { path: PathBuf },
    #[error("{} is a partition: give the whole disk", path.display())]
    IsAPartition { path: PathBuf },

    // Backup.
    #[error("{0}")]
    BadMachineName(#[source] FormatError),
    #[error("{0} (name disks with --disk NAME=SRC)")]
    BadDiskName(#[source] FormatError),
    #[error("{0}")]
    BadChunkSize(#[source] FormatError),
    #[error("{0}")]
    Unindexable(#[source] FormatError),
    #[error("two disks are named {name:?}: name them with --disk NAME=SRC")]
    DiskNamedTwice { name: String },
    #[error("no --disk given")]
    NoDisks,
    #[error("the appliance keeps reporting {count} chunks of disk {disk} missing")]
    ChunksKeepMissing { count: usize, disk: String },
    #[error("the source changed while it was backed up (chunk at offset {offset}); back up a stopped source or a snapshot of it")]
    SourceChanged { offset: u64 },
}

/// Why a basis snapshot cannot stand for what a target holds ([`Refusal::BasisUnusable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasisMismatch {
    #[error("it is a snapshot of machine {basis_machine}, not of {machine}")]
    OtherMachine {
        basis_machine: String,
        machine: String,
    },
    #[error("it has no disk of that name")]
    NoSuchDisk,
    #[error("its disk is {basis} bytes, the new snapshot's {new}")]
    DiskSize { basis: u64, new: u64 },
    #[error("its chunks are {basis} bytes, the new snapshot's {new}")]
    ChunkSize { basis: u32, new: u32 },
    #[error("the target {} does not exist, so it cannot hold it", path.display())]
    NoTarget { path: PathBuf },
    #[error("the target {} is {target} bytes, not the disk's {disk}", path.display())]
    TargetSize {
        path: PathBuf,
        target: u64,
        disk: u64,
    },
    #[error("--grow changes the layout")]
    Grow,
    #[error(
        "the layout plan changes the target ({what}), so it would not hold the snapshot's bytes"
    )]
    LayoutChanges { what: String },
    #[error("the basis was gathered for other disks than the ones restored")]
    OtherDisks,
}
