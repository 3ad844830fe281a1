//! Property: no byte-level damage to a valid image makes `open` or reading panic (or allocate
//! without bound). The mutations land mostly in the metadata at the start and end of the files.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::{convert, Rng, KIB};
use ferry_image::open;
use proptest::prelude::*;

/// Valid seed images, made once per test binary: (name, bytes).
fn seeds() -> &'static [(&'static str, Vec<u8>)] {
    static SEEDS: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let raw = dir.path().join("seed.raw");
        // 256 KiB: random, zero and repeated quarters.
        let mut data = vec![0u8; 256 * KIB];
        Rng::new(9).fill(&mut data[..64 * KIB]);
        data[128 * KIB..192 * KIB].fill(0x5a);
        Rng::new(10).fill(&mut data[192 * KIB..200 * KIB]);
        std::fs::write(&raw, &data).expect("write seed");
        let read = |p: &Path| std::fs::read(p).expect("read seed image");
        let small = ["-o", "cluster_size=4096"];
        vec![
            (
                "qcow2",
                read(&convert(dir.path(), &raw, "a.qcow2", "qcow2", &small)),
            ),
            (
                "qcow2c",
                read(&convert(
                    dir.path(),
                    &raw,
                    "b.qcow2",
                    "qcow2",
                    &["-c", "-o", "cluster_size=4096,compat=0.10"],
                )),
            ),
            (
                "sparse",
                read(&convert(
                    dir.path(),
                    &raw,
                    "c.vmdk",
                    "vmdk",
                    &["-o", "subformat=monolithicSparse"],
                )),
            ),
            (
                "stream",
                read(&convert(
                    dir.path(),
                    &raw,
                    "d.vmdk",
                    "vmdk",
                    &["-o", "subformat=streamOptimized"],
                )),
            ),
            ("stream-footer", common::stream_optimized_gd_at_end(&data)),
        ]
    })
}

/// Open the damaged image and read a bounded part of it (a corrupt size may claim petabytes).
fn exercise(path: &Path) {
    let Ok(src) = open(path) else { return };
    let size = src.size();
    let mut buf = vec![0u8; 64 * KIB + 7];
    let mut off = 0u64;
    while off < size.min(1 << 20) {
        let n = (size - off).min(buf.len() as u64) as usize;
        let _ = src.read_at(&mut buf[..n], off);
        off += n as u64;
    }
    let tail = size.saturating_sub(4096);
    let _ = src.read_at(&mut buf[..4096.min(size as usize)], tail);
    let _ = src.read_at(&mut buf[..10], u64::MAX - 5);
    let _ = src.known_zero(0, size);
    let _ = src.known_zero(0, u64::MAX);
    let _ = src.known_zero(size / 2, 12345);
}

fn mutation() -> impl Strategy<Value = (usize, Vec<(bool, u32, u8)>)> {
    // (which seed, [(near the end?, position, new byte)])
    (
        0..5usize,
        prop::collection::vec((any::<bool>(), 0..64 * 1024u32, any::<u8>()), 1..12),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_images_never_panic((seed, edits) in mutation()) {
        let (name, bytes) = &seeds()[seed];
        let mut bytes = bytes.clone();
        for (from_end, pos, value) in edits {
            // Most metadata is in the first 64 KiB; footers, GDs and GTs of stream files at the end.
            let pos = pos as usize % bytes.len();
            let at = if from_end { bytes.len() - 1 - pos } else { pos };
            bytes[at] = value;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write mutated image");
        exercise(&path);
    }

    #[test]
    fn header_fields_take_any_value((seed, offset, value) in (0..5usize, 0..128usize, any::<u64>())) {
        // Whole 8-byte header fields set to arbitrary values (sizes, offsets, counts).
        let (name, bytes) = &seeds()[seed];
        let mut bytes = bytes.clone();
        let offset = offset.min(bytes.len() - 8);
        bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write mutated image");
        exercise(&path);
    }
}
