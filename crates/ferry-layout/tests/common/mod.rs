//! Host test helpers: sparse images, the real tools, loop devices, applying a plan's patches.
// Each test binary uses its own subset of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferry_format::layout::DiskLayout;
use ferry_layout::{DiskMapping, SourceDisk, TargetDisk};
pub use ferry_test_support::tools::{have, image, output, run, run_stdin, write_into, Loop};

pub const MIB: u64 = 1 << 20;
/// LVM commands write no backup/archive files under /etc.
pub const NO_BACKUP: &str = "backup { backup = 0 archive = 0 }";

/// What the restore does for a larger target: the source's bytes at the same offsets on a
/// larger (sparse) disk.
pub fn restore_copy(src: &Path, dst_name: &str, size: u64) -> PathBuf {
    let dst = src.with_file_name(dst_name);
    std::fs::copy(src, &dst).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dst)
        .unwrap()
        .set_len(size)
        .unwrap();
    dst
}

/// Write a mapping's patches into the target image.
pub fn apply(img: &Path, m: &DiskMapping) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    for p in &m.patches {
        f.write_all_at(&p.bytes, p.offset).unwrap();
    }
}

/// The layout ferry-probe reads off an image file (or block device).
pub fn probe(path: &Path) -> DiskLayout {
    let disk = ferry_image::open(path).unwrap();
    ferry_probe::probe(disk.as_ref()).unwrap()
}

pub fn source(name: &str, img: &Path) -> SourceDisk {
    let layout = probe(img);
    SourceDisk {
        name: name.into(),
        size: layout.size,
        logical_sector_size: layout.logical_sector_size,
        layout: Some(layout),
        used_bytes: 0,
    }
}

pub fn target(path: &Path, size: u64, ss: u32) -> TargetDisk {
    TargetDisk {
        path: path.to_str().unwrap().into(),
        size,
        logical_sector_size: ss,
        physical_sector_size: ss,
        serial: None,
        model: None,
        blank: true,
    }
}
