//! GPT on a larger disk or another sector size: headers and entry arrays rebuilt from the
//! recorded layout (UEFI 2.10 §5.3).
//!
//! Header (little-endian): `0` "EFI PART", `8` revision, `12` header size, `16` header CRC-32
//! (over header-size bytes with this field zero), `20` reserved, `24` MyLBA, `32` AlternateLBA,
//! `40` FirstUsableLBA, `48` LastUsableLBA, `56` disk GUID, `72` PartitionEntryLBA, `80` number
//! of entries, `84` entry size, `88` entry array CRC-32. Entry: `0` type GUID, `16` unique
//! GUID, `32` first LBA, `40` last LBA (inclusive), `48` attributes, `56` name (36 UTF-16LE
//! units). The backup header sits in the disk's last sector with its entry array just before.

use ferry_format::layout::{Gpt, GptPartition, ProtectiveMbrKind};
use ferry_format::units::human_bytes;

use crate::error::Refusal;
use crate::patch::PatchSet;
use crate::types::{growable, Geometry, GptChange, Grown, PartitionGrow, TableOutcome};
use crate::MIB;
use ferry_probe::crc::crc32;

/// Entry arrays larger than this are refused (as ferry-probe does).
const MAX_ARRAY_BYTES: u64 = 1 << 20;
const NAME_UNITS: usize = 36;
/// Offset of the partition table in sector 0.
const MBR_TABLE: u64 = 446;

/// The patches that make `g` right on the target described by `geo`.
pub(crate) fn adapt(g: &Gpt, geo: &Geometry) -> Result<TableOutcome, Refusal> {
    let (src_ss, tgt_ss) = (u64::from(geo.src_ss), u64::from(geo.tgt_ss));
    let array_bytes = validate(g, src_ss, geo.src_size / src_ss, tgt_ss)?;
    let conv = |lba: u64, what: &str| convert(lba, src_ss, tgt_ss, what);
    let converting = src_ss != tgt_ss;
    if converting && g.mbr.kind == ProtectiveMbrKind::Hybrid {
        return Err(Refusal::SectorSize(
            "sector 0 holds a hybrid MBR, whose MBR entries cannot be converted".into(),
        ));
    }

    // Partitions in target sectors.
    let mut parts: Vec<GptPartition> = Vec::with_capacity(g.partitions.len());
    for p in &g.partitions {
        let what = format!("partition {}", p.slot);
        let first_lba = conv(p.first_lba, &format!("{what} starts at"))?;
        let end = conv(p.last_lba + 1, &format!("{what} ends at"))?;
        parts.push(GptPartition {
            first_lba,
            last_lba: end - 1,
            ..p.clone()
        });
    }

    // Target geometry.
    let sectors = geo.tgt_size / tgt_ss;
    let array_sectors = array_bytes.div_ceil(tgt_ss);
    let entry_lba = match g.primary.map_or(2, |h| h.partition_entry_lba) {
        2 => 2,
        lba => conv(lba, "the primary entry array starts at")?,
    };
    let first_usable = if converting {
        (g.first_usable_lba * src_ss)
            .div_ceil(tgt_ss)
            .max(entry_lba + array_sectors)
    } else {
        g.first_usable_lba
    };
    let too_small = |need: String| Refusal::Layout(need);
    let backup_lba = sectors
        .checked_sub(1)
        .ok_or_else(|| too_small("the target has no sectors".into()))?;
    let backup_entries_lba = backup_lba
        .checked_sub(array_sectors)
        .ok_or_else(|| too_small("the target cannot hold the backup entry array".into()))?;
    let last_usable = backup_entries_lba.saturating_sub(1);
    if let Some(p) = parts
        .iter()
        .find(|p| p.first_lba < first_usable || p.last_lba > last_usable)
    {
        return Err(Refusal::SectorSize(format!(
            "with {tgt_ss}-byte sectors the usable sectors are {first_usable}..={last_usable}, and partition {} (sectors {}..={}) is outside them; a disk of at least {} bytes would hold it",
            p.slot,
            p.first_lba,
            p.last_lba,
            (p.last_lba + 2 + array_sectors) * tgt_ss
        )));
    }

    let mut out = TableOutcome::default();
    if geo.grow {
        grow_last(&mut parts, last_usable, tgt_ss, &mut out);
    }

    // Erase what would be found at the old places, then write the new structures over it.
    let old_backup = g
        .backup
        .map(|h| h.header_lba)
        .or(g.primary.map(|h| h.alternate_lba))
        .unwrap_or(geo.src_size / src_ss - 1);
    let old_backup_erased = old_backup > g.last_usable_lba && old_backup < geo.src_size / src_ss;
    if old_backup_erased {
        out.patches.zero(
            old_backup * src_ss,
            src_ss as usize,
            "erase the old backup GPT header",
        );
    }
    if converting {
        let old_entries = g.primary.map_or(2, |h| h.partition_entry_lba);
        out.patches
            .zero(src_ss, src_ss as usize, "erase the old primary GPT header");
        out.patches.zero(
            old_entries * src_ss,
            array_bytes as usize,
            "erase the old primary GPT entries",
        );
    }
    let protective_sectors = protective_mbr(g, sectors, &mut out.patches);

    let array = entry_array(g, &parts, array_bytes as usize);
    let array_crc = crc32(&array);
    let header = |my: u64, alternate: u64, entries: u64| {
        let mut h = vec![0u8; tgt_ss as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        put32(&mut h, 8, g.revision);
        put32(&mut h, 12, g.header_size);
        put64(&mut h, 24, my);
        put64(&mut h, 32, alternate);
        put64(&mut h, 40, first_usable);
        put64(&mut h, 48, last_usable);
        h[56..72].copy_from_slice(&g.disk_guid.to_disk_bytes());
        put64(&mut h, 72, entries);
        put32(&mut h, 80, g.number_of_partition_entries);
        put32(&mut h, 84, g.size_of_partition_entry);
        put32(&mut h, 88, array_crc);
        let crc = crc32(&h[..g.header_size as usize]);
        put32(&mut h, 16, crc);
        h
    };
    let padded = |mut a: Vec<u8>| {
        a.resize((array_sectors * tgt_ss) as usize, 0);
        a
    };
    out.patches.write(
        tgt_ss,
        header(1, backup_lba, entry_lba),
        "primary GPT header",
    );
    out.patches.write(
        entry_lba * tgt_ss,
        padded(array.clone()),
        "primary GPT entries",
    );
    out.patches.write(
        backup_entries_lba * tgt_ss,
        padded(array),
        "backup GPT entries",
    );
    out.patches.write(
        backup_lba * tgt_ss,
        header(backup_lba, 1, backup_entries_lba),
        "backup GPT header",
    );
    out.gpt = Some(GptChange {
        old_backup_lba: old_backup_erased.then_some(old_backup),
        backup_lba,
        backup_entries_lba,
        first_usable_lba: first_usable,
        last_usable_lba: last_usable,
        protective_sectors,
    });
    Ok(out)
}

/// Check what the patches rely on; returns the entry array's size in bytes.
fn validate(g: &Gpt, ss: u64, sectors: u64, tgt_ss: u64) -> Result<u64, Refusal> {
    let bad = |s: String| Err(Refusal::Layout(s));
    let (count, size) = (
        u64::from(g.number_of_partition_entries),
        u64::from(g.size_of_partition_entry),
    );
    if !(128..=4096).contains(&size) || size % 8 != 0 {
        return bad(format!(
            "GPT entry size {size} is not a multiple of 8 from 128 to 4096"
        ));
    }
    let array_bytes = count * size;
    if count == 0 || array_bytes > MAX_ARRAY_BYTES {
        return bad(format!(
            "GPT entry array of {count} entries of {size} bytes"
        ));
    }
    if g.header_size < 92 || u64::from(g.header_size) > ss.min(tgt_ss) {
        return bad(format!("GPT header size {}", g.header_size));
    }
    let entries_end = g
        .primary
        .map_or(2, |h| h.partition_entry_lba)
        .checked_add(array_bytes.div_ceil(ss))
        .filter(|&end| end >= 3 && end <= g.first_usable_lba);
    if entries_end.is_none()
        || g.first_usable_lba > g.last_usable_lba
        || g.last_usable_lba >= sectors
    {
        return bad(format!(
            "GPT usable sectors {}..={} do not fit between the primary entry array and the end of the disk ({sectors} sectors)",
            g.first_usable_lba, g.last_usable_lba
        ));
    }
    let mut by_start: Vec<&GptPartition> = g.partitions.iter().collect();
    by_start.sort_by_key(|p| p.first_lba);
    for (i, p) in by_start.iter().enumerate() {
        if p.slot == 0
            || u64::from(p.slot) > count
            || by_start[..i].iter().any(|o| o.slot == p.slot)
        {
            return bad(format!(
                "GPT slot {} is outside 1..={count} or used twice",
                p.slot
            ));
        }
        if p.first_lba > p.last_lba
            || p.first_lba < g.first_usable_lba
            || p.last_lba > g.last_usable_lba
        {
            return bad(format!(
                "partition {} (sectors {}..={}) is outside the usable sectors {}..={}",
                p.slot, p.first_lba, p.last_lba, g.first_usable_lba, g.last_usable_lba
            ));
        }
        if let Some(prev) = i.checked_sub(1).map(|j| by_start[j]) {
            if prev.last_lba >= p.first_lba {
                return bad(format!("partitions {} and {} overlap", prev.slot, p.slot));
            }
        }
        if p.name.encode_utf16().count() > NAME_UNITS {
            return bad(format!(
                "partition {}'s name is longer than {NAME_UNITS} UTF-16 units",
                p.slot
            ));
        }
    }
    Ok(array_bytes)
}

/// `lba` (of `from`-byte sectors) in `to`-byte sectors, when it lands on a sector boundary.
fn convert(lba: u64, from: u64, to: u64, what: &str) -> Result<u64, Refusal> {
    let byte = lba
        .checked_mul(from)
        .ok_or_else(|| Refusal::Layout(format!("{what} LBA {lba}: too large")))?;
    if byte % to != 0 {
        return Err(Refusal::SectorSize(format!(
            "{what} byte {byte}, which is not a multiple of {to}; only layouts whose partitions are aligned to {} can be converted",
            human_bytes(to)
        )));
    }
    Ok(byte / to)
}

/// Move the end of the partition that ends last to the last MiB boundary before the backup
/// entries, when what it holds can grow.
fn grow_last(parts: &mut [GptPartition], last_usable: u64, ss: u64, out: &mut TableOutcome) {
    let Some(p) = parts.iter_mut().max_by_key(|p| p.last_lba) else {
        return;
    };
    if let Err(why) = growable(&p.content) {
        out.notes
            .push(format!("partition {} is not grown: {why}", p.slot));
        return;
    }
    let end = (last_usable + 1) * ss / MIB * MIB / ss;
    if end <= p.last_lba + 1 {
        out.notes.push(format!(
            "partition {} already ends at the last MiB boundary",
            p.slot
        ));
        return;
    }
    let old_last = p.last_lba;
    p.last_lba = end - 1;
    out.grown = Some(Grown {
        partition: Some(PartitionGrow {
            slot: p.slot,
            first_lba: p.first_lba,
            old_last_lba: old_last,
            new_last_lba: p.last_lba,
            extended: None,
        }),
        offset: p.first_lba * ss,
        old_len: (old_last - p.first_lba + 1) * ss,
        new_len: (p.last_lba - p.first_lba + 1) * ss,
        content: p.content.clone(),
    });
}

/// The 0xEE entries of a protective MBR cover the new disk (capped at 32 bits).
fn protective_mbr(g: &Gpt, sectors: u64, patches: &mut PatchSet) -> Option<u32> {
    if g.mbr.kind != ProtectiveMbrKind::Protective {
        return None;
    }
    let mut count = None;
    for e in g
        .mbr
        .entries
        .iter()
        .filter(|e| e.type_byte == 0xee && (1..=4).contains(&e.slot))
    {
        let n = sectors.saturating_sub(e.start_lba).min(u64::from(u32::MAX)) as u32;
        let at = MBR_TABLE + 16 * u64::from(e.slot - 1) + 12;
        patches.write(at, n.to_le_bytes().to_vec(), "protective MBR size");
        count = Some(n);
    }
    count
}

fn entry_array(g: &Gpt, parts: &[GptPartition], len: usize) -> Vec<u8> {
    let size = g.size_of_partition_entry as usize;
    let mut a = vec![0u8; len];
    for p in parts {
        let e = &mut a[(p.slot as usize - 1) * size..][..size];
        e[0..16].copy_from_slice(&p.type_guid.to_disk_bytes());
        e[16..32].copy_from_slice(&p.unique_guid.to_disk_bytes());
        put64(e, 32, p.first_lba);
        put64(e, 40, p.last_lba);
        put64(e, 48, p.attributes);
        for (i, unit) in p.name.encode_utf16().take(NAME_UNITS).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }
    a
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
