//! The data path end to end on this host (issue: backup format, appliance, backup-agent,
//! verified parallel restore). Every result is checked with tools we did not write.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;
/// Big enough for a GPT and an MBR with logical partitions and 128 chunks; small enough that two
/// round trips in parallel (source, copy, two restores, the store) fit a CI machine's disk.
const DISK: u64 = 512 * MIB;
/// The disks of the tests that act while a transfer runs: long enough to act in.
const GIB: u64 = 1 << 30;

fn gpt_image(path: &Path, size: u64, seed: u64) {
    make_image(path, size, seed);
    // A real GPT with 3 partitions; sgdisk rewrites only the table sectors.
    sh(&format!(
        "sgdisk -n 1:2048:+100M -t 1:ef00 -c 1:ESP -n 2:0:+300M -t 2:8300 -c 2:root -n 4:0:0 -t 4:8e00 -c 4:lvm {} >/dev/null",
        path.display()
    ));
}

fn mbr_image(path: &Path, size: u64, seed: u64) {
    make_image(path, size, seed);
    sh(&format!(
        "printf 'label: dos\\nstart=2048, size=200MiB, type=83, bootable\\nsize=100MiB, type=82\\ntype=5\\nsize=150MiB, type=83\\ntype=8e\\n' | sfdisk -q {} >/dev/null",
        path.display()
    ));
}

/// Change `total` bytes in a few contiguous runs; returns the bytes changed.
fn change(path: &Path, seed: u64) -> u64 {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let size = f.metadata().unwrap().len();
    let mut rng = Rng::new(seed);
    // 10 MiB in three runs, as a real workload's writes cluster (1% of a 1 GiB disk; fixed, so
    // the chunks a run straddles stay small next to what it changed).
    let total = 10 * MIB;
    let runs = [
        (size / 5, total / 2),
        (size / 2 + 3 * MIB, total / 4),
        (size - 40 * MIB, total / 4),
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

fn incremental_round_trip(kind: &str, make: fn(&Path, u64, u64)) {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("disk.img");
    make(&src, DISK, 7);
    let v1 = src.with_extension("v1");
    std::fs::copy(&src, &v1).unwrap();

    let t = Instant::now();
    let b1 = a.backup(kind, &[&src]);
    log(format!(
        "{kind}: full backup {b1} in {:.1}s",
        t.elapsed().as_secs_f64()
    ));
    assert_eq!(n(&b1, "chunks_total"), DISK / (4 * MIB));
    assert!(n(&b1, "chunks_zero") > 0, "the image has zero regions");
    assert_eq!(n(&b1, "chunks_present"), 0);

    let changed = change(&src, 99);
    let b2 = a.backup(kind, &[&src]);
    log(format!(
        "{kind}: incremental backup {b2}; {changed} bytes changed"
    ));
    let uploaded = n(&b2, "bytes_uploaded");
    assert!(
        uploaded <= 2 * changed,
        "second upload {uploaded} bytes > 2x the {changed} changed bytes"
    );
    assert!(n(&b2, "chunks_new") > 0);

    let s1 = b1["snapshot"].as_str().unwrap();
    let s2 = b2["snapshot"].as_str().unwrap();
    let r1 = work.path().join("r1.img");
    let r2 = work.path().join("r2.img");
    let sum1 = a.restore(s1, &[("disk", &r1)], &[]);
    cmp(&v1, &r1);
    std::fs::remove_file(&v1).unwrap();
    let sum2 = a.restore(s2, &[("disk", &r2)], &[]);
    cmp(&src, &r2);
    std::fs::remove_file(&r2).unwrap();
    log(format!("{kind}: full restore {sum1}"));
    assert_eq!(n(&sum2, "chunks_present"), 0);

    // Seeded sync: snapshot 2 onto a file holding snapshot 1 fetches only the changed chunks.
    let sum = a.restore(s2, &[("disk", &r1)], &["--overwrite"]);
    cmp(&src, &r1);
    let changed_chunks = n(&b2, "chunks_new");
    log(format!("{kind}: catch-up restore {sum}"));
    assert_eq!(
        n(&sum, "chunks_fetched"),
        changed_chunks,
        "catch-up should fetch exactly the changed chunks"
    );
    assert!(n(&sum, "bytes_fetched") <= 2 * changed);
    assert!(n(&sum, "chunks_present") > 0);

    // The partition tables came back as the tools see them.
    match kind {
        "gpt" => {
            let p = sh(&format!("sgdisk -p {}", r1.display()));
            assert!(
                p.contains("ESP") && p.contains("root") && p.contains("lvm"),
                "{p}"
            );
            sh(&format!(
                "sgdisk -v {} | grep -q 'No problems found'",
                r1.display()
            ));
        }
        _ => {
            let j = sh(&format!("sfdisk --json {}", r1.display()));
            assert!(j.contains("\"type\": \"8e\""), "{j}");
            sh(&format!("sfdisk -V {}", r1.display()));
        }
    }
}

#[test]
fn gpt_image_full_then_incremental_backup_and_seeded_restore() {
    incremental_round_trip("gpt", gpt_image);
}

#[test]
fn mbr_image_with_logical_partitions_round_trips() {
    incremental_round_trip("mbr", mbr_image);
}

/// The digest of each disk's index in a snapshot's stored manifest.
fn index_digest(a: &Appliance, snapshot: &str) -> String {
    let m = a.manifest_json(snapshot);
    let v: serde_json::Value = serde_json::from_str(&m).unwrap();
    v["disks"][0]["index_digest"].as_str().unwrap().to_string()
}

#[test]
fn qcow2_and_vmdk_back_up_to_the_same_chunks_as_raw() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let raw = work.path().join("disk.raw");
    gpt_image(&raw, 512 * MIB, 3);
    let mut digests = Vec::new();
    for (fmt, opts) in [
        ("raw", ""),
        ("qcow2", "-c"),
        ("vmdk", "-o subformat=monolithicSparse"),
        ("vmdk", "-o subformat=streamOptimized"),
    ] {
        let img = work.path().join(format!("disk-{}.{fmt}", digests.len()));
        if fmt != "raw" {
            sh(&format!(
                "qemu-img convert -O {fmt} {opts} {} {}",
                raw.display(),
                img.display()
            ));
        } else {
            std::fs::copy(&raw, &img).unwrap();
        }
        let b = a.backup(&format!("m{}", digests.len()), &[&img]);
        digests.push((
            format!("{fmt} {opts}"),
            index_digest(&a, b["snapshot"].as_str().unwrap()),
            b,
        ));
    }
    for (what, d, b) in &digests[1..] {
        assert_eq!(d, &digests[0].1, "{what} gave different chunk ids than raw");
        assert_eq!(
            n(b, "chunks_new"),
            0,
            "{what}: every chunk was already stored from the raw backup"
        );
    }
}

#[test]
fn wrong_ca_and_bad_tokens_are_refused() {
    let a = Appliance::start();
    let other = tempfile::tempdir().unwrap();
    ok(a.appliance()
        .args(["init", "--data"])
        .arg(other.path().join("d")));
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("d.img");
    make_image(&img, 16 * MIB, 1);

    let e = fails(
        a.backup_cmd("m", &[&img])
            .arg("--ca")
            .arg(other.path().join("d/ca.pem")),
    );
    assert!(e.contains("certificate") && e.contains("--ca"), "{e}");
    let e = fails(a.backup_cmd("m", &[&img]).args(["--token", "not-a-token"]));
    assert!(e.contains("401"), "{e}");
    // A restore token cannot upload, a backup token cannot read.
    let e = fails(a.backup_cmd("m", &[&img]).args(["--token", &a.restore]));
    assert!(e.contains("403"), "{e}");
    let b = a.backup("m", &[&img]);
    let s = b["snapshot"].as_str().unwrap();
    let dest = work.path().join("r.img");
    let e = fails(
        a.restore_cmd(s, &[("d", &dest)])
            .args(["--token", &a.backup]),
    );
    assert!(e.contains("403"), "{e}");
    let e = fails(
        a.restore_cmd(s, &[("d", &dest)])
            .arg("--ca")
            .arg(other.path().join("d/ca.pem")),
    );
    assert!(e.contains("certificate"), "{e}");
    assert!(
        !dest.exists(),
        "nothing may be created when the appliance is not trusted"
    );
    // A target that is too small or holds data, a disk the snapshot lacks: refused, untouched.
    let e = fails(&mut a.restore_cmd(s, &[("nosuch", &dest)]));
    assert!(e.contains("has no disk") && e.contains("d"), "{e}");
    std::fs::write(&dest, b"precious").unwrap();
    let e = fails(&mut a.restore_cmd(s, &[("d", &dest)]));
    assert!(e.contains("--overwrite"), "{e}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
    // A dry run prints the plan and writes nothing.
    let out = ok(a
        .restore_cmd(s, &[("d", &dest)])
        .args(["--dry-run", "--overwrite"]));
    assert!(out.contains("\"dry_run\": true"), "{out}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"precious");
}

#[test]
fn corrupt_chunk_on_the_appliance_stops_the_restore_before_it_is_written() {
    let a = Appliance::start_local(); // local only: it corrupts a file of chunks/
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("d.img");
    make_image(&img, 64 * MIB, 5);
    let b = a.backup("m", &[&img]);
    let s = b["snapshot"].as_str().unwrap();
    // Corrupt one stored chunk: a valid zstd frame of other (known) bytes.
    let mut chunks: Vec<_> = walk(&a.data().join("chunks"))
        .into_iter()
        .filter(|e| e.file_name().map(|n| n.len() == 64).unwrap_or(false))
        .collect();
    chunks.sort();
    let victim = &chunks[chunks.len() / 2];
    let id = victim.file_name().unwrap().to_string_lossy().into_owned();
    let mut evil = vec![0u8; 4 << 20];
    Rng::new(666).fill(&mut evil);
    let plain = work.path().join("evil");
    std::fs::write(&plain, &evil).unwrap();
    sh(&format!(
        "zstd -q -f -c {} > {}",
        plain.display(),
        victim.display()
    ));
    let dest = work.path().join("r.img");
    let e = fails(&mut a.restore_cmd(s, &[("d", &dest)]));
    assert!(e.contains(&id) && e.contains("corrupt"), "{e}");
    // No byte of the bad chunk reached the target.
    let restored = std::fs::read(&dest).unwrap_or_default();
    assert!(
        !restored.chunks(4096).any(|w| w == &evil[..4096]),
        "bytes of the corrupt chunk reached the target"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn snapshot_count(a: &Appliance) -> usize {
    let out = ok(a
        .appliance()
        .args(["snapshots", "--json", "--data"])
        .arg(a.data()));
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .map(|v| v.len())
        .unwrap_or(0)
}

#[test]
fn killed_backup_leaves_no_snapshot_and_a_rerun_uploads_only_the_rest() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("d.img");
    make_image(&img, GIB, 11);
    let mut child = a
        .backup_cmd("m", &[&img])
        .args(["--parallel", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once some chunks are stored (counted by the store: files, or catalogue entries).
    let store = ferry_store::Store::open(&a.data()).unwrap();
    let t = Instant::now();
    while ferry_test_support::store::stored_chunk_count(&store) < 20 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "backup stored nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        snapshot_count(&a),
        0,
        "a killed backup must leave no visible snapshot"
    );
    let b = a.backup("m", &[&img]);
    assert!(
        n(&b, "chunks_present") >= 15,
        "the rerun should find the chunks stored before the kill: {b}"
    );
    assert_eq!(snapshot_count(&a), 1);
    let dest = work.path().join("r.img");
    a.restore(b["snapshot"].as_str().unwrap(), &[("d", &dest)], &[]);
    cmp(&img, &dest);
}

#[test]
fn prune_and_gc_while_a_backup_runs_keep_every_referenced_chunk() {
    let a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let old = work.path().join("old.img");
    make_image(&old, 64 * MIB, 21);
    let first = a.backup("m", &[&old]);
    let img = work.path().join("d.img");
    make_image(&img, GIB, 22);
    let mut child = a
        .backup_cmd("m", &[&img])
        .args(["--parallel", "1"])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut rounds = 0;
    while child.try_wait().unwrap().is_none() {
        ok(a.appliance()
            .args(["prune", "--machine", "m", "--keep", "1", "--data"])
            .arg(a.data()));
        ok(a.appliance().args(["gc", "--data"]).arg(a.data()));
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        rounds >= 2,
        "gc should have run while the backup ran ({rounds} rounds)"
    );
    let b: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    ok(a.appliance()
        .args(["prune", "--machine", "m", "--keep", "1", "--data"])
        .arg(a.data()));
    ok(a.appliance().args(["gc", "--data"]).arg(a.data()));
    let dest = work.path().join("r.img");
    a.restore(b["snapshot"].as_str().unwrap(), &[("d", &dest)], &[]);
    cmp(&img, &dest);
    // The first snapshot was pruned; its data is gone from the list.
    assert_eq!(snapshot_count(&a), 1, "{first}");
}

#[test]
fn restore_survives_an_appliance_restart() {
    let mut a = Appliance::start();
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("d.img");
    make_image(&img, GIB, 31);
    let b = a.backup("m", &[&img]);
    let dest = work.path().join("r.img");
    let child = a
        .restore_cmd(b["snapshot"].as_str().unwrap(), &[("d", &dest)])
        .args(["--parallel", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Restart the appliance once the restore has written something.
    let t = Instant::now();
    while std::fs::metadata(&dest)
        .map(|m| m.len() == 0)
        .unwrap_or(true)
        || allocated(&dest) < 16 * MIB
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "restore wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill();
    std::thread::sleep(Duration::from_secs(2));
    a.serve();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("retrying"),
        "the restore should have seen the appliance go away: {stderr}"
    );
    cmp(&img, &dest);
}

fn allocated(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}
