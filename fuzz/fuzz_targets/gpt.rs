//! GPT (header, entry array, backup header, protective MBR) through `ferry_probe::probe` and the
//! used map, on a sparse in-memory disk (`ferry_fuzz::sparse_decode`). Unless the input's flags
//! say otherwise, the CRCs of the headers at LBA 1 and at the last LBA are resealed as their
//! own fields allow, so mutations reach the checks behind the checksums.
#![no_main]

use ferry_fuzz::{disk::seal_gpt, probe_and_map, sparse_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(mut d) = sparse_decode(data) else {
        return;
    };
    if d.reseal {
        let ss = d.disk.sector_size as usize;
        let sectors = (d.disk.data.len() / ss) as u64;
        if sectors >= 2 {
            seal_gpt(&mut d.disk.data, ss, 1);
            seal_gpt(&mut d.disk.data, ss, sectors - 1);
        }
        // A 4096-byte-sector GPT on a disk that says 512 is looked for too.
        if ss == 512 && sectors >= 24 {
            seal_gpt(&mut d.disk.data, 4096, 1);
            seal_gpt(&mut d.disk.data, 4096, sectors / 8 - 1);
        }
    }
    probe_and_map(&d.disk);
});
