//! CRC-32 (IEEE, reflected polynomial 0xEDB88320) as GPT and LVM2 use it.
//!
//! GPT: initial value !0 and a final inversion (the standard CRC-32). LVM2's `calc_crc`: the
//! same register started at [`LVM_INITIAL_CRC`] and never inverted. Same as ferry-probe's
//! (crate-private there).

/// LVM2's CRC seed (`INITIAL_CRC` in lib/misc/crc.h). Frozen by the on-disk format.
pub(crate) const LVM_INITIAL_CRC: u32 = 0xf597_a6cf;

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The standard CRC-32 (GPT header and entry array checksums).
pub(crate) fn crc32(data: &[u8]) -> u32 {
    !update(!0, data)
}

/// LVM2's checksum (label, metadata area header, metadata text).
pub(crate) fn lvm_crc(data: &[u8]) -> u32 {
    update(LVM_INITIAL_CRC, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_values() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
        // LVM's register is the standard one without the inversions.
        assert_eq!(super::lvm_crc(b""), super::LVM_INITIAL_CRC);
    }
}
