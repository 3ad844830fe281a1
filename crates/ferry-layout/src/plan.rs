//! The planner's orchestrator: map the disks onto targets (`assign`), then for each
//! pair let the partition-table module (`gpt`, `mbr`, or none) adapt the table and grow the last
//! partition, and `lvm` grow the PV and LV in it. The types it works with are in `types`.

use ferry_format::layout::{Content, ContentKind, DiskLayout, PartitionTable};
use ferry_format::units::human_bytes;

use crate::assign::{assign, check_inventory};
use crate::error::{PlanError, Refusal};
use crate::patch::PatchSet;
use crate::types::{
    growable, Action, Adaptation, DiskMapping, FsGrow, Geometry, GrowLv, GrowTarget, Grown,
    LayoutPlan, Policy, SourceDisk, TableOutcome, TargetDisk,
};
use crate::{gpt, lvm, mbr};

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
