//! Windows driver INF files (from the virtio-win driver folder the fix-up installs from):
//! `ferry_fixup::windows::inf` text decoding (UTF-16LE with or without BOM, UTF-8, Latin-1),
//! sections, entries, `%strings%` expansion, line continuations, then the driver facts the
//! fix-up writes into the registry (service, binary, class, hardware ids, PCI ids).
#![no_main]

use ferry_fixup::windows::{inf, registry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = inf::decode(data);
    let Ok(parsed) = inf::parse(&text) else {
        return;
    };
    for (name, entries) in &parsed.sections {
        assert_eq!(parsed.section(name).len(), entries.len());
        for e in entries.iter().take(64) {
            for v in &e.values {
                let _ = parsed.expand(v);
            }
        }
    }
    let direct = parsed.driver();
    assert_eq!(direct, inf::driver_from_bytes(data), "parse is deterministic");
    if let Ok(d) = direct {
        let _ = registry::DriverKind::of(&d);
        let _ = registry::pci_ids(&d);
    }
});
