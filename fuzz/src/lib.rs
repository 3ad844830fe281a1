//! Shared pieces of the fuzz targets: a compact encoding of a sparse disk (so that a few KiB of
//! input describe a disk of megabytes with a GPT backup header at its end or an LVM PV's data
//! area past 1 MiB), an in-memory [`DiskSource`] over it, and a scratch file for the image
//! readers, which open paths.
//!
//! # Sparse disk encoding (input of `gpt`, `mbr`, `lvm`, `disk_probe`)
//! ```text
//! 0  flags u8: bit 0 = 4096-byte logical sectors (else 512); bit 1 = leave checksums as they
//!    are (else the target reseals the GPT/LVM CRCs it knows, so mutations reach the checks
//!    behind them)
//! 1  disk size in KiB, u16 LE (at most MAX_DISK_KIB)
//! 3  records, to the end of the input: offset u32 LE (taken modulo the disk size), length
//!    u16 LE, then that many bytes (cut at the disk's end and at the input's end)
//! ```
//! `fuzz/examples/gen_seeds.rs` writes real images in this form (`sparse_encode`).

use std::path::PathBuf;

use ferry_image::DiskSource;

/// The in-memory disk, the tables and PVs built by hand and the checksum resealing: the probe
/// tests' helpers, shared through ferry-test-support rather than copied here.
pub use ferry_test_support::disk;
pub use ferry_test_support::disk::MemDisk;

/// Largest disk a sparse input describes: what the probe and used-map readers need to see
/// (GPT backup at the end, PV data areas, filesystem bitmaps) at a size that keeps a run fast.
pub const MAX_DISK_KIB: u16 = 16 << 10;
pub const FLAG_4K: u8 = 1;
pub const FLAG_NO_RESEAL: u8 = 2;

/// A disk decoded from the sparse encoding.
pub struct SparseDisk {
    pub disk: MemDisk,
    pub reseal: bool,
}

/// Decode the sparse disk encoding (see the module documentation). `None` for inputs shorter
/// than the 3-byte header.
pub fn sparse_decode(input: &[u8]) -> Option<SparseDisk> {
    let (&flags, rest) = input.split_first()?;
    let size_kib = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?).min(MAX_DISK_KIB);
    let size = usize::from(size_kib) << 10;
    let mut data = vec![0u8; size];
    let mut r = &rest[2..];
    while r.len() >= 6 && size > 0 {
        let off = u32::from_le_bytes(r[..4].try_into().unwrap()) as usize % size;
        let len = usize::from(u16::from_le_bytes(r[4..6].try_into().unwrap()));
        let bytes = &r[6..6 + len.min(r.len() - 6)];
        let n = bytes.len().min(size - off);
        data[off..off + n].copy_from_slice(&bytes[..n]);
        r = &r[6 + bytes.len()..];
    }
    Some(SparseDisk {
        disk: MemDisk {
            data,
            sector_size: if flags & FLAG_4K != 0 { 4096 } else { 512 },
        },
        reseal: flags & FLAG_NO_RESEAL == 0,
    })
}

/// The sparse encoding of `data`: its non-zero runs of 512-byte sectors.
pub fn sparse_encode(data: &[u8], flags: u8) -> Vec<u8> {
    let kib = u16::try_from(data.len().div_ceil(1024)).expect("a seed disk of at most 64 MiB");
    let mut out = vec![flags];
    out.extend_from_slice(&kib.to_le_bytes());
    let sectors: Vec<&[u8]> = data.chunks(512).collect();
    let mut i = 0;
    while i < sectors.len() {
        if sectors[i].iter().all(|&b| b == 0) {
            i += 1;
            continue;
        }
        let start = i;
        while i < sectors.len() && i - start < 127 && sectors[i].iter().any(|&b| b != 0) {
            i += 1;
        }
        let run: Vec<u8> = sectors[start..i].concat();
        out.extend_from_slice(&((start * 512) as u32).to_le_bytes());
        out.extend_from_slice(&(run.len() as u16).to_le_bytes());
        out.extend_from_slice(&run);
    }
    out
}

/// Probe a disk the way backup-agent does: the layout, then (when it reads) the used map.
/// Whatever is accepted must serialise into the manifest and read back the same.
pub fn probe_and_map(disk: &dyn DiskSource) {
    let Ok(layout) = ferry_probe::probe(disk) else {
        return;
    };
    let text = serde_json::to_string(&layout).expect("a probed layout serialises");
    let back: ferry_format::layout::DiskLayout =
        serde_json::from_str(&text).expect("a serialised layout reads back");
    assert_eq!(back, layout, "layout JSON round trip");
    let _ = ferry_probe::used_map(disk, &layout);
}

/// A scratch file for readers that open a path (ferry_image::open): one per process, in
/// $TMPDIR (run.sh points it at /dev/shm when it can), rewritten for every input.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write the fuzz scratch file");
    path
}

/// Read an opened image the way backup-agent does, in pieces: the first and last 64 KiB and
/// 14 pieces spread over the rest, each asked whether it is known zero first. Reads may fail
/// (corrupt mapping tables are found lazily), never panic.
pub fn read_image(src: &dyn DiskSource) {
    const PIECE: u64 = 64 << 10;
    let size = src.size();
    let mut buf = vec![0u8; PIECE as usize];
    let mut at: Vec<u64> = (0..16u64).map(|i| size / 16 * i).collect();
    at.push(size.saturating_sub(PIECE));
    for offset in at {
        let len = PIECE.min(size - offset.min(size));
        if len == 0 {
            continue;
        }
        let _ = src.known_zero(offset, len);
        let _ = src.read_at(&mut buf[..len as usize], offset);
    }
    // Past the end is an error, not a read.
    assert!(src.read_at(&mut buf[..1], size).is_err(), "a read past the end must fail");
}
