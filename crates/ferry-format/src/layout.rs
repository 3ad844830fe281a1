//! A disk's layout as captured at backup time: partition table, filesystems, LVM.
//!
//! The backup-agent fills a [`DiskLayout`] per disk (ferry-probe reads it off the disk); restore's
//! planner and the boot fix-up read it from the manifest. It holds what an exact restore and the
//! fix-up need — ids, slot numbers, offsets, the LVM metadata text — never file data.
//!
//! Conventions (part of the format):
//! - LBAs count logical sectors of [`DiskLayout::logical_sector_size`] bytes; byte offsets and
//!   sizes are bytes. LVM's own sector counts (`extent_size`, `dev_size`, `pe_start`) are in
//!   512-byte units as LVM writes them, whatever the disk's sector size.
//! - GPT GUIDs are [`Guid`]s: stored as their 16 on-disk bytes, written as lowercase text in
//!   the mixed-endian order `sgdisk -i` and blkid print.
//! - Filesystem UUIDs are text exactly as `blkid` prints them (ext/xfs/btrfs/swap
//!   `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, vfat `ABCD-1234`, ntfs 16 uppercase hex digits),
//!   because that is what fstab and boot loaders refer to.
//! - LVM UUIDs are [`LvmUuid`]s: 32 characters written 6-4-4-4-4-4-6 with dashes, as `pvs`/`lvs`
//!   print them.
//!
//! docs/layout.md says where on the disk each field comes from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One disk's layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskLayout {
    /// Bytes per logical sector (the unit of every LBA in this value).
    pub logical_sector_size: u32,
    /// Disk size in bytes.
    pub size: u64,
    pub table: PartitionTable,
    pub boot: BootArea,
    /// What the whole disk holds when it has no partition table (a filesystem or an LVM PV
    /// written straight onto the disk). `None` when a partition table was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

/// The disk's partition table. GPT wins when a valid GPT is present (its MBR is then recorded
/// as [`ProtectiveMbr`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionTable {
    /// No partition table: see [`DiskLayout::content`].
    None,
    Gpt(Gpt),
    Mbr(Mbr),
}

/// Boot-related bytes outside any partition. Only facts, never the bytes (those are in the
/// chunks like everything else).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootArea {
    /// Bytes 0..440 of LBA 0 (MBR boot code) are not all zero.
    pub mbr_boot_code: bool,
    /// The sectors between the partition table's own structures and the first partition
    /// (the "MBR gap" where GRUB puts its core image on BIOS/MBR disks). `None` when the disk
    /// has no partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
}

/// A gap before the first partition and whether anything is written in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gap {
    /// First sector of the gap (1 on MBR, the sector after the primary GPT entry array on GPT).
    pub start_lba: u64,
    /// First sector after the gap (the first partition's start).
    pub end_lba: u64,
    /// The first and last sectors in `start_lba..scanned_end_lba` that are not all zero;
    /// `None` when all of them are zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<LbaRange>,
    /// The scan stops here: `end_lba` unless the gap is larger than the probe reads (32 MiB).
    pub scanned_end_lba: u64,
}

/// An inclusive range of sectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbaRange {
    pub first: u64,
    pub last: u64,
}

/// A GUID partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpt {
    pub disk_guid: Guid,
    /// Header revision (0x00010000 for GPT 1.0).
    pub revision: u32,
    /// Header size in bytes (92).
    pub header_size: u32,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// Number of entries in the entry array (128 as most tools write it), used or not.
    pub number_of_partition_entries: u32,
    /// Bytes per entry (128).
    pub size_of_partition_entry: u32,
    /// The primary header at LBA 1, when it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<GptHeaderLocation>,
    /// The backup header, when one is valid and agrees with the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<GptHeaderLocation>,
    /// What LBA 0 holds.
    pub mbr: ProtectiveMbr,
    /// Used entries (non-zero type GUID) in slot order.
    pub partitions: Vec<GptPartition>,
}

/// Where one GPT header and its entry array are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptHeaderLocation {
    /// The header's own LBA (MyLBA).
    pub header_lba: u64,
    /// The other header's LBA as this header records it (AlternateLBA).
    pub alternate_lba: u64,
    /// First LBA of this header's partition entry array.
    pub partition_entry_lba: u64,
}

/// One used GPT entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptPartition {
    /// 1-based index in the entry array (gaps kept: slots 1, 2, 4 stay 1, 2, 4).
    pub slot: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Last sector, inclusive.
    pub last_lba: u64,
    /// The 64 attribute bits (bit 0 required, bit 2 legacy BIOS bootable, 48..63 type-specific).
    pub attributes: u64,
    /// The UTF-16LE name up to its first NUL (invalid UTF-16 replaced by U+FFFD).
    pub name: String,
    pub content: Content,
}

/// Sector 0 of a GPT disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectiveMbr {
    pub kind: ProtectiveMbrKind,
    /// Bytes 440..444 (0 when missing).
    pub disk_signature: u32,
    /// The non-empty entries, 0xEE ones included.
    pub entries: Vec<MbrEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectiveMbrKind {
    /// Only 0xEE entries.
    Protective,
    /// A 0xEE entry and other entries (a hybrid MBR).
    Hybrid,
    /// No 0x55AA signature or no 0xEE entry.
    Missing,
}

/// A raw entry of an MBR partition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbrEntry {
    /// 1-4.
    pub slot: u32,
    /// Status byte 0x80.
    pub bootable: bool,
    pub type_byte: u8,
    pub start_lba: u64,
    pub sector_count: u64,
}

/// An MBR (DOS) partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mbr {
    /// Bytes 440..444, little-endian (sfdisk's "label-id").
    pub disk_signature: u32,
    /// Primary entries (slots 1-4, gaps kept), then logical partitions (slots 5, 6, ... in EBR
    /// chain order).
    pub partitions: Vec<MbrPartition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbrPartition {
    /// 1-4 for primary and extended entries, 5 and up for logical partitions.
    pub slot: u32,
    pub kind: MbrPartitionKind,
    /// Status byte 0x80.
    pub bootable: bool,
    pub type_byte: u8,
    /// Absolute first sector (logical partitions: the EBR's LBA plus the entry's relative start).
    pub start_lba: u64,
    pub sector_count: u64,
    /// The EBR that describes this logical partition (absolute LBA); `None` for primary and
    /// extended entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ebr_lba: Option<u64>,
    /// `None` for the extended partition (its contents are the logical partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MbrPartitionKind {
    Primary,
    Extended,
    Logical,
}

/// What a disk, partition or LV holds, as found from its superblock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(rename = "type")]
    pub kind: ContentKind,
    /// As blkid prints it (see the module documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// blkid's VERSION where it matters: "FAT12"/"FAT16"/"FAT32" for vfat, "1" for swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Filesystem block size in bytes (ext2/3/4, xfs, btrfs sector size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// Filesystem size in blocks of `block_size` (ext2/3/4, xfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_count: Option<u64>,
    /// The PV's label and its volume group, for `LVM2_member`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lvm: Option<LvmPv>,
}

impl Content {
    /// Content nothing was recognised in.
    pub fn unknown() -> Content {
        Content::of(ContentKind::Unknown)
    }

    /// A content of `kind` with no other facts.
    pub fn of(kind: ContentKind) -> Content {
        Content {
            kind,
            uuid: None,
            label: None,
            version: None,
            block_size: None,
            block_count: None,
            lvm: None,
        }
    }
}

/// Content types, named as blkid's TYPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContentKind {
    #[serde(rename = "ext2")]
    Ext2,
    #[serde(rename = "ext3")]
    Ext3,
    #[serde(rename = "ext4")]
    Ext4,
    #[serde(rename = "xfs")]
    Xfs,
    #[serde(rename = "vfat")]
    Vfat,
    #[serde(rename = "ntfs")]
    Ntfs,
    #[serde(rename = "swap")]
    Swap,
    #[serde(rename = "btrfs")]
    Btrfs,
    #[serde(rename = "LVM2_member")]
    Lvm2Member,
    #[serde(rename = "unknown")]
    Unknown,
}

impl ContentKind {
    /// blkid's TYPE name.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentKind::Ext2 => "ext2",
            ContentKind::Ext3 => "ext3",
            ContentKind::Ext4 => "ext4",
            ContentKind::Xfs => "xfs",
            ContentKind::Vfat => "vfat",
            ContentKind::Ntfs => "ntfs",
            ContentKind::Swap => "swap",
            ContentKind::Btrfs => "btrfs",
            ContentKind::Lvm2Member => "LVM2_member",
            ContentKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ContentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An LVM2 physical volume: its label and the volume group metadata it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LvmPv {
    pub pv_uuid: LvmUuid,
    /// 512-byte sector (0-3) of the "LABELONE" label.
    pub label_sector: u64,
    /// Device size in bytes as the PV header records it.
    pub device_size: u64,
    /// The data area (offset = pe_start in bytes; size 0 means "to the end of the device").
    pub data_area: Area,
    /// Metadata areas (byte offsets from the PV start), usually one at 4096.
    pub metadata_areas: Vec<Area>,
    /// The bootloader area of PV header extension version 2, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader_area: Option<Area>,
    /// The current committed VG metadata; `None` for an orphan PV or one without metadata areas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vg: Option<VgMetadata>,
}

/// A byte range inside a PV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

/// The VG metadata text as LVM wrote it and what was read out of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VgMetadata {
    /// Offset (bytes from the PV start) of the metadata area it was read from.
    pub mda_offset: u64,
    /// The text, without its trailing NUL (vgcfgrestore accepts it as a backup file).
    pub text: String,
    pub summary: VolumeGroup,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeGroup {
    pub name: String,
    pub uuid: LvmUuid,
    pub seqno: u64,
    /// Extent size in 512-byte sectors.
    pub extent_size: u64,
    pub physical_volumes: Vec<PhysicalVolume>,
    pub logical_volumes: Vec<LogicalVolume>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhysicalVolume {
    /// The key in the metadata ("pv0"); segments refer to PVs by it.
    pub name: String,
    pub uuid: LvmUuid,
    /// The device path LVM last saw (a hint only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_hint: Option<String>,
    /// In 512-byte sectors.
    pub dev_size: u64,
    /// First extent's offset in 512-byte sectors.
    pub pe_start: u64,
    pub pe_count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalVolume {
    pub name: String,
    pub uuid: LvmUuid,
    /// LVM's status flags ("READ", "WRITE", "VISIBLE", ...).
    pub status: Vec<String>,
    /// In `start_extent` order.
    pub segments: Vec<LvSegment>,
    /// What the LV holds, probed through its segments when they are all linear on this PV;
    /// `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LvSegment {
    /// First logical extent of the LV this segment covers.
    pub start_extent: u64,
    pub extent_count: u64,
    /// LVM's segment type: "striped" (linear when it has one stripe), "thin-pool", "raid1", ...
    pub segment_type: String,
    /// Stripe size in 512-byte sectors, for striped segments with more than one stripe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_size: Option<u64>,
    /// For "striped" segments: where each stripe lives. Empty for other types.
    pub stripes: Vec<Stripe>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stripe {
    /// A [`PhysicalVolume::name`].
    pub pv: String,
    pub pv_start_extent: u64,
}

/// A GPT GUID, held as its 16 on-disk bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The bytes as they are stored in a GPT header or entry.
    pub fn to_disk_bytes(self) -> [u8; 16] {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    /// Mixed-endian: the first three groups are little-endian on disk.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

impl std::str::FromStr for Guid {
    type Err = LayoutTextError;

    fn from_str(s: &str) -> Result<Guid, LayoutTextError> {
        let err = || LayoutTextError::Guid(s.to_string());
        let t = s.as_bytes();
        if t.len() != 36 || [8, 13, 18, 23].iter().any(|&i| t[i] != b'-') {
            return Err(err());
        }
        let hex: Vec<u8> = t.iter().copied().filter(|&c| c != b'-').collect();
        if hex.len() != 32 {
            return Err(err());
        }
        let mut text = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or_else(err)?;
            let lo = hex_digit(pair[1]).ok_or_else(err)?;
            text[i] = hi << 4 | lo;
        }
        // Text order to on-disk order: reverse the first three groups.
        let mut b = text;
        b[..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Ok(Guid(b))
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl TryFrom<String> for Guid {
    type Error = LayoutTextError;
    fn try_from(s: String) -> Result<Guid, LayoutTextError> {
        s.parse()
    }
}

impl From<Guid> for String {
    fn from(g: Guid) -> String {
        g.to_string()
    }
}

/// An LVM UUID: 32 characters from `[0-9A-Za-z!#]`, written 6-4-4-4-4-4-6 with dashes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LvmUuid([u8; 32]);

impl LvmUuid {
    /// From the 32 characters LVM stores in a PV header (no dashes).
    pub fn from_raw(raw: &[u8]) -> Option<LvmUuid> {
        let raw: [u8; 32] = raw.try_into().ok()?;
        raw.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'!' || c == b'#')
            .then_some(LvmUuid(raw))
    }

    /// The 32 characters without dashes, as stored in a PV header.
    pub fn as_raw(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for LvmUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut at = 0;
        for (i, len) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            // The bytes are ASCII (checked at construction).
            f.write_str(std::str::from_utf8(&self.0[at..at + len]).map_err(|_| fmt::Error)?)?;
            at += len;
        }
        Ok(())
    }
}

impl fmt::Debug for LvmUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LvmUuid({self})")
    }
}

impl std::str::FromStr for LvmUuid {
    type Err = LayoutTextError;

    /// Accepts the dashed form LVM writes in metadata and prints (dashes anywhere are ignored,
    /// as LVM does).
    fn from_str(s: &str) -> Result<LvmUuid, LayoutTextError> {
        let raw: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
        LvmUuid::from_raw(&raw).ok_or_else(|| LayoutTextError::LvmUuid(s.to_string()))
    }
}

impl TryFrom<String> for LvmUuid {
    type Error = LayoutTextError;
    fn try_from(s: String) -> Result<LvmUuid, LayoutTextError> {
        s.parse()
    }
}

impl From<LvmUuid> for String {
    fn from(u: LvmUuid) -> String {
        u.to_string()
    }
}

/// An id in a layout that is not well-formed text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutTextError {
    #[error("{0:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
    Guid(String),
    #[error("{0:?} is not an LVM UUID (32 characters from 0-9, A-Z, a-z, '!', '#')")]
    LvmUuid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_is_mixed_endian() {
        // The ESP type GUID as stored on disk.
        let disk = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        let g = Guid(disk);
        assert_eq!(g.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
                .parse::<Guid>()
                .unwrap(),
            g
        );
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            "\"c12a7328-f81f-11d2-ba4b-00a0c93ec93b\""
        );
        for bad in [
            "",
            "c12a7328f81f11d2ba4b00a0c93ec93b",
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93g",
            "c12a7328-f81f-11d2-ba4b0-0a0c93ec93b",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lvm_uuid_is_dashed_6_4_4_4_4_4_6() {
        let u = LvmUuid::from_raw(b"tV4eqMzhOhuOak0CJxvAT3FcRy9edepm").unwrap();
        assert_eq!(u.to_string(), "tV4eqM-zhOh-uOak-0CJx-vAT3-FcRy-9edepm");
        assert_eq!(
            "tV4eqM-zhOh-uOak-0CJx-vAT3-FcRy-9edepm"
                .parse::<LvmUuid>()
                .unwrap(),
            u
        );
        assert!(LvmUuid::from_raw(b"tV4eqMzhOhuOak0CJxvAT3FcRy9edep").is_none());
        assert!(LvmUuid::from_raw(b"tV4eqMzhOhuOak0CJxvAT3FcRy9ede\0m").is_none());
        assert!(serde_json::from_str::<LvmUuid>("\"x\"").is_err());
    }

    #[test]
    fn layout_round_trips_and_rejects_unknown_fields() {
        let layout = DiskLayout {
            logical_sector_size: 512,
            size: 1 << 30,
            table: PartitionTable::Mbr(Mbr {
                disk_signature: 0x1234_5678,
                partitions: vec![MbrPartition {
                    slot: 5,
                    kind: MbrPartitionKind::Logical,
                    bootable: false,
                    type_byte: 0x83,
                    start_lba: 4096,
                    sector_count: 2048,
                    ebr_lba: Some(2048),
                    content: Some(Content {
                        uuid: Some("ABCD-1234".into()),
                        ..Content::of(ContentKind::Vfat)
                    }),
                }],
            }),
            boot: BootArea {
                mbr_boot_code: true,
                gap: None,
            },
            content: None,
        };
        let text = serde_json::to_string(&layout).unwrap();
        assert_eq!(serde_json::from_str::<DiskLayout>(&text).unwrap(), layout);
        let extra = text.replacen(
            "\"kind\":\"logical\"",
            "\"kind\":\"logical\",\"colour\":1",
            1,
        );
        assert!(serde_json::from_str::<DiskLayout>(&extra).is_err());
        let none = serde_json::to_string(&PartitionTable::None).unwrap();
        assert_eq!(none, "\"none\"");
    }
}
