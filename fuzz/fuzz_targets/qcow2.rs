//! qcow2 images through `ferry_image::open` (header, header extensions, feature bits, L1/L2
//! tables, compressed clusters) and reads of the opened disk. The reader opens paths, so each
//! input is written to a scratch file (tmpfs when run.sh can). The first four bytes are forced
//! to the qcow2 magic so every input reaches the qcow2 reader.
#![no_main]

use ferry_fuzz::{read_image, scratch_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let mut bytes = data.to_vec();
    bytes[..4].copy_from_slice(b"QFI\xfb");
    let path = scratch_file("disk.qcow2", &bytes);
    if let Ok(src) = ferry_image::open(&path) {
        assert_eq!(src.format(), ferry_image::ImageFormat::Qcow2);
        read_image(src.as_ref());
    }
});
