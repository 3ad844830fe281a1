//! Mutated small disk images (GPT, MBR with logical partitions, LVM2 PV, FAT): probe() must
//! return a layout or an error, never panic. Half the cases re-seal the GPT and LVM checksums
//! after mutating, so the mutations reach the checks behind them.

mod common;

use std::sync::OnceLock;

use common::{build_pv, have, image, run, run_stdin, vg_text, MemDisk};
use proptest::prelude::*;

const KIB: u64 = 1024;

fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut seeds = Vec::new();
        if have("sgdisk") {
            let img = image(dir.path(), "gpt.img", 1024 * KIB);
            let p = img.to_str().unwrap();
            run("sgdisk", &["-o", "-n", "1:40:+100", "-c", "1:a", "-n", "2:0:+200", "-n", "4:0:+300", "-A", "4:set:2", p]);
            seeds.push(std::fs::read(&img).unwrap());
        }
        if have("sfdisk") {
            let img = image(dir.path(), "mbr.img", 1024 * KIB);
            let script = "label: dos\nstart=8, size=100, type=83\nstart=200, size=1500, type=5\nstart=210, size=100, type=83\nstart=400, size=300, type=8e\n";
            run_stdin("sfdisk", &["-q", img.to_str().unwrap()], Some(script));
            seeds.push(std::fs::read(&img).unwrap());
        }
        if have("mkfs.vfat") {
            let img = image(dir.path(), "fat.img", 1024 * KIB);
            run("mkfs.vfat", &["-n", "X", img.to_str().unwrap()]);
            seeds.push(std::fs::read(&img).unwrap());
        }
        let uuid = "HaNdBu-iLtP-V000-1111-2222-3333-444444";
        seeds.push(build_pv(4096 * KIB as usize, uuid, 16 * 1024, &vg_text(uuid, 3), 16 * 1024 - 100));
        seeds
    })
}

/// (anywhere in the image?, position, new byte)
fn mutations() -> impl Strategy<Value = Vec<(bool, u32, u8)>> {
    prop::collection::vec(
        (prop::bool::weighted(0.2), any::<u32>(), any::<u8>()),
        1..24,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn probe_never_panics(seed in any::<prop::sample::Index>(), muts in mutations(), reseal in any::<bool>()) {
        let seeds = seeds();
        let mut d = seeds[seed.index(seeds.len())].clone();
        // Most mutations land where the tables and superblocks are: the first 24 KiB.
        let hot = d.len().min(24 * 1024);
        for (anywhere, at, byte) in muts {
            let limit = if anywhere { d.len() } else { hot };
            d[at as usize % limit] = byte;
        }
        if reseal {
            common::reseal_gpt(&mut d);
            common::reseal_lvm(&mut d, 0);
        }
        let disk = MemDisk { data: d, sector_size: 512 };
        if let Ok(layout) = ferry_probe::probe(&disk) {
            // Whatever is found serialises and reads back.
            let text = serde_json::to_string(&layout).unwrap();
            let back: ferry_format::layout::DiskLayout = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, layout);
        }
    }
}

/// `default` cases unless PROPTEST_CASES asks for another number (a longer campaign).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
