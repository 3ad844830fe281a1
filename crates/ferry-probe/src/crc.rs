//! CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as GPT and LVM2 use it.
//!
//! GPT uses the standard form (initial value !0, final inversion). LVM2's `calc_crc` runs the
//! same register with initial value [`LVM_INITIAL_CRC`] and no final inversion.

/// LVM2's CRC seed (`INITIAL_CRC` in lib/misc/crc.h). Frozen by the on-disk format.
pub const LVM_INITIAL_CRC: u32 = 0xf597_a6cf;

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

/// Feed `data` into the CRC register `crc` (no pre- or post-inversion).
pub(crate) fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The standard CRC-32 of `data` (GPT header and entry array checksums).
pub fn crc32(data: &[u8]) -> u32 {
    !update(!0, data)
}

/// LVM2's checksum of `data` (label header, metadata area header, metadata text).
pub fn lvm_crc(data: &[u8]) -> u32 {
    update(LVM_INITIAL_CRC, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn lvm_crc_matches_the_nibble_table_reference() {
        // LVM2's calc_crc, transcribed: two 4-bit table steps per byte.
        const NIBBLE: [u32; 16] = [
            0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac, 0x76dc4190, 0x6b6b51f4, 0x4db26158,
            0x5005713c, 0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c, 0x9b64c2b0, 0x86d3d2d4,
            0xa00ae278, 0xbdbdf21c,
        ];
        let data: Vec<u8> = (0..=255u8)
            .chain(b"LVM2 x[5A%r0N*>".iter().copied())
            .collect();
        let mut crc = LVM_INITIAL_CRC;
        for &b in &data {
            crc ^= u32::from(b);
            crc = (crc >> 4) ^ NIBBLE[(crc & 0xf) as usize];
            crc = (crc >> 4) ^ NIBBLE[(crc & 0xf) as usize];
        }
        assert_eq!(lvm_crc(&data), crc);
    }
}
