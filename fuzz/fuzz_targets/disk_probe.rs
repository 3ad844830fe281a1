//! A whole disk as backup-agent reads it: `ferry_probe::probe` (GPT or MBR/EBR, LVM2, the
//! filesystem superblocks of ext2/3/4, xfs, vfat, ntfs, btrfs, swap) and `used_map` (their
//! allocation bitmaps and free-space trees), on a sparse in-memory disk
//! (`ferry_fuzz::sparse_decode`). No checksums are resealed: this is what arrives.
#![no_main]

use ferry_fuzz::{probe_and_map, sparse_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(d) = sparse_decode(data) {
        probe_and_map(&d.disk);
    }
});
