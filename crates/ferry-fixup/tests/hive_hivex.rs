//! Our regf writer checked by hivex: every key and value we add to the real hives reads
//! back with hivexsh/hivexget, and `hivexregedit --export` before and after differs by
//! exactly the added keys and values.

mod common;

use common::*;
use ferry_fixup::hive::{Hive, RegValue};
use std::collections::{BTreeMap, BTreeSet};

fn values() -> Vec<(&'static str, RegValue)> {
    vec![
        ("Type", RegValue::Dword(1)),
        (
            "ImagePath",
            RegValue::ExpandSz("system32\\drivers\\ferry.sys".into()),
        ),
        ("Group", RegValue::Sz("SCSI miniport".into())),
        ("Multi", RegValue::MultiSz(vec!["one".into(), "two".into()])),
        ("Bin", RegValue::Binary(vec![0x01, 0xff, 0x00, 0x00])),
        ("BinLong", RegValue::Binary((0..64u8).collect())),
        (
            "Big",
            RegValue::Binary((0..20_000u32).map(|i| (i % 251) as u8).collect()),
        ),
        ("", RegValue::Sz("default".into())),
    ]
}

fn check(name: &str, base: &str, many_under: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = testdata_to(dir.path(), name, name);
    let before = export(&path);

    let mut h = Hive::from_bytes(std::fs::read(&path).unwrap()).unwrap();
    let new_key = format!("{base}\\FerryTest\\Sub Key");
    let k = h.create_path(&new_key).unwrap();
    for (n, v) in values() {
        h.set_value(k, n, &v).unwrap();
    }
    // Grow an existing, populated list (and its ri, where it has one).
    let many = h.open(many_under).unwrap().expect(many_under);
    let names: Vec<String> = (0..300)
        .map(|i| format!("ferry{:03}_{}", (i * 7919) % 1000, i))
        .collect();
    for n in &names {
        h.create_key(many, n).unwrap();
    }
    // A new value on an existing key.
    let existing = h.open(base).unwrap().unwrap();
    h.set_value(existing, "FerryAdded", &RegValue::Dword(42))
        .unwrap();
    std::fs::write(&path, h.to_bytes()).unwrap();

    // hivexsh sees the new keys, hivexget reads every value back.
    let ls = hivexsh_ls(&path, &format!("\\{base}\\FerryTest"));
    assert_eq!(ls, vec!["Sub Key".to_owned()], "{name}");
    let listed: BTreeSet<String> = hivexsh_ls(&path, &format!("\\{many_under}"))
        .into_iter()
        .collect();
    assert!(
        names.iter().all(|n| listed.contains(n)),
        "{name}: hivexsh lists every added subkey"
    );
    let lines = hivexget_key(&path, &format!("\\{new_key}"));
    for (n, v) in values() {
        assert!(
            lines.contains(&reg_line(n, &v)),
            "{name}: hivexget does not show {:.200}",
            reg_line(n, &v)
        );
    }
    assert_eq!(hivexget(&path, &format!("\\{new_key}"), "Type"), "1");
    assert_eq!(
        hivexget(&path, &format!("\\{new_key}"), "Group"),
        "SCSI miniport"
    );
    assert_eq!(hivexget(&path, &format!("\\{base}"), "FerryAdded"), "42");

    // The export differs by exactly what we added.
    let after = export(&path);
    let d = diff(&before, &after);
    assert!(
        d.removed.is_empty(),
        "{name}: removed or changed: {:?}",
        d.removed
    );
    let mut want_keys: BTreeSet<String> = names
        .iter()
        .map(|n| format!("\\{many_under}\\{n}"))
        .collect();
    want_keys.insert(format!("\\{base}\\FerryTest"));
    want_keys.insert(format!("\\{new_key}"));
    let lower = |s: &String| s.to_lowercase();
    let got_keys: BTreeSet<String> = d.added_keys.iter().map(lower).collect();
    let want_keys: BTreeSet<String> = want_keys.iter().map(lower).collect();
    assert!(
        got_keys == want_keys,
        "{name}: added keys differ: {:.2000}",
        format!(
            "{:?}",
            got_keys
                .symmetric_difference(&want_keys)
                .collect::<Vec<_>>()
        )
    );
    let mut want_lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    want_lines.insert(
        format!("\\{base}"),
        vec![export_line("FerryAdded", &RegValue::Dword(42))],
    );
    let mut sub: Vec<String> = values().iter().map(|(n, v)| export_line(n, v)).collect();
    sub.sort();
    want_lines.insert(format!("\\{new_key}"), sub);
    let want_lines: BTreeMap<String, Vec<String>> = want_lines
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    let mut got: BTreeMap<String, Vec<String>> = d
        .added_lines
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(k, v)| (k.to_lowercase(), v.clone()))
        .collect();
    for v in got.values_mut() {
        v.sort();
    }
    assert!(
        got == want_lines,
        "{name}: export added lines differ: {:.2000}",
        format!("{got:?}")
    );
}

#[test]
fn system_legacy_edits_read_back_with_hivex() {
    // ControlSet001\Enum\Root has an "ri" list in this hive? Services is the big one.
    check(
        "SYSTEM-legacy",
        "ControlSet001\\Services\\Tcpip",
        "ControlSet001\\Services",
    );
}

#[test]
fn system_modern_edits_read_back_with_hivex() {
    check(
        "SYSTEM-modern",
        "ControlSet001\\Services\\Tcpip",
        "ControlSet001\\Services",
    );
}

#[test]
fn bcd_edits_read_back_with_hivex() {
    check("BCD", "Objects", "Objects");
}
