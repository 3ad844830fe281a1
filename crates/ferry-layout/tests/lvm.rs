//! LVM2: a real PV (pvcreate/vgcreate on a loop device; LVs added with vgcfgrestore because
//! lvcreate needs device-mapper, which this host lacks) in the last logical partition of an MBR
//! disk, as Debian's guided LVM install lays it out. Restored onto a larger disk with grow, the
//! PV is checked by pvck, vgck, pvs and lvs.

mod common;

use std::path::{Path, PathBuf};

use common::{
    apply, have, image, output, restore_copy, run, run_stdin, source, target, write_into, Loop,
    MIB, NO_BACKUP,
};
use ferry_layout::{plan, Action, DiskMapping, GrowLv, GrowTarget, Policy};

const PART_START: u64 = 36864; // sectors: the logical partition holding the PV
const DISK: u64 = 64 * MIB;
const EXTENT: u64 = 4 * MIB;

fn lvm(args: &[&str]) -> String {
    run(
        args[0],
        &[&["--config", NO_BACKUP][..], &args[1..]].concat(),
    )
}

/// LVs: root (ext4, PV extents 0-3), swap (4-5), data (ext4, 6-10, up to the PV's end).
const LVS: &str = r#"
logical_volumes {
root {
id = "rootLV-aaaa-bbbb-cccc-dddd-eeee-ffffff"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 4
type = "striped"
stripe_count = 1
stripes = ["pv0", 0]
}
}
swap {
id = "swapLV-aaaa-bbbb-cccc-dddd-eeee-ffffff"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 2
type = "striped"
stripe_count = 1
stripes = ["pv0", 4]
}
}
data {
id = "dataLV-aaaa-bbbb-cccc-dddd-eeee-ffffff"
status = ["READ", "WRITE", "VISIBLE"]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 5
type = "striped"
stripe_count = 1
stripes = ["pv0", 6]
}
}
}
}
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    vg: String,
    pv_uuid: String,
    vg_uuid: String,
}

/// The source disk; `None` when loop devices or LVM do not work here.
fn fixture(tag: &str) -> Option<Fixture> {
    if !(have("losetup")
        && have("pvcreate")
        && have("sfdisk")
        && have("mkfs.ext4")
        && have("mkswap"))
    {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = image(dir.path(), "src.img", DISK);
    let script = "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=16M, type=83\nstart=34816, type=5\nstart=36864, type=8e\n";
    run_stdin("sfdisk", &["-q", src.to_str().unwrap()], Some(script));
    let (off, len) = (PART_START * 512, DISK - PART_START * 512);
    let vg = format!("ferrylayout{}{tag}", std::process::id());
    let (pv_uuid, vg_uuid);
    {
        let dev = Loop::attach(
            &src,
            &["-o", &off.to_string(), "--sizelimit", &len.to_string()],
        )?;
        lvm(&["pvcreate", "-q", &dev.0]);
        lvm(&["vgcreate", "-q", &vg, &dev.0]);
        let backup = dir.path().join("vg.txt");
        lvm(&["vgcfgbackup", "-q", "-f", backup.to_str().unwrap(), &vg]);
        let text = std::fs::read_to_string(&backup).unwrap();
        let end = text.trim_end().rfind('}').unwrap();
        std::fs::write(&backup, format!("{}{LVS}", &text[..end])).unwrap();
        lvm(&["vgcfgrestore", "-q", "-f", backup.to_str().unwrap(), &vg]);
        pv_uuid = lvm(&["pvs", "--noheadings", "-o", "pv_uuid", &dev.0])
            .trim()
            .to_string();
        vg_uuid = lvm(&["vgs", "--noheadings", "-o", "vg_uuid", &vg])
            .trim()
            .to_string();
    }
    let pe_start = off + MIB;
    for (name, extent, extents) in [("root", 0, 4), ("data", 6, 5)] {
        let fs = image(dir.path(), name, extents * EXTENT);
        run("mkfs.ext4", &["-q", "-F", "-L", name, fs.to_str().unwrap()]);
        write_into(&src, pe_start + extent * EXTENT, &fs);
    }
    let sw = image(dir.path(), "swap", 2 * EXTENT);
    run("mkswap", &[sw.to_str().unwrap()]);
    write_into(&src, pe_start + 4 * EXTENT, &sw);
    Some(Fixture {
        _dir: dir,
        src,
        vg,
        pv_uuid,
        vg_uuid,
    })
}

fn restore(f: &Fixture, name: &str, size: u64, grow_lv: GrowLv) -> (PathBuf, DiskMapping) {
    let dst = restore_copy(&f.src, name, size);
    let policy = Policy {
        grow: true,
        grow_lv,
        ..Policy::default()
    };
    let p = plan(
        &[source("sda", &f.src)],
        &[target(&dst, size, 512)],
        &policy,
    )
    .unwrap();
    println!("{p}");
    let m = p.mappings.into_iter().next().unwrap();
    apply(&dst, &m);
    (dst, m)
}

/// The PV on the target's grown partition, checked by LVM: returns (`pvs` row, `lvs` rows).
fn check_with_lvm(f: &Fixture, dst: &Path, m: &DiskMapping) -> (String, String) {
    let Action::Adapt(a) = &m.action else {
        panic!()
    };
    let part = a.partition.as_ref().unwrap();
    let len = (part.new_last_lba + 1 - part.first_lba) * 512;
    let dev = Loop::attach(
        dst,
        &[
            "-o",
            &(part.first_lba * 512).to_string(),
            "--sizelimit",
            &len.to_string(),
        ],
    )
    .unwrap();
    let pvck = output(
        "pvck",
        &["--config", NO_BACKUP, "--dump", "headers", &dev.0],
        None,
    );
    let text =
        String::from_utf8_lossy(&pvck.stdout).to_string() + &String::from_utf8_lossy(&pvck.stderr);
    assert!(
        pvck.status.success() && !text.contains("CHECK"),
        "pvck:\n{text}"
    );
    assert!(
        text.contains("mda_header_1"),
        "pvck found no metadata area:\n{text}"
    );
    println!("{text}");
    lvm(&["pvck", &dev.0]);
    lvm(&["vgck", &f.vg]);
    let vgs = lvm(&[
        "vgs",
        "--noheadings",
        "--separator",
        ";",
        "-o",
        "vg_uuid,vg_seqno",
        &f.vg,
    ]);
    let pvs = lvm(&[
        "pvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "--separator",
        ";",
        "-o",
        "pv_uuid,dev_size,pv_pe_count,pv_pe_alloc_count",
        &dev.0,
    ]);
    let lvs = lvm(&[
        "lvs",
        "--noheadings",
        "--separator",
        ";",
        "-o",
        "lv_name,lv_uuid,seg_start_pe,seg_size_pe,seg_pe_ranges",
        &f.vg,
    ]);
    let pv = a.pv.as_ref().unwrap();
    assert_eq!(vgs.trim(), format!("{};{}", f.vg_uuid, pv.seqno));
    assert_eq!(pv.pv_uuid.to_string(), f.pv_uuid);
    let alloc = pv.new_pe_count; // every extent is used after the grow
    assert_eq!(
        pvs.trim(),
        format!("{};{len};{};{alloc}", f.pv_uuid, pv.new_pe_count)
    );
    (pvs, lvs)
}

fn lv_rows(lvs: &str) -> Vec<String> {
    lvs.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn pv_and_last_lv_grow_in_place() {
    let Some(f) = fixture("a") else { return };
    let (dst, m) = restore(&f, "auto.img", 96 * MIB, GrowLv::Auto);
    let Action::Adapt(a) = &m.action else {
        panic!()
    };
    let (pv, lv) = (a.pv.as_ref().unwrap(), a.lv.as_ref().unwrap());
    assert_eq!((pv.old_pe_count, pv.new_pe_count), (11, 19));
    assert_eq!(
        (
            lv.lv.as_str(),
            lv.old_extents,
            lv.new_extents,
            lv.new_segment
        ),
        ("data", 5, 13, false)
    );
    assert_eq!(
        m.grow_fs.as_ref().unwrap().on,
        GrowTarget::Lv {
            vg: f.vg.clone(),
            lv: "data".into()
        }
    );
    let (_, lvs) = check_with_lvm(&f, &dst, &m);
    let rows = lv_rows(&lvs);
    assert!(
        rows.iter().any(
            |r| r.starts_with("data;dataLV-aaaa-bbbb-cccc-dddd-eeee-ffffff;0;13;")
                && r.ends_with(":6-18")
        ),
        "{lvs}"
    );
    assert!(
        rows.iter().any(
            |r| r.starts_with("root;rootLV-aaaa-bbbb-cccc-dddd-eeee-ffffff;0;4;")
                && r.ends_with(":0-3")
        ),
        "{lvs}"
    );
    // ferry-probe reads the new metadata back and still finds the filesystems in the LVs.
    let layout = common::probe(&dst);
    let found = format!("{layout:?}");
    assert!(found.contains(&format!("seqno: {}", pv.seqno)) && found.contains("pe_count: 19"));
}

#[test]
fn named_lv_grows_by_a_new_segment() {
    let Some(f) = fixture("b") else { return };
    let named = GrowLv::Named {
        vg: f.vg.clone(),
        lv: "root".into(),
    };
    let (dst, m) = restore(&f, "named.img", 96 * MIB, named);
    let Action::Adapt(a) = &m.action else {
        panic!()
    };
    let lv = a.lv.as_ref().unwrap();
    assert_eq!(
        (lv.old_extents, lv.new_extents, lv.new_segment),
        (4, 12, true)
    );
    let (_, lvs) = check_with_lvm(&f, &dst, &m);
    let rows = lv_rows(&lvs);
    assert!(
        rows.iter().any(
            |r| r.starts_with("root;rootLV-aaaa-bbbb-cccc-dddd-eeee-ffffff;4;8;")
                && r.ends_with(":11-18")
        ),
        "{lvs}"
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("data;dataLV-aaaa-bbbb-cccc-dddd-eeee-ffffff;0;5;")),
        "{lvs}"
    );
}
