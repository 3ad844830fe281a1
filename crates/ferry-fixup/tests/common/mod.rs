//! Helpers for the tests that check our hive edits with hivex's own tools
//! (hivexsh/hivexget from libhivex-bin, hivexregedit from libwin-hivex-perl).
#![allow(dead_code)]

pub mod windows_tree;

use ferry_fixup::hive::RegValue;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Decompresses shared/testdata/windows/NAME.xz into `dir` (`xz -dc`, never in place).
pub fn testdata_to(dir: &Path, name: &str, to: &str) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/windows")
        .join(format!("{name}.xz"));
    let out = Command::new("xz")
        .arg("-dc")
        .arg(&src)
        .output()
        .expect("run xz");
    assert!(
        out.status.success(),
        "xz -dc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let dst = dir.join(to);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::write(&dst, out.stdout).unwrap();
    dst
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("run {cmd:?}: {e} (apt-get install libhivex-bin libwin-hivex-perl)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Subkey names of `key`, as hivexsh lists them.
pub fn hivexsh_ls(hive: &Path, key: &str) -> Vec<String> {
    let script = format!("cd {key}\nls\n");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("script");
    std::fs::write(&f, script).unwrap();
    run(Command::new("hivexsh").arg("-f").arg(&f).arg(hive))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Value lines of `key` in .reg syntax, as hivexget prints them.
pub fn hivexget_key(hive: &Path, key: &str) -> Vec<String> {
    run(Command::new("hivexget").arg(hive).arg(key))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One value as hivexget prints it (strings raw, DWORDs in decimal).
pub fn hivexget(hive: &Path, key: &str, value: &str) -> String {
    run(Command::new("hivexget").arg(hive).arg(key).arg(value))
        .trim_end_matches('\n')
        .to_owned()
}

fn hexlist(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The line `hivexget HIVE KEY` prints for a value (strings as text, default as "@").
pub fn reg_line(name: &str, v: &RegValue) -> String {
    let name = if name.is_empty() { "@" } else { name };
    let data = match v {
        RegValue::Sz(s) => format!("\"{}\"", quote(s)),
        RegValue::ExpandSz(s) => format!("str(2):\"{}\"", quote(s)),
        RegValue::Dword(d) => format!("dword:{d:08x}"),
        other => format!("hex({:x}):{}", other.kind(), hexlist(&other.to_bytes())),
    };
    format!("\"{}\"={data}", quote(name))
}

/// The line `hivexregedit --export` prints for a value (exact bytes, default as @).
pub fn export_line(name: &str, v: &RegValue) -> String {
    let name = if name.is_empty() {
        "@".to_owned()
    } else {
        format!("\"{}\"", quote(name))
    };
    let data = match v {
        RegValue::Dword(d) => format!("dword:{d:08x}"),
        other => format!("hex({:x}):{}", other.kind(), hexlist(&other.to_bytes())),
    };
    format!("{name}={data}")
}

/// A whole hive as hivexregedit --export prints it: key path -> value lines.
pub fn export(hive: &Path) -> BTreeMap<String, Vec<String>> {
    let text = run(Command::new("hivexregedit")
        .arg("--export")
        .arg(hive)
        .arg("\\"));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for line in text.lines().skip(1) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            let key = line[1..line.len() - 1].to_owned();
            out.entry(key.clone()).or_default();
            cur = Some(key);
        } else {
            let key = cur.clone().expect("value line before any key");
            out.get_mut(&key).unwrap().push(line.to_owned());
        }
    }
    out
}

/// What changed between two exports.
#[derive(Debug, Default)]
pub struct ExportDiff {
    pub added_keys: BTreeSet<String>,
    /// Lines added under keys (new or existing).
    pub added_lines: BTreeMap<String, Vec<String>>,
    /// Keys or value lines that were in `before` and are not in `after`.
    pub removed: Vec<String>,
}

pub fn diff(
    before: &BTreeMap<String, Vec<String>>,
    after: &BTreeMap<String, Vec<String>>,
) -> ExportDiff {
    let mut d = ExportDiff::default();
    for (key, lines) in before {
        match after.get(key) {
            None => d.removed.push(format!("[{key}]")),
            Some(a) => d.removed.extend(
                lines
                    .iter()
                    .filter(|l| !a.contains(l))
                    .map(|l| format!("[{key}] {l}")),
            ),
        }
    }
    for (key, lines) in after {
        let b = before.get(key);
        if b.is_none() {
            d.added_keys.insert(key.clone());
        }
        let added: Vec<String> = lines
            .iter()
            .filter(|l| b.is_none_or(|b| !b.contains(l)))
            .cloned()
            .collect();
        if !added.is_empty() {
            d.added_lines.insert(key.clone(), added);
        }
    }
    d
}
