//! `OpenOptions::drop_cache`: reading a whole image leaves (almost) none of it in the page cache,
//! while the same read without the option leaves all of it there. Residency is measured with
//! util-linux `fincore`; without it the test prints `SKIPPED:`.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use ferry_image::{open_with, OpenOptions};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
const CHUNK: usize = 4 << 20;

/// Bytes of `path` in the page cache, or `None` without fincore.
fn resident(path: &Path) -> Option<u64> {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Read the whole source chunk by chunk, as a backup does.
fn read_all(path: &Path, drop_cache: bool) {
    let src = open_with(path, OpenOptions { drop_cache }).unwrap();
    let mut buf = vec![0u8; CHUNK];
    for off in (0..SIZE).step_by(CHUNK) {
        src.read_at(&mut buf, off).unwrap();
    }
}

#[test]
fn reads_with_drop_cache_leave_the_page_cache_as_they_found_it() {
    // Not tmpfs: its pages are the file itself and cannot be dropped.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("disk.raw");
    let f = std::fs::File::create(&path).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let block: Vec<u8> = (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for i in 0..SIZE / MIB {
        f.write_all_at(&block, i * MIB).unwrap();
    }
    f.sync_all().unwrap();
    let Some(after_write) = resident(&path) else {
        eprintln!("SKIPPED: fincore (util-linux) is not installed");
        return;
    };
    eprintln!("after write: {after_write} bytes resident");

    read_all(&path, true);
    let dropped = resident(&path).unwrap();
    // Readahead past the last read may stay; a few MiB at most.
    assert!(
        dropped <= 4 * MIB,
        "{dropped} bytes of {SIZE} still cached after reads with drop_cache"
    );

    read_all(&path, false);
    let kept = resident(&path).unwrap();
    assert!(
        kept >= SIZE * 9 / 10,
        "only {kept} bytes cached after plain reads: the comparison proves nothing"
    );
    eprintln!("drop_cache: {dropped} bytes resident after reading {SIZE}; without it {kept}");
}
