//! The pure planner: [`Inputs`] and options in, a [`RestorePlan`] out, no I/O. The plan's text
//! (`Display`) lists every step [`super::execute`] runs, in order, numbered from 1.

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use ferry_format::units::human_bytes;
use ferry_format::Manifest;
use ferry_layout::{
    FsGrow, GrowLv, GrowTarget, LayoutPlan, Mapping, Patch, Policy, SourceDisk, TargetDisk,
};

use super::basis::{self, Basis, Delta};
use super::gather::{check_index, disk_size, no_such_disk};
use super::{DiskPlan, Inputs, RestoreOptions, RestorePlan};
use crate::target::{TargetCheck, TargetKind};
use crate::{EngineError, Refusal};

/// One thing [`super::execute`] does. `disk` is the position in [`RestorePlan::disks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The seeded (delta) sync: compare the target with the index, fetch the data chunks that
    /// differ, verify each against its id, write them and zero what must read as zeros; every
    /// chunk but the first, which is held back. Then fdatasync. With `marker`, the first chunk
    /// is wiped and the job's in-progress marker written before any other write.
    Sync { disk: usize, marker: bool },
    /// Instead of [`Step::Sync`] when the target holds snapshot `basis` exactly: write only the
    /// chunks whose entries differ between the basis's index and the snapshot's (computed by
    /// the planner, [`basis::delta`]); the target is not read. Fetched chunks are verified
    /// against their id before they are written; every chunk but the first, which is held back;
    /// then fdatasync. The first chunk is wiped (with `marker`: the job's in-progress marker
    /// written there) before any other write, and written last ([`super::basis`] has the rule).
    DeltaFromBasis {
        disk: usize,
        basis: String,
        delta: Delta,
        marker: bool,
    },
    /// The layout patches that end past the first chunk (GPT backup, EBRs, LVM metadata).
    LayoutPatches { disk: usize, patches: Vec<Patch> },
    /// fdatasync, then the boot-critical first chunk (`len` bytes) with the patches inside it
    /// merged in, then fdatasync. Skipped when the target already held it and nothing patches it.
    FirstChunkLast {
        disk: usize,
        len: u64,
        patches: Vec<Patch>,
    },
    /// Ask the kernel to read the new partition table of a block device (never fatal).
    RereadPartitions { disk: usize, device: PathBuf },
    /// Grow a filesystem into the larger target with its own tool (never fatal: the outcome,
    /// or what to run after the first boot, is in the summary). `region` is the byte range of
    /// the target that holds it (for an LV: its PV), `None` when the layout plan names none.
    GrowFilesystem {
        disk: usize,
        grow: FsGrow,
        region: Option<(u64, u64)>,
    },
}

impl Step {
    pub fn disk(&self) -> usize {
        match self {
            Step::Sync { disk, .. }
            | Step::DeltaFromBasis { disk, .. }
            | Step::LayoutPatches { disk, .. }
            | Step::FirstChunkLast { disk, .. }
            | Step::RereadPartitions { disk, .. }
            | Step::GrowFilesystem { disk, .. } => *disk,
        }
    }
}

/// Plan a restore of what [`super::gather`] read. Pure: reads and writes nothing.
pub fn plan(inputs: &Inputs, opts: &RestoreOptions) -> Result<RestorePlan, EngineError> {
    if inputs.disks.is_empty() {
        return Err(Refusal::NoTargets.into());
    }
    let manifest = &inputs.manifest;
    let mut disks = Vec::new();
    for g in &inputs.disks {
        let size = disk_size(manifest, &g.disk)?;
        check_index(&g.disk, &g.index, size)?;
        disks.push(DiskPlan {
            disk: g.disk.clone(),
            size,
            index: g.index.clone(),
            target: g.target.clone(),
        });
    }
    if let Some(b) = &inputs.basis {
        check_basis(b, manifest, &disks, opts)?;
    }
    let layout = plan_layout(manifest, &disks, opts)?;
    if let Some(b) = &inputs.basis {
        for m in &layout.mappings {
            basis::check_layout(&b.snapshot, m)?;
        }
    }
    for (d, m) in disks.iter_mut().zip(&layout.mappings) {
        d.target.size = m.target_size;
    }
    let steps = steps(&disks, &layout, inputs.basis.as_ref());
    Ok(RestorePlan {
        manifest: manifest.clone(),
        disks,
        layout,
        steps,
        basis: inputs.basis.as_ref().map(|b| b.snapshot.clone()),
    })
}

/// The pure half of the basis checks (gather did the target half): the basis stands for these
/// disks, and nothing grows them.
fn check_basis(
    b: &Basis,
    manifest: &Manifest,
    disks: &[DiskPlan],
    opts: &RestoreOptions,
) -> Result<(), EngineError> {
    let names: Vec<&str> = disks.iter().map(|d| d.disk.as_str()).collect();
    basis::check_snapshots(b, manifest, &names)?;
    if opts.grow {
        return Err(Refusal::BasisUnusable {
            basis: b.snapshot.clone(),
            disk: names.first().copied().unwrap_or_default().to_string(),
            why: crate::refusal::BasisMismatch::Grow,
        }
        .into());
    }
    Ok(())
}

/// Per disk, in plan order: sync (or the delta from the basis), patches past the first chunk,
/// the first chunk, re-read, grow.
fn steps(disks: &[DiskPlan], layout: &LayoutPlan, basis: Option<&Basis>) -> Vec<Step> {
    let mut steps = Vec::new();
    for (disk, (d, m)) in disks.iter().zip(&layout.mappings).enumerate() {
        let len = d.index.range(0).1 as u64;
        let marker = d.target.marker.is_some();
        steps.push(match basis.and_then(|b| Some((b, b.disks.get(disk)?))) {
            Some((b, bd)) => Step::DeltaFromBasis {
                disk,
                basis: b.snapshot.clone(),
                delta: basis::delta(&bd.index, &d.index),
                marker,
            },
            None => Step::Sync { disk, marker },
        });
        let outside: Vec<Patch> = m
            .patches
            .iter()
            .filter(|p| p.end() > len)
            .cloned()
            .collect();
        if !outside.is_empty() {
            steps.push(Step::LayoutPatches {
                disk,
                patches: outside,
            });
        }
        let inside = m.patches.iter().filter(|p| p.offset < len).cloned();
        steps.push(Step::FirstChunkLast {
            disk,
            len,
            patches: inside.collect(),
        });
        if d.target.kind == TargetKind::BlockDevice {
            steps.push(Step::RereadPartitions {
                disk,
                device: d.target.path.clone(),
            });
        }
        if let Some(fs) = &m.grow_fs {
            steps.push(Step::GrowFilesystem {
                disk,
                grow: fs.clone(),
                region: crate::grow::region(m).ok(),
            });
        }
    }
    steps
}

/// The pure layout planner over what the manifest recorded and what the targets are.
fn plan_layout(
    manifest: &Manifest,
    disks: &[DiskPlan],
    opts: &RestoreOptions,
) -> Result<LayoutPlan, EngineError> {
    let mut sources = Vec::new();
    let mut targets = Vec::new();
    let mut pairs = Vec::new();
    for d in disks {
        let m = manifest
            .disk(&d.disk)
            .ok_or_else(|| no_such_disk(manifest, &d.disk))?;
        sources.push(SourceDisk::from_manifest(m, manifest.chunk_size));
        let path = d.target.path.display().to_string();
        targets.push(target_disk(&d.target, m.logical_sector_size, &path));
        pairs.push((d.disk.clone(), path));
    }
    let grow_lv = match &opts.grow_lv {
        None => GrowLv::Auto,
        Some(s) => match s.split_once('/') {
            Some((vg, lv)) if !vg.is_empty() && !lv.is_empty() => GrowLv::Named {
                vg: vg.into(),
                lv: lv.into(),
            },
            _ => return Err(Refusal::BadGrowLv { given: s.clone() }.into()),
        },
    };
    let policy = Policy {
        mapping: Mapping::Explicit(pairs),
        grow: opts.grow,
        grow_lv,
        overwrite: opts.overwrite,
    };
    let plan = ferry_layout::plan(&sources, &targets, &policy)?;
    // The planner returns mappings in the order of the explicit pairs; keep that invariant checked.
    if plan.mappings.len() != disks.len()
        || plan
            .mappings
            .iter()
            .zip(disks)
            .any(|(m, d)| m.disk != d.disk)
    {
        return Err(EngineError::Worker(
            "the layout plan does not follow the requested mapping".into(),
        ));
    }
    Ok(plan)
}

/// The layout planner's view of a checked target.
fn target_disk(t: &TargetCheck, source_lss: u32, path: &str) -> TargetDisk {
    // An image file takes the source's sector size; a device reports its own.
    let lss = if t.logical_sector_size == 0 {
        source_lss
    } else {
        t.logical_sector_size
    };
    let pss = if t.physical_sector_size == 0 {
        lss
    } else {
        t.physical_sector_size
    };
    TargetDisk {
        path: path.to_string(),
        size: t.size,
        logical_sector_size: lss,
        physical_sector_size: pss,
        serial: None,
        model: None,
        // Its own partial restore counts as blank: the job may write it.
        blank: t.holds.is_none() || t.resumes,
    }
}

impl RestorePlan {
    /// A step's one-line title ("sync disk sda onto /dev/vdb"), as errors name it.
    pub fn step_title(&self, step: &Step) -> String {
        let path = self
            .disks
            .get(step.disk())
            .map(|d| d.target.path.display().to_string())
            .unwrap_or_default();
        let disk = self
            .disks
            .get(step.disk())
            .map(|d| d.disk.as_str())
            .unwrap_or_default();
        match step {
            Step::Sync { .. } => format!("sync disk {disk} onto {path}"),
            Step::DeltaFromBasis { .. } => format!("delta-sync disk {disk} onto {path}"),
            Step::LayoutPatches { patches, .. } => {
                format!("write {} layout patches to {path}", patches.len())
            }
            Step::FirstChunkLast { .. } => format!("write the first chunk of {path} last"),
            Step::RereadPartitions { device, .. } => {
                format!("re-read the partition table of {}", device.display())
            }
            Step::GrowFilesystem { grow, .. } => {
                format!("grow {} on {} of {path}", grow.fs.as_str(), on(&grow.on))
            }
        }
    }

    fn write_step(&self, f: &mut String, n: usize, step: &Step) -> fmt::Result {
        write!(f, "  {n}. {}", self.step_title(step))?;
        match step {
            Step::Sync { disk, marker } => {
                let Some(d) = self.disks.get(*disk) else {
                    return writeln!(f);
                };
                let (data, zero, unused) = d.index.counts();
                writeln!(
                    f,
                    ": compare the target with the index ({} chunks of {}), fetch the data chunks that differ (at most {data}), verify each against its id, write them, zero any of the {} zero/unused chunks that does not read as zeros; all but the first chunk; then fdatasync",
                    d.index.entries.len(),
                    human_bytes(u64::from(d.index.chunk_size)),
                    zero + unused
                )?;
                if *marker {
                    writeln!(f, "     before any other write: wipe the first chunk and write this job's in-progress marker there, fdatasync")?;
                }
                Ok(())
            }
            Step::DeltaFromBasis {
                basis,
                delta,
                marker,
                ..
            } => write_delta(f, basis, delta, *marker),
            Step::LayoutPatches { patches, .. } => {
                writeln!(f, ":")?;
                write_patches(f, patches)
            }
            Step::FirstChunkLast { len, patches, .. } => {
                writeln!(
                    f,
                    ": fdatasync, write bytes 0..{len} (boot-critical) with {} patches merged in, fdatasync; nothing when the target already holds them",
                    patches.len()
                )?;
                write_patches(f, patches)
            }
            Step::RereadPartitions { .. } => writeln!(
                f,
                ": BLKRRPART, else the changed partitions one by one (BLKPG); a failure is a warning"
            ),
            Step::GrowFilesystem { grow, region, .. } => {
                let range = match region {
                    Some((off, len)) => format!("bytes {off}..{} of the target", off + len),
                    None => "no range in the layout plan: not grown".into(),
                };
                let how = match &grow.on {
                    GrowTarget::Lv { vg, lv } => format!(
                        "activate {vg}/{lv} from its PV ({range}) only, {}, deactivate",
                        crate::grow::tools(grow)
                    ),
                    _ => format!(
                        "on {range} (its partition node, else a loop device): {}",
                        crate::grow::tools(grow)
                    ),
                };
                writeln!(
                    f,
                    ": to {}, {how}; a failure is a warning saying what to run after the first boot",
                    human_bytes(grow.new_size)
                )
            }
        }
    }
}

fn write_delta(f: &mut String, basis: &str, d: &Delta, marker: bool) -> fmt::Result {
    writeln!(
        f,
        ": apply the delta from snapshot {basis}: {} of {} chunks differ ({} bytes to fetch), no target read",
        d.differing(),
        d.chunks,
        d.fetch_bytes
    )?;
    if d.differing() == 0 {
        return writeln!(
            f,
            "     the target already holds this snapshot: nothing is written"
        );
    }
    writeln!(
        f,
        "     fetch {} data chunks, verify each against its id, write them; write zeros over {}; all but the first chunk; then fdatasync",
        d.fetch.len(),
        d.zero.len()
    )?;
    if d.wipes_first() {
        let wipe = if marker {
            "wipe the first chunk and write this job's in-progress marker there, fdatasync"
        } else {
            "wipe the first chunk"
        };
        writeln!(f, "     before any other write: {wipe}")?;
    }
    if d.refresh_first {
        writeln!(f, "     the first chunk does not differ but is wiped: it is fetched and written again last")?;
    }
    Ok(())
}

fn write_patches(f: &mut String, patches: &[Patch]) -> fmt::Result {
    for p in patches {
        writeln!(
            f,
            "     - {} bytes at byte {}: {}",
            p.bytes.len(),
            p.offset,
            p.why
        )?;
    }
    Ok(())
}

fn on(t: &GrowTarget) -> String {
    match t {
        GrowTarget::Disk => "the whole disk".into(),
        GrowTarget::Partition { slot } => format!("partition {slot}"),
        GrowTarget::Lv { vg, lv } => format!("LV {vg}/{lv}"),
    }
}

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        writeln!(
            f,
            "restore plan: snapshot {} of machine {} (taken {}){}",
            m.snapshot,
            m.machine,
            m.created,
            match &self.basis {
                Some(b) => format!(", as a delta from snapshot {b} that the targets hold"),
                None => String::new(),
            }
        )?;
        for d in &self.disks {
            let (data, zero, unused) = d.index.counts();
            let t = &d.target;
            let what = match (t.exists, t.kind) {
                (false, _) => "new image file".to_string(),
                (true, TargetKind::BlockDevice) => {
                    format!("block device of {}", human_bytes(t.size))
                }
                (true, TargetKind::File { .. }) => {
                    format!("existing file of {}", human_bytes(t.size))
                }
            };
            writeln!(
                f,
                "  disk {} ({}, {} chunks: {data} data, {zero} zero, {unused} unused) -> {} ({what}{})",
                d.disk,
                human_bytes(d.size),
                d.index.entries.len(),
                t.path.display(),
                match (&t.holds, t.resumes) {
                    _ if self.basis.is_some() => format!(
                        "; holds snapshot {} exactly, only the delta is written",
                        self.basis.as_deref().unwrap_or_default()
                    ),
                    (_, true) => "; holds this job's partial restore, resumed".to_string(),
                    (Some(h), false) => format!("; holds {h}, will be overwritten"),
                    (None, false) => String::new(),
                }
            )?;
        }
        writeln!(f, "{}", self.layout)?;
        let mut steps = String::new();
        for (i, s) in self.steps.iter().enumerate() {
            self.write_step(&mut steps, i + 1, s)?;
        }
        write!(f, "steps:\n{}", steps.trim_end())
    }
}
