//! The blank check before any restore write (`ferry_engine::contents::examine`): Ferry's
//! in-progress marker (`ferry_format::marker::RestoreMarker::decode`: magic, version, length,
//! JSON), the signatures it names (GPT, MBR, ext, XFS, btrfs, NTFS, FAT, LVM, swap, LUKS, md,
//! bcache, ISO 9660 with its volume id) at both ends, the usual partition starts and samples
//! over the disk; on a sparse in-memory disk (`ferry_fuzz::sparse_decode`). A marker that
//! decodes encodes back to bytes that decode to the same marker.
#![no_main]

use std::os::unix::fs::FileExt;

use ferry_engine::contents::{examine, Contents, END_LEN};
use ferry_format::marker::{RestoreMarker, MARKER_LEN};
use ferry_fuzz::sparse_decode;
use libfuzzer_sys::fuzz_target;

const MAX_DISK: usize = 2 << 20;

/// The disk as the file the blank check reads with `pread`.
struct Mem(Vec<u8>);

impl FileExt for Mem {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
    fn write_at(&self, _: &[u8], _: u64) -> std::io::Result<usize> {
        panic!("the blank check wrote to the disk");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(mut d) = sparse_decode(data) else {
        return;
    };
    // The check reads about 19 MiB of a large disk, every byte compared under the fuzzer's
    // instrumentation; 2 MiB still has a head, a tail and samples between them.
    d.disk.data.truncate(MAX_DISK);
    let disk = Mem(d.disk.data);
    let head = &disk.0[..MARKER_LEN.min(disk.0.len())];
    if let Ok(Some(m)) = RestoreMarker::decode(head) {
        let again = RestoreMarker::decode(&m.encode()).expect("an encoded marker decodes");
        assert_eq!(again.as_ref(), Some(&m), "marker round trip");
    }
    if let Ok(c) = examine(&disk, disk.0.len() as u64) {
        let _ = c.describe();
        let _ = c.protected();
        let ends = END_LEN as usize;
        let tail = disk.0.len().saturating_sub(ends);
        let mut looked = disk.0[..ends.min(disk.0.len())].iter().chain(&disk.0[tail..]);
        if looked.any(|&b| b != 0) {
            assert_ne!(c, Contents::Blank, "non-zero bytes in the first or last MiB");
        }
    }
});
