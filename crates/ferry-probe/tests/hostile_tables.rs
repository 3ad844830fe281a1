//! Hostile partition tables and LVM metadata, built by hand: each is an error that names the
//! region and says what to check — never a panic, never a layout a restore would trust.
//! (a) looping EBR chains, (b) overlapping partitions, (c) LVM extents past the PV,
//! (d) GPT headers with a bad CRC, an entry array past the disk, absurd entry counts.

mod common;

use common::{build_gpt, build_mbr, build_pv, gpt_header, seal_gpt, vg_text, Ebr, MemDisk};
use ferry_probe::{probe, ProbeError};

const PV_UUID: &str = "HaNdBu-iLtP-V000-1111-2222-3333-444444";
const SECTORS: u64 = 1 << 16; // 32 MiB

fn err_of(data: Vec<u8>) -> ProbeError {
    match probe(&MemDisk {
        data,
        sector_size: 512,
    }) {
        Ok(l) => panic!("expected an error, got {l:?}"),
        Err(e) => e,
    }
}

fn says(e: &ProbeError, parts: &[&str]) {
    let text = e.to_string();
    for p in parts {
        assert!(text.contains(p), "{text:?} lacks {p:?}");
    }
}

// ---- (a) EBR chains ----

/// Extended partition 2048..+60000; each EBR holds a 1000-sector logical partition 63 on.
fn chain(links: &[(u64, Option<u64>)]) -> Vec<u8> {
    let ebrs: Vec<Ebr> = links
        .iter()
        .map(|&(lba, next)| Ebr {
            lba,
            data: Some((0x83, 63, 1000)),
            link: next.map(|n| ((n - 2048) as u32, 1063)),
        })
        .collect();
    build_mbr(SECTORS, &[(0x83, 1, 2000), (0x05, 2048, 60_000)], &ebrs)
}

#[test]
fn a_good_chain_reads() {
    let d = chain(&[(2048, Some(4096)), (4096, Some(8192)), (8192, None)]);
    let l = probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap();
    let ferry_format::layout::PartitionTable::Mbr(m) = l.table else {
        panic!("not an MBR")
    };
    let slots: Vec<u32> = m.partitions.iter().map(|p| p.slot).collect();
    assert_eq!(slots, [1, 2, 5, 6, 7]);
}

#[test]
fn an_ebr_pointing_at_itself_is_a_loop() {
    let e = err_of(chain(&[(2048, Some(2048))]));
    assert!(
        matches!(
            e,
            ProbeError::Mbr {
                region: "EBR chain",
                lba: 2048,
                ..
            }
        ),
        "{e}"
    );
    says(
        &e,
        &["EBR chain at LBA 2048", "loops back", "sfdisk --verify"],
    );
}

#[test]
fn an_ebr_pointing_back_at_an_earlier_one_is_a_loop() {
    for back in [2048, 4096] {
        let e = err_of(chain(&[
            (2048, Some(4096)),
            (4096, Some(8192)),
            (8192, Some(back)),
        ]));
        assert!(
            matches!(e, ProbeError::Mbr { region: "EBR chain", lba, .. } if lba == back),
            "{e}"
        );
        says(&e, &["loops back to this EBR", "fdisk"]);
    }
}

#[test]
fn an_endless_chain_stops_at_256_ebrs() {
    let links: Vec<(u64, Option<u64>)> = (0..300u64)
        .map(|i| (2048 + 64 * i, Some(2048 + 64 * (i + 1))))
        .collect();
    let ebrs: Vec<Ebr> = links
        .iter()
        .map(|&(lba, next)| Ebr {
            lba,
            data: Some((0x83, 2, 10)),
            link: next.map(|n| ((n - 2048) as u32, 64)),
        })
        .collect();
    let d = build_mbr(SECTORS, &[(0x05, 2048, 60_000)], &ebrs);
    let e = err_of(d);
    says(&e, &["EBR chain", "more than 256 EBRs"]);
}

#[test]
fn an_ebr_outside_its_extended_partition_is_an_error() {
    let d = chain(&[(2048, Some(2048 + 70_000))]);
    says(&err_of(d), &["outside the extended partition"]);
}

// ---- (b) overlaps ----

#[test]
fn overlapping_mbr_partitions_are_errors() {
    // Two primaries.
    let d = build_mbr(SECTORS, &[(0x83, 2048, 10_000), (0x83, 5000, 10_000)], &[]);
    let e = err_of(d);
    assert!(matches!(e, ProbeError::Overlap { .. }), "{e}");
    says(
        &e,
        &[
            "MBR partition 1 (LBA 2048..=12047)",
            "MBR partition 2 (LBA 5000..=14999)",
            "overlap",
            "sfdisk --verify",
        ],
    );
    // A primary inside the extended partition.
    let mut d = chain(&[(2048, None)]);
    common::mbr_entry(&mut d, 0, 2, 0, 0x83, 3000, 100);
    assert!(matches!(err_of(d), ProbeError::Overlap { .. }));
    // A logical partition covering the next EBR.
    let ebrs = [
        Ebr {
            lba: 2048,
            data: Some((0x83, 63, 5000)),
            link: Some((2048, 1063)),
        },
        Ebr {
            lba: 4096,
            data: Some((0x83, 63, 1000)),
            link: None,
        },
    ];
    let e = err_of(build_mbr(SECTORS, &[(0x05, 2048, 60_000)], &ebrs));
    assert!(matches!(e, ProbeError::Overlap { .. }), "{e}");
    says(&e, &["the EBR at LBA 4096"]);
    // Two logical partitions sharing sectors: 5 at 3048..=4047, 6 at 2163..=4162 (its EBR at
    // 2100 lies in neither).
    let ebrs = [
        Ebr {
            lba: 2048,
            data: Some((0x83, 1000, 1000)),
            link: Some((52, 2100)),
        },
        Ebr {
            lba: 2100,
            data: Some((0x83, 63, 2000)),
            link: None,
        },
    ];
    let e = err_of(build_mbr(SECTORS, &[(0x05, 2048, 60_000)], &ebrs));
    assert!(matches!(e, ProbeError::Overlap { .. }), "{e}");
    says(
        &e,
        &[
            "MBR partition 6 (LBA 2163..=4162)",
            "MBR partition 5 (LBA 3048..=4047)",
        ],
    );
}

#[test]
fn overlapping_gpt_partitions_are_errors() {
    let d = build_gpt(SECTORS, &[(1, 2048, 10_000), (2, 9000, 20_000)]);
    let e = err_of(d);
    assert!(matches!(e, ProbeError::Overlap { .. }), "{e}");
    says(
        &e,
        &[
            "GPT partition 1 (LBA 2048..=10000)",
            "GPT partition 2 (LBA 9000..=20000)",
            "sgdisk -v",
        ],
    );
    // The same partition twice in two slots.
    let e = err_of(build_gpt(SECTORS, &[(1, 2048, 4095), (7, 2048, 4095)]));
    assert!(matches!(e, ProbeError::Overlap { .. }), "{e}");
    // A partition over the entry array (before the first usable LBA).
    let e = err_of(build_gpt(SECTORS, &[(1, 10, 4095)]));
    says(
        &e,
        &["GPT partition 1 (LBA 10..=4095) is outside the usable LBAs 34..="],
    );
    // A partition past the end of the disk.
    let e = err_of(build_gpt(SECTORS, &[(1, 2048, SECTORS + 5)]));
    assert!(matches!(e, ProbeError::BeyondEnd { .. }), "{e}");
    says(&e, &["past the end of the disk", "truncated"]);
}

// ---- (c) LVM extents past the PV ----

fn pv_with(text: &str) -> Vec<u8> {
    build_pv(4 << 20, PV_UUID, 64 << 10, text, 512)
}

#[test]
fn a_sane_pv_reads() {
    // 4 MiB PV: data from 1 MiB, three 1 MiB extents, dev_size exactly the device.
    let l = probe(&MemDisk {
        data: pv_with(&vg_text(PV_UUID, 3)),
        sector_size: 512,
    })
    .unwrap();
    assert!(l.content.unwrap().lvm.unwrap().vg.is_some());
}

#[test]
fn extents_past_dev_size_are_an_error() {
    // pe_count 3 needs 8192 sectors; the metadata's own dev_size says 6144.
    let text = vg_text(PV_UUID, 3).replacen("dev_size = 8192", "dev_size = 6144", 1);
    let e = err_of(pv_with(&text));
    assert!(
        matches!(
            e,
            ProbeError::Lvm {
                region: "metadata text",
                ..
            }
        ),
        "{e}"
    );
    says(
        &e,
        &[
            "physical volume pv0 claims 3 extents",
            "past its own dev_size of 3145728 bytes",
            "pvck",
        ],
    );
}

#[test]
fn extents_past_the_device_are_an_error() {
    // Self-consistent metadata (dev_size agrees) for a PV far larger than the 4 MiB device.
    let e = err_of(pv_with(&vg_text(PV_UUID, 1000)));
    says(
        &e,
        &[
            "claims 1000 extents",
            "past the end of the device (4194304 bytes)",
            "truncated",
            "vgcfgrestore",
        ],
    );
    // Overflowing counts.
    let text = vg_text(PV_UUID, 3).replacen("pe_count = 3", "pe_count = 9223372036854775807", 1);
    says(&err_of(pv_with(&text)), &["overflows"]);
}

#[test]
fn an_lv_past_pe_count_is_an_error() {
    // The LV's two extents from extent 1 need pe_count 3; the PV has 2 (its device has room).
    let text = vg_text(PV_UUID, 3).replacen("pe_count = 3", "pe_count = 2", 1);
    let e = err_of(pv_with(&text));
    says(
        &e,
        &[
            "logical volume data uses 2 extents from extent 1 of pv0",
            "past the end of the PV (2 extents)",
        ],
    );
}

// ---- (d) GPT headers ----

#[test]
fn a_bad_header_crc_without_a_good_backup_is_an_error() {
    let mut d = build_gpt(SECTORS, &[(1, 2048, 4095)]);
    let last = (SECTORS - 1) as usize * 512;
    d[last..last + 512].fill(0); // no backup to fall back on
    d[512 + 16] ^= 0xff;
    let e = err_of(d);
    assert!(
        matches!(
            e,
            ProbeError::Gpt {
                region: "primary header",
                lba: 1,
                ..
            }
        ),
        "{e}"
    );
    says(&e, &["header CRC-32 is", "sgdisk -v", "gdisk"]);
}

#[test]
fn a_bad_header_crc_with_a_good_backup_uses_the_backup() {
    let mut d = build_gpt(SECTORS, &[(1, 2048, 4095)]);
    d[512 + 16] ^= 0xff;
    let l = probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap();
    let ferry_format::layout::PartitionTable::Gpt(g) = l.table else {
        panic!("not a GPT")
    };
    assert_eq!(g.primary, None);
    assert_eq!(g.partitions.len(), 1);
}

#[test]
fn a_bad_backup_header_behind_a_protective_mbr_is_an_error() {
    // No primary at all, and a backup whose CRC is wrong.
    let mut d = build_gpt(SECTORS, &[(1, 2048, 4095)]);
    d[512..1024].fill(0);
    let last = (SECTORS - 1) as usize * 512;
    d[last + 16] ^= 0xff;
    let e = err_of(d);
    assert!(
        matches!(e, ProbeError::Gpt { region: "backup header", lba, .. } if lba == SECTORS - 1),
        "{e}"
    );
}

/// A GPT whose primary header fields are replaced by `f`, resealed, without a backup.
fn primary_with(f: impl Fn(&mut [u8])) -> ProbeError {
    let mut d = build_gpt(SECTORS, &[(1, 2048, 4095)]);
    let last = (SECTORS - 1) as usize * 512;
    d[last..last + 512].fill(0);
    f(&mut d[512..1024]);
    seal_gpt(&mut d, 512, 1);
    err_of(d)
}

#[test]
fn entry_arrays_past_the_disk_are_errors() {
    let e = primary_with(|h| h[72..80].copy_from_slice(&(SECTORS - 2).to_le_bytes()));
    says(
        &e,
        &["entry array at LBA 65534 (32 sectors) is past the end of the disk"],
    );
    let e = primary_with(|h| h[72..80].copy_from_slice(&u64::MAX.to_le_bytes()));
    says(&e, &["is past the end of the disk"]);
}

#[test]
fn absurd_entry_counts_and_sizes_are_errors() {
    // 4 billion entries: refused before anything is allocated.
    let e = primary_with(|h| h[80..84].copy_from_slice(&u32::MAX.to_le_bytes()));
    says(
        &e,
        &["4294967295 entries of 128 bytes exceed the 1048576-byte limit"],
    );
    for size in [0u32, 8, 129, 8192, u32::MAX] {
        let e = primary_with(|h| h[84..88].copy_from_slice(&size.to_le_bytes()));
        says(
            &e,
            &[&format!(
                "partition entry size {size} is not a multiple of 8"
            )],
        );
    }
    for hsize in [0u32, 91, 513, u32::MAX] {
        let e = primary_with(|h| h[12..16].copy_from_slice(&hsize.to_le_bytes()));
        says(&e, &[&format!("header size {hsize} is not between 92")]);
    }
    // Usable range upside down, and MyLBA pointing elsewhere.
    let e = primary_with(|h| h[40..48].copy_from_slice(&(SECTORS * 2).to_le_bytes()));
    says(&e, &["are not a range"]);
    let e = primary_with(|h| h[24..32].copy_from_slice(&7u64.to_le_bytes()));
    says(&e, &["MyLBA is 7"]);
}

#[test]
fn a_header_pointing_its_entries_into_the_usable_range_is_an_error() {
    let mut d = build_gpt(SECTORS, &[(1, 2048, 4095)]);
    let last = (SECTORS - 1) as usize * 512;
    d[last..last + 512].fill(0);
    gpt_header(&mut d, 1, SECTORS - 1, 100, (34, SECTORS - 34));
    says(&err_of(d), &["overlaps the header or the usable LBAs"]);
}
