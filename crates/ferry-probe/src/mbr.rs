//! MBR (DOS) partition tables and EBR chains, parsed by hand.
//!
//! Sector 0: boot code `0..440`, disk signature `440..444` (LE), four 16-byte entries at 446
//! (`0` status 0x00/0x80, `4` type, `8` start LBA u32, `12` sector count u32), 0x55 0xAA at 510.
//! An extended partition (type 0x05, 0x0F or 0x85) holds a chain of EBRs: each EBR is a sector
//! laid out the same way whose data entry starts relative to the EBR and whose link entry
//! (an extended type) points to the next EBR relative to the extended partition's start.
//! The data/link choice follows fdisk: the first non-extended entry with a type, the first
//! extended entry.

use ferry_format::layout::{
    Mbr, MbrEntry, MbrPartition, MbrPartitionKind, ProtectiveMbr, ProtectiveMbrKind,
};
use ferry_image::DiskSource;

use crate::view::{le32, View};
use crate::ProbeError;

/// The longest EBR chain accepted.
const MAX_LOGICAL: usize = 256;
const GPT_PROTECTIVE: u8 = 0xee;

#[derive(Clone, Copy)]
struct Raw {
    status: u8,
    kind: u8,
    start: u32,
    count: u32,
}

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

fn has_signature(sector: &[u8]) -> bool {
    sector.len() >= 512 && sector[510] == 0x55 && sector[511] == 0xaa
}

fn entries(sector: &[u8]) -> [Raw; 4] {
    std::array::from_fn(|i| {
        let e = &sector[446 + 16 * i..462 + 16 * i];
        Raw {
            status: e[0],
            kind: e[4],
            start: le32(e, 8),
            count: le32(e, 12),
        }
    })
}

/// What sector 0 says about a GPT: protective, hybrid or missing.
pub(crate) fn protective(sector0: &[u8]) -> ProtectiveMbr {
    if !has_signature(sector0) {
        return ProtectiveMbr {
            kind: ProtectiveMbrKind::Missing,
            disk_signature: 0,
            entries: Vec::new(),
        };
    }
    let entries: Vec<MbrEntry> = entries(sector0)
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind != 0)
        .map(|(i, e)| MbrEntry {
            slot: i as u32 + 1,
            bootable: e.status == 0x80,
            type_byte: e.kind,
            start_lba: u64::from(e.start),
            sector_count: u64::from(e.count),
        })
        .collect();
    let protective = entries
        .iter()
        .filter(|e| e.type_byte == GPT_PROTECTIVE)
        .count();
    let kind = match (protective, entries.len()) {
        (0, _) => ProtectiveMbrKind::Missing,
        (p, n) if p == n => ProtectiveMbrKind::Protective,
        _ => ProtectiveMbrKind::Hybrid,
    };
    ProtectiveMbr {
        kind,
        disk_signature: le32(sector0, 440),
        entries,
    }
}

/// The MBR table of sector 0, or `None` when sector 0 is not one (no 0x55AA, or a status byte
/// other than 0x00/0x80).
pub(crate) fn probe(
    disk: &dyn DiskSource,
    ss: u32,
    sector0: &[u8],
) -> Result<Option<Mbr>, ProbeError> {
    if !has_signature(sector0) {
        return Ok(None);
    }
    let raw = entries(sector0);
    if raw.iter().any(|e| e.status != 0 && e.status != 0x80) {
        return Ok(None);
    }
    let sectors = disk.size() / u64::from(ss);
    let mut partitions = Vec::new();
    let mut extended = None;
    for (i, e) in raw.iter().enumerate() {
        if e.count == 0 {
            continue;
        }
        let slot = i as u32 + 1;
        let p = entry(slot, e, 0, sectors, "MBR", 0)?;
        if p.kind == MbrPartitionKind::Extended {
            if extended.is_some() {
                return Err(mbr_error(
                    "MBR",
                    0,
                    format!("partition {slot} is a second extended partition"),
                ));
            }
            extended = Some((p.start_lba, p.sector_count));
        }
        partitions.push(p);
    }
    check_overlaps(&partitions, &[])?;
    if let Some((start, count)) = extended {
        let (logical, ebrs) = logical_partitions(&View::whole(disk), ss, sectors, start, count)?;
        check_overlaps(&logical, &ebrs)?;
        partitions.extend(logical);
    }
    Ok(Some(Mbr {
        disk_signature: le32(sector0, 440),
        partitions,
    }))
}

fn mbr_error(region: &'static str, lba: u64, reason: String) -> ProbeError {
    ProbeError::Mbr {
        region,
        lba,
        reason,
    }
}

/// A used entry of the MBR (`base` 0) or of an EBR (`base` = the EBR's LBA).
fn entry(
    slot: u32,
    e: &Raw,
    base: u64,
    sectors: u64,
    region: &'static str,
    lba: u64,
) -> Result<MbrPartition, ProbeError> {
    let kind = match (region, is_extended(e.kind)) {
        ("MBR", true) => MbrPartitionKind::Extended,
        ("MBR", false) => MbrPartitionKind::Primary,
        _ => MbrPartitionKind::Logical,
    };
    if e.start == 0 {
        return Err(mbr_error(
            region,
            lba,
            format!("partition {slot} starts on the sector that describes it"),
        ));
    }
    let start_lba = base + u64::from(e.start);
    let last_lba = start_lba + u64::from(e.count) - 1;
    if last_lba >= sectors {
        let partition = format!("MBR partition {slot} (LBA {start_lba}..={last_lba})");
        return Err(ProbeError::BeyondEnd {
            partition,
            last_lba,
            sectors,
        });
    }
    Ok(MbrPartition {
        slot,
        kind,
        bootable: e.status == 0x80,
        type_byte: e.kind,
        start_lba,
        sector_count: u64::from(e.count),
        ebr_lba: (kind == MbrPartitionKind::Logical).then_some(lba),
        content: None,
    })
}

/// Follow the EBR chain of the extended partition `ext_start..ext_start+ext_count`; returns the
/// logical partitions and the EBRs' LBAs.
fn logical_partitions(
    view: &View,
    ss: u32,
    sectors: u64,
    ext_start: u64,
    ext_count: u64,
) -> Result<(Vec<MbrPartition>, Vec<u64>), ProbeError> {
    let ext_end = ext_start + ext_count; // checked against the disk by entry()
    let mut logical: Vec<MbrPartition> = Vec::new();
    let mut ebrs: Vec<u64> = Vec::new();
    let mut next = Some(ext_start);
    while let Some(lba) = next {
        if ebrs.contains(&lba) {
            return Err(mbr_error(
                "EBR chain",
                lba,
                "the chain loops back to this EBR".into(),
            ));
        }
        if ebrs.len() == MAX_LOGICAL {
            return Err(mbr_error(
                "EBR chain",
                lba,
                format!("more than {MAX_LOGICAL} EBRs"),
            ));
        }
        if lba < ext_start || lba >= ext_end {
            let reason =
                format!("the EBR is outside the extended partition (LBA {ext_start}..{ext_end})");
            return Err(mbr_error("EBR chain", lba, reason));
        }
        let sector = view
            .read(lba * u64::from(ss), ss as usize)?
            .unwrap_or_default();
        let raw = entries(&sector);
        if !has_signature(&sector) {
            if lba == ext_start && raw.iter().all(|e| e.kind == 0 && e.count == 0) {
                break; // an empty extended partition
            }
            return Err(mbr_error(
                "EBR",
                lba,
                "the EBR has no 0x55AA signature".into(),
            ));
        }
        ebrs.push(lba);
        if let Some(data) = raw
            .iter()
            .find(|e| e.kind != 0 && !is_extended(e.kind) && e.count != 0)
        {
            let slot = 5 + logical.len() as u32;
            let p = entry(slot, data, lba, sectors, "EBR", lba)?;
            if p.start_lba + p.sector_count > ext_end {
                let reason = format!(
                    "logical partition {slot} (LBA {}..={}) ends past the extended partition (LBA {ext_start}..{ext_end})",
                    p.start_lba,
                    p.start_lba + p.sector_count - 1
                );
                return Err(mbr_error("EBR", lba, reason));
            }
            logical.push(p);
        }
        let link = raw.iter().find(|e| is_extended(e.kind) && e.count != 0);
        next = link.map(|link| ext_start + u64::from(link.start));
    }
    Ok((logical, ebrs))
}

/// No two partitions (extended ones excepted: they hold the logical ones) share a sector, and no
/// partition covers an EBR.
fn check_overlaps(partitions: &[MbrPartition], ebrs: &[u64]) -> Result<(), ProbeError> {
    let mut ranges: Vec<(u64, u64, String)> = partitions
        .iter()
        .map(|p| {
            let last = p.start_lba + p.sector_count - 1;
            (
                p.start_lba,
                last,
                format!("MBR partition {} (LBA {}..={last})", p.slot, p.start_lba),
            )
        })
        .chain(ebrs.iter().map(|&e| (e, e, format!("the EBR at LBA {e}"))))
        .collect();
    ranges.sort();
    for pair in ranges.windows(2) {
        if pair[1].0 <= pair[0].1 {
            return Err(ProbeError::Overlap {
                a: pair[0].2.clone(),
                b: pair[1].2.clone(),
            });
        }
    }
    Ok(())
}
