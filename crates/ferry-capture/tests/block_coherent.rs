//! A block device under a mounted filesystem reads as what the filesystem wrote, even when the
//! device's page cache holds older pages of the same blocks.
//!
//! The hazard: ext4 writes file data through the file's cache, not the device's, so a page of
//! the device cache brought in earlier (a previous backup's read, its readahead) keeps the old
//! bytes after the filesystem has written and synced new ones. The test fills the device cache
//! with a plain buffered read of the free space, writes and syncs a file, shows that a plain
//! buffered read still returns the old bytes (else it proves nothing), and checks that
//! `ferry_image` returns the file's bytes.
//!
//! Here, not in ferry-image, because it is about reading a source that a mounted filesystem
//! writes (the capture's concern) and shares the ext4-on-loop fixture. Needs root, `losetup`,
//! `mkfs.ext4` and `mount`; prints `SKIPPED: reason` otherwise.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

use common::{sh, skip_reason, Ext4, EXT4_TOOLS};

const MIB: usize = 1 << 20;
const DEVICE: usize = 64 * MIB;
const FILE: usize = 2 * MIB;
const BLOCK: usize = 4096;

/// Pseudo-random bytes no filesystem structure contains.
fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// How many of the file's blocks appear at a block boundary of `device`.
fn blocks_found(device: &[u8], file: &[u8]) -> usize {
    let on_device: HashSet<&[u8]> = device.chunks(BLOCK).collect();
    file.chunks(BLOCK).filter(|b| on_device.contains(b)).count()
}

fn buffered_read(dev: &Path) -> Vec<u8> {
    let mut all = Vec::with_capacity(DEVICE);
    std::fs::File::open(dev)
        .unwrap()
        .read_to_end(&mut all)
        .unwrap();
    all
}

#[test]
fn a_mounted_device_reads_as_the_filesystem_wrote_it() {
    if let Some(why) = skip_reason(&EXT4_TOOLS) {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let fs = match Ext4::new(DEVICE as u64) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("SKIPPED: cannot mount ext4 on a loop device here: {e}");
            return;
        }
    };
    // Bring every block of the device, free ones included, into the device's page cache.
    let before = buffered_read(&fs.loopdev);
    assert_eq!(before.len(), DEVICE);

    let data = pattern(FILE);
    let path = fs.mnt.join("data.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    sh("sync", &["-f", path.to_str().unwrap()]).unwrap();

    let stale = blocks_found(&buffered_read(&fs.loopdev), &data);
    assert!(
        stale < FILE / BLOCK,
        "a plain buffered read of {} already sees the file ({stale} blocks): the device cache \
         was not stale, so this run proves nothing",
        fs.loopdev.display()
    );

    let src = ferry_image::open(&fs.loopdev).unwrap();
    assert_eq!(src.size(), DEVICE as u64);
    let mut ours = vec![0u8; DEVICE];
    // Chunk-sized reads, plus one that starts and ends off a sector boundary.
    for (i, chunk) in ours.chunks_mut(4 * MIB).enumerate() {
        src.read_at(chunk, (i * 4 * MIB) as u64).unwrap();
    }
    let mut odd = vec![0u8; 3 * MIB + 1001];
    src.read_at(&mut odd, 777).unwrap();
    assert!(odd == ours[777..777 + odd.len()], "unaligned read differs");

    let found = blocks_found(&ours, &data);
    eprintln!(
        "file blocks seen: plain buffered read {stale} of {}, ferry-image {found}",
        FILE / BLOCK
    );
    assert_eq!(
        found,
        FILE / BLOCK,
        "ferry-image read {} stale: only {found} of the file's {} blocks",
        fs.loopdev.display(),
        FILE / BLOCK
    );
}
