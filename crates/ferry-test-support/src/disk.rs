//! Disks built byte by byte, for hostile-input tests and the fuzz targets' seeds: an in-memory
//! [`MemDisk`], a protective MBR + GPT ([`build_gpt`], [`gpt_header`]), an MBR with an EBR
//! chain ([`build_mbr`]), an LVM2 PV with its metadata text ([`build_pv`], [`vg_text`]; lvm
//! itself needs device-mapper), and resealing the GPT and LVM checksums after a mutation
//! ([`seal_gpt`], [`reseal_gpt`], [`reseal_lvm`]) so that it reaches the checks behind them.
//! All sectors are 512 bytes unless a function takes a sector size. The resealing functions
//! take hostile bytes (the fuzz targets call them on every input): they check what they index.

use ferry_image::{DiskSource, ImageError, ImageFormat};

use crate::crc::{crc32, lvm_crc};

/// A disk held in memory.
pub struct MemDisk {
    pub data: Vec<u8>,
    pub sector_size: u32,
}

impl DiskSource for MemDisk {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn logical_sector_size(&self) -> u32 {
        self.sector_size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        let out = || ImageError::OutOfRange {
            path: "mem".into(),
            offset,
            len: buf.len(),
            size: self.size(),
        };
        let start = usize::try_from(offset).map_err(|_| out())?;
        let src = self
            .data
            .get(start..start.checked_add(buf.len()).ok_or_else(out)?)
            .ok_or_else(out)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::Raw
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Recompute the primary GPT header's CRCs (512-byte sectors) when its fields let us.
pub fn reseal_gpt(d: &mut [u8]) {
    let h = 512;
    if d.len() < 1024 || &d[h..h + 8] != b"EFI PART" {
        return;
    }
    let (lba, count, size) = (
        le64(d, h + 72),
        u64::from(le32(d, h + 80)),
        u64::from(le32(d, h + 84)),
    );
    let start = lba.saturating_mul(512);
    let len = count.saturating_mul(size);
    if len <= 1 << 20 && start.saturating_add(len) <= d.len() as u64 {
        let crc = crc32(&d[start as usize..(start + len) as usize]);
        d[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
    }
    let hsize = le32(d, h + 12) as usize;
    if (92..=512).contains(&hsize) {
        d[h + 16..h + 20].fill(0);
        let crc = crc32(&d[h..h + hsize]);
        d[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recompute the LVM label, metadata area header and metadata text checksums of a PV that
/// starts at byte `pv` (label in sector 1, one metadata area).
pub fn reseal_lvm(d: &mut [u8], pv: usize) {
    let l = pv + 512;
    if d.len() < l + 512 || &d[l..l + 8] != b"LABELONE" {
        return;
    }
    let mda = pv + 4096;
    if d.len() >= mda + 512 {
        let (off, size) = (le64(d, mda + 40) as usize, le64(d, mda + 48) as usize);
        if off < (1 << 20) && size < (1 << 20) && mda + off + size <= d.len() {
            let crc = lvm_crc(&d[mda + off..mda + off + size]);
            d[mda + 56..mda + 60].copy_from_slice(&crc.to_le_bytes());
        }
        let crc = lvm_crc(&d[mda + 4..mda + 512]);
        d[mda..mda + 4].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = lvm_crc(&d[l + 20..l + 512]);
    d[l + 16..l + 20].copy_from_slice(&crc.to_le_bytes());
}

/// Build an LVM2 PV of `size` bytes by hand, following the on-disk format: label in sector 1,
/// one metadata area at 4096 of `mda_size` bytes, data from 1 MiB, the metadata `text` (a NUL
/// is appended) at ring offset `text_offset` (wrapping at the area's end like LVM's ring).
pub fn build_pv(
    size: usize,
    pv_uuid: &str,
    mda_size: usize,
    text: &str,
    text_offset: usize,
) -> Vec<u8> {
    let mut d = vec![0u8; size];
    let l = 512;
    d[l..l + 8].copy_from_slice(b"LABELONE");
    d[l + 8..l + 16].copy_from_slice(&1u64.to_le_bytes());
    d[l + 20..l + 24].copy_from_slice(&32u32.to_le_bytes());
    d[l + 24..l + 32].copy_from_slice(b"LVM2 001");
    let h = l + 32;
    let raw: Vec<u8> = pv_uuid.bytes().filter(|&c| c != b'-').collect();
    d[h..h + 32].copy_from_slice(&raw);
    let mut put = |at: usize, v: u64| d[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put(h + 32, size as u64);
    put(h + 40, 1 << 20); // data area, size 0 = to the end
    put(h + 72, 4096); // metadata area
    put(h + 80, mda_size as u64);
    // extension version 2, no bootloader area
    d[h + 104..h + 108].copy_from_slice(&2u32.to_le_bytes());
    let m = 4096;
    d[m + 4..m + 20].copy_from_slice(b" LVM2 x[5A%r0N*>");
    d[m + 20..m + 24].copy_from_slice(&1u32.to_le_bytes());
    d[m + 24..m + 32].copy_from_slice(&4096u64.to_le_bytes());
    d[m + 32..m + 40].copy_from_slice(&(mda_size as u64).to_le_bytes());
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    d[m + 40..m + 48].copy_from_slice(&(text_offset as u64).to_le_bytes());
    d[m + 48..m + 56].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    d[m + 56..m + 60].copy_from_slice(&lvm_crc(&bytes).to_le_bytes());
    for (i, &b) in bytes.iter().enumerate() {
        let mut at = text_offset + i;
        if at >= mda_size {
            at = at - mda_size + 512;
        }
        d[m + at] = b;
    }
    let crc = lvm_crc(&d[m + 4..m + 512]);
    d[m..m + 4].copy_from_slice(&crc.to_le_bytes());
    let crc = lvm_crc(&d[l + 20..l + 512]);
    d[l + 16..l + 20].copy_from_slice(&crc.to_le_bytes());
    d
}

/// VG metadata text as LVM writes it, for a VG on one PV with extents of 1 MiB (2048 sectors).
pub fn vg_text(pv_uuid: &str, pe_count: u64) -> String {
    format!(
        r#"vgh {{
id = "hAnDmA-dePV-0000-1111-2222-3333-444444"
seqno = 7
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 2048
max_lv = 0
max_pv = 0
metadata_copies = 0

physical_volumes {{

pv0 {{
id = "{pv_uuid}"
device = "/dev/vdb"

status = ["ALLOCATABLE"]
flags = []
dev_size = {dev_size}
pe_start = 2048
pe_count = {pe_count}
}}
}}

logical_volumes {{

data {{
id = "LVdata-0000-1111-2222-3333-4444-555555"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1

segment1 {{
start_extent = 0
extent_count = 2

type = "striped"
stripe_count = 1

stripes = [
"pv0", 1
]
}}
}}
}}

}}
# Generated by hand

contents = "Text Format Volume Group"
version = 1

description = ""

creation_host = "test"
creation_time = 1700000000
"#,
        dev_size = (pe_count + 1) * 2048
    )
}

// ---- partition tables built by hand (512-byte sectors) ----

/// Write MBR-style entry `i` (0-3) of the sector at byte `at`.
pub fn mbr_entry(d: &mut [u8], at: usize, i: usize, status: u8, kind: u8, start: u32, count: u32) {
    let e = at + 446 + 16 * i;
    d[e] = status;
    d[e + 4] = kind;
    d[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
    d[e + 12..e + 16].copy_from_slice(&count.to_le_bytes());
    d[at + 510] = 0x55;
    d[at + 511] = 0xaa;
}

/// An EBR at `lba`: its data entry (type, start relative to the EBR, count) and its link
/// (start relative to the extended partition, count).
pub struct Ebr {
    pub lba: u64,
    pub data: Option<(u8, u32, u32)>,
    pub link: Option<(u32, u32)>,
}

/// A disk of `sectors` sectors with primaries (type, start, count) and an EBR chain.
pub fn build_mbr(sectors: u64, primaries: &[(u8, u32, u32)], ebrs: &[Ebr]) -> Vec<u8> {
    let mut d = vec![0u8; sectors as usize * 512];
    d[440..444].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    for (i, &(kind, start, count)) in primaries.iter().enumerate() {
        mbr_entry(&mut d, 0, i, 0, kind, start, count);
    }
    d[510] = 0x55;
    d[511] = 0xaa;
    for e in ebrs {
        let at = e.lba as usize * 512;
        d[at + 510] = 0x55;
        d[at + 511] = 0xaa;
        if let Some((kind, start, count)) = e.data {
            mbr_entry(&mut d, at, 0, 0, kind, start, count);
        }
        if let Some((start, count)) = e.link {
            mbr_entry(&mut d, at, 1, 0, 0x05, start, count);
        }
    }
    d
}

/// Recompute the entry array and header CRCs of the GPT header at `lba` (`ss`-byte sectors),
/// as far as its own fields allow.
pub fn seal_gpt(d: &mut [u8], ss: usize, lba: u64) {
    let h = lba as usize * ss;
    if d.len() < h + ss {
        return;
    }
    let (entries, count, size) = (
        le64(d, h + 72),
        u64::from(le32(d, h + 80)),
        u64::from(le32(d, h + 84)),
    );
    let start = entries.saturating_mul(ss as u64);
    let len = count.saturating_mul(size);
    if len <= 1 << 20 && start.saturating_add(len) <= d.len() as u64 {
        let crc = crc32(&d[start as usize..(start + len) as usize]);
        d[h + 88..h + 92].copy_from_slice(&crc.to_le_bytes());
    }
    let hsize = le32(d, h + 12) as usize;
    if (92..=ss).contains(&hsize) {
        d[h + 16..h + 20].fill(0);
        let crc = crc32(&d[h..h + hsize]);
        d[h + 16..h + 20].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Write a GPT header at `lba` (entries at `entries_lba`, 128 entries of 128 bytes), sealed.
pub fn gpt_header(d: &mut [u8], lba: u64, alternate: u64, entries_lba: u64, usable: (u64, u64)) {
    let h = lba as usize * 512;
    let s = &mut d[h..h + 512];
    s.fill(0);
    s[0..8].copy_from_slice(b"EFI PART");
    s[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    s[12..16].copy_from_slice(&92u32.to_le_bytes());
    s[24..32].copy_from_slice(&lba.to_le_bytes());
    s[32..40].copy_from_slice(&alternate.to_le_bytes());
    s[40..48].copy_from_slice(&usable.0.to_le_bytes());
    s[48..56].copy_from_slice(&usable.1.to_le_bytes());
    s[56..72].copy_from_slice(&[0x42; 16]);
    s[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    s[80..84].copy_from_slice(&128u32.to_le_bytes());
    s[84..88].copy_from_slice(&128u32.to_le_bytes());
    seal_gpt(d, 512, lba);
}

/// A disk of `sectors` 512-byte sectors with a protective MBR and a valid GPT (primary and
/// backup) holding partitions (slot, first LBA, last LBA).
pub fn build_gpt(sectors: u64, parts: &[(u32, u64, u64)]) -> Vec<u8> {
    let mut d = vec![0u8; sectors as usize * 512];
    let count = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    mbr_entry(&mut d, 0, 0, 0, 0xee, 1, count);
    let mut array = vec![0u8; 128 * 128];
    for &(slot, first, last) in parts {
        let e = &mut array[(slot as usize - 1) * 128..slot as usize * 128];
        e[0..16].copy_from_slice(&[0xaf; 16]);
        e[16..32].copy_from_slice(&[slot as u8; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        e[56..58].copy_from_slice(&u16::from(b'p').to_le_bytes());
    }
    let backup_entries = sectors - 33;
    d[1024..1024 + array.len()].copy_from_slice(&array);
    let b = backup_entries as usize * 512;
    d[b..b + array.len()].copy_from_slice(&array);
    let usable = (34, sectors - 34);
    gpt_header(&mut d, 1, sectors - 1, 2, usable);
    gpt_header(&mut d, sectors - 1, 1, backup_entries, usable);
    d
}
