//! The planner on hand-made layouts: mappings, refusals and their messages, the plan's text.

use ferry_format::layout::{
    BootArea, Content, ContentKind, DiskLayout, Gpt, GptPartition, Guid, Mbr, MbrEntry,
    MbrPartition, MbrPartitionKind, PartitionTable, ProtectiveMbr, ProtectiveMbrKind,
};
use ferry_layout::{
    plan, Action, GrowLv, LayoutPlan, Mapping, PlanError, Policy, SourceDisk, TargetDisk,
};

const GIB: u64 = 1 << 30;

fn guid(n: u8) -> Guid {
    Guid([n; 16])
}

/// A GPT disk of `size` bytes (512-byte sectors) with (slot, first, last, content) partitions.
fn gpt(size: u64, parts: &[(u32, u64, u64, ContentKind)]) -> DiskLayout {
    let sectors = size / 512;
    DiskLayout {
        logical_sector_size: 512,
        size,
        table: PartitionTable::Gpt(Gpt {
            disk_guid: guid(9),
            revision: 0x0001_0000,
            header_size: 92,
            first_usable_lba: 34,
            last_usable_lba: sectors - 34,
            number_of_partition_entries: 128,
            size_of_partition_entry: 128,
            primary: Some(ferry_format::layout::GptHeaderLocation {
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
                    type_guid: guid(1),
                    unique_guid: guid(slot as u8 + 10),
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

fn mbr(size: u64, parts: &[(u32, MbrPartitionKind, u64, u64, Option<u64>)]) -> DiskLayout {
    DiskLayout {
        logical_sector_size: 512,
        size,
        table: PartitionTable::Mbr(Mbr {
            disk_signature: 0x1234,
            partitions: parts
                .iter()
                .map(
                    |&(slot, kind, start_lba, sector_count, ebr_lba)| MbrPartition {
                        slot,
                        kind,
                        bootable: false,
                        type_byte: if kind == MbrPartitionKind::Extended {
                            5
                        } else {
                            0x83
                        },
                        start_lba,
                        sector_count,
                        ebr_lba,
                        content: (kind != MbrPartitionKind::Extended)
                            .then(|| Content::of(ContentKind::Ext4)),
                    },
                )
                .collect(),
        }),
        boot: BootArea {
            mbr_boot_code: true,
            gap: None,
        },
        content: None,
    }
}

/// A 20 GiB GPT disk: ESP, root (ext4) ending 1 GiB before the end.
fn sda() -> SourceDisk {
    let l = gpt(
        20 * GIB,
        &[
            (1, 2048, 1050623, ContentKind::Vfat),
            (2, 1050624, 19 * GIB / 512 - 1, ContentKind::Ext4),
        ],
    );
    disk("sda", l)
}

fn disk(name: &str, layout: DiskLayout) -> SourceDisk {
    SourceDisk {
        name: name.into(),
        size: layout.size,
        logical_sector_size: layout.logical_sector_size,
        layout: Some(layout),
        used_bytes: 3 * GIB,
    }
}

fn bare(name: &str, size: u64) -> SourceDisk {
    SourceDisk {
        name: name.into(),
        size,
        logical_sector_size: 512,
        layout: None,
        used_bytes: 0,
    }
}

fn tgt(path: &str, size: u64) -> TargetDisk {
    TargetDisk {
        path: path.into(),
        size,
        logical_sector_size: 512,
        physical_sector_size: 4096,
        serial: Some(format!("SN-{}", &path[path.len() - 3..])),
        model: None,
        blank: true,
    }
}

fn by(mapping: Mapping) -> Policy {
    Policy {
        mapping,
        ..Policy::default()
    }
}

fn grow() -> Policy {
    Policy {
        grow: true,
        ..Policy::default()
    }
}

fn pairs(p: &LayoutPlan) -> Vec<(String, String)> {
    p.mappings
        .iter()
        .map(|m| (m.disk.clone(), m.target.clone()))
        .collect()
}

fn pair(d: &str, t: &str) -> (String, String) {
    (d.into(), t.into())
}

type Check = fn(&LayoutPlan);
/// (name, snapshot disks, target inventory, policy, expected outcome)
type Case = (
    &'static str,
    Vec<SourceDisk>,
    Vec<TargetDisk>,
    Policy,
    Expect,
);

enum Expect {
    Plan(Check),
    /// The error's text contains all of these.
    Error(&'static [&'static str]),
}

#[test]
fn planner_table() {
    use Expect::*;
    let mut mbr_3t = mbr(
        GIB,
        &[(1, MbrPartitionKind::Primary, 2048, GIB / 512 - 2048, None)],
    );
    mbr_3t.logical_sector_size = 512;
    let swap_last = disk(
        "sda",
        gpt(
            GIB,
            &[
                (1, 2048, 4095, ContentKind::Ext4),
                (2, 4096, GIB / 512 - 34, ContentKind::Swap),
            ],
        ),
    );
    let unaligned = disk("sda", gpt(GIB, &[(1, 2049, 4095, ContentKind::Ext4)]));
    let cases: Vec<Case> = vec![
        (
            "identical disk",
            vec![sda()],
            vec![tgt("/dev/vda", 20 * GIB)],
            Policy::default(),
            Plan(|p| {
                let m = &p.mappings[0];
                assert_eq!(m.action, Action::Identical);
                assert!(m.patches.is_empty());
                assert!(p.to_string().contains("sda (20 GiB, GPT: 2 partitions) -> /dev/vda (20 GiB): same size, restored exactly as recorded"), "{p}");
            }),
        ),
        (
            "larger disk keeps offsets and moves the backup",
            vec![sda()],
            vec![tgt("/dev/vda", 30 * GIB)],
            Policy::default(),
            Plan(|p| {
                let m = &p.mappings[0];
                let Action::Adapt(a) = &m.action else {
                    panic!()
                };
                let g = a.gpt.as_ref().unwrap();
                assert_eq!(
                    (g.backup_lba, g.last_usable_lba),
                    (30 * GIB / 512 - 1, 30 * GIB / 512 - 34)
                );
                assert!(a.partition.is_none() && m.grow_fs.is_none());
                assert_eq!(
                    m.patches.iter().map(|p| p.offset).collect::<Vec<_>>(),
                    vec![458, 512, 20 * GIB - 512, 30 * GIB - 33 * 512]
                );
                let text = p.to_string();
                assert!(
                    text.contains("keep offsets")
                        && text.contains(
                            "move the backup GPT header from LBA 41943039 to LBA 62914559"
                        ),
                    "{text}"
                );
                let json = serde_json::to_value(p).unwrap();
                assert_eq!(json["mappings"][0]["action"]["kind"], "adapt");
            }),
        ),
        (
            "larger disk with grow",
            vec![sda()],
            vec![tgt("/dev/vda", 30 * GIB)],
            grow(),
            Plan(|p| {
                let m = &p.mappings[0];
                let Action::Adapt(a) = &m.action else {
                    panic!()
                };
                let g = a.partition.as_ref().unwrap();
                assert_eq!((g.slot, g.new_last_lba), (2, 30 * GIB / 512 - 2048 - 1));
                let fs = m.grow_fs.as_ref().unwrap();
                assert_eq!(
                    (fs.fs, fs.new_size),
                    (ContentKind::Ext4, (30 * GIB / 512 - 2048 - 1050624) * 512)
                );
                assert!(p.to_string().contains("grow ext4 on partition 2"), "{p}");
            }),
        ),
        (
            "swap at the end is not grown",
            vec![swap_last],
            vec![tgt("/dev/vda", 2 * GIB)],
            grow(),
            Plan(|p| {
                let Action::Adapt(a) = &p.mappings[0].action else {
                    panic!()
                };
                assert!(a.partition.is_none());
                assert!(
                    a.notes[0].contains("partition 2 is not grown: it holds swap"),
                    "{:?}",
                    a.notes
                );
            }),
        ),
        (
            "smaller disk refused with the size needed and the fit hint",
            vec![sda()],
            vec![tgt("/dev/vda", 19 * GIB + 512 * 1024 * 1024)],
            Policy::default(),
            Error(&[
                "refusing to restore disk sda onto /dev/vda",
                "needs at least 21474836480 bytes (20 GiB)",
                "partitions end at byte 20401094656 (19 GiB)",
                "about 3 GiB of it in use",
                "would fit, but shrinking a disk is not supported yet",
            ]),
        ),
        (
            "smaller disk the partitions do not fit",
            vec![sda()],
            vec![tgt("/dev/vda", 10 * GIB)],
            Policy::default(),
            Error(&[
                "needs at least 21474836480 bytes",
                "past the end of the target",
            ]),
        ),
        (
            "by order",
            vec![bare("a", GIB), bare("b", 2 * GIB)],
            vec![tgt("/dev/vda", 2 * GIB), tgt("/dev/vdb", 3 * GIB)],
            Policy::default(),
            Plan(|p| {
                assert_eq!(pairs(p), vec![pair("a", "/dev/vda"), pair("b", "/dev/vdb")]);
            }),
        ),
        (
            "by order needs enough targets",
            vec![bare("a", GIB), bare("b", GIB)],
            vec![tgt("/dev/vda", GIB)],
            Policy::default(),
            Error(&["no target for disk b", "2 disks and the target 1"]),
        ),
        (
            "by size: the smallest target that fits",
            vec![bare("small", GIB), bare("big", 10 * GIB)],
            vec![tgt("/dev/vda", 12 * GIB), tgt("/dev/vdb", 2 * GIB)],
            by(Mapping::BySize),
            Plan(|p| {
                assert_eq!(
                    pairs(p),
                    vec![pair("small", "/dev/vdb"), pair("big", "/dev/vda")]
                );
            }),
        ),
        (
            "by size: a tie is ambiguous",
            vec![bare("a", GIB)],
            vec![tgt("/dev/vda", 2 * GIB), tgt("/dev/vdb", 2 * GIB)],
            by(Mapping::BySize),
            Error(&[
                "cannot map disk a automatically",
                "/dev/vda and /dev/vdb fit it equally well",
                "map it explicitly",
            ]),
        ),
        (
            "by size: nothing fits",
            vec![bare("a", 3 * GIB)],
            vec![tgt("/dev/vda", 2 * GIB)],
            by(Mapping::BySize),
            Error(&[
                "no target for disk a",
                "no unused target holds 3221225472 bytes",
            ]),
        ),
        (
            "by serial",
            vec![bare("a", GIB), bare("b", GIB)],
            vec![tgt("/dev/vda", GIB), tgt("/dev/vdb", GIB)],
            by(Mapping::BySerial(vec![
                ("a".into(), "SN-vdb".into()),
                ("b".into(), "SN-vda".into()),
            ])),
            Plan(|p| {
                assert_eq!(pairs(p), vec![pair("a", "/dev/vdb"), pair("b", "/dev/vda")]);
            }),
        ),
        (
            "by serial: unknown serial",
            vec![bare("a", GIB)],
            vec![tgt("/dev/vda", GIB)],
            by(Mapping::BySerial(vec![("a".into(), "XYZ".into())])),
            Error(&[
                "no target for disk a",
                "no target disk has serial \"XYZ\"",
                "/dev/vda \"SN-vda\"",
            ]),
        ),
        (
            "explicit: two disks onto one target",
            vec![bare("a", GIB), bare("b", GIB)],
            vec![tgt("/dev/vda", GIB)],
            by(Mapping::Explicit(vec![
                ("a".into(), "/dev/vda".into()),
                ("b".into(), "/dev/vda".into()),
            ])),
            Error(&["disks a and b are both mapped onto /dev/vda"]),
        ),
        (
            "explicit: target not in the inventory",
            vec![bare("a", GIB)],
            vec![tgt("/dev/vda", GIB)],
            by(Mapping::Explicit(vec![("a".into(), "/dev/sdz".into())])),
            Error(&["target /dev/sdz is not in the target's inventory (it has: /dev/vda 1 GiB)"]),
        ),
        (
            "explicit: unknown disk",
            vec![bare("a", GIB)],
            vec![tgt("/dev/vda", GIB)],
            by(Mapping::Explicit(vec![("c".into(), "/dev/vda".into())])),
            Error(&["the snapshot has no disk c (it has: a)"]),
        ),
        (
            "explicit: nothing",
            vec![bare("a", GIB)],
            vec![tgt("/dev/vda", GIB)],
            by(Mapping::Explicit(vec![])),
            Error(&["nothing to restore"]),
        ),
        (
            "MBR across sector sizes",
            vec![disk("sda", mbr_3t.clone())],
            vec![TargetDisk {
                logical_sector_size: 4096,
                ..tgt("/dev/vda", GIB)
            }],
            Policy::default(),
            Error(&[
                "cannot restore disk sda (512-byte sectors) onto /dev/vda (4096-byte sectors)",
                "MBR",
                "restore onto a disk with 512-byte sectors",
            ]),
        ),
        (
            "MBR grow past 2 TiB",
            vec![disk("sda", mbr_3t)],
            vec![tgt("/dev/vda", 3 << 40)],
            grow(),
            Error(&[
                "disk sda: cannot grow the last MBR partition",
                "2^32 sectors",
                "restore without grow",
            ]),
        ),
        (
            "GPT conversion needs 4 KiB alignment",
            vec![unaligned],
            vec![TargetDisk {
                logical_sector_size: 4096,
                ..tgt("/dev/vda", GIB)
            }],
            Policy::default(),
            Error(&[
                "(4096-byte sectors)",
                "partition 1 starts at byte 1049088, which is not a multiple of 4096",
            ]),
        ),
        (
            "no layout: larger is fine, conversion is not",
            vec![bare("a", GIB)],
            vec![tgt("/dev/vda", 2 * GIB)],
            Policy::default(),
            Plan(|p| {
                assert!(
                    p.to_string()
                        .contains("no layout was recorded: restored as is"),
                    "{p}"
                );
            }),
        ),
        (
            "no layout across sector sizes",
            vec![bare("a", GIB)],
            vec![TargetDisk {
                logical_sector_size: 4096,
                ..tgt("/dev/vda", GIB)
            }],
            Policy::default(),
            Error(&["no layout was recorded at backup time"]),
        ),
        (
            "a target holding data needs overwrite",
            vec![bare("a", GIB)],
            vec![TargetDisk {
                blank: false,
                ..tgt("/dev/vda", GIB)
            }],
            Policy::default(),
            Error(&[
                "refusing to write /dev/vda (for disk a): it is not blank",
                "allow overwriting",
            ]),
        ),
        (
            "a target holding data and too small says too small first",
            vec![bare("a", GIB)],
            vec![TargetDisk {
                blank: false,
                ..tgt("/dev/vda", GIB / 2)
            }],
            Policy::default(),
            Error(&["the disk needs at least 1073741824 bytes"]),
        ),
        (
            "overwrite allowed",
            vec![bare("a", GIB)],
            vec![TargetDisk {
                blank: false,
                ..tgt("/dev/vda", GIB)
            }],
            Policy {
                overwrite: true,
                ..Policy::default()
            },
            Plan(|p| {
                assert!(
                    p.to_string().contains("holds data, will be overwritten"),
                    "{p}"
                );
            }),
        ),
        (
            "named LV of a VG no disk holds",
            vec![sda()],
            vec![tgt("/dev/vda", 30 * GIB)],
            Policy {
                grow: true,
                grow_lv: GrowLv::Named {
                    vg: "vg9".into(),
                    lv: "root".into(),
                },
                ..Policy::default()
            },
            Error(&["the job grows LV vg9/root, but no restored disk holds volume group vg9"]),
        ),
        (
            "inventory lists a path twice",
            vec![bare("a", GIB)],
            vec![tgt("/dev/vda", GIB), tgt("/dev/vda", GIB)],
            Policy::default(),
            Error(&["invalid target inventory: /dev/vda is listed twice"]),
        ),
    ];
    for (name, disks, targets, policy, expect) in cases {
        let got = plan(&disks, &targets, &policy);
        match (expect, got) {
            (Plan(check), Ok(p)) => check(&p),
            (Error(parts), Err(e)) => {
                let text = e.to_string();
                for part in parts {
                    assert!(text.contains(part), "{name}: {text:?} lacks {part:?}");
                }
            }
            (Plan(_), Err(e)) => panic!("{name}: unexpected error {e}"),
            (Error(_), Ok(p)) => panic!("{name}: expected an error, got\n{p}"),
        }
    }
}

#[test]
fn inconsistent_layouts_are_refused_not_patched() {
    let bad: Vec<(&str, DiskLayout)> = vec![
        (
            "overlap",
            gpt(
                GIB,
                &[
                    (1, 2048, 9999, ContentKind::Ext4),
                    (2, 9000, 20000, ContentKind::Ext4),
                ],
            ),
        ),
        (
            "slot twice",
            gpt(
                GIB,
                &[
                    (1, 2048, 4095, ContentKind::Ext4),
                    (1, 4096, 8191, ContentKind::Ext4),
                ],
            ),
        ),
        (
            "past usable",
            gpt(GIB, &[(1, 2048, GIB / 512, ContentKind::Ext4)]),
        ),
        (
            "EBR loop",
            mbr(
                GIB,
                &[
                    (2, MbrPartitionKind::Extended, 2048, 100_000, None),
                    (5, MbrPartitionKind::Logical, 4096, 1000, Some(2048)),
                    (6, MbrPartitionKind::Logical, 8192, 1000, Some(2048)),
                ],
            ),
        ),
        (
            "logical outside extended",
            mbr(
                GIB,
                &[
                    (2, MbrPartitionKind::Extended, 2048, 10_000, None),
                    (5, MbrPartitionKind::Logical, 4096, 100_000, Some(2048)),
                ],
            ),
        ),
    ];
    for (name, layout) in bad {
        let err = plan(&[disk("sda", layout)], &[tgt("/dev/vda", 2 * GIB)], &grow()).unwrap_err();
        assert!(matches!(err, PlanError::Layout { .. }), "{name}: {err}");
        assert!(
            err.to_string()
                .contains("restore it onto a disk of exactly 1073741824 bytes"),
            "{name}: {err}"
        );
    }
}

const PV_UUID: &str = "JKVOSE-1GL5-Qdqw-rveQ-Wj3w-s7gQ-jG8adg";

/// A PV (data from 1 MiB, 1 MiB extents) claiming `pe_count` extents and `dev_size` sectors;
/// LV root holds `lv_extents` extents from extent 0.
fn pv(pe_count: u64, dev_size: u64, lv_extents: u64) -> Content {
    use ferry_format::layout::{
        Area, LogicalVolume, LvSegment, LvmPv, LvmUuid, PhysicalVolume, Stripe, VgMetadata,
        VolumeGroup,
    };
    let uuid: LvmUuid = PV_UUID.parse().unwrap();
    let text = format!(
        "vg0 {{\nid = \"{PV_UUID}\"\nseqno = 1\nextent_size = 2048\nphysical_volumes {{\npv0 {{\nid = \"{PV_UUID}\"\ndev_size = {dev_size}\npe_start = 2048\npe_count = {pe_count}\n}}\n}}\nlogical_volumes {{\nroot {{\nid = \"{PV_UUID}\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nsegment_count = 1\nsegment1 {{\nstart_extent = 0\nextent_count = {lv_extents}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 0]\n}}\n}}\n}}\n}}\n"
    );
    let lvm = LvmPv {
        pv_uuid: uuid,
        label_sector: 1,
        device_size: dev_size * 512,
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
                seqno: 1,
                extent_size: 2048,
                physical_volumes: vec![PhysicalVolume {
                    name: "pv0".into(),
                    uuid,
                    device_hint: None,
                    dev_size,
                    pe_start: 2048,
                    pe_count,
                }],
                logical_volumes: vec![LogicalVolume {
                    name: "root".into(),
                    uuid,
                    status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
                    segments: vec![LvSegment {
                        start_extent: 0,
                        extent_count: lv_extents,
                        segment_type: "striped".into(),
                        stripe_size: None,
                        stripes: vec![Stripe {
                            pv: "pv0".into(),
                            pv_start_extent: 0,
                        }],
                    }],
                    content: Some(Content::of(ContentKind::Ext4)),
                }],
            },
        }),
    };
    Content {
        uuid: Some(PV_UUID.into()),
        lvm: Some(lvm),
        ..Content::of(ContentKind::Lvm2Member)
    }
}

/// A 1 GiB GPT disk whose one partition (LBA 2048..=2095103: 1071644672 bytes) is a PV.
fn gpt_pv(content: Content) -> DiskLayout {
    let mut l = gpt(GIB, &[(1, 2048, 2_095_103, ContentKind::Lvm2Member)]);
    if let PartitionTable::Gpt(g) = &mut l.table {
        g.partitions[0].content = content;
    }
    l
}

/// Layouts no probe of ours records but a manifest from elsewhere might carry: each is refused
/// before any write, naming the problem and what to do instead.
#[test]
fn hostile_layouts_are_refused_naming_the_problem() {
    use MbrPartitionKind::{Extended, Logical, Primary};
    let with_gpt = |f: &dyn Fn(&mut Gpt)| {
        let mut l = gpt(GIB, &[(1, 2048, 4095, ContentKind::Ext4)]);
        if let PartitionTable::Gpt(g) = &mut l.table {
            f(g);
        }
        l
    };
    // The PV partition is 2_093_056 sectors: 1021 extents after pe_start fit, 1022 do not.
    let cases: Vec<(&str, DiskLayout, &str)> = vec![
        (
            "(a) EBR recorded twice (a chain looping back)",
            mbr(
                GIB,
                &[
                    (2, Extended, 2048, 100_000, None),
                    (5, Logical, 4096, 1000, Some(2048)),
                    (6, Logical, 8192, 1000, Some(2048)),
                ],
            ),
            "the EBRs of partitions 5 and 6 collide",
        ),
        (
            "(a) EBR inside an earlier logical partition",
            mbr(
                GIB,
                &[
                    (2, Extended, 2048, 100_000, None),
                    (5, Logical, 2111, 10_000, Some(2048)),
                    (6, Logical, 4159, 1000, Some(4096)),
                ],
            ),
            "partitions 5 and 6 overlap",
        ),
        (
            "(b) overlapping primaries",
            mbr(
                GIB,
                &[
                    (1, Primary, 2048, 10_000, None),
                    (2, Primary, 5000, 10_000, None),
                ],
            ),
            "partitions 1 and 2 overlap",
        ),
        (
            "(b) overlapping GPT partitions",
            gpt(
                GIB,
                &[
                    (1, 2048, 9999, ContentKind::Ext4),
                    (2, 9000, 20000, ContentKind::Ext4),
                ],
            ),
            "partitions 1 and 2 overlap",
        ),
        (
            "(c) extents past dev_size",
            gpt_pv(pv(1021, 500_000, 1021)),
            "pv0 claims 1021 extents of 2048 sectors from sector 2048, past its own dev_size of 500000 sectors",
        ),
        (
            "(c) extents past the partition",
            gpt_pv(pv(5000, 5001 * 2048, 10)),
            "pv0 claims 5000 extents of 2048 sectors from sector 2048, ending at byte 5243928576, past the end of the 1071644672-byte region it was on",
        ),
        (
            "(c) an LV past pe_count",
            gpt_pv(pv(100, 101 * 2048, 500)),
            "LV root uses extents past the PV's 100",
        ),
        (
            "(d) absurd entry count",
            with_gpt(&|g| g.number_of_partition_entries = u32::MAX),
            "GPT entry array of 4294967295 entries of 128 bytes",
        ),
        (
            "(d) absurd entry size",
            with_gpt(&|g| g.size_of_partition_entry = 0),
            "GPT entry size 0 is not a multiple of 8",
        ),
        (
            "(d) entry array past the disk",
            with_gpt(&|g| {
                if let Some(p) = g.primary.as_mut() {
                    p.partition_entry_lba = u64::MAX - 3;
                }
            }),
            "do not fit between the primary entry array and the end of the disk",
        ),
    ];
    for (name, layout, says) in cases {
        let err = match plan(&[disk("sda", layout)], &[tgt("/dev/vda", 2 * GIB)], &grow()) {
            Ok(p) => panic!("{name}: planned\n{p}"),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(matches!(err, PlanError::Layout { .. }), "{name}: {text}");
        assert!(text.contains(says), "{name}: {text:?} lacks {says:?}");
        assert!(
            text.contains("restore it onto a disk of exactly 1073741824 bytes")
                && text.contains("or take a new backup"),
            "{name}: {text}"
        );
    }
    // The same PV with consistent numbers grows.
    let p = plan(
        &[disk("sda", gpt_pv(pv(1021, 2_093_056, 1021)))],
        &[tgt("/dev/vda", 2 * GIB)],
        &grow(),
    )
    .unwrap();
    assert!(p.to_string().contains("vg0"), "{p}");
}
