use super::write::{lf_hint, lh_hash};
use super::*;
use proptest::prelude::*;
use std::collections::HashSet;
use std::path::PathBuf;

/// A real hive from shared/testdata/windows, decompressed in memory (`xz -dc`).
pub(crate) fn testdata(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/windows")
        .join(format!("{name}.xz"));
    let out = std::process::Command::new("xz")
        .arg("-dc")
        .arg(&p)
        .output()
        .expect("run xz");
    assert!(
        out.status.success(),
        "xz -dc {}: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Visits up to `budget` keys, reading every value; returns (keys, values).
fn walk(h: &Hive, budget: usize) -> Result<(usize, usize), HiveError> {
    let (mut keys, mut values) = (0, 0);
    let mut stack = vec![h.root()];
    let mut seen = HashSet::new();
    while let Some(k) = stack.pop() {
        if keys >= budget || !seen.insert(k) {
            continue;
        }
        keys += 1;
        h.key_name(k)?;
        values += h.values(k)?.len();
        stack.extend(h.subkeys(k)?);
    }
    Ok((keys, values))
}

#[test]
fn reads_the_real_hives() {
    for (name, dirty) in [("SYSTEM-legacy", false), ("SYSTEM-modern", true)] {
        let h = Hive::from_bytes(testdata(name)).unwrap();
        assert_eq!(h.was_dirty(), dirty, "{name}");
        assert_eq!(
            h.get("Select", "Current").unwrap(),
            Some(RegValue::Dword(1)),
            "{name}"
        );
        assert!(
            h.open("controlset001\\SERVICES\\Tcpip").unwrap().is_some(),
            "{name}"
        );
        let (keys, values) = walk(&h, usize::MAX).unwrap();
        assert!(
            keys > 5000 && values > 10000,
            "{name}: {keys} keys {values} values"
        );
    }
    let bcd = Hive::from_bytes(testdata("BCD")).unwrap();
    assert!(bcd.open("Objects").unwrap().is_some());
}

/// Our sort order and lh hash agree with what Windows wrote into every list.
#[test]
fn stored_lists_agree_with_our_order_and_hashes() {
    let h = Hive::from_bytes(testdata("SYSTEM-legacy")).unwrap();
    let (mut lists, mut ri) = (0, 0);
    let mut stack = vec![h.root()];
    while let Some(k) = stack.pop() {
        let nk = h.nk(k).unwrap();
        if nk.n_sub == 0 || nk.sub_list == NO_CELL {
            continue;
        }
        let leaves = h.leaves(nk.sub_list).unwrap();
        ri += usize::from(leaves[0].0 != nk.sub_list);
        let mut prev: Option<Vec<u16>> = None;
        for (_, kind, entries) in leaves {
            lists += 1;
            for (off, hash) in entries {
                let name = h.key_name(KeyId(off)).unwrap();
                match kind {
                    ListKind::Lh => assert_eq!(hash, lh_hash(&name), "{name}"),
                    ListKind::Lf if name.is_ascii() => assert_eq!(hash, lf_hint(&name), "{name}"),
                    _ => {}
                }
                let up = upcase_units(&name);
                if let Some(p) = &prev {
                    assert!(p < &up, "{name} out of order");
                }
                prev = Some(up);
                stack.push(KeyId(off));
            }
        }
    }
    assert!(lists > 1000 && ri > 0, "{lists} lists, {ri} ri");
}

#[test]
fn unmodified_hive_is_written_back_unchanged() {
    let raw = testdata("BCD");
    assert_eq!(Hive::from_bytes(raw.clone()).unwrap().to_bytes(), raw);
}

#[test]
fn created_keys_and_values_read_back_after_a_reparse() {
    let mut h = Hive::from_bytes(testdata("BCD")).unwrap();
    let k = h.create_path("Ferry\\Test\\Deep").unwrap();
    assert_eq!(
        h.create_path("FERRY\\test\\deep").unwrap(),
        k,
        "create is idempotent"
    );
    let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    let values = [
        ("Sz", RegValue::Sz("hello".into())),
        ("Expand", RegValue::ExpandSz("%SystemRoot%\\x".into())),
        ("Dword", RegValue::Dword(0xdead_beef)),
        ("Multi", RegValue::MultiSz(vec!["a".into(), "bc".into()])),
        ("Bin", RegValue::Binary(vec![1, 2, 3, 4, 5, 6])),
        ("Big", RegValue::Binary(big.clone())),
        ("", RegValue::Sz("default".into())),
        ("Ünïcode", RegValue::Dword(7)),
    ];
    for (name, v) in &values {
        h.set_value(k, name, v).unwrap();
    }
    h.set_value(k, "dword", &RegValue::Dword(1)).unwrap();
    h.set_value(k, "big", &RegValue::Binary(vec![9; 20_000]))
        .unwrap();
    let h2 = Hive::from_bytes(h.to_bytes()).unwrap();
    assert!(!h2.was_dirty());
    let k2 = h2.open("ferry\\TEST\\deep").unwrap().unwrap();
    assert_eq!(h2.values(k2).unwrap().len(), values.len());
    for (name, v) in &values {
        let got = h2.value(k2, name).unwrap().unwrap().decoded();
        match *name {
            "Dword" => assert_eq!(got, RegValue::Dword(1)),
            "Big" => assert_eq!(got, RegValue::Binary(vec![9; 20_000])),
            _ => assert_eq!(&got, v, "{name}"),
        }
    }
    let nk = h2.nk(k2).unwrap();
    let root = h2.nk(h2.root()).unwrap();
    assert_eq!(nk.sk, root.sk, "inherits the security cell");
}

#[test]
fn new_keys_bump_the_security_refcount() {
    let mut h = Hive::from_bytes(testdata("BCD")).unwrap();
    let root = h.nk(h.root()).unwrap();
    let sk = h.record(root.sk, b"sk").unwrap();
    let before = h.u32_at(sk.start + 0x0C).unwrap();
    h.create_path("A\\B").unwrap();
    assert_eq!(h.u32_at(sk.start + 0x0C).unwrap(), before + 2);
}

#[test]
fn many_subkeys_stay_sorted_and_the_hive_grows_in_pages() {
    let raw = testdata("BCD");
    let mut h = Hive::from_bytes(raw.clone()).unwrap();
    let parent = h.create_path("Many").unwrap();
    let mut names: Vec<String> = (0..1500u32)
        .map(|i| format!("k{:x}_{}", i.wrapping_mul(2_654_435_761), i % 7))
        .collect();
    for n in &names {
        h.create_key(parent, n).unwrap();
    }
    let out = h.to_bytes();
    assert!(out.len() > raw.len() && out.len() % 0x1000 == 0);
    let h2 = Hive::from_bytes(out).unwrap();
    let got: Vec<String> = h2
        .subkeys(parent)
        .unwrap()
        .into_iter()
        .map(|k| h2.key_name(k).unwrap())
        .collect();
    names.sort_by_key(|n| upcase_units(n));
    assert_eq!(got, names);
    assert_eq!(h2.nk(parent).unwrap().n_sub, 1500);
}

#[test]
fn inserts_into_ri_indexed_lists() {
    let mut h = Hive::from_bytes(testdata("SYSTEM-legacy")).unwrap();
    // Find a key whose subkey list is an "ri".
    let mut stack = vec![h.root()];
    let mut target = None;
    while let Some(k) = stack.pop() {
        let nk = h.nk(k).unwrap();
        if nk.n_sub > 0 && h.list(nk.sub_list).unwrap().0 == ListKind::Ri {
            target = Some(k);
            break;
        }
        stack.extend(h.subkeys(k).unwrap());
    }
    let key = target.expect("SYSTEM-legacy has an ri list");
    let before = h.subkeys(key).unwrap().len();
    let names = ["!first", "mmmm-ferry", "~~~last", "0000"];
    for n in names {
        h.create_key(key, n).unwrap();
    }
    let h2 = Hive::from_bytes(h.to_bytes()).unwrap();
    let subs = h2.subkeys(key).unwrap();
    assert_eq!(subs.len(), before + names.len());
    let up: Vec<_> = subs
        .iter()
        .map(|&k| upcase_units(&h2.key_name(k).unwrap()))
        .collect();
    assert!(up.windows(2).all(|w| w[0] < w[1]));
    for n in names {
        assert!(h2.subkey(key, n).unwrap().is_some(), "{n}");
    }
}

/// Found by the `hive` fuzz target: a parent whose stored subkey count disagrees with its list
/// (here 0xFFFFFFFF) must not lose its subkeys when one is added (the count wrapped to 0).
#[test]
fn a_hostile_subkey_count_does_not_hide_the_subkeys() {
    let mut raw = testdata("BCD");
    let root = Hive::from_bytes(raw.clone()).unwrap().root();
    let count_at = BASE_BLOCK_LEN + root.0 as usize + 4 + 0x14;
    for stored in [u32::MAX, 1, 1000] {
        raw[count_at..count_at + 4].copy_from_slice(&stored.to_le_bytes());
        let mut h = Hive::from_bytes(raw.clone()).unwrap();
        let before = h.subkeys(h.root()).unwrap().len();
        h.create_path("ControlSet001\\Services\\viostor").unwrap();
        let h2 = Hive::from_bytes(h.to_bytes()).unwrap();
        assert_eq!(
            h2.subkeys(h2.root()).unwrap().len(),
            before + 1,
            "stored count {stored}"
        );
        assert!(h2
            .open("ControlSet001\\Services\\viostor")
            .unwrap()
            .is_some());
        assert_eq!(h2.nk(h2.root()).unwrap().n_sub as usize, before + 1);
    }
}

#[test]
fn corrupt_hives_name_the_offset() {
    let raw = testdata("BCD");
    let cases: Vec<(Vec<u8>, u64)> = vec![
        (raw[..100].to_vec(), 0),
        (
            {
                let mut d = raw.clone();
                d[0x100] ^= 1;
                d
            },
            0x1FC,
        ),
        (
            {
                let mut d = raw.clone();
                d[0x1000] = b'x';
                d
            },
            0x1000,
        ),
    ];
    for (data, offset) in cases {
        let e = Hive::from_bytes(data).unwrap_err();
        assert_eq!(e.offset, offset, "{e}");
    }
}

fn fix_checksum(d: &mut [u8]) {
    if d.len() >= BASE_BLOCK_LEN {
        let sum = checksum(&d[..BASE_BLOCK_LEN]);
        d[0x1FC..0x200].copy_from_slice(&sum.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, .. ProptestConfig::default() })]

    /// Mutated real hives give errors, never panics, when read and edited.
    #[test]
    fn mutated_hives_never_panic(
        muts in proptest::collection::vec((0usize..32768, any::<u8>()), 1..12),
        truncate in proptest::option::of(0usize..32768),
        fix in any::<bool>(),
    ) {
        let mut d = BCD.with(|b| b.clone());
        for (pos, byte) in muts {
            if let Some(x) = d.get_mut(pos) { *x = byte; }
        }
        if let Some(t) = truncate { d.truncate(t.max(1)); }
        if fix { fix_checksum(&mut d); }
        if let Ok(mut h) = Hive::from_bytes(d) {
            let _ = walk(&h, 5000);
            if let Ok(k) = h.create_path("Objects\\Ferry\\X") {
                let _ = h.set_value(k, "V", &RegValue::Sz("v".into()));
                let _ = h.set_value(k, "B", &RegValue::Binary(vec![0; 20000]));
            }
            let _ = Hive::from_bytes(h.to_bytes()).map(|h2| walk(&h2, 5000));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// The same over a large SYSTEM hive, mutating its first 256 KiB (base block, the
    /// root and the top of the tree).
    #[test]
    fn mutated_system_hive_never_panics(
        muts in proptest::collection::vec((0usize..262_144, any::<u8>()), 1..16),
    ) {
        let mut d = SYSTEM.with(|b| b.clone());
        for (pos, byte) in muts {
            d[pos] = byte;
        }
        fix_checksum(&mut d);
        if let Ok(mut h) = Hive::from_bytes(d) {
            let _ = walk(&h, 3000);
            let _ = h.open("ControlSet001\\Services\\Tcpip");
            if let Ok(k) = h.create_path("ControlSet001\\Services\\ferry") {
                let _ = h.set_value(k, "Start", &RegValue::Dword(0));
            }
        }
    }
}

thread_local! {
    static BCD: Vec<u8> = testdata("BCD");
    static SYSTEM: Vec<u8> = testdata("SYSTEM-legacy");
}
