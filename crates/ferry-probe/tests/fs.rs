//! Filesystems made by the real mkfs tools directly on image files, compared with
//! `blkid -p -o export` (type, UUID, label, FAT version) and dumpe2fs / xfs_db (block size and
//! count).

mod common;

use std::path::Path;

use common::{blkid, have, image, run, FileDisk};
use ferry_format::layout::{Content, ContentKind, PartitionTable};
use ferry_probe::probe;
use ferry_test_support::tools::number_after;

const MIB: u64 = 1 << 20;

fn whole_disk_content(img: &Path) -> Content {
    let l = probe(&FileDisk::open(img)).unwrap();
    assert_eq!(l.table, PartitionTable::None, "{}", img.display());
    l.content.unwrap()
}

/// Type, UUID, label and (for vfat) version agree with blkid.
fn assert_like_blkid(img: &Path, c: &Content) {
    let b = blkid(img, None);
    assert_eq!(c.kind.as_str(), b["TYPE"], "{}", img.display());
    assert_eq!(
        c.uuid.as_deref(),
        b.get("UUID").map(String::as_str),
        "{}",
        img.display()
    );
    assert_eq!(
        c.label.as_deref(),
        b.get("LABEL").map(String::as_str),
        "{}",
        img.display()
    );
    if c.kind == ContentKind::Vfat {
        assert_eq!(c.version.as_deref(), b.get("VERSION").map(String::as_str));
    }
}

fn dumpe2fs_field(img: &Path, name: &str) -> u64 {
    number_after(&run("dumpe2fs", &["-h", img.to_str().unwrap()]), name)
}

#[test]
fn ext2_ext3_ext4() {
    if !(have("mkfs.ext4") && have("dumpe2fs") && have("blkid")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (tool, kind, extra) in [
        ("mkfs.ext2", ContentKind::Ext2, &[][..]),
        ("mkfs.ext3", ContentKind::Ext3, &[][..]),
        ("mkfs.ext4", ContentKind::Ext4, &["-b", "4096"][..]),
        (
            "mkfs.ext4",
            ContentKind::Ext4,
            &["-O", "64bit", "-b", "1024"][..],
        ),
    ] {
        let img = image(dir.path(), "ext.img", 48 * MIB);
        let mut args = vec![
            "-q",
            "-F",
            "-U",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "-L",
            "my root",
        ];
        args.extend_from_slice(extra);
        args.push(img.to_str().unwrap());
        run(tool, &args);
        let c = whole_disk_content(&img);
        assert_eq!(c.kind, kind, "{tool} {extra:?}");
        assert_like_blkid(&img, &c);
        assert_eq!(
            c.uuid.as_deref(),
            Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        assert_eq!(
            u64::from(c.block_size.unwrap()),
            dumpe2fs_field(&img, "Block size:")
        );
        assert_eq!(c.block_count.unwrap(), dumpe2fs_field(&img, "Block count:"));
    }
}

#[test]
fn xfs() {
    if !(have("mkfs.xfs") && have("xfs_db") && have("blkid")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "xfs.img", 320 * MIB);
    run(
        "mkfs.xfs",
        &[
            "-q",
            "-L",
            "xfsroot",
            "-m",
            "uuid=3a9f1c2e-5b7d-4e8f-9a1b-2c3d4e5f6a7b",
            img.to_str().unwrap(),
        ],
    );
    let c = whole_disk_content(&img);
    assert_like_blkid(&img, &c);
    assert_eq!(
        c.uuid.as_deref(),
        Some("3a9f1c2e-5b7d-4e8f-9a1b-2c3d4e5f6a7b")
    );
    let out = run(
        "xfs_db",
        &[
            "-r",
            "-c",
            "sb 0",
            "-c",
            "p blocksize dblocks",
            img.to_str().unwrap(),
        ],
    );
    let field = |name: &str| number_after(&out, name);
    assert_eq!(u64::from(c.block_size.unwrap()), field("blocksize = "));
    assert_eq!(c.block_count.unwrap(), field("dblocks = "));
}

#[test]
fn vfat_12_16_32() {
    if !(have("mkfs.vfat") && have("blkid")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (size, bits, label) in [
        (2 * MIB, "12", "SMALL"),
        (64 * MIB, "16", "ESP"),
        (64 * MIB, "32", "EFI32"),
    ] {
        let img = image(dir.path(), &format!("fat{bits}.img"), size);
        run(
            "mkfs.vfat",
            &[
                "-F",
                bits,
                "-n",
                label,
                "-i",
                "DEADBEEF",
                img.to_str().unwrap(),
            ],
        );
        let c = whole_disk_content(&img);
        assert_like_blkid(&img, &c);
        assert_eq!(c.version.as_deref(), Some(format!("FAT{bits}").as_str()));
        assert_eq!(c.uuid.as_deref(), Some("DEAD-BEEF"));
        assert_eq!(c.label.as_deref(), Some(label));
    }
    // No label at all.
    let img = image(dir.path(), "nolabel.img", 8 * MIB);
    run("mkfs.vfat", &[img.to_str().unwrap()]);
    let c = whole_disk_content(&img);
    assert_like_blkid(&img, &c);
    assert_eq!(c.label, None);
}

#[test]
fn swap() {
    if !(have("mkswap") && have("blkid")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "swap.img", 16 * MIB);
    run(
        "mkswap",
        &[
            "-L",
            "swappy",
            "-U",
            "2b6e0c1a-3d4f-4e5a-8b9c-0d1e2f3a4b5c",
            img.to_str().unwrap(),
        ],
    );
    let c = whole_disk_content(&img);
    assert_like_blkid(&img, &c);
    assert_eq!(c.version.as_deref(), Some("1"));
}

#[test]
fn btrfs_when_available() {
    if !(have("mkfs.btrfs") && have("blkid")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "btrfs.img", 128 * MIB);
    run(
        "mkfs.btrfs",
        &[
            "-q",
            "-L",
            "bt",
            "-U",
            "5d2c1b0a-9f8e-4d7c-a6b5-c4d3e2f1a0b9",
            img.to_str().unwrap(),
        ],
    );
    let c = whole_disk_content(&img);
    assert_like_blkid(&img, &c);
}

#[test]
fn ntfs_when_available() {
    if !(have("mkntfs") && have("blkid")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "ntfs.img", 64 * MIB);
    run(
        "mkntfs",
        &["-q", "-F", "-f", "-L", "Windows", img.to_str().unwrap()],
    );
    let c = whole_disk_content(&img);
    assert_like_blkid(&img, &c);
    assert_eq!(c.label.as_deref(), Some("Windows"));
}

#[test]
fn zeros_and_noise_are_unknown() {
    let zeros = common::MemDisk {
        data: vec![0; 1 << 20],
        sector_size: 512,
    };
    let l = probe(&zeros).unwrap();
    assert_eq!(l.table, PartitionTable::None);
    assert_eq!(l.content.unwrap().kind, ContentKind::Unknown);
    assert_eq!(l.boot.gap, None);
    // Tiny disks, smaller than any superblock offset, and a zero-byte disk.
    for len in [0usize, 1, 511, 512, 1500, 4095] {
        let l = probe(&common::MemDisk {
            data: vec![0xff; len],
            sector_size: 512,
        })
        .unwrap();
        assert_eq!(l.content.unwrap().kind, ContentKind::Unknown, "{len}");
    }
}

/// Found by the `disk_probe` fuzz target: an NTFS boot sector whose sectors-per-cluster byte
/// means 2^63 (0xC1) overflowed `bytes per sector * sectors per cluster`. Such a volume is
/// NTFS without a label, and the used map falls back to "all used", never a panic.
#[test]
fn ntfs_with_an_absurd_cluster_size_is_not_a_panic() {
    for spc in [0x81u8, 0xC1, 0xF4, 0xFF] {
        let mut data = vec![0u8; 1 << 20];
        data[3..11].copy_from_slice(b"NTFS    ");
        data[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes());
        data[0x0d] = spc;
        data[0x28..0x30].copy_from_slice(&2048u64.to_le_bytes());
        data[0x30..0x38].copy_from_slice(&4u64.to_le_bytes());
        data[0x40] = 1;
        data[510] = 0x55;
        data[511] = 0xaa;
        let disk = common::MemDisk {
            data,
            sector_size: 512,
        };
        let l = probe(&disk).unwrap();
        let c = l.content.clone().unwrap();
        assert_eq!(c.kind, ContentKind::Ntfs, "spc byte {spc:#x}");
        assert_eq!(c.label, None);
        let used = ferry_probe::used_map(&disk, &l).unwrap();
        assert_eq!(used.used_bytes(), 1 << 20, "spc byte {spc:#x}: read whole");
    }
}
