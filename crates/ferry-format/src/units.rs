//! Byte counts as people read them: the one formatter every crate prints sizes and rates with,
//! so a size reads the same in a plan, a progress line, a job's event log and the appliance's
//! tables.
//!
//! Rules (table-tested below):
//! - binary units (KiB = 1024 bytes, up to EiB, which holds every `u64`);
//! - below 1 KiB the exact count: `17 B`;
//! - otherwise the largest unit the value reaches, with one decimal rounded half up, and the
//!   decimal dropped when it is zero: `1.5 GiB`, `30 GiB`, `1023.9 KiB`;
//! - a value that rounds up to 1024 of a unit is written in the next one: `1 MiB`, not
//!   `1024 KiB`.
//!
//! Integer arithmetic only, so the text never depends on float rounding.

const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// `bytes` in binary units: `17 B`, `4 KiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >> (10 * (unit + 2)) > 0 {
        unit += 1;
    }
    let mut tenths = rounded_tenths(bytes, unit);
    // 1023.95 KiB and up rounds to 1024.0 KiB: say 1 MiB instead.
    if tenths >= 10240 && unit + 1 < UNITS.len() {
        unit += 1;
        tenths = rounded_tenths(bytes, unit);
    }
    let (whole, tenth) = (tenths / 10, tenths % 10);
    if tenth == 0 {
        format!("{whole} {}", UNITS[unit])
    } else {
        format!("{whole}.{tenth} {}", UNITS[unit])
    }
}

/// `bytes` in tenths of `UNITS[unit]`, rounded half up (u128: `u64::MAX * 10` does not fit u64).
fn rounded_tenths(bytes: u64, unit: usize) -> u128 {
    let div = 1u128 << (10 * (unit + 1));
    (u128::from(bytes) * 10 + div / 2) / div
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn table() {
        const KIB: u64 = 1 << 10;
        const MIB: u64 = 1 << 20;
        const GIB: u64 = 1 << 30;
        let cases: &[(u64, &str)] = &[
            (0, "0 B"),
            (1, "1 B"),
            (17, "17 B"),
            (1023, "1023 B"),
            (KIB, "1 KiB"),
            (KIB + 51, "1 KiB"),   // 1.0498: rounds down to 1.0, decimal dropped
            (KIB + 52, "1.1 KiB"), // 1.0508
            (1280, "1.3 KiB"),     // 1.25: half rounds up
            (4 * KIB, "4 KiB"),
            (MIB - 103, "1023.9 KiB"), // 1023.8994
            (MIB - 51, "1 MiB"),       // 1023.95: rounds to 1024 KiB, written as 1 MiB
            (MIB - 1, "1 MiB"),
            (MIB, "1 MiB"),
            (512 * MIB, "512 MiB"),
            (GIB - 1, "1 GiB"),
            (3 << 29, "1.5 GiB"),
            (19 * GIB, "19 GiB"),
            (30 * GIB, "30 GiB"),
            (20_401_094_656, "19 GiB"),
            (1 << 40, "1 TiB"),
            (5 << 50, "5 PiB"),
            (1 << 60, "1 EiB"),
            (u64::MAX, "16 EiB"),
        ];
        for &(bytes, want) in cases {
            assert_eq!(human_bytes(bytes), want, "human_bytes({bytes})");
        }
    }
}
