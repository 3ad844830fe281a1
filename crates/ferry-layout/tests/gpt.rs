//! GPT disks made by sgdisk, restored onto larger disks (and across sector sizes) with the
//! plan's patches, then checked by sgdisk itself.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{apply, have, image, restore_copy, run, source, target, write_into, Loop, MIB};
use ferry_format::layout::PartitionTable;
use ferry_layout::{plan, Action, DiskMapping, GrowTarget, Mapping, Policy};
use ferry_test_support::tools::sgdisk_info;

const DISK_GUID: &str = "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D";

/// sgdisk arguments for: ESP in slot 1, root in slot 2, data (ext4) in slot 4 ending at
/// `end` (an sgdisk end: "+38M", or "0" for the last usable sector); slot 3 unused; names, a
/// custom GUID and attributes.
fn sgdisk_layout(dev: &str, end: &str) -> Vec<String> {
    let p4 = format!("4:0:{end}");
    [
        "-o",
        "-U",
        DISK_GUID,
        "-n",
        "1:0:+8M",
        "-t",
        "1:ef00",
        "-c",
        "1:EFI System",
        "-A",
        "1:set:0",
        "-u",
        "1:11111111-2222-4333-8444-555555555555",
        "-n",
        "2:0:+16M",
        "-t",
        "2:8300",
        "-c",
        "2:root",
        "-n",
        &p4,
        "-t",
        "4:8300",
        "-c",
        "4:data \u{e9}t\u{e9}",
        "-A",
        "4:set:2",
        "-A",
        "4:set:60",
        dev,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn sgdisk(args: &[String]) -> String {
    run(
        "sgdisk",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
}

/// A 64 MiB GPT image with 512-byte sectors and ext4 in slot 4.
fn make_512(dir: &Path, end: &str) -> PathBuf {
    let img = image(dir, "src.img", 64 * MIB);
    sgdisk(&sgdisk_layout(img.to_str().unwrap(), end));
    put_ext4(dir, &img, 4, 512);
    img
}

/// Put a fresh ext4 into partition `slot` (so the planner sees a growable filesystem).
fn put_ext4(dir: &Path, img: &Path, slot: u32, ss: u64) {
    let layout = common::probe(img);
    let PartitionTable::Gpt(g) = layout.table else {
        panic!("no GPT")
    };
    let p = g.partitions.iter().find(|p| p.slot == slot).unwrap();
    let len = (p.last_lba - p.first_lba + 1) * ss;
    let fs = image(dir, "fs.ext4", len);
    run(
        "mkfs.ext4",
        &["-q", "-F", "-b", "4096", fs.to_str().unwrap()],
    );
    write_into(img, p.first_lba * ss, &fs);
}

fn first_number(s: &str) -> u64 {
    s.split_whitespace().next().unwrap().parse().unwrap()
}

fn verify_clean(dev: &str) {
    let v = run("sgdisk", &["-v", dev]);
    assert!(v.contains("No problems found"), "sgdisk -v {dev}:\n{v}");
}

fn mapping(src: &Path, tgt: &Path, size: u64, ss: u32, grow: bool) -> DiskMapping {
    let policy = Policy {
        grow,
        mapping: Mapping::ByOrder,
        ..Policy::default()
    };
    let p = plan(&[source("sda", src)], &[target(tgt, size, ss)], &policy).unwrap();
    println!("{p}");
    p.mappings.into_iter().next().unwrap()
}

/// The properties that must survive: GUIDs, names, attributes, slots, byte offsets.
fn same_partitions(src: &str, src_ss: u64, dst: &str, dst_ss: u64, grown: Option<u32>) {
    for slot in [1, 2, 4] {
        let (a, b) = (sgdisk_info(src, slot), sgdisk_info(dst, slot));
        for key in [
            "Partition GUID code",
            "Partition unique GUID",
            "Partition name",
            "Attribute flags",
        ] {
            assert_eq!(a[key], b[key], "slot {slot} {key}");
        }
        assert_eq!(
            first_number(&a["First sector"]) * src_ss,
            first_number(&b["First sector"]) * dst_ss
        );
        if grown != Some(slot) {
            let end = |i: &HashMap<String, String>, ss| (first_number(&i["Last sector"]) + 1) * ss;
            assert_eq!(end(&a, src_ss), end(&b, dst_ss), "slot {slot} end");
        }
    }
    assert!(run("sgdisk", &["-i", "3", dst]).contains("does not exist"));
    let guid = |d: &str| {
        run("sgdisk", &["-p", d]).lines().find_map(|l| {
            l.strip_prefix("Disk identifier (GUID): ")
                .map(str::to_string)
        })
    };
    assert_eq!(guid(dst).unwrap(), DISK_GUID);
}

/// "First usable sector is X, last usable sector is Y" from `sgdisk -p`.
fn usable(dev: &str) -> (u64, u64) {
    let p = run("sgdisk", &["-p", dev]);
    let line = p
        .lines()
        .find(|l| l.starts_with("First usable sector is"))
        .unwrap();
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn larger_disk_without_grow_moves_the_backup_header() {
    if !(have("sgdisk") && have("mkfs.ext4")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = make_512(dir.path(), "0");
    let size = 96 * MIB;
    let dst = restore_copy(&src, "dst.img", size);
    let m = mapping(&src, &dst, size, 512, false);
    let Action::Adapt(a) = &m.action else {
        panic!("{:?}", m.action)
    };
    assert!(a.partition.is_none() && m.grow_fs.is_none());
    apply(&dst, &m);
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    verify_clean(d);
    same_partitions(s, 512, d, 512, None);
    assert_eq!(usable(d).1, size / 512 - 34);
    // ferry-probe agrees: the backup is at the new end and matches the primary.
    let PartitionTable::Gpt(g) = common::probe(&dst).table else {
        panic!()
    };
    assert_eq!(g.backup.unwrap().header_lba, size / 512 - 1);
}

#[test]
fn larger_disk_with_grow_extends_the_last_partition() {
    if !(have("sgdisk") && have("mkfs.ext4")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = make_512(dir.path(), "0");
    let size = 96 * MIB + 7 * 512; // not a MiB multiple: the end is aligned down
    let dst = restore_copy(&src, "dst.img", size);
    let m = mapping(&src, &dst, size, 512, true);
    apply(&dst, &m);
    let (s, d) = (src.to_str().unwrap(), dst.to_str().unwrap());
    verify_clean(d);
    same_partitions(s, 512, d, 512, Some(4));
    let last = first_number(&sgdisk_info(d, 4)["Last sector"]);
    assert_eq!(
        (last + 1) * 512,
        96 * MIB - MIB,
        "ends at the last MiB boundary before the backup"
    );
    let fs = m.grow_fs.as_ref().unwrap();
    assert_eq!(fs.on, GrowTarget::Partition { slot: 4 });
    // The filesystem grows into it as the rescue image will do it.
    if have("resize2fs") && have("losetup") {
        let first = first_number(&sgdisk_info(d, 4)["First sector"]);
        let off = (first * 512).to_string();
        let len = ((last + 1 - first) * 512).to_string();
        assert_eq!(fs.new_size.to_string(), len);
        if let Some(dev) = Loop::attach(&dst, &["-o", &off, "--sizelimit", &len]) {
            run("e2fsck", &["-fy", &dev.0]);
            run("resize2fs", &[&dev.0]);
            run("e2fsck", &["-fn", &dev.0]);
        }
    }
    // Applying the patches again changes nothing (a resumed restore re-applies them).
    let before = std::fs::read(&dst).unwrap();
    apply(&dst, &m);
    assert!(before == std::fs::read(&dst).unwrap());
}

#[test]
fn gpt_on_4096_byte_sectors_grows() {
    if !(have("sgdisk") && have("losetup") && have("mkfs.ext4")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = image(dir.path(), "src4k.img", 64 * MIB);
    {
        let Some(dev) = Loop::attach(&src, &["--sector-size", "4096"]) else {
            return;
        };
        sgdisk(&sgdisk_layout(&dev.0, "0"));
    }
    put_ext4(dir.path(), &src, 4, 4096);
    let size = 96 * MIB;
    let dst = restore_copy(&src, "dst4k.img", size);
    let m = mapping(&src, &dst, size, 4096, true);
    assert_eq!(m.source_sector_size, 4096);
    apply(&dst, &m);
    let a = Loop::attach(&src, &["--sector-size", "4096", "-r"]).unwrap();
    let b = Loop::attach(&dst, &["--sector-size", "4096"]).unwrap();
    verify_clean(&b.0);
    same_partitions(&a.0, 4096, &b.0, 4096, Some(4));
    assert_eq!(usable(&b.0).1, size / 4096 - 6);
    assert_eq!(
        (first_number(&sgdisk_info(&b.0, 4)["Last sector"]) + 1) * 4096,
        95 * MIB
    );
}

#[test]
fn gpt_converts_from_512_to_4096_byte_sectors() {
    if !(have("sgdisk") && have("losetup") && have("mkfs.ext4")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Ending at the last usable 512-byte sector, slot 4 cannot be expressed in 4 KiB sectors.
    let unaligned = make_512(dir.path(), "0");
    let err = plan(
        &[source("sda", &unaligned)],
        &[target(&unaligned, 80 * MIB, 4096)],
        &Policy::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("partition 4 ends at byte") && err.contains("not a multiple of 4096"),
        "{err}"
    );

    let src = make_512(dir.path(), "+38M");

    let size = 80 * MIB;
    let dst = restore_copy(&src, "dst.img", size);
    let m = mapping(&src, &dst, size, 4096, true);
    apply(&dst, &m);
    let b = Loop::attach(&dst, &["--sector-size", "4096"]).unwrap();
    verify_clean(&b.0);
    same_partitions(src.to_str().unwrap(), 512, &b.0, 4096, Some(4));
    assert_eq!(usable(&b.0), (6, size / 4096 - 6));
}

#[test]
fn gpt_converts_from_4096_to_512_byte_sectors() {
    if !(have("sgdisk") && have("losetup")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = image(dir.path(), "src4k.img", 64 * MIB);
    {
        let Some(dev) = Loop::attach(&src, &["--sector-size", "4096"]) else {
            return;
        };
        sgdisk(&sgdisk_layout(&dev.0, "0"));
    }
    let dst = restore_copy(&src, "dst.img", 64 * MIB);
    let m = mapping(&src, &dst, 64 * MIB, 512, false);
    apply(&dst, &m);
    let a = Loop::attach(&src, &["--sector-size", "4096", "-r"]).unwrap();
    verify_clean(dst.to_str().unwrap());
    same_partitions(&a.0, 4096, dst.to_str().unwrap(), 512, None);
}
