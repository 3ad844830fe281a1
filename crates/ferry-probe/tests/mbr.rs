//! MBR disks with an extended partition and logical partitions made by sfdisk, compared with
//! `sfdisk --json`; broken EBR chains and tables made by patching them.

mod common;

use std::path::{Path, PathBuf};

use common::{blkid, have, image, run, run_stdin, FileDisk, MemDisk};
use ferry_format::layout::{Mbr, MbrPartitionKind, PartitionTable};
use ferry_probe::{probe, ProbeError};

const SCRIPT: &str = "label: dos
label-id: 0x12345678
start=2048, size=8192, type=83, bootable
start=10240, size=40960, type=5
start=12288, size=8192, type=83
start=22528, size=16384, type=82
";

fn make_disk(dir: &Path) -> PathBuf {
    let img = image(dir, "mbr.img", 32 << 20);
    run_stdin("sfdisk", &["-q", img.to_str().unwrap()], Some(SCRIPT));
    img
}

fn mbr_of(disk: &dyn ferry_image::DiskSource) -> Mbr {
    match probe(disk).unwrap().table {
        PartitionTable::Mbr(m) => m,
        other => panic!("expected an MBR, got {other:?}"),
    }
}

#[test]
fn mbr_matches_sfdisk_json() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    let m = mbr_of(&FileDisk::open(&img));
    let json: serde_json::Value =
        serde_json::from_str(&run("sfdisk", &["--json", img.to_str().unwrap()])).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(
        format!("{:#010x}", m.disk_signature),
        table["id"].as_str().unwrap()
    );
    let expected = table["partitions"].as_array().unwrap();
    assert_eq!(m.partitions.len(), expected.len());
    for (p, e) in m.partitions.iter().zip(expected) {
        let node = e["node"].as_str().unwrap();
        let slot: u32 = node
            .trim_start_matches(img.to_str().unwrap())
            .parse()
            .unwrap();
        assert_eq!(p.slot, slot);
        assert_eq!(p.start_lba, e["start"].as_u64().unwrap(), "{node}");
        assert_eq!(p.sector_count, e["size"].as_u64().unwrap(), "{node}");
        assert_eq!(
            format!("{:x}", p.type_byte),
            e["type"].as_str().unwrap(),
            "{node}"
        );
        assert_eq!(
            p.bootable,
            e["bootable"].as_bool().unwrap_or(false),
            "{node}"
        );
    }
    let kinds: Vec<_> = m.partitions.iter().map(|p| p.kind).collect();
    use MbrPartitionKind::*;
    assert_eq!(kinds, [Primary, Extended, Logical, Logical]);
    // Each logical partition's EBR is inside the extended partition, before its data, and
    // carries the 0x55AA signature.
    let data = std::fs::read(&img).unwrap();
    for p in &m.partitions[2..] {
        let ebr = p.ebr_lba.unwrap();
        assert!(ebr >= 10240 && ebr < p.start_lba, "{p:?}");
        assert_eq!(&data[ebr as usize * 512 + 510..][..2], &[0x55, 0xaa]);
    }
    assert_eq!(m.partitions[1].content, None);
    let l = probe(&FileDisk::open(&img)).unwrap();
    let gap = l.boot.gap.unwrap();
    assert_eq!((gap.start_lba, gap.end_lba, gap.used), (1, 2048, None));
}

#[test]
fn logical_partition_contents_match_blkid() {
    if !(have("sfdisk") && have("mkfs.ext4") && have("blkid")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = make_disk(dir.path());
    let opt = format!("offset={}", 12288 * 512);
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            &opt,
            "-L",
            "logical5",
            img.to_str().unwrap(),
            "4096k",
        ],
    );
    let m = mbr_of(&FileDisk::open(&img));
    let p5 = &m.partitions[2];
    let c = p5.content.as_ref().unwrap();
    let b = blkid(&img, Some((p5.start_lba * 512, p5.sector_count * 512)));
    assert_eq!(c.kind.as_str(), b["TYPE"]);
    assert_eq!(c.uuid.as_deref(), Some(b["UUID"].as_str()));
    assert_eq!(c.label.as_deref(), Some("logical5"));
}

fn sfdisk_image() -> Option<Vec<u8>> {
    if !have("sfdisk") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    Some(std::fs::read(make_disk(dir.path())).unwrap())
}

fn put32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn err_of(d: Vec<u8>) -> ProbeError {
    probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap_err()
}

#[test]
fn looping_ebr_chain_is_an_error() {
    let Some(mut d) = sfdisk_image() else { return };
    let m = mbr_of(&MemDisk {
        data: d.clone(),
        sector_size: 512,
    });
    // Point the second EBR's link back at the first EBR (relative offset 0).
    let second = m.partitions[3].ebr_lba.unwrap() as usize * 512;
    let first = m.partitions[2].ebr_lba.unwrap() as usize * 512;
    d[first + 446 + 16 + 8..first + 446 + 16 + 12]
        .copy_from_slice(&((second / 512 - 10240) as u32).to_le_bytes());
    d[second + 446 + 16 + 4] = 0x05;
    put32(&mut d, second + 446 + 16 + 8, 0);
    put32(&mut d, second + 446 + 16 + 12, 1000);
    let e = err_of(d);
    assert!(
        matches!(
            e,
            ProbeError::Mbr {
                region: "EBR chain",
                lba: 10240,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("loops"), "{e}");
}

#[test]
fn broken_tables_are_errors_naming_the_region() {
    let Some(good) = sfdisk_image() else { return };
    let sectors = good.len() as u32 / 512;
    // A primary past the end of the disk.
    let mut d = good.clone();
    put32(&mut d, 446 + 12, sectors);
    let e = err_of(d);
    assert!(matches!(e, ProbeError::BeyondEnd { .. }), "{e}");
    // Overlapping primaries: partition 1 grows into the extended partition.
    let mut d = good.clone();
    put32(&mut d, 446 + 12, 9000);
    let e = err_of(d);
    assert!(matches!(e, ProbeError::Overlap { .. }), "{e}");
    assert!(
        e.to_string().contains("MBR partition 1 (LBA 2048..=11047)"),
        "{e}"
    );
    // A logical partition sticking out of the extended partition.
    let mut d = good.clone();
    let m = mbr_of(&MemDisk {
        data: good.clone(),
        sector_size: 512,
    });
    let ebr = m.partitions[3].ebr_lba.unwrap() as usize * 512;
    put32(&mut d, ebr + 446 + 12, 40000);
    let e = err_of(d);
    assert!(
        e.to_string().contains("ends past the extended partition"),
        "{e}"
    );
    // An EBR without its signature.
    let mut d = good.clone();
    d[ebr + 510] = 0;
    let e = err_of(d);
    assert!(matches!(e, ProbeError::Mbr { region: "EBR", .. }), "{e}");
    // A logical partition covering the next EBR.
    let mut d = good.clone();
    let first = m.partitions[2].ebr_lba.unwrap() as usize * 512;
    put32(&mut d, first + 446 + 12, 30000);
    let e = err_of(d);
    assert!(matches!(e, ProbeError::Overlap { .. }), "{e}");
    // A status byte that is neither 0x00 nor 0x80: not an MBR at all.
    let mut d = good.clone();
    d[446] = 0x12;
    let l = probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap();
    assert_eq!(l.table, PartitionTable::None);
}
