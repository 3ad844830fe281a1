//! `DiskIndex::decode`: a disk index as the appliance receives it from backup-agent
//! (`PUT …/index`) and as restore-agent downloads it. What decodes encodes back to the same bytes.
#![no_main]

use ferry_format::DiskIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(index) = DiskIndex::decode(data) {
        assert_eq!(index.encode(), data, "decode/encode round trip");
        let (a, b, c) = index.counts();
        assert_eq!(a + b + c, index.entries.len() as u64);
        if !index.entries.is_empty() {
            let (offset, len) = index.range(index.entries.len() - 1);
            assert_eq!(offset + len as u64, index.disk_size);
        }
    }
});
