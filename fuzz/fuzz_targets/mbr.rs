//! MBR and EBR chains (extended and logical partitions) through `ferry_probe::probe` and the
//! used map, on a sparse in-memory disk (`ferry_fuzz::sparse_decode`).
#![no_main]

use ferry_fuzz::{probe_and_map, sparse_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(d) = sparse_decode(data) {
        probe_and_map(&d.disk);
    }
});
