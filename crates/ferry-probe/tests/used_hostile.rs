//! Mutated small ext4, xfs, FAT, NTFS and LVM images: used_map must return a map (sorted,
//! merged, inside the disk) or a read error, never panic. Mutations go through an overlay so
//! the 32 MiB xfs seed is not copied per case.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use common::{build_pv, have, image, run, vg_text};
use ferry_image::{DiskSource, ImageError, ImageFormat};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

/// A seed image with some bytes replaced.
struct Mutated<'a> {
    base: &'a [u8],
    patches: BTreeMap<u64, u8>,
}

impl DiskSource for Mutated<'_> {
    fn size(&self) -> u64 {
        self.base.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size());
        let Some(end) = end else {
            return Err(ImageError::OutOfRange {
                path: "mutated".into(),
                offset,
                len: buf.len(),
                size: self.size(),
            });
        };
        buf.copy_from_slice(&self.base[offset as usize..end as usize]);
        for (&at, &b) in self.patches.range(offset..end) {
            buf[(at - offset) as usize] = b;
        }
        Ok(())
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::Raw
    }
}

/// Each seed with the offsets worth mutating (superblocks, descriptors, btree roots).
fn seeds() -> &'static Vec<(Vec<u8>, u64)> {
    static SEEDS: OnceLock<Vec<(Vec<u8>, u64)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut seeds = Vec::new();
        let mut mk = |name: &str, size: u64, cmd: &[&str], env: &[(&str, &str)]| {
            if !have(cmd[0]) {
                return;
            }
            let img = image(dir.path(), name, size);
            let status = std::process::Command::new(cmd[0])
                .args(&cmd[1..])
                .arg(&img)
                .envs(env.iter().copied())
                .output()
                .unwrap();
            assert!(
                status.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&status.stderr)
            );
            seeds.push((std::fs::read(&img).unwrap(), 64 * 1024));
        };
        mk(
            "e1.img",
            4 * MIB,
            &[
                "mkfs.ext4",
                "-q",
                "-F",
                "-b",
                "1024",
                "-O",
                "meta_bg,^resize_inode",
            ],
            &[],
        );
        mk(
            "e4.img",
            16 * MIB,
            &["mkfs.ext4", "-q", "-F", "-b", "4096"],
            &[],
        );
        mk("e2.img", 4 * MIB, &["mkfs.ext2", "-q", "-F"], &[]);
        mk("f.img", 2 * MIB, &["mkfs.vfat", "-F", "12"], &[]);
        mk("f32.img", 40 * MIB, &["mkfs.vfat", "-F", "32"], &[]);
        mk("n.img", 8 * MIB, &["mkntfs", "-q", "-F", "-f"], &[]);
        mk(
            "x.img",
            32 * MIB,
            &["mkfs.xfs", "-q", "-f"],
            &[("TEST_DIR", "1"), ("TEST_DEV", "1"), ("QA_CHECK_FS", "1")],
        );
        let uuid = "HaNdBu-iLtP-V000-1111-2222-3333-444444";
        let mut pv = build_pv(8 << 20, uuid, 16 * 1024, &vg_text(uuid, 6), 512);
        if have("mkfs.ext2") {
            let fs = image(dir.path(), "lv.img", 2 * MIB);
            run(
                "mkfs.ext2",
                &["-q", "-F", "-b", "1024", fs.to_str().unwrap()],
            );
            pv[2 << 20..4 << 20].copy_from_slice(&std::fs::read(&fs).unwrap());
        }
        seeds.push((pv, 8 * MIB));
        seeds
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn used_map_never_panics(
        seed in any::<prop::sample::Index>(),
        muts in prop::collection::vec((prop::bool::weighted(0.2), any::<u32>(), any::<u8>()), 1..24),
    ) {
        let seeds = seeds();
        let (base, hot) = &seeds[seed.index(seeds.len())];
        let mut patches = BTreeMap::new();
        for (anywhere, at, byte) in muts {
            let limit = if anywhere { base.len() as u64 } else { *hot.min(&(base.len() as u64)) };
            patches.insert(u64::from(at) % limit, byte);
        }
        let disk = Mutated { base, patches };
        let Ok(layout) = ferry_probe::probe(&disk) else { return Ok(()) };
        let map = ferry_probe::used_map(&disk, &layout).unwrap();
        for w in map.ranges().windows(2) {
            prop_assert!(w[0].end < w[1].start);
        }
        for r in map.ranges() {
            prop_assert!(r.start < r.end && r.end <= map.size());
        }
    }
}

/// The unmutated seeds parse without notes (so the mutations reach the parsers' depths).
#[test]
fn seeds_parse_cleanly() {
    for (base, _) in seeds() {
        let disk = Mutated {
            base,
            patches: BTreeMap::new(),
        };
        let layout = ferry_probe::probe(&disk).unwrap();
        let map = ferry_probe::used_map(&disk, &layout).unwrap();
        assert!(map.notes.is_empty(), "{:?}", map.notes);
        assert!(map.used_bytes() < map.size(), "{:?}", map.ranges());
    }
}

/// `default` cases unless PROPTEST_CASES asks for another number (a longer campaign).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
