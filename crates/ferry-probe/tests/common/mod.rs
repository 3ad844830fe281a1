//! Test helpers: disks over files, blkid, patching image files; the in-memory disk, the tables
//! and PVs built by hand and the checksum resealing come from `ferry_test_support::disk`.
// Each test binary uses its own subset of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_image::{DiskSource, ImageError, ImageFormat};
pub use ferry_test_support::crc::{crc32, lvm_crc};
pub use ferry_test_support::disk::{
    build_gpt, build_mbr, build_pv, gpt_header, mbr_entry, reseal_gpt, reseal_lvm, seal_gpt,
    vg_text, Ebr, MemDisk,
};
pub use ferry_test_support::tools::{have, image, run, run_stdin, write_into};

/// A disk over an image file.
pub struct FileDisk {
    file: std::fs::File,
    path: PathBuf,
    size: u64,
}

impl FileDisk {
    pub fn open(path: &Path) -> FileDisk {
        let file = std::fs::File::open(path).unwrap();
        let size = file.metadata().unwrap().len();
        FileDisk {
            file,
            path: path.to_path_buf(),
            size,
        }
    }
}

impl DiskSource for FileDisk {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(ImageError::OutOfRange {
                path: self.path.clone(),
                offset,
                len: buf.len(),
                size: self.size,
            });
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| ImageError::Read {
                path: self.path.clone(),
                offset,
                source,
            })
    }
    fn format(&self) -> ImageFormat {
        ImageFormat::Raw
    }
}

/// `blkid -p -o export` of `len` bytes at `offset` of `path` (whole file when `None`).
pub fn blkid(path: &Path, range: Option<(u64, u64)>) -> HashMap<String, String> {
    let mut args = vec!["-p".to_string(), "-o".into(), "export".into()];
    if let Some((offset, len)) = range {
        args.extend([
            "-O".into(),
            offset.to_string(),
            "-S".into(),
            len.to_string(),
        ]);
    }
    args.push(path.to_str().unwrap().into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = Command::new("blkid").args(&args).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), unescape(v)))
        .collect()
}

/// Undo blkid's export escaping (a backslash before a special character).
fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

pub fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}
