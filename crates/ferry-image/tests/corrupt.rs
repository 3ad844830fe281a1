//! Damaged and unsupported images must fail with the right error, naming what is wrong.

mod common;

use std::path::{Path, PathBuf};

use common::{convert, qemu_img, MIB};
use ferry_image::{open, ImageError, ImageFormat};

/// What a case expects: the error variant and a phrase of its message.
#[derive(Debug, Clone, Copy)]
enum Want {
    Corrupt(&'static str),
    Unsupported(&'static str),
}

fn check(err: &ImageError, want: Want, case: &str) {
    let msg = err.to_string();
    let ok = match (err, want) {
        (ImageError::Corrupt { .. }, Want::Corrupt(p))
        | (ImageError::Unsupported { .. }, Want::Unsupported(p)) => msg.contains(p),
        _ => false,
    };
    assert!(ok, "{case}: expected {want:?}, got: {msg}");
}

/// Open `path` expecting failure, either at open or when reading the whole disk.
fn open_or_read_err(path: &Path) -> ImageError {
    let src = match open(path) {
        Err(e) => return e,
        Ok(src) => src,
    };
    let mut buf = vec![0u8; MIB];
    let mut off = 0;
    while off < src.size() {
        let n = (src.size() - off).min(MIB as u64) as usize;
        if let Err(e) = src.read_at(&mut buf[..n], off) {
            return e;
        }
        off += n as u64;
    }
    panic!("{} opened and read without error", path.display());
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = std::fs::read(path).expect("read image");
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    std::fs::write(path, data).expect("write image");
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .expect("truncate");
}

fn be_u64_at(path: &Path, offset: usize) -> u64 {
    let data = std::fs::read(path).expect("read image");
    u64::from_be_bytes(data[offset..offset + 8].try_into().expect("8 bytes"))
}

/// A small qcow2 v3 image of random data (so every cluster is allocated) in `dir`.
fn small_qcow2(dir: &Path, extra: &[&str]) -> PathBuf {
    let raw = dir.join("small.raw");
    let mut data = vec![0u8; MIB];
    common::Rng::new(3).fill(&mut data);
    std::fs::write(&raw, &data).expect("write raw");
    convert(dir, &raw, "small.qcow2", "qcow2", extra)
}

type Mutation = fn(&Path);

#[test]
fn corrupt_qcow2_headers() {
    let cases: &[(&str, Mutation, Want)] = &[
        (
            "truncated to 50 bytes",
            |p| truncate(p, 50),
            Want::Corrupt("shorter than a qcow2 header"),
        ),
        (
            "truncated inside the v3 header",
            |p| truncate(p, 90),
            Want::Corrupt("version 3 header"),
        ),
        (
            "truncated before the L1 table",
            |p| truncate(p, be_u64_at(p, 40)),
            Want::Corrupt("L1 table"),
        ),
        (
            "L1 offset beyond EOF",
            |p| patch(p, 40, &(1u64 << 40).to_be_bytes()),
            Want::Corrupt("L1 table"),
        ),
        (
            "L1 offset unaligned",
            |p| patch(p, 40, &0x30008u64.to_be_bytes()),
            Want::Corrupt("not cluster-aligned"),
        ),
        (
            "huge cluster_bits",
            |p| patch(p, 20, &40u32.to_be_bytes()),
            Want::Corrupt("cluster_bits 40"),
        ),
        (
            "tiny cluster_bits",
            |p| patch(p, 20, &8u32.to_be_bytes()),
            Want::Corrupt("cluster_bits 8"),
        ),
        (
            "huge L1 size",
            |p| patch(p, 36, &u32::MAX.to_be_bytes()),
            Want::Corrupt("exceeds"),
        ),
        (
            "virtual size beyond L1",
            |p| patch(p, 24, &(1u64 << 62).to_be_bytes()),
            Want::Corrupt("needs"),
        ),
        (
            "header length too small",
            |p| patch(p, 100, &50u32.to_be_bytes()),
            Want::Corrupt("header length"),
        ),
        (
            "corrupt bit set",
            |p| patch(p, 72, &2u64.to_be_bytes()),
            Want::Corrupt("marked the image corrupt"),
        ),
        (
            "L2 entry beyond EOF",
            |p| {
                let l2 = be_u64_at(p, be_u64_at(p, 40) as usize) & 0x00ff_ffff_ffff_fe00;
                patch(p, l2 as usize, &((1u64 << 50) | (1 << 63)).to_be_bytes());
            },
            Want::Corrupt("past the end of the file"),
        ),
        (
            "L2 entry reserved bits",
            |p| {
                let l2 = be_u64_at(p, be_u64_at(p, 40) as usize) & 0x00ff_ffff_ffff_fe00;
                let e = be_u64_at(p, l2 as usize + 8) | 0x02;
                patch(p, l2 as usize + 8, &e.to_be_bytes());
            },
            Want::Corrupt("reserved bits"),
        ),
        (
            "version 4",
            |p| patch(p, 4, &4u32.to_be_bytes()),
            Want::Unsupported("version 4"),
        ),
        (
            "encrypted",
            |p| patch(p, 32, &1u32.to_be_bytes()),
            Want::Unsupported("encrypted (AES"),
        ),
        (
            "unknown incompatible bit",
            |p| patch(p, 72, &(1u64 << 10).to_be_bytes()),
            Want::Unsupported("unknown incompatible features 0x400"),
        ),
    ];
    for (name, mutate, want) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = small_qcow2(dir.path(), &[]);
        mutate(&image);
        check(&open_or_read_err(&image), *want, name);
    }
}

#[test]
fn corrupt_compressed_cluster_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("text.raw");
    let text: Vec<u8> = (0..MIB).map(|i| b"compressible "[i % 13]).collect();
    std::fs::write(&raw, text).expect("write raw");
    let image = convert(dir.path(), &raw, "c.qcow2", "qcow2", &["-c"]);
    // Overwrite the compressed data of the first cluster with garbage.
    let l2 = be_u64_at(&image, be_u64_at(&image, 40) as usize) & 0x00ff_ffff_ffff_fe00;
    let e = be_u64_at(&image, l2 as usize);
    assert!(
        e & (1 << 62) != 0,
        "qemu-img -c wrote an uncompressed cluster"
    );
    let host = (e & ((1u64 << 54) - 1)) as usize; // x = 62 - (16 - 8) = 54 for 64 KiB clusters
    patch(&image, host, &[0xff; 64]);
    check(
        &open_or_read_err(&image),
        Want::Corrupt("compressed"),
        "garbage deflate data",
    );
}

#[test]
fn qcow2_with_backing_file_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.qcow2");
    let over = dir.path().join("overlay.qcow2");
    let (b, o) = (base.to_str().expect("utf-8"), over.to_str().expect("utf-8"));
    qemu_img(&["create", "-f", "qcow2", b, "1M"]);
    qemu_img(&["create", "-f", "qcow2", "-b", b, "-F", "qcow2", o]);
    let err = open(&over).err().expect("overlay must be refused");
    check(&err, Want::Unsupported("backing file"), "backing file");
    assert!(
        err.to_string().contains(b),
        "error names the backing file: {err}"
    );
}

#[test]
fn qcow2_features_we_do_not_read_are_refused() {
    let cases: &[(&str, &str, Want)] = &[
        (
            "extended L2",
            "extended_l2=on",
            Want::Unsupported("subclusters"),
        ),
        ("zstd", "compression_type=zstd", Want::Unsupported("zstd")),
        (
            "external data file",
            "data_file=DATA",
            Want::Unsupported("external data file"),
        ),
    ];
    for (name, opt, want) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("f.qcow2");
        let opt = opt.replace("DATA", dir.path().join("data.raw").to_str().expect("utf-8"));
        qemu_img(&[
            "create",
            "-f",
            "qcow2",
            "-o",
            &opt,
            image.to_str().expect("utf-8"),
            "1M",
        ]);
        let err = open(&image)
            .err()
            .unwrap_or_else(|| panic!("{name}: opened"));
        check(&err, *want, name);
    }
}

/// A small monolithicSparse VMDK of random data; header fields are little-endian.
fn small_vmdk(dir: &Path) -> PathBuf {
    let raw = dir.join("small.raw");
    let mut data = vec![0u8; MIB];
    common::Rng::new(5).fill(&mut data);
    std::fs::write(&raw, &data).expect("write raw");
    convert(
        dir,
        &raw,
        "small.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicSparse"],
    )
}

#[test]
fn corrupt_vmdk_headers() {
    let cases: &[(&str, Mutation, Want)] = &[
        (
            "truncated header",
            |p| truncate(p, 100),
            Want::Corrupt("past the end"),
        ),
        (
            "grain size not a power of two",
            |p| patch(p, 20, &3u64.to_le_bytes()),
            Want::Corrupt("grain size"),
        ),
        (
            "huge grain size",
            |p| patch(p, 20, &(1u64 << 40).to_le_bytes()),
            Want::Corrupt("grain size"),
        ),
        (
            "zero GTEs per GT",
            |p| patch(p, 44, &0u32.to_le_bytes()),
            Want::Corrupt("grain table entries"),
        ),
        (
            "capacity overflow",
            |p| patch(p, 12, &u64::MAX.to_le_bytes()),
            Want::Corrupt("overflows"),
        ),
        (
            "huge capacity",
            |p| patch(p, 12, &(1u64 << 50).to_le_bytes()),
            Want::Corrupt("grain directory"),
        ),
        (
            "GD beyond EOF",
            |p| patch(p, 56, &(1u64 << 40).to_le_bytes()),
            Want::Corrupt("grain directory"),
        ),
        (
            "GD at end without footer",
            |p| patch(p, 56, &u64::MAX.to_le_bytes()),
            Want::Corrupt("footer"),
        ),
        (
            "version 9",
            |p| patch(p, 4, &9u32.to_le_bytes()),
            Want::Unsupported("version 9"),
        ),
        (
            "unknown compression",
            |p| {
                patch(p, 8, &0x3_0003u32.to_le_bytes());
                patch(p, 77, &7u16.to_le_bytes());
            },
            Want::Unsupported("compression algorithm 7"),
        ),
        (
            "grain beyond EOF",
            |p| {
                // First GT entry of the first GT: GD sector at 56, GT sector in GD[0].
                let data = std::fs::read(p).expect("read");
                let gd = u64::from_le_bytes(data[56..64].try_into().expect("8")) as usize * 512;
                let gt = u32::from_le_bytes(data[gd..gd + 4].try_into().expect("4")) as usize * 512;
                patch(p, gt, &0x7fff_fff0u32.to_le_bytes());
            },
            Want::Corrupt("past the end of the file"),
        ),
    ];
    for (name, mutate, want) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = small_vmdk(dir.path());
        mutate(&image);
        check(&open_or_read_err(&image), *want, name);
    }
}

#[test]
fn multi_extent_vmdk_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("split.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        image.to_str().expect("utf-8"),
        "3G",
    ]);
    let err = open(&image).err().expect("split disk must be refused");
    check(
        &err,
        Want::Unsupported("lists 2 extents"),
        "twoGbMaxExtentSparse",
    );
}

#[test]
fn flat_descriptor_with_short_extent_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("r.raw");
    std::fs::write(&raw, vec![7u8; MIB]).expect("write raw");
    let image = convert(
        dir.path(),
        &raw,
        "f.vmdk",
        "vmdk",
        &["-o", "subformat=monolithicFlat"],
    );
    truncate(&dir.path().join("f-flat.vmdk"), 4096);
    check(
        &open(&image).err().expect("short extent"),
        Want::Corrupt("flat extent"),
        "short flat extent",
    );
    std::fs::remove_file(dir.path().join("f-flat.vmdk")).expect("remove extent");
    assert!(
        matches!(open(&image), Err(ImageError::Open { .. })),
        "missing extent is an open error"
    );
}

#[test]
fn stream_optimized_with_gd_at_end() {
    let data = common::make_raw();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ova-disk.vmdk");
    std::fs::write(&path, common::stream_optimized_gd_at_end(&data)).expect("write vmdk");
    let src = open(&path).expect("open");
    assert_eq!(src.format(), ImageFormat::VmdkStreamOptimized);
    common::assert_same(src.as_ref(), &data);
    common::assert_known_zero_sound(src.as_ref(), &data);
    assert!(src.known_zero(
        common::ZERO_REGION.start as u64,
        common::ZERO_REGION.len() as u64
    ));

    // Without its end-of-stream marker the footer cannot be found.
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() - 512]).expect("write");
    check(
        &open(&path).err().expect("no EOS"),
        Want::Corrupt("footer"),
        "missing EOS marker",
    );
}

#[test]
fn empty_and_tiny_files_are_raw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty");
    std::fs::write(&path, b"").expect("write");
    let src = open(&path).expect("open empty");
    assert_eq!((src.format(), src.size()), (ImageFormat::Raw, 0));
    assert!(src.read_at(&mut [], 0).is_ok());
    assert!(matches!(
        src.read_at(&mut [0], 0),
        Err(ImageError::OutOfRange { .. })
    ));
    std::fs::write(&path, b"QF").expect("write");
    assert_eq!(
        open(&path).expect("open 2 bytes").format(),
        ImageFormat::Raw
    );
}

#[test]
fn missing_file_is_an_open_error() {
    let err = open(Path::new("/nonexistent/ferry-image-test.qcow2"))
        .err()
        .expect("missing file");
    assert!(matches!(err, ImageError::Open { .. }), "{err}");
}
