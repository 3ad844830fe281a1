//! Arbitrary layouts (a manifest is data from elsewhere): the planner never panics, and what it
//! does plan stays inside the target and never overlaps.

use ferry_format::layout::{
    Area, BootArea, Content, ContentKind, DiskLayout, Gpt, GptHeaderLocation, GptPartition, Guid,
    LogicalVolume, LvSegment, LvmPv, LvmUuid, Mbr, MbrEntry, MbrPartition, MbrPartitionKind,
    PartitionTable, PhysicalVolume, ProtectiveMbr, ProtectiveMbrKind, Stripe, VgMetadata,
    VolumeGroup,
};
use ferry_layout::{plan, GrowLv, Mapping, Policy, SourceDisk, TargetDisk};
use proptest::prelude::*;

/// A number near the interesting range (`scale`) most of the time, anything sometimes.
fn num(scale: u64) -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..scale.max(1), 1 => Just(0u64), 1 => any::<u64>(), 1 => (u64::MAX - 16)..=u64::MAX]
}

fn kind() -> impl Strategy<Value = ContentKind> {
    prop_oneof![
        Just(ContentKind::Ext4),
        Just(ContentKind::Xfs),
        Just(ContentKind::Swap),
        Just(ContentKind::Lvm2Member),
        Just(ContentKind::Unknown)
    ]
}

const PV_UUID: &str = "JKVOSE-1GL5-Qdqw-rveQ-Wj3w-s7gQ-jG8adg";

/// An LVM PV whose numbers are random and whose text is a real one, possibly cut short.
fn pv(sectors: u64) -> BoxedStrategy<LvmPv> {
    (num(sectors * 512), num(1 << 21), num(1 << 21), num(sectors), 0u64..4, prop::collection::vec((num(64), num(64), num(64), 0usize..3), 0..4), 0usize..2000, 1usize..3)
        .prop_map(move |(dev, data, mda_size, pe_count, label_sector, segs, cut, pvs)| {
            let uuid: LvmUuid = PV_UUID.parse().unwrap();
            let extent_size = 2048;
            let segments: Vec<LvSegment> = segs
                .iter()
                .map(|&(start, count, pv_start, stripes)| LvSegment {
                    start_extent: start,
                    extent_count: count,
                    segment_type: if stripes == 0 { "thin".into() } else { "striped".into() },
                    stripe_size: None,
                    stripes: (0..stripes).map(|_| Stripe { pv: "pv0".into(), pv_start_extent: pv_start }).collect(),
                })
                .collect();
            let text = format!(
                "vg0 {{\nid = \"{PV_UUID}\"\nseqno = 1\nextent_size = {extent_size}\nphysical_volumes {{\npv0 {{\nid = \"{PV_UUID}\"\ndev_size = {dev}\npe_start = 2048\npe_count = {pe_count}\n}}\n}}\nlogical_volumes {{\nroot {{\nid = \"{PV_UUID}\"\nstatus = [\"VISIBLE\"]\nsegment_count = 1\nsegment1 {{\nstart_extent = 0\nextent_count = 1\ntype = \"striped\"\nstripes = [\"pv0\", 0]\n}}\n}}\n}}\n}}\n"
            );
            let text: String = text.chars().take(cut.max(10)).collect();
            LvmPv {
                pv_uuid: uuid,
                label_sector,
                device_size: dev,
                data_area: Area { offset: data, size: 0 },
                metadata_areas: vec![Area { offset: 4096, size: mda_size }],
                bootloader_area: None,
                vg: Some(VgMetadata {
                    mda_offset: 4096,
                    text,
                    summary: VolumeGroup {
                        name: "vg0".into(),
                        uuid,
                        seqno: 1,
                        extent_size,
                        physical_volumes: (0..pvs)
                            .map(|i| PhysicalVolume {
                                name: format!("pv{i}"),
                                uuid,
                                device_hint: None,
                                dev_size: dev / 512,
                                pe_start: data / 512,
                                pe_count,
                            })
                            .collect(),
                        logical_volumes: vec![LogicalVolume {
                            name: "root".into(),
                            uuid,
                            status: vec!["VISIBLE".into()],
                            segments,
                            content: Some(Content::of(ContentKind::Ext4)),
                        }],
                    },
                }),
            }
        })
    .boxed()
}

fn content(sectors: u64) -> BoxedStrategy<Content> {
    (kind(), pv(sectors))
        .prop_map(|(kind, pv)| Content {
            lvm: (kind == ContentKind::Lvm2Member).then_some(pv),
            ..Content::of(kind)
        })
        .boxed()
}

fn gpt(sectors: u64) -> BoxedStrategy<PartitionTable> {
    let part = (
        num(140),
        num(sectors * 2),
        num(sectors * 2),
        any::<u64>(),
        "[a-z\u{e9}]{0,40}",
        content(sectors),
    );
    (
        (
            num(100),
            num(sectors * 2),
            prop_oneof![
                Just(128u32),
                Just(0),
                Just(8),
                Just(136),
                Just(4096),
                Just(8192)
            ],
            num(300),
        ),
        (
            prop_oneof![Just(92u32), Just(0), Just(512), Just(4097)],
            prop::option::of((num(sectors), num(100))),
            any::<bool>(),
        ),
        prop::collection::vec(part, 0..6),
    )
        .prop_map(
            |((first, last, entry_size, count), (header_size, primary, hybrid), parts)| {
                PartitionTable::Gpt(Gpt {
                    disk_guid: Guid([7; 16]),
                    revision: 0x10000,
                    header_size,
                    first_usable_lba: first,
                    last_usable_lba: last,
                    number_of_partition_entries: count.min(u32::MAX.into()) as u32,
                    size_of_partition_entry: entry_size,
                    primary: primary.map(|(alt, entries)| GptHeaderLocation {
                        header_lba: 1,
                        alternate_lba: alt,
                        partition_entry_lba: entries,
                    }),
                    backup: None,
                    mbr: ProtectiveMbr {
                        kind: if hybrid {
                            ProtectiveMbrKind::Hybrid
                        } else {
                            ProtectiveMbrKind::Protective
                        },
                        disk_signature: 1,
                        entries: vec![MbrEntry {
                            slot: (count % 6) as u32,
                            bootable: false,
                            type_byte: 0xee,
                            start_lba: first,
                            sector_count: last,
                        }],
                    },
                    partitions: parts
                        .into_iter()
                        .map(|(slot, first_lba, last_lba, attributes, name, content)| {
                            GptPartition {
                                slot: slot.min(u32::MAX.into()) as u32,
                                type_guid: Guid([1; 16]),
                                unique_guid: Guid([2; 16]),
                                first_lba,
                                last_lba,
                                attributes,
                                name,
                                content,
                            }
                        })
                        .collect(),
                })
            },
        )
        .boxed()
}

fn mbr(sectors: u64) -> BoxedStrategy<PartitionTable> {
    let kinds = prop_oneof![
        Just(MbrPartitionKind::Primary),
        Just(MbrPartitionKind::Extended),
        Just(MbrPartitionKind::Logical)
    ];
    let part = (
        num(9),
        kinds,
        num(sectors),
        num(sectors),
        prop::option::of(num(sectors)),
        content(sectors),
    );
    prop::collection::vec(part, 0..7)
        .prop_map(|parts| {
            PartitionTable::Mbr(Mbr {
                disk_signature: 1,
                partitions: parts
                    .into_iter()
                    .map(
                        |(slot, kind, start_lba, sector_count, ebr_lba, content)| MbrPartition {
                            slot: slot as u32,
                            kind,
                            bootable: false,
                            type_byte: 0x83,
                            start_lba,
                            sector_count,
                            ebr_lba,
                            content: Some(content),
                        },
                    )
                    .collect(),
            })
        })
        .boxed()
}

/// A real VG text for one PV of `sectors` 512-byte sectors: extents of 1 MiB from 1 MiB, LV
/// root on the first half, data on the rest.
fn vg_pv(sectors: u64) -> LvmPv {
    let uuid: LvmUuid = PV_UUID.parse().unwrap();
    let pe_count = sectors.saturating_sub(2048) / 2048;
    let half = pe_count / 2;
    let lv = |name: &str, start: u64, count: u64| LogicalVolume {
        name: name.into(),
        uuid,
        status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
        segments: vec![LvSegment {
            start_extent: 0,
            extent_count: count,
            segment_type: "striped".into(),
            stripe_size: None,
            stripes: vec![Stripe {
                pv: "pv0".into(),
                pv_start_extent: start,
            }],
        }],
        content: Some(Content::of(ContentKind::Xfs)),
    };
    let lv_text = |name: &str, start: u64, count: u64| {
        format!("{name} {{\nid = \"{PV_UUID}\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nsegment_count = 1\nsegment1 {{\nstart_extent = 0\nextent_count = {count}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", {start}]\n}}\n}}\n")
    };
    let text = format!(
        "vg0 {{\nid = \"{PV_UUID}\"\nseqno = 4\nextent_size = 2048\nphysical_volumes {{\npv0 {{\nid = \"{PV_UUID}\"\ndev_size = {sectors}\npe_start = 2048\npe_count = {pe_count}\n}}\n}}\nlogical_volumes {{\n{}{}}}\n}}\ncontents = \"Text Format Volume Group\"\n",
        lv_text("root", 0, half),
        lv_text("data", half, pe_count - half)
    );
    LvmPv {
        pv_uuid: uuid,
        label_sector: 1,
        device_size: sectors * 512,
        data_area: Area {
            offset: 1 << 20,
            size: 0,
        },
        metadata_areas: vec![Area {
            offset: 4096,
            size: (1 << 20) - 4096,
        }],
        bootloader_area: None,
        vg: Some(VgMetadata {
            mda_offset: 4096,
            text,
            summary: VolumeGroup {
                name: "vg0".into(),
                uuid,
                seqno: 4,
                extent_size: 2048,
                physical_volumes: vec![PhysicalVolume {
                    name: "pv0".into(),
                    uuid,
                    device_hint: None,
                    dev_size: sectors,
                    pe_start: 2048,
                    pe_count,
                }],
                logical_volumes: vec![lv("root", 0, half), lv("data", half, pe_count - half)],
            },
        }),
    }
}

/// Consistent layouts (partitions laid out in order, a real PV last) — then, in about a third
/// of the cases, one field replaced by an arbitrary number.
fn sane_layout() -> impl Strategy<Value = DiskLayout> {
    (
        prop_oneof![Just(512u32), Just(4096)],
        (1u64 << 14)..(1 << 22),
        prop::collection::vec((1u64..100, 0u64..4, kind()), 1..5),
        prop_oneof![Just(1u64), Just(8), Just(2048)],
        any::<bool>(),
        prop::option::of((0usize..12, num(1 << 23))),
    )
        .prop_map(|(ss, sectors, parts, align, use_gpt, mutation)| {
            let size = sectors * u64::from(ss);
            let (first, last) = (2048u64, sectors - 40);
            let unit = (last - first) / parts.iter().map(|p| p.0 + p.1).sum::<u64>().max(1);
            let mut at = first;
            let mut ranges = Vec::new();
            for &(len, gap, kind) in &parts {
                at = (at + gap * unit).div_ceil(align) * align;
                let end = ((at + len * unit) / align * align).min(last);
                if end <= at + 1 {
                    break;
                }
                ranges.push((at, end - 1, kind));
                at = end;
            }
            let content = |first: u64, last: u64, kind| match kind {
                ContentKind::Lvm2Member => Content {
                    lvm: Some(vg_pv((last - first + 1) * u64::from(ss) / 512)),
                    ..Content::of(kind)
                },
                k => Content::of(k),
            };
            let mut layout = DiskLayout {
                logical_sector_size: ss,
                size,
                table: PartitionTable::None,
                boot: BootArea {
                    mbr_boot_code: false,
                    gap: None,
                },
                content: None,
            };
            layout.table = if use_gpt {
                PartitionTable::Gpt(Gpt {
                    disk_guid: Guid([7; 16]),
                    revision: 0x10000,
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
                        disk_signature: 1,
                        entries: vec![MbrEntry {
                            slot: 1,
                            bootable: false,
                            type_byte: 0xee,
                            start_lba: 1,
                            sector_count: sectors - 1,
                        }],
                    },
                    partitions: ranges
                        .iter()
                        .enumerate()
                        .map(|(i, &(first_lba, last_lba, kind))| GptPartition {
                            slot: 2 * i as u32 + 1,
                            type_guid: Guid([1; 16]),
                            unique_guid: Guid([i as u8; 16]),
                            first_lba,
                            last_lba,
                            attributes: 1,
                            name: format!("part {i}"),
                            content: content(first_lba, last_lba, kind),
                        })
                        .collect(),
                })
            } else {
                // The first range is a primary, the others logical partitions in an extended one.
                let mut partitions = Vec::new();
                for (i, &(first_lba, last_lba, kind)) in ranges.iter().enumerate() {
                    let (start, kind_, slot, ebr) = if i == 0 {
                        (first_lba, MbrPartitionKind::Primary, 1, None)
                    } else {
                        (
                            first_lba + 63,
                            MbrPartitionKind::Logical,
                            4 + i as u32,
                            Some(first_lba),
                        )
                    };
                    if start > last_lba {
                        break;
                    }
                    partitions.push(MbrPartition {
                        slot,
                        kind: kind_,
                        bootable: false,
                        type_byte: 0x83,
                        start_lba: start,
                        sector_count: last_lba - start + 1,
                        ebr_lba: ebr,
                        content: Some(content(start, last_lba, kind)),
                    });
                }
                if partitions.len() > 1 {
                    let s = partitions[1].ebr_lba.unwrap_or(0);
                    let e = partitions
                        .last()
                        .map_or(0, |p| p.start_lba + p.sector_count);
                    partitions.insert(
                        1,
                        MbrPartition {
                            slot: 2,
                            kind: MbrPartitionKind::Extended,
                            bootable: false,
                            type_byte: 5,
                            start_lba: s,
                            sector_count: e - s,
                            ebr_lba: None,
                            content: None,
                        },
                    );
                }
                PartitionTable::Mbr(Mbr {
                    disk_signature: 1,
                    partitions,
                })
            };
            if let Some((field, value)) = mutation {
                mutate(&mut layout, field, value);
            }
            layout
        })
}

/// Replace one number of the layout by `value`.
fn mutate(l: &mut DiskLayout, field: usize, value: u64) {
    match &mut l.table {
        PartitionTable::Gpt(g) => {
            let n = g.partitions.len();
            let p = &mut g.partitions[field % n.max(1)..];
            match (field, p.first_mut()) {
                (0, _) => g.first_usable_lba = value,
                (1, _) => g.last_usable_lba = value,
                (2, _) => g.number_of_partition_entries = value as u32,
                (3, Some(p)) => p.first_lba = value,
                (4, Some(p)) => p.last_lba = value,
                (5, Some(p)) => p.slot = value as u32,
                (6, _) => {
                    g.primary = Some(GptHeaderLocation {
                        header_lba: 1,
                        alternate_lba: value,
                        partition_entry_lba: value % 64,
                    })
                }
                (f, Some(p)) => mutate_pv(p.content.lvm.as_mut(), f, value),
                _ => {}
            }
        }
        PartitionTable::Mbr(m) => {
            let n = m.partitions.len();
            if let Some(p) = m.partitions[field % n.max(1)..].first_mut() {
                match field {
                    0 => p.start_lba = value,
                    1 => p.sector_count = value,
                    2 => p.ebr_lba = Some(value),
                    3 => p.slot = value as u32,
                    f => mutate_pv(p.content.as_mut().and_then(|c| c.lvm.as_mut()), f, value),
                }
            }
        }
        PartitionTable::None => {}
    }
}

fn mutate_pv(pv: Option<&mut LvmPv>, field: usize, value: u64) {
    let Some(pv) = pv else { return };
    let Some(vg) = pv.vg.as_mut() else { return };
    let s = &mut vg.summary;
    match field {
        7 => s.extent_size = value,
        8 => s.physical_volumes[0].pe_count = value,
        9 => s.logical_volumes[0].segments[0].extent_count = value,
        10 => pv.metadata_areas[0].size = value,
        _ => vg.text.truncate(value as usize % (vg.text.len() + 1)),
    }
}

fn layout() -> impl Strategy<Value = DiskLayout> {
    (prop_oneof![Just(512u32), Just(4096)], 64u64..(1 << 22)).prop_flat_map(|(ss, sectors)| {
        let size = sectors * u64::from(ss);
        (
            prop_oneof![gpt(sectors), mbr(sectors), Just(PartitionTable::None)],
            prop::option::of(content(sectors)),
        )
            .prop_map(move |(table, content)| DiskLayout {
                logical_sector_size: ss,
                size,
                table,
                boot: BootArea {
                    mbr_boot_code: false,
                    gap: None,
                },
                content,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    #[test]
    fn planning_arbitrary_layouts_never_panics(
        layout in prop_oneof![1 => layout(), 3 => sane_layout()],
        extra in num(1 << 40),
        tgt_ss in prop_oneof![Just(512u32), Just(4096)],
        grow in any::<bool>(),
        named in any::<bool>(),
    ) {
        let disk = SourceDisk { name: "sda".into(), size: layout.size, logical_sector_size: layout.logical_sector_size, layout: Some(layout), used_bytes: 0 };
        let size = disk.size.saturating_add(extra);
        let target = TargetDisk { path: "/dev/vda".into(), size, logical_sector_size: tgt_ss, physical_sector_size: 4096, serial: None, model: None, blank: true };
        let grow_lv = if named { GrowLv::Named { vg: "vg0".into(), lv: "root".into() } } else { GrowLv::Auto };
        let policy = Policy { mapping: Mapping::ByOrder, grow, grow_lv, overwrite: false };
        if let Ok(p) = plan(&[disk], &[target], &policy) {
            let _ = p.to_string();
            let m = &p.mappings[0];
            for (i, patch) in m.patches.iter().enumerate() {
                prop_assert!(patch.end() <= size, "patch {} ends past the target: {}", patch.why, patch.end());
                if i > 0 {
                    prop_assert!(m.patches[i - 1].end() <= patch.offset, "patches overlap");
                }
            }
        }
    }
}

/// `default` cases unless PROPTEST_CASES asks for another number (a longer campaign).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
