//! The 20 GiB proof: a sparse 20 GiB raw disk (GPT, one Linux partition covering the disk,
//! ext4) holding about 2 GiB of incompressible files. The backup must read and upload about
//! the files' bytes, not the disk's; the restore onto a new 20 GiB sparse file must give a
//! filesystem e2fsck finds clean and files whose SHA-256 match. The figures are printed
//! (`cargo test --test used_large -- --nocapture`).
//!
//! Needs root (loop mounts), sgdisk, e2fsprogs and openssl (fast incompressible data and
//! SHA-256); skipped, saying so, otherwise. About 4.5 GB of RAM (tmpfs) or temp disk space for
//! the two images, 2.2 GB for the appliance's store.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const DISK: u64 = 20 * GIB;
const PART_START: u64 = MIB;
/// Eight 256 MiB files and 300 small ones (997 bytes to 291 KiB).
const BIG_FILES: u64 = 8;
const BIG: u64 = 256 * MIB;
const SMALL_FILES: u64 = 300;

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Unmounts when dropped (also when an assertion fails).
struct Mount(PathBuf);

impl Mount {
    /// Mount the partition of `disk` at `mnt` through a loop device.
    fn partition(disk: &Path, part_len: u64, mnt: &Path, opts: &str) -> Option<Mount> {
        std::fs::create_dir_all(mnt).ok()?;
        let o = format!("loop,offset={PART_START},sizelimit={part_len},{opts}");
        let ok = Command::new("mount")
            .args(["-t", "ext4", "-o", &o])
            .arg(disk)
            .arg(mnt)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(mnt.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Detaches a loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// SHA-256 of every file under `dir`, by path relative to it (openssl: several GB/s with
/// SHA extensions, where coreutils' sha256sum is several times slower).
fn sha256_tree(dir: &Path) -> BTreeMap<String, String> {
    let out = sh(&format!(
        "cd {} && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 openssl dgst -sha256 -r",
        dir.display()
    ));
    out.lines()
        .map(|l| {
            let (hash, name) = l.split_once(" *").expect("openssl dgst -r line");
            (name.to_string(), hash.to_string())
        })
        .collect()
}

/// Fill the mounted filesystem; returns the files' total size. AES-CTR of zeros is
/// incompressible, and each file has its own key, so no chunk dedupes against another.
fn fill(mnt: &Path, work: &Path) -> u64 {
    let zeros = work.join("zeros");
    std::fs::File::create(&zeros).unwrap().set_len(BIG).unwrap();
    let mut total = 0;
    sh(&format!("mkdir -p {0}/big {0}/small", mnt.display()));
    let enc = |key: u64, input: &str, out: &str| {
        format!(
            "openssl enc -aes-128-ctr -K {key:032x} -iv 00000000000000000000000000000000 {input} -out {out}"
        )
    };
    let mut script = String::new();
    for i in 1..=BIG_FILES {
        let out = format!("{}/big/f{i}", mnt.display());
        script.push_str(&enc(i, &format!("-in {}", zeros.display()), &out));
        script.push('\n');
        total += BIG;
    }
    for i in 1..=SMALL_FILES {
        let len = i * 997;
        let out = format!("{}/small/s{i}", mnt.display());
        script.push_str(&format!(
            "head -c {len} {} | {}\n",
            zeros.display(),
            enc(1000 + i, "", &out)
        ));
        total += len;
    }
    sh(&script);
    std::fs::remove_file(&zeros).unwrap();
    total
}

/// Where the disk images go: tmpfs when it has room (it keeps holes like any filesystem, and
/// building a 2 GiB filesystem there costs no disk writeback), else the temp dir. The
/// appliance's store stays on disk either way.
fn scratch() -> tempfile::TempDir {
    let avail = Command::new("df")
        .args(["--output=avail", "-B1", "/dev/shm"])
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0u64);
    if avail >= 8 * GIB {
        if let Ok(d) = tempfile::tempdir_in("/dev/shm") {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

#[test]
fn twenty_gib_sparse_disk_backs_up_and_restores_only_its_data() {
    let tools = [
        "sgdisk",
        "mkfs.ext4",
        "e2fsck",
        "openssl",
        "mount",
        "losetup",
    ];
    if let Some(t) = tools.iter().find(|t| !have(t)) {
        eprintln!("SKIPPED: {t} is not installed");
        return;
    }
    let work = scratch();
    let w = work.path();
    log(format!("disk images in {}", w.display()));
    let disk = w.join("disk.img");
    let t = Instant::now();
    std::fs::File::create(&disk).unwrap().set_len(DISK).unwrap();
    ok(Command::new("sgdisk")
        .args(["-n", "1:2048:0", "-t", "1:8300"])
        .arg(&disk));
    let info = ok(Command::new("sgdisk").args(["-i", "1"]).arg(&disk));
    let last: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("Last sector: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("sgdisk -i: Last sector");
    let part_len = (last + 1) * 512 - PART_START;
    ok(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-E"])
        .arg(format!("offset={PART_START}"))
        .arg(&disk)
        .arg(format!("{}k", part_len / 1024)));
    let (files, src_sums) = {
        // noinit_itable: the kernel must not zero inode tables behind our back while mounted.
        let Some(m) = Mount::partition(&disk, part_len, &w.join("src"), "noinit_itable") else {
            eprintln!("SKIPPED: cannot loop-mount ext4 here (not root?)");
            return;
        };
        let files = fill(&m.0, w);
        (files, sha256_tree(&m.0))
    };
    assert_eq!(src_sums.len() as u64, BIG_FILES + SMALL_FILES);
    log(format!(
        "built a {} GiB disk with {files} bytes of files in {:.1} s",
        DISK / GIB,
        t.elapsed().as_secs_f64()
    ));

    let a = Appliance::start();
    let t = Instant::now();
    let b = a.backup("bigdisk", &[&disk]);
    let backup_secs = t.elapsed().as_secs_f64();
    let (read, uploaded) = (n(&b, "bytes_read"), n(&b, "bytes_uploaded"));
    log(format!("backup: {b}"));

    let restored = w.join("restored.img");
    let t = Instant::now();
    let r = a.restore(b["snapshot"].as_str().unwrap(), &[("disk", &restored)], &[]);
    let restore_secs = t.elapsed().as_secs_f64();
    log(format!("restore: {r}"));
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&restored).unwrap().blocks() * 512
    };
    eprintln!(
        "FIGURES 20 GiB sparse disk, {files} bytes of files: backup {backup_secs:.1} s, \
         read {read} bytes ({:.3} x files), uploaded {uploaded} bytes ({:.3} x files); \
         restore {restore_secs:.1} s, restored file allocates {allocated} bytes",
        read as f64 / files as f64,
        uploaded as f64 / files as f64,
    );
    // About the files, not the disk: chunks round the data up, and ext4's metadata (bitmaps,
    // the used part of the inode tables, directories) comes along.
    let bound = files + files * 15 / 100 + 64 * MIB;
    assert!(read >= files, "read {read} bytes, less than the files");
    assert!(
        read <= bound,
        "read {read} bytes for {files} bytes of files"
    );
    assert!(uploaded <= bound, "uploaded {uploaded} bytes for {files}");
    assert!(n(&b, "chunks_unused") + n(&b, "chunks_zero") > 4000, "{b}");
    assert!(
        allocated <= bound,
        "the restore allocated {allocated} bytes"
    );
    assert_eq!(std::fs::metadata(&restored).unwrap().len(), DISK);

    ok(Command::new("sgdisk").arg("-v").arg(&restored));
    let dev = ok(Command::new("losetup")
        .args(["-f", "--show", "-r", "-o"])
        .arg(PART_START.to_string())
        .arg("--sizelimit")
        .arg(part_len.to_string())
        .arg(&restored))
    .trim()
    .to_string();
    let dev = Loop(dev);
    ok(Command::new("e2fsck").args(["-fn", &dev.0]));
    drop(dev);
    let m = Mount::partition(&restored, part_len, &w.join("dst"), "ro,noload")
        .expect("mount the restored filesystem");
    let dst_sums = sha256_tree(&m.0);
    drop(m);
    assert!(src_sums == dst_sums, "restored files differ");
}
