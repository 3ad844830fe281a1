//! A delta from a known basis on the real path (backup-agent -> appliance -> restore-agent):
//! `restore --basis S1 --snapshot S2` onto a file that holds S1 writes only what changed, reads
//! nothing of the target, and gives the same bytes as the source; a basis of another machine is
//! refused with nothing written.

mod common;

use std::path::Path;

use common::*;

const MIB: u64 = 1 << 20;
const DISK: u64 = 256 * MIB;
/// Small chunks, so that "bytes written" can be compared with the bytes that changed (a 4 MiB
/// chunk per run of changed bytes would dwarf a 1% change of a 256 MiB disk).
const CHUNK: &str = "262144";

/// 1% of the disk changed in three runs; returns the bytes changed.
fn change(path: &Path, seed: u64) -> u64 {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut rng = Rng::new(seed);
    let total = DISK / 100;
    let runs = [
        (DISK / 5 + 12345, total / 2),
        (DISK / 2 + 3 * MIB, total / 4),
        (DISK - 40 * MIB + 777, total / 4),
    ];
    for (off, len) in runs {
        write_region(&f, off, len as usize, "random", &mut rng);
    }
    f.sync_all().unwrap();
    runs.iter().map(|r| r.1).sum()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn backup(a: &Appliance, machine: &str, disk: &Path) -> String {
    let out = ok(a.backup_cmd(machine, &[disk]).args(["--chunk-size", CHUNK]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("backup --json");
    v["snapshot"].as_str().expect("snapshot").to_string()
}

#[test]
fn a_delta_from_a_known_basis_writes_only_what_changed_and_reads_nothing() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.img");
    make_image(&src, DISK, 21);
    sh(&format!(
        "sgdisk -n 1:2048:+100M -t 1:8300 -n 2:0:0 -t 2:8300 {} >/dev/null",
        src.display()
    ));
    let s1 = backup(&a, "web1", &src);
    let v1 = work.path().join("v1.img");
    std::fs::copy(&src, &v1).unwrap();
    let changed = change(&src, 5);
    let s2 = backup(&a, "web1", &src);

    // The target holds S1, restored the ordinary way.
    let r = work.path().join("r.img");
    a.restore(&s1, &[("disk", &r)], &[]);
    cmp(&v1, &r);
    std::fs::remove_file(&v1).unwrap();

    // The dry run shows the delta step and touches nothing.
    let dry =
        run(a
            .restore_cmd(&s2, &[("disk", &r)])
            .args(["--basis", &s1, "--overwrite", "--dry-run"]));
    let plan = String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "{plan}");
    assert!(
        plan.contains(&format!("apply the delta from snapshot {s1}: "))
            && plan.contains("chunks differ (")
            && plan.contains("no target read"),
        "{plan}"
    );
    log(format!(
        "dry run: {}",
        plan.lines()
            .find(|l| l.contains("chunks differ"))
            .unwrap_or_default()
    ));

    let s = a.restore(&s2, &[("disk", &r)], &["--basis", &s1, "--overwrite"]);
    cmp(&src, &r);
    let (written, read, fetched) = (
        n(&s, "bytes_written"),
        n(&s, "target_bytes_read"),
        n(&s, "chunks_fetched"),
    );
    log(format!(
        "delta {s1} -> {s2}: {changed} bytes changed; {fetched} chunks fetched ({} bytes), {written} bytes written ({:.2}x the change), {read} bytes of the target read",
        n(&s, "bytes_fetched"),
        written as f64 / changed as f64
    ));
    assert_eq!(read, 0, "the delta read the target: {s}");
    assert_eq!(s["basis"].as_str(), Some(s1.as_str()), "{s}");
    assert!(
        written <= 2 * changed,
        "{written} bytes written > 2x the {changed} bytes changed"
    );
    assert!(fetched > 0);

    // A basis of another machine (the same bytes, even) is refused, and nothing is written.
    let other = backup(&a, "db1", &src);
    let copy = work.path().join("r.copy");
    std::fs::copy(&r, &copy).unwrap();
    let err = fails(
        a.restore_cmd(&s2, &[("disk", &r)])
            .args(["--basis", &other, "--overwrite"]),
    );
    assert!(
        err.contains(&format!(
            "snapshot {other} cannot be the basis of disk disk"
        )) && err.contains("machine db1, not of web1")
            && err.contains("restore without --basis"),
        "{err}"
    );
    cmp(&copy, &r);
}
