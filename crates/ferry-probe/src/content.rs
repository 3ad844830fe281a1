//! Superblock probes: what a disk, partition or LV holds.
//!
//! Each probe reads a few fixed offsets and returns `None` unless the superblock is plausible;
//! the first match wins in the order LVM2, xfs, ext2/3/4, btrfs, ntfs, vfat, swap. Only read
//! errors (and LVM metadata that a valid label vouches for) are errors.

use ferry_format::layout::{Content, ContentKind};

use crate::lvm;
use crate::view::{be16, be32, be64, c_string, le16, le32, le64, View};
use crate::ProbeError;

/// Deepest nesting probed: a PV's LVs are probed (depth 1), an LV's own PV label is not followed.
const MAX_DEPTH: u32 = 1;
/// A FAT root directory is scanned up to this many bytes.
const FAT_ROOT_SCAN: u64 = 1 << 20;
/// FAT32 root directory clusters followed at most (blkid's limit too).
const FAT_ROOT_CLUSTERS: usize = 100;

/// What `view` holds; [`ContentKind::Unknown`] when nothing is recognised.
pub(crate) fn probe(view: &View, depth: u32) -> Result<Content, ProbeError> {
    if let Some(pv) = lvm::probe(view, depth < MAX_DEPTH)? {
        return Ok(pv);
    }
    for probe in [xfs, ext, btrfs, ntfs, vfat, swap] {
        if let Some(content) = probe(view)? {
            return Ok(content);
        }
    }
    Ok(Content::unknown())
}

/// Sector 0 is a FAT or NTFS boot sector (so its 0x55AA does not make it an MBR).
pub(crate) fn is_boot_sector_filesystem(sector0: &[u8]) -> bool {
    sector0.len() >= 512 && (is_ntfs_boot(sector0) || fat_geometry(sector0).is_some())
}

/// A canonical UUID of 16 bytes in stored order (ext, xfs, btrfs, swap); `None` when all zero.
fn uuid(b: &[u8]) -> Option<String> {
    if b.iter().all(|&c| c == 0) {
        return None;
    }
    let hex: String = b.iter().map(|c| format!("{c:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn label(b: &[u8]) -> Option<String> {
    Some(c_string(b)).filter(|l| !l.is_empty())
}

/// ext2/3/4: superblock at 1024, magic 0xEF53 at 0x38.
fn ext(view: &View) -> Result<Option<Content>, ProbeError> {
    let Some(sb) = view.read(1024, 1024)? else {
        return Ok(None);
    };
    let log_block = le32(&sb, 0x18);
    if le16(&sb, 0x38) != 0xef53 || log_block > 6 {
        return Ok(None);
    }
    let (compat, incompat, ro_compat) = (le32(&sb, 0x5c), le32(&sb, 0x60), le32(&sb, 0x64));
    const HAS_JOURNAL: u32 = 0x4;
    const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
    const INCOMPAT_64BIT: u32 = 0x80;
    // What ext3 understands (blkid's EXT3_FEATURE_*_SUPP): FILETYPE|RECOVER|META_BG and
    // SPARSE_SUPER|LARGE_FILE|BTREE_DIR. Anything more is ext4.
    const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return Ok(None); // an external journal, not a filesystem
    }
    let kind = if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        ContentKind::Ext4
    } else if compat & HAS_JOURNAL != 0 {
        ContentKind::Ext3
    } else {
        ContentKind::Ext2
    };
    let hi = if incompat & INCOMPAT_64BIT != 0 {
        u64::from(le32(&sb, 0x150))
    } else {
        0
    };
    Ok(Some(Content {
        uuid: uuid(&sb[0x68..0x78]),
        label: label(&sb[0x78..0x88]),
        block_size: Some(1024 << log_block),
        block_count: Some(hi << 32 | u64::from(le32(&sb, 0x04))),
        ..Content::of(kind)
    }))
}

/// xfs: "XFSB" at 0, big-endian fields.
fn xfs(view: &View) -> Result<Option<Content>, ProbeError> {
    let Some(sb) = view.read(0, 512)? else {
        return Ok(None);
    };
    let (block_size, blocks, agcount, sect_size) =
        (be32(&sb, 4), be64(&sb, 8), be32(&sb, 88), be16(&sb, 102));
    let plausible = &sb[..4] == b"XFSB"
        && block_size.is_power_of_two()
        && (512..=65536).contains(&block_size)
        && sect_size.is_power_of_two()
        && (512..=32768).contains(&sect_size)
        && agcount > 0
        && blocks > 0;
    if !plausible {
        return Ok(None);
    }
    Ok(Some(Content {
        uuid: uuid(&sb[32..48]),
        label: label(&sb[108..120]),
        block_size: Some(block_size),
        block_count: Some(blocks),
        ..Content::of(ContentKind::Xfs)
    }))
}

/// btrfs: superblock at 64 KiB, magic "_BHRfS_M" at +0x40.
fn btrfs(view: &View) -> Result<Option<Content>, ProbeError> {
    let Some(sb) = view.read(0x10000, 0x1000)? else {
        return Ok(None);
    };
    let sector_size = le32(&sb, 0x90);
    if &sb[0x40..0x48] != b"_BHRfS_M"
        || !sector_size.is_power_of_two()
        || !(512..=65536).contains(&sector_size)
    {
        return Ok(None);
    }
    Ok(Some(Content {
        uuid: uuid(&sb[0x20..0x30]),
        label: label(&sb[0x12b..0x22b]),
        block_size: Some(sector_size),
        ..Content::of(ContentKind::Btrfs)
    }))
}

pub(crate) fn is_ntfs_boot(s: &[u8]) -> bool {
    let bps = le16(s, 0x0b);
    &s[3..11] == b"NTFS    " && bps.is_power_of_two() && (256..=4096).contains(&bps) && s[0x0d] != 0
}

/// ntfs: OEM id "NTFS    " at 3; the serial number at 0x48; the label in the $VOLUME_NAME
/// attribute of MFT record 3 ($Volume).
fn ntfs(view: &View) -> Result<Option<Content>, ProbeError> {
    let Some(boot) = view.read(0, 512)? else {
        return Ok(None);
    };
    if !is_ntfs_boot(&boot) {
        return Ok(None);
    }
    let serial = le64(&boot, 0x48);
    Ok(Some(Content {
        uuid: (serial != 0).then(|| format!("{serial:016X}")),
        label: ntfs_label(view, &boot)?,
        ..Content::of(ContentKind::Ntfs)
    }))
}

fn ntfs_label(view: &View, boot: &[u8]) -> Result<Option<String>, ProbeError> {
    const VOLUME_RECORD: u64 = 3;
    const VOLUME_NAME: u32 = 0x60;
    const END: u32 = 0xffff_ffff;
    let bps = u64::from(le16(boot, 0x0b));
    let spc = match boot[0x0d] {
        n @ 0..=0x80 => u64::from(n),
        n => 1u64.checked_shl(256 - u32::from(n)).unwrap_or(0), // 2^(256-n) for large clusters
    };
    // Saturating: 2^(256-n) clusters reach 2^63 sectors; the checks below refuse the result.
    let cluster = bps.saturating_mul(spc);
    let record_size = match boot[0x40] as i8 {
        n @ 1.. => cluster.saturating_mul(n as u64),
        n => 1u64.checked_shl(u32::from(n.unsigned_abs())).unwrap_or(0),
    };
    if !(512..=65536).contains(&record_size) {
        return Ok(None);
    }
    let offset = le64(boot, 0x30)
        .checked_mul(cluster)
        .and_then(|o| o.checked_add(VOLUME_RECORD * record_size));
    let Some(offset) = offset else {
        return Ok(None);
    };
    let Some(mut rec) = view.read(offset, record_size as usize)? else {
        return Ok(None);
    };
    if &rec[..4] != b"FILE" || !ntfs_fixup(&mut rec) {
        return Ok(None);
    }
    let mut at = usize::from(le16(&rec, 0x14));
    while at + 24 <= rec.len() {
        let (kind, len) = (le32(&rec, at), le32(&rec, at + 4) as usize);
        if kind == END || len < 24 || at + len > rec.len() {
            break;
        }
        if kind == VOLUME_NAME && rec[at + 8] == 0 {
            let (vlen, voff) = (
                le32(&rec, at + 0x10) as usize,
                usize::from(le16(&rec, at + 0x14)),
            );
            let Some(value) = rec
                .get(at + voff..at + voff + vlen)
                .filter(|_| voff + vlen <= len)
            else {
                break;
            };
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Ok(Some(String::from_utf16_lossy(&units)).filter(|l| !l.is_empty()));
        }
        at += len;
    }
    Ok(None)
}

/// Apply an NTFS record's update sequence array (one check value per 512-byte stride).
pub(crate) fn ntfs_fixup(rec: &mut [u8]) -> bool {
    let (usa_offset, usa_count) = (usize::from(le16(rec, 4)), usize::from(le16(rec, 6)));
    if usa_count == 0 || usa_offset + 2 * usa_count > rec.len() || (usa_count - 1) * 512 > rec.len()
    {
        return false;
    }
    let check = [rec[usa_offset], rec[usa_offset + 1]];
    for i in 1..usa_count {
        let end = i * 512 - 2;
        if rec[end..end + 2] != check {
            return false;
        }
        let fix = usa_offset + 2 * i;
        rec[end] = rec[fix];
        rec[end + 1] = rec[fix + 1];
    }
    true
}

/// Geometry of a FAT boot sector, when it is one.
pub(crate) struct Fat {
    pub(crate) bytes_per_sector: u64,
    pub(crate) sectors_per_cluster: u64,
    pub(crate) reserved: u64,
    pub(crate) fat_count: u64,
    pub(crate) fat_sectors: u64,
    pub(crate) root_entries: u64,
    pub(crate) total_sectors: u64,
    pub(crate) clusters: u64,
    pub(crate) bits: u8,
}

pub(crate) fn fat_geometry(s: &[u8]) -> Option<Fat> {
    let bps = le16(s, 0x0b);
    let spc = s[0x0d];
    let reserved = le16(s, 0x0e);
    let fats = s[0x10];
    let media = s[0x15];
    let fat16_len = le16(s, 0x16);
    let fat_sectors = if fat16_len != 0 {
        u64::from(fat16_len)
    } else {
        u64::from(le32(s, 0x24))
    };
    let total = match le16(s, 0x13) {
        0 => u64::from(le32(s, 0x20)),
        n => u64::from(n),
    };
    let fs_type_tag = &s[0x36..0x39] == b"FAT" || &s[0x52..0x55] == b"FAT";
    let plausible = (fs_type_tag || (s[510] == 0x55 && s[511] == 0xaa))
        && &s[3..11] != b"NTFS    "
        && bps.is_power_of_two()
        && (512..=4096).contains(&bps)
        && spc.is_power_of_two()
        && reserved != 0
        && (1..=4).contains(&fats)
        && (media == 0xf0 || media >= 0xf8)
        && fat_sectors != 0
        && total != 0;
    if !plausible {
        return None;
    }
    let root_entries = u64::from(le16(s, 0x11));
    let bps = u64::from(bps);
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data =
        total.checked_sub(u64::from(reserved) + u64::from(fats) * fat_sectors + root_sectors)?;
    let clusters = data / u64::from(spc);
    let bits = match (fat16_len, clusters) {
        (0, _) => 32,
        (_, ..=4084) => 12,
        _ => 16,
    };
    Some(Fat {
        bytes_per_sector: bps,
        sectors_per_cluster: u64::from(spc),
        reserved: u64::from(reserved),
        fat_count: u64::from(fats),
        fat_sectors,
        root_entries,
        total_sectors: total,
        clusters,
        bits,
    })
}

/// vfat: a FAT boot sector; UUID from the volume serial, label from the root directory's
/// volume-label entry or else the boot sector (blkid's order).
fn vfat(view: &View) -> Result<Option<Content>, ProbeError> {
    let Some(s) = view.read(0, 512)? else {
        return Ok(None);
    };
    let Some(fat) = fat_geometry(&s) else {
        return Ok(None);
    };
    let ext = if fat.bits == 32 { 0x40 } else { 0x24 };
    let signature = s[ext + 2];
    let serial = (signature == 0x28 || signature == 0x29).then(|| le32(&s, ext + 3));
    let boot_label = (signature == 0x29).then(|| s[ext + 7..ext + 18].to_vec());
    const NO_NAME: &[u8] = b"NO NAME    ";
    let label = fat_root_label(view, &fat)?
        .filter(|l| l != NO_NAME)
        .or(boot_label.filter(|l| l != NO_NAME))
        .map(|l| {
            String::from_utf8_lossy(&l)
                .trim_end_matches(' ')
                .to_string()
        })
        .filter(|l| !l.is_empty());
    Ok(Some(Content {
        uuid: serial.map(|s| format!("{:04X}-{:04X}", s >> 16, s & 0xffff)),
        label,
        version: Some(format!("FAT{}", fat.bits)),
        ..Content::of(ContentKind::Vfat)
    }))
}

/// The 11-byte name of the root directory's volume-label entry.
fn fat_root_label(view: &View, fat: &Fat) -> Result<Option<Vec<u8>>, ProbeError> {
    let bps = fat.bytes_per_sector;
    let root_start = (fat.reserved + fat.fat_count * fat.fat_sectors) * bps;
    let ranges: Vec<(u64, u64)> = if fat.bits != 32 {
        vec![(root_start, (fat.root_entries * 32).min(FAT_ROOT_SCAN))]
    } else {
        let cluster_bytes = fat.sectors_per_cluster * bps;
        let mut ranges = Vec::new();
        let mut cluster = u64::from(le32(&view.read(0, 512)?.unwrap_or_default(), 0x2c));
        while (2..fat.clusters + 2).contains(&cluster)
            && ranges.len() < FAT_ROOT_CLUSTERS
            && (ranges.len() as u64 + 1) * cluster_bytes <= FAT_ROOT_SCAN
        {
            ranges.push((root_start + (cluster - 2) * cluster_bytes, cluster_bytes));
            let Some(entry) = view.read(fat.reserved * bps + cluster * 4, 4)? else {
                break;
            };
            cluster = u64::from(le32(&entry, 0) & 0x0fff_ffff);
        }
        ranges
    };
    for (offset, len) in ranges {
        let Some(dir) = view.read(offset, len as usize)? else {
            return Ok(None);
        };
        for e in dir.chunks_exact(32) {
            const LONG_NAME: u8 = 0x0f;
            const VOLUME_ID: u8 = 0x08;
            const DIRECTORY: u8 = 0x10;
            match e[0] {
                0 => return Ok(None),
                0xe5 => continue,
                _ => {}
            }
            let attr = e[11];
            if attr != LONG_NAME && attr & (VOLUME_ID | DIRECTORY) == VOLUME_ID {
                let mut name = e[..11].to_vec();
                if name[0] == 0x05 {
                    name[0] = 0xe5;
                }
                return Ok(Some(name));
            }
        }
    }
    Ok(None)
}

/// swap: "SWAPSPACE2" (v1) or "SWAP-SPACE" (v0) in the last 10 bytes of the first page; the v1
/// header at 1024 holds the UUID (0x40c) and label (0x41c).
fn swap(view: &View) -> Result<Option<Content>, ProbeError> {
    for page in [4096u64, 8192, 16384, 32768, 65536] {
        let Some(magic) = view.read(page - 10, 10)? else {
            return Ok(None);
        };
        if &magic == b"SWAP-SPACE" {
            return Ok(Some(Content {
                version: Some("0".into()),
                ..Content::of(ContentKind::Swap)
            }));
        }
        if &magic != b"SWAPSPACE2" {
            continue;
        }
        let Some(h) = view.read(1024, 64)? else {
            return Ok(None);
        };
        if le32(&h, 0) != 1 && be32(&h, 0) != 1 {
            return Ok(None);
        }
        return Ok(Some(Content {
            uuid: uuid(&h[0x0c..0x1c]),
            label: label(&h[0x1c..0x2c]),
            version: Some("1".into()),
            ..Content::of(ContentKind::Swap)
        }));
    }
    Ok(None)
}
