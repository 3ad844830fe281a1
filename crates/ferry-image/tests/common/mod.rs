//! Shared test helpers: a deterministic PRNG, a raw disk with random, zero and repeated regions,
//! and a wrapper around the real `qemu-img` (Debian package qemu-utils).

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_image::DiskSource;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * KIB;

/// xorshift64*: deterministic, no dependency, good enough to make incompressible data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Size of the test disk: not a multiple of 64 KiB, so the last qcow2 cluster and VMDK grain are
/// partial.
pub const DISK_SIZE: usize = 6 * MIB + 40 * KIB;

/// Where the test disk is all zeros for sure (whole 64 KiB clusters, so qemu leaves them
/// unallocated).
pub const ZERO_REGION: std::ops::Range<usize> = MIB..2 * MIB;

/// A disk of random, zero, repeated and low-entropy regions.
pub fn make_raw() -> Vec<u8> {
    let mut rng = Rng::new(0x5eed_f00d);
    let mut d = vec![0u8; DISK_SIZE];
    rng.fill(&mut d[..MIB]);
    // ZERO_REGION stays zero.
    rng.fill(&mut d[2 * MIB..2 * MIB + 4 * KIB]);
    for (i, b) in d[2 * MIB + 4 * KIB..3 * MIB].iter_mut().enumerate() {
        *b = b"0123456789abcdef"[i % 16];
    }
    // One lone byte inside an otherwise zero megabyte: a zero detector must not skip it.
    d[3 * MIB + 100_000] = 1;
    for block in 0..16 {
        let start = 4 * MIB + block * 64 * KIB;
        if block % 2 == 0 {
            rng.fill(&mut d[start..start + 64 * KIB]);
        }
    }
    for b in &mut d[5 * MIB..] {
        *b = b"ACGT"[rng.below(4) as usize];
    }
    d
}

pub fn write_raw(dir: &Path) -> (PathBuf, Vec<u8>) {
    let data = make_raw();
    let path = dir.join("disk.raw");
    std::fs::write(&path, &data).expect("write raw image");
    (path, data)
}

/// Run qemu-img with `args`, panicking with its output on failure.
pub fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("run qemu-img (install the qemu-utils package)");
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Convert `raw` into `name` in `dir` with `qemu-img convert -O <fmt> <extra...>`.
pub fn convert(dir: &Path, raw: &Path, name: &str, fmt: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    args.extend_from_slice(extra);
    args.push(raw.to_str().expect("utf-8 temp path"));
    args.push(out.to_str().expect("utf-8 temp path"));
    qemu_img(&args);
    out
}

/// Read the whole source in `piece`-sized reads and return it.
pub fn read_all(src: &dyn DiskSource, piece: usize) -> Vec<u8> {
    let size = src.size() as usize;
    let mut out = vec![0u8; size];
    let mut off = 0;
    while off < size {
        let n = piece.min(size - off);
        src.read_at(&mut out[off..off + n], off as u64)
            .unwrap_or_else(|e| panic!("read {n} bytes at {off}: {e}"));
        off += n;
    }
    out
}

/// Assert `src` reads exactly `want`: size, big aligned reads, odd unaligned reads, past the end.
pub fn assert_same(src: &dyn DiskSource, want: &[u8]) {
    assert_eq!(src.size(), want.len() as u64, "size");
    assert!(
        read_all(src, 4 * MIB) == want,
        "4 MiB reads differ from the raw image"
    );
    let mut rng = Rng::new(7);
    let mut off = 1usize; // start unaligned
    let mut buf = vec![0u8; 300_000];
    while off < want.len() {
        let n = (1 + rng.below(299_999) as usize).min(want.len() - off);
        src.read_at(&mut buf[..n], off as u64)
            .unwrap_or_else(|e| panic!("read {n} at {off}: {e}"));
        assert!(
            buf[..n] == want[off..off + n],
            "odd-sized read of {n} bytes at {off} differs"
        );
        off += n;
    }
    let mut one = [0u8; 1];
    src.read_at(&mut one, want.len() as u64 - 1)
        .expect("read the last byte");
    assert_eq!(one[0], want[want.len() - 1]);
    let err = src
        .read_at(&mut [0u8; 2], want.len() as u64 - 1)
        .expect_err("read past the end");
    assert!(
        matches!(err, ferry_image::ImageError::OutOfRange { .. }),
        "{err}"
    );
}

/// `known_zero` must never claim zeros over non-zero bytes, at any granularity.
pub fn assert_known_zero_sound(src: &dyn DiskSource, want: &[u8]) {
    let mut rng = Rng::new(11);
    for gran in [512usize, 4 * KIB, 64 * KIB, MIB] {
        for start in (0..want.len()).step_by(gran) {
            let len = gran.min(want.len() - start);
            if src.known_zero(start as u64, len as u64) {
                assert!(
                    want[start..start + len].iter().all(|&b| b == 0),
                    "known_zero lies at {start}+{len}"
                );
            }
        }
    }
    for _ in 0..2000 {
        let start = rng.below(want.len() as u64) as usize;
        let len = 1 + rng.below((want.len() - start) as u64) as usize;
        if src.known_zero(start as u64, len as u64) {
            assert!(
                want[start..start + len].iter().all(|&b| b == 0),
                "known_zero lies at {start}+{len}"
            );
        }
    }
    assert!(
        !src.known_zero(want.len() as u64 - 1, 2),
        "known_zero past the end"
    );
}

/// Build a streamOptimized VMDK the way VMware's OVA export lays it out: the leading header says
/// gdOffset = GD_AT_END, compressed grains with markers, then GT and GD behind metadata markers,
/// a footer marker, a footer copy of the header with the real gdOffset, and an end-of-stream
/// marker. `data.len()` must be a multiple of 512.
pub fn stream_optimized_gd_at_end(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    const GRAIN_SECTORS: u64 = 128;
    const GTES: usize = 512;
    let grain = GRAIN_SECTORS as usize * 512;
    let capacity = (data.len() / 512) as u64;
    let grains = data.len().div_ceil(grain);
    let header = |gd_offset: u64| {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&0x3_0001u32.to_le_bytes());
        h[12..20].copy_from_slice(&capacity.to_le_bytes());
        h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor at sector 1
        h[36..44].copy_from_slice(&1u64.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES as u32).to_le_bytes());
        h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        h[64..72].copy_from_slice(&128u64.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        h
    };
    let marker = |val: u64, size: u32, kind: u32| {
        let mut m = vec![0u8; 512];
        m[0..8].copy_from_slice(&val.to_le_bytes());
        m[8..12].copy_from_slice(&size.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        m
    };
    let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(512) * 512, 0);

    let mut out = header(u64::MAX);
    let mut desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"streamOptimized\"\nRW {capacity} SPARSE \"test.vmdk\"\n"
    )
    .into_bytes();
    desc.resize(512, 0);
    out.extend_from_slice(&desc);
    // The spec's overHead: grains start at sector 128.
    out.resize(128 * 512, 0);

    let mut gtes = vec![0u32; grains.div_ceil(GTES) * GTES];
    for (g, chunk) in data.chunks(grain).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(chunk).expect("compress");
        let z = z.finish().expect("compress");
        gtes[g] = (out.len() / 512) as u32;
        out.extend_from_slice(&(g as u64 * GRAIN_SECTORS).to_le_bytes());
        out.extend_from_slice(&(z.len() as u32).to_le_bytes());
        out.extend_from_slice(&z);
        pad(&mut out);
    }
    let mut gd = Vec::new();
    for table in gtes.chunks(GTES) {
        out.extend_from_slice(&marker((GTES * 4 / 512) as u64, 0, 1));
        gd.push((out.len() / 512) as u32);
        for e in table {
            out.extend_from_slice(&e.to_le_bytes());
        }
        pad(&mut out);
    }
    let gd_bytes = gd.len() * 4;
    out.extend_from_slice(&marker(gd_bytes.div_ceil(512) as u64, 0, 2));
    let gd_sector = (out.len() / 512) as u64;
    for e in &gd {
        out.extend_from_slice(&e.to_le_bytes());
    }
    pad(&mut out);
    out.extend_from_slice(&marker(1, 0, 3));
    out.extend_from_slice(&header(gd_sector));
    out.extend_from_slice(&marker(0, 0, 0));
    out
}
