//! MBR (DOS) tables on a larger disk: with grow, the last partition is grown to the end.
//!
//! An entry (16 bytes at 446 + 16·(slot − 1) of the MBR or an EBR): `0` status, `1` start CHS,
//! `4` type, `5` end CHS, `8` start LBA, `12` sector count (both 32-bit little-endian). A
//! logical partition's EBR holds its data entry first (start relative to the EBR) and the link
//! to the next EBR second (start relative to the extended partition, count from the next EBR to
//! the end of the next logical partition), as fdisk and sfdisk write them.

use ferry_format::layout::{Mbr, MbrPartition, MbrPartitionKind};
use ferry_format::units::human_bytes;

use crate::error::Refusal;
use crate::patch::PatchSet;
use crate::types::{growable, Geometry, Grown, PartitionGrow, TableOutcome};
use crate::MIB;

const TABLE: u64 = 446;
/// The CHS geometry fdisk assumes for LBA-to-CHS (255 heads, 63 sectors per track).
const HEADS: u64 = 255;
const SECTORS_PER_TRACK: u64 = 63;
/// MBR entries hold 32-bit sector numbers.
const MAX_SECTORS: u64 = 1 << 32;

pub(crate) fn adapt(m: &Mbr, geo: &Geometry) -> Result<TableOutcome, Refusal> {
    if geo.src_ss != geo.tgt_ss {
        return Err(Refusal::SectorSize(format!(
            "an MBR partition table counts in sectors and is not converted to another sector size; restore onto a disk with {}-byte sectors",
            geo.src_ss
        )));
    }
    let ss = u64::from(geo.src_ss);
    validate(m, geo.src_size / ss)?;
    let mut out = TableOutcome::default();
    if !geo.grow || geo.tgt_size == geo.src_size {
        return Ok(out);
    }
    let sectors = geo.tgt_size / ss;
    let new_end = (sectors * ss / MIB * MIB / ss).min(MAX_SECTORS);
    if sectors > MAX_SECTORS {
        return Err(Refusal::Grow {
            what: "the last MBR partition".into(),
            reason: format!(
                "an MBR addresses at most 2^32 sectors ({} with {ss}-byte sectors) and the target has {sectors}; restore without grow (the space past the old end stays unallocated)",
                human_bytes(MAX_SECTORS * ss)
            ),
        });
    }
    let end = |p: &MbrPartition| p.start_lba + p.sector_count;
    let Some(last) = m
        .partitions
        .iter()
        .filter(|p| p.kind != MbrPartitionKind::Logical)
        .max_by_key(|p| end(p))
    else {
        return Ok(out);
    };
    let (part, extended) = if last.kind == MbrPartitionKind::Extended {
        let logical = m
            .partitions
            .iter()
            .filter(|p| p.kind == MbrPartitionKind::Logical)
            .max_by_key(|p| end(p));
        match logical {
            Some(l) => (l, Some(last)),
            None => return Ok(out),
        }
    } else {
        (last, None)
    };
    let content = part
        .content
        .clone()
        .unwrap_or_else(ferry_format::layout::Content::unknown);
    if let Err(why) = growable(&content) {
        out.notes
            .push(format!("partition {} is not grown: {why}", part.slot));
        return Ok(out);
    }
    if new_end <= end(part) {
        out.notes.push(format!(
            "partition {} already ends at the last MiB boundary",
            part.slot
        ));
        return Ok(out);
    }
    let p = &mut out.patches;
    let mut grow = PartitionGrow {
        slot: part.slot,
        first_lba: part.start_lba,
        old_last_lba: end(part) - 1,
        new_last_lba: new_end - 1,
        extended: None,
    };
    match (extended, part.ebr_lba) {
        (None, _) => entry_end(p, 0, part.slot, part.start_lba, part.start_lba, new_end),
        (Some(ext), Some(ebr)) => {
            entry_end(
                p,
                ebr * ss,
                1,
                part.start_lba - ebr,
                part.start_lba,
                new_end,
            );
            let prev = m
                .partitions
                .iter()
                .filter(|q| q.kind == MbrPartitionKind::Logical)
                .take_while(|q| q.slot != part.slot)
                .last();
            if let Some(prev_ebr) = prev.and_then(|q| q.ebr_lba) {
                entry_end(p, prev_ebr * ss, 2, ebr - ext.start_lba, ebr, new_end);
            }
            if new_end > end(ext) {
                entry_end(p, 0, ext.slot, ext.start_lba, ext.start_lba, new_end);
                grow.extended = Some((ext.slot, ext.sector_count, new_end - ext.start_lba));
            }
        }
        (Some(_), None) => {
            return Err(Refusal::Layout(format!(
                "logical partition {} has no EBR",
                part.slot
            )))
        }
    }
    out.grown = Some(Grown {
        partition: Some(grow),
        offset: part.start_lba * ss,
        old_len: part.sector_count * ss,
        new_len: (new_end - part.start_lba) * ss,
        content,
    });
    Ok(out)
}

/// Rewrite bytes 5..16 of entry `index` (1-based) of the table in the sector at `sector`: end
/// CHS, the (unchanged) start field and the count reaching `end` (absolute, exclusive) from
/// `abs_start`. The status, start CHS and type bytes are left as they are.
fn entry_end(
    p: &mut PatchSet,
    sector: u64,
    index: u32,
    start_field: u64,
    abs_start: u64,
    end: u64,
) {
    let mut b = Vec::with_capacity(11);
    b.extend_from_slice(&chs(end - 1));
    b.extend_from_slice(&(start_field as u32).to_le_bytes());
    b.extend_from_slice(&((end - abs_start) as u32).to_le_bytes());
    let what = if sector == 0 {
        "MBR".to_string()
    } else {
        format!("EBR at byte {sector}")
    };
    p.write(
        sector + TABLE + 16 * u64::from(index - 1) + 5,
        b,
        format!("{what} entry {index}: end and size"),
    );
}

/// CHS bytes (head, sector | cylinder high bits, cylinder low bits) for `lba`, or the
/// 1023/254/63 marker past what CHS can address, as fdisk writes them.
fn chs(lba: u64) -> [u8; 3] {
    let c = lba / (HEADS * SECTORS_PER_TRACK);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let h = (lba / SECTORS_PER_TRACK) % HEADS;
    let s = lba % SECTORS_PER_TRACK + 1;
    [h as u8, (s as u8) | ((c >> 2) as u8 & 0xc0), c as u8]
}

/// The checks ferry-probe makes, repeated: the layout value may come from anywhere.
fn validate(m: &Mbr, sectors: u64) -> Result<(), Refusal> {
    let bad = |s: String| Err(Refusal::Layout(s));
    let range = |p: &MbrPartition| {
        p.start_lba
            .checked_add(p.sector_count)
            .filter(|&e| p.sector_count > 0 && e <= sectors.min(MAX_SECTORS))
    };
    let mut extended = None;
    for (i, p) in m.partitions.iter().enumerate() {
        let Some(end) = range(p).filter(|_| p.start_lba > 0) else {
            return bad(format!(
                "partition {} (start {}, {} sectors) is empty or past the end of the disk",
                p.slot, p.start_lba, p.sector_count
            ));
        };
        if m.partitions[..i].iter().any(|o| o.slot == p.slot) {
            return bad(format!("slot {} is used twice", p.slot));
        }
        let logical = p.kind == MbrPartitionKind::Logical;
        if logical != (p.slot >= 5) || p.slot == 0 || logical != p.ebr_lba.is_some() {
            return bad(format!(
                "partition {} has a slot or EBR that does not match its kind",
                p.slot
            ));
        }
        if p.kind == MbrPartitionKind::Extended && extended.replace(p).is_some() {
            return bad("more than one extended partition".into());
        }
        for o in &m.partitions[..i] {
            let same_level = (o.kind == MbrPartitionKind::Logical) == logical;
            let o_end = o.start_lba + o.sector_count;
            if same_level && o.start_lba < end && p.start_lba < o_end {
                return bad(format!("partitions {} and {} overlap", o.slot, p.slot));
            }
            // An EBR must not lie inside another logical partition or repeat (a loop).
            if let (true, Some(a), Some(b)) = (logical, o.ebr_lba, p.ebr_lba) {
                if a == b || (o.start_lba..o_end).contains(&b) || (p.start_lba..end).contains(&a) {
                    return bad(format!(
                        "the EBRs of partitions {} and {} collide",
                        o.slot, p.slot
                    ));
                }
            }
        }
    }
    for p in m
        .partitions
        .iter()
        .filter(|p| p.kind == MbrPartitionKind::Logical)
    {
        let Some(ext) = extended else {
            return bad(format!(
                "logical partition {} without an extended partition",
                p.slot
            ));
        };
        let ebr = p.ebr_lba.unwrap_or(0);
        let ext_end = ext.start_lba + ext.sector_count;
        if ebr < ext.start_lba || ebr >= p.start_lba || p.start_lba + p.sector_count > ext_end {
            return bad(format!(
                "logical partition {} or its EBR at {ebr} lies outside the extended partition",
                p.slot
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn chs_matches_sfdisk() {
        // Values read from an sfdisk-made image (255 heads, 63 sectors).
        assert_eq!(super::chs(2048), [0x20, 0x21, 0x00]);
        assert_eq!(super::chs(34815), [0x2a, 0x28, 0x02]);
        assert_eq!(super::chs(131071), [0x28, 0x20, 0x08]);
        assert_eq!(super::chs(1 << 31), [0xfe, 0xff, 0xff]);
    }
}
