//! GUID partition tables, parsed by hand with every field checked.
//!
//! Header (LBA 1, backup at the header's AlternateLBA, usually the last LBA), little-endian:
//! `0` "EFI PART", `8` revision, `12` header size, `16` header CRC-32 (computed with this field
//! zeroed), `24` MyLBA, `32` AlternateLBA, `40` FirstUsableLBA, `48` LastUsableLBA, `56` disk
//! GUID, `72` PartitionEntryLBA, `80` NumberOfPartitionEntries, `84` SizeOfPartitionEntry,
//! `88` entry array CRC-32.
//! Entry: `0` type GUID, `16` unique GUID, `32` first LBA, `40` last LBA, `48` attributes,
//! `56` name (36 UTF-16LE code units).

use ferry_format::layout::{
    Content, Gpt, GptHeaderLocation, GptPartition, Guid, ProtectiveMbr, ProtectiveMbrKind,
};
use ferry_image::DiskSource;

use crate::crc::crc32;
use crate::view::{le32, le64, View};
use crate::ProbeError;

/// The largest entry array accepted: 1 MiB (8192 entries of 128 bytes; tools write 16 KiB).
const MAX_ENTRY_ARRAY: u64 = 1 << 20;
const MIN_HEADER_SIZE: u32 = 92;
const MIN_ENTRY_SIZE: u32 = 128;
const MAX_ENTRY_SIZE: u32 = 4096;

/// A header that passed its own checks, with its entry array.
struct Header {
    revision: u32,
    header_size: u32,
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: [u8; 16],
    entries_lba: u64,
    count: u32,
    entry_size: u32,
    entries_crc: u32,
    entries: Vec<u8>,
}

enum Found {
    /// No "EFI PART" signature.
    Absent,
    Invalid(String),
    Valid(Header),
}

/// Read the GPT with `ss`-byte sectors. `Ok(None)` when neither header has a signature (or
/// only a backup remnant without a protective MBR).
pub(crate) fn probe(
    disk: &dyn DiskSource,
    ss: u32,
    mbr: ProtectiveMbr,
) -> Result<Option<Gpt>, ProbeError> {
    let sectors = disk.size() / u64::from(ss);
    if sectors < 3 {
        return Ok(None);
    }
    let last = sectors - 1;
    let primary = read_header(disk, ss, 1, sectors)?;
    let (header, primary_loc, backup_loc) = match primary {
        Found::Valid(p) => {
            let mut backup = None;
            for lba in [p.alternate_lba, last] {
                if lba > 1 && lba < sectors {
                    if let Found::Valid(b) = read_header(disk, ss, lba, sectors)? {
                        if agrees(&p, &b) {
                            backup = Some(location(&b));
                            break;
                        }
                    }
                }
            }
            let loc = location(&p);
            (p, Some(loc), backup)
        }
        Found::Invalid(reason) => match read_header(disk, ss, last, sectors)? {
            Found::Valid(b) => {
                let loc = location(&b);
                (b, None, Some(loc))
            }
            _ => {
                return Err(ProbeError::Gpt {
                    region: "primary header",
                    lba: 1,
                    reason,
                })
            }
        },
        Found::Absent => match read_header(disk, ss, last, sectors)? {
            Found::Valid(b) if mbr.kind != ProtectiveMbrKind::Missing => {
                let loc = location(&b);
                (b, None, Some(loc))
            }
            Found::Invalid(reason) if mbr.kind != ProtectiveMbrKind::Missing => {
                return Err(ProbeError::Gpt {
                    region: "backup header",
                    lba: last,
                    reason,
                })
            }
            _ => return Ok(None),
        },
    };
    let partitions = partitions(&header, sectors)?;
    Ok(Some(Gpt {
        disk_guid: Guid(header.disk_guid),
        revision: header.revision,
        header_size: header.header_size,
        first_usable_lba: header.first_usable,
        last_usable_lba: header.last_usable,
        number_of_partition_entries: header.count,
        size_of_partition_entry: header.entry_size,
        primary: primary_loc,
        backup: backup_loc,
        mbr,
        partitions,
    }))
}

fn location(h: &Header) -> GptHeaderLocation {
    GptHeaderLocation {
        header_lba: h.my_lba,
        alternate_lba: h.alternate_lba,
        partition_entry_lba: h.entries_lba,
    }
}

/// The backup describes the same table as the primary.
fn agrees(p: &Header, b: &Header) -> bool {
    p.disk_guid == b.disk_guid
        && p.first_usable == b.first_usable
        && p.last_usable == b.last_usable
        && p.count == b.count
        && p.entry_size == b.entry_size
        && p.entries_crc == b.entries_crc
        && b.alternate_lba == 1
}

/// Read and check the header at `lba` and its entry array.
fn read_header(
    disk: &dyn DiskSource,
    ss: u32,
    lba: u64,
    sectors: u64,
) -> Result<Found, ProbeError> {
    let view = View::whole(disk);
    let Some(sector) = view.read(lba * u64::from(ss), ss as usize)? else {
        return Ok(Found::Absent);
    };
    if &sector[..8] != b"EFI PART" {
        return Ok(Found::Absent);
    }
    let h = match check_header(&sector, ss, lba, sectors) {
        Ok(h) => h,
        Err(reason) => return Ok(Found::Invalid(reason)),
    };
    let array_len = u64::from(h.count) * u64::from(h.entry_size); // checked <= MAX_ENTRY_ARRAY
    let entries = view
        .read(h.entries_lba * u64::from(ss), array_len as usize)?
        .unwrap_or_default();
    let crc = crc32(&entries);
    if crc != h.entries_crc {
        return Ok(Found::Invalid(format!(
            "entry array CRC-32 is {crc:#010x}, the header says {:#010x}",
            h.entries_crc
        )));
    }
    Ok(Found::Valid(Header { entries, ..h }))
}

fn check_header(s: &[u8], ss: u32, lba: u64, sectors: u64) -> Result<Header, String> {
    let header_size = le32(s, 12);
    if header_size < MIN_HEADER_SIZE || header_size > ss {
        return Err(format!(
            "header size {header_size} is not between {MIN_HEADER_SIZE} and the sector size {ss}"
        ));
    }
    let mut copy = s[..header_size as usize].to_vec();
    copy[16..20].fill(0);
    let (stored, crc) = (le32(s, 16), crc32(&copy));
    if stored != crc {
        return Err(format!(
            "header CRC-32 is {crc:#010x}, the header says {stored:#010x}"
        ));
    }
    let h = Header {
        revision: le32(s, 8),
        header_size,
        my_lba: le64(s, 24),
        alternate_lba: le64(s, 32),
        first_usable: le64(s, 40),
        last_usable: le64(s, 48),
        disk_guid: s[56..72].try_into().unwrap_or([0; 16]),
        entries_lba: le64(s, 72),
        count: le32(s, 80),
        entry_size: le32(s, 84),
        entries_crc: le32(s, 88),
        entries: Vec::new(),
    };
    if h.revision >> 16 != 1 {
        return Err(format!("revision {:#010x} is not 1.x", h.revision));
    }
    if h.my_lba != lba {
        return Err(format!("MyLBA is {}", h.my_lba));
    }
    if h.entry_size < MIN_ENTRY_SIZE || h.entry_size > MAX_ENTRY_SIZE || h.entry_size & 7 != 0 {
        return Err(format!(
            "partition entry size {} is not a multiple of 8 from 128 to 4096",
            h.entry_size
        ));
    }
    let array_len = u64::from(h.count) * u64::from(h.entry_size);
    if array_len > MAX_ENTRY_ARRAY {
        return Err(format!(
            "{} entries of {} bytes exceed the {MAX_ENTRY_ARRAY}-byte limit",
            h.count, h.entry_size
        ));
    }
    let array_sectors = array_len.div_ceil(u64::from(ss));
    let array_end = h
        .entries_lba
        .checked_add(array_sectors)
        .filter(|&end| end <= sectors);
    let Some(array_end) = array_end else {
        return Err(format!(
            "entry array at LBA {} ({array_sectors} sectors) is past the end of the disk",
            h.entries_lba
        ));
    };
    if h.first_usable > h.last_usable.saturating_add(1) || h.first_usable < 2 {
        return Err(format!(
            "usable LBAs {}..={} are not a range",
            h.first_usable, h.last_usable
        ));
    }
    // The header and its array lie outside the usable range, on their side of it.
    let outside = if lba == 1 {
        h.entries_lba >= 2 && array_end <= h.first_usable
    } else {
        h.entries_lba > h.last_usable && array_end <= lba
    };
    if !outside {
        return Err(format!(
            "entry array LBA {}..{array_end} overlaps the header or the usable LBAs {}..={}",
            h.entries_lba, h.first_usable, h.last_usable
        ));
    }
    Ok(h)
}

/// The used entries, checked against the usable range, the disk and each other.
fn partitions(h: &Header, sectors: u64) -> Result<Vec<GptPartition>, ProbeError> {
    let region = if h.my_lba == 1 {
        "entry array"
    } else {
        "backup entry array"
    };
    let mut out = Vec::new();
    for (i, e) in h.entries.chunks_exact(h.entry_size as usize).enumerate() {
        let type_guid = Guid(e[..16].try_into().unwrap_or([0; 16]));
        if type_guid.is_zero() {
            continue;
        }
        let slot = i as u32 + 1;
        let (first_lba, last_lba) = (le64(e, 32), le64(e, 40));
        let what = format!("GPT partition {slot} (LBA {first_lba}..={last_lba})");
        if first_lba > last_lba {
            return Err(ProbeError::Gpt {
                region,
                lba: h.entries_lba,
                reason: format!("{what} ends before it starts"),
            });
        }
        if last_lba >= sectors {
            return Err(ProbeError::BeyondEnd {
                partition: what,
                last_lba,
                sectors,
            });
        }
        if first_lba < h.first_usable || last_lba > h.last_usable {
            return Err(ProbeError::Gpt {
                region,
                lba: h.entries_lba,
                reason: format!(
                    "{what} is outside the usable LBAs {}..={}",
                    h.first_usable, h.last_usable
                ),
            });
        }
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        out.push(GptPartition {
            slot,
            type_guid,
            unique_guid: Guid(e[16..32].try_into().unwrap_or([0; 16])),
            first_lba,
            last_lba,
            attributes: le64(e, 48),
            name: String::from_utf16_lossy(&name),
            content: Content::unknown(),
        });
    }
    let mut by_start: Vec<&GptPartition> = out.iter().collect();
    by_start.sort_by_key(|p| p.first_lba);
    for pair in by_start.windows(2) {
        if pair[1].first_lba <= pair[0].last_lba {
            let name = |p: &GptPartition| {
                format!(
                    "GPT partition {} (LBA {}..={})",
                    p.slot, p.first_lba, p.last_lba
                )
            };
            return Err(ProbeError::Overlap {
                a: name(pair[0]),
                b: name(pair[1]),
            });
        }
    }
    Ok(out)
}
