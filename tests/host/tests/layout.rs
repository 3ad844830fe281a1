//! Restoring onto different disks: larger (with and without --grow), 4096-byte sectors, smaller
//! (refused before any write), several disks. Results checked with sgdisk, sfdisk and cmp.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const MIB: u64 = 1 << 20;

fn gpt_disk(path: &Path, size: u64) {
    make_image(path, size, 42);
    // Slots 1, 2 and 4 (a gap at 3), names and an attribute bit: all must survive.
    sh(&format!(
        "sgdisk -n 1:2048:+32M -t 1:ef00 -c 1:ESP -n 2:0:+64M -t 2:8300 -c 2:boot -A 2:set:2 -n 4:0:0 -t 4:8300 -c 4:root {} >/dev/null",
        path.display()
    ));
    // An ext4 root with files in the last partition, for --grow to grow.
    let (start, end) = part_range(path, 4, 512);
    let files = path.with_extension("files");
    sh(&format!("mkdir -p {f} && cp -r /usr/share/doc/cpio {f}/ 2>/dev/null; head -c 3M /dev/urandom > {f}/blob", f = files.display()));
    sh(&format!(
        "mkfs.ext4 -q -F -L root -d {} -E offset={start} {} {}k",
        files.display(),
        path.display(),
        (end - start) / 1024
    ));
}

/// `e2fsck -fn` on an ext4 inside an image, through a read-only loop device; returns its size in blocks.
fn fsck_ext4(image: &Path, offset: u64, len: u64) -> u64 {
    let dev = sh(&format!(
        "losetup -f --show -r -o {offset} --sizelimit {len} {}",
        image.display()
    ))
    .trim()
    .to_string();
    let check = Command::new("e2fsck").args(["-fn", &dev]).output().unwrap();
    let blocks = sh(&format!(
        "dumpe2fs -h {dev} 2>/dev/null | awk -F: '/^Block count/ {{print $2}}'"
    ));
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(
        check.status.success(),
        "e2fsck -fn {}: {}",
        image.display(),
        String::from_utf8_lossy(&check.stdout)
    );
    blocks.trim().parse().unwrap()
}

fn sgdisk_info(path: &Path, slot: u32) -> String {
    sh(&format!("sgdisk -i {slot} {}", path.display()))
}

fn field(info: &str, name: &str) -> String {
    info.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{name} not in {info}"))
        .to_string()
}

/// Byte range of partition `slot` as sgdisk reports it.
fn part_range(path: &Path, slot: u32, sector: u64) -> (u64, u64) {
    let info = sgdisk_info(path, slot);
    let num = |n: &str| {
        field(&info, n)
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    (
        num("First sector") * sector,
        (num("Last sector") + 1) * sector,
    )
}

fn cmp_range(a: &Path, a_off: u64, b: &Path, b_off: u64, len: u64) {
    ok(Command::new("cmp")
        .arg("-n")
        .arg(len.to_string())
        .arg(a)
        .arg(b)
        .arg(a_off.to_string())
        .arg(b_off.to_string()));
}

#[test]
fn gpt_onto_a_larger_disk_keeps_guids_and_slots_and_grows_the_last_partition() {
    let a = Appliance::start();
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src.img");
    gpt_disk(&src, 256 * MIB);
    let b = a.backup("gpt", &[&src]);
    let snap = b["snapshot"].as_str().unwrap();

    for grow in [false, true] {
        let dest = w.path().join(format!("big-{grow}.img"));
        sh(&format!("truncate -s {} {}", 384 * MIB, dest.display()));
        let extra: &[&str] = if grow { &["--grow"] } else { &[] };
        let out = ok(a.restore_cmd(snap, &[("src", &dest)]).args(extra));
        assert!(out.contains("\"snapshot\""), "{out}");
        sh(&format!(
            "sgdisk -v {} | grep -q 'No problems found'",
            dest.display()
        ));
        for slot in [1, 2, 4] {
            let (s, d) = (sgdisk_info(&src, slot), sgdisk_info(&dest, slot));
            for f in [
                "Partition GUID code",
                "Partition unique GUID",
                "Partition name",
                "Attribute flags",
                "First sector",
            ] {
                assert_eq!(field(&s, f), field(&d, f), "slot {slot} {f}");
            }
        }
        assert!(
            sgdisk_info(&dest, 3).contains("does not exist"),
            "slot 3 must stay empty"
        );
        let disk_guid = |p: &Path| {
            sh(&format!(
                "sgdisk -p {} | grep 'Disk identifier'",
                p.display()
            ))
        };
        assert_eq!(disk_guid(&src), disk_guid(&dest));
        let (start, end) = part_range(&dest, 4, 512);
        let (_, src_end) = part_range(&src, 4, 512);
        let src_blocks = fsck_ext4(&src, start, src_end - start);
        let blocks = fsck_ext4(&dest, start, end - start);
        if grow {
            assert!(
                end > 380 * MIB && end <= 384 * MIB - 33 * 512,
                "root not grown to the end: {end}"
            );
            assert!(
                blocks * 4096 > (end - start) - 4 * MIB,
                "ext4 not grown: {blocks} blocks in {} bytes",
                end - start
            );
            assert!(out.contains("\"grown\": true"), "{out}");
        } else {
            assert_eq!(end, src_end);
            assert_eq!(blocks, src_blocks);
            // Every partition's bytes are the source's.
            for slot in [1, 2, 4] {
                let (s0, s1) = part_range(&src, slot, 512);
                cmp_range(&src, s0, &dest, s0, s1 - s0);
            }
        }
    }
}

#[test]
fn mbr_with_logical_partitions_grows_the_last_logical_and_its_container() {
    let a = Appliance::start();
    let w = tempfile::tempdir().unwrap();
    let src = w.path().join("src.img");
    make_image(&src, 256 * MIB, 9);
    sh(&format!(
        "printf 'label: dos\\nlabel-id: 0x1234abcd\\nstart=2048, size=64MiB, type=83, bootable\\ntype=5\\nsize=32MiB, type=82\\ntype=83\\n' | sfdisk -q {}",
        src.display()
    ));
    // The last logical partition holds ext4, so --grow has something to grow.
    let j: serde_json::Value =
        serde_json::from_str(&sh(&format!("sfdisk --json {}", src.display()))).unwrap();
    let last = j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let (start, size) = (
        last["start"].as_u64().unwrap() * 512,
        last["size"].as_u64().unwrap() * 512,
    );
    sh(&format!(
        "mkfs.ext4 -q -F -E offset={start} {} {}k",
        src.display(),
        size / 1024
    ));
    let b = a.backup("mbr", &[&src]);
    let dest = w.path().join("big.img");
    sh(&format!("truncate -s {} {}", 512 * MIB, dest.display()));
    a.restore(
        b["snapshot"].as_str().unwrap(),
        &[("src", &dest)],
        &["--grow"],
    );
    sh(&format!("sfdisk -V {}", dest.display()));
    let j = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&sh(&format!("sfdisk --json {}", p.display()))).unwrap()
    };
    let (s, d) = (j(&src), j(&dest));
    assert_eq!(s["partitiontable"]["id"], d["partitiontable"]["id"]);
    let parts = |v: &serde_json::Value| {
        v["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .clone()
    };
    let (sp, dp) = (parts(&s), parts(&d));
    assert_eq!(sp.len(), dp.len());
    let sectors = 512 * MIB / 512;
    for (i, (x, y)) in sp.iter().zip(&dp).enumerate() {
        assert_eq!(x["start"], y["start"], "partition {i}");
        assert_eq!(x["type"], y["type"]);
        assert_eq!(x["bootable"], y["bootable"]);
    }
    let end = |p: &serde_json::Value| p["start"].as_u64().unwrap() + p["size"].as_u64().unwrap();
    let last = dp.last().unwrap();
    assert!(
        end(last) > sectors - 2048 && end(last) <= sectors,
        "last logical not grown: {last}"
    );
    let ext = dp.iter().find(|p| p["type"] == "5").unwrap();
    assert!(
        end(ext) >= end(last),
        "extended container must cover the grown logical"
    );
    // Primary partition data is untouched.
    let first = &sp[0];
    cmp_range(
        &src,
        first["start"].as_u64().unwrap() * 512,
        &dest,
        first["start"].as_u64().unwrap() * 512,
        first["size"].as_u64().unwrap() * 512,
    );
}

/// A loop device over a fresh sparse file; detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(file: &Path, size: u64, sector: u32) -> Option<Loop> {
        sh(&format!("truncate -s {size} {}", file.display()));
        let out = Command::new("losetup")
            .args(["-f", "--show", "--sector-size", &sector.to_string()])
            .arg(file)
            .output()
            .ok()?;
        out.status.success().then(|| Loop {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        })
    }
    fn path(&self) -> &Path {
        Path::new(&self.dev)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

#[test]
fn block_devices_with_4096_byte_sectors_and_a_too_small_target() {
    let a = Appliance::start();
    let w = tempfile::tempdir().unwrap();
    let Some(src) = Loop::new(&w.path().join("src"), 128 * MIB, 4096) else {
        panic!("losetup failed: loop devices are needed for this test (run as root)");
    };
    sh(&format!(
        "dd if=/dev/urandom of={} bs=1M seek=1 count=40 status=none conv=fsync",
        src.dev
    ));
    sh(&format!(
        "sgdisk -n 1:256:+16M -t 1:ef00 -c 1:ESP -n 2:0:+32M -c 2:data -n 4:0:0 -c 4:root {} >/dev/null",
        src.dev
    ));
    let b = a.backup("fourk", &[src.path()]);
    let snap = b["snapshot"].as_str().unwrap();
    let manifest = a.manifest_json(snap);
    assert!(
        manifest.contains("\"logical_sector_size\": 4096"),
        "{manifest}"
    );
    let disk = Path::new(&src.dev)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // Larger 4Kn block device: GUIDs and slots kept, sgdisk -v clean.
    let big = Loop::new(&w.path().join("big"), 192 * MIB, 4096).unwrap();
    a.restore(snap, &[(&disk, big.path())], &["--grow"]);
    sh(&format!(
        "sgdisk -v {} | grep -q 'No problems found'",
        big.dev
    ));
    for slot in [1, 2, 4] {
        let (s, d) = (sgdisk_info(src.path(), slot), sgdisk_info(big.path(), slot));
        assert_eq!(
            field(&s, "Partition unique GUID"),
            field(&d, "Partition unique GUID")
        );
        assert_eq!(field(&s, "First sector"), field(&d, "First sector"));
    }
    let (s0, s1) = part_range(src.path(), 2, 4096);
    cmp_range(src.path(), s0, big.path(), s0, s1 - s0);

    // A smaller device is refused before a single write, naming the size needed.
    let small = Loop::new(&w.path().join("small"), 64 * MIB, 4096).unwrap();
    let e = fails(&mut a.restore_cmd(snap, &[(&disk, small.path())]));
    assert!(
        e.contains("needs at least") && e.contains(&(128 * MIB).to_string()),
        "{e}"
    );
    let zeros = sh(&format!(
        "cmp -n {} {} /dev/zero 2>&1 && echo untouched || true",
        64 * MIB,
        small.dev
    ));
    assert!(
        zeros.contains("untouched"),
        "the small target was written: {zeros}"
    );
}

#[test]
fn a_two_disk_snapshot_maps_onto_two_targets() {
    let a = Appliance::start();
    let w = tempfile::tempdir().unwrap();
    let (d1, d2) = (w.path().join("one.img"), w.path().join("two.img"));
    gpt_disk(&d1, 128 * MIB);
    make_image(&d2, 64 * MIB, 77);
    let b = a.backup("pair", &[&d1, &d2]);
    let snap = b["snapshot"].as_str().unwrap();
    let (t1, t2) = (w.path().join("t1.img"), w.path().join("t2.img"));
    let sum = a.restore(snap, &[("two", &t2), ("one", &t1)], &[]);
    assert_eq!(sum["disks"].as_array().unwrap().len(), 2);
    cmp(&d1, &t1);
    cmp(&d2, &t2);
}
