//! The plan as text an operator checks before anything is written (`--dry-run`).

use std::fmt;

use ferry_format::layout::ContentKind;
use ferry_format::units::human_bytes;

use crate::types::{Action, Adaptation, DiskMapping, FsGrow, GrowTarget, LayoutPlan};

impl fmt::Display for LayoutPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "layout plan:")?;
        for m in &self.mappings {
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DiskMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  {} ({}, {}) -> {} ({}{}{})",
            self.disk,
            human_bytes(self.source_size),
            self.table,
            self.target,
            human_bytes(self.target_size),
            if self.source_sector_size != self.target_sector_size {
                format!(
                    ", {}-byte sectors instead of {}",
                    self.target_sector_size, self.source_sector_size
                )
            } else {
                String::new()
            },
            if self.overwrites_data {
                "; holds data, will be overwritten"
            } else {
                ""
            },
        )?;
        let a = match &self.action {
            Action::Identical => return writeln!(f, ": same size, restored exactly as recorded"),
            Action::Adapt(a) => a,
        };
        writeln!(f, ": keep offsets")?;
        if self.source_sector_size != self.target_sector_size && a.gpt.is_some() {
            writeln!(
                f,
                "    - re-encode the GPT in {}-byte sectors (same byte offsets)",
                self.target_sector_size
            )?;
        }
        steps(f, a)?;
        if let Some(fs) = &self.grow_fs {
            writeln!(f, "    - after the restore: {}", fs_step(fs))?;
        }
        for n in &a.notes {
            writeln!(f, "    - note: {n}")?;
        }
        for p in &self.patches {
            writeln!(
                f,
                "    - write {} bytes at byte {}: {}",
                p.bytes.len(),
                p.offset,
                p.why
            )?;
        }
        Ok(())
    }
}

fn steps(f: &mut fmt::Formatter<'_>, a: &Adaptation) -> fmt::Result {
    if let Some(g) = &a.gpt {
        let from = g
            .old_backup_lba
            .map(|l| format!(" from LBA {l}"))
            .unwrap_or_default();
        writeln!(
            f,
            "    - move the backup GPT header{from} to LBA {} (entries at LBA {}); usable LBAs {}..={}",
            g.backup_lba, g.backup_entries_lba, g.first_usable_lba, g.last_usable_lba
        )?;
        if let Some(n) = g.protective_sectors {
            writeln!(f, "    - protective MBR covers {n} sectors")?;
        }
    }
    if let Some(p) = &a.partition {
        writeln!(
            f,
            "    - grow partition {} from LBA {}..={} to {}..={} (+{} sectors)",
            p.slot,
            p.first_lba,
            p.old_last_lba,
            p.first_lba,
            p.new_last_lba,
            p.new_last_lba - p.old_last_lba
        )?;
        if let Some((slot, old, new)) = p.extended {
            writeln!(
                f,
                "    - grow extended partition {slot} from {old} to {new} sectors"
            )?;
        }
    }
    if let Some(pv) = &a.pv {
        writeln!(
            f,
            "    - grow PV {} of {} from {} to {} ({} to {} extents; metadata seqno {})",
            pv.pv_uuid,
            pv.vg,
            human_bytes(pv.old_size),
            human_bytes(pv.new_size),
            pv.old_pe_count,
            pv.new_pe_count,
            pv.seqno
        )?;
    }
    if let Some(lv) = &a.lv {
        writeln!(
            f,
            "    - grow LV {}/{} by {} extents ({} to {}){}",
            lv.vg,
            lv.lv,
            lv.new_extents - lv.old_extents,
            lv.old_extents,
            lv.new_extents,
            if lv.new_segment {
                " in a new linear segment"
            } else {
                ", extending its last segment"
            }
        )?;
    }
    Ok(())
}

fn fs_step(fs: &FsGrow) -> String {
    let on = match &fs.on {
        GrowTarget::Disk => "the whole disk".to_string(),
        GrowTarget::Partition { slot } => format!("partition {slot}"),
        GrowTarget::Lv { vg, lv } => format!("{vg}/{lv}"),
    };
    let tool = match fs.fs {
        ContentKind::Ext2 | ContentKind::Ext3 | ContentKind::Ext4 => "resize2fs",
        ContentKind::Xfs => "xfs_growfs",
        ContentKind::Btrfs => "btrfs filesystem resize max",
        ContentKind::Ntfs => "ntfsresize",
        _ => "its tool",
    };
    let uuid = fs
        .uuid
        .as_ref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    format!(
        "grow {}{uuid} on {on} to {} ({tool})",
        fs.fs,
        human_bytes(fs.new_size)
    )
}
