//! The bootability report's initramfs listing (`ferry_fixup::report::initrd::list`): concatenated
//! newc cpio archives from a restored disk's /boot, with compressed segments found by magic.
//! The decompression seam is the real listing's; here a "compressed" segment's bytes after its
//! magic stand for its plaintext (the external tools are not what is tested).
#![no_main]

use ferry_fixup::report::initrd::{list, Compression};
use libfuzzer_sys::fuzz_target;

fn magic_len(c: Compression) -> usize {
    match c {
        Compression::None => 0,
        Compression::Gzip => 2,
        Compression::Zstd | Compression::Lz4 => 4,
        Compression::Xz => 6,
        Compression::Bzip2 => 3,
    }
}

fuzz_target!(|data: &[u8]| {
    let plain = |c: Compression, d: &[u8]| -> Result<Vec<u8>, String> {
        Ok(d.get(magic_len(c)..).unwrap_or_default().to_vec())
    };
    if let Ok(names) = list(data, &plain) {
        let total: usize = names.iter().map(String::len).sum();
        assert!(total <= 2 * data.len(), "names come from the input");
    }
});
