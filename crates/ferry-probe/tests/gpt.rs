//! GPT disks made by sgdisk, probed and compared with what sgdisk itself reports.

mod common;

use std::path::Path;

use common::{blkid, have, image, patch, run, write_into, FileDisk};
use ferry_format::layout::{ContentKind, Gpt, PartitionTable, ProtectiveMbrKind};
use ferry_probe::{probe, ProbeError};
use ferry_test_support::tools::sgdisk_info;

const MIB: u64 = 1 << 20;
const DISK_GUID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const EFI_GUID: &str = "11111111-2222-4333-8444-555555555555";

/// 64 MiB: ESP in slot 1 (vfat), root in slot 2 (ext4), swap in slot 4; slot 3 unused.
fn make_disk(dir: &Path) -> std::path::PathBuf {
    let img = image(dir, "gpt.img", 64 * MIB);
    let p = img.to_str().unwrap();
    run(
        "sgdisk",
        &[
            "-o",
            "-U",
            DISK_GUID,
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-c",
            "1:EFI System",
            "-u",
            &format!("1:{EFI_GUID}"),
            "-A",
            "1:set:0",
            "-n",
            "2:0:+24M",
            "-t",
            "2:8300",
            "-c",
            "2:root",
            "-n",
            "4:0:+8M",
            "-t",
            "4:8200",
            "-c",
            "4:swap",
            "-A",
            "4:set:2",
            "-A",
            "4:set:60",
            p,
        ],
    );
    img
}

fn gpt_of(img: &Path) -> Gpt {
    match probe(&FileDisk::open(img)).unwrap().table {
        PartitionTable::Gpt(g) => g,
        other => panic!("expected a GPT, got {other:?}"),
    }
}

fn first_number(s: &str) -> u64 {
    s.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn gpt_matches_sgdisk() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    let g = gpt_of(&img);

    let p = run("sgdisk", &["-p", img.to_str().unwrap()]);
    let field = |prefix: &str| {
        p.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(
        g.disk_guid.to_string(),
        field("Disk identifier (GUID):").to_lowercase()
    );
    assert_eq!(g.disk_guid.to_string(), DISK_GUID);
    assert_eq!(
        field("Partition table holds up to"),
        format!("{} entries", g.number_of_partition_entries)
    );
    let usable = field("First usable sector is");
    assert_eq!(
        usable,
        format!(
            "{}, last usable sector is {}",
            g.first_usable_lba, g.last_usable_lba
        )
    );
    let primary = g.primary.unwrap();
    assert_eq!(
        field("Main partition table begins at sector"),
        format!("{} and ends at sector 33", primary.partition_entry_lba)
    );
    let sectors = 64 * MIB / 512;
    assert_eq!(
        (primary.header_lba, primary.alternate_lba),
        (1, sectors - 1)
    );
    let backup = g.backup.unwrap();
    assert_eq!(
        (backup.header_lba, backup.partition_entry_lba),
        (sectors - 1, sectors - 33)
    );
    assert_eq!(
        (g.size_of_partition_entry, g.header_size, g.revision),
        (128, 92, 0x0001_0000)
    );
    assert_eq!(g.mbr.kind, ProtectiveMbrKind::Protective);

    assert_eq!(
        g.partitions.iter().map(|p| p.slot).collect::<Vec<_>>(),
        [1, 2, 4]
    );
    for part in &g.partitions {
        let info = sgdisk_info(img.to_str().unwrap(), part.slot);
        let code = info["Partition GUID code"]
            .split_whitespace()
            .next()
            .unwrap()
            .to_lowercase();
        assert_eq!(part.type_guid.to_string(), code);
        assert_eq!(
            part.unique_guid.to_string(),
            info["Partition unique GUID"].to_lowercase()
        );
        assert_eq!(part.first_lba, first_number(&info["First sector"]));
        assert_eq!(part.last_lba, first_number(&info["Last sector"]));
        assert_eq!(format!("{:016X}", part.attributes), info["Attribute flags"]);
        assert_eq!(format!("'{}'", part.name), info["Partition name"]);
    }
    assert_eq!(g.partitions[0].unique_guid.to_string(), EFI_GUID);
    assert_eq!(
        g.partitions[0].type_guid.to_string(),
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
    );
    assert_eq!(g.partitions[2].attributes, 1 << 60 | 1 << 2);
}

#[test]
fn gpt_partition_contents_match_blkid() {
    if !(have("sgdisk")
        && have("mkfs.ext4")
        && have("mkfs.vfat")
        && have("mkswap")
        && have("blkid"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    let g = gpt_of(&img);
    let (esp, root, swap) = (&g.partitions[0], &g.partitions[1], &g.partitions[2]);
    let range = |p: &ferry_format::layout::GptPartition| {
        (p.first_lba * 512, (p.last_lba - p.first_lba + 1) * 512)
    };

    // ext4 straight into the disk image at the partition's offset.
    let (off, len) = range(root);
    let ext_opt = format!("offset={off}");
    let size_k = format!("{}k", len / 1024);
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            &ext_opt,
            "-U",
            "6f1c2b4e-8d1a-4b7e-9c3d-2a5e7f9b1c3d",
            "-L",
            "rootfs",
            img.to_str().unwrap(),
            &size_k,
        ],
    );
    // vfat and swap made as files, then copied into their partitions.
    let (off_esp, len_esp) = range(esp);
    let fat = image(dir.path(), "esp.fat", len_esp);
    run(
        "mkfs.vfat",
        &["-n", "ESP", "-i", "1234ABCD", fat.to_str().unwrap()],
    );
    write_into(&img, off_esp, &fat);
    let (off_swap, len_swap) = range(swap);
    let sw = image(dir.path(), "swap.img", len_swap);
    run(
        "mkswap",
        &[
            "-L",
            "swap0",
            "-U",
            "2b6e0c1a-3d4f-4e5a-8b9c-0d1e2f3a4b5c",
            sw.to_str().unwrap(),
        ],
    );
    write_into(&img, off_swap, &sw);

    let g = gpt_of(&img);
    for part in &g.partitions {
        let b = blkid(&img, Some(range(part)));
        let c = &part.content;
        assert_eq!(c.kind.as_str(), b["TYPE"], "slot {}", part.slot);
        assert_eq!(
            c.uuid.as_deref(),
            b.get("UUID").map(String::as_str),
            "slot {}",
            part.slot
        );
        assert_eq!(
            c.label.as_deref(),
            b.get("LABEL").map(String::as_str),
            "slot {}",
            part.slot
        );
    }
    assert_eq!(g.partitions[0].content.uuid.as_deref(), Some("1234-ABCD"));
    assert_eq!(g.partitions[1].content.kind, ContentKind::Ext4);
    assert_eq!(g.partitions[2].content.kind, ContentKind::Swap);
}

#[test]
fn grown_disk_finds_the_backup_at_the_old_end() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(80 * MIB)
        .unwrap();
    let g = gpt_of(&img);
    let old_last = 64 * MIB / 512 - 1;
    assert_eq!(g.primary.unwrap().alternate_lba, old_last);
    assert_eq!(g.backup.unwrap().header_lba, old_last);
}

#[test]
fn corrupt_primary_falls_back_to_the_backup() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    let good = gpt_of(&img);
    patch(&img, 512 + 56, &[0xff]); // a disk GUID byte: the header CRC no longer matches
    let g = gpt_of(&img);
    assert_eq!(g.primary, None);
    assert_eq!(g.backup, good.backup);
    assert_eq!(g.partitions, good.partitions);
    // With the backup broken too it is an error naming the primary header.
    let last = 64 * MIB - 512;
    patch(&img, last + 56, &[0xff]);
    let e = probe(&FileDisk::open(&img)).unwrap_err();
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
    assert!(e.to_string().contains("header CRC-32"), "{e}");
}

#[test]
fn hybrid_mbr_is_reported() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    run("sgdisk", &["-h", "2", img.to_str().unwrap()]);
    let g = gpt_of(&img);
    assert_eq!(g.mbr.kind, ProtectiveMbrKind::Hybrid);
    let types: Vec<u8> = g.mbr.entries.iter().map(|e| e.type_byte).collect();
    assert!(types.contains(&0xee) && types.len() == 2, "{types:?}");
}

#[test]
fn overlapping_and_out_of_range_entries_are_errors() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    // Move partition 4 onto partition 2: rewrite entry 4's first LBA (sgdisk refuses to).
    let mut d = std::fs::read(&img).unwrap();
    let e4 = 1024 + 3 * 128;
    d[e4 + 32..e4 + 40].copy_from_slice(&20000u64.to_le_bytes());
    common::reseal_gpt(&mut d);
    let e = probe(&common::MemDisk {
        data: d.clone(),
        sector_size: 512,
    })
    .unwrap_err();
    assert!(matches!(e, ProbeError::Overlap { .. }), "{e}");
    assert!(
        e.to_string().contains("GPT partition 2") && e.to_string().contains("GPT partition 4"),
        "{e}"
    );
    // Past the end of the disk (and of the usable range).
    d[e4 + 40..e4 + 48].copy_from_slice(&(1u64 << 40).to_le_bytes());
    common::reseal_gpt(&mut d);
    let e = probe(&common::MemDisk {
        data: d.clone(),
        sector_size: 512,
    })
    .unwrap_err();
    assert!(matches!(e, ProbeError::BeyondEnd { .. }), "{e}");
    // An absurd entry count: the valid backup takes over; without it, an error.
    d[e4 + 40..e4 + 48].copy_from_slice(&30000u64.to_le_bytes());
    d[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
    common::reseal_gpt(&mut d);
    let l = probe(&common::MemDisk {
        data: d.clone(),
        sector_size: 512,
    })
    .unwrap();
    let PartitionTable::Gpt(g) = l.table else {
        panic!()
    };
    assert_eq!((g.primary, g.number_of_partition_entries), (None, 128));
    let last = d.len() - 512;
    d[last..].fill(0);
    let e = probe(&common::MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("exceed the 1048576-byte limit"),
        "{e}"
    );
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
}

#[test]
fn gap_and_boot_code_are_noted() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    let l = probe(&FileDisk::open(&img)).unwrap();
    assert!(!l.boot.mbr_boot_code);
    let gap = l.boot.gap.unwrap();
    assert_eq!(
        (gap.start_lba, gap.end_lba, gap.used, gap.scanned_end_lba),
        (34, 2048, None, 2048)
    );
    patch(&img, 100 * 512 + 7, b"core");
    patch(&img, 0, b"\xeb\x63\x90");
    let l = probe(&FileDisk::open(&img)).unwrap();
    assert!(l.boot.mbr_boot_code);
    let used = l.boot.gap.unwrap().used.unwrap();
    assert_eq!((used.first, used.last), (100, 100));
}

#[test]
fn gpt_on_4096_byte_sectors() {
    if !have("sgdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "4k.img", 64 * MIB);
    // sgdisk takes the sector size from the device; build the 4Kn table by hand instead.
    let mut d = std::fs::read(&img).unwrap();
    let ss = 4096usize;
    let sectors = d.len() / ss;
    d[ss..ss + 8].copy_from_slice(b"EFI PART");
    let h = ss;
    let put = |d: &mut Vec<u8>, at: usize, v: &[u8]| d[at..at + v.len()].copy_from_slice(v);
    put(&mut d, h + 8, &0x0001_0000u32.to_le_bytes());
    put(&mut d, h + 12, &92u32.to_le_bytes());
    put(&mut d, h + 24, &1u64.to_le_bytes());
    put(&mut d, h + 32, &(sectors as u64 - 1).to_le_bytes());
    put(&mut d, h + 40, &6u64.to_le_bytes());
    put(&mut d, h + 48, &(sectors as u64 - 6).to_le_bytes());
    put(&mut d, h + 72, &2u64.to_le_bytes());
    put(&mut d, h + 80, &128u32.to_le_bytes());
    put(&mut d, h + 84, &128u32.to_le_bytes());
    let e = 2 * ss;
    put(
        &mut d,
        e,
        &[
            0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
            0x7d, 0xe4,
        ],
    );
    put(&mut d, e + 16, &[7; 16]);
    put(&mut d, e + 32, &256u64.to_le_bytes());
    put(&mut d, e + 40, &511u64.to_le_bytes());
    let crc = common::crc32(&d[e..e + 128 * 128]);
    put(&mut d, h + 88, &crc.to_le_bytes());
    let crc = common::crc32(&d[h..h + 92]);
    put(&mut d, h + 16, &crc.to_le_bytes());
    put(&mut d, 446 + 4, &[0xee]);
    put(&mut d, 510, &[0x55, 0xaa]);
    let l = probe(&common::MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap();
    assert_eq!(l.logical_sector_size, 4096);
    let PartitionTable::Gpt(g) = l.table else {
        panic!()
    };
    assert_eq!(g.partitions.len(), 1);
    assert_eq!(
        g.partitions[0].type_guid.to_string(),
        "0fc63daf-8483-4772-8e79-3d69d8477de4"
    );
    assert_eq!(
        (g.partitions[0].first_lba, g.partitions[0].last_lba),
        (256, 511)
    );
    assert_eq!(g.backup, None);
}
