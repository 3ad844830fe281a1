//! LVM2: a PV made by the real pvcreate/vgcreate on a loop device over a partition of an MBR
//! disk image, with LVs added by vgcfgrestore (lvcreate needs device-mapper, which this host
//! lacks), compared with pvs/vgs/lvs; and PVs built by hand from the on-disk format.

mod common;

use common::{build_pv, have, image, run, run_stdin, vg_text, write_into, FileDisk, MemDisk};
use ferry_format::layout::{Content, ContentKind, LvmPv, PartitionTable};
use ferry_probe::{probe, ProbeError};
use ferry_test_support::tools::Loop;

const MIB: u64 = 1 << 20;
const NO_BACKUP: &str = "backup { backup = 0 archive = 0 }";

/// Run an LVM command without writing /etc/lvm/backup or archive files.
fn lvm(args: &[&str]) -> String {
    run(
        args[0],
        &[&["--config", NO_BACKUP][..], &args[1..]].concat(),
    )
}

fn pv_of(c: &Content) -> &LvmPv {
    assert_eq!(c.kind, ContentKind::Lvm2Member);
    c.lvm.as_ref().unwrap()
}

#[test]
fn real_lvm_pv_in_an_mbr_partition() {
    if !(have("losetup")
        && have("pvcreate")
        && have("sfdisk")
        && have("mkfs.ext4")
        && have("mkswap"))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "lvm.img", 72 * MIB);
    run_stdin(
        "sfdisk",
        &["-q", img.to_str().unwrap()],
        Some("label: dos\nstart=2048, type=8e\n"),
    );
    let (part_off, part_len) = (MIB, 71 * MIB);
    let (off, len) = (part_off.to_string(), part_len.to_string());
    let Some(dev) = Loop::attach(&img, &["-o", &off, "--sizelimit", &len]) else {
        return;
    };
    let vg = format!("ferrytest{}", std::process::id());
    lvm(&["pvcreate", "-q", &dev.0]);
    lvm(&["vgcreate", "-q", &vg, &dev.0]);
    // Add LVs the way a backup restore would: edit the VG's metadata and vgcfgrestore it.
    let backup = dir.path().join("vg.txt");
    lvm(&["vgcfgbackup", "-q", "-f", backup.to_str().unwrap(), &vg]);
    let text = std::fs::read_to_string(&backup).unwrap();
    let lvs = "
	logical_volumes {
		root {
			id = \"aaaaaa-bbbb-cccc-dddd-eeee-ffff-gggggg\"
			status = [\"READ\", \"WRITE\", \"VISIBLE\"]
			flags = []
			segment_count = 2
			segment1 {
				start_extent = 0
				extent_count = 2
				type = \"striped\"
				stripe_count = 1
				stripes = [\"pv0\", 0]
			}
			segment2 {
				start_extent = 2
				extent_count = 1
				type = \"striped\"
				stripe_count = 1
				stripes = [\"pv0\", 5]
			}
		}
		swap {
			id = \"hhhhhh-iiii-jjjj-kkkk-llll-mmmm-nnnnnn\"
			status = [\"READ\", \"WRITE\", \"VISIBLE\"]
			flags = []
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = \"striped\"
				stripe_count = 1
				stripes = [\"pv0\", 2]
			}
		}
	}
}
";
    let end = text.trim_end().rfind('}').unwrap();
    std::fs::write(&backup, format!("{}{lvs}", &text[..end])).unwrap();
    lvm(&["vgcfgrestore", "-q", "-f", backup.to_str().unwrap(), &vg]);
    let pv_uuid = lvm(&["pvs", "--noheadings", "-o", "pv_uuid", &dev.0])
        .trim()
        .to_string();
    let vg_uuid = lvm(&["vgs", "--noheadings", "-o", "vg_uuid", &vg])
        .trim()
        .to_string();
    let lv_rows = lvm(&[
        "lvs",
        "--noheadings",
        "--separator",
        ";",
        "-o",
        "lv_name,lv_uuid,seg_start_pe,seg_size_pe,seg_pe_ranges",
        &vg,
    ]);
    let pv_rows = lvm(&[
        "pvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "--separator",
        ";",
        "-o",
        "pe_start,pv_mda_size,dev_size",
        &dev.0,
    ]);
    drop(dev);

    // Filesystems in the LVs: root is 12 MiB in two segments (PV extents 0-1 and 5), swap 8 MiB.
    let pe_start = part_off + MIB;
    let fs = image(dir.path(), "root.ext4", 12 * MIB);
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            "lvroot",
            "-U",
            "9e8d7c6b-5a49-4382-a170-6f5e4d3c2b1a",
            fs.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(&fs).unwrap();
    common::patch(&img, pe_start, &bytes[..8 << 20]);
    common::patch(&img, pe_start + 5 * 4 * MIB, &bytes[8 << 20..]);
    let sw = image(dir.path(), "swap", 8 * MIB);
    run("mkswap", &["-L", "lvswap", sw.to_str().unwrap()]);
    write_into(&img, pe_start + 2 * 4 * MIB, &sw);

    let layout = probe(&FileDisk::open(&img)).unwrap();
    let PartitionTable::Mbr(m) = layout.table else {
        panic!("{:?}", layout.table)
    };
    let content = m.partitions[0].content.as_ref().unwrap();
    let pv = pv_of(content);
    assert_eq!(pv.pv_uuid.to_string(), pv_uuid);
    assert_eq!(content.uuid.as_deref(), Some(pv_uuid.as_str()));
    assert_eq!(pv.device_size, part_len);
    let pv_row: Vec<u64> = pv_rows
        .trim()
        .split(';')
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(pv.data_area.offset, pv_row[0]);
    assert_eq!(pv.metadata_areas.len(), 1);
    assert_eq!(pv.metadata_areas[0].offset, 4096);
    assert_eq!(pv.metadata_areas[0].size, pv_row[1]);
    let vgm = pv.vg.as_ref().unwrap();
    assert!(vgm.text.contains(&format!("{vg} {{")), "{}", vgm.text);
    let s = &vgm.summary;
    assert_eq!(s.name, vg);
    assert_eq!(s.uuid.to_string(), vg_uuid);
    assert_eq!(s.extent_size, 8192);
    assert_eq!(s.physical_volumes.len(), 1);
    assert_eq!(s.physical_volumes[0].uuid.to_string(), pv_uuid);
    assert_eq!(s.physical_volumes[0].pe_start * 512, pv_row[0]);
    // Every segment lvs prints, in its order.
    let mut ours = Vec::new();
    for lv in &s.logical_volumes {
        for seg in &lv.segments {
            let st = &seg.stripes[0];
            ours.push(format!(
                "{};{};{};{};{}:{}-{}",
                lv.name,
                lv.uuid,
                seg.start_extent,
                seg.extent_count,
                "DEV",
                st.pv_start_extent,
                st.pv_start_extent + seg.extent_count - 1
            ));
        }
    }
    let theirs: Vec<String> = lv_rows
        .lines()
        .map(|l| {
            let l = l.trim();
            let (head, range) = l.rsplit_once(';').unwrap();
            let (_, extents) = range.rsplit_once(':').unwrap();
            format!("{head};DEV:{extents}")
        })
        .collect();
    assert_eq!(ours, theirs);
    // The LVs' contents, read through their segments.
    let root = &s
        .logical_volumes
        .iter()
        .find(|l| l.name == "root")
        .unwrap()
        .content;
    let root = root.as_ref().unwrap();
    assert_eq!(
        (root.kind, root.label.as_deref()),
        (ContentKind::Ext4, Some("lvroot"))
    );
    assert_eq!(
        root.uuid.as_deref(),
        Some("9e8d7c6b-5a49-4382-a170-6f5e4d3c2b1a")
    );
    assert_eq!(
        root.block_count.unwrap() * u64::from(root.block_size.unwrap()),
        12 * MIB
    );
    let swap = s
        .logical_volumes
        .iter()
        .find(|l| l.name == "swap")
        .unwrap()
        .content
        .as_ref()
        .unwrap();
    assert_eq!(
        (swap.kind, swap.label.as_deref()),
        (ContentKind::Swap, Some("lvswap"))
    );
}

const PV_UUID: &str = "HaNdBu-iLtP-V000-1111-2222-3333-444444";

#[test]
fn hand_built_pv_with_wrapping_metadata() {
    let text = vg_text(PV_UUID, 6);
    // Put the text so it wraps around the end of the 64 KiB metadata ring.
    let mda = 64 << 10;
    let d = build_pv(8 << 20, PV_UUID, mda, &text, mda - 300);
    let l = probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap();
    let c = l.content.unwrap();
    let pv = pv_of(&c);
    assert_eq!(pv.pv_uuid.to_string(), PV_UUID);
    assert_eq!(pv.label_sector, 1);
    let vg = pv.vg.as_ref().unwrap();
    assert_eq!(vg.text, text);
    assert_eq!(vg.summary.name, "vgh");
    assert_eq!(vg.summary.seqno, 7);
    assert_eq!(
        vg.summary.logical_volumes[0].segments[0].stripes[0].pv_start_extent,
        1
    );
    assert_eq!(
        vg.summary.logical_volumes[0].content.as_ref().unwrap().kind,
        ContentKind::Unknown
    );
}

#[test]
fn hand_built_pv_errors() {
    let text = vg_text(PV_UUID, 6);
    let good = build_pv(8 << 20, PV_UUID, 64 << 10, &text, 512);
    // Corrupt metadata text: the checksum catches it.
    let mut d = good.clone();
    d[4096 + 512 + 10] ^= 1;
    let e = probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            ProbeError::Lvm {
                region: "metadata text",
                offset: 4608,
                ..
            }
        ),
        "{e}"
    );
    // Corrupt metadata area header.
    let mut d = good.clone();
    d[4096 + 30] ^= 1;
    let e = probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            ProbeError::Lvm {
                region: "metadata area header",
                offset: 4096,
                ..
            }
        ),
        "{e}"
    );
    // A syntax error in otherwise well-sealed metadata.
    let bad = text.replacen("seqno = 7", "seqno = \"7", 1);
    let e = probe(&MemDisk {
        data: build_pv(8 << 20, PV_UUID, 64 << 10, &bad, 512),
        sector_size: 512,
    })
    .unwrap_err();
    assert!(matches!(e, ProbeError::LvmText { offset: 4608, .. }), "{e}");
    assert!(
        e.to_string().contains("expected '=' or '{' after \"lvm2\""),
        "{e}"
    );
    // An LV past the end of the PV.
    let far = text.replacen("\"pv0\", 1", "\"pv0\", 100", 1);
    let e = probe(&MemDisk {
        data: build_pv(8 << 20, PV_UUID, 64 << 10, &far, 512),
        sector_size: 512,
    })
    .unwrap_err();
    assert!(e.to_string().contains("past the end of the PV"), "{e}");
    // A label whose checksum is wrong is no label: the disk is unknown, not an error.
    let mut d = good.clone();
    d[512 + 40] ^= 1;
    let l = probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap();
    assert_eq!(l.content.unwrap().kind, ContentKind::Unknown);
    // An orphan PV (no metadata location) has no VG.
    let mut d = good;
    d[4096 + 40..4096 + 60].fill(0);
    common::reseal_lvm(&mut d, 0);
    let l = probe(&MemDisk {
        data: d,
        sector_size: 512,
    })
    .unwrap();
    assert_eq!(pv_of(l.content.as_ref().unwrap()).vg, None);
}
