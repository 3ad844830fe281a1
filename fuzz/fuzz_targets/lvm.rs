//! LVM2 physical volumes (label, PV header, metadata area header, metadata text, VG/LV/segment
//! checks) through `ferry_probe::probe` and the used map, on a sparse in-memory disk
//! (`ferry_fuzz::sparse_decode`). Unless the input's flags say otherwise, the label, metadata
//! area and text checksums of a PV at the start of the disk, and of one in the first MBR
//! partition, are resealed so mutations reach the parsers behind them.
#![no_main]

use ferry_fuzz::{disk::reseal_lvm, probe_and_map, sparse_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(mut d) = sparse_decode(data) else {
        return;
    };
    if d.reseal {
        reseal_lvm(&mut d.disk.data, 0);
        if d.disk.data.len() >= 512 {
            let start = u32::from_le_bytes(d.disk.data[454..458].try_into().unwrap());
            let pv = (start as usize).saturating_mul(512);
            if pv > 0 && pv < d.disk.data.len() {
                reseal_lvm(&mut d.disk.data, pv);
            }
        }
    }
    probe_and_map(&d.disk);
});
