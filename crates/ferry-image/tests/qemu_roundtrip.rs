//! Images written by the real qemu-img must read back byte for byte as the raw disk they came from.

mod common;

use common::{assert_known_zero_sound, assert_same, convert, write_raw, ZERO_REGION};
use ferry_image::{open, ImageFormat};

/// Convert the test disk with `args`, open the result and compare it with the raw disk.
fn roundtrip(
    name: &str,
    fmt: &str,
    args: &[&str],
    want_format: ImageFormat,
) -> Box<dyn ferry_image::DiskSource> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, data) = write_raw(dir.path());
    let image = convert(dir.path(), &raw, name, fmt, args);
    let src = open(&image).unwrap_or_else(|e| panic!("open {name}: {e}"));
    assert_eq!(src.format(), want_format);
    assert_same(src.as_ref(), &data);
    assert_known_zero_sound(src.as_ref(), &data);
    src
}

fn assert_zero_region_known(src: &dyn ferry_image::DiskSource) {
    let (start, len) = (ZERO_REGION.start as u64, ZERO_REGION.len() as u64);
    assert!(
        src.known_zero(start, len),
        "the all-zero megabyte is not known_zero"
    );
    assert!(
        src.known_zero(start + 12_345, 999),
        "an unaligned piece of the zero region"
    );
    assert!(!src.known_zero(0, 4096), "random data claimed zero");
}

#[test]
fn raw_file_reads_as_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, data) = write_raw(dir.path());
    let src = open(&raw).expect("open raw");
    assert_eq!(src.format(), ImageFormat::Raw);
    assert_eq!(src.logical_sector_size(), 512);
    assert_same(src.as_ref(), &data);
    assert!(
        !src.known_zero(ZERO_REGION.start as u64, 512),
        "raw never knows"
    );
}

#[test]
fn qcow2_v3() {
    let src = roundtrip("d.qcow2", "qcow2", &[], ImageFormat::Qcow2);
    assert_zero_region_known(src.as_ref());
}

#[test]
fn qcow2_v2_compat_0_10() {
    let src = roundtrip(
        "d.qcow2",
        "qcow2",
        &["-o", "compat=0.10"],
        ImageFormat::Qcow2,
    );
    assert_zero_region_known(src.as_ref());
}

#[test]
fn qcow2_compressed() {
    let src = roundtrip("d.qcow2", "qcow2", &["-c"], ImageFormat::Qcow2);
    assert_zero_region_known(src.as_ref());
}

#[test]
fn qcow2_small_clusters_compressed_v2() {
    roundtrip(
        "d.qcow2",
        "qcow2",
        &["-c", "-o", "cluster_size=4096,compat=0.10"],
        ImageFormat::Qcow2,
    );
}

#[test]
fn qcow2_big_clusters() {
    roundtrip(
        "d.qcow2",
        "qcow2",
        &["-o", "cluster_size=2M"],
        ImageFormat::Qcow2,
    );
}

#[test]
fn qcow2_zero_clusters_v3() {
    // Zero clusters (L2 bit 0) appear when zeros are written over allocated clusters: convert the
    // disk into an image whose clusters were all preallocated, so its zero ranges become zero
    // clusters instead of unallocated ones.
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, data) = write_raw(dir.path());
    let image = dir.path().join("z.qcow2");
    let size = data.len().to_string();
    let (raw_s, image_s) = (raw.to_str().expect("utf-8"), image.to_str().expect("utf-8"));
    common::qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "preallocation=metadata",
        image_s,
        &size,
    ]);
    // -n: write into the existing image; unallocated-in-source zero ranges become zero clusters.
    common::qemu_img(&["convert", "-n", "-f", "raw", "-O", "qcow2", raw_s, image_s]);
    let src = open(&image).expect("open");
    assert_same(src.as_ref(), &data);
    assert_known_zero_sound(src.as_ref(), &data);
    assert_zero_region_known(src.as_ref());
}

#[test]
fn vmdk_monolithic_sparse() {
    let src = roundtrip(
        "d.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicSparse"],
        ImageFormat::VmdkMonolithicSparse,
    );
    assert_zero_region_known(src.as_ref());
}

#[test]
fn vmdk_stream_optimized() {
    let src = roundtrip(
        "d.vmdk",
        "vmdk",
        &["-o", "subformat=streamOptimized"],
        ImageFormat::VmdkStreamOptimized,
    );
    assert_zero_region_known(src.as_ref());
}

#[test]
fn vmdk_monolithic_flat_descriptor() {
    roundtrip(
        "d.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicFlat"],
        ImageFormat::VmdkFlat,
    );
}

#[test]
fn reads_from_many_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, data) = write_raw(dir.path());
    let image = convert(
        dir.path(),
        &raw,
        "d.qcow2",
        "qcow2",
        &["-c", "-o", "cluster_size=4096"],
    );
    let src = open(&image).expect("open");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (src, data) = (&src, &data);
            s.spawn(move || {
                let mut rng = common::Rng::new(100 + t);
                let mut buf = vec![0u8; 70_000];
                for _ in 0..300 {
                    let off = rng.below((data.len() - buf.len()) as u64) as usize;
                    src.read_at(&mut buf, off as u64).expect("read");
                    assert!(
                        buf == data[off..off + buf.len()],
                        "thread {t} read at {off} differs"
                    );
                }
            });
        }
    });
}

/// Needs root and loop devices, so it runs only with FERRY_LOOP_TESTS=1: attaches the raw disk
/// to a loop device with 4096-byte logical sectors and reads it through `open`.
#[test]
fn block_device_via_loop() {
    if std::env::var_os("FERRY_LOOP_TESTS").is_none() {
        eprintln!("skipped: set FERRY_LOOP_TESTS=1 (root, losetup) to run");
        return;
    }
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (raw, mut data) = write_raw(dir.path());
    data.truncate(data.len() / 4096 * 4096); // a 4Kn device ends on a sector boundary
    std::fs::write(&raw, &data).expect("rewrite raw");
    let out = std::process::Command::new("losetup")
        .args([
            "-f",
            "--show",
            "--sector-size",
            "4096",
            raw.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run losetup");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Detach(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let src = open(std::path::Path::new(&dev.0)).expect("open loop device");
    assert_eq!(src.format(), ImageFormat::BlockDevice);
    assert_eq!(src.logical_sector_size(), 4096);
    assert_same(src.as_ref(), &data);
}
