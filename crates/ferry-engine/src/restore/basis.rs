//! A delta from a known basis: the targets hold snapshot X exactly (the caller wrote and
//! verified them, and nothing has changed them since), so a newer snapshot Y is applied by
//! comparing X's index with Y's — pure, no target read — and writing only the entries that
//! differ ([`Step::DeltaFromBasis`](super::Step::DeltaFromBasis)).
//!
//! | basis entry (X) | new entry (Y) | what the delta does |
//! |---|---|---|
//! | equal to Y's | | nothing |
//! | data | other data | fetch Y's chunk, verify it against its id, write it |
//! | data | zero / unused | write zeros |
//! | zero / unused | data | fetch, verify, write |
//! | zero / unused | zero / unused | nothing (both read as zeros after a restore) |
//!
//! A basis is usable only when X and Y are snapshots of the same machine with the same chunk
//! size, every restored disk has the same name and size in both, and the target is exactly the
//! disk's size with a layout plan that changes nothing (no `--grow`, no patches): then chunk
//! `i` covers the same bytes in X, Y and on the target. Anything else is refused
//! ([`Refusal::BasisUnusable`]) before a byte is written.
//!
//! ## The first chunk and the in-progress marker
//!
//! Rule: **a delta that writes any chunk other than the first wipes the first chunk before its
//! first other write — putting the job's in-progress marker there when the restore has one — and
//! writes Y's first chunk last, after an fdatasync, even when X and Y agree on it**
//! ([`Delta::refresh_first`]; it is fetched and verified like any other chunk). So an
//! interrupted delta leaves a disk that does not boot and, for a job, carries the marker that
//! proves it is this job's partial restore (after a reboot the job resumes as a full seeded
//! sync, which is correct whatever the delta had written). A delta whose only difference is the
//! first chunk writes just that chunk, last; an empty delta writes nothing (not even a marker).
//! The cost is at most one chunk fetched and written per non-empty delta.

use ferry_format::{DiskIndex, Entry, Manifest};
use ferry_layout::{Action, DiskMapping};

use super::gather::check_index;
use crate::refusal::BasisMismatch;
use crate::target::{TargetCheck, TargetKind};
use crate::{EngineError, Refusal};

/// What the targets hold exactly: snapshot `snapshot`, as its verified manifest and indexes say.
/// Made by [`super::gather_with_basis`]; the input of [`super::plan()`] that turns each disk's
/// sync into a [`Delta`].
#[derive(Debug, Clone)]
pub struct Basis {
    pub snapshot: String,
    pub machine: String,
    pub chunk_size: u32,
    /// One per gathered disk, in the order of [`super::Inputs::disks`].
    pub disks: Vec<BasisDisk>,
}

#[derive(Debug, Clone)]
pub struct BasisDisk {
    /// The disk's name (the same in both snapshots).
    pub disk: String,
    /// Its size in the basis manifest.
    pub size: u64,
    /// Its index in the basis.
    pub index: DiskIndex,
}

/// The chunks of one disk a delta writes, computed from the two indexes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// Chunk numbers (ascending) whose new entry is data that the basis does not hold there:
    /// fetched, verified against their id, written.
    pub fetch: Vec<usize>,
    /// Chunk numbers (ascending) that held data in the basis and must now read as zeros.
    pub zero: Vec<usize>,
    /// The first chunk does not differ but is rewritten last anyway, because the delta writes
    /// other chunks and wipes it first (the rule in the module doc).
    pub refresh_first: bool,
    /// Chunks in the disk's index.
    pub chunks: usize,
    /// Uncompressed bytes of the chunks in `fetch` (and of the first chunk when it is refreshed
    /// and holds data).
    pub fetch_bytes: u64,
}

impl Delta {
    /// Chunks whose entries differ between the basis and the new snapshot.
    pub fn differing(&self) -> usize {
        self.fetch.len() + self.zero.len()
    }

    /// The first chunk's entry differs.
    pub fn first_differs(&self) -> bool {
        self.fetch.first() == Some(&0) || self.zero.first() == Some(&0)
    }

    /// The first chunk is written (last): it differs, or it is refreshed.
    pub fn writes_first(&self) -> bool {
        self.refresh_first || self.first_differs()
    }

    /// The delta writes chunks other than the first: the first is wiped before them.
    pub fn wipes_first(&self) -> bool {
        self.differing() > usize::from(self.first_differs())
    }
}

/// The delta that turns a disk holding `basis` into one holding `new`. Both indexes cover the
/// same disk size in the same chunk size ([`check_snapshots`]).
pub fn delta(basis: &DiskIndex, new: &DiskIndex) -> Delta {
    let mut d = Delta {
        fetch: Vec::new(),
        zero: Vec::new(),
        refresh_first: false,
        chunks: new.entries.len(),
        fetch_bytes: 0,
    };
    for (i, (old, e)) in basis.entries.iter().zip(&new.entries).enumerate() {
        match (old, e) {
            (old, Entry::Data(id)) if *old != Entry::Data(*id) => {
                d.fetch.push(i);
                d.fetch_bytes += new.range(i).1 as u64;
            }
            (Entry::Data(_), Entry::Zero | Entry::Unused) => d.zero.push(i),
            _ => {}
        }
    }
    if d.wipes_first() && !d.first_differs() {
        d.refresh_first = true;
        if let Some(Entry::Data(_)) = new.entries.first() {
            d.fetch_bytes += new.range(0).1 as u64;
        }
    }
    d
}

fn refused(basis: &str, disk: &str, why: BasisMismatch) -> EngineError {
    Refusal::BasisUnusable {
        basis: basis.to_string(),
        disk: disk.to_string(),
        why,
    }
    .into()
}

/// Pure: `basis` can stand for what the targets of `disks` (names, in order) hold when they
/// are restored to `manifest`'s snapshot — same machine and chunk size, each disk of the same
/// size in both, its basis index consistent with the basis size.
pub(super) fn check_snapshots(
    basis: &Basis,
    manifest: &Manifest,
    disks: &[&str],
) -> Result<(), EngineError> {
    let first = disks.first().copied().unwrap_or_default();
    if basis.machine != manifest.machine {
        return Err(refused(
            &basis.snapshot,
            first,
            BasisMismatch::OtherMachine {
                basis_machine: basis.machine.clone(),
                machine: manifest.machine.clone(),
            },
        ));
    }
    if basis.chunk_size != manifest.chunk_size {
        return Err(refused(
            &basis.snapshot,
            first,
            BasisMismatch::ChunkSize {
                basis: basis.chunk_size,
                new: manifest.chunk_size,
            },
        ));
    }
    if basis.disks.len() != disks.len() || basis.disks.iter().zip(disks).any(|(b, d)| b.disk != *d)
    {
        return Err(refused(&basis.snapshot, first, BasisMismatch::OtherDisks));
    }
    for b in &basis.disks {
        let new = manifest
            .disk(&b.disk)
            .map(|m| m.size)
            .ok_or_else(|| super::gather::no_such_disk(manifest, &b.disk))?;
        if b.size != new {
            return Err(refused(
                &basis.snapshot,
                &b.disk,
                BasisMismatch::DiskSize { basis: b.size, new },
            ));
        }
        check_index(&b.disk, &b.index, b.size)?;
        if b.index.chunk_size != manifest.chunk_size {
            return Err(refused(
                &basis.snapshot,
                &b.disk,
                BasisMismatch::ChunkSize {
                    basis: b.index.chunk_size,
                    new: manifest.chunk_size,
                },
            ));
        }
    }
    Ok(())
}

/// The target can hold the basis disk byte for byte: it exists and has exactly the disk's size
/// (`len`: a file's length as it is now, a device's size), and nothing will grow it.
pub(super) fn check_target(
    basis: &str,
    disk: &str,
    size: u64,
    target: &TargetCheck,
    len: u64,
    grow: bool,
) -> Result<(), EngineError> {
    if grow {
        return Err(refused(basis, disk, BasisMismatch::Grow));
    }
    if !target.exists || target.kind == (TargetKind::File { created: true }) {
        return Err(refused(
            basis,
            disk,
            BasisMismatch::NoTarget {
                path: target.path.clone(),
            },
        ));
    }
    if len != size || target.size != size {
        return Err(refused(
            basis,
            disk,
            BasisMismatch::TargetSize {
                path: target.path.clone(),
                target: len.max(target.size),
                disk: size,
            },
        ));
    }
    Ok(())
}

/// Pure: the layout plan leaves the target exactly as the snapshot's bytes make it.
pub(super) fn check_layout(basis: &str, m: &DiskMapping) -> Result<(), EngineError> {
    let what = match (&m.action, m.patches.is_empty(), &m.grow_fs) {
        (Action::Identical, true, None) => return Ok(()),
        (Action::Adapt(_), _, _) => {
            "the target's size or sector size differs from the snapshot's".to_string()
        }
        (_, false, _) => format!("{} patches", m.patches.len()),
        (_, _, Some(_)) => "a filesystem grow".to_string(),
    };
    Err(refused(
        basis,
        &m.disk,
        BasisMismatch::LayoutChanges { what },
    ))
}
