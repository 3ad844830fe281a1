//! What a disk holds, before anything is written to it: the blank check behind every "refusing to
//! overwrite" (restore targets, the rescue agent's inventory, `auto`).
//!
//! A disk is **blank** only when every place looked at reads as zeros:
//! - its first and last MiB (partition tables, boot code, GPT backup header, md 0.90/1.0,
//!   ZFS labels L2/L3);
//! - a window of [`START_WINDOW`] at each usual partition start ([`PARTITION_STARTS`]): a
//!   partition's filesystem survives when only the table was wiped (`sgdisk --zap-all` clears
//!   the first and last 34 sectors and leaves the data at 1 MiB);
//! - [`SAMPLES`] windows of [`SAMPLE_LEN`] spread evenly over the whole disk.
//!
//! About 19 MiB are read whatever the disk's size. Where something is found, known signatures
//! name it (ext, XFS, btrfs, NTFS, FAT, LVM, swap, LUKS, md RAID, bcache, ISO 9660, GPT, MBR)
//! with its offset. An ISO 9660 filesystem makes the disk **protected**: it is the medium the
//! rescue image booted from (a CD, or the hybrid ISO written to a USB disk) or another
//! installation medium, and is never written whatever the flags. Ferry's own in-progress
//! marker (ferry_format::marker) is reported as such, so a job can resume onto its own
//! partial restore and nothing else.

use std::fmt;
use std::os::unix::fs::FileExt;

use ferry_format::marker::{RestoreMarker, MARKER_LEN};

/// Bytes read at each end.
pub const END_LEN: u64 = 1 << 20;
/// Usual partition starts past the first MiB's end, and 63 sectors (DOS-era tables; inside the
/// first MiB, where it is checked for signatures).
pub const PARTITION_STARTS: [u64; 8] = [
    63 * 512,
    1 << 20,
    2 << 20,
    4 << 20,
    8 << 20,
    16 << 20,
    32 << 20,
    64 << 20,
];
/// Bytes read at each partition start: up to the btrfs superblock's magic at 64 KiB + 64.
pub const START_WINDOW: u64 = 72 << 10;
/// Windows spread over the disk, and their size.
pub const SAMPLES: u64 = 256;
pub const SAMPLE_LEN: u64 = 64 << 10;

/// What the blank check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contents {
    Blank,
    /// Ferry's in-progress marker of a restore (which may have written more).
    Marker(RestoreMarker),
    /// Data; known signatures with their offsets, or only where the first non-zero byte is.
    Data(Vec<Found>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub offset: u64,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Gpt,
    Mbr,
    Ext,
    Xfs,
    Btrfs,
    Ntfs,
    Fat,
    Lvm,
    Swap,
    Luks,
    MdRaid,
    Bcache,
    /// With its volume id.
    Iso9660(String),
    /// Starts with the marker's magic but does not parse (why).
    DamagedMarker(String),
    NonZero,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Gpt => f.write_str("a GPT partition table"),
            Kind::Mbr => f.write_str("an MBR partition table or boot sector"),
            Kind::Ext => f.write_str("an ext2/3/4 filesystem"),
            Kind::Xfs => f.write_str("an XFS filesystem"),
            Kind::Btrfs => f.write_str("a btrfs filesystem"),
            Kind::Ntfs => f.write_str("an NTFS filesystem"),
            Kind::Fat => f.write_str("a FAT filesystem"),
            Kind::Lvm => f.write_str("an LVM physical volume"),
            Kind::Swap => f.write_str("a swap area"),
            Kind::Luks => f.write_str("a LUKS encrypted volume"),
            Kind::MdRaid => f.write_str("an md RAID member"),
            Kind::Bcache => f.write_str("a bcache device"),
            Kind::Iso9660(v) if v.is_empty() => f.write_str("an ISO 9660 filesystem"),
            Kind::Iso9660(v) => write!(f, "an ISO 9660 filesystem ({v})"),
            Kind::DamagedMarker(why) => write!(f, "a damaged Ferry in-progress marker ({why})"),
            Kind::NonZero => f.write_str("non-zero bytes"),
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.kind, offset_text(self.offset))
    }
}

fn offset_text(off: u64) -> String {
    if off >= 1 << 20 && off % (1 << 20) == 0 {
        format!("{} MiB", off >> 20)
    } else {
        off.to_string()
    }
}

impl Contents {
    /// `None` when blank; otherwise a phrase for "holds …" messages.
    pub fn describe(&self) -> Option<String> {
        match self {
            Contents::Blank => None,
            Contents::Marker(m) => Some(format!(
                "the partial restore of disk {} of snapshot {} by job {} (Ferry's in-progress marker)",
                m.disk, m.snapshot, m.job
            )),
            Contents::Data(found) => {
                let mut parts: Vec<String> = found.iter().take(4).map(Found::to_string).collect();
                if found.len() > 4 {
                    parts.push(format!("and {} more", found.len() - 4));
                }
                Some(parts.join(", "))
            }
        }
    }

    /// Why the disk must never be written, whatever a job or the flags say.
    pub fn protected(&self) -> Option<String> {
        let Contents::Data(found) = self else {
            return None;
        };
        found.iter().find_map(|f| match &f.kind {
            Kind::Iso9660(_) => Some(format!(
                "it holds {f}: the medium the rescue image booted from, or another installation medium (erase it with `wipefs -a` on another machine if it really is the target)"
            )),
            _ => None,
        })
    }
}

/// Examine a disk of `size` bytes. Only reads.
pub fn examine(f: &impl FileExt, size: u64) -> std::io::Result<Contents> {
    let head = read(f, 0, END_LEN.min(size))?;
    match RestoreMarker::decode(&head[..MARKER_LEN.min(head.len())]) {
        Ok(Some(m)) => return Ok(Contents::Marker(m)),
        Ok(None) => {}
        Err(why) => {
            return Ok(Contents::Data(vec![Found {
                offset: 0,
                kind: Kind::DamagedMarker(why),
            }]))
        }
    }
    let mut found = Vec::new();
    let mut first_nonzero: Option<u64> = None;
    let mut note = |off: u64, buf: &[u8], found: &mut Vec<Found>| {
        if let Some(i) = buf.iter().position(|&b| b != 0) {
            first_nonzero = Some(first_nonzero.map_or(off + i as u64, |o| o.min(off + i as u64)));
            signatures(off, buf, found);
        }
    };
    note(0, &head, &mut found);
    if head.len() >= 63 * 512 {
        signatures(63 * 512, &head[63 * 512..], &mut found);
    }
    let mut windows: Vec<(u64, u64)> = PARTITION_STARTS
        .iter()
        .filter(|&&b| b >= END_LEN)
        .map(|&b| (b, START_WINDOW))
        .collect();
    for k in 0..SAMPLES {
        let off = (size / SAMPLES * k) & !4095;
        windows.push((off, SAMPLE_LEN));
    }
    let tail = size.saturating_sub(END_LEN).max(head.len() as u64);
    windows.push((tail, size - tail));
    for (off, len) in windows {
        // Parts already read at the head are not read again.
        let off = off.max(head.len() as u64);
        let len = len.min(size.saturating_sub(off));
        if len == 0 {
            continue;
        }
        let buf = read(f, off, len)?;
        note(off, &buf, &mut found);
        if off + len == size {
            end_signatures(off, &buf, size, &mut found);
        }
    }
    found.sort_by_key(|f| f.offset);
    found.dedup();
    Ok(match (first_nonzero, found.is_empty()) {
        (None, _) => Contents::Blank,
        (Some(off), true) => Contents::Data(vec![Found {
            offset: off,
            kind: Kind::NonZero,
        }]),
        (Some(_), false) => Contents::Data(found),
    })
}

fn read(f: &impl FileExt, off: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

/// Signatures of whatever starts at `base` (`buf` holds the bytes from there).
fn signatures(base: u64, buf: &[u8], out: &mut Vec<Found>) {
    let at = |off: usize, magic: &[u8]| buf.get(off..off + magic.len()) == Some(magic);
    let mut push = |off: usize, kind: Kind| {
        out.push(Found {
            offset: base + off as u64,
            kind,
        })
    };
    if base == 0 {
        if at(512, b"EFI PART") || at(4096, b"EFI PART") {
            push(0, Kind::Gpt);
        } else if at(510, &[0x55, 0xaa]) && !at(3, b"NTFS    ") && !fat(buf) {
            push(0, Kind::Mbr);
        }
    }
    if at(1024 + 56, &[0x53, 0xef]) {
        push(0, Kind::Ext);
    }
    if at(0, b"XFSB") {
        push(0, Kind::Xfs);
    }
    if at(65536 + 64, b"_BHRfS_M") {
        push(0, Kind::Btrfs);
    }
    if at(3, b"NTFS    ") {
        push(0, Kind::Ntfs);
    }
    if fat(buf) {
        push(0, Kind::Fat);
    }
    if (0..4).any(|s| at(s * 512, b"LABELONE") && at(s * 512 + 24, b"LVM2 001")) {
        push(0, Kind::Lvm);
    }
    if at(4096 - 10, b"SWAPSPACE2") || at(4096 - 10, b"SWAP-SPACE") {
        push(0, Kind::Swap);
    }
    if at(0, b"LUKS\xba\xbe") || at(0, b"SKUL\xba\xbe") {
        push(0, Kind::Luks);
    }
    // md superblocks 1.1 (at 0) and 1.2 (at 4 KiB): magic a92b4efc, little-endian.
    if at(0, &[0xfc, 0x4e, 0x2b, 0xa9]) || at(4096, &[0xfc, 0x4e, 0x2b, 0xa9]) {
        push(0, Kind::MdRaid);
    }
    if at(
        4096 + 24,
        &[
            0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba,
            0x6d, 0x81,
        ],
    ) {
        push(0, Kind::Bcache);
    }
    if at(32769, b"CD001") {
        let vol = buf
            .get(32808..32840)
            .map(|v| {
                String::from_utf8_lossy(v)
                    .trim_matches(|c: char| c == ' ' || c == '\0')
                    .to_string()
            })
            .unwrap_or_default();
        push(0, Kind::Iso9660(vol));
    }
}

fn fat(buf: &[u8]) -> bool {
    let at = |off: usize, magic: &[u8]| buf.get(off..off + magic.len()) == Some(magic);
    at(510, &[0x55, 0xaa]) && (at(54, b"FAT1") || at(82, b"FAT32"))
}

/// Signatures kept at a disk's end: the GPT backup header, md 0.90 and 1.0 superblocks.
fn end_signatures(off: u64, buf: &[u8], size: u64, out: &mut Vec<Found>) {
    let at = |abs: u64, magic: &[u8]| {
        abs.checked_sub(off)
            .and_then(|i| buf.get(i as usize..i as usize + magic.len()))
            == Some(magic)
    };
    for lba in [512u64, 4096] {
        if size >= lba && at(size - lba, b"EFI PART") {
            out.push(Found {
                offset: size - lba,
                kind: Kind::Gpt,
            });
        }
    }
    let md090 = (size & !65535).saturating_sub(65536);
    let md10 = (size.saturating_sub(8192)) & !4095;
    for o in [md090, md10] {
        if at(o, &[0xfc, 0x4e, 0x2b, 0xa9]) {
            out.push(Found {
                offset: o,
                kind: Kind::MdRaid,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn disk(size: u64, writes: &[(u64, &[u8])]) -> (tempfile::NamedTempFile, u64) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        for (off, b) in writes {
            f.as_file().write_all_at(b, *off).unwrap();
        }
        (f, size)
    }

    fn check(size: u64, writes: &[(u64, &[u8])]) -> Contents {
        let (f, size) = disk(size, writes);
        examine(f.as_file(), size).unwrap()
    }

    #[test]
    fn a_zeroed_disk_is_blank_at_any_size() {
        for size in [4096, 1 << 20, 3 * MIB + 512, 1 << 30] {
            assert_eq!(check(size, &[]), Contents::Blank, "{size}");
        }
    }

    #[test]
    fn a_filesystem_left_behind_a_wiped_table_is_found() {
        // The table (first and last MiB) is gone, the ext4 partition at 1 MiB is not.
        let c = check(1 << 30, &[(MIB + 1024 + 56, &[0x53, 0xef])]);
        assert_eq!(
            c.describe().unwrap(),
            "an ext2/3/4 filesystem at offset 1 MiB"
        );
        let c = check(1 << 30, &[(2 * MIB, b"XFSB")]);
        assert_eq!(c.describe().unwrap(), "an XFS filesystem at offset 2 MiB");
        let c = check(1 << 30, &[(MIB + 65536 + 64, b"_BHRfS_M")]);
        assert!(c.describe().unwrap().contains("btrfs"), "{c:?}");
    }

    #[test]
    fn data_far_from_both_ends_is_found_by_the_samples() {
        let size = 8u64 << 30;
        let off = size / SAMPLES * 100 + 12345;
        let c = check(size, &[(off & !4095, b"x")]);
        assert!(
            matches!(&c, Contents::Data(f) if f[0].kind == Kind::NonZero),
            "{c:?}"
        );
        assert!(c
            .describe()
            .unwrap()
            .starts_with("non-zero bytes at offset"));
    }

    #[test]
    fn signatures_are_named() {
        let mut mbr = vec![0u8; 512];
        mbr[510..].copy_from_slice(&[0x55, 0xaa]);
        let mut lvm = vec![0u8; 32];
        lvm[..8].copy_from_slice(b"LABELONE");
        lvm[24..32].copy_from_slice(b"LVM2 001");
        // (bytes written at offsets, what the refusal names)
        type Case<'a> = (Vec<(u64, &'a [u8])>, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![(512, b"EFI PART")],
                "a GPT partition table at offset 0",
            ),
            (vec![(0, &mbr)], "an MBR partition table"),
            (vec![(512, &lvm)], "an LVM physical volume at offset 0"),
            (vec![(4086, b"SWAPSPACE2")], "a swap area"),
            (vec![(0, b"LUKS\xba\xbe")], "a LUKS encrypted volume"),
            (
                vec![(MIB + 4096, &[0xfc, 0x4e, 0x2b, 0xa9])],
                "an md RAID member at offset 1 MiB",
            ),
            (
                vec![((1 << 30) - 512, b"EFI PART")],
                "a GPT partition table at offset 1073741312",
            ),
        ];
        for (writes, want) in cases {
            let c = check(1 << 30, &writes);
            let d = c.describe().unwrap();
            assert!(d.contains(want), "{d} should contain {want}");
            assert!(c.protected().is_none());
        }
    }

    #[test]
    fn an_iso_is_protected() {
        let mut pvd = vec![0u8; 80];
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..52].copy_from_slice(b"FERRY_RESCUE");
        let c = check(64 * MIB, &[(32768, &pvd)]);
        let p = c.protected().unwrap();
        assert!(p.contains("ISO 9660 filesystem (FERRY_RESCUE)"), "{p}");
    }

    #[test]
    fn the_marker_is_recognised_and_a_damaged_one_is_data() {
        let m = RestoreMarker::new("job-00112233", "web01-x", "sda", &"0f".repeat(32));
        let c = check(64 * MIB, &[(0, &m.encode()), (10 * MIB, b"partial")]);
        assert_eq!(c, Contents::Marker(m.clone()));
        assert!(c.describe().unwrap().contains("job job-00112233"));
        let mut bad = m.encode();
        bad[40] = b'!';
        let c = check(64 * MIB, &[(0, &bad)]);
        assert!(
            c.describe()
                .unwrap()
                .contains("damaged Ferry in-progress marker"),
            "{c:?}"
        );
    }
}
