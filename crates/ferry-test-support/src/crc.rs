//! CRCs written out here, independent of the code under test, for building hostile images and
//! re-sealing them after a mutation. The table is the bit-by-bit register step run once per
//! byte value at compile time: the fuzz targets reseal up to 1 MiB per input.

/// One byte through the reflected CRC-32 register (polynomial 0xEDB88320), for each byte value.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The reflected CRC-32 (polynomial 0xEDB88320) of `data` continued from `crc`, without the
/// initial or final inversion: the building block of [`crc32`] and [`lvm_crc`].
pub fn crc_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-32 as GPT headers and entry arrays carry it.
pub fn crc32(data: &[u8]) -> u32 {
    !crc_update(!0, data)
}

/// LVM2's checksum: the same CRC seeded with 0xf597a6cf and not inverted.
pub fn lvm_crc(data: &[u8]) -> u32 {
    crc_update(0xf597_a6cf, data)
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32 over "123456789".
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn table_matches_the_bitwise_register() {
        let bitwise = |mut crc: u32, data: &[u8]| {
            for &b in data {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        0xedb8_8320 ^ (crc >> 1)
                    } else {
                        crc >> 1
                    };
                }
            }
            crc
        };
        let data: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x80]).collect();
        for seed in [0, !0, 0xf597_a6cf] {
            assert_eq!(super::crc_update(seed, &data), bitwise(seed, &data));
        }
    }
}
