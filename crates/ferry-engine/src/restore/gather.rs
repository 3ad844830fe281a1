//! Everything a restore plan is made from, read before anything is planned or written.

use ferry_format::marker::RestoreMarker;
use ferry_format::{DiskIndex, Manifest};

use super::basis::{self, Basis, BasisDisk};
use super::{RestoreOptions, SnapshotSource};
use crate::target::{self, TargetCheck, TargetKind};
use crate::{io_err, EngineError, Refusal};

/// What [`gather`] read: the input of the pure [`super::plan()`].
#[derive(Debug, Clone)]
pub struct Inputs {
    pub manifest: Manifest,
    /// In the order of [`RestoreOptions::targets`].
    pub disks: Vec<GatheredDisk>,
    /// The snapshot the targets hold exactly ([`gather_with_basis`]): each disk's sync becomes
    /// a delta computed from the two indexes. `None`: a seeded sync that reads the targets.
    pub basis: Option<Basis>,
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
    gather_with_basis(source, opts, None)
}

/// [`gather`], and with `basis` (a snapshot the targets are known to hold exactly) its
/// verified manifest and indexes too, checked usable for a delta ([`super::basis`]): same
/// machine, chunk size, disk names and sizes, targets of exactly the disks' sizes, no `grow`.
/// Otherwise [`Refusal::BasisUnusable`], before anything is written.
pub fn gather_with_basis(
    source: &dyn SnapshotSource,
    opts: &RestoreOptions,
    basis: Option<&str>,
) -> Result<Inputs, EngineError> {
    let mut inputs = gather_targets(source, opts)?;
    if let Some(name) = basis {
        inputs.basis = Some(gather_basis(source, opts, &inputs, name)?);
    }
    Ok(inputs)
}

fn gather_basis(
    source: &dyn SnapshotSource,
    opts: &RestoreOptions,
    inputs: &Inputs,
    name: &str,
) -> Result<Basis, EngineError> {
    let m = source.manifest(name)?;
    let mut basis = Basis {
        snapshot: m.snapshot.clone(),
        machine: m.machine.clone(),
        chunk_size: m.chunk_size,
        disks: Vec::new(),
    };
    for g in &inputs.disks {
        let Some(size) = m.disk(&g.disk).map(|d| d.size) else {
            return Err(Refusal::BasisUnusable {
                basis: m.snapshot.clone(),
                disk: g.disk.clone(),
                why: crate::refusal::BasisMismatch::NoSuchDisk,
            }
            .into());
        };
        let index = source.index(&m, &g.disk)?;
        basis.disks.push(BasisDisk {
            disk: g.disk.clone(),
            size,
            index,
        });
    }
    let names: Vec<&str> = inputs.disks.iter().map(|g| g.disk.as_str()).collect();
    basis::check_snapshots(&basis, &inputs.manifest, &names)?;
    for (g, b) in inputs.disks.iter().zip(&basis.disks) {
        let len = match g.target.kind {
            TargetKind::File { created: false } => std::fs::metadata(&g.target.path)
                .map_err(io_err(&g.target.path, "stat", 0))?
                .len(),
            _ => g.target.size,
        };
        basis::check_target(&basis.snapshot, &g.disk, b.size, &g.target, len, opts.grow)?;
    }
    Ok(basis)
}

fn gather_targets(
    source: &dyn SnapshotSource,
    opts: &RestoreOptions,
) -> Result<Inputs, EngineError> {
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
    Ok(Inputs {
        manifest,
        disks,
        basis: None,
    })
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
