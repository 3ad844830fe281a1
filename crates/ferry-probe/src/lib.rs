//! Reads a disk's layout — partition table, filesystems, LVM2 — into a
//! [`ferry_format::layout::DiskLayout`] for the backup manifest.
//!
//! Everything read off the disk is hostile. Every offset and length is checked against the
//! disk (or partition) before it is read; allocations are bounded by named limits; nothing
//! recurses without a depth limit. What is wrong decides the outcome:
//! - a partition table that is inconsistent (bad checksums, entries past the end of the disk,
//!   overlapping partitions, looping EBR chains, absurd entry counts) is a [`ProbeError`] naming
//!   the disk region: a restore from a misread table would be wrong;
//! - a filesystem superblock that does not look right is just [`ContentKind::Unknown`];
//! - an LVM2 label with a valid checksum whose metadata cannot be read is a [`ProbeError`].
//!
//! The partition tables are parsed by hand rather than with gptman/mbrman: gptman allocates
//! `number_of_partition_entries` entries before checking anything and multiplies LBAs without
//! overflow checks; mbrman panics on some malformed EBR chains.
//!
//! [`used_map`] reads, for a probed disk, which byte ranges hold anything a restore needs (the
//! allocation bitmaps and free-space trees of ext2/3/4, xfs, vfat and ntfs, swap headers, LVM
//! extents); a backup leaves the rest out. Its module documentation gives the rules.
//!
//! docs/layout.md describes each captured field and where it is found on the disk.

#![forbid(unsafe_code)]

use ferry_format::layout::{BootArea, ContentKind, DiskLayout, Gap, LbaRange, PartitionTable};
use ferry_image::{DiskSource, ImageError};

mod content;
pub mod crc;
mod gpt;
mod lvm;
pub mod lvm_text;
mod mbr;
mod used;
mod view;

pub use used::{used_map, UsedMap, GRANULE};

use view::View;

/// The gap before the first partition is scanned up to this many bytes.
const GAP_SCAN_LIMIT: u64 = 32 << 20;
/// The gap is read in pieces of this size.
const GAP_READ_SIZE: u64 = 1 << 20;

/// Why a disk's layout could not be read. Each variant names the disk region.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read {len} bytes at disk offset {offset}: {source}")]
    Read {
        offset: u64,
        len: u64,
        #[source]
        source: ImageError,
    },
    #[error("unsupported logical sector size {0}: expected a power of two from 512 to 65536")]
    SectorSize(u32),
    #[error("invalid GPT {region} at LBA {lba}: {reason} (`sgdisk -v` lists what is wrong; gdisk's recovery menu rebuilds a damaged GPT from its other copy)")]
    Gpt {
        region: &'static str,
        lba: u64,
        reason: String,
    },
    #[error("invalid MBR partition table in the {region} at LBA {lba}: {reason} (`sfdisk --verify` lists what is wrong; fix the table with fdisk)")]
    Mbr {
        region: &'static str,
        lba: u64,
        reason: String,
    },
    #[error("{partition} ends at LBA {last_lba}, past the end of the disk ({sectors} sectors): the disk is smaller than its partition table says (a truncated image?); check the table with `sgdisk -v` or `sfdisk --verify`")]
    BeyondEnd {
        partition: String,
        last_lba: u64,
        sectors: u64,
    },
    #[error("{a} and {b} overlap: no sector may belong to two of them; check the table with `sgdisk -v` or `sfdisk --verify`")]
    Overlap { a: String, b: String },
    #[error("invalid LVM2 {region} at disk offset {offset}: {reason} (`pvck` checks the PV; `vgcfgrestore` writes back good metadata)")]
    Lvm {
        region: &'static str,
        offset: u64,
        reason: String,
    },
    #[error("invalid LVM2 metadata text at disk offset {offset}, line {line}: {reason} (`pvck` checks the PV; `vgcfgrestore` writes back good metadata)")]
    LvmText {
        offset: u64,
        line: u32,
        reason: String,
    },
}

/// Read the layout of `disk`.
pub fn probe(disk: &dyn DiskSource) -> Result<DiskLayout, ProbeError> {
    let ss = disk.logical_sector_size();
    if !(512..=65536).contains(&ss) || !ss.is_power_of_two() {
        return Err(ProbeError::SectorSize(ss));
    }
    let sector0 = read_sector0(disk, ss)?;
    let (ss, mut table) = find_table(disk, ss, &sector0)?;
    probe_partition_contents(disk, ss, &mut table)?;
    let boot = boot_area(disk, ss, &sector0, &table)?;
    let content = match table {
        PartitionTable::None => Some(content::probe(&View::whole(disk), 0)?),
        _ => None,
    };
    Ok(DiskLayout {
        logical_sector_size: ss,
        size: disk.size(),
        table,
        boot,
        content,
    })
}

/// LBA 0, or zeros when the disk is smaller than a sector.
fn read_sector0(disk: &dyn DiskSource, ss: u32) -> Result<Vec<u8>, ProbeError> {
    Ok(View::whole(disk)
        .read(0, ss as usize)?
        .unwrap_or_else(|| vec![0; ss as usize]))
}

/// GPT first (also at 4096-byte sectors when the source says 512 and LBA 1 holds nothing),
/// then MBR.
fn find_table(
    disk: &dyn DiskSource,
    ss: u32,
    sector0: &[u8],
) -> Result<(u32, PartitionTable), ProbeError> {
    let pmbr = mbr::protective(sector0);
    if let Some(gpt) = gpt::probe(disk, ss, pmbr.clone())? {
        return Ok((ss, PartitionTable::Gpt(gpt)));
    }
    if ss == 512 && disk.size() >= 3 * 4096 {
        if let Some(gpt) = gpt::probe(disk, 4096, pmbr.clone())? {
            return Ok((4096, PartitionTable::Gpt(gpt)));
        }
    }
    if pmbr.kind != ferry_format::layout::ProtectiveMbrKind::Missing {
        return Err(ProbeError::Gpt {
            region: "header",
            lba: 1,
            reason: "the MBR has a protective 0xEE entry but no valid GPT header was found".into(),
        });
    }
    if content::is_boot_sector_filesystem(sector0) {
        return Ok((ss, PartitionTable::None));
    }
    Ok((
        ss,
        mbr::probe(disk, ss, sector0)?.map_or(PartitionTable::None, PartitionTable::Mbr),
    ))
}

fn probe_partition_contents(
    disk: &dyn DiskSource,
    ss: u32,
    table: &mut PartitionTable,
) -> Result<(), ProbeError> {
    let ss = u64::from(ss);
    match table {
        PartitionTable::None => {}
        PartitionTable::Gpt(gpt) => {
            for p in &mut gpt.partitions {
                // Bounds were checked by gpt::probe.
                let len = (p.last_lba - p.first_lba + 1) * ss;
                p.content = probe_range(disk, p.first_lba * ss, len)?;
            }
        }
        PartitionTable::Mbr(m) => {
            for p in &mut m.partitions {
                if p.kind != ferry_format::layout::MbrPartitionKind::Extended {
                    p.content = Some(probe_range(disk, p.start_lba * ss, p.sector_count * ss)?);
                }
            }
        }
    }
    Ok(())
}

fn probe_range(
    disk: &dyn DiskSource,
    offset: u64,
    len: u64,
) -> Result<ferry_format::layout::Content, ProbeError> {
    match View::slice(disk, offset, len) {
        Some(view) => content::probe(&view, 0),
        None => Ok(ferry_format::layout::Content::of(ContentKind::Unknown)),
    }
}

/// MBR boot code and the gap before the first partition.
fn boot_area(
    disk: &dyn DiskSource,
    ss: u32,
    sector0: &[u8],
    table: &PartitionTable,
) -> Result<BootArea, ProbeError> {
    let mbr_boot_code = sector0[..440].iter().any(|&b| b != 0);
    let bounds = match table {
        PartitionTable::None => None,
        PartitionTable::Mbr(m) => m
            .partitions
            .iter()
            .map(|p| p.start_lba)
            .min()
            .map(|end| (1, end)),
        PartitionTable::Gpt(g) => {
            let array_end = g.primary.map(|h| {
                let bytes =
                    u64::from(g.number_of_partition_entries) * u64::from(g.size_of_partition_entry);
                h.partition_entry_lba + bytes.div_ceil(u64::from(ss))
            });
            let first = g.partitions.iter().map(|p| p.first_lba).min();
            array_end.zip(first)
        }
    };
    let gap = match bounds {
        Some((start_lba, end_lba)) if start_lba <= end_lba => {
            Some(scan_gap(disk, ss, start_lba, end_lba)?)
        }
        _ => None,
    };
    Ok(BootArea { mbr_boot_code, gap })
}

/// Find the first and last non-zero sectors of `start_lba..end_lba` (up to [`GAP_SCAN_LIMIT`]).
fn scan_gap(
    disk: &dyn DiskSource,
    ss: u32,
    start_lba: u64,
    end_lba: u64,
) -> Result<Gap, ProbeError> {
    let ss = u64::from(ss);
    let scanned_end_lba = end_lba.min(start_lba + GAP_SCAN_LIMIT / ss);
    let view = View::whole(disk);
    let mut used: Option<LbaRange> = None;
    let mut lba = start_lba;
    while lba < scanned_end_lba {
        let count = (scanned_end_lba - lba).min(GAP_READ_SIZE / ss);
        let (offset, len) = (lba * ss, count * ss);
        if !view.known_zero(offset, len) {
            // Partition starts were checked against the disk size, so this is inside it.
            let buf = view.read(offset, len as usize)?.unwrap_or_default();
            for (i, sector) in buf.chunks(ss as usize).enumerate() {
                if sector.iter().any(|&b| b != 0) {
                    let at = lba + i as u64;
                    used = Some(LbaRange {
                        first: used.map_or(at, |u| u.first),
                        last: at,
                    });
                }
            }
        }
        lba += count;
    }
    Ok(Gap {
        start_lba,
        end_lba,
        used,
        scanned_end_lba,
    })
}
