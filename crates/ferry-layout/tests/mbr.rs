//! MBR disks made by sfdisk (primary, extended and logical partitions), restored onto a larger
//! disk with grow, then checked by sfdisk.

mod common;

use std::path::{Path, PathBuf};

use common::{apply, have, image, restore_copy, run, run_stdin, source, target, write_into, MIB};
use ferry_layout::{plan, Action, GrowTarget, Policy};

/// `sfdisk --json` partitions as (node suffix, start, size, type).
fn parts(img: &Path) -> Vec<(String, u64, u64, String)> {
    let json = run("sfdisk", &["--json", img.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["partitiontable"]["id"], "0x1234abcd");
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            (
                node[node.len() - 1..].to_string(),
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn verify_clean(img: &Path) {
    let out = run("sfdisk", &["-V", img.to_str().unwrap()]);
    assert!(out.contains("No errors detected"), "sfdisk -V:\n{out}");
}

/// A 64 MiB disk from an sfdisk script, with ext4 written into partition `fs_at` (start, len
/// in sectors).
fn make(dir: &Path, script: &str, fs_at: (u64, u64)) -> PathBuf {
    let img = image(dir, "src.img", 64 * MIB);
    run_stdin("sfdisk", &["-q", img.to_str().unwrap()], Some(script));
    let fs = image(dir, "fs.ext4", fs_at.1 * 512);
    run("mkfs.ext4", &["-q", "-F", fs.to_str().unwrap()]);
    write_into(&img, fs_at.0 * 512, &fs);
    img
}

#[test]
fn last_logical_partition_and_extended_container_grow() {
    if !(have("sfdisk") && have("mkfs.ext4")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = "label: dos\nlabel-id: 0x1234abcd\n\
        start=2048, size=16M, type=83, bootable\n\
        start=34816, type=5\n\
        start=36864, size=8M, type=82\n\
        start=55296, type=83\n";
    let src = make(dir.path(), script, (55296, 131072 - 55296));
    let before = parts(&src);
    let size = 96 * MIB;
    let dst = restore_copy(&src, "dst.img", size);
    let policy = Policy {
        grow: true,
        ..Policy::default()
    };
    let p = plan(&[source("sda", &src)], &[target(&dst, size, 512)], &policy).unwrap();
    println!("{p}");
    let m = &p.mappings[0];
    apply(&dst, m);
    verify_clean(&dst);
    let after = parts(&dst);
    let end = size / 512;
    assert_eq!(after.len(), 4);
    assert_eq!(after[0], before[0]);
    assert_eq!(
        after[1],
        ("2".into(), 34816, end - 34816, "5".into()),
        "extended grown"
    );
    assert_eq!(after[2], before[2]);
    assert_eq!(
        after[3],
        ("6".into(), 55296, end - 55296, "83".into()),
        "last logical grown"
    );
    let Action::Adapt(a) = &m.action else {
        panic!()
    };
    assert_eq!(
        a.partition.as_ref().unwrap().extended,
        Some((2, 131072 - 34816, end - 34816))
    );
    assert_eq!(
        m.grow_fs.as_ref().unwrap().on,
        GrowTarget::Partition { slot: 6 }
    );
    assert_eq!(m.grow_fs.as_ref().unwrap().new_size, (end - 55296) * 512);
    // The EBR chain reads back the same way through ferry-probe.
    assert_eq!(common::probe(&dst).table, {
        let mut l = common::probe(&src);
        if let ferry_format::layout::PartitionTable::Mbr(m) = &mut l.table {
            m.partitions[1].sector_count = end - 34816;
            m.partitions[3].sector_count = end - 55296;
        }
        l.table
    });
}

#[test]
fn last_primary_partition_grows_and_nothing_changes_without_grow() {
    if !(have("sfdisk") && have("mkfs.ext4")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script =
        "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=16M, type=83\nstart=34816, type=83\n";
    let src = make(dir.path(), script, (34816, 131072 - 34816));
    let size = 80 * MIB + 4096;
    let dst = restore_copy(&src, "dst.img", size);
    let p = plan(
        &[source("sda", &src)],
        &[target(&dst, size, 512)],
        &Policy::default(),
    )
    .unwrap();
    assert!(
        p.mappings[0].patches.is_empty(),
        "no grow: the MBR stays as it is"
    );
    let policy = Policy {
        grow: true,
        ..Policy::default()
    };
    let p = plan(&[source("sda", &src)], &[target(&dst, size, 512)], &policy).unwrap();
    apply(&dst, &p.mappings[0]);
    verify_clean(&dst);
    let after = parts(&dst);
    assert_eq!(
        after[1],
        ("2".into(), 34816, 80 * MIB / 512 - 34816, "83".into())
    );
}
