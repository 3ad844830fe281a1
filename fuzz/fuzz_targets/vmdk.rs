//! VMDK through `ferry_image::open`: sparse extents ("KDMV" header, footer of streamOptimized
//! images, grain directory and tables, compressed grains with their markers) and text
//! descriptors (createType, extent lines, parent CIDs; an extent names a file beside it, here
//! `flat.img`, which holds the same input bytes). Then reads of the opened disk. The reader
//! opens paths, so the input is written to scratch files (tmpfs when run.sh can).
#![no_main]

use ferry_fuzz::{read_image, scratch_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    scratch_file("flat.img", data);
    let path = scratch_file("disk.vmdk", data);
    if let Ok(src) = ferry_image::open(&path) {
        read_image(src.as_ref());
    }
});
