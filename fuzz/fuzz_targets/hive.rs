//! Windows registry hives from a restored disk (SYSTEM, SOFTWARE, BCD) through the fix-up's own
//! hive reader and writer (`ferry_fixup::hive`): the base block, hbins, nk/vk/sk records,
//! lf/lh/li/ri subkey lists, big-data (db) values; every key and value is walked (bounded, with
//! a visited set: a hostile hive may link a key to its ancestor), the Windows version is read
//! as the fix-up does, the network adapters as the network fix-up reads them, then the fix-up's edit (create a service key path, set values) is applied
//! to a copy, written out and read back.
#![no_main]

use std::collections::HashSet;

use ferry_fixup::hive::{Hive, RegValue};
use ferry_fixup::windows::version;
use libfuzzer_sys::fuzz_target;

/// Most keys walked per input: enough for the seeds' trees, bounded for hostile ones.
const MAX_KEYS: usize = 4096;

fn walk(h: &Hive) {
    let mut seen = HashSet::new();
    let mut todo = vec![h.root()];
    while let Some(k) = todo.pop() {
        if !seen.insert(k) || seen.len() > MAX_KEYS {
            continue;
        }
        let _ = h.key_name(k);
        let _ = h.parent(k);
        if let Ok(values) = h.values(k) {
            for v in values {
                let d = v.decoded();
                assert_eq!(RegValue::from_raw(d.kind(), &d.to_bytes()).kind(), d.kind());
            }
        }
        if let Ok(subs) = h.subkeys(k) {
            todo.extend(subs);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(h) = Hive::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = h.was_dirty();
    walk(&h);
    let _ = version::from_software(&h);
    let _ = version::guess_from_system(&h, "ControlSet001");
    let _ = h.get("Select", "Current");
    // The network fix-up's reader: whatever it accepts is in bounds.
    if let Ok(interfaces) = ferry_fixup::network::windows::read(&h, "ControlSet001") {
        ferry_format::network::NetworkConfig { interfaces }
            .check()
            .expect("adapters read from a hive are in bounds");
    }

    let mut edit = h.clone();
    let Ok(key) = edit.create_path("ControlSet001\\Services\\viostor") else {
        return;
    };
    let values = [
        ("Start", RegValue::Dword(0)),
        ("ImagePath", RegValue::ExpandSz("system32\\drivers\\viostor.sys".into())),
        ("Group", RegValue::Sz("SCSI miniport".into())),
        ("Owners", RegValue::MultiSz(vec!["viostor.inf".into()])),
    ];
    for (name, value) in &values {
        if edit.set_value(key, name, value).is_err() {
            return;
        }
    }
    let written = edit.to_bytes();
    let back = Hive::from_bytes(written).expect("a hive we wrote reads back");
    for (name, value) in &values {
        assert_eq!(
            back.get("ControlSet001\\Services\\viostor", name)
                .expect("the edited key reads back")
                .as_ref(),
            Some(value),
            "value {name} reads back as written"
        );
    }
});
