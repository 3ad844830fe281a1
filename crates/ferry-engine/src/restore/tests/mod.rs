//! Tests of the restore: the pure planner over hand-made inputs (`plan`), and `execute` against
//! the in-memory appliance on temporary files (`execute`).

mod delta;
mod execute;
mod plan;

use std::path::{Path, PathBuf};

use ferry_format::layout::{
    BootArea, Content, ContentKind, DiskLayout, Gpt, GptHeaderLocation, GptPartition, Guid,
    MbrEntry, PartitionTable, ProtectiveMbr, ProtectiveMbrKind,
};
use ferry_format::manifest::{ChunkCounts, DiskManifest, MANIFEST_VERSION};
use ferry_format::{ChunkId, DiskIndex, Manifest};

use super::{RestoreOptions, DEFAULT_PARALLEL};
use crate::target::{TargetCheck, TargetKind};

pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;
pub(super) const CHUNK: u32 = 4 << 20;

/// A GPT disk of `size` bytes (512-byte sectors) with (slot, first, last, content) partitions.
pub(super) fn gpt(size: u64, parts: &[(u32, u64, u64, ContentKind)]) -> DiskLayout {
    let sectors = size / 512;
    DiskLayout {
        logical_sector_size: 512,
        size,
        table: PartitionTable::Gpt(Gpt {
            disk_guid: Guid([9; 16]),
            revision: 0x0001_0000,
            header_size: 92,
            first_usable_lba: 34,
            last_usable_lba: sectors - 34,
            number_of_partition_entries: 128,
            size_of_partition_entry: 128,
            primary: Some(GptHeaderLocation {
                header_lba: 1,
                alternate_lba: sectors - 1,
                partition_entry_lba: 2,
            }),
            backup: None,
            mbr: ProtectiveMbr {
                kind: ProtectiveMbrKind::Protective,
                disk_signature: 0,
                entries: vec![MbrEntry {
                    slot: 1,
                    bootable: false,
                    type_byte: 0xee,
                    start_lba: 1,
                    sector_count: (sectors - 1).min(u32::MAX.into()),
                }],
            },
            partitions: parts
                .iter()
                .map(|&(slot, first_lba, last_lba, kind)| GptPartition {
                    slot,
                    type_guid: Guid([1; 16]),
                    unique_guid: Guid([slot as u8 + 10; 16]),
                    first_lba,
                    last_lba,
                    attributes: 0,
                    name: format!("p{slot}"),
                    content: Content::of(kind),
                })
                .collect(),
        }),
        boot: BootArea {
            mbr_boot_code: false,
            gap: None,
        },
        content: None,
    }
}

/// A 20 GiB GPT disk: ESP, then root (ext4) ending 1 GiB before the end.
pub(super) fn sda_layout() -> DiskLayout {
    gpt(
        20 * GIB,
        &[
            (1, 2048, 1050623, ContentKind::Vfat),
            (2, 1050624, 19 * GIB / 512 - 1, ContentKind::Ext4),
        ],
    )
}

/// A manifest entry and an all-zero index for a disk the planner only reasons about.
pub(super) fn disk(name: &str, size: u64, layout: Option<DiskLayout>) -> (DiskManifest, DiskIndex) {
    let index = DiskIndex::new_zero(size, CHUNK).expect("index");
    let m = DiskManifest {
        name: name.into(),
        size,
        logical_sector_size: 512,
        source: format!("/dev/{name}"),
        source_format: "block-device".into(),
        index_digest: index.digest(),
        chunks: ChunkCounts {
            data: 0,
            zero: index.entries.len() as u64,
            unused: 0,
        },
        layout,
    };
    (m, index)
}

pub(super) fn manifest(disks: Vec<DiskManifest>) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        snapshot: "m-20260101-000000".into(),
        machine: "m".into(),
        created: "2026-01-01T00:00:00Z".into(),
        chunk_size: CHUNK,
        disks,
        os: None,
        agent: "test".into(),
        consistency: Default::default(),
        network: None,
    }
}

/// A blank target as `target::check` reports it.
pub(super) fn target(path: &str, size: u64, kind: TargetKind, sector: u32) -> TargetCheck {
    TargetCheck {
        path: path.into(),
        exists: true,
        kind,
        size,
        logical_sector_size: sector,
        physical_sector_size: sector,
        holds: None,
        resumes: false,
        marker: None,
    }
}

pub(super) fn device(path: &str, size: u64) -> TargetCheck {
    target(path, size, TargetKind::BlockDevice, 512)
}

pub(super) fn options(targets: &[(&str, &Path)]) -> RestoreOptions {
    RestoreOptions {
        snapshot: "m-20260101-000000".into(),
        targets: targets
            .iter()
            .map(|(d, p)| (d.to_string(), PathBuf::from(p)))
            .collect(),
        overwrite: false,
        dry_run: false,
        parallel: DEFAULT_PARALLEL,
        quiet: true,
        grow: false,
        grow_lv: None,
        job: None,
    }
}

/// Pseudo-random bytes (xorshift), different for each seed.
pub(super) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub(super) fn id(bytes: &[u8]) -> ChunkId {
    ChunkId::of(bytes)
}
