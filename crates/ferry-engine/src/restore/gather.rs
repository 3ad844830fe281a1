//! Everything a restore plan is made from, read before anything is planned or written.

use ferry_format::marker::RestoreMarker;
use ferry_format::{DiskIndex, Manifest};

use super::{RestoreOptions, SnapshotSource};
use crate::target::{self, TargetCheck};
use crate::{EngineError, Refusal};

/// What [`gather`] read: the input of the pure [`super::plan()`].
#[derive(Debug, Clone)]
pub struct Inputs {
    pub manifest: Manifest,
    /// In the order of [`RestoreOptions::targets`].
    pub disks: Vec<GatheredDisk>,
}

#[derive(Debug, Clone)]
pub struct GatheredDisk {
    /// The disk's name in the snapshot.
    pub disk: String,
    pub index: DiskIndex,
    pub target: TargetCheck,
}

/// Fetch and verify the manifest and the indexes, and check every target. Writes nothing.
/// Options that name no disk, a disk twice or a target twice are refused before any target is
/// looked at.
pub fn gather(source: &dyn SnapshotSource, opts: &RestoreOptions) -> Result<Inputs, EngineError> {
    if opts.targets.is_empty() {
        return Err(Refusal::NoTargets.into());
    }
    let manifest = source.manifest(&opts.snapshot)?;
    let mut disks = Vec::new();
    for (i, (disk, dest)) in opts.targets.iter().enumerate() {
        let size = disk_size(&manifest, disk)?;
        if opts.targets[..i].iter().any(|(o, _)| o == disk) {
            return Err(Refusal::DiskTwice { disk: disk.clone() }.into());
        }
        if opts.targets[..i].iter().any(|(_, p)| p == dest) {
            return Err(Refusal::TargetTwice { path: dest.clone() }.into());
        }
        let index = source.index(&manifest, disk)?;
        check_index(disk, &index, size)?;
        let permit = target::Permit {
            overwrite: opts.overwrite,
            marker: opts
                .job
                .as_ref()
                .map(|j| RestoreMarker::new(&j.job, &manifest.snapshot, disk, &j.proof)),
        };
        let target = target::check(dest, size, &permit)?;
        disks.push(GatheredDisk {
            disk: disk.clone(),
            index,
            target,
        });
    }
    Ok(Inputs { manifest, disks })
}

/// The size the manifest records for `disk`, or the refusal naming the disks it has.
pub(super) fn disk_size(manifest: &Manifest, disk: &str) -> Result<u64, EngineError> {
    manifest
        .disk(disk)
        .map(|d| d.size)
        .ok_or_else(|| no_such_disk(manifest, disk))
}

pub(super) fn no_such_disk(manifest: &Manifest, disk: &str) -> EngineError {
    Refusal::NoSuchDisk {
        snapshot: manifest.snapshot.clone(),
        disk: disk.to_string(),
        available: manifest.disks.iter().map(|d| d.name.clone()).collect(),
    }
    .into()
}

pub(super) fn check_index(disk: &str, index: &DiskIndex, size: u64) -> Result<(), EngineError> {
    if index.disk_size != size {
        return Err(Refusal::IndexSizeMismatch {
            disk: disk.to_string(),
            index_size: index.disk_size,
            manifest_size: size,
        }
        .into());
    }
    Ok(())
}
